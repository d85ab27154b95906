"""Fuzzy dedup by MinHash LSH: the array algorithm (planted near duplicates found,
distinct rows kept, the threshold, seeds, short and empty texts, LSH parameters as
datasketch chooses them) and the `minhash-dedup` selector on a store, in a recipe and
from the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import rows, single, write_jsonl
from curate.errors import CurateError
from curate.selectors import load_recipe, select
from curate.selectors.algorithms.minhash import (estimated_jaccard, lsh_params, minhash_dedup,
                                                 signatures)

VOCAB = [f"w{k}" for k in range(5000)]


def texts_with_twins(n: int = 60, words: int = 200, seed: int = 0):
    """n distinct random texts; a near twin of the first 10 (one word changed, Jaccard
    of 5-word shingles about 0.95); a far copy of the next 5 (every 15th word changed,
    Jaccard about 0.5)."""
    rng = np.random.default_rng(seed)
    base = [list(rng.choice(VOCAB, words)) for _ in range(n)]
    near, far = [], []
    for w in base[:10]:
        w = list(w)
        w[words // 2] = "changed"
        near.append(w)
    for w in base[10:15]:
        w = list(w)
        for k in range(0, words, 15):
            w[k] = f"other{k}"
        far.append(w)
    return [" ".join(w) for w in base + near + far]


def true_jaccard(a: str, b: str, k: int = 5) -> float:
    sa = {tuple(a.split()[i:i + k]) for i in range(len(a.split()) - k + 1)}
    sb = {tuple(b.split()[i:i + k]) for i in range(len(b.split()) - k + 1)}
    return len(sa & sb) / len(sa | sb)


def test_planted_near_duplicates_are_found_and_distinct_rows_kept():
    texts = texts_with_twins()
    stats: dict = {}
    result = minhash_dedup(texts, threshold=0.8, stats=stats)
    dropped = set(np.flatnonzero(~result.keep).tolist())
    assert dropped == set(range(60, 70))  # each near twin, pointing at its original
    assert result.duplicate_of[60:70].tolist() == list(range(10))
    assert (result.similarity[60:70] >= 0.8).all()
    assert np.isnan(result.similarity[result.keep]).all()
    assert (stats["bands"], stats["rows"]) == (9, 13) and stats["verified"] == 10
    assert true_jaccard(texts[70], texts[10]) < 0.6  # the far copies: below, kept
    assert result.keep[70:75].all()


def test_keep_score_picks_the_copy_kept():
    texts = texts_with_twins()
    score = np.zeros(len(texts))
    score[60:70] = 1.0  # prefer the twins
    result = minhash_dedup(texts, threshold=0.8, keep_score=score)
    assert set(np.flatnonzero(~result.keep)) == set(range(10))
    assert result.duplicate_of[:10].tolist() == list(range(60, 70))


def test_threshold_decides():
    texts = texts_with_twins()
    assert 0.4 < true_jaccard(texts[70], texts[10]) < 0.6
    low = minhash_dedup(texts, threshold=0.35, bands=64, rows=2)  # every J=0.5 pair a candidate
    assert not low.keep[70:75].any() and low.duplicate_of[70:75].tolist() == list(range(10, 15))
    strict = minhash_dedup(texts, threshold=0.99)
    assert strict.keep.all()  # one changed word in 200 is about 0.95


def test_estimated_jaccard_tracks_the_true_one_and_seeds_are_deterministic():
    from curate.ngrams import ngrams

    texts = texts_with_twins()
    grams = ngrams(texts, 5)
    sig = signatures(grams, num_perm=256, seed=7)
    assert sig.dtype == np.uint32 and sig.shape == (75, 256)
    pairs = np.array([[0, 60], [10, 70], [0, 1]])
    est = estimated_jaccard(sig, pairs[:, 0], pairs[:, 1])
    for (i, j), e in zip(pairs, est):
        assert abs(e - true_jaccard(texts[i], texts[j])) < 0.08
    assert np.array_equal(sig, signatures(grams, num_perm=256, seed=7))
    assert not np.array_equal(sig, signatures(grams, num_perm=256, seed=8))
    a, b = minhash_dedup(texts, seed=3), minhash_dedup(texts, seed=3)
    assert np.array_equal(a.keep, b.keep) and np.array_equal(a.duplicate_of, b.duplicate_of)


def test_short_and_empty_texts():
    texts = ["a b", "A, b!", "a  b", "", None, "x", "   ", "one two three four five six"]
    result = minhash_dedup(texts, threshold=0.8)
    assert result.keep.tolist() == [True, False, False, True, True, True, True, True]
    assert result.duplicate_of[1:3].tolist() == [0, 0]
    assert minhash_dedup([], threshold=0.8).keep.tolist() == []
    assert minhash_dedup(["", None], threshold=0.8).keep.all()  # nothing to compare


def test_big_buckets_are_linear_and_still_one_cluster():
    from curate.selectors.algorithms.minhash import SMALL_BUCKET

    base = " ".join(VOCAB[:100])
    texts = [base] * (SMALL_BUCKET * 4) + ["something else entirely, and more"]
    stats: dict = {}
    result = minhash_dedup(texts, threshold=0.8, stats=stats)
    assert result.keep.sum() == 2 and (result.duplicate_of[1:-1] == 0).all()
    assert stats["candidates"] < 3 * len(texts)  # anchors + chain, not all 8k pairs


def test_lsh_parameters_are_datasketchs():
    lsh = pytest.importorskip("datasketch.lsh")
    for threshold in (0.5, 0.8, 0.9):
        for num_perm in (64, 128):
            assert lsh_params(threshold, num_perm) == lsh._optimal_param(
                threshold, num_perm, 0.5, 0.5)


# ------------------------------------------------------------------ the selector


@pytest.fixture(scope="module")
def twins_store(tmp_path_factory):
    from curate.ingest import ingest
    from curate.scoring import make_scorer, run_scorer
    from curate.store import Store

    root = tmp_path_factory.mktemp("minhash")
    texts = texts_with_twins(n=30)
    records = [{"messages": single(f"Copy the list number {k % 30}.", t)}
               for k, t in enumerate(texts)]
    store = Store(root / "store")
    ingest(store, [write_jsonl(root / "orig.jsonl", records[:30])], source="orig")
    ingest(store, [write_jsonl(root / "twin.jsonl", records[30:40])], source="twin")
    run_scorer(store, make_scorer("heuristics"))
    return store


def test_selector_drops_the_twins_visible_in_sql(twins_store):
    sel = select(twins_store, "minhash-dedup", "fuzzy", threshold=0.8)
    assert len(sel.ids) == 30 and sel.manifest()["dropped"] == 10
    pairs = rows(twins_store, "SELECT e.source, o.source, d.similarity, d.step FROM "
                              "selection_dropped d JOIN examples e USING (id) JOIN examples o "
                              "ON o.id = d.duplicate_of WHERE d.selection = 'fuzzy'")
    assert len(pairs) == 10 and all({a, b} == {"orig", "twin"} for a, b, *_ in pairs)
    assert all(s >= 0.8 and step == "1:select:minhash-dedup" for *_, s, step in pairs)
    # keep by a score: the twin's response is longer ("changed" for a 2-5 letter word)
    longer = select(twins_store, "minhash-dedup", "fuzzy-long", threshold=0.8,
                    keep="response_chars")
    gone = rows(twins_store, "SELECT source FROM selection_dropped JOIN examples USING (id) "
                             "WHERE selection = 'fuzzy-long'")
    assert gone == [("orig",)] * 10 and len(longer.ids) == 30
    assert len(select(twins_store, "minhash-dedup", "fuzzy-5", budget=5).ids) == 5
    with pytest.raises(CurateError, match="threshold 1.5 must be in"):
        select(twins_store, "minhash-dedup", "bad", threshold=1.5)
    with pytest.raises(CurateError, match="give both"):
        select(twins_store, "minhash-dedup", "bad", bands=4)


def test_recipe_step_and_cli(twins_store, tmp_path):
    from curate.cli import app

    recipe = tmp_path / "fuzzy.yaml"
    recipe.write_text("steps:\n  - minhash-dedup: {threshold: 0.8, shingle: 5}\n"
                      "  - select: {method: random, budget: 20}\n")
    sel = select(twins_store, load_recipe(recipe), "fuzzy-recipe")
    assert len(sel.ids) == 20 and sel.params["steps"][0]["rows_out"] == 30
    result = CliRunner().invoke(app, ["select", "minhash-dedup", "--threshold", "0.8",
                                      "-p", "num_perm=64", "--name", "fuzzy-cli", "--json",
                                      "--store", str(twins_store.root)])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["dropped"] == 10 and manifest["params"]["num_perm"] == 64
