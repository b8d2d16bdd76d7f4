# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The identity of an interpreter: its version and the installation it belongs to (a venv's
# python reports the interpreter it was made from). Computed when the Makefile is read, so
# that `make -n` shows whether the venv will be rebuilt.
PY_IDENTITY := import sys; print(sys.version.split()[0], sys.base_prefix)
PYTHON_ID   := $(shell $(PYTHON) -c '$(PY_IDENTITY)' 2>/dev/null)
VENV_ID     := $(shell $(BIN)/python -c '$(PY_IDENTITY)' 2>/dev/null)

.PHONY: demo test lint typecheck unit soak breaks test-otel-range mutate bench docs dist clean FORCE

# The venv is (re)built when pyproject.toml changed since, and from scratch when another
# interpreter made it: `make test PYTHON=python3.13` never reuses a venv of Python 3.11.
ifneq ($(PYTHON_ID),$(VENV_ID))
$(STAMP): FORCE
endif

$(STAMP): pyproject.toml
	@test -n "$(PYTHON_ID)" || { echo "make: PYTHON=$(PYTHON) is not a working Python" >&2; exit 1; }
ifneq ($(PYTHON_ID),$(VENV_ID))
	@echo "$(VENV): built by [$(VENV_ID)], PYTHON=$(PYTHON) is [$(PYTHON_ID)]: recreating it"
	rm -rf $(VENV)
endif
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

FORCE:

# the demo's log file (git-ignored): logs/fastapi_app.log
demo: $(STAMP)
	$(BIN)/python examples/fastapi_app/demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench tools
	$(BIN)/ruff format --check src tests examples bench tools

typecheck: $(STAMP)
	$(BIN)/mypy --strict src/fapilog

# pytest-xdist: one worker per core (TEST_JOBS=0: the suite in this one process)
TEST_JOBS ?= auto

unit: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_JOBS) --durations=15 --cov=fapilog --cov-report=term

test: lint typecheck unit

# the race and hang scenarios at their full repetition counts (minutes; see CONTRIBUTING.md)
soak: $(STAMP)
	FAPILOG_SOAK=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m soak

# each known bug re-introduced in a scratch copy, with the tests that must catch it
# (tools/breaks/*.patch; see CONTRIBUTING.md)
breaks: $(STAMP)
	$(BIN)/python tools/breaks.py

# the test suite against the lowest and the highest OpenTelemetry releases pyproject allows,
# each in a venv of its own (.venv-otel-lowest, .venv-otel-highest); CI runs it
test-otel-range: $(STAMP)
	$(BIN)/python tools/otel_range.py

# mutation testing of the pipeline, bridge, lifecycle and exporter modules with mutmut
# (hours on 2 cores; not part of `make test`; see CONTRIBUTING.md)
mutate: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,mutate]'
	$(BIN)/python tools/mutate.py $(MODULES)

# the settings table in docs/configuration.md, then the docs site into site/ (git-ignored)
docs: $(STAMP)
	$(BIN)/python docs/update_reference.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict  # (without the theme's banner about MkDocs 2)

# the wheel and the sdist into dist/ (git-ignored). pip builds the wheel in an isolated
# environment with pyproject's build backend; the sdist is made by that same backend,
# installed into a scratch folder for the purpose (nothing is added to the venv)
BUILD_REQUIRES = $(shell sed -n 's/^requires *= *\[\(.*\)\]/\1/p' pyproject.toml | tr ',' ' ')
SDIST_BACKEND := dist/.build-backend

dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist .
	$(BIN)/python -m pip install --quiet --target $(SDIST_BACKEND) $(BUILD_REQUIRES)
	PYTHONPATH=$(SDIST_BACKEND) $(BIN)/python -m hatchling build --target sdist --directory dist
	rm -rf $(SDIST_BACKEND)
	@ls -1 dist

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache dist site mutants
