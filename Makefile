#################################################################################
# GLOBALS                                                                       #
#################################################################################

PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV        ?= .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
RAW         ?= data/raw
PROCESSED   ?= data/processed
MAPPING     ?= config/mappings/canonical.yml
PERIOD      ?=
TO          ?=
REPORT      ?=
PERIOD_ARG   = $(if $(PERIOD),--period $(PERIOD),)

.DEFAULT_GOAL := help

#################################################################################
# COMMANDS                                                                      #
#################################################################################

## Show this list of targets
.PHONY: help
help:
	@awk 'BEGIN {FS = ":"} /^## / {doc = substr($$0, 4); next} /^[a-z][a-z-]*:/ && doc {printf "  make %-11s %s\n", $$1, doc; doc = ""} /^\.PHONY/ {next}' $(MAKEFILE_LIST)
	@echo "  Variables: PERIOD=YYYY-MM | YYYY-Www | YYYY-Qn, MAPPING=config/mappings/<name>.yml, TO=addr"

## Create the virtual environment and install the kit (first use only)
.PHONY: setup
setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

## Generate the demo export into data/raw (only if data/raw holds no export)
.PHONY: demo-data
demo-data: $(STAMP)
	@if find $(RAW) -maxdepth 1 \( -name '*.csv' -o -name '*.parquet' \) 2>/dev/null | grep -q .; then \
		echo "data/raw already holds an export: demo data not generated"; \
	else \
		$(PY) -m analysis demo-data --out $(RAW); \
	fi

## Validate and load data/raw into data/processed (bad rows quarantined)
.PHONY: ingest
ingest: demo-data
	$(PY) -m analysis ingest --raw $(RAW) --mapping $(MAPPING) --out $(PROCESSED)

## Monthly trend review pack: reports/<period>/ (PERIOD=YYYY-MM, default last complete month)
.PHONY: monthly
monthly: ingest
	$(PY) -m analysis run --cadence monthly $(PERIOD_ARG) --data $(PROCESSED)

## Weekly operating pack (PERIOD=YYYY-Www, default last complete week)
.PHONY: weekly
weekly: ingest
	$(PY) -m analysis run --cadence weekly $(PERIOD_ARG) --data $(PROCESSED)

## Quarterly planning pack (PERIOD=YYYY-Qn, default last complete quarter)
.PHONY: quarterly
quarterly: ingest
	$(PY) -m analysis run --cadence quarterly $(PERIOD_ARG) --data $(PROCESSED)

## Re-run a period from its recorded inputs and compare every output (PERIOD=...)
.PHONY: audit
audit: $(STAMP)
	$(PY) -m analysis audit reports/$(PERIOD)

## E-mail a period's pack (PERIOD=..., TO=addr; SMTP_* from the environment)
.PHONY: email
email: $(STAMP)
	$(PY) -m analysis email reports/$(PERIOD) $(foreach t,$(TO),--to $(t))

## Open JupyterLab on the notebooks with the kit importable
.PHONY: lab
lab: $(STAMP)
	$(PY) -m pip install --quiet -e ".[lab]"
	cd notebooks && ../$(PY) -m jupyter lab

## Run the test suite
.PHONY: test
test: $(STAMP)
	$(PY) -m pytest -q

## Lint (ruff) and check notebooks are stored without outputs
.PHONY: lint
lint: $(STAMP)
	$(PY) -m ruff check src tests bench tools
	$(PY) -m pytest -q tests/test_notebooks.py

## Run the benchmarks (figures and ratios against baselines in the same process)
.PHONY: bench
bench: $(STAMP)
	$(PY) bench/run.py

## Remove derived data and reports (data/raw is never touched)
.PHONY: clean
clean:
	find $(PROCESSED) -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
	find reports -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
