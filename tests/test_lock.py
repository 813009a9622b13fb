"""requirements.lock: made from pyproject.toml's current dependencies, pinning all of them, and what the
Makefile and environment.yml install."""
import importlib.util
import re
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"


def _load_lock_script():
    spec = importlib.util.spec_from_file_location("fmd_lock_script", ROOT / "scripts" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock_script = _load_lock_script()


def _pins():
    """{canonical name: (version, number of hashes)} from the lock."""
    pins, current = {}, None
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if m:
            current = canonicalize_name(m.group(1))
            assert current not in pins, f"{current} pinned twice"
            pins[current] = [m.group(2), 0]
        elif line.strip().startswith("--hash=sha256:") and current is not None:
            pins[current][1] += 1
        elif line.strip() and not line.lstrip().startswith("#"):
            assert line.startswith(" "), f"requirements.lock: not a pin: {line!r}"
    return {k: tuple(v) for k, v in pins.items()}


def _pyproject_requirements():
    project = lock_script._tomllib().loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"])
    for extra in lock_script.EXTRAS:
        reqs += project["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


def test_the_lock_was_made_from_the_current_pyproject_dependencies():
    recorded = lock_script.recorded_digest(LOCK)
    assert recorded is not None, f"requirements.lock has no '# {lock_script.DIGEST_KEY}:' header line"
    assert recorded == lock_script.deps_digest(ROOT / "pyproject.toml"), (
        "pyproject.toml's dependencies changed since requirements.lock was made: run `make lock`")


def test_the_digest_follows_the_dependency_section_only(tmp_path):
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    digest = lock_script.deps_digest(ROOT / "pyproject.toml")
    other = tmp_path / "pyproject.toml"
    other.write_text(text.replace("line-length = 110", "line-length = 111"), encoding="utf-8")
    assert lock_script.deps_digest(other) == digest  # ruff's settings are no reason to relock
    other.write_text(text.replace('"tqdm>=4.60"', '"tqdm>=4.61"'), encoding="utf-8")
    assert lock_script.deps_digest(other) != digest


def test_every_pyproject_dependency_is_pinned_within_its_specifier():
    pins = _pins()
    assert len(pins) > 100  # the whole tree, not only the direct dependencies
    for req in _pyproject_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (pyproject.toml) is not pinned in requirements.lock"
        version = pins[name][0]
        assert req.specifier.contains(Version(version), prereleases=True), f"{name}=={version} vs {req}"
    assert pins["torch"][0] == "2.14.1" and pins["torchvision"][0] == "0.29.1"


def test_every_pin_carries_its_hashes():
    for name, (version, hashes) in _pins().items():
        assert hashes >= 1, f"{name}=={version} has no --hash: pip's hash-checking mode would refuse the lock"


def test_the_makefile_installs_from_the_lock():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    rule = re.search(r"^\$\(STAMP\):(.*)\n((?:\t.*\n)+)", makefile, re.M)
    assert rule, "no $(STAMP) rule in the Makefile"
    assert "requirements.lock" in rule.group(1).split() and "pyproject.toml" in rule.group(1).split()
    recipe = rule.group(2)
    assert "pip install --quiet -r requirements.lock" in recipe
    assert re.search(r"pip install .*--no-deps .*-e \.$", recipe, re.M), "the package goes in without deps"
    assert not re.search(r"-e \"?\.\[", recipe), "installing the extras would resolve past the lock"
    assert re.search(r"^lock:", makefile, re.M) and "scripts/lock.py" in makefile


def test_environment_yml_installs_the_lock_on_the_locked_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    deps = env["dependencies"]
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert pip_section == ["-r requirements.lock"], pip_section  # the pins come from the lock alone
    conda_pins = [d for d in deps if isinstance(d, str)]
    python = next(d for d in conda_pins if d.startswith("python="))
    header = LOCK.read_text(encoding="utf-8")
    locked = re.search(r"on CPython (\d+\.\d+)", header)
    assert locked and python == f"python={locked.group(1)}", (python, "the lock's Python")
    for d in conda_pins:  # nothing else that pip would install twice at another version
        name = canonicalize_name(re.split(r"[=<>! ]", d)[0])
        assert name in ("python", "pip") or name not in _pins(), f"{d} in environment.yml and in the lock"

