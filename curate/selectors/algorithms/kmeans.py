"""k-means clustering of embeddings and cluster-based sampling under a budget.

Pure functions over numpy arrays: no store, no CLI. The selectors wrap them.

Budget convention (shared with the rest of curate): `costs` is a float64 array of
length n, every entry > 0, and `limit` is the total cost allowed. A count budget of k
items is ``costs=np.ones(n), limit=k`` and always yields exactly ``min(k, n)`` picks.
With non-uniform costs (token budgets) cluster quotas are in cost units: a cluster
takes its items, in its own preference order, while they fit in its quota; then any
leftover budget is filled with the remaining items that still fit, in the strategy's
global preference order, so that no unpicked item fits in what is left.

Every sampler returns ``(order, reasons)``: the picked indices in pick order and one
short reason per pick. The pick order interleaves clusters (weighted round-robin on
the cost picked so far), so any prefix of `order` keeps the strategy's cluster mix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from curate.errors import CurateError

KMeansInit = Literal["k-means++", "random", "afk-mc2"]


@dataclass(frozen=True)
class KMeansResult:
    """Centroids and the assignment of every point.

    `distances` is each point's cost to its centroid: 1 - cosine when spherical (half
    the squared Euclidean distance for unit vectors), the squared Euclidean distance
    otherwise. `inertia` is the sum of squared Euclidean distances to the assigned
    centroids in both cases (scikit-learn's definition), so results compare across modes.
    """

    centroids: np.ndarray  # (k, d) float32
    labels: np.ndarray  # (n,) int64
    distances: np.ndarray  # (n,) float32
    inertia: float

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def sizes(self) -> np.ndarray:
        """Members per cluster, shape (k,)."""
        return np.bincount(self.labels, minlength=self.k)


def kmeans(X: np.ndarray, k: int, iters: int = 20, seed: int = 0, spherical: bool = True,
           max_points_per_centroid: int = 256, init: KMeansInit = "k-means++",
           n_init: int = 1, partitions: int = 1, engine=None) -> KMeansResult:
    """Cluster the rows of X into k clusters with FAISS (on the GPU when faiss-gpu sees one).

    FAISS trains on a seeded subsample of at most ``k * max_points_per_centroid`` rows
    (raise it to train on every row), then assigns every row. Spherical k-means keeps
    unit-norm centroids and assigns by cosine, the right geometry for normalized
    sentence embeddings. `init` seeds the centroids (k-means++: D^2 sampling); `n_init`
    restarts keep the best objective. Deterministic for a given seed on a given device.

    partitions > 1 runs Lloyd's iterations distributed (`distributed_lloyd`): the same
    FAISS initialization, then every row (not a subsample) is assigned in `partitions`
    row blocks, one `engine.map` task each (engine None: this process).
    """
    try:
        import faiss
    except ImportError as exc:
        raise CurateError("kmeans needs FAISS, which is not installed\n  fix: pip install "
                          "faiss-cpu (or faiss-gpu on a CUDA machine)") from exc

    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"kmeans: X must be a 2-D array (n, d), got shape {X.shape}")
    n, d = X.shape
    init_method = _init_method(faiss, k, n, init)
    if int(partitions) != partitions or partitions < 1:
        raise ValueError(f"kmeans: partitions must be a whole number >= 1, got {partitions!r}")
    if partitions > 1:
        return distributed_lloyd(X, k, iters=iters, seed=seed, spherical=spherical,
                                 max_points_per_centroid=max_points_per_centroid, init=init,
                                 n_init=n_init, partitions=int(partitions), engine=engine)
    # gpu=True resolves to every visible GPU, i.e. none on faiss-cpu: one code path.
    # min_points_per_centroid only gates a stderr warning for small inputs.
    km = faiss.Kmeans(d, k, niter=iters, seed=seed, spherical=spherical, gpu=True,
                      max_points_per_centroid=max_points_per_centroid,
                      min_points_per_centroid=1, init_method=init_method, nredo=n_init)
    km.train(X)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    # FAISS returns inner products (spherical) or squared L2 distances to the centroid.
    score, labels = km.assign(X)
    return _result(X, centroids, score, labels.astype(np.int64), spherical)


def _init_method(faiss, k: int, n: int, init: str):
    """FAISS's constant for `init`, after checking k against the n points."""
    if not 1 <= k <= n:
        raise ValueError(f"kmeans: k={k} clusters need 1 <= k <= n, and there are n={n} "
                         f"points; lower k or give more points")
    methods = {"random": faiss.ClusteringInitMethod_RANDOM,
               "k-means++": faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
               "afk-mc2": faiss.ClusteringInitMethod_AFK_MC2}
    if init not in methods:
        raise ValueError(f"kmeans: unknown init {init!r}; use one of {sorted(methods)}")
    return methods[init]


def _result(X: np.ndarray, centroids: np.ndarray, score: np.ndarray, labels: np.ndarray,
            spherical: bool) -> KMeansResult:
    """KMeansResult from each row's assignment score (inner product when spherical,
    squared L2 otherwise)."""
    if spherical:
        distances = (1.0 - score).astype(np.float32)
        sq = (np.einsum("ij,ij->i", X, X, dtype=np.float64)
              + np.einsum("ij,ij->i", centroids, centroids, dtype=np.float64)[labels]
              - 2.0 * score.astype(np.float64))
    else:
        distances = score.astype(np.float32)
        sq = score.astype(np.float64)
    return KMeansResult(centroids, labels, distances, float(np.maximum(sq, 0.0).sum()))


def distributed_lloyd(X: np.ndarray, k: int, iters: int = 20, seed: int = 0,
                      spherical: bool = True, max_points_per_centroid: int = 256,
                      init: KMeansInit = "k-means++", n_init: int = 1, partitions: int = 4,
                      engine=None) -> KMeansResult:
    """k-means by Lloyd's iterations over row partitions: k-means on FAISS per node.

    The initial centroids are FAISS's own (`faiss.Kmeans` with niter=0: the same seeded
    subsample of k * max_points_per_centroid rows and the same `init`). Each iteration
    every partition (one `engine.map` task) assigns its rows to the current centroids
    with a FAISS flat index and returns per-cluster sums and counts; the driver merges
    them and moves each centroid to its cluster's mean (renormalized when spherical).
    Restart r of `n_init` starts from seed + r; the lowest inertia wins.

    How it differs from `kmeans` with partitions=1: FAISS trains on the subsample only,
    this on every row; an empty cluster keeps its centroid here, while FAISS splits a
    large cluster to refill it. With max_points_per_centroid >= n / k (no subsample) and
    no empty cluster both run the same iterations, equal up to float rounding (a row on
    a boundary can flip, so compare inertia, not labels).
    """
    import faiss

    X = np.ascontiguousarray(X, dtype=np.float32)
    n, d = X.shape
    init_method = _init_method(faiss, k, n, init)
    from curate.engine import get_engine

    engine = get_engine(engine)
    bounds = np.linspace(0, n, min(partitions, n) + 1).round().astype(np.int64)
    blocks = [X[lo:hi] for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist())]
    best: KMeansResult | None = None
    for restart in range(max(1, n_init)):
        km = faiss.Kmeans(d, k, niter=0, seed=seed + restart, spherical=spherical, gpu=True,
                          max_points_per_centroid=max_points_per_centroid,
                          min_points_per_centroid=1, init_method=init_method)
        km.train(X)
        centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
        for _ in range(iters):
            parts = engine.map(_lloyd_step, [(B, centroids, spherical, False) for B in blocks])
            sums = np.sum([p[0] for p in parts], axis=0)
            counts = np.sum([p[1] for p in parts], axis=0)
            full = counts > 0
            updated = centroids.astype(np.float64)
            updated[full] = sums[full] / counts[full, None]
            if spherical:
                norms = np.linalg.norm(updated, axis=1, keepdims=True)
                updated = np.where(norms > 0, updated / np.maximum(norms, 1e-30), updated)
            centroids = np.ascontiguousarray(updated, dtype=np.float32)
        parts = engine.map(_lloyd_step, [(B, centroids, spherical, True) for B in blocks])
        score = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        result = _result(X, centroids, score, labels, spherical)
        if best is None or result.inertia < best.inertia:
            best = result
    return best


def _lloyd_step(task: tuple) -> tuple[np.ndarray, np.ndarray]:
    """One partition's share of a Lloyd iteration: (per-cluster sums, counts) of its
    rows' nearest centroids, or (scores, labels) when `final`."""
    import faiss

    B, centroids, spherical, final = task
    k, d = centroids.shape
    index = faiss.IndexFlatIP(d) if spherical else faiss.IndexFlatL2(d)
    index.add(centroids)
    score, labels = index.search(B, 1)
    score, labels = score[:, 0], labels[:, 0].astype(np.int64)
    if final:
        return score, labels
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros((k, d), dtype=np.float64)
    order = np.argsort(labels, kind="stable")
    present = np.flatnonzero(counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[present]
    if len(order):
        sums[present] = np.add.reduceat(B[order].astype(np.float64), starts, axis=0)
    return sums, counts


def second_nearest(X: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Each row's second most similar centroid (inner product): the cluster across the
    boundary, where a near duplicate split from its twin by k-means usually landed."""
    import faiss

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    if len(centroids) < 2:
        return np.zeros(len(X), np.int64)
    _, nearest = index.search(np.ascontiguousarray(X, dtype=np.float32), 2)
    return nearest[:, 1].astype(np.int64)


# ----------------------------------------------------------------------------- samplers
def balanced_sample(labels: np.ndarray, costs: np.ndarray, limit: float,
                    score: np.ndarray | None = None, seed: int = 0
                    ) -> tuple[np.ndarray, list[str]]:
    """Equal budget per cluster ("kMQ"), water-filled: clusters smaller than their share
    give the rest to the others, so the budget is met. Within a cluster, highest `score`
    first, or a seeded random order when there is none."""
    labels, costs = _check(labels, costs, limit)
    k = int(labels.max()) + 1 if len(labels) else 0
    return _sample(labels, costs, limit, np.ones(k), _preference(score, len(labels), seed))


def proportional_sample(labels: np.ndarray, costs: np.ndarray, limit: float,
                        score: np.ndarray | None = None, seed: int = 0
                        ) -> tuple[np.ndarray, list[str]]:
    """Budget per cluster proportional to its size (its total cost under token budgets):
    stratified sampling that keeps the corpus' cluster mix. Count quotas use
    largest-remainder rounding, so they sum exactly to the budget."""
    labels, costs = _check(labels, costs, limit)
    totals = np.bincount(labels, weights=costs) if len(labels) else np.zeros(0)
    return _sample(labels, costs, limit, totals, _preference(score, len(labels), seed))


def refine_quotas(labels: np.ndarray, cluster_quality: np.ndarray, costs: np.ndarray,
                  limit: float, temperature: float = 1.0, score: np.ndarray | None = None,
                  seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """One round of "Diversify and Conquer" (Yu et al. 2024): give clusters with a higher
    quality signal a larger share of the budget.

    `cluster_quality` (k,) is any per-cluster signal where higher means "sample more"
    (e.g. a cluster's evaluation loss after a round of training, or `cluster_means` of a
    score). Weights are ``softmax(z / temperature)`` of its standardized values (NaN
    counts as average); quotas are ``limit * w_c`` water-filled at cluster capacity.
    A high temperature tends to `balanced_sample`, a low one to the best clusters only.
    """
    labels, costs = _check(labels, costs, limit)
    quality = np.asarray(cluster_quality, dtype=np.float64)
    if quality.ndim != 1 or (len(labels) and labels.max() >= len(quality)):
        raise ValueError(f"refine_quotas: cluster_quality must have one value per cluster "
                         f"(k >= {int(labels.max()) + 1 if len(labels) else 0}), "
                         f"got shape {quality.shape}")
    if not temperature > 0:
        raise ValueError(f"refine_quotas: temperature must be > 0, got {temperature}")
    finite = np.isfinite(quality)
    z = np.zeros_like(quality)
    if finite.sum() > 1 and quality[finite].std() > 0:
        z[finite] = (quality[finite] - quality[finite].mean()) / quality[finite].std()
    logits = z / temperature
    weights = np.exp(logits - logits.max())
    weights /= weights.sum()
    return _sample(labels, costs, limit, weights, _preference(score, len(labels), seed),
                   show_weight=True)


def target_sample(labels: np.ndarray, target_labels: np.ndarray, costs: np.ndarray,
                  limit: float, score: np.ndarray | None = None, seed: int = 0,
                  smoothing: float = 0.5) -> tuple[np.ndarray, list[str]]:
    """Cluster quotas that follow the *target's* examples (`target_labels`: each target
    row assigned to its nearest pool centroid), so the subset has the mix the model will
    be measured on, not the pool's. Quotas are in examples: under a token budget a
    cluster's weight is its target count times its mean cost, so clusters of short rows
    do not get more rows than the target asks for. `smoothing` pseudo-counts per cluster
    keep a little of every cluster when the target is small."""
    labels, costs = _check(labels, costs, limit)
    k = int(labels.max()) + 1 if len(labels) else 0
    counts = np.bincount(np.asarray(target_labels, np.int64), minlength=k)[:k] + smoothing
    sizes = np.bincount(labels, minlength=k)
    mean_cost = np.bincount(labels, weights=costs, minlength=k) / np.maximum(sizes, 1)
    return _sample(labels, costs, limit, counts * mean_cost,
                   _preference(score, len(labels), seed), show_weight=True)


def cluster_means(labels: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """Per-cluster mean of a per-example value, ignoring NaN; NaN for a cluster with none."""
    labels = np.asarray(labels, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    total = np.bincount(labels[ok], weights=values[ok], minlength=k)
    count = np.bincount(labels[ok], minlength=k)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def sensitivity_sample(X: np.ndarray, result: KMeansResult, costs: np.ndarray, limit: float,
                       seed: int = 0, alpha: float = 0.5
                       ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Clustering-based sensitivity sampling (Axiotis et al. 2024).

    Each point's probability mixes its share of the k-means cost and a uniform share of
    its cluster: ``p_i = alpha * d_i / sum(d) + (1 - alpha) / (k * |C(i)|)``, with d_i
    the squared Euclidean distance from X[i] to its centroid and k the non-empty
    clusters. Points are drawn without replacement by Efraimidis-Spirakis keys
    ``u ** (1 / p)`` (seeded) and taken while they fit the budget. Returns also the
    importance weights ``1 / (n * p_i)`` of the picks (aligned with `order`), which make
    weighted averages over the sample unbiased estimates of averages over all points.
    """
    labels, costs = _check(result.labels, costs, limit)
    X = np.asarray(X, dtype=np.float32)
    n = len(labels)
    if X.shape != (n, result.centroids.shape[1]):
        raise ValueError(f"sensitivity_sample: X has shape {X.shape} but the clustering has "
                         f"{n} points of dimension {result.centroids.shape[1]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"sensitivity_sample: alpha must be in [0, 1], got {alpha}")
    if n == 0:
        return np.zeros(0, np.int64), [], np.zeros(0)
    diff = X - result.centroids[labels]
    dist = np.einsum("ij,ij->i", diff, diff, dtype=np.float64)
    sizes = np.bincount(labels)
    uniform = 1.0 / (np.count_nonzero(sizes) * sizes[labels])
    dist_total = dist.sum()
    if dist_total > 0:
        p = alpha * dist / dist_total + (1.0 - alpha) * uniform
    else:  # every point sits on its centroid: nothing to weight by distance
        p = uniform
    p /= p.sum()
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore"):
        log_key = np.log(rng.random(n)) / p  # log(u ** (1/p)); -inf when p == 0
    preference = np.argsort(-log_key, kind="stable")
    order = preference[_greedy_fit(costs[preference], limit)]
    weights = 1.0 / (n * p[order])
    reasons = [f"cluster {c} (sensitivity p={pi:.2e})"
               for c, pi in zip(labels[order].tolist(), p[order].tolist())]
    return order.astype(np.int64), reasons, weights


# ----------------------------------------------------------------------------- internals
def _check(labels: np.ndarray, costs: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Validate the common arguments; return labels as int64 and costs as float64."""
    labels = np.asarray(labels)
    costs = np.asarray(costs, dtype=np.float64)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if len(labels) and labels.min() < 0:
        raise ValueError("labels must be cluster ids >= 0")
    if costs.shape != labels.shape:
        raise ValueError(f"costs must have one entry per example ({len(labels)}), "
                         f"got shape {costs.shape}")
    if len(costs) and not (np.isfinite(costs).all() and costs.min() > 0):
        raise ValueError("costs must be finite and > 0 (use ones for a count budget)")
    if not (np.isfinite(limit) and limit >= 0):
        raise ValueError(f"limit must be a finite budget >= 0, got {limit}")
    return labels.astype(np.int64, copy=False), costs


def _preference(score: np.ndarray | None, n: int, seed: int) -> np.ndarray:
    """Per-item preference key, higher first: the score (NaN last) or seeded uniform noise."""
    if score is None:
        return np.random.default_rng(seed).random(n)
    key = np.asarray(score, dtype=np.float64)
    if key.shape != (n,):
        raise ValueError(f"score must have one entry per example ({n}), got shape {key.shape}")
    return np.where(np.isnan(key), -np.inf, key)


def _greedy_fit(costs: np.ndarray, budget: float) -> np.ndarray:
    """Mask of items taken in the given order, each when it fits what is left (others skipped).

    Vectorized by runs: take the longest prefix that fits, skip the item that does not,
    drop every item now too large, repeat.
    """
    take = np.zeros(len(costs), dtype=bool)
    pos = np.arange(len(costs))
    left = float(budget)
    while len(pos):
        cum = np.cumsum(costs[pos])
        j = int(np.searchsorted(cum, left, side="right"))
        take[pos[:j]] = True
        if j:
            left -= cum[j - 1]
        pos = pos[j + 1:]
        pos = pos[costs[pos] <= left]
    return take


def _water_fill(totals: np.ndarray, weights: np.ndarray, budget: float) -> np.ndarray:
    """Quotas q_c = min(totals_c, level * weights_c) with the level set so sum(q) = budget
    (or every total when the budget covers them all)."""
    if budget >= totals.sum():
        return totals.astype(np.float64)
    active = weights > 0
    ratio = np.full(len(totals), np.inf)
    ratio[active] = totals[active] / weights[active]
    by_ratio = np.argsort(ratio, kind="stable")
    t, w, r = totals[by_ratio], weights[by_ratio], ratio[by_ratio]
    filled = np.concatenate([[0.0], np.cumsum(t)[:-1]])  # clusters before j saturated
    weight_rest = np.cumsum(w[::-1])[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        level = (budget - filled) / weight_rest
    j = int(np.argmax(level <= r))  # first cluster that the level does not saturate
    return np.where(active, np.minimum(totals, level[j] * weights), 0.0)


def _interleave(items: np.ndarray, labels: np.ndarray, costs: np.ndarray, key: np.ndarray,
                weights: np.ndarray, taken: np.ndarray | None = None) -> np.ndarray:
    """Order `items` (grouped by cluster, preference order within) by weighted round-robin:
    by the cost its cluster has taken before it (plus `taken`, per cluster) over the
    cluster's weight, then by key."""
    lab = labels[items]
    cost = costs[items]
    cum = np.cumsum(cost)
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]]) if len(items) else items
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(items)]))
    before = cum - cost - (cum[group_start] - cost[group_start])
    if taken is not None:
        before += taken[lab]
    return items[np.lexsort((items, -key[items], before / weights[lab]))]


def _sample(labels: np.ndarray, costs: np.ndarray, limit: float, weights: np.ndarray,
            key: np.ndarray, show_weight: bool = False) -> tuple[np.ndarray, list[str]]:
    """Pick by cluster quotas ``water_fill(cluster totals, weights, limit)``, then fill the
    leftover, then order the picks by weighted round-robin. Shared by the quota samplers."""
    n = len(labels)
    if n == 0:
        return np.zeros(0, np.int64), []
    k = max(int(labels.max()) + 1, len(weights))
    weights = np.pad(np.asarray(weights, np.float64), (0, k - len(weights)))
    sizes = np.bincount(labels, minlength=k)
    totals = np.bincount(labels, weights=costs, minlength=k)
    grouped = np.lexsort((np.arange(n), -key, labels))  # by cluster, best key first
    starts = np.r_[0, np.cumsum(sizes)[:-1]]

    uniform = bool(np.all(costs == costs[0]))
    if uniform:  # count budget: integer quotas, largest remainder, exact total
        units = min(n, int(np.floor(limit / costs[0] + 1e-9)))
        quota = _water_fill(sizes.astype(np.float64), weights, float(units))
        count = np.floor(quota).astype(np.int64)
        extra = units - int(count.sum())
        if extra > 0:
            remainder = np.where(count < sizes, quota - count, -np.inf)
            # ties (e.g. equal shares) go to the cluster whose next item is preferred
            next_item = grouped[np.minimum(starts + count, n - 1)]
            count[np.lexsort((np.arange(k), -key[next_item], -remainder))[:extra]] += 1
        rank = np.empty(n, np.int64)
        rank[grouped] = np.arange(n) - np.repeat(starts, sizes)
        picked = rank < count[labels]
    else:  # token budget: cost quotas, greedy within each cluster
        quota = _water_fill(totals, weights, float(limit))
        picked = np.zeros(n, dtype=bool)
        for c, (lo, size) in enumerate(zip(starts.tolist(), sizes.tolist())):
            members = grouped[lo:lo + size]
            picked[members] = _greedy_fit(costs[members], quota[c])

    # leftover: remaining items in the strategy's global order, while they fit
    taken = np.bincount(labels[picked], weights=costs[picked], minlength=k)
    rest = _interleave(grouped[~picked[grouped]], labels, costs, key, weights, taken)
    picked[rest[_greedy_fit(costs[rest], limit - taken.sum())]] = True

    order = _interleave(grouped[picked[grouped]], labels, costs, key, weights)
    picked_labels = labels[order]
    if uniform:
        got = np.bincount(picked_labels, minlength=k)
        share = {c: f"quota {got[c]}/{sizes[c]}" for c in np.unique(picked_labels).tolist()}
    else:
        got = np.bincount(picked_labels, weights=costs[order], minlength=k)
        share = {c: f"quota {got[c]:.0f}/{totals[c]:.0f} cost"
                 for c in np.unique(picked_labels).tolist()}
    text = {c: f"cluster {c} ({s}, weight {weights[c]:.3f})" if show_weight
            else f"cluster {c} ({s})" for c, s in share.items()}
    return order.astype(np.int64), [text[c] for c in picked_labels.tolist()]
