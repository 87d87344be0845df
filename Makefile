# Two commands from a fresh clone: `make demo` and `make test`. Both create .venv first when needed.
#
# Without a CUDA GPU, torch is pinned to the 2.13.0 CPU build; elsewhere pass the index that serves it, e.g.
#   make demo TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
# With an NVIDIA GPU, the default (CUDA) torch is installed; add the mamba-ssm kernels with
#   .venv/bin/pip install -e '.[cuda]'

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIP_ARGS ?=

.PHONY: demo test test-fast lint clean

demo: $(VENV)/.installed
	$(BIN)/python train.py experiment=demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest

# The inner loop: everything but the tests that train, sweep or start processes (under 2 minutes on 2 cores).
test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -m "not slow"

lint: $(VENV)/.installed
	$(BIN)/ruff check emotion tests bench hydra_plugins train.py predict.py evaluate.py export.py
	$(BIN)/ruff format --check emotion tests bench hydra_plugins train.py predict.py evaluate.py export.py
	$(BIN)/lint-imports

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(BIN)/pip install torch $(TORCH_PIP_ARGS); \
	else \
		$(BIN)/pip install torch==2.13.0 $(TORCH_PIP_ARGS); \
	fi
	$(BIN)/pip install -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) .cache outputs
