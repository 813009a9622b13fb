"""papermill's -p reaches every value a notebook derives from its parameters: the parameters cell
holds only literals, and what depends on them is computed after papermill's injected cell."""
import json
import os

import papermill

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
