"""Sparse k-nearest-neighbour similarity graphs over embeddings, built with FAISS.

The graph is the input of graph-based selectors (facility location): n x k arrays of
neighbour indices and cosine similarities, so memory stays O(n * k), never n^2.
FAISS runs on the GPU when one is visible (`faiss.get_num_gpus() > 0`), on the CPU
otherwise, through the same code path.
"""

from __future__ import annotations

import math

import numpy as np

METHODS = ("auto", "flat", "ivf", "hnsw")
FLAT_MAX_ROWS = 20_000        # "auto" searches exactly up to this many rows, IVF above
SEARCH_CHUNK_ROWS = 16_384    # queries per search call: bounds the temporaries
TUNE_QUERIES = 500            # sampled queries used to pick nprobe / efSearch
IVF_TRAIN_PER_LIST = 20       # k-means training rows per IVF list
IVF_LISTS_PER_SQRT_N = 2      # nlist = 2 * sqrt(n)
BREADTH_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512,
                  768, 1024, 1536, 2048)
GPU_MAX_K = 2048              # FAISS GPU search limit on k (and on nprobe)


def knn_graph(X: np.ndarray, k: int = 32, method: str = "auto", seed: int = 0, *,
              target_recall: float = 0.9, partitions: int = 1,
              engine=None) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest neighbours of every row of X by inner product (cosine).

    X: n x d float32 with L2-normalized rows. Returns `idx` (n x k int64) and `sim`
    (n x k float32), each row sorted by descending similarity. Every row lists itself
    first with similarity 1 (facility location needs self-similarity); a row with
    fewer than k neighbours found (k > n, or an approximate index that returned less)
    is padded with idx -1 and sim -inf.

    method: "flat" is exact (`IndexFlatIP`); "ivf" is `IndexIVFFlat` with 2*sqrt(n)
    lists trained on 20 sampled rows per list; "hnsw" is `IndexHNSWFlat` (CPU only);
    "auto" is flat up to 20,000 rows and ivf above. For ivf and hnsw the search
    breadth (nprobe / efSearch) is the smallest step of a ~1.4x ladder whose recall@k,
    measured against exact search on 500 sampled rows, reaches `target_recall`.
    Searches run in chunks of rows, so memory beyond the index is O(n * k).

    partitions > 1 shards the *database* into that many contiguous row ranges, one
    `engine.map` task each (engine None: this process): a task indexes its shard and
    searches every row against it, and the per-shard top-k lists are merged into the
    global top-k. With "flat" every shard search is exact, so the graph equals the
    single-index one; "auto" picks flat or ivf by the shard's size.
    """
    X = _check_embeddings(X)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if method not in METHODS:
        raise ValueError(f"unknown knn method {method!r}; expected one of {METHODS}")
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    if int(partitions) != partitions or partitions < 1:
        raise ValueError(f"partitions must be a whole number >= 1, got {partitions!r}")
    n = X.shape[0]
    k_search = min(k, n)
    if partitions == 1:
        I, D = knn_search(X, X, k_search, method, seed, target_recall=target_recall)
    else:
        from curate.engine import get_engine

        bounds = np.linspace(0, n, min(int(partitions), n) + 1).round().astype(np.int64)
        tasks = [(X, int(lo), int(hi), k_search, method, seed, target_recall)
                 for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist())]
        I, D = merge_topk(get_engine(engine).map(_search_shard, tasks), k_search)
    idx = np.full((n, k), -1, dtype=np.int64)
    sim = np.full((n, k), -np.inf, dtype=np.float32)
    idx[:, :k_search], sim[:, :k_search] = _with_self_first(I, D, np.arange(n), k_search)
    return idx, sim


def knn_search(Q: np.ndarray, X: np.ndarray, k: int, method: str = "auto", seed: int = 0, *,
               target_recall: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of X with the highest inner product with each row of Q: (I, D), n_q x k.

    The index over X is built as `knn_graph` describes (method, seed, tuned breadth);
    missing results are I = -1, D = -inf. Rows of Q and X are unit-norm float32.
    """
    import faiss

    n, d = X.shape
    k = min(k, n)
    if method == "auto":
        method = "flat" if n <= FLAT_MAX_ROWS else "ivf"
    rng = np.random.default_rng(seed)
    if method == "flat":
        index = faiss.IndexFlatIP(d)
    elif method == "ivf":
        nlist = max(1, min(round(IVF_LISTS_PER_SQRT_N * math.sqrt(n)), n // IVF_TRAIN_PER_LIST))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 64

    gpu_resources = None  # held until the search is done: the GPU index uses it
    if faiss.get_num_gpus() > 0 and method != "hnsw" and k <= GPU_MAX_K:
        gpu_resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(gpu_resources, 0, index)

    if method == "ivf":
        # k-means on IVF_TRAIN_PER_LIST rows per list places the lists well enough and
        # is most of the build time; FAISS warns below its own default of 39.
        index.cp.seed = seed
        index.cp.min_points_per_centroid = IVF_TRAIN_PER_LIST
        train_rows = min(n, IVF_TRAIN_PER_LIST * index.nlist)
        index.train(X[np.sort(rng.choice(n, size=train_rows, replace=False))])
    index.add(X)
    if method != "flat":
        _tune_search_breadth(index, method, X, k, target_recall, rng)

    I = np.full((len(Q), k), -1, dtype=np.int64)
    D = np.full((len(Q), k), -np.inf, dtype=np.float32)
    for start in range(0, len(Q), SEARCH_CHUNK_ROWS):
        stop = min(len(Q), start + SEARCH_CHUNK_ROWS)
        Ds, Is = index.search(Q[start:stop], k)
        I[start:stop] = Is
        D[start:stop] = np.where(Is >= 0, Ds, -np.inf)
    del gpu_resources
    return I, D


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]],
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard search results (I global indices, D) into each row's top k.

    Ties in similarity keep the lower index first, padding (-1) goes last.
    """
    I = np.hstack([p[0] for p in parts])
    D = np.hstack([p[1] for p in parts]).astype(np.float32, copy=False)
    D = np.where(I >= 0, D, -np.inf)
    tiebreak = np.where(I >= 0, I, np.iinfo(np.int64).max)
    order = np.lexsort((tiebreak, -D), axis=-1)[:, :k] if I.size else np.zeros((len(I), 0), int)
    return np.take_along_axis(I, order, axis=1), np.take_along_axis(D, order, axis=1)


def _search_shard(task: tuple) -> tuple[np.ndarray, np.ndarray]:
    """One database shard [lo, hi): every query's top k in it, as global indices."""
    Q, lo, hi, k, method, seed, target_recall = task
    I, D = knn_search(Q, Q[lo:hi], k, method, seed, target_recall=target_recall)
    return np.where(I >= 0, I + lo, -1), D


def graph_recall(X: np.ndarray, idx: np.ndarray, k: int, sample: int = 1000,
                 seed: int = 0) -> float:
    """Recall@k of a neighbour graph against exact inner-product search.

    Measured on `sample` random rows: the mean fraction of each row's exact k nearest
    neighbours (itself included) that the graph's first k columns list.
    """
    import faiss

    X = _check_embeddings(X)
    n = X.shape[0]
    k = min(k, n, idx.shape[1])
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    _, exact = faiss.knn(X[rows], X, k, metric=faiss.METRIC_INNER_PRODUCT)
    return _recall(np.asarray(idx)[rows, :k], exact)


def _check_embeddings(X: np.ndarray) -> np.ndarray:
    """X as C-contiguous float32, after checking it is n x d with unit-norm rows."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"expected a non-empty n x d embedding matrix, got shape {X.shape}")
    norms = np.linalg.norm(X, axis=1)
    bad = np.flatnonzero(np.abs(norms - 1.0) > 1e-3)
    if bad.size:
        raise ValueError(f"embedding rows must be L2-normalized (row {bad[0]} has norm "
                         f"{norms[bad[0]]:.4f}); divide each row by its norm first")
    return X


def _tune_search_breadth(index, method: str, X: np.ndarray, k: int, target: float,
                         rng: np.random.Generator) -> None:
    """Set nprobe (ivf) or efSearch (hnsw) to the smallest ladder step reaching `target`.

    Falls back to the widest step tried (all lists for ivf) when none reaches it.
    """
    import faiss

    n = X.shape[0]
    queries = X[np.sort(rng.choice(n, size=min(TUNE_QUERIES, n), replace=False))]
    _, exact = faiss.knn(queries, X, k, metric=faiss.METRIC_INNER_PRODUCT)
    if method == "ivf":
        breadths = [b for b in BREADTH_LADDER if b < index.nlist] + [min(index.nlist, GPU_MAX_K)]
    else:
        breadths = [b for b in BREADTH_LADDER if b >= k] or [k]
    for breadth in breadths:
        if method == "ivf":
            index.nprobe = breadth
        else:
            index.hnsw.efSearch = breadth
        _, found = index.search(queries, k)
        if _recall(found, exact) >= target:
            return


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each row of `exact` that appears in the same row of `found`."""
    step = max(1, 10_000_000 // (exact.shape[1] * found.shape[1]))  # rows per comparison block
    hits = 0
    for a in range(0, len(exact), step):
        e, f = exact[a:a + step], found[a:a + step]
        hits += int(((e[:, :, None] == f[:, None, :]).any(axis=2) & (e >= 0)).sum())
    return hits / max(1, int((exact >= 0).sum()))


def _with_self_first(I: np.ndarray, D: np.ndarray, rows: np.ndarray,
                     k: int) -> tuple[np.ndarray, np.ndarray]:
    """Search results with each row's own index put first at similarity 1.

    A self hit found by the search is dropped (it comes back as the forced first
    column); padding (-1) sorts last at -inf; similarities are capped at 1, so that
    rounding cannot rank a neighbour above the row itself.
    """
    I = I.astype(np.int64, copy=False)
    drop = (I == rows[:, None]) | (I < 0)
    I = np.where(drop, -1, I)
    D = np.where(drop, -np.inf, np.minimum(D, 1.0)).astype(np.float32)
    I = np.hstack([rows[:, None], I])
    D = np.hstack([np.ones((len(rows), 1), dtype=np.float32), D])
    order = np.argsort(-D, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(I, order, axis=1), np.take_along_axis(D, order, axis=1)
