"""Targeted and quality-first selection over embeddings.

    similarity   pool rows most similar to a target set: by mean cosine to the target's
                 examples (`mean`), or round-robin over the target's examples, each in
                 turn taking its nearest unselected pool row (`round-robin`, RDS+: Ivison
                 et al. 2025), so that the selection mirrors the target's mix
    deita        score-first, diversity-aware (DEITA, Liu et al. 2024): rows in order of a
                 quality score, each taken only when its cosine to every row already
                 taken is below a threshold

Both read the pool's stored embeddings (`curate score embed`, any model: MiniLM, or a
causal LM's hidden states with `--model smollm2-135m`) and embed the target's examples
with the same configuration where the store has no vectors for them.
"""

from __future__ import annotations

import math

import numpy as np

from curate.errors import CurateError
from curate.selectors.base import Budget, Selector, take_in_order
from curate.selectors.pool import Pool

STRATEGIES = ("mean", "round-robin")
BLOCK = 512  # candidates compared at once against the rows already taken (deita)


class SimilaritySelector(Selector):
    """The pool rows closest to `target` (a selection, `source:NAME` or a file, as
    `curate evaluate` reads it), under the budget. `strategy`: `mean` ranks by mean
    cosine to the target's examples; `round-robin` lets each target example in turn take
    its nearest row not yet taken (ties by pool order)."""

    name = "similarity"

    def __init__(self, budget: Budget | str | None = None, target: str | None = None,
                 strategy: str = "mean"):
        self.budget = budget
        self.target = target
        self.strategy = strategy

    def fit(self, pool: Pool) -> "SimilaritySelector":
        if not self.target:
            raise CurateError("similarity needs a target to be similar to\n  fix: pass "
                              "--target (a selection, source:NAME or a JSONL file)")
        if self.strategy not in STRATEGIES:
            raise CurateError(f"similarity: unknown --strategy {self.strategy!r}\n  fix: use "
                              f"one of {', '.join(STRATEGIES)}")
        costs, limit = self._budget(pool)
        X = pool.embeddings()
        T = pool.target_embeddings(self.target)
        if self.strategy == "mean":
            sim = X @ T.mean(axis=0)  # the mean cosine to the target's examples
            picked = take_in_order(np.argsort(-sim, kind="stable"), costs, limit)
            return self._selected(pool, picked, sim[picked],
                                  [f"mean cosine to the target {v:.4f}" for v in sim[picked]])
        picked, sims, owners = round_robin(X, T, costs, limit)
        return self._selected(pool, picked, sims, [
            f"nearest to target example {j} (cosine {v:.4f})" for j, v in zip(owners, sims)])


def round_robin(X: np.ndarray, T: np.ndarray, costs: np.ndarray, limit: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RDS+ round-robin: target rows take turns (0, 1, ..., m-1, 0, ...), each taking its
    most similar pool row not yet taken, until no row fits the budget. A row that does
    not fit is passed over for good (the module budget convention). Returns the picked
    pool rows in pick order, their cosines, and the target row each was picked for.

    Each target row's candidates come from one FAISS search of its nearest `depth` pool
    rows; when some target row runs out of them before the budget is spent, the search
    is repeated deeper (the picks are the same as with the whole pool sorted)."""
    import faiss

    from curate.selectors.algorithms.submodular import max_items

    n, m = len(X), len(T)
    cap = max_items(costs, limit)
    depth = min(n, max(16, 2 * math.ceil(cap / m) + 16))
    index = faiss.IndexFlatIP(X.shape[1])
    index.add(np.ascontiguousarray(X, np.float32))
    while True:
        sims, nearest = index.search(np.ascontiguousarray(T, np.float32), depth)
        result = _rounds(nearest, sims, costs, limit)
        if result is not None or depth == n:
            return result if result is not None else _rounds(nearest, sims, costs, limit,
                                                              last=True)
        depth = min(n, depth * 4)


def _rounds(nearest: np.ndarray, sims: np.ndarray, costs: np.ndarray, limit: float,
            last: bool = False):
    """The round-robin over the candidate lists; None when a list ran out while rows and
    budget were left (search deeper), unless `last` (the lists hold the whole pool)."""
    n, (m, depth) = len(costs), nearest.shape
    taken = np.zeros(n, bool)
    cursor = np.zeros(m, np.int64)
    picked, cos, owner = [], [], []
    spent, cheapest = 0.0, float(costs.min()) if n else 0.0
    left = n
    while left and spent + cheapest <= limit:
        moved = False
        for j in range(m):
            c = cursor[j]
            while c < depth and (nearest[j, c] < 0 or taken[nearest[j, c]]):
                c += 1
            cursor[j] = c
            if c == depth:
                if not last and left:
                    return None
                continue
            i = int(nearest[j, c])
            taken[i], left, moved = True, left - 1, True
            if spent + costs[i] <= limit:
                spent += float(costs[i])
                picked.append(i)
                cos.append(float(sims[j, c]))
                owner.append(j)
            if not left:
                break
        if not moved:
            break
        if left and spent + cheapest > limit:  # the cheapest row left may cost more
            cheapest = float(costs[~taken].min())
    return (np.asarray(picked, np.int64), np.asarray(cos, np.float64),
            np.asarray(owner, np.int64))


class DeitaSelector(Selector):
    """DEITA's score-first, diversity-aware selection: pool rows in order of `score` (a
    score column or SQL expression; its scorer's direction unless `ascending` is given),
    each taken only when its cosine similarity to every row already taken is below
    `threshold`, until the budget is spent or no row is left. Rows with no score are
    not taken."""

    name = "deita"

    def __init__(self, budget: Budget | str | None = None, score: str = "",
                 threshold: float = 0.9, ascending: bool | None = None):
        self.budget = budget
        self.score = score
        self.threshold = threshold
        self.ascending = ascending

    def fit(self, pool: Pool) -> "DeitaSelector":
        from curate.selectors.base import rank_by

        if not self.score:
            raise CurateError("deita needs a quality score to rank by\n  fix: pass --score, "
                              "e.g. --score ifd or --score response_tokens; the columns are "
                              f"{', '.join(pool.columns())}")
        if not -1.0 <= float(self.threshold) <= 1.0:
            raise CurateError(f"deita: --threshold {self.threshold} is not a cosine "
                              "similarity\n  fix: give one in [-1, 1], e.g. 0.9")
        costs, limit = self._budget(pool)
        values = pool.values(self.score)
        order = rank_by(values, descending=not pool.ascending(self.score, self.ascending))
        order = order[~np.isnan(values[order])]
        picked, nearest = diverse_in_order(pool.embeddings(), order, costs, limit,
                                           float(self.threshold))
        return self._selected(pool, picked, values[picked], [
            f"{self.score} = {v:.4g}, nearest taken cosine {c:.3f}"
            for v, c in zip(values[picked], nearest)])


def diverse_in_order(X: np.ndarray, order: np.ndarray, costs: np.ndarray, limit: float,
                     threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `order`, in order, each kept when its cosine to every kept row is below
    `threshold` and it fits the budget. Returns the kept rows and each one's largest
    cosine to the rows kept before it (-1 for the first). Blocks of candidates are
    compared against the kept rows in one product, then among themselves in order."""
    kept: list[int] = []
    nearest: list[float] = []
    K = np.zeros((0, X.shape[1]), np.float32)
    spent = 0.0
    for start in range(0, len(order), BLOCK):
        block = order[start:start + BLOCK]
        fits = spent + costs[block] <= limit
        if not fits.any() and spent + costs[order[start:]].min() > limit:
            break
        before = (X[block] @ K.T).max(axis=1) if len(K) else np.full(len(block), -1.0)
        inside = X[block] @ X[block].T
        chosen: list[int] = []
        for b, i in enumerate(block):
            if before[b] >= threshold or spent + costs[i] > limit:
                continue
            near = max(before[b], inside[b, chosen].max()) if chosen else before[b]
            if near >= threshold:
                continue
            chosen.append(b)
            kept.append(int(i))
            nearest.append(float(near))
            spent += float(costs[i])
        if chosen:
            K = np.concatenate([K, X[block[chosen]]])
    return np.asarray(kept, np.int64), np.asarray(nearest, np.float64)
