# Two entry points: `make demo` and `make test`. Both create .venv with pip when missing and install once
# (the stamp file is rebuilt only when pyproject.toml or constraints.txt change).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=
# test processes (pytest-xdist): one per core this process may use (nproc follows the affinity mask), at most 8
# (each holds its own models); a module's tests stay in one process. TEST_JOBS=0: no worker processes
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ "$$n" -gt 8 ] && n=8; echo $$n)

.PHONY: install demo test test-fast lint clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip check
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "" -q -ra -n $(TEST_JOBS) --dist loadscope $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q -n $(TEST_JOBS) --dist loadscope $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean-demo:
	rm -rf $(DEMO_OUT)
