# Every target installs what it needs into .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo lint bench bench-accuracy bench-memory bench-review clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -c "import segmentation_models_pytorch, torchvision, torch; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/bodycomp demo --overwrite

lint: $(STAMP)
	$(BIN)/ruff check bodycomp_cli tests benchmarks
	$(BIN)/ruff format --check bodycomp_cli tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

bench-accuracy: $(STAMP)
	$(BIN)/python benchmarks/accuracy.py

bench-memory: $(STAMP)
	$(BIN)/python benchmarks/memory.py

# Issue 24's review flag, absent levels and the real-CT check: trains models on phantoms with every variant
# (bench-review/training), tunes nothing, and scores four held-out cohorts of 50 series (seeds 1001-1004).
# About 27 minutes on a 2-core CPU; it fails while a target is unmet (docs/performance.md).
REVIEW_ARGS := --output bench-review --series 50 --seeds 4 --first-seed 1001
bench-review: $(STAMP)
	$(BIN)/python -m benchmarks.review_flag $(REVIEW_ARGS); \
	$(BIN)/python -m benchmarks.absent_levels $(REVIEW_ARGS); \
	$(BIN)/python -m benchmarks.realct_levels bench-review/training/models/select bench-review/training/models/seg

clean:
	rm -rf $(VENV) bodycomp-demo bench-review .pytest_cache
