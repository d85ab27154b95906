"""Greedy submodular selection under a budget: facility location and log-determinant.

Pure numpy functions over embeddings (no store, no CLI); the selectors wrap them.

Budget convention (both objectives): `costs` (n positive floats) and `limit`. An item
is added only while the total cost stays <= limit; an item that does not fit is
skipped, never added, and selection ends when no remaining item fits. A count budget
of k is costs=ones, limit=k (the default when `costs` is None), and then exactly
min(k, n) items come back. Once the objective cannot grow any more, the leftover
budget is filled by quality (highest first, when given), then by index, with gain 0.

With unequal costs the greedy ranks by gain / cost, and also runs plain greedy by gain;
the subset with the higher objective is returned: the best of the two keeps a constant
factor of the optimum, which either one alone does not (Leskovec et al. 2007, CELF).
Ties break by lowest index everywhere, so results are deterministic.

At scale, `greedi_facility_location` partitions the rows over an engine (GreeDi: greedy
per partition, then greedy over the union of their picks on the whole set) with the
same greedy, budget and fill; `facility_location_objective` scores any subset on the
whole set's graph, so it can be compared with the single-machine greedy.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import numpy as np

from curate.units import format_bytes

OPTIMIZERS = ("lazy", "greedy", "stochastic")
KERNELS = ("cosine", "linear")
LAZY_BATCH = 16                 # stale heap tops re-evaluated per vectorized call
SINGULAR = 1e-10                # log-det: relative pivot below which the kernel is exhausted
DEFAULT_MAX_MEMORY = 4 * 2**30  # log-det working memory guard, bytes

Selection = tuple[np.ndarray, np.ndarray]


# ------------------------------------------------------------------ facility location
def facility_location(X: np.ndarray | None = None, costs: np.ndarray | None = None,
                      limit: float | None = None, *,
                      graph: tuple[np.ndarray, np.ndarray] | None = None,
                      k_neighbors: int = 32, quality: np.ndarray | None = None,
                      quality_weight: float = 0.0, optimizer: str = "lazy",
                      epsilon: float = 0.01, seed: int = 0) -> Selection:
    """Greedy facility location over a sparse k-NN cosine graph; returns (order, gains).

    f(S) = sum_i max_{j in S} s_ij + quality_weight * sum_{j in S} q_j, where s_ij are
    the graph's similarities clipped at 0 (pairs that are not graph edges count 0) and
    q is `quality` rescaled to [0, 1] (min -> 0, max -> 1), so quality_weight is in
    similarity units: 1.0 is worth as much as covering one more example perfectly.
    The graph is symmetrized (an edge j in N(i) lets i and j cover each other), so a
    candidate's gain is a vectorized sum over its CSR row; memory is O(n * k).

    X: n x d L2-normalized embeddings, used only to build the graph (`knn_graph`,
    `k_neighbors`, `seed`) when `graph` = (idx, sim) is not given.
    optimizer: "lazy" (heap of upper bounds; same picks and gains as plain greedy),
    "greedy" (re-evaluates every candidate each step: a reference, O(n * k) per pick),
    or "stochastic" (best of a random sample of n / budget * log(1 / epsilon)
    candidates per pick, Mirzasoleiman et al. 2015; uses `seed`).
    Returns the selected indices in pick order (int64) and each pick's marginal gain.
    """
    if graph is None:
        if X is None:
            raise ValueError("facility_location needs embeddings X or a graph=(idx, sim)")
        from curate.selectors.algorithms.graph import knn_graph

        graph = knn_graph(X, k=k_neighbors, seed=seed)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS}")
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
    idx, sim = graph
    n = len(idx)
    costs, limit = _check_budget(costs, limit, n)
    modular = quality_weight * _unit_quality(quality, quality_weight, n)
    greedy = _fl_greedy(_symmetric_csr(idx, sim, n), n, costs, limit, modular, optimizer,
                        epsilon, seed)
    return _best_of_knapsack(lambda by_ratio: _fill(*greedy(by_ratio), costs, limit, quality),
                             costs)


def _fl_greedy(csr: tuple[np.ndarray, np.ndarray, np.ndarray], n_rows: int,
               costs: np.ndarray, limit: float, modular: np.ndarray, optimizer: str,
               epsilon: float, seed: int) -> Callable[[bool], Selection]:
    """The facility-location greedy over candidates = CSR rows, covering `n_rows` rows:
    a function of by_ratio returning (order, gains) before any fill."""
    indptr, cols, vals = csr
    sample = len(costs)
    if optimizer == "stochastic":
        sample = math.ceil(len(costs) / max(1, max_items(costs, limit)) * math.log(1 / epsilon))

    def run(by_ratio: bool) -> Selection:
        cover = _Coverage(indptr, cols, vals, modular, n_rows)
        if optimizer == "lazy":
            return _lazy_greedy(cover, costs, limit, by_ratio)
        return _sampled_greedy(cover, costs, limit, by_ratio, sample,
                               np.random.default_rng(seed))

    return run


def facility_location_objective(graph: tuple[np.ndarray, np.ndarray],
                                selected: np.ndarray, *, quality: np.ndarray | None = None,
                                quality_weight: float = 0.0) -> float:
    """f(S) of `facility_location` for the subset `selected` on the whole set's graph.

    The same objective the single-machine greedy maximizes (the symmetrized k-NN graph,
    similarities clipped at 0, plus the rescaled quality term), so subsets chosen any
    way (GreeDi, another tool) compare on one number.
    """
    idx, sim = graph
    n = len(idx)
    modular = quality_weight * _unit_quality(quality, quality_weight, n)
    cover = _Coverage(*_symmetric_csr(idx, sim, n), modular)
    selected = np.unique(np.asarray(selected, dtype=np.int64))
    if len(selected) and (selected.min() < 0 or selected.max() >= n):
        raise ValueError(f"selected indices must be in [0, {n})")
    for j in selected.tolist():
        cover.add(j)
    return float(cover.best.sum() + modular[selected].sum())


def greedi_facility_location(X: np.ndarray, costs: np.ndarray | None = None,
                             limit: float | None = None, *, partitions: int = 4,
                             engine=None, k_neighbors: int = 32, method: str = "auto",
                             quality: np.ndarray | None = None, quality_weight: float = 0.0,
                             optimizer: str = "lazy", epsilon: float = 0.01, seed: int = 0,
                             target_recall: float = 0.9) -> Selection:
    """Facility location by GreeDi (Mirzasoleiman et al. 2013): partitioned greedy, then
    greedy over the union of the partitions' picks; returns (order, gains).

    Stage 1: the rows are split into `partitions` random balanced parts (seeded); each
    part, one `engine.map` task (engine None: this process), builds its own k-NN graph
    (`k_neighbors`, `method`) and runs the greedy for the full budget on its rows only.
    Stage 2: the greedy over the union U of their picks, scored on the WHOLE ground set:
    every row is covered by its `k_neighbors` most similar rows of U (FAISS search of all
    rows against U, sharded over the engine by query rows), so the gains are those of
    f(S) = sum_i max_{j in S} s_ij over all n rows. The budget (costs / limit), the
    quality term, the knapsack best-of-two and the fill are `facility_location`'s;
    gains are stage 2's marginal gains. Memory per task is O(n / partitions * k).
    """
    from curate.engine import get_engine
    from curate.selectors.algorithms.graph import _check_embeddings

    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS}")
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
    if int(partitions) != partitions or partitions < 1:
        raise ValueError(f"partitions must be a whole number >= 1, got {partitions!r}")
    if k_neighbors < 1:
        raise ValueError(f"k_neighbors must be >= 1, got {k_neighbors}")
    X = _check_embeddings(X)
    n = len(X)
    costs, limit = _check_budget(costs, limit, n)
    modular = quality_weight * _unit_quality(quality, quality_weight, n)
    engine = get_engine(engine)
    parts = min(int(partitions), n)

    # stage 1: greedy per random balanced partition (rows sorted: ties -> lowest index)
    perm = np.random.default_rng(seed).permutation(n)
    shards = [np.sort(p) for p in np.array_split(perm, parts)]
    settings = (limit, k_neighbors, method, optimizer, epsilon, seed, target_recall)
    tasks = [(X[rows], rows, costs[rows], modular[rows], settings) for rows in shards]
    union = np.unique(np.concatenate(engine.map(_greedi_partition, tasks) + [np.empty(0, int)]))
    if not len(union):  # nothing fits, or nothing has a gain: the fill decides
        return _fill(np.empty(0, np.int64), np.empty(0), costs, limit, quality)

    # stage 2: every row against the union's candidates, then greedy on that coverage
    bounds = np.linspace(0, n, parts + 1).round().astype(np.int64)
    search = [(X[lo:hi], X[union], k_neighbors, method, seed, target_recall)
              for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()) if hi > lo]
    found = engine.map(_greedi_search, search)
    csr = _bipartite_csr(np.vstack([f[0] for f in found]), np.vstack([f[1] for f in found]),
                         len(union))
    greedy = _fl_greedy(csr, n, costs[union], limit, modular[union], optimizer, epsilon, seed)

    def run(by_ratio: bool) -> Selection:
        order, gains = greedy(by_ratio)
        return _fill(union[order], gains, costs, limit, quality)

    return _best_of_knapsack(run, costs[union])


def _greedi_partition(task: tuple) -> np.ndarray:
    """GreeDi stage 1 on one partition: its own k-NN graph and greedy for the full budget;
    returns the picks as global row indices (no fill)."""
    from curate.selectors.algorithms.graph import knn_graph

    X, rows, costs, modular, (limit, k, method, optimizer, epsilon, seed, recall) = task
    n = len(rows)
    idx, sim = knn_graph(X, k=min(k, n), method=method, seed=seed, target_recall=recall)
    greedy = _fl_greedy(_symmetric_csr(idx, sim, n), n, costs, limit, modular, optimizer,
                        epsilon, seed)
    order, _ = _best_of_knapsack(greedy, costs)
    return rows[order]


def _greedi_search(task: tuple) -> tuple[np.ndarray, np.ndarray]:
    """GreeDi stage 2 search: a block of rows against the union's candidates."""
    from curate.selectors.algorithms.graph import knn_search

    Q, C, k, method, seed, recall = task
    return knn_search(Q, C, k, method, seed, target_recall=recall)


def _bipartite_csr(I: np.ndarray, D: np.ndarray,
                   m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR over m candidates of the rows each covers: I[i] lists row i's nearest candidates
    (positions, -1 padding) with similarities D[i]; only similarities > 0 are kept."""
    n = len(I)
    rows = np.repeat(np.arange(n, dtype=np.int64), I.shape[1])
    cols, vals = I.ravel().astype(np.int64), D.ravel().astype(np.float64)
    keep = (cols >= 0) & (vals > 0)
    rows, cols, vals = rows[keep], cols[keep], np.minimum(vals[keep], 1.0)
    order = np.lexsort((rows, cols))
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(cols, minlength=m), out=indptr[1:])
    return indptr, rows[order], vals[order]


class _Coverage:
    """Facility-location state: each row's best similarity to the selection so far."""

    def __init__(self, indptr: np.ndarray, cols: np.ndarray, vals: np.ndarray,
                 modular: np.ndarray, n_rows: int | None = None):
        self.indptr, self.cols, self.vals, self.modular = indptr, cols, vals, modular
        # candidates are the CSR rows; the covered rows are all of them unless n_rows
        # says otherwise (GreeDi's stage 2: a few candidates covering the whole set)
        self.best = np.zeros(len(indptr) - 1 if n_rows is None else n_rows)

    def gains(self, cands: np.ndarray) -> np.ndarray:
        """Marginal gains of `cands`: one pass over their CSR rows, summed per row.

        Every gain is summed the same way (np.bincount, in CSR order), so a recomputed
        gain never exceeds an earlier bound by rounding: lazy greedy stays exact.
        """
        starts, stops = self.indptr[cands], self.indptr[cands + 1]
        lengths = stops - starts
        total = int(lengths.sum())
        segment = np.repeat(np.arange(len(cands)), lengths)
        offsets = np.cumsum(lengths) - lengths
        pos = np.repeat(starts - offsets, lengths) + np.arange(total)
        rows = self.cols[pos]
        excess = np.maximum(self.vals[pos] - self.best[rows], 0.0)
        return np.bincount(segment, weights=excess, minlength=len(cands)) + self.modular[cands]

    def add(self, j: int) -> None:
        """Select j: rows it covers better than before take its similarity."""
        a, b = self.indptr[j], self.indptr[j + 1]
        rows = self.cols[a:b]
        self.best[rows] = np.maximum(self.best[rows], self.vals[a:b])


def _symmetric_csr(idx: np.ndarray, sim: np.ndarray,
                   n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR (indptr, cols, vals) of max(W, W.T), W[i, j] = sim of edge j in N(i), > 0 only.

    Padding (-1), non-positive and repeated edges are dropped (a repeat keeps its max).
    """
    idx, sim = np.asarray(idx), np.asarray(sim, dtype=np.float64)
    if idx.ndim != 2 or idx.shape != sim.shape or len(idx) != n:
        raise ValueError(f"graph idx {idx.shape} and sim {sim.shape} must both be n x k")
    if (idx >= n).any():
        raise ValueError(f"graph idx has a neighbour >= n = {n}")
    rows = np.repeat(np.arange(n, dtype=np.int64), idx.shape[1])
    cols, vals = idx.ravel().astype(np.int64), sim.ravel()
    keep = (cols >= 0) & (vals > 0)
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    key = np.concatenate([rows * n + cols, cols * n + rows])
    vals = np.concatenate([vals, vals])
    order = np.argsort(key, kind="stable")
    key, vals = key[order], vals[order]
    first = np.flatnonzero(np.diff(key, prepend=-1))  # keys are >= 0
    vals = np.maximum.reduceat(vals, first) if len(first) else vals
    key = key[first]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(key // n, minlength=n), out=indptr[1:])
    return indptr, key % n, vals


def _lazy_greedy(cover: _Coverage, costs: np.ndarray, limit: float,
                 by_ratio: bool) -> Selection:
    """Lazy greedy (Minoux 1978) while some fitting item has gain > 0.

    The heap holds (-key, index, step evaluated, gain). A top evaluated at the current
    step beats every other item's upper bound, so it is exactly plain greedy's pick;
    stale tops are re-evaluated LAZY_BATCH at a time in one vectorized call.
    """
    fits = np.flatnonzero(costs <= limit)
    gains = cover.gains(fits)
    keys = gains / costs[fits] if by_ratio else gains
    heap = list(zip((-keys).tolist(), fits.tolist(), [0] * len(fits), gains.tolist()))
    heapq.heapify(heap)
    order: list[int] = []
    picked: list[float] = []
    spent, step = 0.0, 0
    while heap:
        _, j, evaluated, gain = heap[0]
        if spent + costs[j] > limit:
            heapq.heappop(heap)  # cannot fit now, nor later: the budget only shrinks
            continue
        if evaluated == step:
            if gain <= 0.0:
                break
            heapq.heappop(heap)
            cover.add(j)
            order.append(j)
            picked.append(gain)
            spent += costs[j]
            step += 1
            continue
        stale = []
        while heap and len(stale) < LAZY_BATCH and heap[0][2] != step:
            j = heapq.heappop(heap)[1]
            if spent + costs[j] <= limit:
                stale.append(j)
        cands = np.array(stale, dtype=np.int64)
        gains = cover.gains(cands)
        keys = gains / costs[cands] if by_ratio else gains
        for key, j, gain in zip((-keys).tolist(), stale, gains.tolist()):
            heapq.heappush(heap, (key, j, step, gain))
    return np.array(order, dtype=np.int64), np.array(picked, dtype=np.float64)


def _sampled_greedy(cover: _Coverage, costs: np.ndarray, limit: float, by_ratio: bool,
                    sample: int, rng: np.random.Generator) -> Selection:
    """Greedy over `sample` random fitting candidates per pick (all of them when sample >= n).

    When the sample's best gain is 0 every fitting candidate is evaluated before
    concluding that the objective is saturated.
    """
    alive = costs <= limit
    dearest = costs.max()
    order: list[int] = []
    picked: list[float] = []
    spent = 0.0
    while True:
        pool = np.flatnonzero(alive)
        if not len(pool):
            break
        cands = pool if len(pool) <= sample else np.sort(rng.choice(pool, sample, replace=False))
        gains = cover.gains(cands)
        if gains.max() <= 0.0 and len(cands) < len(pool):
            cands, gains = pool, cover.gains(pool)
        keys = gains / costs[cands] if by_ratio else gains
        best = int(np.argmax(keys))  # first maximum: the lowest index among ties
        if gains[best] <= 0.0:
            break
        j = int(cands[best])
        cover.add(j)
        order.append(j)
        picked.append(float(gains[best]))
        spent = _spend(alive, j, spent, costs, dearest, limit)
    return np.array(order, dtype=np.int64), np.array(picked, dtype=np.float64)


def _spend(alive: np.ndarray, j: int, spent: float, costs: np.ndarray, dearest: float,
           limit: float) -> float:
    """Pay for pick `j`: it leaves `alive`, and so does every item that no longer fits
    once the dearest one might not. Returns the new total spent."""
    alive[j] = False
    spent += costs[j]
    if spent + dearest > limit:
        alive &= spent + costs <= limit
    return spent


# ------------------------------------------------------------------ log-determinant
def log_determinant(X: np.ndarray, costs: np.ndarray | None = None,
                    limit: float | None = None, *, quality: np.ndarray | None = None,
                    quality_weight: float = 0.0, kernel: str = "cosine", ridge: float = 1.0,
                    max_memory_bytes: int = DEFAULT_MAX_MEMORY) -> Selection:
    """Greedy MAP of a DPP: maximize log det(L_S + ridge * I); returns (order, gains).

    L = diag(q) K diag(q): K is X X^T ("cosine" normalizes the rows first, "linear"
    takes X as given) and q_i = exp(quality_weight * r_i) with r = `quality` rescaled
    to [0, 1] (Chen et al. 2018's relevance weighting: with ridge=0, log det(L_S) =
    log det(K_S) + 2 * quality_weight * sum_S r). ridge=1 gives log det(I + L_S),
    monotone with gains >= 0; ridge=0 the classic log det(L_S), whose gains are <= 0
    for a cosine kernel and -inf once |S| exceeds the rank of X.

    Fast greedy MAP by incremental Cholesky (Chen, Zhang & Zhou 2018): O(n * (d + |S|))
    per pick, kernel columns computed from X on the fly, never n x n; the working
    memory is n x (most items the budget can hold) floats, and a ValueError is raised
    above `max_memory_bytes`. Picks go on while the best gain is finite (negative
    gains included: with a count budget exactly min(k, n) items come back); a budget
    left once the kernel's rank is exhausted is filled by quality, then index, gain -inf.
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {KERNELS}")
    if not (math.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    X = np.array(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"expected a non-empty n x d embedding matrix, got shape {X.shape}")
    n, d = X.shape
    if kernel == "cosine":
        norms = np.linalg.norm(X, axis=1)
        if (norms == 0).any():
            raise ValueError(f"row {int(np.argmin(norms))} of X is all zeros: it has no cosine")
        X /= norms[:, None]
    costs, limit = _check_budget(costs, limit, n)
    q = np.exp(quality_weight * _unit_quality(quality, quality_weight, n))
    most = min(n, max_items(costs, limit))
    need = 8 * n * (most + d)
    if need > max_memory_bytes:
        raise ValueError(
            f"log_determinant would need {format_bytes(need)} for {n:,} rows x a budget of "
            f"up to {most:,} items (the limit is max_memory_bytes={max_memory_bytes:,}, "
            f"{format_bytes(max_memory_bytes)}); "
            "use facility_location, whose memory is O(n * k_neighbors), or a smaller budget")
    # K_ii is 1 by definition for cosine: rounding must not break ties among equal items
    sq_norms = np.ones(n) if kernel == "cosine" else np.einsum("ij,ij->i", X, X)
    diag = q * q * sq_norms + ridge

    def run(by_ratio: bool) -> Selection:
        chol = np.empty((most, n))  # row t: the t-th Cholesky column over all items
        pivots = diag.copy()        # squared pivot: exp(gain) of adding each item
        alive = costs <= limit
        order: list[int] = []
        picked: list[float] = []
        spent, dearest = 0.0, costs.max()
        while len(order) < most:
            pool = np.flatnonzero(alive)
            live = pivots[pool] > SINGULAR * diag[pool]
            if not live.any():
                break
            gains = np.full(len(pool), -np.inf)
            gains[live] = np.log(pivots[pool[live]])
            keys = np.where(gains > 0, gains / costs[pool], gains) if by_ratio else gains
            best = int(np.argmax(keys))  # first maximum: the lowest index among ties
            j, t = int(pool[best]), len(order)
            column = q * (X @ X[j]) * q[j]  # L[:, j]; ridge only touches the diagonal
            chol[t] = (column - chol[:t, j] @ chol[:t]) / math.sqrt(pivots[j])
            pivots -= chol[t] ** 2
            order.append(j)
            picked.append(float(gains[best]))
            spent = _spend(alive, j, spent, costs, dearest, limit)
        return _fill(np.array(order, dtype=np.int64), np.array(picked), costs, limit,
                     quality, fill_gain=-np.inf)

    return _best_of_knapsack(run, costs)


# ------------------------------------------------------------------ budget and quality
def _check_budget(costs: np.ndarray | None, limit: float | None,
                  n: int) -> tuple[np.ndarray, float]:
    """Costs as float64 (ones when None) and the limit, after checking both."""
    if limit is None or not math.isfinite(limit) or limit < 0:
        raise ValueError(f"limit must be a finite number >= 0, got {limit!r}")
    if costs is None:
        return np.ones(n), float(limit)
    costs = np.asarray(costs, dtype=np.float64)
    if costs.shape != (n,):
        raise ValueError(f"costs must have one value per item ({n}), got shape {costs.shape}")
    if not (np.isfinite(costs).all() and (costs > 0).all()):
        raise ValueError("costs must all be finite and > 0 (e.g. token counts, at least 1)")
    return costs, float(limit)


def max_items(costs: np.ndarray, limit: float) -> int:
    """The most items any selection within the budget can hold: the cheapest ones."""
    return int(np.searchsorted(np.cumsum(np.sort(costs)), limit, side="right"))


def _unit_quality(quality: np.ndarray | None, weight: float, n: int) -> np.ndarray:
    """Quality rescaled to [0, 1] (zeros when absent or constant), after checks."""
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"quality_weight must be >= 0, got {weight}")
    if quality is None:
        return np.zeros(n)
    quality = np.asarray(quality, dtype=np.float64)
    if quality.shape != (n,) or not np.isfinite(quality).all():
        raise ValueError(f"quality must be {n} finite numbers, got shape {quality.shape}")
    low, span = quality.min(), np.ptp(quality)
    return (quality - low) / span if span > 0 else np.zeros(n)


def _fill(order: np.ndarray, gains: np.ndarray, costs: np.ndarray, limit: float,
          quality: np.ndarray | None, fill_gain: float = 0.0) -> Selection:
    """Append unpicked items that still fit, by quality (highest first) then index."""
    spent = 0.0
    for cost in costs[order].tolist():  # the greedy's own running sum, same rounding
        spent += cost
    cheapest = costs.min()
    rest = np.setdiff1d(np.arange(len(costs)), order)
    if quality is not None:
        rest = rest[np.argsort(-np.asarray(quality, dtype=np.float64)[rest], kind="stable")]
    extra = []
    for j in rest.tolist():
        if spent + cheapest > limit:
            break
        if spent + costs[j] <= limit:
            extra.append(j)
            spent += costs[j]
    return (np.concatenate([order, np.array(extra, dtype=np.int64)]),
            np.concatenate([gains, np.full(len(extra), fill_gain)]))


def _best_of_knapsack(run: Callable[[bool], Selection], costs: np.ndarray) -> Selection:
    """run(by_ratio=False) with equal costs; else the better of cost-benefit and plain greedy."""
    if not len(costs):
        return np.empty(0, dtype=np.int64), np.empty(0)
    if (costs == costs[0]).all():
        return run(False)
    ratio, plain = run(True), run(False)
    return plain if plain[1].sum() > ratio[1].sum() else ratio
