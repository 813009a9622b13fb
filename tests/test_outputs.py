"""What the notebooks produce: stamped figures and tables, where they go, notebook discovery, Grad-CAM++."""
import subprocess
import sys
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from fmd import gradcam, plots, reproduce
from fmd.models import resnet18
from fmd.provenance import git_commit, read_stamp


@pytest.fixture
def figures_in(tmp_path):
    plots.set_figures_dir(tmp_path / "figs")
    yield tmp_path / "figs"
    plots.set_figures_dir(None)


def test_figures_and_tables_carry_profile_dataset_and_commit(figures_in):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    paths = plots.save_figure(fig, "line", profile="quick", dataset="fashion_mnist")
    plt.close(fig)
    paths += plots.save_table([{"conv": "static", "top-1": 90.8}], "table", profile="quick",
                              dataset="fashion_mnist", title="t")
    assert sorted(p.name for p in paths) == ["line.pdf", "line.png", "table.csv", "table.md"]
    assert all(p.parent == figures_in for p in paths)
    for p in paths:  # the stamp is in every file: PNG text chunk, PDF metadata, table text
        stamp = read_stamp(p)
        assert (stamp["profile"], stamp["dataset"]) == ("quick", "fashion_mnist"), p
        assert stamp["commit"] == git_commit()
    with pytest.raises(ValueError, match="no rows"):
        plots.save_table([], "empty", profile="quick", dataset="x")


def test_a_stamp_names_the_parameters_that_differ_from_the_notebook_defaults(figures_in):
    kernel_num, preset, progress = 4, "official", False
    defaults = plots.parameters(locals())
    kernel_num, progress = 2, True  # what papermill's -p kernel_num 2 -p progress True injects
    plots.set_context({**locals(), "figures_dir": figures_in}, defaults)
    try:
        fig, ax = plt.subplots()
        paths = plots.save_figure(fig, "k2", profile="quick", dataset="d")
        plt.close(fig)
        paths += plots.save_table([{"a": 1}], "k2", profile="quick", dataset="d")
        assert plots.stamp("quick", "d").endswith(" · params: kernel_num=2")
        for p in paths:
            assert read_stamp(p)["params"] == "kernel_num=2", p
    finally:
        plots.set_context({}, {})
    assert " · params" not in plots.stamp("quick", "d")


def test_smoke_figures_never_land_in_figures():
    from fmd import profiles

    assert plots.figures_dir("smoke") != plots.FIGURES
    assert plots.figures_dir("quick") == plots.FIGURES == profiles.figures_dir()  # the benchmark's
    assert profiles.figures_dir(folder="build/b") == plots.REPO_ROOT / "build" / "b"  # bench --out
    plots.set_figures_dir("build/sweep")  # relative paths start at the repository root
    try:
        assert plots.figures_dir("quick") == plots.REPO_ROOT / "build" / "sweep"
    finally:
        plots.set_figures_dir(None)


def test_commit_is_dirty_for_code_changes_only(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    for folder in ("fmd", "figures", "notebooks"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "f.txt").write_text("a")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    clean = git_commit(tmp_path)
    assert len(clean) >= 7 and "dirty" not in clean
    (tmp_path / "figures" / "f.txt").write_text("b")  # a rerun rewrites figures and outputs
    (tmp_path / "notebooks" / "f.txt").write_text("b")
    assert git_commit(tmp_path) == clean
    (tmp_path / "fmd" / "f.txt").write_text("b")
    assert git_commit(tmp_path) == clean + "+dirty"


def test_notebook_discovery_skips_failed_and_running_copies(tmp_path):
    for name in ("02_b.ipynb", "01_a.ipynb", "01_a.failed.ipynb", "03_c.running.ipynb", "notes.ipynb"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in reproduce.find_notebooks(tmp_path)] == ["01_a.ipynb", "02_b.ipynb"]
    assert [p.name for p in reproduce.find_notebooks(tmp_path, ["02"])] == ["02_b.ipynb"]
    with pytest.raises(FileNotFoundError, match="no notebooks"):
        reproduce.find_notebooks(tmp_path, ["09"])


def test_gradcam_layer_choice_maps_and_object_share():
    torch.manual_seed(0)
    model = resnet18(conv="fmdconv", num_classes=10, in_channels=1, width=8).eval()
    size = (1, 1, 32, 32)
    assert gradcam.stage_sizes(model, size) == {"layer1": (8, 8), "layer2": (4, 4),
                                                "layer3": (2, 2), "layer4": (1, 1)}
    assert gradcam.pick_layer(model, size) == "layer2"  # layer4's 1×1 map cannot say where
    with pytest.raises(ValueError, match="min_size"):
        gradcam.pick_layer(model, size, min_size=16)
    x = torch.randn(3, 1, 32, 32)
    heat = gradcam.gradcam_plusplus(model, x, "layer2")
    assert heat.maps.shape == (3, 32, 32) and heat.maps.min() >= 0 and heat.maps.max() <= 1 + 1e-6
    assert torch.equal(heat.explained, heat.predicted)
    with pytest.raises(ValueError, match="targets"):
        gradcam.gradcam_plusplus(model, x, "layer2", explain="true")

    display = np.zeros((1, 4, 4, 1))
    display[0, :2] = 1.0  # the object: the top half
    on_top = np.zeros((1, 4, 4))
    on_top[0, 0] = 1.0
    assert gradcam.heat_on_object(on_top, display) == pytest.approx([1.0])
    assert gradcam.heat_on_object(np.ones((1, 4, 4)), display) == pytest.approx([0.5])


def _imported_by(package: str, *also: str) -> set:
    """Every module a fresh interpreter holds after importing all of ``package`` (and ``also``)."""
    code = (f"import importlib, pkgutil, sys, {package}\n"
            f"for m in pkgutil.iter_modules({package}.__path__):\n"
            f"    importlib.import_module('{package}.' + m.name)\n"
            + "".join(f"import {name}\n" for name in also) + "print('\\n'.join(sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_drawing_modules_import_no_training_or_benchmark_code():
    found = _imported_by("fmd.plots")
    assert not {k for k in found if k in ("fmd.train", "fmd.bench", "fmd.gradcam", "fmd.chapters")
                or k.startswith("fmd.chapters.")}


def test_building_a_table_imports_no_matplotlib():
    # The chapters' rows and readings take their labels from fmd.labels, not from the drawing code.
    found = _imported_by("fmd.chapters", "fmd.labels", "fmd.tables", "fmd.bench")
    assert not {k for k in found if k.split(".")[0] in ("matplotlib", "seaborn") or k.startswith("fmd.plots")}


def test_no_chapter_module_imports_another():
    # What chapters share lives in fmd.chapters.common; a chapter importing a chapter hides that.
    import ast

    folder = plots.REPO_ROOT / "fmd" / "chapters"
    found = []
    for path in sorted(folder.glob("ch[0-9][0-9]_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):  # from .chNN / from . import chNN / fmd.chapters
                package = "fmd.chapters" if node.level == 1 else node.module or ""
                names = [f"{package}.{node.module or a.name}" if node.level == 1 else f"{package}.{a.name}"
                         for a in node.names]
            else:
                continue
            found += [f"{path.name}: {n}" for n in names if n.startswith("fmd.chapters.ch")]
    assert not found, found


def test_a_bar_inside_a_markdown_cell_does_not_open_a_column(tmp_path):
    from fmd.tables import write_table

    csv_path, md_path = write_table([{"claim": "a | b", "n": 1.0}], tmp_path, "t", line="stamp")
    row = md_path.read_text().splitlines()[2]
    assert row == "| a \\| b | 1 |"
    assert "a | b" in csv_path.read_text()  # the CSV keeps the text as it is


def test_the_cpu_identity_tells_generations_apart_on_x86_and_arm(monkeypatch):
    from fmd import provenance

    monkeypatch.setattr(provenance.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    x86 = {"model name": "AMD EPYC", "cpu family": "25", "model": "17"}
    monkeypatch.setattr(provenance, "_cpuinfo", lambda: x86)
    assert provenance.cpu_identity() == "AMD EPYC (family 25, model 17), 2 cores"  # the logged sessions' key
    # an ARM core lists no model name or family: its implementer, part and variant name it
    arm = {"CPU implementer": "0x41", "CPU part": "0xd0c", "CPU variant": "0x3"}
    monkeypatch.setattr(provenance, "_cpuinfo", lambda: arm)
    monkeypatch.setattr(provenance.platform, "system", lambda: "Linux")
    monkeypatch.setattr(provenance.platform, "processor", lambda: "")
    monkeypatch.setattr(provenance.platform, "machine", lambda: "aarch64")
    assert provenance.cpu_identity() == "aarch64 (implementer 0x41, part 0xd0c, variant 0x3), 2 cores"
    other = dict(arm, **{"CPU part": "0xd40"})
    monkeypatch.setattr(provenance, "_cpuinfo", lambda: other)
    assert "part 0xd40" in provenance.cpu_identity()
    # macOS has no /proc/cpuinfo: the model name comes from sysctl
    monkeypatch.setattr(provenance, "_cpuinfo", lambda: {})
    monkeypatch.setattr(provenance.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(provenance.subprocess, "run", lambda cmd, **kw: SimpleNamespace(
        stdout="Apple M2\n" if cmd == ["sysctl", "-n", "machdep.cpu.brand_string"] else ""))
    assert provenance.cpu_identity() == "Apple M2, 2 cores"
