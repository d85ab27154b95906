"""What every selector shares: budgets and the estimator contract (the candidate pool is
`curate.selectors.pool.Pool`, the saved selection `curate.selection.Selection`).

A selector is scikit-learn style: `__init__` only stores parameters (the budget
included), `fit(pool)` does the work and sets

    ranking_       pool row indices of the selected examples, best / first pick first
    gains_         the value each pick added (marginal gain, score, ...), same order
    reasons_       a short reason per pick ("cluster 12 (quota 40/310)", "nll=1.93")
    selected_ids_  the example ids, same order

Deduplicators also set `dropped_` (which example each dropped one duplicated); selectors
that mask tokens or turns set `masks_` (id, turns, tokens, reason: see
`curate.selection.MASK_SCHEMA`) and `mask_model_` (the tokenizer behind token
masks). Budgets
are a count (`1000`), a fraction of the pool (`5%`) or tokens (`2M tokens`): every
algorithm sees them the same way, as per-example costs and a limit (ones and k for a
count; token counts and the token budget for tokens, a knapsack).
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from curate.errors import CurateError
from curate.selectors.pool import Pool

# ----------------------------------------------------------------------------- budgets

_UNITS = {"": 1, "k": 1_000, "m": 1_000_000, "b": 1_000_000_000}
_TOKENS = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmb]?)[\s_-]*tok(en)?s?\s*$", re.I)  # 2M-tokens
_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmb]?)\s*$", re.I)
_PERCENT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*%\s*$")


@dataclass(frozen=True)
class Budget:
    """How much to select: `count` examples, a `fraction` of the pool, or `tokens`."""

    kind: str  # "count" | "fraction" | "tokens"
    value: float

    @classmethod
    def parse(cls, text: "str | int | float | Budget") -> "Budget":
        """'1000', '10k', '5%', '0.05', '2M tokens', '2Mtokens', '2M-tokens', '500k tokens'."""
        if isinstance(text, Budget):
            return text
        if isinstance(text, bool):
            raise CurateError(f"budget {text!r} is not a number")
        if isinstance(text, int):
            text = str(text)
        elif isinstance(text, float):
            text = f"{text * 100}%" if 0 < text < 1 else str(int(text))
        s = str(text)
        fix = ("\n  fix: give a count (1000, 10k), a fraction of the pool (5%, 0.05) or "
               "tokens (\"2M tokens\", quoted on a command line)")
        if m := _PERCENT.match(s):
            frac = float(m.group(1)) / 100
            if not 0 < frac <= 1:
                raise CurateError(f"budget {s!r} must be above 0% and at most 100%{fix}")
            return cls("fraction", frac)
        if m := _TOKENS.match(s):
            tokens = float(m.group(1)) * _UNITS[m.group(2).lower()]
            if tokens < 1:
                raise CurateError(f"budget {s!r} is below one token{fix}")
            return cls("tokens", float(int(tokens)))
        if m := _COUNT.match(s):
            value = float(m.group(1)) * _UNITS[m.group(2).lower()]
            if 0 < value < 1 and not m.group(2):
                return cls("fraction", value)
            if value < 1 or value != int(value):
                raise CurateError(f"budget {s!r} is not a whole number of examples{fix}")
            return cls("count", float(int(value)))
        raise CurateError(f"cannot read budget {s!r}{fix}")

    def __str__(self) -> str:
        if self.kind == "fraction":
            return f"{self.value * 100:g}%"
        if self.kind == "tokens":
            return f"{int(self.value)} tokens"
        return str(int(self.value))

    def resolve(self, pool: "Pool") -> tuple[np.ndarray, float]:
        """(per-example costs, limit) for this pool; fails when the pool cannot hold it."""
        n = len(pool)
        if n == 0:
            raise CurateError("the pool is empty: nothing to select from\n  fix: check the "
                              "--where filter and the earlier recipe steps")
        if self.kind == "tokens":
            costs = pool.tokens().astype(np.float64)
            total = float(costs.sum())
            if self.value > total:
                raise CurateError(
                    f"budget {self} is larger than the pool: {n} examples hold "
                    f"{int(total)} tokens\n  fix: lower the budget or widen the pool")
            return costs, self.value
        k = max(1, int(round(self.value * pool.start_size))) if self.kind == "fraction" \
            else int(self.value)
        if k > n:
            if self.kind == "fraction":
                raise CurateError(
                    f"budget {self} of the starting pool ({pool.start_size} examples) is {k} "
                    f"examples, more than the {n} left after the earlier steps\n  fix: lower "
                    "the budget or loosen the filters")
            raise CurateError(f"budget {self} is larger than the pool of {n} examples\n"
                              "  fix: lower the budget or widen the pool")
        return np.ones(n, np.float64), float(k)


def take_in_order(order: np.ndarray, costs: np.ndarray, limit: float) -> np.ndarray:
    """The prefix-greedy knapsack fill every ranking-based selector shares: walk `order`,
    keep each item that still fits. With unit costs: exactly the first `limit` items."""
    order = np.asarray(order, np.int64)
    if np.all(costs == 1):
        return order[: int(limit)]
    c = costs[order]
    if c.sum() <= limit:
        return order
    keep = np.zeros(len(order), bool)
    left = limit
    fits = np.flatnonzero(np.cumsum(c) <= limit)
    head = len(fits)  # the whole prefix that fits, vectorized
    keep[:head] = True
    left -= float(c[:head].sum())
    smallest = float(c[head:].min()) if head < len(order) else 0.0
    for i in range(head, len(order)):
        if left < smallest:
            break
        if c[i] <= left:
            keep[i] = True
            left -= c[i]
    return order[keep]


# ---------------------------------------------------------------------------- selectors


class Selector:
    """Base class. Subclasses set `name` (the method name users type) and implement
    `fit(pool)`, which must end with `self._selected(pool, order, gains, reasons)`."""

    name: ClassVar[str]
    budget_required: ClassVar[bool] = True  # False: without a budget, all that qualify
    deduplicates: ClassVar[bool] = False  # sets `dropped_`; usable as a recipe dedup step

    def get_params(self) -> dict:
        """The constructor's parameters and their values (scikit-learn's contract)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {p: _plain(getattr(self, p)) for p in names}

    def fit(self, pool: Pool) -> "Selector":
        raise NotImplementedError

    def _budget(self, pool: Pool) -> tuple[np.ndarray, float]:
        """(costs, limit) of this selector's budget over `pool`."""
        budget = getattr(self, "budget", None)
        if budget is None:
            raise CurateError(f"{self.name} needs a budget\n  fix: pass --budget (1000, 5%, "
                              "\"2M tokens\")")
        return Budget.parse(budget).resolve(pool)

    def _selected(self, pool: Pool, order, gains, reasons) -> "Selector":
        self.ranking_ = np.asarray(order, np.int64)
        self.gains_ = np.asarray(gains, np.float64)
        self.reasons_ = list(reasons)
        self.selected_ids_ = list(pool.ids[self.ranking_])
        if not hasattr(self, "dropped_"):
            self.dropped_ = None
        if not hasattr(self, "masks_"):
            self.masks_ = None
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def _plain(value):
    return str(value) if isinstance(value, Budget) else value


def rank_by(values: np.ndarray, descending: bool = True) -> np.ndarray:
    """Indices sorted by value (nulls last), ties by pool order (stable)."""
    v = np.where(np.isnan(values), -np.inf if descending else np.inf, values)
    return np.argsort(-v if descending else v, kind="stable")

