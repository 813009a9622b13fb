"""The ``paper`` profile's code path end to end at the tiny size (``FMD_TINY=1``): the training CLI
and every notebook, on fixture data this test writes — CIFAR-10 and CIFAR-100 in CIFAR's own
python-pickle format, parsed by torchvision's ``CIFAR10``/``CIFAR100`` (``download=False`` finds
them; only their MD5 check is switched off, here, since no fixture can match the real files'
digests), and an ImageFolder tree of JPEG files."""
import json
import os
import pickle
import shutil
import subprocess
import sys
import time

import pytest
import torch

from fmd.data import make_synthetic
from fmd.provenance import REPO_ROOT
from test_data import write_jpeg_tree

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# Loaded at the start of every Python process of these tests (PYTHONPATH): torchvision's CIFAR
# classes check each file's MD5 against the real dataset's; None makes them check presence only.
NO_MD5 = """
import torchvision.datasets as _d
for _cls in (_d.CIFAR10, _d.CIFAR100):
    _cls.train_list = [[name, None] for name, _ in _cls.train_list]
    _cls.test_list = [[name, None] for name, _ in _cls.test_list]
    _cls.meta = {**_cls.meta, "md5": None}
"""


def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _rows(images):
    """N×3×32×32 uint8 → N×3072 rows, CIFAR's layout (the red plane, then green, then blue)."""
    return images.reshape(images.shape[0], -1).numpy()


def write_cifar10(root, train_per_batch=12, test=24, seed=0):
    """``cifar-10-batches-py`` as the real archive holds it: five training batches, a test batch
    and ``batches.meta``, each a pickled dict."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train, held = make_synthetic(5 * train_per_batch, test, num_classes=10, seed=seed)
    for b in range(5):
        part = slice(b * train_per_batch, (b + 1) * train_per_batch)
        _pickle(folder / f"data_batch_{b + 1}", {
            "batch_label": f"training batch {b + 1} of 5", "data": _rows(train.images[part]),
            "labels": train.targets[part].tolist(),
            "filenames": [f"img_{b}_{i}.png" for i in range(train_per_batch)]})
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": _rows(held.images),
                                     "labels": held.targets.tolist(),
                                     "filenames": [f"test_{i}.png" for i in range(test)]})
    _pickle(folder / "batches.meta", {"label_names": [f"c10_{i}" for i in range(10)],
                                      "num_cases_per_batch": train_per_batch, "num_vis": 3072})
    return train, held


def write_cifar100(root, train=100, test=24, seed=1):
    """``cifar-100-python``: ``train``, ``test`` and ``meta``, fine and coarse labels."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    splits = make_synthetic(train, test, num_classes=100, seed=seed)
    for name, split in zip(("train", "test"), splits):
        fine = split.targets.tolist()
        _pickle(folder / name, {"batch_label": f"{name}ing batch 1 of 1", "data": _rows(split.images),
                                "fine_labels": fine, "coarse_labels": [f // 5 for f in fine],
                                "filenames": [f"{name}_{i}.png" for i in range(len(fine))]})
    _pickle(folder / "meta", {"fine_label_names": [f"c100_{i}" for i in range(100)],
                              "coarse_label_names": [f"super_{i}" for i in range(20)]})
    return splits


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper-data")
    cifar10 = write_cifar10(root)
    cifar100 = write_cifar100(root)
    write_jpeg_tree(root / "imagenet", classes=("n01", "n02", "n03", "n04"), per_class=(8, 3),
                    sizes=((96, 80), (120, 96), (80, 112)))
    site = root / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_MD5)
    env = {**os.environ, "FMD_DATA_ROOT": str(root), "FMD_TINY": "1", "FMD_PROFILE": "paper",
           "PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)]), "PYTHONWARNINGS": "ignore"}
    env.pop("FMD_IMAGENET", None)
    for kind in ("runs", "figures"):  # a fresh start: no run or figure of an earlier session is reused
        shutil.rmtree(REPO_ROOT / "build" / f"tiny-paper-{kind}", ignore_errors=True)
    return {"root": root, "env": env, "cifar10": cifar10, "cifar100": cifar100}


def test_torchvision_parses_the_cifar_fixtures(fixtures, monkeypatch):
    import torchvision.datasets as d

    from fmd.datasets import load_cifar

    for cls in (d.CIFAR10, d.CIFAR100):  # what NO_MD5 does in the other processes
        monkeypatch.setattr(cls, "train_list", [[name, None] for name, _ in cls.train_list])
        monkeypatch.setattr(cls, "test_list", [[name, None] for name, _ in cls.test_list])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": None})
    for name, written in (("cifar10", fixtures["cifar10"]), ("cifar100", fixtures["cifar100"])):
        train, test = load_cifar(name, fixtures["root"])
        assert torch.equal(train.images, written[0].images)
        assert torch.equal(test.targets, written[1].targets)
        assert train.num_classes == (10 if name == "cifar10" else 100)
        assert train.classes[3] == ("c10_3" if name == "cifar10" else "c100_3")
    monkeypatch.undo()
    # With the real check the fixture is refused as corrupt, in one line.
    with pytest.raises(FileNotFoundError, match=r"cifar10 not found \(or corrupt\)"):
        load_cifar("cifar10", fixtures["root"])


def test_tiny_size_keeps_the_profile_and_shrinks_only_its_runs(monkeypatch):
    from fmd import plots, profiles
    from fmd.chapters import ch04_temperature_and_k as ch04

    monkeypatch.delenv("FMD_TINY", raising=False)
    full = profiles.main_config("paper", "cifar100", conv="fmdconv")
    assert profiles.runs_root("paper") == REPO_ROOT / "data" / "runs"
    monkeypatch.setenv("FMD_TINY", "1")
    tiny = profiles.main_config("paper", "cifar100", conv="fmdconv")
    assert {k for k in full.to_dict() if getattr(full, k) != getattr(tiny, k)} == set(profiles.TINY_RUNS)
    assert profiles.get_profile("paper").datasets == ("cifar10", "cifar100")
    assert ch04.temperature_grid("paper") == list(ch04.TEMPERATURES)  # the paper's grids
    assert profiles.runs_root("paper") == REPO_ROOT / "build" / "tiny-paper-runs"
    assert plots.figures_dir("paper") == REPO_ROOT / "build" / "tiny-paper-figures"
    assert profiles.ablation_config("paper").epochs == 1 and profiles.get_profile("paper").bench_repeats == 1
    assert profiles.get_profile("paper").bench_cases == profiles.get_profile("smoke").bench_cases


def _fmd_train(env, *args, timeout=600):
    done = subprocess.run([sys.executable, "-m", "fmd.train", *args, "--no-progress"], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_training_cli_on_the_paper_recipe_and_an_image_folder(fixtures, tmp_path):
    env = fixtures["env"]
    # The paper recipe (224×224 inputs, ImageNet stem) on the CIFAR-10 files, FMDConv.
    small = ["--train-subset", "16", "--test-subset", "8", "--epochs", "1", "--batch-size", "8",
             "--runs-root", str(tmp_path)]
    paper = _fmd_train(env, "--recipe", "paper", "--conv", "fmdconv", *small)
    assert paper["name"].startswith("cifar10-fmdconv-") and paper["final"]["test_loss"] > 0
    record = json.loads((tmp_path / paper["name"] / "record.json").read_text())
    assert record["input_size"] == [1, 3, 224, 224] and record["num_classes"] == 10
    # ImageNet-style JPEG folder, the tree given as --data-root.
    folder = _fmd_train(env, "--recipe", "paper", "--dataset", "imagenet", "--data-root",
                        str(fixtures["root"] / "imagenet"), "--workers", "1", *small)
    record = json.loads((tmp_path / folder["name"] / "record.json").read_text())
    assert record["num_classes"] == 4 and record["train_images"] == 16 and record["test_images"] == 8
    assert record["loader_workers"] == 1 and record["input_size"] == [1, 3, 224, 224]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_the_tiny_paper_path(fixtures, notebook, tmp_path):
    import papermill

    only = os.environ.get("FMD_PAPER_NOTEBOOKS", "all")  # e.g. "03": only chapter 03, for a quick look
    if only != "all" and not notebook.name.startswith(tuple(only.split(","))):
        pytest.skip(f"FMD_PAPER_NOTEBOOKS={only} leaves this notebook out (make test runs all of them)")
    saved = {k: os.environ.get(k) for k in fixtures["env"]}
    os.environ.update(fixtures["env"])
    try:
        start = time.perf_counter()
        papermill.execute_notebook(str(notebook), str(tmp_path / notebook.name), cwd=str(notebook.parent),
                                   kernel_name="python3", progress_bar=False, log_output=False)
        print(f"{notebook.name}: {time.perf_counter() - start:.0f} s")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    # Nothing committed was touched: figures and runs went to build/tiny-paper-*.
    changed = subprocess.run(["git", "status", "--porcelain", "--", "figures", "data/runs", "data/timing"],
                             cwd=REPO_ROOT, capture_output=True, text=True).stdout
    assert changed == ""
    figures = REPO_ROOT / "build" / "tiny-paper-figures"
    assert figures.is_dir() and any(figures.iterdir())
    if notebook.name.startswith("03_"):
        runs = (REPO_ROOT / "build" / "tiny-paper-runs").glob("*/record.json")
        records = [json.loads(p.read_text()) for p in runs]
        trained = {(r["config"]["dataset"], r["config"]["conv"]) for r in records}
        assert {("cifar10", "fmdconv"), ("cifar100", "static")} <= trained
        # one epoch each; the check runs of the comparison (1.5x the epochs, rounded up) two
        assert all(r["train_images"] == 8 and len(r["history"]) == r["config"]["epochs"] for r in records)
        assert sorted({r["config"]["epochs"] for r in records}) == [1, 2]


def test_the_backbone_reading_survives_epochs_too_short_to_time():
    from fmd.chapters import ch08_paper_figures as ch08

    rows = [{"depth": 18, "conv": c, "params full-size (M)": 1.0, "top-1 (%)": 10.0, "train s/epoch": 0.0}
            for c in ("Static", "FMDConv")]
    assert "too short to time" in ch08.backbone_reading(rows)
