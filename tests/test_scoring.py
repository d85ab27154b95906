"""Scorers on real rows: shapes, order, cache hits, incremental scoring, the resume after
SIGKILL, bad input, and sanity."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import DATA, corpora_path, rows, write_jsonl
from curate.errors import CurateError
from curate.ingest import ingest
from curate.scoring import make_scorer, run_scorer
from curate.store import Store


def test_heuristics_on_sample_data(store):
    ingest(store, [DATA])
    report = run_scorer(store, make_scorer("heuristics", model=None))
    n = rows(store, "SELECT count(*) FROM examples")[0][0]
    assert report.scored == n and report.cached == 0
    got = dict(rows(store, "SELECT kind, sum(tool_calls) FROM examples JOIN scores_heuristics "
                           "USING (id) GROUP BY 1"))
    assert got["trace"] > 0 and got["instruction"] == 0
    # the planted repetitive list (alpaca_general row 82) repeats more than the median row
    (rep,) = rows(store, "SELECT repetition FROM examples JOIN scores_heuristics USING (id) "
                         "WHERE source = 'alpaca_general' AND source_row = 82")[0]
    (median,) = rows(store, "SELECT median(repetition) FROM scores_heuristics")[0]
    assert rep > median
    again = run_scorer(store, make_scorer("heuristics", model=None))
    assert (again.scored, again.cached) == (0, n)  # cache hit: nothing scored twice


def test_new_rows_are_scored_incrementally(tmp_path, store):
    recs = [{"instruction": f"Say {i}.", "input": "", "output": f"{i} " * (i + 1)}
            for i in range(20)]
    ingest(store, [write_jsonl(tmp_path / "a.jsonl", recs[:12])])
    assert run_scorer(store, make_scorer("heuristics", model=None)).scored == 12
    ingest(store, [write_jsonl(tmp_path / "b.jsonl", recs)])  # 8 new, 12 duplicates
    report = run_scorer(store, make_scorer("heuristics", model=None))
    assert (report.scored, report.cached) == (8, 12)
    assert rows(store, "SELECT count(DISTINCT id), count(*) FROM scores_heuristics") == [(20, 20)]


def test_unknown_names_fail_before_any_work(store, tmp_path):
    ingest(store, [write_jsonl(tmp_path / "a.jsonl", [{"instruction": "a", "output": "b"}])])
    with pytest.raises(CurateError, match="heuristics, embed"):
        make_scorer("perplexityy")
    with pytest.raises(CurateError, match="use one of minilm"):
        make_scorer("embed", model="org/unknown-model")
    with pytest.raises(CurateError, match="use one of prompt, response, all"):
        make_scorer("embed", text="title")
    with pytest.raises(CurateError, match="takes no option text"):
        make_scorer("lm", text="prompt")
    assert not (store.root / "scores").exists()


@pytest.mark.slow
def test_embed_real_rows_index_and_duplicates(tmp_path, store):
    path = corpora_path("gsm8k", "example_model_solutions.jsonl")
    with open(path) as f:
        head = [next(f) for _ in range(30)]
    sample = tmp_path / "solutions.jsonl"
    sample.write_text("".join(head))
    ingest(store, [sample])
    report = run_scorer(store, make_scorer("embed", text="prompt"))
    assert report.scored == rows(store, "SELECT count(*) FROM examples")[0][0]
    got = rows(store, "SELECT e.source_row, s.embedding FROM examples e JOIN scores_embed s "
                      "USING (id) ORDER BY e.source_row")
    vectors = np.array([v for _, v in got], np.float32)
    assert vectors.shape[1] == 384
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    # the solutions of one question share their prompt: the same embedding, exactly
    by_row = {}
    for (row, _), v in zip(got, vectors):
        by_row.setdefault(row, []).append(v)
    for vs in by_row.values():
        assert all(np.array_equal(vs[0], v) for v in vs[1:])
    import faiss

    folder = store.root / "scores" / "embed" / report.config
    index = faiss.read_index(str(folder / "index.faiss"))
    ids = pq.read_table(folder / "index_ids.parquet")["id"].to_pylist()
    assert index.ntotal == len(ids) == len(got)
    vector_of = {i: np.array(v, np.float32) for i, v in rows(store, "SELECT id, embedding "
                                                                   "FROM scores_embed")}
    query = vector_of[ids[7]]
    scores, hits = index.search(query[None, :], 3)
    assert scores[0][0] == pytest.approx(1.0, abs=1e-4)  # the vector finds itself (or a twin)
    assert np.allclose(vector_of[ids[hits[0][0]]], query, atol=1e-5)


def test_empty_text_gets_a_reason_not_a_crash(tmp_path, store):
    recs = [{"instruction": "", "input": "", "output": "An answer to nothing."},
            {"instruction": "A real question?", "input": "", "output": "Yes."}]
    ingest(store, [write_jsonl(tmp_path / "a.jsonl", recs)])
    report = run_scorer(store, make_scorer("embed", text="prompt"))
    assert (report.scored, report.skipped) == (2, 1)
    got = dict(rows(store, "SELECT reason, embedding IS NULL FROM scores_embed"))
    assert got == {"empty text": True, None: False}


@pytest.mark.slow
def test_sigkill_mid_scoring_then_resume_is_identical(tmp_path):
    path = corpora_path("gsm8k", "train.jsonl")
    with open(path) as f:
        head = [next(f) for _ in range(1500)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(head))
    stores = [Store(tmp_path / name) for name in ("killed", "clean")]
    for s in stores:
        ingest(s, [data])
    code = ("import sys; from curate.store import Store; from curate.scoring import "
            "make_scorer, run_scorer; run_scorer(Store(sys.argv[1]), "
            "make_scorer('embed', text='prompt', batch_size=16), shard_rows=100)")
    killed = stores[0]
    proc = subprocess.Popen([sys.executable, "-c", code, str(killed.root)])
    deadline = time.time() + 240
    parts = []
    while time.time() < deadline and len(parts) < 3:
        parts = list(killed.root.glob("scores/embed/*/part-*.parquet"))
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 3 <= len(parts) < 15, "the run was not caught in the middle"
    resumed = run_scorer(killed, make_scorer("embed", text="prompt", batch_size=16),
                         shard_rows=100)
    assert resumed.cached >= 300 and resumed.cached + resumed.scored == 1500
    run_scorer(stores[1], make_scorer("embed", text="prompt", batch_size=16), shard_rows=100)
    q = "SELECT id, embedding FROM scores_embed ORDER BY id"
    a, b = rows(killed, q), rows(stores[1], q)
    assert [r[0] for r in a] == [r[0] for r in b]
    assert np.array_equal(np.array([r[1] for r in a]), np.array([r[1] for r in b]))


@pytest.mark.slow
def test_lm_scores_real_rows(tmp_path, store):
    with open(corpora_path("gsm8k", "train.jsonl")) as f:
        head = [next(f) for _ in range(6)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(head))
    ingest(store, [data])
    report = run_scorer(store, make_scorer("lm", batch_tokens=2048))
    assert report.scored == 6 and report.skipped == 0
    got = rows(store, "SELECT nll, nll_uncond, ifd, ppl, prompt_tokens, response_tokens, "
                      "len(token_losses), truncated FROM scores_lm")
    for nll, nll_u, ifd, ppl, p_tok, r_tok, n_losses, cut in got:
        assert nll < nll_u  # a GSM8K answer is likelier after its question
        assert ifd == pytest.approx(np.exp(nll - nll_u), rel=1e-4)
        assert ppl == pytest.approx(np.exp(nll), rel=1e-4)
        assert p_tok > 10 and r_tok == n_losses and not cut
    # per-token losses average to the example's loss (float16 storage)
    (losses, nll) = rows(store, "SELECT token_losses, nll FROM scores_lm LIMIT 1")[0]
    assert np.mean(np.array(losses, np.float32)) == pytest.approx(nll, abs=1e-2)


@pytest.mark.slow
def test_lm_matches_a_plain_forward_and_truncates(tmp_path, store):
    import torch

    from curate.models import load_causal_lm

    long_prompt = "Here is some context. " * 120
    recs = [{"instruction": "What is 2 + 3?", "input": "", "output": "2 + 3 = 5."},
            {"instruction": long_prompt, "input": "", "output": "Noted."}]
    ingest(store, [write_jsonl(tmp_path / "a.jsonl", recs)])
    run_scorer(store, make_scorer("lm", max_tokens=256))
    got = {p: (nll, cut, pt) for p, nll, cut, pt in rows(
        store, "SELECT p.prompt, nll, truncated, prompt_tokens FROM pairs p "
               "JOIN scores_lm USING (id)")}
    model, tok = load_causal_lm("smollm2-135m")
    msgs = [{"role": "user", "content": "What is 2 + 3?"},
            {"role": "assistant", "content": "2 + 3 = 5."}]
    full = tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False,
               return_tensors="pt")["input_ids"]
    n_prompt = len(tok(tok.apply_chat_template(msgs[:1], tokenize=False,
                                               add_generation_prompt=True),
                       add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logp = torch.log_softmax(model(full).logits[0].float(), -1)
    target = full[0, n_prompt:-1]  # the response and its end-of-turn token
    naive = float(-logp[n_prompt - 1:-2].gather(1, target[:, None]).mean())
    assert got["What is 2 + 3?"][0] == pytest.approx(naive, abs=1e-3)
    nll, cut, prompt_tokens = got[long_prompt.strip()] if long_prompt.strip() in got else \
        got[long_prompt]
    assert cut and prompt_tokens < 256


def test_scoring_locks_its_configuration_not_the_store(tmp_path, store, monkeypatch):
    from curate.errors import StoreError
    from curate.store import hold_lock

    recs = [{"instruction": f"Q{i}?", "input": "", "output": f"A{i}."} for i in range(6)]
    ingest(store, [write_jsonl(tmp_path / "a.jsonl", recs[:3])])
    scorer = make_scorer("heuristics", model=None)
    folder = store.root / "scores" / scorer.name / scorer.key
    folder.mkdir(parents=True)
    monkeypatch.setenv("CURATE_LOCK_WAIT", "0.2")
    with hold_lock(folder / ".lock", 0, "test holder"):
        # ingest goes on while a scorer runs ...
        assert ingest(store, [write_jsonl(tmp_path / "b.jsonl", recs)]).files[0].stored == 3
        # ... but the same configuration is scored by one process at a time
        with pytest.raises(StoreError, match="being scored by another process"):
            run_scorer(store, scorer)
    assert run_scorer(store, scorer).scored == 6


def test_where_scores_a_subset(tmp_path, store):
    recs = [{"instruction": f"Q{i}?", "input": "", "output": f"A{i}."} for i in range(6)]
    ingest(store, [write_jsonl(tmp_path / "a.jsonl", recs[:2]),
                   write_jsonl(tmp_path / "b.jsonl", recs[2:])])
    scorer = make_scorer("heuristics", model=None)
    # the pairs view's columns work too, as in `curate select --where`
    assert run_scorer(store, scorer, where="response IN ('A0.', 'A5.') AND turns = 2"
                      ).scored == 2
    assert run_scorer(store, scorer, where="source = 'b'").scored == 3  # A5 is done
    assert run_scorer(store, scorer).scored == 1  # the rest, later
    with pytest.raises(CurateError, match="--where filter failed"):
        run_scorer(store, scorer, where="no_such_column > 1")


def test_large_stores_get_an_ivf_index(tmp_path, monkeypatch):
    import faiss
    import pyarrow as pa

    import curate.scoring.embed as embed_module

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"{i:032x}" for i in range(3000)]
    emb = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 32)
    pq.write_table(pa.table({"id": ids, "embedding": emb}), tmp_path / "part-000000.parquet")
    monkeypatch.setattr(embed_module, "EXACT_INDEX_MAX", 1000)
    index = faiss.read_index(str(embed_module.build_index(tmp_path)))
    assert "IVF" in type(index).__name__ and index.ntotal == 3000
    index.nprobe = 16
    _, hits = index.search(vectors[:50], 1)
    assert (hits[:, 0] == np.arange(50)).mean() > 0.9  # approximate, but finds itself


def test_heuristics_total_tokens_count_the_whole_templated_conversation(store):
    ingest(store, [DATA / "agent_traces.json"])
    run_scorer(store, make_scorer("heuristics"))
    got = rows(store, "SELECT prompt_tokens, response_tokens, total_tokens, turns "
                      "FROM scores_heuristics")
    assert got and all(t > p + r for p, r, t, _ in got)  # earlier turns + template
    from curate.selectors import Pool

    pool = Pool(store)
    totals = dict(rows(store, "SELECT id, total_tokens FROM scores_heuristics"))
    assert list(pool.tokens()) == [totals[i] for i in pool.ids]  # token budgets use them


def test_a_batch_that_runs_out_of_gpu_memory_is_split_and_retried(tmp_path):
    """data-juicer's adaptive batches: a shard whose batch does not fit is scored in
    halves (recursively), with the same results as one that fits."""
    import torch

    from curate.ingest import ingest
    from curate.scoring import make_scorer, run_scorer
    from curate.scoring.heuristics import HeuristicsScorer
    from curate.store import Store

    class Tight(HeuristicsScorer):
        sizes: list = []

        def score(self, batch):
            if batch.num_rows > 5:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
            self.sizes.append(batch.num_rows)
            return super().score(batch)

    corpus = write_jsonl(tmp_path / "c.jsonl", [{"instruction": f"q {i}", "output": f"a {i}"}
                                                 for i in range(40)])
    tight, plain = Store(tmp_path / "tight"), Store(tmp_path / "plain")
    for st in (tight, plain):
        ingest(st, [corpus])
    report = run_scorer(tight, Tight(), shard_rows=16)
    run_scorer(plain, make_scorer("heuristics"), shard_rows=16)
    assert report.scored == 40 and max(Tight.sizes) <= 5 and sum(Tight.sizes) == 40
    q = "SELECT * FROM scores_heuristics ORDER BY id"
    assert rows(tight, q) == rows(plain, q)

    class Broken(HeuristicsScorer):
        def score(self, batch):
            raise RuntimeError("not a memory problem")

    broken = Store(tmp_path / "broken")
    ingest(broken, [corpus])
    with pytest.raises(RuntimeError, match="not a memory problem"):
        run_scorer(broken, Broken(), shard_rows=16)
