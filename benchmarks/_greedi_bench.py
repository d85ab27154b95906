"""GreeDi facility location (partitioned greedy, then greedy over the union) against the
single-machine lazy greedy, on the same data and the same k-NN settings.

Function only (benchmarks/scale.py runs it and writes the table and JSON). Both subsets
are scored on two whole-set objectives:

  graph objective  f(S) on the single machine's own k-NN graph of all n rows
                   (`facility_location_objective`): exactly what the single greedy
                   maximizes, so it is the strict comparison for GreeDi
  dense objective  sum_i max(0, max_{j in S} x_i . x_j) with true cosines (FAISS exact
                   1-NN of every row among S): the facility-location objective neither
                   run optimizes exactly (the graph drops pairs that are not k-NN edges)

Times are wall seconds in this process; on the local engine GreeDi's partitions run one
after the other, so `speed_ratio` is what partitioning alone buys (smaller graphs and
greedy runs), before any parallelism.
"""

from __future__ import annotations

import time

import faiss
import numpy as np

from curate.selectors.algorithms.graph import knn_graph
from curate.selectors.algorithms.submodular import (facility_location, facility_location_objective,
                                         greedi_facility_location)

GOAL_RATIO = 0.98


def clustered_embeddings(n: int, d: int = 384, centers: int = 1000, noise: float = 1.0,
                         seed: int = 0) -> np.ndarray:
    """Unit rows scattered around random unit centers: a stand-in for sentence embeddings."""
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((centers, d)).astype(np.float32)
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    X = C[rng.integers(0, centers, n)]
    X += noise * rng.standard_normal((n, d), dtype=np.float32) / np.sqrt(d)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


def dense_objective(X: np.ndarray, selected: np.ndarray) -> float:
    """sum_i max(0, max_{j in S} x_i . x_j): exact, by FAISS flat search among S."""
    index = faiss.IndexFlatIP(X.shape[1])
    index.add(np.ascontiguousarray(X[selected]))
    total = 0.0
    for a in range(0, len(X), 16_384):
        D, _ = index.search(X[a:a + 16_384], 1)
        total += float(np.maximum(D[:, 0], 0.0).sum(dtype=np.float64))
    return total


def bench_greedi(n: int = 100_000, d: int = 384, partitions: int = 4,
                 budget: int | None = None, engine=None, X: np.ndarray | None = None,
                 k_neighbors: int = 32, method: str = "auto", seed: int = 0,
                 dense: bool = True) -> dict:
    """Single-machine greedy FL vs GreeDi FL: objective ratios, seconds, speed ratio.

    X: n x d L2-normalized rows (default: `clustered_embeddings(n, d)`); budget: a count
    (default 10% of n); engine: where GreeDi's tasks run (None: this process).
    """
    if X is None:
        X = clustered_embeddings(n, d, seed=seed)
    n, d = X.shape
    budget = budget or max(1, round(0.1 * n))

    t0 = time.perf_counter()
    graph = knn_graph(X, k=k_neighbors, method=method, seed=seed)
    t1 = time.perf_counter()
    single, single_gains = facility_location(graph=graph, limit=budget, seed=seed)
    t2 = time.perf_counter()
    greedi, greedi_gains = greedi_facility_location(
        X, limit=budget, partitions=partitions, engine=engine, k_neighbors=k_neighbors,
        method=method, seed=seed)
    t3 = time.perf_counter()

    single_f = facility_location_objective(graph, single)
    greedi_f = facility_location_objective(graph, greedi)
    out = {
        "n": n, "d": d, "budget": budget, "partitions": partitions,
        "k_neighbors": k_neighbors, "method": method,
        "engine": getattr(engine, "name", engine) or "local",
        "single_graph_s": t1 - t0, "single_greedy_s": t2 - t1, "single_s": t2 - t0,
        "greedi_s": t3 - t2, "speed_ratio": (t2 - t0) / (t3 - t2),
        "single_objective": single_f, "greedi_objective": greedi_f,
        "objective_ratio": greedi_f / single_f,
        "greedi_stage2_objective": float(greedi_gains.sum()),
        "overlap": len(np.intersect1d(single, greedi)) / budget,
    }
    if dense:
        single_d, greedi_d = dense_objective(X, single), dense_objective(X, greedi)
        out |= {"single_dense_objective": single_d, "greedi_dense_objective": greedi_d,
                "dense_objective_ratio": greedi_d / single_d}
    out["goal_met"] = bool(out["objective_ratio"] >= GOAL_RATIO)
    return out

