"""Where a result came from: the repository, its git state, the machine, and the stamp every output carries.

One module for training (run records), the benchmark (its tables) and the figures alike:

* :data:`REPO_ROOT`, the checkout every default path starts from;
* :func:`git_state` / :func:`git_commit`, the commit and whether tracked code differs from it
  (what runs rewrite, :data:`CODE_PATHSPEC`, never counts);
* :func:`describe_device`, :func:`library_versions`, :func:`machine_info`;
* :func:`atomic_write_bytes` / :func:`atomic_path`: readers see the old file or the new one;
* :func:`stamp` (the line ``profile: … · dataset: … · commit: …[ · params: …]``), the figure
  metadata that carries it (:func:`figure_metadata`) and :func:`read_stamp`, which reads it back
  from a CSV/Markdown table, a PNG's text chunk or a PDF's document information.

torch is imported only inside the functions that ask it about a device.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Union

PathLike = Union[str, Path]

REPO_ROOT = Path(__file__).resolve().parent.parent
FIGURES = REPO_ROOT / "figures"
# What a run rewrites (figures, run records, executed notebooks): not "dirty" code for a stamp,
# or every figure after the first of a ``make reproduce`` would be stamped dirty.
CODE_PATHSPEC = ("--", ".", ":!figures", ":!data/runs", ":!data/timing", ":!notebooks")

# ---------------------------------------------------------------------------------------------
# Git


def _git(repo: PathLike, *args: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(repo: PathLike = REPO_ROOT, short: bool = False) -> Dict[str, Any]:
    """The checked-out commit and whether tracked code differs from it ("unknown" without git).

    Outputs that runs rewrite (:data:`CODE_PATHSPEC`) do not make a checkout dirty.
    """
    commit = _git(repo, "rev-parse", *(["--short"] if short else []), "HEAD")
    status = _git(repo, "status", "--porcelain", "--untracked-files=no", *CODE_PATHSPEC)
    return {"commit": commit or "unknown", "dirty": None if status is None else bool(status)}


def git_commit(root: PathLike = REPO_ROOT) -> str:
    """The short commit, with '+dirty' where tracked code differs from it, or 'unknown'."""
    state = git_state(root, short=True)
    return state["commit"] + ("+dirty" if state["dirty"] else "")


# ---------------------------------------------------------------------------------------------
# The machine and the libraries


def _cpuinfo() -> Dict[str, str]:
    """The first CPU's fields in /proc/cpuinfo (empty where there is none)."""
    fields: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def _cpu_name(fields: Mapping[str, str]) -> str:
    return fields.get("model name") or _sysctl("machdep.cpu.brand_string") or platform.processor() \
        or platform.machine()


def _sysctl(name: str) -> str:
    """A sysctl value on macOS, where /proc/cpuinfo does not exist ("" elsewhere or on failure)."""
    if platform.system() != "Darwin":
        return ""
    try:
        return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# The /proc/cpuinfo fields that tell CPU generations apart under one model name: x86's family and
# model numbers, or an ARM core's implementer, part and revision (its "model name" is often absent).
_CPU_NUMBERS = ((("cpu family", "family"), ("model", "model")),
                (("CPU implementer", "implementer"), ("CPU part", "part"), ("CPU variant", "variant")))


def describe_device(device: Any) -> str:
    """A human-readable name of the device (GPU or CPU model); ``device`` a torch.device."""
    if device.type == "cuda":
        import torch

        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {_cpu_name(_cpuinfo())}"


def cpu_identity() -> str:
    """This CPU as a timing can be compared on: its model name, the numbers that tell generations
    apart under one name (:data:`_CPU_NUMBERS`) and the cores this process may use."""
    fields = _cpuinfo()
    name = _cpu_name(fields)
    found = next((kind for kind in _CPU_NUMBERS if all(f in fields for f, _ in kind)), ())
    numbers = f" ({', '.join(f'{label} {fields[f]}' for f, label in found)})" if found else ""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}{numbers}, {cores} cores"


def library_versions() -> Dict[str, str]:
    """Versions of Python and the libraries a run depends on."""
    import numpy
    import torch
    import torchvision

    from . import __version__
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__, "fmd": __version__}


def machine_info(device: str, threads: int) -> Dict[str, str]:
    """What the numbers were measured on (the CPU model too: ratios differ between CPU models)."""
    import torch

    info = {"device": device, "threads": str(threads), "torch": torch.__version__,
            "python": platform.python_version(), "commit": git_commit(),
            "cpu": describe_device(torch.device("cpu")).removeprefix("cpu: "),
            "cores": str(os.cpu_count())}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


# ---------------------------------------------------------------------------------------------
# Atomic writes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a result file gets the usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# The stamp

STAMP = re.compile(r"profile: (?P<profile>.*?) · dataset: (?P<dataset>.*?) · commit: (?P<commit>[\w+]+)"
                   r"(?: · params: (?P<params>[^<]*))?")
STAMP_KEY = "fmd stamp"  # the PNG text chunk that holds it (PDF: the document's Subject)


def changed_parameters(defaults: Mapping[str, Any], values: Mapping[str, Any],
                       ignore: Iterable[str] = ()) -> Dict[str, Any]:
    """Each of ``defaults`` whose value in ``values`` differs (``ignore`` left out): name → value."""
    skip = set(ignore)
    return {k: values[k] for k, v in defaults.items() if k not in skip and k in values and values[k] != v}


def parameters_text(changed: Mapping[str, Any]) -> str:
    """``name=value, …``: how a stamp names the parameters a run changed."""
    return ", ".join(f"{k}={v!r}".replace("'", "") for k, v in changed.items())


def stamp(profile: str, dataset: str, commit: Optional[str] = None, params: str = "") -> str:
    """The provenance line every figure and table carries; ``params`` only when some differ."""
    line = f"profile: {profile} · dataset: {dataset} · commit: {commit or git_commit()}"
    return line + (f" · params: {params}" if params else "")


def figure_metadata(line: str, ext: str) -> Dict[str, Optional[str]]:
    """matplotlib ``savefig(metadata=…)`` that stores the stamp ``line`` in a PNG or PDF."""
    if ext == "pdf":
        return {"Subject": line, "CreationDate": None}  # no date: same figure, same bytes
    return {STAMP_KEY: line}


def _file_text(path: Path) -> str:
    if path.suffix in (".csv", ".md"):
        return path.read_text()
    if path.suffix == ".png":
        from PIL import Image

        with Image.open(path) as image:
            return str(getattr(image, "text", {}).get(STAMP_KEY, ""))
    if path.suffix == ".pdf":
        from pypdf import PdfReader

        return str((PdfReader(path).metadata or {}).get("/Subject", ""))
    return ""


def read_stamp(path: PathLike) -> Dict[str, str]:
    """The stamp (profile, dataset, commit, params) of one file in ``figures/``, where it has one.

    Benchmark tables (``bench_*``, ``breakdown_*``) name their machine in their JSON twin instead.
    """
    path = Path(path)
    found = next((m for line in _file_text(path).splitlines() for m in [STAMP.search(line)] if m),
                 None)
    if found is not None:
        return {"profile": found["profile"], "dataset": found["dataset"],
                "commit": found["commit"], "params": found["params"] or "", "from": "stamp"}
    bench = path.with_suffix(".json")
    if path.name.startswith(("bench_", "breakdown_")) and bench.exists():
        first = json.loads(bench.read_text())[0]
        command = "fmd.bench --breakdown" if path.name.startswith("breakdown_") else "fmd.bench"
        return {"profile": "—", "dataset": "none (benchmark)", "commit": first["commit"],
                "params": "", "from": f"{command}: {first['device']}, {first['threads']} threads"}
    return {"profile": "?", "dataset": "?", "commit": "?", "params": "", "from": "no stamp found"}


def provenance_rows(folder: PathLike, kinds: Iterable[str] = (".png", ".pdf", ".csv", ".md", ".json")
                    ) -> List[Dict[str, str]]:
    """One row per file in ``folder``: its name and stamp."""
    kinds = tuple(kinds)
    return [{"file": p.name, **read_stamp(p)} for p in sorted(Path(folder).iterdir())
            if p.is_file() and p.suffix in kinds and not p.name.startswith(".")]
