"""Sparse k-NN graph and submodular greedy algorithms (curate.selectors.algorithms.graph / submodular)."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest

from curate.selectors.algorithms.graph import graph_recall, knn_graph
from curate.selectors.algorithms.submodular import facility_location, log_determinant

POOL_EMBEDDINGS = Path(__file__).resolve().parent.parent / "benchmarks" / ".cache" / "pool"


def clustered(n: int, d: int = 32, centers: int = 20, noise: float = 1.0,
              seed: int = 0) -> np.ndarray:
    """Unit rows scattered around random unit centers: a stand-in for sentence embeddings."""
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((centers, d))
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    X = C[rng.integers(0, centers, n)] + noise * rng.standard_normal((n, d)) / np.sqrt(d)
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def brute_force_greedy(f, n: int, k: int) -> tuple[list[int], list[float]]:
    """Plain greedy on a set function f(list) -> float: the best gain each step, lowest index on ties."""
    order: list[int] = []
    gains: list[float] = []
    for _ in range(min(k, n)):
        base = f(order)
        rest = [j for j in range(n) if j not in order]
        deltas = [f(order + [j]) - base for j in rest]
        best = int(np.argmax(deltas))
        order.append(rest[best])
        gains.append(deltas[best])
    return order, gains


def dense_similarity(graph: tuple[np.ndarray, np.ndarray], n: int) -> np.ndarray:
    """The graph as a dense matrix, symmetrized by max and clipped at 0 (the FL objective's s_ij)."""
    idx, sim = graph
    S = np.zeros((n, n))
    for i in range(n):
        ok = idx[i] >= 0
        S[i, idx[i][ok]] = np.maximum(sim[i][ok], 0)
    return np.maximum(S, S.T)


def objective(gains: np.ndarray) -> float:
    return float(np.sum(gains))


# ------------------------------------------------------------------ knn_graph
def test_flat_graph_is_exact_with_self_first():
    X = clustered(500)
    idx, sim = knn_graph(X, k=10, method="flat")
    assert idx.shape == sim.shape == (500, 10) and idx.dtype == np.int64 and sim.dtype == np.float32
    assert (idx[:, 0] == np.arange(500)).all() and (sim[:, 0] == 1).all()
    assert (np.diff(sim, axis=1) <= 0).all()
    exact = -np.sort(-(X @ X.T), axis=1)[:, :10]
    np.testing.assert_allclose(sim[:, 1:], exact[:, 1:], atol=1e-5)
    np.testing.assert_allclose(sim, np.take_along_axis(X @ X.T, idx, axis=1), atol=1e-5)
    assert graph_recall(X, idx, 10, sample=200) > 0.99


def test_graph_pads_when_k_exceeds_n():
    idx, sim = knn_graph(clustered(5), k=8)
    assert (idx[:, 5:] == -1).all() and np.isneginf(sim[:, 5:]).all()
    assert all(sorted(row[:5]) == list(range(5)) for row in idx)


def test_ivf_graph_recall_on_clustered_data():
    X = clustered(5000, d=64, centers=50)
    graph = knn_graph(X, k=32, method="ivf", seed=1)
    assert (graph[0][:, 0] == np.arange(5000)).all()
    assert graph_recall(X, graph[0], 32, sample=1000) >= 0.9
    again = knn_graph(X, k=32, method="ivf", seed=1)
    assert np.array_equal(graph[0], again[0]) and np.array_equal(graph[1], again[1])


def test_graph_rejects_unnormalized_rows():
    with pytest.raises(ValueError, match="L2-normalized"):
        knn_graph(np.ones((10, 4), dtype=np.float32))


# ------------------------------------------------------------------ facility location
@pytest.mark.parametrize("optimizer", ["lazy", "greedy"])
@pytest.mark.parametrize("quality_weight", [0.0, 3.0])
def test_facility_location_matches_brute_force(optimizer, quality_weight):
    n = 200
    X = clustered(n, d=16)
    quality = np.random.default_rng(1).normal(size=n)
    graph = knn_graph(X, k=n, method="flat")  # every pair is an edge: the dense objective
    S = dense_similarity(graph, n)
    unit = (quality - quality.min()) / np.ptp(quality)

    def f(sel):
        return S[:, sel].max(axis=1).sum() + quality_weight * unit[sel].sum() if sel else 0.0

    expected_order, expected_gains = brute_force_greedy(f, n, 40)
    order, gains = facility_location(graph=graph, limit=40, quality=quality,
                                     quality_weight=quality_weight, optimizer=optimizer)
    assert order.tolist() == expected_order
    np.testing.assert_allclose(gains, expected_gains, rtol=0, atol=1e-9)


def test_lazy_equals_plain_greedy_on_sparse_graph_with_costs():
    X = clustered(2000, noise=1.5)
    graph = knn_graph(X, k=8)
    costs = np.random.default_rng(2).integers(1, 50, 2000).astype(float)
    for kwargs in ({"limit": 300}, {"costs": costs, "limit": 3000}):
        lazy = facility_location(graph=graph, optimizer="lazy", **kwargs)
        plain = facility_location(graph=graph, optimizer="greedy", **kwargs)
        assert np.array_equal(lazy[0], plain[0]) and np.array_equal(lazy[1], plain[1])


def test_stochastic_greedy_is_close_to_lazy_and_seeded():
    X = clustered(3000, noise=1.5)
    graph = knn_graph(X, k=16)
    lazy = facility_location(graph=graph, limit=150)
    stochastic = facility_location(graph=graph, limit=150, optimizer="stochastic", seed=3)
    assert objective(stochastic[1]) >= 0.9 * objective(lazy[1])
    again = facility_location(graph=graph, limit=150, optimizer="stochastic", seed=3)
    assert np.array_equal(stochastic[0], again[0]) and np.array_equal(stochastic[1], again[1])


@pytest.mark.parametrize("optimizer", ["lazy", "greedy", "stochastic"])
def test_count_budget_gives_exactly_k(optimizer):
    X = clustered(100)
    for k in (0, 1, 7, 100, 130):
        order, gains = facility_location(X, limit=k, optimizer=optimizer)
        assert len(order) == len(gains) == min(k, 100)
        assert len(set(order.tolist())) == len(order) and order.dtype == np.int64


def test_saturated_objective_fills_by_quality_then_index():
    # pairs (2i, 2i+1) with similarity 1 and nothing else: 5 picks cover everything
    n = 10
    idx = np.array([[i, i ^ 1] for i in range(n)])
    sim = np.ones((n, 2), dtype=np.float32)
    quality = np.array([0, 0, 0, 0, 0, 0, 1, 3, 2, 0], dtype=float)
    order, gains = facility_location(graph=(idx, sim), limit=8, quality=quality)
    assert order[:5].tolist() == [0, 2, 4, 6, 8] and (gains[:5] == 2).all()
    assert order[5:].tolist() == [7, 1, 3] and (gains[5:] == 0).all()


def test_token_budget_is_respected_and_leaves_no_fitting_item():
    X = clustered(1500, noise=1.5)
    costs = np.random.default_rng(4).integers(10, 600, 1500).astype(float)
    limit = 20_000.0
    runs = [facility_location(X, costs, limit, optimizer=o) for o in ("lazy", "stochastic")]
    runs.append(log_determinant(X, costs, limit))
    for order, _ in runs:
        spent = costs[order].sum()
        assert spent <= limit
        unpicked = np.setdiff1d(np.arange(1500), order)
        assert (costs[unpicked] > limit - spent).all()


def test_knapsack_takes_the_better_of_cost_benefit_and_plain_greedy():
    # a hub (cost 20) covers 50 leaves at 0.5; leaves (cost 1) have the better ratio,
    # but 20 of them are worth less than the hub alone
    n = 51
    idx = np.full((n, 51), -1)
    sim = np.full((n, 51), -np.inf, dtype=np.float32)
    idx[0], sim[0] = np.arange(51), np.r_[1.0, np.full(50, 0.5)]
    idx[1:, 0], sim[1:, 0] = np.arange(1, n), 1.0
    costs = np.r_[20.0, np.ones(50)]
    order, gains = facility_location(graph=(idx, sim), costs=costs, limit=20)
    assert order.tolist() == [0] and gains[0] == pytest.approx(26.0)


def test_quality_weight_shifts_picks_toward_quality():
    X = clustered(1000, noise=1.5)
    quality = np.random.default_rng(5).random(1000)
    plain, _ = facility_location(X, limit=50, quality=quality)
    weighted, _ = facility_location(X, limit=50, quality=quality, quality_weight=20.0)
    assert quality[weighted].mean() > quality[plain].mean() + 0.2
    dpp_plain, _ = log_determinant(X, limit=50, quality=quality)
    dpp_weighted, _ = log_determinant(X, limit=50, quality=quality, quality_weight=3.0)
    assert quality[dpp_weighted].mean() > quality[dpp_plain].mean() + 0.2


def test_bad_budgets_raise():
    X = clustered(20)
    with pytest.raises(ValueError, match="limit"):
        facility_location(X)
    with pytest.raises(ValueError, match="costs"):
        facility_location(X, costs=np.zeros(20), limit=5)
    with pytest.raises(ValueError, match="embeddings X or a graph"):
        facility_location(limit=5)


# ------------------------------------------------------------------ log-determinant
@pytest.mark.parametrize("ridge,quality_weight,k", [(1.0, 0.0, 25), (1.0, 0.7, 25), (0.0, 0.5, 8)])
def test_log_determinant_matches_brute_force(ridge, quality_weight, k):
    n, d = 60, 8
    X = clustered(n, d=d, centers=5).astype(np.float64)
    X /= np.linalg.norm(X, axis=1, keepdims=True)  # the cosine kernel's own normalization
    quality = np.random.default_rng(6).normal(size=n)
    q = np.exp(quality_weight * (quality - quality.min()) / np.ptp(quality))
    K = X @ X.T
    np.fill_diagonal(K, 1.0)
    L = q[:, None] * K * q[None, :] + ridge * np.eye(n)

    def f(sel):
        return np.linalg.slogdet(L[np.ix_(sel, sel)])[1] if sel else 0.0

    expected_order, expected_gains = brute_force_greedy(f, n, k)
    order, gains = log_determinant(X, limit=k, quality=quality, quality_weight=quality_weight,
                                   ridge=ridge)
    assert order.tolist() == expected_order
    np.testing.assert_allclose(gains, expected_gains, rtol=0, atol=1e-9)


def test_log_determinant_fills_after_rank_is_exhausted():
    X = clustered(40, d=4)
    quality = np.arange(40.0)
    order, gains = log_determinant(X, limit=10, quality=quality, ridge=0.0)
    assert len(order) == 10 and len(set(order.tolist())) == 10
    assert np.isfinite(gains[:4]).all() and np.isneginf(gains[4:]).all()
    rest = order[4:].tolist()
    assert rest == sorted(rest, key=lambda j: -quality[j])


def test_linear_kernel_keeps_row_norms():
    X = clustered(50)
    X[7] *= 3.0  # a long row: a large self-similarity, so the first pick
    order, gains = log_determinant(X, limit=5, kernel="linear")
    assert order[0] == 7 and gains[0] == pytest.approx(np.log(1 + 9.0), abs=1e-5)
    assert log_determinant(X, limit=5)[0][0] != 7  # cosine: every row alike on its own


def test_empty_input_selects_nothing():
    empty = (np.empty((0, 4), dtype=np.int64), np.empty((0, 4), dtype=np.float32))
    order, gains = facility_location(graph=empty, limit=3)
    assert order.shape == gains.shape == (0,)


def test_log_determinant_count_budget_and_memory_guard():
    X = clustered(300)
    for k in (0, 1, 50, 300, 400):
        assert len(log_determinant(X, limit=k)[0]) == min(k, 300)
    with pytest.raises(ValueError, match="facility_location"):
        log_determinant(X, limit=200, max_memory_bytes=100_000)


# ------------------------------------------------------------------ real embeddings
def test_on_real_pool_embeddings():
    parts = sorted(glob.glob(str(POOL_EMBEDDINGS / "scores" / "embed" / "*" / "part-*.parquet")))
    if not parts:
        pytest.skip(f"no embeddings under {POOL_EMBEDDINGS} (built by the selector benchmarks)")
    import pyarrow.parquet as pq

    column = pq.read_table(parts[0], columns=["embedding"]).column("embedding").combine_chunks()
    X = column.values.to_numpy().reshape(len(column), -1)[:2000].astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    idx, _ = knn_graph(X, k=16, method="ivf")
    assert graph_recall(X, idx, 16, sample=300) >= 0.88
    lazy = facility_location(graph=knn_graph(X, k=16), limit=200)
    plain = facility_location(graph=knn_graph(X, k=16), limit=200, optimizer="greedy")
    assert np.array_equal(lazy[0], plain[0])
