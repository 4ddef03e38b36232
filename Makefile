# facescan: the two commands a newcomer needs are `make ablation` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export KEDRO_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1
export MPLBACKEND := Agg

.PHONY: install ablation test test-fast lint viz tensorboard benchmark screenshots clean-venv

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

ablation: install  ## the whole ablation study (CPU demo on synthetic data in the base environment)
	$(BIN)/kedro run --pipelines ablation $(KEDRO_ARGS)

test: install  ## the test-suite (tiny sizes, CPU)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks scripts notebooks
	$(BIN)/ruff format --check src tests benchmarks scripts notebooks

viz: install  ## kedro-viz on http://127.0.0.1:4141
	$(BIN)/kedro viz run --no-browser --host 127.0.0.1 --port 4141

tensorboard: install
	$(BIN)/tensorboard --logdir data/08_reporting/tensorboard

benchmark: install
	$(BIN)/python benchmarks/data_pipeline.py

screenshots: install  ## docs/images/*.png: the kedro-viz graph and the HTML report (needs chromium; run `make ablation` first)
	$(BIN)/python scripts/screenshots.py $(SCREENSHOT_ARGS)

clean-venv:
	rm -rf $(VENV)
