# The two commands of the README, each doing its own set-up:
#   make demo   run the whole system on embedded defaults
#   make test   lint, type-check, check import contracts and generated protos, run every test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint protos clean check-system

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("LiftWatch needs Python >= 3.11" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/liftwatch-rig demo

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python scripts/gen_protos.py --check

# check-system first: a fresh machine hears at the start which system packages the
# service-backed tests need and lack, and the one command that installs them.
test: check-system lint
	$(BIN)/python -m pytest

check-system:
	$(PYTHON) scripts/check_system.py

protos: $(BIN)/.installed
	$(BIN)/python scripts/gen_protos.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
