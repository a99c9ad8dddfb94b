# The two commands of the README: `make demo` and `make test`.
# Both create .venv when missing and install latentsky with the pinned
# dependency set in requirements/constraints.txt; nothing is done by hand.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= demo-output
# pytest workers: the suite is sized for 2 cores (CI's machine).
PYTEST_WORKERS ?= 2

.PHONY: demo test install bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/latentsky demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --timeout 900 tests notebooks --nbmake

bench: $(STAMP)
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(DEMO_OUT) .pytest_cache build src/*.egg-info
