"""k-means and SemDeDup benchmark functions (benchmarks/selectors.py runs them and writes
the JSON); `python benchmarks/_kmeans_bench.py --rows 5000` is a smoke run on synthetic data.

bench_kmeans_vs_sklearn -- curate's `kmeans` (FAISS) vs `sklearn.cluster.KMeans` on the
  same rows, k and iterations, in one process. The fair setting: both minimize the same
  objective (Euclidean k-means: ours with spherical=False), both seed with k-means++
  (sklearn's default; FAISS's plain D^2 sampling, sklearn's greedy variant with 2 + log k
  trials per centre), n_init=1, Lloyd iterations (sklearn algorithm="lloyd", tol=0 so it
  only stops early on an unchanged assignment; FAISS stops when the objective stops
  changing). Inertia of both = sum of squared Euclidean distances of every row to its
  assigned centroid, recomputed here with numpy. FAISS trains on a subsample of
  k * max_points_per_centroid rows by default; both are reported: `all` (the cap raised
  to ceil(n / k), every row trains) and `subsampled` (the default 256 per centroid).
bench_semdedup -- kmeans + semantic_dedup end to end on rows with planted near duplicates:
  docs/s, recall of the planted pairs, and drops that are not planted.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curate.selectors.algorithms.dedup import semantic_dedup  # noqa: E402
from curate.selectors.algorithms.kmeans import kmeans, second_nearest  # noqa: E402


def synthetic_embeddings(n: int, d: int = 384, topics: int = 1000, seed: int = 0) -> np.ndarray:
    """Unit rows around `topics` random directions, each topic with its own spread (cosine
    to its direction about 0.4-0.8, like sentence embeddings of one subject)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((topics, d)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    topic = rng.integers(0, topics, n)
    spread = rng.uniform(0.75, 2.3, topics).astype(np.float32) / np.sqrt(d)
    X = centers[topic] + spread[topic, None] * rng.standard_normal((n, d), dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


def plant_near_duplicates(X: np.ndarray, fraction: float = 0.05, noise: float = 0.15,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overwrite `fraction` of the rows with noisy copies of other rows (cosine about 0.99
    at noise 0.15); returns the new X and the (dup_index, original_index) pairs."""
    rng = np.random.default_rng(seed)
    n, d = X.shape
    m = int(n * fraction)
    chosen = rng.choice(n, 2 * m, replace=False)
    dup, orig = chosen[:m], chosen[m:]
    X = X.copy()
    copies = X[orig] + noise / np.sqrt(d) * rng.standard_normal((m, d), dtype=np.float32)
    X[dup] = copies / np.linalg.norm(copies, axis=1, keepdims=True)
    return X, np.stack([dup, orig], axis=1).astype(np.int64)


def squared_inertia(X: np.ndarray, centroids: np.ndarray, labels: np.ndarray,
                    block: int = 16384) -> float:
    """Sum of squared Euclidean distances of rows to their assigned centroid (float64)."""
    total = 0.0
    for lo in range(0, len(X), block):
        diff = X[lo:lo + block].astype(np.float64) - centroids[labels[lo:lo + block]]
        total += float(np.einsum("ij,ij->", diff, diff))
    return total


def bench_kmeans_vs_sklearn(X: np.ndarray, k: int = 100, iters: int = 20, seed: int = 0,
                            repeat: int = 1) -> dict:
    """Time and inertia of curate's kmeans (all rows / subsampled) vs scikit-learn's KMeans.

    With repeat > 1 the methods run in alternating order (ABC, CBA, ...) so that drift on
    a shared machine hits all alike; seconds are the median run."""
    from sklearn.cluster import KMeans

    X = np.ascontiguousarray(X, dtype=np.float32)
    n = len(X)
    caps = {"curate_all": math.ceil(n / k), "curate_subsampled": 256}

    def run(name: str) -> tuple[float, np.ndarray, np.ndarray, dict]:
        t = time.perf_counter()
        if name == "sklearn":
            fit = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=iters, tol=0.0,
                         algorithm="lloyd", random_state=seed).fit(X)
            seconds = time.perf_counter() - t
            return seconds, fit.cluster_centers_, fit.labels_, {"n_iter": int(fit.n_iter_)}
        ours = kmeans(X, k, iters=iters, seed=seed, spherical=False,
                      max_points_per_centroid=caps[name])
        seconds = time.perf_counter() - t
        return seconds, ours.centroids, ours.labels, {
            "max_points_per_centroid": caps[name], "train_rows": min(n, caps[name] * k)}

    names = ["sklearn", *caps]
    runs: dict[str, dict] = {}
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeat):
        for name in names if r % 2 == 0 else names[::-1]:
            took, centroids, labels, info = run(name)
            seconds[name].append(took)
            runs[name] = {**info, "inertia": squared_inertia(X, centroids, labels)}
    base = runs["sklearn"]
    for name in names:
        runs[name]["seconds"] = float(np.median(seconds[name]))
        runs[name]["all_seconds"] = seconds[name]
    for name in caps:
        runs[name]["speedup_vs_sklearn"] = base["seconds"] / runs[name]["seconds"]
        runs[name]["inertia_ratio_vs_sklearn"] = runs[name]["inertia"] / base["inertia"]
    return {"n": n, "d": X.shape[1], "k": k, "iters": iters, "seed": seed, "repeat": repeat,
            "runs": runs, "goal": "curate faster than sklearn with inertia ratio <= 1.01"}


def _recall(result, planted: np.ndarray) -> float:
    """Share of planted pairs of which at most one member survives. On real data a pair
    can be caught through a third example (the original's own natural duplicate), so
    the pair need not point at each other; `_strict_recall` asks for that too."""
    dup, orig = planted[:, 0], planted[:, 1]
    return float((~(result.keep[dup] & result.keep[orig])).mean()) if len(planted) else 1.0


def _strict_recall(result, planted: np.ndarray) -> float:
    """Share of planted pairs where one member is dropped as the duplicate of the other."""
    dup, orig = planted[:, 0], planted[:, 1]
    dropped = ~result.keep
    found = ((dropped[dup] & (result.duplicate_of[dup] == orig))
             | (dropped[orig] & (result.duplicate_of[orig] == dup)))
    return float(found.mean()) if len(planted) else 1.0


def bench_semdedup(X: np.ndarray, planted: np.ndarray, threshold: float = 0.95, k: int = 100,
                   seed: int = 0) -> dict:
    """kmeans + semantic_dedup end to end: docs/s, recall of the planted pairs (at most
    one member kept; strict: one dropped as the duplicate of the other), and drops that
    are not planted (on real data: its own natural near duplicates)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    t0 = time.perf_counter()
    clusters = kmeans(X, k, seed=seed)
    t1 = time.perf_counter()
    result = semantic_dedup(X, clusters.labels, threshold=threshold,
                            second_labels=second_nearest(X, clusters.centroids))
    t2 = time.perf_counter()
    within = semantic_dedup(X, clusters.labels, threshold=threshold)  # no boundary pass

    dup, orig = planted[:, 0], planted[:, 1]
    dropped = ~result.keep
    split = clusters.labels[dup] != clusters.labels[orig]
    in_planted = np.zeros(len(X), dtype=bool)
    in_planted[planted.ravel()] = True
    return {"n": len(X), "d": X.shape[1], "k": k, "threshold": threshold,
            "kmeans_seconds": t1 - t0, "dedup_seconds": t2 - t1,
            "docs_per_second": len(X) / (t2 - t0),
            "planted_pairs": len(planted), "recall": _recall(result, planted),
            "recall_within_clusters_only": _recall(within, planted),
            "recall_strict": _strict_recall(result, planted),
            "pairs_split_across_clusters": int(split.sum()),
            "dropped": result.n_dropped,
            "non_planted_drops": int((dropped & ~in_planted).sum())}


def main() -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    X = synthetic_embeddings(args.rows)
    print(json.dumps(bench_kmeans_vs_sklearn(X, args.k, args.iters, repeat=args.repeat),
                     indent=2))
    X, planted = plant_near_duplicates(X)
    print(json.dumps(bench_semdedup(X, planted, k=args.k), indent=2))


if __name__ == "__main__":
    main()
