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
# Debian packages the tests need: Chromium for the real-browser tests (Playwright drives
# /usr/bin/chromium; it never downloads a browser of its own), and STILTS (taplint and votlint
# validate the local archive's TAP service and the VOTables latentsky writes).
SYSTEM_PACKAGES := chromium stilts
# npm packages the tests need: JupyterHub's proxy for tests/platform (Node comes from Debian's nodejs).
NPM_PACKAGES := configurable-http-proxy

.PHONY: demo test test-fast lint install sysdeps bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[test,jupyter,cluster,bench]"
	touch $(STAMP)

# Installs only what is missing, so it costs nothing once done.
sysdeps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		echo "installing Debian packages:$$missing"; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing; \
	fi
	@command -v npm >/dev/null 2>&1 || { sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq nodejs npm; }
	@for p in $(NPM_PACKAGES); do command -v $$p >/dev/null 2>&1 || { sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		echo "installing npm package $$p"; $$sudo npm install -g --no-fund --no-audit $$p; }; done

demo: $(STAMP)
	$(BIN)/latentsky demo --out $(DEMO_OUT)

# The course's notebooks run inside the suite (tests/notebooks executes each one and checks its figures).
test: $(STAMP) sysdeps lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --timeout 900 tests

# The quick tier while changing code: no browser, no notebooks, no JupyterHub/Binder/classroom, no scale
# tests, no TensorFlow training and nothing marked slow (the markers are set in tests/conftest.py).
# `make test` runs everything.
FAST_MARKERS := not slow and not browser and not notebook and not platform and not scale and not training
test-fast: $(STAMP) lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --timeout 300 -m "$(FAST_MARKERS)" tests

# ruff (pyflakes, pycodestyle, import order and formatting, configured in pyproject.toml) and deptry
# (declared vs imported dependencies).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/deptry src

bench: $(STAMP)
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(DEMO_OUT) .pytest_cache build src/*.egg-info
