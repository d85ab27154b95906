"""Fuzzy (near-duplicate) dedup by MinHash LSH on plain arrays, as datatrove, NeMo
Curator and data-juicer do it at the text level.

    1. shingles: each text's word n-grams (`curate.ngrams`, 5 words by default),
       hashed to 32 bits;
    2. signatures: num_perm universal hashes (a*x + b) mod (2^61 - 1), truncated to 32
       bits, applied to every shingle at once in numpy, and each row's minimum per hash;
    3. LSH: the signature cut into `bands` bands of `rows` hashes (chosen from the
       threshold as datasketch does: the least weighted false positive plus false
       negative probability); rows with one equal band are candidates;
    4. verification: a candidate pair is kept when its estimated Jaccard (the share of
       equal signature entries) is at or above the threshold;
    5. clusters: connected components (union-find) of the verified pairs; each keeps
       its best row by the keep score (then the lowest index), the others point at it.

A bucket of up to SMALL_BUCKET rows yields every pair in it; a larger one (templated
text, thousands of near-copies) yields each row's pairs with the bucket's two first
rows and with its predecessor (NeMo Curator's anchors): linear, not quadratic, and the
components come out the same whenever the bucket is one cluster. Rows with no words
never pair (nothing to compare); a text shorter than a shingle is one shingle of all
its words, so it still matches its twins.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from curate.ngrams import Grams, ngrams
from curate.selectors.algorithms.dedup import DedupResult, _score_key

MERSENNE = np.uint64((1 << 61) - 1)
MAX32 = np.uint64((1 << 32) - 1)
SMALL_BUCKET = 32  # buckets up to this size give all their pairs
# shingles x hashes worked on at once: 2^16 x 8 x 8 bytes (4 MiB) stay in cache through
# the passes, several times faster than larger blocks that stream through memory
CHUNK_SHINGLES = 1 << 16
PERM_BLOCK = 8
_P = np.uint64(0x9E3779B97F4A7C15)


@lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int, false_positive_weight: float = 0.5,
               false_negative_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimizing the weighted probability
    of a false positive (a pair below the threshold becoming a candidate) plus a false
    negative (a pair above it not becoming one): datasketch's `_optimal_param`, with
    the integrals taken on a fine grid instead of by quadrature."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    s = np.linspace(0.0, 1.0, 2001)
    below, above = s <= threshold, s >= threshold
    best, best_err = (1, num_perm), np.inf
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            p = 1 - (1 - s ** r) ** b  # probability of becoming a candidate
            fp = np.trapezoid(p[below], s[below]) if below.sum() > 1 else 0.0
            fn = np.trapezoid(1 - p[above], s[above]) if above.sum() > 1 else 0.0
            err = false_positive_weight * fp + false_negative_weight * fn
            if err < best_err - 1e-15:
                best, best_err = (b, r), err
    return best


def permutations(num_perm: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) of each hash: a in [1, 2^32), b in [0, 2^32), so that a*x + b of a
    32-bit x stays below 2^64."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 1 << 32, num_perm, dtype=np.uint64)
    b = rng.integers(0, 1 << 32, num_perm, dtype=np.uint64)
    return a, b


def signatures(shingles: Grams, num_perm: int = 128, seed: int = 0) -> np.ndarray:
    """MinHash signatures (rows x num_perm, uint32) of each row's shingle hashes; a row
    without shingles is all 2^32 - 1. Shingles are taken in chunks of whole rows and the
    hashes in blocks, laid out (hashes, shingles) so that every step runs in place over
    contiguous memory (2 x PERM_BLOCK x CHUNK_SHINGLES x 8 bytes). The reduction mod
    2^61 - 1 folds once (v & p) + (v >> 61) and leaves the values in [p, p + 7], about
    one in 2^58, unreduced: a hash just as good, and one pass fewer."""
    n = len(shingles)
    a, b = permutations(num_perm, seed)
    sig = np.full((num_perm, n), MAX32, np.uint32)
    x = shingles.hashes >> np.uint64(32)  # the top 32 bits of each shingle's hash
    offsets = shingles.offsets
    width = min(PERM_BLOCK, num_perm)
    lo = 0
    while lo < n:
        hi = int(np.searchsorted(offsets, offsets[lo] + CHUNK_SHINGLES, side="right")) - 1
        hi = min(max(hi, lo + 1), n)
        s0, s1 = int(offsets[lo]), int(offsets[hi])
        rows = np.flatnonzero(np.diff(offsets[lo:hi + 1]) > 0)
        if len(rows):
            starts = offsets[lo:hi][rows] - s0
            xs = x[None, s0:s1]
            buf = np.empty((width, s1 - s0), np.uint64)
            high = np.empty_like(buf)
            for p0 in range(0, num_perm, width):
                w = min(width, num_perm - p0)
                v, t = buf[:w], high[:w]
                np.multiply(a[p0:p0 + w, None], xs, out=v)
                v += b[p0:p0 + w, None]
                np.right_shift(v, np.uint64(61), out=t)
                v &= MERSENNE
                v += t
                sig[p0:p0 + w, lo + rows] = np.minimum.reduceat(v.astype(np.uint32), starts,
                                                                axis=1)  # low 32 bits
        lo = hi
    return np.ascontiguousarray(sig.T)


def estimated_jaccard(sig: np.ndarray, i: np.ndarray, j: np.ndarray,
                      chunk: int = 1 << 16) -> np.ndarray:
    """Share of equal signature entries of each pair (i[k], j[k])."""
    out = np.empty(len(i), np.float64)
    for c in range(0, len(i), chunk):
        out[c:c + chunk] = (sig[i[c:c + chunk]] == sig[j[c:c + chunk]]).mean(axis=1)
    return out


def candidate_pairs(sig: np.ndarray, bands: int, rows: int,
                    valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distinct pairs (i < j) of rows that agree on all `rows` hashes of some band."""
    n = len(sig)
    members = np.arange(n) if valid is None else np.flatnonzero(valid)
    found: list[np.ndarray] = []
    with np.errstate(over="ignore"):
        for band in range(bands):
            cols = sig[members, band * rows:(band + 1) * rows].astype(np.uint64)
            key = np.zeros(len(members), np.uint64)
            for c in range(rows):
                key = key * _P + cols[:, c]
            order = np.argsort(key, kind="stable")
            k = key[order]
            head = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
            size = np.diff(np.r_[head, len(k)])
            rows_sorted = members[order]
            for s in np.unique(size[(size > 1) & (size <= SMALL_BUCKET)]):
                iu, ju = np.triu_indices(int(s), 1)
                start = head[size == s][:, None]
                found.append(np.stack([rows_sorted[start + iu].ravel(),
                                       rows_sorted[start + ju].ravel()], 1))
            big = np.flatnonzero(size > SMALL_BUCKET)
            if len(big):  # anchors (the bucket's first two rows) and a chain
                start = np.repeat(head[big], size[big])
                pos = start + (np.arange(int(size[big].sum()))
                               - np.repeat(np.cumsum(size[big]) - size[big], size[big]))
                tail = pos > start
                for other in (start, start + 1, pos - 1):
                    use = tail & (other != pos) & (other < pos)
                    found.append(np.stack([rows_sorted[other[use]], rows_sorted[pos[use]]], 1))
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = np.concatenate(found).astype(np.int64)
    pairs.sort(axis=1)
    key = np.unique(pairs[:, 0] * np.int64(n) + pairs[:, 1])
    return key // n, key % n


def minhash_dedup(texts, threshold: float = 0.8, shingle: int = 5, num_perm: int = 128,
                  seed: int = 0, keep_score: np.ndarray | None = None,
                  bands: int | None = None, rows: int | None = None,
                  stats: dict | None = None) -> DedupResult:
    """Near-duplicates of `texts` (see the module docstring). `similarity` of a dropped
    row is its estimated Jaccard to the row it points at (through a chain of verified
    pairs this can be below the threshold). `bands` and `rows` override the ones chosen
    from the threshold; `stats`, when given, receives candidate and verified pair counts
    and the LSH parameters."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if shingle < 1 or num_perm < 2:
        raise ValueError(f"shingle must be >= 1 and num_perm >= 2, got {shingle}, {num_perm}")
    if (bands is None) != (rows is None):
        raise ValueError("give both bands and rows, or neither")
    if bands is None:
        bands, rows = lsh_params(threshold, num_perm)
    if bands * rows > num_perm:
        raise ValueError(f"bands x rows = {bands * rows} exceeds num_perm = {num_perm}")
    grams = texts if isinstance(texts, Grams) else ngrams(texts, shingle)
    n = len(grams)
    sig = signatures(grams, num_perm, seed)
    valid = grams.counts > 0
    i, j = candidate_pairs(sig, bands, rows, valid)
    sim = estimated_jaccard(sig, i, j)
    ok = sim >= threshold - 1e-12
    i, j = i[ok], j[ok]
    if stats is not None:
        stats.update(bands=bands, rows=rows, candidates=int(len(ok)), verified=int(len(i)))
    keep = np.ones(n, bool)
    duplicate_of = np.full(n, -1, np.int64)
    similarity = np.full(n, np.nan, np.float32)
    if not len(i):
        return DedupResult(keep, duplicate_of, similarity)
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    order = np.lexsort((np.arange(n), -_score_key(keep_score, n), label))
    first = np.r_[True, label[order][1:] != label[order][:-1]]
    rep = np.empty(int(label.max()) + 1, np.int64)
    rep[label[order[first]]] = order[first]
    head = rep[label]
    dropped = np.flatnonzero(head != np.arange(n))
    keep[dropped] = False
    duplicate_of[dropped] = head[dropped]
    similarity[dropped] = estimated_jaccard(sig, dropped, head[dropped])
    return DedupResult(keep, duplicate_of, similarity)
