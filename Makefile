# Two commands for a fresh Linux machine with Python 3.11+:
#   make demo   - set up .venv and run the live demo on the simulated microscope
#   make test   - set up .venv with the test extras and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is only for training (optional extra); this pin takes the CPU build.
TORCH  ?= torch==2.13.0
DEMO_ARGS ?= --frames 300 --out runs/demo

.PHONY: demo test typecheck setup setup-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.setup: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.setup-test: $(VENV)/.setup
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test,train]"
	touch $@

setup: $(VENV)/.setup
setup-test: $(VENV)/.setup-test

demo: $(VENV)/.setup
	$(BIN)/inscope demo $(DEMO_ARGS)

# mypy on the package as installed (see .ci/mypy.sh: the wheel maps three folders)
typecheck: $(VENV)/.setup-test
	PYTHON=$(abspath $(BIN))/python .ci/mypy.sh

test: $(VENV)/.setup-test
	$(BIN)/ruff check .
	PYTHON=$(abspath $(BIN))/python .ci/mypy.sh
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs
