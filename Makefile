# The README's two commands: `make reproduce` (regenerate figures and tables, default profile)
# and `make test` (unit tests + notebook validation). Both set up .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= quick
STAMP := $(VENV)/.installed

.PHONY: setup data reproduce test bench lab clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# every dependency and its pin comes from pyproject.toml
	$(PY) -m pip install --quiet -e ".[test,notebooks]"
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
	FMD_PROFILE=smoke $(PY) -m pytest -q --durations=15 tests
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
