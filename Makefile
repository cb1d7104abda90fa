# Two commands on a fresh machine:  `make demo` (set up + run the main job)  and  `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= outputs/demo

.PHONY: setup demo test test-all bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/ensure_system_deps.sh
	bash scripts/ensure_system_deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all,dev]"
	touch $@

demo: setup
	$(VENV)/bin/srpo demo --out $(OUT)

test: setup
	$(PY) -m pytest -q -n 2

test-all: setup
	$(PY) -m pytest -q -n 2 -m "slow or not slow"

bench: setup
	$(PY) benchmarks/sim_throughput.py --out benchmarks/results
	$(PY) benchmarks/expert_success.py --out benchmarks/results

clean:
	rm -rf $(VENV) outputs .pytest_cache
