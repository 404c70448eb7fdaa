# Every target runs in .venv, which `make install` creates once (and again when a
# pyproject.toml or this file changes). `make demo` and `make test` install what they need.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

PACKAGES := traffik-core traffik-redis traffik-memcached traffik-fastapi
EDITABLES := -e "packages/traffik-core[starlette]" $(foreach p,$(filter-out traffik-core,$(PACKAGES)),-e packages/$(p))
# pytest-asyncio only because the seed page imports it; pyyaml reads docker-compose.yml in a
# test; hypothesis fuzzes rates and proxy headers in the fault suite; ruff pinned so
# formatting is stable; pytest-xdist runs `make test-fast` on two workers; limits, slowapi and
# fastapi-limiter are the rivals `python -m benchmarks --rivals` measures traffik against.
DEV_DEPS := "pytest>=8" "anyio>=4" "httpx>=0.27" pytest-asyncio pyyaml "hypothesis>=6.100" "uvicorn[standard]>=0.30" "ruff>=0.17,<0.18" "mypy>=1.19" "prometheus-client>=0.20" "opentelemetry-api>=1.30" "opentelemetry-sdk>=1.30" "pytest-xdist>=3.6" "limits>=5; python_version >= '3.10'" "slowapi>=0.1.9; python_version >= '3.10'" "fastapi-limiter>=0.2; python_version >= '3.10'"

DEMO_STAMP := $(VENV)/.demo-installed
# The demo needs traffik-core (with prometheus-client, so that it serves /metrics),
# traffik-fastapi and a server, nothing else (no test or lint tools; traffik-redis or
# traffik-memcached only when TRAFFIK_BACKEND_URL names that store). hatchling and editables
# let pip install the packages without a build environment each.
DEMO_DEPS := "uvicorn>=0.30" "hatchling>=1.26" editables
DEMO_EDITABLES := -e "packages/traffik-core[starlette,prometheus]" -e packages/traffik-fastapi

# The documentation site (mkdocs.yml), installed apart so that `make demo` and `make test-fast`
# never wait for it.
DOCS_STAMP := $(VENV)/.docs-installed
DOCS_DEPS := "mkdocs-material>=9,<10" "mkdocstrings[python]>=1,<2" "mkdocstrings-python>=2,<3"

TEST_PATHS = $(wildcard packages/*/tests) tests
LINT_PATHS = $(wildcard packages tests benchmarks examples)
SRC_PATHS := $(foreach p,$(PACKAGES),packages/$(p)/src)
MATRIX_PYTHONS := 3.9 3.10 3.11 3.12 3.13
HATCH ?= $(shell command -v hatch 2>/dev/null || echo $(BIN)/hatch)

# The Starlette-facing tests run again on the oldest releases traffik-core declares (its
# pyproject's minimums: Starlette, prometheus-client, opentelemetry), in a venv of their own;
# that Starlette line also sets no scope["route"]. tests/test_packaging.py keeps the two in step.
COMPAT_VENV := .venv-starlette0
COMPAT_STAMP := $(COMPAT_VENV)/.installed
# anyio before 4.12: Starlette 0.4x's TestClient names an alias that 4.12 deprecates.
COMPAT_DEPS := "starlette==0.42.*" "fastapi>=0.128.2" "pytest>=8" "anyio>=4,<4.12" "httpx>=0.27" pytest-asyncio "prometheus-client==0.20.*" "opentelemetry-api==1.30.*" "opentelemetry-sdk==1.30.*"
COMPAT_TESTS := packages/traffik-core/tests packages/traffik-fastapi/tests tests/test_seed_page.py tests/test_docs.py

# The Redis tests and the fault suite run again on redis-py 7.0, what Python 3.9 gets: redis-py
# 5.3 to 7.x connect a pool's new connections under its lock, which traffik's own pool works
# round (traffik/backends/redis/_pool.py; a regression makes a frozen server's requests time
# out one after another). Their cluster client is not supported (docs/deployment.md).
REDIS_COMPAT_VENV := .venv-redis7
REDIS_COMPAT_STAMP := $(REDIS_COMPAT_VENV)/.installed
REDIS_COMPAT_DEPS := "redis==7.0.*" "pytest>=8" "anyio>=4" "httpx>=0.27" pytest-asyncio "hypothesis>=6.100" "pytest-xdist>=3.6"
REDIS_COMPAT_TESTS := packages/traffik-redis/tests tests/faults

.PHONY: install test test-fast pytest lint types test-matrix test-starlette-compat test-redis-compat demo docs docs-serve bench build clean

install: $(STAMP)

$(STAMP): Makefile $(foreach p,$(PACKAGES),packages/$(p)/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(EDITABLES) $(DEV_DEPS)
	touch $@

test: lint types docs pytest test-starlette-compat test-redis-compat

# In memory only, and without the tests that build wheels or start processes (`slow`) or the
# fault suite (`faults`: servers killed and frozen); on two workers, a test file per worker at
# a time (tests/test_docs.py runs every docs page in one process, once).
test-fast: export SKIP_REDIS_TESTS = true
test-fast: export SKIP_MEMCACHED_TESTS = true
test-fast: PYTEST_ARGS += -m "not slow and not faults" -n 2 --dist loadfile
test-fast: lint types pytest

pytest: $(STAMP)
	$(BIN)/python -m pytest $(TEST_PATHS) $(PYTEST_ARGS)

test-starlette-compat: $(COMPAT_STAMP)
	$(COMPAT_VENV)/bin/python -c 'import starlette; print("Starlette", starlette.__version__)'
	SKIP_REDIS_TESTS=true SKIP_MEMCACHED_TESTS=true $(COMPAT_VENV)/bin/python -m pytest $(COMPAT_TESTS) -m "not slow" $(PYTEST_ARGS)

test-redis-compat: $(REDIS_COMPAT_STAMP)
	$(REDIS_COMPAT_VENV)/bin/python -c 'import redis; print("redis-py", redis.__version__)'
	$(REDIS_COMPAT_VENV)/bin/python -m pytest $(REDIS_COMPAT_TESTS) -n 2 $(PYTEST_ARGS)

$(REDIS_COMPAT_STAMP): Makefile $(foreach p,$(PACKAGES),packages/$(p)/pyproject.toml)
	test -x $(REDIS_COMPAT_VENV)/bin/python || $(PYTHON) -m venv $(REDIS_COMPAT_VENV)
	$(REDIS_COMPAT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check $(EDITABLES) $(REDIS_COMPAT_DEPS)
	touch $@

$(COMPAT_STAMP): Makefile $(foreach p,$(PACKAGES),packages/$(p)/pyproject.toml)
	test -x $(COMPAT_VENV)/bin/python || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e packages/traffik-core -e packages/traffik-fastapi $(COMPAT_DEPS)
	touch $@

lint: $(STAMP)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/ruff check $(LINT_PATHS)

types: $(STAMP)
	$(BIN)/mypy $(SRC_PATHS)

# One hatch env per interpreter (uv resolves each for its own Python), made anew each run:
# an editable install does not pick up new entry points or a leaf package that was empty.
# Interpreters that are neither `python3.X` on PATH nor a pyenv version are skipped.
test-matrix: $(HATCH)
	@status=0; for v in $(MATRIX_PYTHONS); do \
	  exe=$$(python$$v -c 'import sys; print(sys.executable)' 2>/dev/null \
	    || { prefix=$$(pyenv prefix $$v 2>/dev/null) && echo "$$prefix/bin/python$$v"; }); \
	  if [ -z "$$exe" ] || [ ! -x "$$exe" ]; then echo "test-matrix: Python $$v not found, skipped"; continue; fi; \
	  echo "test-matrix: Python $$v ($$exe)"; \
	  "$(HATCH)" env remove hatch-test.py$$v; \
	  PATH="$$(dirname "$$exe"):$$PATH" "$(HATCH)" test --python $$v -- $(PYTEST_ARGS) || status=1; \
	done; exit $$status

$(BIN)/hatch: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "hatch>=1.18"

demo: $(DEMO_STAMP)
	@case "$$TRAFFIK_BACKEND_URL" in \
	  redis*|rediss*|unix*) store=traffik-redis ;; memcached*) store=traffik-memcached ;; *) store= ;; esac; \
	if [ -n "$$store" ] && ! $(BIN)/python -c "import importlib.metadata as m; m.version('$$store')" 2>/dev/null; then \
	  $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-build-isolation -e packages/$$store; fi
	$(BIN)/python -m uvicorn examples.app:app --host 127.0.0.1 --port 8000

# `venv --without-pip` takes a moment where `venv` takes seconds (ensurepip compiles pip); the
# host's pip (22.3 or newer) then installs pip into it, so every other target finds one. With
# no such pip on the host, `venv` bootstraps its own.
$(DEMO_STAMP): Makefile $(foreach p,$(PACKAGES),packages/$(p)/pyproject.toml)
	test -x $(BIN)/python || { $(PYTHON) -m venv --without-pip $(VENV) \
	  && $(PYTHON) -m pip --python $(BIN)/python install --quiet --disable-pip-version-check --no-compile pip; } \
	  || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile $(DEMO_DEPS)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile --no-build-isolation $(DEMO_EDITABLES)
	touch $@

# `make docs` builds the site into site/ (--strict: a broken link or reference fails it);
# `make docs-serve` serves it with live reload on 127.0.0.1:8001.
docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

docs-serve: $(DOCS_STAMP)
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(DOCS_DEPS)
	touch $@

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(ARGS)

build: $(HATCH)
	rm -rf dist
	for p in $(PACKAGES); do (cd packages/$$p && "$(abspath $(HATCH))" build ../../dist) || exit 1; done

clean:
	rm -rf $(VENV) $(COMPAT_VENV) $(REDIS_COMPAT_VENV) dist site .mypy_cache .ruff_cache .pytest_cache
