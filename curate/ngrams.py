"""Word n-grams of texts as 64-bit hashes, on flat arrays: the one text normalization
behind n-gram decontamination (`curate decontaminate`), MinHash shingles
(`minhash-dedup`), exact dedup's keys, and the contamination check of `curate evaluate`
and `curate compare`.

A text is normalized (Unicode NFKC, lowercase, punctuation removed, whitespace
collapsed) and split on whitespace into words. Its n-grams are the windows of n
consecutive words; a text of fewer than n words (but at least one) has one gram of all
its words, so that short texts still match their exact twins; an empty text has none.
No Python loop runs over words or grams: each distinct word gets an xxh3 hash once,
windows combine their words' hashes polynomially (mod 2^64) and a final mix spreads the
bits. Collisions are negligible (about g^2 / 2^65 for g distinct grams).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa

_P = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the polynomial window hash
_LEN = np.uint64(0xD6E8FEB86659FD93)  # mixes a short text's length into its one gram

Texts = Sequence[str | None] | pa.Array | pa.ChunkedArray | np.ndarray


@dataclass(frozen=True)
class Grams:
    """Hashes of every row's n-grams (or words), concatenated: row i owns
    `hashes[offsets[i]:offsets[i + 1]]`, in text order (repeats kept)."""

    hashes: np.ndarray  # uint64
    offsets: np.ndarray  # int64, len = rows + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def counts(self) -> np.ndarray:
        """Grams per row."""
        return np.diff(self.offsets)

    def rows(self) -> np.ndarray:
        """The row of each hash."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.counts)


# whitespace NFKC keeps and ASCII splitting would not see (NEL, Ogham space, line and
# paragraph separators): made spaces
_RARE_SPACE = "[\u0085\u1680\u2028\u2029]"


def normalize(texts: Texts, collapse: bool = True) -> pa.Array:
    """NFKC, lowercase, punctuation (Unicode category P; symbols such as + or $ stay)
    removed, whitespace runs collapsed to one space and trimmed (unless not `collapse`:
    then every whitespace character is an ASCII one, for `words` to split on). Null
    counts as empty. NFKC runs only on the rows that are not ASCII (it leaves ASCII as
    is)."""
    import pyarrow.compute as pc

    if isinstance(texts, pa.ChunkedArray):
        arr = texts.combine_chunks()
    elif isinstance(texts, pa.Array):
        arr = texts
    else:
        try:
            arr = pa.array(texts, pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arr = pa.array([t if t is None else str(t) for t in texts], pa.string())
    arr = pc.fill_null(arr.cast(pa.large_string()), "")
    other = pc.invert(pc.string_is_ascii(arr))
    if pc.any(other).as_py():
        wide = pc.utf8_normalize(arr.filter(other), form="NFKC")
        wide = pc.replace_substring_regex(wide, pattern=_RARE_SPACE, replacement=" ")
        arr = pc.replace_with_mask(arr, other, wide)
    arr = pc.replace_substring_regex(pc.utf8_lower(arr), pattern=r"\p{P}+", replacement="")
    if not collapse:
        return arr
    arr = pc.replace_substring_regex(arr, pattern=r"[\s\p{Z}]+", replacement=" ")
    return pc.utf8_trim_whitespace(arr)


def split_words(texts: Texts) -> list[list[str]]:
    """The normalized words of each text, as Python lists (for the few texts a message
    quotes; bulk work stays in `words`)."""
    return [t.split() for t in normalize(texts).to_pylist()]


def words(texts: Texts) -> Grams:
    """The hash of every normalized word of every text (xxh3-64 of the word)."""
    import pyarrow.compute as pc
    import xxhash

    lists = pc.ascii_split_whitespace(normalize(texts, collapse=False))
    offsets = lists.offsets.to_numpy().astype(np.int64)
    flat = lists.flatten()
    nonempty = pc.not_equal(flat, "")  # leading / trailing whitespace splits off empties
    if not pc.all(nonempty).as_py():
        rows = np.repeat(np.arange(len(lists)), np.diff(offsets))
        mask = nonempty.to_numpy(zero_copy_only=False)
        offsets = np.r_[0, np.cumsum(np.bincount(rows[mask], minlength=len(lists)))]
        flat = flat.filter(nonempty)
    offsets = (offsets - offsets[0]).astype(np.int64)
    if len(flat) == 0:
        return Grams(np.zeros(0, np.uint64), offsets)
    encoded = pc.dictionary_encode(flat)
    digest = xxhash.xxh3_64_intdigest
    vocab = np.fromiter((digest(w) for w in encoded.dictionary.cast(pa.large_binary())
                         .to_pylist()), np.uint64,
                        len(encoded.dictionary))
    return Grams(vocab[encoded.indices.to_numpy()], offsets)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every output bit depends on every input bit."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def grams_of(w: Grams, n: int) -> Grams:
    """The n-grams of word hashes `w` (see the module docstring for short rows)."""
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1, got {n}")
    lengths = w.counts
    full = np.maximum(lengths - n + 1, 0)
    short = (lengths > 0) & (lengths < n)
    per_row = np.where(short, 1, full)
    offsets = np.r_[0, np.cumsum(per_row)].astype(np.int64)
    out = np.zeros(int(offsets[-1]), np.uint64)
    tok = w.hashes
    with np.errstate(over="ignore"):
        if full.any():  # every window of n words of the flat array, then those in one row
            h = tok[:len(tok) - n + 1].copy()
            for j in range(1, n):
                h *= _P
                h += tok[j:len(tok) - n + 1 + j]
            starts = np.repeat(w.offsets[:-1], full) + (
                np.arange(int(full.sum()), dtype=np.int64) - np.repeat(np.cumsum(full) - full,
                                                                       full))
            out[np.repeat(full > 0, per_row)] = h[starts]
        if short.any():  # one gram of all the words of a short row, its length mixed in
            rows = np.flatnonzero(short)
            first, length = w.offsets[rows], lengths[rows]
            h = np.zeros(len(rows), np.uint64)
            for j in range(int(length.max())):
                live = length > j
                h[live] = h[live] * _P + tok[first[live] + j]
            out[offsets[rows]] = h + length.astype(np.uint64) * _LEN
        return Grams(_mix(out), offsets)


def ngrams(texts: Texts, n: int) -> Grams:
    """Hashes of the word n-grams of every text."""
    return grams_of(words(texts), n)


@dataclass(frozen=True)
class NgramMatches:
    """Per pool row: the target row sharing the largest fraction of its distinct
    n-grams with it (`target`, -1 for none; ties to the lower target row), how many
    distinct grams they share (`shared`) and that fraction of the target's (`fraction`,
    NaN for none)."""

    target: np.ndarray  # int64
    shared: np.ndarray  # int64
    fraction: np.ndarray  # float64

    def matched(self, threshold: float | None = None) -> np.ndarray:
        """Rows that share a gram with a target, and at least `threshold` of its grams
        when given."""
        hit = self.target >= 0
        if threshold:
            hit &= np.nan_to_num(self.fraction) >= threshold - 1e-12
        return hit


def shared_ngrams(pool: Grams, target: Grams, max_owners: int = 8) -> NgramMatches:
    """Which target row each pool row shares n-grams with (see `NgramMatches`). The
    target's distinct grams become one sorted array; each pool gram is looked up by
    binary search, so the cost is O((pool grams) log(target grams)) however many
    targets there are. A gram that more than `max_owners` target rows share (boilerplate
    such as "let's think step by step") is credited to the first `max_owners` of them
    only, which bounds the work on templated targets."""
    n, m = len(pool), len(target)
    none = NgramMatches(np.full(n, -1, np.int64), np.zeros(n, np.int64), np.full(n, np.nan))
    if not n or not m or not len(target.hashes) or not len(pool.hashes):
        return none
    th, trow = target.hashes, target.rows()
    order = np.lexsort((trow, th))
    th, trow = th[order], trow[order]
    distinct = np.r_[True, (th[1:] != th[:-1]) | (trow[1:] != trow[:-1])]
    th, trow = th[distinct], trow[distinct]
    target_grams = np.bincount(trow, minlength=m)
    head = np.r_[True, th[1:] != th[:-1]]
    unique, starts = th[head], np.flatnonzero(head)
    owners = np.diff(np.r_[starts, len(th)])
    ph = pool.hashes
    # a bitmap of the target's hashes' low bits: most pool grams miss it, and only the
    # ones that hit it are looked up by binary search
    bits = np.uint64(min(30, max(16, int(np.ceil(np.log2(len(unique) + 1))) + 6)))
    mask = np.uint64((1 << int(bits)) - 1)
    bitmap = np.zeros(1 << int(bits), bool)
    bitmap[(unique & mask).astype(np.int64)] = True
    maybe = np.flatnonzero(bitmap[(ph & mask).astype(np.int64)])
    at = np.minimum(np.searchsorted(unique, ph[maybe]), len(unique) - 1)
    hit = unique[at] == ph[maybe]
    if not hit.any():
        return none
    u = np.int64(len(unique))
    row = np.searchsorted(pool.offsets, maybe[hit], side="right") - 1
    key = np.unique(row * u + at[hit])  # distinct (pool row, gram)
    row, gram = key // u, key % u
    take = np.minimum(owners[gram], max_owners)
    pos = np.repeat(starts[gram], take) + (
        np.arange(int(take.sum()), dtype=np.int64) - np.repeat(np.cumsum(take) - take, take))
    pair, count = np.unique(np.repeat(row, take) * np.int64(m) + trow[pos], return_counts=True)
    prow, ptgt = pair // m, pair % m
    frac = count / target_grams[ptgt]
    best = np.lexsort((ptgt, -frac, prow))
    first = best[np.r_[True, prow[best][1:] != prow[best][:-1]]]
    out = NgramMatches(none.target.copy(), none.shared.copy(), none.fraction.copy())
    out.target[prow[first]] = ptgt[first]
    out.shared[prow[first]] = count[first]
    out.fraction[prow[first]] = frac[first]
    return out


def first_shared(text: str, other: str, n: int) -> str | None:
    """The first n-gram of `text` (normalized words joined by spaces) that `other` has
    too, or None: for quoting a match in a message, a few texts at a time."""
    a, b = split_words([text, other])

    def windows(w: list[str]) -> list[tuple[str, ...]]:
        return [tuple(w)] if 0 < len(w) < n else [tuple(w[i:i + n])
                                                 for i in range(len(w) - n + 1)]

    have = set(windows(b))
    return next((" ".join(g) for g in windows(a) if g in have), None)
