"""Baselines, because papers keep showing they are hard to beat: seeded random, top-k
and threshold on any score or SQL expression, longest responses, token-length filter."""

from __future__ import annotations

import numpy as np

from curate.errors import CurateError
from curate.selectors.base import Budget, Selector, rank_by, take_in_order
from curate.selectors.pool import Pool


class RandomSelector(Selector):
    """Uniform random sample (seeded), under a count, fraction or token budget."""

    name = "random"

    def __init__(self, budget: Budget | str | None = None, seed: int = 0):
        self.budget = budget
        self.seed = seed

    def fit(self, pool: Pool) -> "RandomSelector":
        costs, limit = self._budget(pool)
        order = np.random.default_rng(self.seed).permutation(len(pool))
        picked = take_in_order(order, costs, limit)
        return self._selected(pool, picked, np.zeros(len(picked)),
                              [f"random (seed {self.seed})"] * len(picked))


class TopKSelector(Selector):
    """The examples with the best value of `score`, a score column or any SQL expression
    over pairs and scores (`ifd`, `nll - nll_uncond`): the highest, or the lowest when
    `ascending` or when its scorer declares lower better (`ppl`, `nll`, `repetition`)."""

    name = "topk"

    def __init__(self, budget: Budget | str | None = None, score: str = "",
                 ascending: bool | None = None):
        self.budget = budget
        self.score = score
        self.ascending = ascending

    def fit(self, pool: Pool) -> "TopKSelector":
        if not self.score:
            raise CurateError(f"{self.name} needs a score to rank by\n  fix: pass --score, "
                              f"e.g. --score ifd; the columns are {', '.join(pool.columns())}")
        costs, limit = self._budget(pool)
        values = pool.values(self.score)
        order = ranked(values, pool.ascending(self.score, self.ascending), costs, limit,
                       self.score)
        picked = take_in_order(order, costs, limit)
        return self._selected(pool, picked, values[picked],
                              [f"{self.score} = {v:.4g}" for v in values[picked]])


def ranked(values: np.ndarray, ascending: bool, costs: np.ndarray, limit: float,
           what: str) -> np.ndarray:
    """Rows with a value, best first; fails when they cannot fill the budget."""
    order = rank_by(values, descending=not ascending)
    order = order[~np.isnan(values[order])]
    if costs[order].sum() < min(limit, costs.sum()) and np.all(costs == 1):
        raise CurateError(
            f"only {len(order)} of {len(values)} pool examples have a value for `{what}`, "
            f"fewer than the budget of {int(limit)}\n  fix: score the rest (e.g. `curate "
            "score ...` again), lower the budget, or narrow the pool with --where")
    return order


class ThresholdSelector(Selector):
    """Every example whose `score` lies in [min, max], best first (as topk orders them);
    with a budget, the best of them up to the budget."""

    name = "threshold"
    budget_required = False

    def __init__(self, score: str = "", min: float | None = None, max: float | None = None,
                 budget: Budget | str | None = None, ascending: bool | None = None):
        self.score = score
        self.min = min
        self.max = max
        self.budget = budget
        self.ascending = ascending

    def fit(self, pool: Pool) -> "ThresholdSelector":
        if not self.score or (self.min is None and self.max is None):
            raise CurateError(f"{self.name} needs --score and at least one of min / max\n"
                              "  fix: e.g. --score ifd -p max=1.0")
        values = pool.values(self.score)
        ok = ~np.isnan(values)
        if self.min is not None:
            ok &= values >= self.min
        if self.max is not None:
            ok &= values <= self.max
        order = rank_by(values, descending=not pool.ascending(self.score, self.ascending))
        order = order[ok[order]]
        if self.budget is not None:
            costs, limit = self._budget(pool)
            order = take_in_order(order, costs, limit)
        bounds = f"[{'' if self.min is None else self.min}, {'' if self.max is None else self.max}]"
        return self._selected(pool, order, values[order],
                              [f"{self.score} = {v:.4g} in {bounds}" for v in values[order]])


def response_length(pool: Pool) -> tuple[np.ndarray, str]:
    """Response length in tokens when a scorer counted them, else in characters."""
    if "response_tokens" in pool.columns():
        return pool.values("response_tokens"), "response_tokens"
    return pool.values("length(response)"), "response characters"


class LongestSelector(Selector):
    """The longest responses (Zhao et al. 2024, "Long Is More for Alignment"): a strong,
    cheap baseline. Length in tokens when scored, else characters."""

    name = "longest"

    def __init__(self, budget: Budget | str | None = None):
        self.budget = budget

    def fit(self, pool: Pool) -> "LongestSelector":
        costs, limit = self._budget(pool)
        values, what = response_length(pool)
        picked = take_in_order(ranked(values, False, costs, limit, what), costs, limit)
        return self._selected(pool, picked, values[picked],
                              [f"{what} = {int(v)}" for v in values[picked]])


class LengthFilter(Selector):
    """Examples whose total tokens (prompt + response) lie in [min_tokens, max_tokens],
    in seeded random order; with a budget, a random sample of them."""

    name = "length"
    budget_required = False

    def __init__(self, min_tokens: int = 0, max_tokens: int | None = None,
                 budget: Budget | str | None = None, seed: int = 0):
        self.min_tokens = min_tokens
        self.max_tokens = max_tokens
        self.budget = budget
        self.seed = seed

    def fit(self, pool: Pool) -> "LengthFilter":
        tokens = pool.tokens()
        ok = tokens >= self.min_tokens
        if self.max_tokens is not None:
            ok &= tokens <= self.max_tokens
        order = np.random.default_rng(self.seed).permutation(len(pool))
        order = order[ok[order]]
        if self.budget is not None:
            costs, limit = self._budget(pool)
            order = take_in_order(order, costs, limit)
        return self._selected(pool, order, tokens[order],
                              [f"{int(t)} tokens" for t in tokens[order]])
