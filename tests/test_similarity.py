"""Targeted and quality-first selectors: similarity (mean, RDS+ round-robin) and DEITA,
against brute-force references; score directions from the scorers' declarations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import rows, single, write_jsonl
from curate.errors import CurateError
from curate.ingest import ingest
from curate.scoring import make_scorer, run_scorer
from curate.selectors import make_selector, select
from curate.selectors.pool import Pool
from curate.selectors.similarity import diverse_in_order, round_robin
from curate.store import Store


def _unit(rng, n, d=8):
    X = rng.normal(size=(n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _round_robin_reference(X, T, costs, limit):
    """Whole pool sorted per target row, plain loops."""
    ranked = [list(np.argsort(-(X @ t), kind="stable")) for t in T]
    taken, picked, spent = set(), [], 0.0
    while len(taken) < len(X) and spent + min(costs[i] for i in range(len(X))
                                              if i not in taken) <= limit:
        for lst in ranked:
            nxt = next((i for i in lst if i not in taken), None)
            if nxt is None:
                continue
            taken.add(nxt)
            if spent + costs[nxt] <= limit:
                spent += costs[nxt]
                picked.append(int(nxt))
            if len(taken) == len(X):
                break
    return picked


@pytest.mark.parametrize("seed,unit,same", [(0, True, False), (1, False, False),
                                            (2, False, False), (3, True, True)])
def test_round_robin_equals_the_whole_pool_sorted(seed, unit, same):
    rng = np.random.default_rng(seed)
    X, T = _unit(rng, 300), _unit(rng, 7)
    if same:  # every target row wants the same rows: the first search runs out, deeper
        T = np.repeat(T[:1], 7, axis=0)
    costs = np.ones(300) if unit else rng.integers(1, 9, 300).astype(float)
    limit = 120.0 if unit else 400.0
    picked, sims, owners = round_robin(X, T, costs, limit)
    assert picked.tolist() == _round_robin_reference(X, T, costs, limit)
    assert costs[picked].sum() <= limit and len(set(picked.tolist())) == len(picked)
    assert np.allclose(sims, np.einsum("ij,ij->i", X[picked], T[owners]), atol=1e-5)
    if unit:
        assert np.bincount(owners, minlength=7).max() - np.bincount(owners).min() <= 1


def test_round_robin_mirrors_the_target_mix_where_the_mean_does_not():
    rng = np.random.default_rng(0)
    a, b = np.eye(8, dtype=np.float32)[0], np.eye(8, dtype=np.float32)[1]
    pool = np.concatenate([a + 0.3 * rng.normal(size=(900, 8)), b + 0.3 * rng.normal(size=(100, 8))])
    pool = (pool / np.linalg.norm(pool, axis=1, keepdims=True)).astype(np.float32)
    target = np.stack([a, a, a, b])  # 3:1, while the pool is 9:1
    picked, _, _ = round_robin(pool, target, np.ones(1000), 80)
    share_b = (picked >= 900).mean()
    assert 0.2 <= share_b <= 0.3
    mean_top = np.argsort(-(pool @ target.mean(0)), kind="stable")[:80]
    assert (mean_top >= 900).mean() < 0.1  # the mean leans to the majority


def _deita_reference(X, order, costs, limit, threshold):
    kept, spent = [], 0.0
    for i in order:
        if spent + costs[i] > limit:
            continue
        if kept and (X[kept] @ X[i]).max() >= threshold:
            continue
        kept.append(int(i))
        spent += costs[i]
    return kept


@pytest.mark.parametrize("threshold", [0.2, 0.6, 0.95])
def test_deita_keeps_rows_in_score_order_below_the_threshold(threshold):
    rng = np.random.default_rng(3)
    X = _unit(rng, 1500, 6)  # more than one block
    order = rng.permutation(1500)
    costs = rng.integers(1, 5, 1500).astype(float)
    kept, nearest = diverse_in_order(X, order, costs, 900.0, threshold)
    assert kept.tolist() == _deita_reference(X, order, costs, 900.0, threshold)
    S = X[kept] @ X[kept].T
    np.fill_diagonal(S, -1)
    assert S.max() < threshold and costs[kept].sum() <= 900
    assert nearest[0] == -1 and (nearest < threshold).all()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """Maths and cooking questions with MiniLM embeddings and heuristics scores, and a
    target file of maths questions."""
    root = tmp_path_factory.mktemp("similarity")
    maths = [{"messages": single(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.")}
             for a, b in zip(range(2, 32), range(40, 10, -1))]
    cooking = [{"messages": single(f"How long do I boil {food}?",
                                   f"Boil {food} for {m} minutes, then drain it.")}
               for food, m in zip(["rice", "pasta", "eggs", "potatoes", "beans", "lentils",
                                   "corn", "carrots", "peas", "barley"] * 3, range(5, 35))]
    store = Store(root / "store")
    ingest(store, [write_jsonl(root / "maths.jsonl", maths),
                   write_jsonl(root / "cooking.jsonl", cooking)])
    run_scorer(store, make_scorer("embed"))
    run_scorer(store, make_scorer("heuristics"))
    target = write_jsonl(root / "target.jsonl", [
        {"instruction": f"Compute {a} plus {b}.", "output": str(a + b)} for a, b in [(7, 8), (9, 4)]])
    return store, target


@pytest.mark.parametrize("strategy", ["mean", "round-robin"])
def test_similarity_selects_the_rows_like_the_target(embedded, strategy):
    store, target = embedded
    sel = select(store, "similarity", f"near-{strategy}", target=str(target), budget=10,
                 strategy=strategy, overwrite=True)
    sources = rows(store, f"SELECT source FROM selection_members JOIN examples USING (id) "
                          f"WHERE selection = 'near-{strategy}'")
    assert len(sel.ids) == 10 and {s for (s,) in sources} == {"maths"}
    assert sel.manifest()["params"]["strategy"] == strategy


def test_similarity_errors_are_clear(embedded):
    store, target = embedded
    with pytest.raises(CurateError, match="needs a target"):
        select(store, "similarity", "x", budget=5)
    with pytest.raises(CurateError, match="unknown --strategy 'nearest'"):
        select(store, "similarity", "x", budget=5, target=str(target), strategy="nearest")


def test_deita_on_a_store_takes_no_near_duplicates(embedded):
    store, _ = embedded
    sel = select(store, "deita", "deita", score="response_chars", threshold=0.8, budget=20,
                 overwrite=True)
    pool = Pool(store)
    try:
        index = {i: k for k, i in enumerate(pool.ids)}
        X = pool.embeddings()[[index[i] for i in sel.ids]]
        lengths = pool.values("response_chars")[[index[i] for i in sel.ids]]
    finally:
        pool.close()
    S = X @ X.T
    np.fill_diagonal(S, -1)
    assert S.max() < 0.8 and 0 < len(sel.ids) <= 20
    assert list(lengths) == sorted(lengths, reverse=True)  # score first
    with pytest.raises(CurateError, match="needs a quality score"):
        select(store, "deita", "deita2", budget=5)


def test_directions_come_from_the_scorers_declarations(embedded):
    store, _ = embedded
    pool = Pool(store)
    try:
        assert pool.higher_is_better("repetition") is False
        assert pool.higher_is_better("distinct_1") is True
        assert pool.higher_is_better("response_chars") is None
        assert pool.higher_is_better("repetition * 2") is None
        low_first = make_selector("topk", budget=5, score="repetition").fit(pool)
        forced = make_selector("topk", budget=5, score="repetition", ascending=False).fit(pool)
        rep = pool.values("repetition")
    finally:
        pool.close()
    assert np.allclose(sorted(rep)[:5], rep[low_first.ranking_])  # lower is better
    assert np.allclose(sorted(rep, reverse=True)[:5], rep[forced.ranking_])


def test_cli_similarity_round_robin(embedded):
    from typer.testing import CliRunner

    from curate.cli import app

    store, target = embedded
    result = CliRunner().invoke(app, ["select", "similarity", "--target", str(target),
                                      "--strategy", "round-robin", "--budget", "4", "--name",
                                      "rr-cli", "--overwrite", "--store", str(store.root),
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["size"] == 4


def test_lm_hidden_state_embeddings_and_select_with_embedder_lm(embedded, tiny):
    """`curate score embed --model <causal LM>` stores position-weighted mean-pooled last
    hidden states; `--embedder lm` selects with them."""
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.scoring.embed import load_vectors

    store, target = embedded
    report = run_scorer(store, make_scorer("embed", model=tiny))
    assert report.scored == 60
    ids, vectors = load_vectors(__import__("pathlib").Path(report.folder))
    assert vectors.shape == (60, 32)  # the tiny Llama's hidden size
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len({v.tobytes() for v in vectors}) == 60  # texts differ, so do their vectors
    result = CliRunner().invoke(app, ["select", "similarity", "--target", str(target),
                                      "--budget", "5", "--embedder", "lm", "--name", "lm-near",
                                      "--overwrite", "--store", str(store.root), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["size"] == 5
    with pytest.raises(CurateError, match="no embed configuration 'bert'"):
        select(store, "similarity", "x", budget=5, target=str(target), embed="bert")
