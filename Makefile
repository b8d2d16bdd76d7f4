# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit soak bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/fastapi_app/demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src

typecheck: $(STAMP)
	$(BIN)/mypy --strict src/fapilog

unit: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 --cov=fapilog --cov-report=term

test: lint typecheck unit

# the race and hang scenarios at their full repetition counts (minutes; see CONTRIBUTING.md)
soak: $(STAMP)
	FAPILOG_SOAK=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m soak

docs: $(STAMP)
	$(BIN)/python docs/update_reference.py

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache
