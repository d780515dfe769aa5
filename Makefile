# Set-up is idempotent: the virtual environment is made once and the package reinstalled only
# when pyproject.toml changes (grw/ itself is installed in editable mode).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.grw-installed

.PHONY: setup tour test lab clean

setup: $(INSTALLED)

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --quiet --editable '.[notebooks,test]'
	@touch $@

## The main job: every notebook at its defaults into runs/tour/, then a summary table.
tour: $(INSTALLED)
	$(BIN)/python -m grw tour --notebooks notebooks --out runs/tour

## Every test: unit tests, nbval over the notebooks, papermill runs with small parameters.
test: $(INSTALLED)
	$(BIN)/python -m pytest

## JupyterLab on the notebooks, with this package importable.
lab: $(INSTALLED)
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf runs .pytest_cache
