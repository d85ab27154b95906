"""Target evaluation: answer extraction, target resolution, the base model's NLL on real
GSM8K test rows (deterministic, cached, equal to the lm scorer's), contamination."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import corpora_path, rows, write_jsonl
from curate.errors import CurateError
from curate.finetune.evaluate import evaluate, extract_answer
from curate.targets import load_target


@pytest.mark.parametrize("text, reference, expect", [
    ("so 3 + 4 = 7\n#### 7", True, "7"), ("#### 1,234", True, "1234"), ("#### $5.00", True, "5"),
    ("The answer is 42.", False, "42"), ("no number here", False, None),
    ("I think 12, no wait, 15.", False, "15"), ("The answer is 42.", True, None),
    ("#### -3", True, "-3"), ("#### 0.5", True, "0.5"),
])
def test_extract_answer(text, reference, expect):
    assert extract_answer(text, reference=reference) == expect


@pytest.fixture(scope="module")
def gsm_store(tmp_path_factory):
    from curate.ingest import ingest
    from curate.store import Store

    tmp = tmp_path_factory.mktemp("eval")
    with corpora_path("gsm8k", "train.jsonl").open() as f:
        train = [json.loads(next(f)) for _ in range(20)]
    with corpora_path("gsm8k", "test.jsonl").open() as f:
        test = [json.loads(next(f)) for _ in range(6)]
    store = Store(tmp / "store")
    ingest(store, [write_jsonl(tmp / "train.jsonl", train)], source="gsm8k_train")
    ingest(store, [write_jsonl(tmp / "test_in_store.jsonl", test[:3])], source="gsm8k_test")
    write_jsonl(tmp / "target.jsonl", test)
    return store, tmp / "target.jsonl"


def test_targets_resolve_and_bad_ones_say_what_exists(gsm_store):
    from curate.selectors import select

    store, path = gsm_store
    assert load_target(store, "source:gsm8k_test").kind == "source"
    assert len(load_target(store, "gsm8k_test").ids) == 3
    assert len(load_target(store, str(path)).ids) == 6
    select(store, "random", "five", budget=5)
    assert load_target(store, "five").kind == "selection"
    with pytest.raises(CurateError, match="not a selection, a source of the store, or a file"):
        load_target(store, "nothing-here")


def test_base_model_nll_is_deterministic_cached_and_matches_the_scorer(gsm_store):
    from curate.scoring import make_scorer

    store, path = gsm_store
    first = evaluate(store, str(path))
    assert not first.cached and first.examples == 6 and first.tokens > 300
    assert 0.5 < first.nll < 3.0  # a small instruct model on GSM8K solutions
    again = evaluate(store, str(path))
    assert again.cached and again.nll == first.nll
    import shutil

    shutil.rmtree(store.root / "evals" / first.eval_id)
    fresh = evaluate(store, str(path))
    assert fresh.nll == pytest.approx(first.nll, abs=1e-9)  # recomputed: same number
    # the pooled NLL equals the lm scorer's per-example NLL weighted by response tokens
    target = load_target(store, str(path))
    import pyarrow as pa

    scored = make_scorer("lm").score(pa.table({"messages": target.messages}))
    nll = np.array(scored["nll"].to_pylist())
    toks = np.array(scored["response_tokens"].to_pylist())
    assert fresh.nll == pytest.approx(float((nll * toks).sum() / toks.sum()), abs=1e-6)
    per_example = rows(store, f"SELECT count(*), sum(tokens) FROM eval_examples "
                              f"WHERE eval_id = '{fresh.eval_id}'")
    assert per_example == [(6, fresh.tokens)]
    assert rows(store, "SELECT count(*) FROM evals WHERE run_id = 'base'")[0][0] >= 1
