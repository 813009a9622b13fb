"""papermill's -p reaches every value a notebook derives from its parameters: the parameters cell
holds only literals, and what depends on them is computed after papermill's injected cell."""
import json
import os

import papermill
import pytest

from fmd.provenance import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_papermill_profile_reaches_the_values_derived_from_it(tmp_path, monkeypatch):
    # The environment says quick, the command line says smoke: smoke's values must be used.
    monkeypatch.setenv("FMD_PROFILE", "quick")
    out = tmp_path / "02.ipynb"
    papermill.execute_notebook(str(REPO_ROOT / "notebooks" / "02_dynamic_conv_family.ipynb"), str(out),
                               parameters={"profile": "smoke"}, cwd=str(REPO_ROOT / "notebooks"),
                               kernel_name="python3", progress_bar=False)
    printed = "".join("".join(o.get("text", "")) for c in json.loads(out.read_text())["cells"]
                      if c["cell_type"] == "code" for o in c.get("outputs", []))
    assert "profile 'smoke': counting ['resnet18']" in printed
    assert os.environ["FMD_PROFILE"] == "quick"


def test_parameters_cells_hold_only_literals():
    import ast

    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        source = "".join(next(c for c in cells if "parameters" in c["metadata"].get("tags", []))["source"])
        for node in ast.parse(source).body:
            if isinstance(node, ast.Assign) and node.targets[0].id not in ("profile", "parameter_defaults"):
                ast.literal_eval(node.value)  # raises on anything computed, e.g. from `profile`


def _aliases(cells):
    """name → module for every ``import`` in a notebook's code cells."""
    import ast

    found = {}
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse("".join(cell["source"]))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update({a.asname or a.name.split(".")[0]: a.name if a.asname else a.name.split(".")[0]
                              for a in node.names})
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
    return found


def _resolve(dotted):
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
            break
        except ModuleNotFoundError:
            continue
    else:
        return False
    try:
        for attr in parts[cut:]:
            target = getattr(target, attr)
    except AttributeError:
        return False
    return True


def test_every_name_the_notebooks_cite_exists():
    # `fmd.x.y` must exist, and so must `alias.y` for a name the notebook imports (`ch08.f`, `figs.g`);
    # a dotted name whose first part is neither imported nor a module (`family.rows`) is an error.
    import re

    cited = re.compile(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)")
    files = ("json", "md", "csv", "png", "pt", "ipynb", "py", "onnx")
    instances = ("layer", "weight", "model")  # prose about an object's attribute (`layer.last_strategy`)
    missing = []
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        aliases = {"nn": "torch.nn", "F": "torch.nn.functional", **_aliases(cells)}
        for cell in cells:
            if cell["cell_type"] != "markdown":
                continue
            for name in cited.findall("".join(cell["source"])):
                head, _, rest = name.partition(".")
                if name.rsplit(".", 1)[1] in files or head in instances:
                    continue
                dotted = f"{aliases[head]}.{rest}" if head in aliases else name
                if not _resolve(dotted):
                    missing.append(f"{path.name}: {name}")
    assert not missing, missing


def _run(notebook, tmp_path, **parameters):
    return papermill.execute_notebook(str(REPO_ROOT / "notebooks" / notebook), str(tmp_path / notebook),
                                      parameters=parameters, cwd=str(REPO_ROOT / "notebooks"),
                                      kernel_name="python3", progress_bar=False)


def test_a_rerun_with_changed_parameters_writes_beside_the_committed_figures(tmp_path, monkeypatch):
    from fmd.provenance import read_stamp

    monkeypatch.setenv("FMD_PROFILE", "smoke")
    base = REPO_ROOT / "build" / "smoke-figures"
    before = {p: p.read_bytes() for p in base.glob("01_*")}
    _run("01_attention_branches.ipynb", tmp_path, schedule_epochs=20)
    written = sorted((base / "schedule_epochs=20").glob("01_*.png"))
    assert written and all(read_stamp(p)["params"] == "schedule_epochs=20" for p in written)
    assert {p: p.read_bytes() for p in base.glob("01_*")} == before  # the defaults' figures untouched


def test_figures_dir_wins_over_the_changed_parameters_folder():
    from fmd import plots, profiles

    defaults = {"kernel_num": 4, "depths": [18, 50], "figures_dir": None}
    try:
        plots.set_context({"kernel_num": 2, "depths": [18], "figures_dir": None}, defaults)
        assert plots.figures_dir("quick") == profiles.FIGURES / "depths=18,kernel_num=2"
        plots.set_context({"kernel_num": 2, "depths": [18], "figures_dir": "build/sweep"}, defaults)
        assert plots.figures_dir("quick") == REPO_ROOT / "build" / "sweep"
    finally:
        plots.set_context({}, {})
    assert plots.figures_dir("quick") == profiles.FIGURES


def test_a_parameter_of_the_wrong_type_stops_the_notebook_in_one_line(tmp_path, monkeypatch):
    # papermill -p passes a list as text; before, "[18]" reached the training config and failed deep
    # inside it ("depth must be an integer, got '['").
    monkeypatch.setenv("FMD_PROFILE", "smoke")
    with pytest.raises(papermill.PapermillExecutionError) as failed:
        _run("03_training.ipynb", tmp_path, depths="[18]")
    assert failed.value.ename == "ValueError"
    assert failed.value.evalue == ("parameter depths must be a list of integers, got the string '[18]'; "
                                   'pass lists with -y "depths: [18]"')
    assert "plots.set_context(" in failed.value.source  # the cell after papermill's: before any work


@pytest.mark.parametrize("default, value, message", [
    (4, "two", "parameter p must be an integer, got the string 'two'"),
    (0, 1.5, "parameter p must be an integer, got 1.5"),
    (34.0, "x", "parameter p must be a number, got the string 'x'"),
    (False, 1, "parameter p must be True or False, got 1"),
    (["fmdconv"], [1], "parameter p must be a list of strings, got [1]"),
    (None, "(1, 2)", 'parameter p must be a list, got the string \'(1, 2)\'; pass lists with -y "p: [1, 2]"'),
])
def test_parameter_type_errors_name_the_parameter_and_its_form(default, value, message):
    from fmd.cli import check_parameters

    with pytest.raises(ValueError) as error:
        check_parameters({"p": default}, {"p": value})
    assert str(error.value) == message
    for fine in ((34.0, 30), ((2.0, 1.0), [1, 2.5]), (None, "build/x"), ([(8, 32)], [[8, 32]])):
        check_parameters({"p": fine[0]}, {"p": fine[1]})
