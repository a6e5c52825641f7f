# Everything a newcomer runs. Each target sets up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# wide benchmark tables, also when the output is not a terminal
BENCH := COLUMNS=150 $(BIN)/python
BENCHES := bench-model bench-codec bench-preprocess bench-data bench-train bench-scaling
FACENET := facenet-pytorch>=2.6,<3
# DALI wheel by NVIDIA driver: cuda130 needs driver >= 580, cuda120 >= 525 (make install DALI=cuda120)
DALI ?= cuda130

.PHONY: help install lint test test-all demo bench $(BENCHES) shards clean

help:
	@echo "make test         set up .venv (first run) and run the CPU test suite"
	@echo "make lint         ruff: the format check and the lint (.ci/run runs it before the tests)"
	@echo "make demo         the whole system on a generated dataset (~7 min on 2 CPU cores)"
	@echo "make bench        every benchmark (model step vs reference, codec, preprocessing, data, training, scaling); BENCHMARKS.md"
	@echo "make test-all     also the slow tests"
	@echo "make shards DATASET=mafw [RAW=/data/MAFW] [WORKERS=4, default one per core]   preprocess a dataset into shards (raw default: \$$S4D_RAW/mafw, ./raw/mafw)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test,$(DALI)]'
	$(BIN)/pip install -q --no-deps '$(FACENET)'
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff format --check --quiet .
	$(BIN)/ruff check --quiet .

test: $(STAMP)
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m 'not gpu'

demo: $(STAMP)
	$(BIN)/s4d demo --out demo

# One target per script (make bench-model ... bench-scaling); `bench` runs them one after another,
# each printing its table and the command that reproduces it.
$(BENCHES): bench-%: $(STAMP)
	$(BENCH) benchmarks/bench_$*.py

bench: $(BENCHES)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# Preprocess a dataset: make shards DATASET=mafw [RAW=/data/MAFW] [WORKERS=4] [PART=0/1 | PART=auto under a SLURM array]
DATASET ?=
RAW ?=
WORKERS ?=
PART ?= 0/1
shards: $(STAMP)
	@test -n "$(DATASET)" || { echo "usage: make shards DATASET=<manifest name> [RAW=<raw release folder>, default \$$S4D_RAW/<name> or ./raw/<name>]"; exit 2; }
	$(BIN)/s4d shards --manifest $(DATASET) $(if $(RAW),--raw $(RAW)) $(if $(WORKERS),--workers $(WORKERS)) --part $(PART)
