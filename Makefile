# Two commands for a fresh Linux machine: `make demo` and `make test`.
# Both create .venv on first use and install fastssl with its dev extras.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	@command -v ffmpeg >/dev/null || scripts/ensure_ffmpeg.sh
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fastssl train --out runs/demo

# lint first: a ruff or mypy finding in fastssl/ fails the test run
test: lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
