"""Diversity selectors over the store's embeddings: k-means sampling (balanced,
proportional, sensitivity, quality-refined) and submodular facility location and
log-determinant. The algorithms are pure functions in kmeans.py and submodular.py;
these estimators bind them to a pool, its budget and its scores."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from curate.errors import CurateError
from curate.selectors.base import Budget, Selector
from curate.selectors.pool import Pool

if TYPE_CHECKING:
    from curate.engine import Engine

STRATEGIES = ("balanced", "proportional", "sensitivity", "refine", "target")


def default_clusters(n: int) -> int:
    """About sqrt(n) clusters: 100 for 10k examples, 316 for 100k."""
    return max(1, min(n, int(round(math.sqrt(n)))))


class KMeansSelector(Selector):
    """k-means diversity (FAISS, GPU when present). Strategies:

    balanced      equal quota per cluster ("kMQ"), small clusters' leftovers water-filled
    proportional  quota proportional to cluster size (stratified)
    sensitivity   clustering-based sensitivity sampling (Axiotis et al. 2024): far-from-
                  centroid and small-cluster points more likely; gains are importance
                  weights
    refine        Diversify and Conquer (Yu et al. 2024): cluster quotas weighted by the
                  per-cluster mean of `quality` (e.g. a loss: higher = sample more),
                  softened by `temperature`
    target        quotas follow the distribution of a `target` (a selection, `source:NAME`
                  or a file, as in `curate evaluate`) over the pool's clusters: each target
                  example counts for its nearest centroid. Within a cluster, rows most
                  similar to some target example go first (unless `quality` is given)

    Within a cluster the highest `quality` goes first when given, else seeded random.
    After `fit`, `labels_` and `cluster_centers_` hold the clustering.

    partitions > 1 runs Lloyd's iterations over that many row blocks on `engine` (a
    name, "local" or "ray", or an Engine; None: local): every row takes part in training
    (one FAISS subsample trains with partitions=1), so clusters can differ slightly.
    """

    name = "kmeans"

    def __init__(self, budget: Budget | str | None = None, clusters: int | None = None,
                 strategy: str = "balanced", quality: str | None = None,
                 temperature: float = 1.0, alpha: float = 0.5, iters: int = 20, seed: int = 0,
                 target: str | None = None, partitions: int = 1,
                 engine: "str | Engine | None" = None):
        self.budget = budget
        self.clusters = clusters
        self.strategy = strategy
        self.quality = quality
        self.temperature = temperature
        self.alpha = alpha
        self.iters = iters
        self.seed = seed
        self.target = target
        self.partitions = partitions
        self.engine = engine

    def get_params(self) -> dict:
        return _engine_named(super().get_params())

    def fit(self, pool: Pool) -> "KMeansSelector":
        from curate.selectors.algorithms import kmeans as km

        if self.strategy not in STRATEGIES:
            raise CurateError(f"unknown kmeans strategy {self.strategy!r}\n  fix: use one of "
                              f"{', '.join(STRATEGIES)}")
        if self.strategy == "refine" and not self.quality:
            raise CurateError("kmeans strategy 'refine' needs --quality, the per-example signal "
                              "whose cluster means set the quotas (e.g. nll)")
        if (self.strategy == "target") != (self.target is not None):
            raise CurateError("kmeans: --target goes with --strategy target (and it needs "
                              "one)\n  fix: e.g. --strategy target --target source:NAME")
        costs, limit = self._budget(pool)
        k = self.clusters or default_clusters(len(pool))
        if not 1 <= k <= len(pool):
            raise CurateError(f"--clusters {k} must be between 1 and the pool size {len(pool)}")
        score = pool.better(self.quality, "quality") if self.quality else None
        X = pool.embeddings()
        partitions = _check_partitions(self.partitions, self.name)
        try:
            result = km.kmeans(X, k, iters=self.iters, seed=self.seed, partitions=partitions,
                               engine=self.engine)
        except ValueError as e:
            raise CurateError(f"kmeans: {e}") from None
        self.labels_, self.cluster_centers_ = result.labels, result.centroids
        gains = None
        if self.strategy == "balanced":
            order, reasons = km.balanced_sample(result.labels, costs, limit, score, self.seed)
        elif self.strategy == "proportional":
            order, reasons = km.proportional_sample(result.labels, costs, limit, score, self.seed)
        elif self.strategy == "sensitivity":
            order, reasons, gains = km.sensitivity_sample(X, result, costs, limit, self.seed,
                                                          self.alpha)
        elif self.strategy == "target":
            T = pool.target_embeddings(self.target)
            near = np.asarray(T @ result.centroids.T).argmax(axis=1)
            if score is None:  # prefer rows close to some target example
                score = _max_cosine(X, T)
            order, reasons = km.target_sample(result.labels, near, costs, limit, score,
                                              self.seed)
        else:
            quality = km.cluster_means(result.labels, score, result.k)
            order, reasons = km.refine_quotas(result.labels, quality, costs, limit,
                                              self.temperature, score, self.seed)
        if gains is None:
            gains = score[order] if score is not None else np.zeros(len(order))
        return self._selected(pool, order, gains, reasons)


class FacilityLocationSelector(Selector):
    """Submodular coverage: each pool example is represented by its most similar pick
    (cosine over a sparse k-NN graph built with FAISS, so memory grows with n x
    `neighbors`), plus an optional modular quality term. Lazy greedy by default;
    `optimizer=stochastic` for very large pools.

    partitions > 1 runs GreeDi on `engine` (a name or an Engine; None: local): greedy
    per random partition, each on its own k-NN graph, then greedy over the union of
    their picks scored on the whole pool. After such a fit `objective_` is stage 2's
    objective, the sum of `gains_` (the single-machine greedy is not run: the
    benchmarks compare the two)."""

    name = "facility-location"

    def __init__(self, budget: Budget | str | None = None, quality: str | None = None,
                 quality_weight: float | None = None, neighbors: int = 32,
                 optimizer: str = "lazy", epsilon: float = 0.01, graph: str = "auto",
                 seed: int = 0, partitions: int = 1, engine: "str | Engine | None" = None):
        self.budget = budget
        self.quality = quality
        self.quality_weight = quality_weight
        self.neighbors = neighbors
        self.optimizer = optimizer
        self.epsilon = epsilon
        self.graph = graph
        self.seed = seed
        self.partitions = partitions
        self.engine = engine

    def get_params(self) -> dict:
        return _engine_named(super().get_params())

    def fit(self, pool: Pool) -> "FacilityLocationSelector":
        from curate.selectors.algorithms.graph import knn_graph
        from curate.selectors.algorithms.submodular import facility_location, greedi_facility_location

        costs, limit = self._budget(pool)
        quality, weight = _quality(pool, self.quality, self.quality_weight)
        partitions = _check_partitions(self.partitions, self.name)
        X = pool.embeddings()
        try:
            if partitions > 1:
                order, gains = greedi_facility_location(
                    X, costs, limit, partitions=partitions, engine=self.engine,
                    k_neighbors=self.neighbors, method=self.graph, quality=quality,
                    quality_weight=weight, optimizer=self.optimizer, epsilon=self.epsilon,
                    seed=self.seed)
                self.objective_ = float(gains[np.isfinite(gains)].sum())
            else:
                graph = knn_graph(X, k=min(self.neighbors, len(pool)), method=self.graph,
                                  seed=self.seed)
                order, gains = facility_location(costs=costs, limit=limit, graph=graph,
                                                 quality=quality, quality_weight=weight,
                                                 optimizer=self.optimizer,
                                                 epsilon=self.epsilon, seed=self.seed)
        except ValueError as e:
            raise CurateError(f"facility-location: {e}") from None
        return self._selected(pool, order, gains, [f"gain {g:.4g}" for g in gains])


class LogDeterminantSelector(Selector):
    """Submodular log-determinant (DPP MAP, fast greedy by incremental Cholesky):
    picks that span the embedding space, optionally weighted by quality. Memory is
    n x budget floats: for large pools prefer facility-location."""

    name = "log-det"

    def __init__(self, budget: Budget | str | None = None, quality: str | None = None,
                 quality_weight: float | None = None, ridge: float = 1.0):
        self.budget = budget
        self.quality = quality
        self.quality_weight = quality_weight
        self.ridge = ridge

    def fit(self, pool: Pool) -> "LogDeterminantSelector":
        from curate.selectors.algorithms.submodular import log_determinant

        costs, limit = self._budget(pool)
        quality, weight = _quality(pool, self.quality, self.quality_weight)
        try:
            order, gains = log_determinant(pool.embeddings(), costs, limit, quality=quality,
                                           quality_weight=weight, ridge=self.ridge)
        except ValueError as e:
            raise CurateError(f"log-det: {e}") from None
        return self._selected(pool, order, gains, [f"log-det gain {g:.4g}" for g in gains])


def _check_partitions(partitions, name: str) -> int:
    """`partitions` as an int >= 1, or a CurateError that says how to fix it."""
    try:
        value = int(str(partitions).strip()) if not isinstance(partitions, bool) else 0
    except ValueError:
        value = 0
    if value < 1:
        raise CurateError(f"{name}: partitions must be a whole number >= 1, got "
                          f"{partitions!r}\n  fix: e.g. --partitions 4 (1: one machine)")
    return value


def _engine_named(params: dict) -> dict:
    """Parameters with an Engine object shown by its name, so manifests stay JSON."""
    engine = params.get("engine")
    if engine is not None and not isinstance(engine, str):
        params["engine"] = getattr(engine, "name", str(engine))
    return params


def _max_cosine(X: np.ndarray, T: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Per row of X, its highest cosine to a row of T (both L2-normalized), in chunks."""
    out = np.empty(len(X), np.float64)
    for lo in range(0, len(X), chunk):
        out[lo:lo + chunk] = (X[lo:lo + chunk] @ T.T).max(axis=1)
    return out


def _quality(pool: Pool, expr: str | None, weight: float | None
             ) -> tuple[np.ndarray | None, float]:
    """Quality values (NaN -> the pool's lowest) and their weight (1.0 by default)."""
    if not expr:
        if weight:
            raise CurateError("--quality-weight needs --quality, the score to weight")
        return None, 0.0
    q = pool.better(expr, "quality")
    if np.isnan(q).all():
        raise CurateError(f"quality `{expr}` is null for every pool example\n  fix: run the "
                          "scorer it comes from, or choose another score")
    return np.where(np.isnan(q), np.nanmin(q), q), 1.0 if weight is None else float(weight)
