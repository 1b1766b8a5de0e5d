# Two commands on a fresh machine (Python 3.11):
#   make demo    create .venv (pinned) and run the whole study on config/config.yaml
#   make test    create .venv if missing and run the test suite
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= all
STAMP  := $(VENV)/.installed

.PHONY: venv demo test check-demo lint envs rulegraph clean-results

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (set PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: venv
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml --report results/report.html
	$(BIN)/python -m robustmaps.acceptance results

check-demo: venv
	$(BIN)/python -m robustmaps.acceptance results

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/snakemake --lint --configfile config/config.yaml

# Regenerate the conda spec from the lock file (a test checks they agree).
envs: venv
	$(BIN)/python -m robustmaps.envs requirements.txt envs/robustmaps.yaml

# The rule graph shown in README (needs graphviz's dot; a test checks the .dot is current).
rulegraph: venv
	$(BIN)/snakemake --rulegraph --configfile config/config.yaml -d .rulegraph-tmp > docs/rulegraph.dot
	rm -rf .rulegraph-tmp
	dot -Tpng -Gdpi=70 docs/rulegraph.dot -o docs/rulegraph.png

clean-results:
	rm -rf results .snakemake
