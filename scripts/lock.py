"""Regenerate requirements.lock from pyproject.toml (run by `make lock`).

pip-compile resolves the package's dependencies and its extras `test` and `notebooks` with this
machine's pip configuration (so torch and torchvision come from whatever index pip is set up for) and
pins every package, with the sha256 of each release file. Pins already in requirements.lock are kept
wherever they still fit (``--upgrade`` takes the newest that fit instead); with no lock yet, the pins of
the installed .venv seed it, so the lock records the versions the committed figures were made with.

The header records the sha256 of pyproject.toml's dependency section (``deps_digest``):
tests/test_lock.py fails when pyproject.toml's dependencies change and the lock is not regenerated.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements.lock"
EXTRAS = ("test", "notebooks")
DIGEST_KEY = "pyproject-deps-sha256"
# what the digest covers: a change to any of these needs a new lock; the rest of pyproject.toml does not
DIGEST_FIELDS = ("requires-python", "dependencies", "optional-dependencies")


def _tomllib():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            from pip._vendor import tomli as tomllib
    return tomllib


def deps_digest(pyproject: Path = PYPROJECT) -> str:
    """sha256 of pyproject.toml's requires-python, dependencies and optional-dependencies."""
    project = _tomllib().loads(Path(pyproject).read_text(encoding="utf-8"))["project"]
    section = {k: project.get(k) for k in DIGEST_FIELDS}
    return hashlib.sha256(json.dumps(section, sort_keys=True).encode()).hexdigest()


def recorded_digest(lock: Path = LOCK) -> str | None:
    """The digest in the lock's header, or None."""
    m = re.search(rf"^# {DIGEST_KEY}: ([0-9a-f]{{64}})$", Path(lock).read_text(encoding="utf-8"), re.M)
    return m.group(1) if m else None


def _tool_version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def header(digest: str) -> str:
    py = f"CPython {sys.version_info.major}.{sys.version_info.minor}"
    return "\n".join([
        "# requirements.lock: every package `make test` and `make reproduce` install, each at one version.",
        "# Generated from pyproject.toml (dependencies + extras test, notebooks) by `make lock`, i.e.",
        f"#   scripts/lock.py -> pip-compile {_tool_version('pip-tools')} (pip {_tool_version('pip')})"
        " --generate-hashes --allow-unsafe --strip-extras",
        f"# on {py}, {platform.system()} {platform.machine()}; pins are resolved for that platform.",
        "# Pins already here are kept where they still fit (`make lock UPGRADE=1` takes the newest);",
        "# the first lock was seeded from the .venv the committed figures were made with.",
        "# Hashes: pip checks every file against them (hash-checking mode); they cover the PyPI files",
        "# and this machine's local-index torch/torchvision wheels. The package itself (-e .) is installed",
        "# after, with --no-deps. Edit pyproject.toml, then `make lock`: tests/test_lock.py compares:",
        f"# {DIGEST_KEY}: {digest}",
        "",
    ])


def _seed_from_venv(dest: Path) -> bool:
    py = ROOT / ".venv" / "bin" / "python"
    if not py.exists():
        return False
    freeze = subprocess.run([str(py), "-m", "pip", "freeze", "--all", "--exclude-editable"],
                            check=True, capture_output=True, text=True).stdout
    pins = [line for line in freeze.splitlines() if "==" in line and not line.startswith(("#", "pip=="))]
    dest.write_text("\n".join(pins) + "\n")
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upgrade", action="store_true", help="take the newest versions that fit")
    ap.add_argument("--output", type=Path, default=LOCK)
    args = ap.parse_args(argv)

    pip_compile = shutil.which("pip-compile", path=str(Path(sys.executable).parent)) or "pip-compile"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "requirements.lock"
        if args.output.exists():  # pip-compile keeps the pins of its output file where they still fit
            shutil.copy(args.output, out)
        elif _seed_from_venv(out):
            print("no lock yet: seeding its pins from .venv", file=sys.stderr)
        cmd = [pip_compile, "--quiet", "--no-header", "--generate-hashes", "--allow-unsafe", "--strip-extras",
               "--no-emit-index-url", "--no-emit-find-links", "--no-emit-trusted-host",
               *[f"--extra={e}" for e in EXTRAS], f"--output-file={out}", "pyproject.toml"]
        if args.upgrade:
            cmd.append("--upgrade")
        subprocess.run(cmd, check=True, cwd=ROOT)
        body = out.read_text(encoding="utf-8")
    args.output.write_text(header(deps_digest()) + body, encoding="utf-8")
    n = len(re.findall(r"^[A-Za-z0-9][^\s=]*==", body, re.M))
    print(f"wrote {args.output} ({n} pinned packages)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
