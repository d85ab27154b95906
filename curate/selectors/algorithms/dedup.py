"""Deduplication as pure functions: semantic (SemDeDup) within k-means clusters, and exact
on normalized text.

Both return a `DedupResult` over all n examples: which to keep, and for each dropped one
the kept example it duplicates and how similar they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class DedupResult:
    """`keep` (n,) bool; `duplicate_of` (n,) int64, the kept example a dropped one
    duplicates (-1 when kept); `similarity` (n,) float32, cosine to it (1.0 for exact
    duplicates, NaN when kept)."""

    keep: np.ndarray
    duplicate_of: np.ndarray
    similarity: np.ndarray

    @property
    def n_dropped(self) -> int:
        return int(len(self.keep) - np.count_nonzero(self.keep))


def semantic_dedup(X: np.ndarray, labels: np.ndarray, threshold: float = 0.95,
                   keep_score: np.ndarray | None = None, chunk: int = 4096,
                   second_labels: np.ndarray | None = None) -> DedupResult:
    """SemDeDup (Abbas et al. 2023): drop near-duplicates within each k-means cluster.

    Members of a cluster are walked best `keep_score` first (higher = better to keep;
    ties and the no-score case by index). A member is dropped when its cosine to an
    already *kept* member of the same cluster is >= threshold, and it points at the most
    similar such member. This is the exact greedy rule: unlike the "max over every
    earlier member" shortcut (NeMo Curator's), a member that is only similar to dropped
    ones survives, so chains A~B~C do not cost C. Work is matrix products on blocks of at
    most `chunk` members (memory O(chunk^2) float32 per cluster, whatever its size).
    Rows of X are L2-normalized here if they are not already.

    `second_labels` (each row's second nearest cluster, `kmeans.second_nearest`) adds a
    boundary pass: a kept member is also compared with the kept members of its second
    cluster, and dropped when one of them ranks better (keep score, then index) and is
    within the threshold. Near duplicates that k-means split across a boundary are
    caught at about the cost of the main pass.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    labels = np.asarray(labels)
    n = len(labels)
    if X.ndim != 2 or X.shape[0] != n:
        raise ValueError(f"semantic_dedup: X must be (n, d) with n = len(labels) = {n}, "
                         f"got shape {X.shape}")
    if chunk < 1:
        raise ValueError(f"semantic_dedup: chunk must be >= 1, got {chunk}")
    norms = np.linalg.norm(X, axis=1)
    if n and not np.allclose(norms, 1.0, atol=1e-3):
        X = X / np.maximum(norms, np.finfo(np.float32).tiny)[:, None]

    keep = np.ones(n, dtype=bool)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    similarity = np.full(n, np.nan, dtype=np.float32)
    grouped = np.lexsort((np.arange(n), -_score_key(keep_score, n), labels))
    bounds = np.flatnonzero(np.r_[True, np.diff(labels[grouped]) != 0, True])
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        if hi - lo > 1:
            _dedup_cluster(X, grouped[lo:hi], threshold, chunk, keep, duplicate_of, similarity)
    if second_labels is not None:
        rank = np.empty(n, np.int64)
        rank[np.lexsort((np.arange(n), -_score_key(keep_score, n)))] = np.arange(n)
        _dedup_boundary(X, labels, np.asarray(second_labels), rank, threshold, chunk,
                        keep, duplicate_of, similarity)
    return DedupResult(keep, duplicate_of, similarity)


def _dedup_boundary(X: np.ndarray, labels: np.ndarray, second: np.ndarray, rank: np.ndarray,
                    threshold: float, chunk: int, keep: np.ndarray, duplicate_of: np.ndarray,
                    similarity: np.ndarray) -> None:
    """Compare each kept row with the better-ranked kept rows of its second cluster."""
    kept = np.flatnonzero(keep)
    hosts_by = {int(c): m for c, m in _groups(labels[kept], kept)}
    for c, guests in _groups(second[kept], kept):
        hosts = hosts_by.get(int(c))
        if hosts is None:
            continue
        hosts = hosts[keep[hosts]]  # some may have been dropped earlier in this pass
        for g0 in range(0, len(guests), chunk):
            g = guests[g0:g0 + chunk]
            g = g[keep[g]]
            best_sim = np.full(len(g), -np.inf, dtype=np.float32)
            best_idx = np.full(len(g), -1, dtype=np.int64)
            for h0 in range(0, len(hosts), chunk):
                h = hosts[h0:h0 + chunk]
                S = X[g] @ X[h].T
                S[rank[h][None, :] > rank[g][:, None]] = -np.inf  # only better-ranked hosts
                j = S.argmax(axis=1)
                s = S[np.arange(len(g)), j]
                better = s > best_sim
                best_sim[better], best_idx[better] = s[better], h[j[better]]
            dead = best_sim >= threshold
            keep[g[dead]] = False
            duplicate_of[g[dead]] = best_idx[dead]
            similarity[g[dead]] = best_sim[dead]


def _groups(keys: np.ndarray, items: np.ndarray):
    """(key, items with that key) for each distinct key."""
    order = np.argsort(keys, kind="stable")
    keys, items = keys[order], items[order]
    bounds = np.flatnonzero(np.r_[True, np.diff(keys) != 0, True])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi > lo:
            yield keys[lo], items[lo:hi]


def normalized_text_key(texts: Sequence[str | None] | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """64-bit xxh3 key of each text after NFKC, lowercasing, removing punctuation (Unicode
    category P; symbols such as + or $ stay) and collapsing whitespace, so that
    "Hello,  World!" and "hello world" get the same key. Null counts as empty text.
    Collisions are negligible (about n^2 / 2^65: 3e-8 for a million texts)."""
    import pyarrow.compute as pc
    import xxhash

    from curate.ngrams import normalize

    arr = pc.cast(normalize(texts), pa.large_binary())  # the normalization n-grams use
    digest = xxhash.xxh3_64_intdigest
    return np.fromiter((digest(b) for b in arr.to_pylist()), dtype=np.uint64, count=len(arr))


def exact_dedup(keys: np.ndarray, keep_score: np.ndarray | None = None) -> DedupResult:
    """Keep one example per group of equal keys: the highest keep_score, then lowest index."""
    keys = np.asarray(keys)
    n = len(keys)
    _, group = np.unique(keys, return_inverse=True)
    group = group.reshape(-1)
    order = np.lexsort((np.arange(n), -_score_key(keep_score, n), group))
    first = np.r_[True, group[order][1:] != group[order][:-1]] if n else np.zeros(0, bool)
    representative = np.empty(int(group.max()) + 1 if n else 0, dtype=np.int64)
    representative[group[order[first]]] = order[first]
    keep = np.zeros(n, dtype=bool)
    keep[order[first]] = True
    duplicate_of = np.where(keep, -1, representative[group]).astype(np.int64)
    similarity = np.where(keep, np.nan, 1.0).astype(np.float32)
    return DedupResult(keep, duplicate_of, similarity)


def _score_key(keep_score: np.ndarray | None, n: int) -> np.ndarray:
    """Keep-score as a sort key, higher first; NaN ranks last; zeros when there is none."""
    if keep_score is None:
        return np.zeros(n)
    key = np.asarray(keep_score, dtype=np.float64)
    if key.shape != (n,):
        raise ValueError(f"keep_score must have one entry per example ({n}), got {key.shape}")
    return np.where(np.isnan(key), -np.inf, key)


def _dedup_cluster(X: np.ndarray, members: np.ndarray, threshold: float, chunk: int,
                   keep: np.ndarray, duplicate_of: np.ndarray, similarity: np.ndarray) -> None:
    """Greedy SemDeDup over one cluster's members (in keep order), block by block, writing
    into keep / duplicate_of / similarity."""
    kept: list[np.ndarray] = []  # kept members of earlier blocks
    for b0 in range(0, len(members), chunk):
        block = members[b0:b0 + chunk]
        m = len(block)
        V = X[block]
        # best kept match among earlier blocks
        best_sim = np.full(m, -np.inf, dtype=np.float32)
        best_idx = np.full(m, -1, dtype=np.int64)
        previous = np.concatenate(kept) if kept else block[:0]
        for k0 in range(0, len(previous), chunk):
            ref = previous[k0:k0 + chunk]
            S = V @ X[ref].T
            j = S.argmax(axis=1)
            s = S[np.arange(m), j]
            better = s > best_sim
            best_sim[better] = s[better]
            best_idx[better] = ref[j[better]]
        dead = best_sim >= threshold
        # greedy within the block: each surviving member drops the later ones it is close to
        G = V @ V.T
        edges = np.triu(G >= threshold, k=1)
        for i in np.flatnonzero(edges.any(axis=1)).tolist():
            if not dead[i]:
                dead |= edges[i]
        # every dropped member points at its most similar kept member, here or earlier
        cols, rows = np.flatnonzero(dead), np.flatnonzero(~dead)
        if len(cols) and len(rows):
            G_kept = np.where(rows[:, None] < cols[None, :], G[np.ix_(rows, cols)], -np.inf)
            j = G_kept.argmax(axis=0)
            s_here = G_kept[j, np.arange(len(cols))]
            here = s_here > best_sim[cols]
            best_sim[cols[here]] = s_here[here]
            best_idx[cols[here]] = block[rows[j[here]]]
        if len(cols):
            keep[block[cols]] = False
            duplicate_of[block[cols]] = best_idx[cols]
            similarity[block[cols]] = best_sim[cols]
        kept.append(block[~dead])
