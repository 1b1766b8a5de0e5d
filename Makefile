# Two commands on a fresh machine (Python 3.11):
#   make demo    create .venv (pinned) and run the whole study on config/config.yaml
#   make test    create .venv if missing and run the test suite
#   make venv TORCH=cuda   the same environment with torch's CUDA build (GPU nodes)
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= all
STAMP  := $(VENV)/.installed
# TORCH=cuda installs the GPU lock (requirements-cuda.txt: the same pins, torch's CUDA build)
TORCH  ?= cpu
LOCK   := $(if $(filter cuda,$(TORCH)),requirements-cuda.txt,requirements.txt)

.PHONY: venv demo test check-demo rehearsal lint envs rulegraph clean-results slurm-profile

venv: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (set PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: venv
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml --report results/report.html
	$(BIN)/python -m robustmaps.acceptance results

check-demo: venv
	$(BIN)/python -m robustmaps.acceptance results

# The paper protocol rehearsed at the study's grid on this machine (config/rehearsal.yaml: counts cut
# so that it fits about 90 minutes on 2 cores), in rehearsal/, then its checks (robustmaps.acceptance).
REHEARSAL        ?= rehearsal
REHEARSAL_CONFIG := config/paper.yaml config/rehearsal.yaml
rehearsal: venv
	@start=$$(date +%s); \
	$(BIN)/snakemake --cores $(CORES) -d $(REHEARSAL) --configfile $(REHEARSAL_CONFIG) && \
	$(BIN)/snakemake -d $(REHEARSAL) --configfile $(REHEARSAL_CONFIG) --report $(abspath $(REHEARSAL))/report.html && \
	echo "rehearsal: the workflow and its report in $$(( $$(date +%s) - start )) s" && \
	$(BIN)/python -m robustmaps.acceptance --rehearsal $(REHEARSAL) --configfile $(REHEARSAL_CONFIG) \
	  --paper config/paper.yaml --table $(REHEARSAL)/rule_costs.tsv

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/snakemake --lint --configfile config/config.yaml

# Regenerate the conda spec, the CUDA lock and its conda spec from the lock file (tests check they agree).
envs: venv
	$(BIN)/python -m robustmaps.envs requirements.txt envs/robustmaps.yaml
	$(BIN)/python -m robustmaps.envs --cuda requirements.txt requirements-cuda.txt envs/robustmaps-cuda.yaml

# The rule graph shown in README (needs graphviz's dot; a test checks the .dot is current).
rulegraph: venv
	$(BIN)/snakemake --rulegraph --configfile config/config.yaml -d .rulegraph-tmp > docs/rulegraph.dot
	rm -rf .rulegraph-tmp
	dot -Tpng -Gdpi=70 docs/rulegraph.dot -o docs/rulegraph.png

clean-results:
	rm -rf results .snakemake

# Install the Slurm site profile once per user: `snakemake --profile slurm` then finds it.
# Never over an existing one (a site's own `slurm` profile works as it is).
SLURM_PROFILE := $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/snakemake/slurm
slurm-profile:
	@if [ -e "$(SLURM_PROFILE)" ]; then \
	  echo "$(SLURM_PROFILE) exists: left as it is (remove it first to install this workflow's)"; \
	else \
	  mkdir -p "$(dir $(SLURM_PROFILE))" && cp -r profiles/slurm "$(SLURM_PROFILE)" && \
	  echo "installed $(SLURM_PROFILE); edit for your cluster:" && \
	  echo "  $(SLURM_PROFILE)/partitions.yaml   your CPU and GPU partition names and limits (sinfo -s)" && \
	  echo "  $(SLURM_PROFILE)/config.yaml       optional: slurm_account under default-resources (else guessed)"; \
	fi
