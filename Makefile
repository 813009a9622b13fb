# The README's two commands: `make reproduce` (regenerate figures and tables, default profile)
# and `make test` (unit tests + notebook validation). Both set up .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= quick
STAMP := $(VENV)/.installed

.PHONY: setup data reproduce test bench lab clean-venv lock

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# every package at the version (and hash) in requirements.lock, which `make lock` makes from pyproject.toml
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

setup: $(STAMP) data

# Fashion-MNIST from Debian where we can (offline real images); harmless where we cannot.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
		|| echo "note: could not install dataset-fashion-mnist; fmd.data falls back to data/ or a download"; \
	fi

reproduce: setup
	FMD_PROFILE=$(PROFILE) $(PY) -m fmd.reproduce --profile $(PROFILE)

test: setup
	$(VENV)/bin/ruff check fmd tests
	# The tests run in two pytest-xdist workers (a file's tests in one), so a native crash (inductor,
	# ONNX Runtime) fails the test that was running, with its signal, and a fresh worker runs the rest
	FMD_PROFILE=smoke $(PY) -m pytest -q -n 2 --dist loadfile --durations=15 tests
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
		FMD_PROFILE=smoke $(PY) -m pytest -q --durations=8 --nbval-lax --nbval-current-env notebooks \
			--ignore-glob='*.running.ipynb' --ignore-glob='*.failed.ipynb'; \
	fi

# Open the chapters in JupyterLab with the project's kernel (profile quick unless PROFILE is given).
lab: setup
	FMD_PROFILE=$(PROFILE) $(VENV)/bin/jupyter lab notebooks/

bench: setup
	$(PY) -m fmd.bench
	$(PY) -m fmd.bench --breakdown

clean-venv:
	rm -rf $(VENV)

# Regenerate requirements.lock from pyproject.toml with pip-compile (in a venv of its own), keeping every
# pin that still fits; UPGRADE=1 takes the newest versions that fit. tests/test_lock.py checks the two agree.
LOCKTOOLS := $(VENV)/lock-tools
lock:
	@test -x $(LOCKTOOLS)/bin/pip-compile || { $(PYTHON) -m venv $(LOCKTOOLS) && \
		$(LOCKTOOLS)/bin/python -m pip install --quiet pip==26.3 pip-tools==7.7.0; }
	$(LOCKTOOLS)/bin/python scripts/lock.py $(if $(UPGRADE),--upgrade)
