# tf_rcnn developer commands. Every target works from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export KERAS_BACKEND := tensorflow
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test lint benchmark-ops clean

# Creates .venv and installs the package (editable) with its test extras.
# The stamp file makes the target a no-op when nothing changed.
install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[test]"
	touch $@

lint: install
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

benchmark-ops: install
	$(BIN)/python benchmarks/ops.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
