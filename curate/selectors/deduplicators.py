"""Deduplicators: semantic (SemDeDup, within k-means clusters), exact on normalized
text, and fuzzy by MinHash LSH over word shingles. Each keeps the best copy by `keep` (a score expression; higher is kept, write
`-ppl` for lower), and records in `dropped_` which kept example each dropped one
repeats. As a selection they keep everything else, best first, up to an optional
budget; in a recipe they narrow the pool for the next step."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.scoring.base import TEXTS
from curate.selectors.base import Budget, Selector, rank_by, take_in_order
from curate.selectors.pool import Pool
from curate.selectors.diversity import default_clusters


class _Deduplicator(Selector):
    budget_required = False
    deduplicates = True

    def _finish(self, pool: Pool, result, keep_score: np.ndarray | None, how: str):
        """Selection = kept rows (best `keep` first); dropped_ = who duplicates whom."""
        kept = np.flatnonzero(result.keep)
        order = kept[rank_by(keep_score[kept])] if keep_score is not None else kept
        if self.budget is not None:
            costs, limit = Budget.parse(self.budget).resolve(pool)
            order = take_in_order(order, costs, limit)
        dropped = np.flatnonzero(~result.keep)
        ids = pool.ids
        self.dropped_ = pa.table({
            "id": pa.array(ids[dropped].tolist(), pa.string()),
            "duplicate_of": pa.array(ids[result.duplicate_of[dropped]].tolist(), pa.string()),
            "similarity": pa.array(result.similarity[dropped], pa.float32())})
        gains = keep_score[order] if keep_score is not None else np.zeros(len(order))
        return self._selected(pool, order, gains, [how] * len(order))


def _keep_score(pool: Pool, keep: str | None) -> np.ndarray | None:
    if not keep:
        return None
    values = pool.better(keep, "keep score")
    return np.where(np.isnan(values), -np.inf, values)


class SemanticDeduplicator(_Deduplicator):
    """SemDeDup (Abbas et al. 2023): cluster the embeddings with k-means, and within each
    cluster drop every example whose cosine similarity to an already kept one is at or
    above `threshold`; then a boundary pass against each example's second nearest
    cluster catches the near duplicates k-means split apart."""

    name = "semdedup"

    def __init__(self, threshold: float = 0.95, keep: str | None = None,
                 clusters: int | None = None, budget: Budget | str | None = None,
                 iters: int = 20, seed: int = 0):
        self.threshold = threshold
        self.keep = keep
        self.clusters = clusters
        self.budget = budget
        self.iters = iters
        self.seed = seed

    def fit(self, pool: Pool) -> "SemanticDeduplicator":
        from curate.selectors.algorithms.dedup import semantic_dedup
        from curate.selectors.algorithms.kmeans import kmeans, second_nearest

        if not 0 < self.threshold <= 1:
            raise CurateError(f"semdedup threshold {self.threshold} must be in (0, 1]\n"
                              "  fix: e.g. --threshold 0.95 (cosine similarity)")
        if self.budget is not None:
            Budget.parse(self.budget).resolve(pool)  # fail before the clustering
        keep_score = _keep_score(pool, self.keep)
        X = pool.embeddings()
        k = self.clusters or max(1, default_clusters(len(pool)) // 4)
        clusters = kmeans(X, min(k, len(pool)), iters=self.iters, seed=self.seed)
        result = semantic_dedup(X, clusters.labels, self.threshold, keep_score,
                                second_labels=second_nearest(X, clusters.centroids))
        self.labels_ = clusters.labels
        return self._finish(pool, result, keep_score, f"kept: no other within cosine "
                                                      f"{self.threshold}")


class ExactDeduplicator(_Deduplicator):
    """Exact duplicates after normalization (Unicode NFKC, case, punctuation and
    whitespace ignored) of the chosen text: `all` (every turn), `prompt` or `response`.
    Byte-identical conversations are already merged at ingest (same id)."""

    name = "exact-dedup"

    def __init__(self, keep: str | None = None, text: str = "all",
                 budget: Budget | str | None = None):
        self.keep = keep
        self.text = text
        self.budget = budget

    def fit(self, pool: Pool) -> "ExactDeduplicator":
        from curate.selectors.algorithms.dedup import exact_dedup, normalized_text_key

        if self.text not in TEXTS:
            raise CurateError(f"exact-dedup text {self.text!r}\n  fix: use one of "
                              f"{', '.join(TEXTS)}")
        if self.budget is not None:
            Budget.parse(self.budget).resolve(pool)
        keep_score = _keep_score(pool, self.keep)
        texts = pool.example_texts(self.text)
        result = exact_dedup(normalized_text_key(texts), keep_score)
        return self._finish(pool, result, keep_score, f"kept: unique normalized {self.text}")


class MinHashDeduplicator(_Deduplicator):
    """Fuzzy dedup by MinHash LSH over word shingles (datatrove, NeMo Curator,
    data-juicer): rows whose estimated Jaccard similarity of `shingle`-word shingles is
    at or above `threshold` are near duplicates; clusters of them (union-find over the
    verified pairs) keep their best row by `keep`. `num_perm` hashes per signature, cut
    into LSH bands chosen from the threshold as datasketch does (`bands` and `rows`
    override it); `text`: `all` (every turn), `prompt` or `response`."""

    name = "minhash-dedup"

    def __init__(self, threshold: float = 0.8, keep: str | None = None, text: str = "all",
                 shingle: int = 5, num_perm: int = 128, bands: int | None = None,
                 rows: int | None = None, seed: int = 0, budget: Budget | str | None = None):
        self.threshold = threshold
        self.keep = keep
        self.text = text
        self.shingle = shingle
        self.num_perm = num_perm
        self.bands = bands
        self.rows = rows
        self.seed = seed
        self.budget = budget

    def fit(self, pool: Pool) -> "MinHashDeduplicator":
        from curate.selectors.algorithms.minhash import minhash_dedup

        fix = ("  fix: e.g. --threshold 0.8 (Jaccard similarity), -p shingle=5, "
               "-p num_perm=128")
        if not 0 < float(self.threshold) <= 1:
            raise CurateError(f"minhash-dedup threshold {self.threshold} must be in (0, 1]\n"
                              + fix)
        if int(self.shingle) < 1 or int(self.num_perm) < 2:
            raise CurateError(f"minhash-dedup needs shingle >= 1 and num_perm >= 2, got "
                              f"{self.shingle} and {self.num_perm}\n" + fix)
        if (self.bands is None) != (self.rows is None) or self.bands is not None and (
                min(int(self.bands), int(self.rows)) < 1
                or int(self.bands) * int(self.rows) > int(self.num_perm)):
            raise CurateError(f"minhash-dedup bands={self.bands}, rows={self.rows}: give both, "
                              f"with bands x rows <= num_perm ({self.num_perm}), or neither\n"
                              "  fix: leave them out to choose them from the threshold")
        if self.text not in TEXTS:
            raise CurateError(f"minhash-dedup text {self.text!r}\n  fix: use one of "
                              f"{', '.join(TEXTS)}")
        if self.budget is not None:
            Budget.parse(self.budget).resolve(pool)
        keep_score = _keep_score(pool, self.keep)
        self.stats_: dict = {}
        result = minhash_dedup(pool.example_texts(self.text), float(self.threshold),
                               int(self.shingle), int(self.num_perm), int(self.seed),
                               keep_score, None if self.bands is None else int(self.bands),
                               None if self.rows is None else int(self.rows),
                               stats=self.stats_)
        return self._finish(pool, result, keep_score, f"kept: no other at estimated Jaccard "
                                                      f">= {self.threshold}")
