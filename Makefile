# Every target installs what it needs into .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo lint bench bench-accuracy bench-memory clean

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

clean:
	rm -rf $(VENV) bodycomp-demo .pytest_cache
