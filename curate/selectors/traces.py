"""Trace-aware selection: for corpora of agent trajectories and of several sampled
responses per prompt, where `outcome` (success, reward) says which attempts worked.

    outcome             filter by success / reward; rows without an outcome explicit
    rejection-sampling  per prompt, up to k correct responses, the most diverse first
                        (rejection-sampling fine-tuning, RFT)
    grape               per prompt, the response the model to be trained finds most
                        probable (GRAPE, Zhang et al. 2025, "The Best Instruction-Tuning
                        Data are Those That Fit")
    expert-failures     failed traces kept with their harmful steps masked (after EEF,
                        Lan et al. 2025, "Exploring Expert Failures Improves LLM Agent
                        Tuning")

Responses to the same prompt are grouped by `group`: `task` (default) = the messages
before the first assistant turn (the task of a trace, the prompt of a single-turn
example), `context` = the messages before the last assistant turn, or any SQL
expression over the `examples` view (`json_extract_string(meta, '$.question_id')`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.selectors.base import Budget, Selector, take_in_order
from curate.selectors.pool import Pool
from curate.selection import make_masks

_ROLES = "list_transform(messages, lambda m: m.role)"
_TURNS = "list_transform(list_slice(messages, 1, {end}), lambda m: [m.role, trim(m.content)])"
GROUPS = {
    # the messages before the first assistant turn (all of them when there is none)
    "task": "md5(to_json(" + _TURNS.format(
        end=f"coalesce(list_position({_ROLES}, 'assistant') - 1, len(messages))") + "))",
    # the messages before the last assistant turn
    "context": "md5(to_json(" + _TURNS.format(
        end=f"coalesce(len(messages) - list_position(list_reverse({_ROLES}), 'assistant'), "
            "len(messages))") + "))",
}


def prompt_groups(pool: Pool, group: str) -> np.ndarray:
    """Group number per pool row (0, 1, ... in order of first appearance); rows whose
    key is null are groups of their own."""
    expr = GROUPS.get(group, group)
    if not expr or not expr.strip():
        raise CurateError("group is empty\n  fix: use task, context or a SQL expression over "
                          "the examples view")
    keys = pool._column(f"group:{expr}", f"SELECT id, CAST(({expr}) AS VARCHAR) AS v "
                        "FROM examples", f"the prompt group `{group}`", numeric=False)
    index: dict = {}
    out = np.empty(len(keys), np.int64)
    for r, key in enumerate(keys):
        out[r] = index.setdefault(key if key is not None else ("row", r), len(index))
    return out


def _is_true(pool: Pool, expr: str) -> np.ndarray:
    """Where the boolean SQL expression `expr` holds (null counts as false)."""
    return pool.values(f"CAST(({expr}) AS INTEGER)", "correctness test") == 1


def _order_rounds(picks: list[list[int]], gains: dict[int, float]) -> np.ndarray:
    """Round-robin over the groups' ordered picks (first picks of every group, then second
    picks, ...), best gain first within a round: any prefix stays spread over prompts."""
    out = []
    for r in range(max((len(p) for p in picks), default=0)):
        layer = [p[r] for p in picks if len(p) > r]
        out += sorted(layer, key=lambda i: -gains[i])
    return np.asarray(out, np.int64)


def _cap(selector: Selector, pool: Pool, order: np.ndarray) -> np.ndarray:
    """`order` cut to the selector's budget when it has one."""
    if getattr(selector, "budget", None) is None:
        return order
    return take_in_order(order, *selector._budget(pool))


def _nothing(what: str, fix: str) -> CurateError:
    return CurateError(f"no pool example {what}\n  fix: {fix}")


# ------------------------------------------------------------------------------- outcome


class OutcomeSelector(Selector):
    """Examples by their outcome: `success` true or false, `reward` within [min_reward,
    max_reward]. With no condition, every example that has an outcome. Rows lacking the
    field a condition reads are dropped (`missing="exclude"`, the default) or kept with
    that reason (`missing="include"`); best reward first, then successes."""

    name = "outcome"
    budget_required = False

    def __init__(self, success: bool | None = None, min_reward: float | None = None,
                 max_reward: float | None = None, missing: str = "exclude",
                 budget: Budget | str | None = None):
        self.success = success
        self.min_reward = min_reward
        self.max_reward = max_reward
        self.missing = missing
        self.budget = budget

    def fit(self, pool: Pool) -> "OutcomeSelector":
        if self.missing not in ("exclude", "include"):
            raise CurateError(f"missing={self.missing!r} is not an option\n  fix: use "
                              "missing=exclude (drop rows without an outcome) or include")
        if self.success is not None and not isinstance(self.success, bool):
            raise CurateError(f"success={self.success!r} is not true or false\n  fix: "
                              "-p success=true or -p success=false")
        success = pool.values("CAST(success AS INTEGER)", "success")
        reward = pool.values("reward", "reward")
        by_reward = self.min_reward is not None or self.max_reward is not None
        if self.success is None and not by_reward:
            missing = np.isnan(success) & np.isnan(reward)
            ok = ~missing
            why = np.where(np.isnan(reward), np.where(success == 1, "success", "failure"), "")
            reasons = [w or f"reward {r:g}" for w, r in zip(why, reward)]
            field = "outcome"
        else:
            missing = np.zeros(len(pool), bool)
            ok = np.ones(len(pool), bool)
            parts: list[list[str]] = [[] for _ in range(len(pool))]
            if self.success is not None:
                missing |= np.isnan(success)
                ok &= success == int(self.success)
                for p in parts:
                    p.append(f"success = {str(self.success).lower()}")
            if by_reward:
                missing |= np.isnan(reward)
                if self.min_reward is not None:
                    ok &= reward >= self.min_reward
                if self.max_reward is not None:
                    ok &= reward <= self.max_reward
                for p, r in zip(parts, reward):
                    p.append(f"reward {r:g}")
            reasons = ["; ".join(p) for p in parts]
            field = " and ".join(f for f, on in (("success", self.success is not None),
                                                 ("reward", by_reward)) if on)
        if self.missing == "include":
            ok |= missing
            reasons = [f"no {field} (missing=include)" if m else r
                       for m, r in zip(missing, reasons)]
        else:
            ok &= ~missing
        keep = np.flatnonzero(ok)
        if not len(keep):
            raise _nothing(f"passes the outcome filter ({int(missing.sum())} of {len(pool)} "
                           f"have no {field})", "loosen the conditions, or pass -p missing=include"
                           " to keep rows without an outcome")
        gain = np.where(np.isnan(reward), np.nan_to_num(success, nan=0.0), reward)
        order = keep[np.lexsort((keep, -np.nan_to_num(success[keep], nan=-1),
                                 -np.nan_to_num(reward[keep], nan=-np.inf)))]
        order = _cap(self, pool, order)
        return self._selected(pool, order, gain[order], [reasons[i] for i in order])


# -------------------------------------------------------------------- rejection sampling


class RejectionSampler(Selector):
    """Per prompt, up to `k` correct responses (rejection-sampling fine-tuning): where a
    prompt has more than `k`, the most diverse by greedy farthest-first over the
    embeddings of the embed scorer (the most typical one first, then each the farthest
    from those already kept). `correct` is a boolean SQL expression (default: success).
    With a budget, picks go round-robin over prompts (every prompt's first, then second
    ...)."""

    name = "rejection-sampling"
    budget_required = False

    def __init__(self, k: int = 4, correct: str = "success", group: str = "task",
                 budget: Budget | str | None = None):
        self.k = k
        self.correct = correct
        self.group = group
        self.budget = budget

    def fit(self, pool: Pool) -> "RejectionSampler":
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise CurateError(f"k={self.k!r} is not a positive whole number\n  fix: e.g. -p k=4")
        good = _is_true(pool, self.correct)
        if not good.any():
            raise _nothing(f"is correct (`{self.correct}` holds for none)",
                           "check that the pool has outcomes (`curate sql \"SELECT success, "
                           "count(*) FROM pairs GROUP BY 1\"`), or pass another -p correct=SQL")
        groups = prompt_groups(pool, self.group)
        members: dict[int, list[int]] = {}
        for r in np.flatnonzero(good):
            members.setdefault(int(groups[r]), []).append(int(r))
        vectors = None
        if any(len(m) > self.k for m in members.values()):
            vectors = _response_vectors(pool)
        picks, gains, reasons = [], {}, {}
        for rows in members.values():
            diverse = len(rows) > self.k
            if diverse:
                order, dist = farthest_first(vectors[rows], self.k)
                order = [rows[i] for i in order]
            else:
                order, dist = rows, [np.nan] * len(rows)
            picks.append(order)
            for n, (r, d) in enumerate(zip(order, dist)):
                gains[r] = 0.0 if np.isnan(d) else float(d)
                how = ("" if not diverse else ", the most typical" if n == 0
                       else f", cosine distance {d:.3f} to those kept before")
                reasons[r] = f"pick {n + 1} of the prompt's {len(rows)} correct responses{how}"
        order = _cap(self, pool, _order_rounds(picks, gains))
        return self._selected(pool, order, [gains[i] for i in order],
                              [reasons[i] for i in order])


def _response_vectors(pool: Pool) -> np.ndarray:
    """The pool's embeddings, refusing prompt-only ones (the same for every response)."""
    try:
        folder = pool._embed_folder()
    except CurateError:
        raise CurateError("rejection-sampling needs embeddings to choose diverse responses "
                          "where a prompt has more than k correct ones, and the store has "
                          "none\n  fix: run `curate score embed --text response` (or --text "
                          "all) first, or raise k") from None
    text = json.loads((folder / "config.json").read_text()).get("params", {}).get("text")
    if text == "prompt":
        raise CurateError(f"the embeddings in {folder} are of the prompt, the same for every "
                          "response to it\n  fix: run `curate score embed --text response` "
                          "and pass --embed with its folder name if it is not the newest")
    return pool.embeddings()


def farthest_first(vectors: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    """k rows of L2-normalized `vectors` by greedy farthest-first traversal: first the
    most typical (highest mean cosine similarity to the rest), then repeatedly the one
    whose cosine distance to the nearest picked row is largest (ties: lowest index).
    Returns the rows and each one's distance when picked (first: NaN)."""
    sim = vectors @ vectors.T
    first = int(np.argmax(sim.mean(axis=1)))
    picked, dists = [first], [np.nan]
    nearest = 1.0 - sim[first]
    nearest[first] = -np.inf
    while len(picked) < min(k, len(vectors)):
        nxt = int(np.argmax(nearest))
        picked.append(nxt)
        dists.append(float(nearest[nxt]))
        nearest = np.minimum(nearest, 1.0 - sim[nxt])
        nearest[picked] = -np.inf
    return picked, dists


# ---------------------------------------------------------------------------------- GRAPE


class GrapeSelector(Selector):
    """GRAPE (Zhang et al. 2025): per prompt, the `k` responses with the highest
    length-normalized probability under the model to be trained, i.e. the lowest mean
    response NLL (`nll` of the lm scorer run with that model). `correct_only` restricts
    the candidates to correct responses (`correct`, a boolean SQL expression). With a
    budget, the most probable picks first, round-robin over prompts."""

    name = "grape"
    budget_required = False

    def __init__(self, model: str | None = None, k: int = 1, correct_only: bool = False,
                 correct: str = "success", group: str = "task",
                 budget: Budget | str | None = None):
        self.model = model
        self.k = k
        self.correct_only = correct_only
        self.correct = correct
        self.group = group
        self.budget = budget

    def fit(self, pool: Pool) -> "GrapeSelector":
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise CurateError(f"k={self.k!r} is not a positive whole number\n  fix: e.g. -p k=1")
        candidates = _is_true(pool, self.correct) if self.correct_only \
            else np.ones(len(pool), bool)
        if not candidates.any():
            raise _nothing(f"is correct (`{self.correct}` holds for none)",
                           "check the outcomes, or drop -p correct_only=true")
        folder, values = score_values(pool.subset(candidates), "lm", "nll", self.model)
        model = _model_of(folder)
        nll = np.full(len(pool), np.nan)
        nll[candidates] = _floats(values)  # only the candidates need scores
        groups = prompt_groups(pool, self.group)
        members: dict[int, list[int]] = {}
        for r in np.flatnonzero(candidates & ~np.isnan(nll)):
            members.setdefault(int(groups[r]), []).append(int(r))
        if not members:
            raise _nothing("has an nll score (the lm scorer skipped every candidate)",
                           "check `curate sql \"SELECT reason, count(*) FROM scores_lm GROUP "
                           "BY 1\"`")
        picks, gains, reasons = [], {}, {}
        for rows in members.values():
            ranked = sorted(rows, key=lambda r: (nll[r], r))[: self.k]
            picks.append(ranked)
            for n, r in enumerate(ranked):
                gains[r] = float(np.exp(-nll[r]))  # the length-normalized probability
                reasons[r] = (f"nll {nll[r]:.4g} under {model}: rank {n + 1} of the prompt's "
                              f"{len(rows)} {'correct ' if self.correct_only else ''}responses")
        order = _cap(self, pool, _order_rounds(picks, gains))
        return self._selected(pool, order, [gains[i] for i in order],
                              [reasons[i] for i in order])


def score_values(pool: Pool, scorer: str, column: str, model: str | None = None
                 ) -> tuple[Path, list]:
    """Column `column` of scorer `scorer` per pool row, from its newest configuration
    (with `model`: the newest one run with that model). Fails naming the command to run
    when the scores are missing or do not cover the pool."""
    root = pool.store.folder("scores") / scorer
    configs = [c.parent for c in root.glob("*/config.json") if any(c.parent.glob("part-*.parquet"))]
    from curate.scoring import SCORERS

    target = " --target T" if getattr(SCORERS.get(scorer), "needs_store", False) else ""
    command = f"curate score {scorer}" + (f" --model {model}" if model else "") + target
    if model is not None:
        configs = [c for c in configs if _same_model(_model_of(c), model)]
    if not configs:
        have = sorted({_model_of(c) for c in root.glob("*") if (c / "config.json").is_file()})
        raise CurateError(
            f"no {scorer} scores" + (f" from model {model!r}" if model else "") + " in this "
            "store" + (f" (there are some from {', '.join(have)})" if have else "") +
            f"\n  fix: run `{command}` first")
    folder = max(configs, key=lambda c: ((c / "config.json").stat().st_mtime_ns, c.name))
    columns = json.loads((folder / "config.json").read_text()).get("columns", {})
    if column not in columns:
        raise CurateError(f"the {scorer} scorer has no column {column!r}\n  fix: use one of "
                          f"{', '.join(columns)}")
    table = pq.read_table(sorted(folder.glob("part-*.parquet")), columns=["id", column])
    found = dict(zip(table["id"].to_pylist(), table[column].to_pylist()))
    absent = [i for i in pool.ids if i not in found]
    if absent:
        raise CurateError(f"{len(absent)} of the {len(pool)} examples that need a {scorer} "
                          f"score have none from {_model_of(folder)} (e.g. {absent[0]})\n  "
                          f"fix: run `curate score {scorer} --model {_model_of(folder)}{target}` "
                          "again (it scores only what is missing), or narrow the pool with "
                          "--where")
    return folder, [found[i] for i in pool.ids]


def _model_of(folder: Path) -> str:
    return json.loads((folder / "config.json").read_text()).get("model") or ""


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    pa_, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa_.exists() and pb.exists() and pa_.resolve() == pb.resolve()


# ------------------------------------------------------------------------ expert failures


class ExpertFailureSelector(Selector):
    """Failed expert traces are not all waste (after EEF, Lan et al. 2025): keep their
    beneficial steps and mask the harmful ones. A step (assistant turn) of a failed trace
    is harmful when its step score passes `threshold`; the last step of a failed trace
    (its wrong answer) always is. `mode="steps"` masks each harmful step, `"prefix"` keeps
    only the steps before the first harmful one. Failed traces left with fewer than
    `min_steps` trained steps are dropped; successful ones pass unmasked
    (`keep_successes`); rows without an outcome are left out.

    The step score is a per-assistant-turn list column `<scorer>.<column>`, by default
    the `steps` scorer's `step_nll` (mean token loss of each step under the model to be
    trained, `curate score steps --model M`): a step that model finds far less likely
    than the expert's successful steps is treated as harmful. EEF finds beneficial steps
    by simulating from the trace's states, which needs the environment. Per-step
    influence on a target (`step_influence.step_influence`, `curate score
    step_influence`) plugs in with `harmful="low"` (low values are the harmful ones), as
    does any other per-step list column (a reward model's step values).
    Without `threshold`, it is the `quantile` of the step scores of the pool's successful
    traces (the top `1 - quantile` of normal expert steps count as harmful)."""

    name = "expert-failures"
    budget_required = False

    def __init__(self, step_score: str = "steps.step_nll", model: str | None = None,
                 threshold: float | None = None, quantile: float = 0.9,
                 harmful: str = "high", mode: str = "steps", min_steps: int = 1,
                 keep_successes: bool = True, budget: Budget | str | None = None):
        self.step_score = step_score
        self.model = model
        self.threshold = threshold
        self.quantile = quantile
        self.harmful = harmful
        self.mode = mode
        self.min_steps = min_steps
        self.keep_successes = keep_successes
        self.budget = budget

    def _check(self) -> tuple[str, str]:
        scorer, dot, column = str(self.step_score).partition(".")
        if not dot or not scorer or not column:
            raise CurateError(f"step_score={self.step_score!r} is not SCORER.COLUMN\n  fix: e.g. "
                              "-p step_score=steps.step_nll")
        if self.harmful not in ("high", "low"):
            raise CurateError(f"harmful={self.harmful!r} is not an option\n  fix: high (high "
                              "scores are harmful, e.g. a loss) or low (e.g. an influence)")
        if self.mode not in ("steps", "prefix"):
            raise CurateError(f"mode={self.mode!r} is not an option\n  fix: steps (mask each "
                              "harmful step) or prefix (keep the steps before the first)")
        if not isinstance(self.min_steps, int) or isinstance(self.min_steps, bool) or \
                self.min_steps < 1:
            raise CurateError(f"min_steps={self.min_steps!r} is not a whole number >= 1\n  "
                              "fix: e.g. -p min_steps=1 (a trace with no trained step teaches "
                              "nothing)")
        if not 0 < self.quantile < 1:
            raise CurateError(f"quantile={self.quantile!r} is not between 0 and 1\n  fix: "
                              "e.g. -p quantile=0.9")
        return scorer, column

    def fit(self, pool: Pool) -> "ExpertFailureSelector":
        scorer, column = self._check()
        success = pool.values("CAST(success AS INTEGER)", "success")
        failed = np.flatnonzero(success == 0)
        passed = np.flatnonzero(success == 1)
        if not len(failed) and not (self.keep_successes and len(passed)):
            raise _nothing("has an outcome to act on", "narrow the pool to traces with "
                           "outcomes, e.g. --where \"kind = 'trace' AND success IS NOT NULL\"")
        sign = 1.0 if self.harmful == "high" else -1.0
        steps = {}
        if len(failed):
            sub = pool.subset(success == 0)
            folder, values = score_values(sub, scorer, column, self.model)
            steps = {int(r): _floats(v) for r, v in zip(failed, values)}
            _check_lengths(sub, values, self.step_score)
            threshold = self._threshold(pool, passed, scorer, column, sign)
            what = f"{column} under {_model_of(folder) or scorer}"
        order, gains, reasons, turns, why = [], [], [], [], []
        if self.keep_successes:
            for r in passed:
                order.append(int(r))
                gains.append(1.0)
                reasons.append("successful trace: every step trained")
        for r in failed:
            score = steps[int(r)]
            if not len(score):
                continue  # no assistant turn: nothing to train
            harmful = ~(sign * score <= sign * threshold)  # null scores count as harmful
            harmful[-1] = True  # the final answer of a failed trace
            if self.mode == "prefix":
                harmful[np.argmax(harmful):] = True
            keep = ~harmful
            if keep.sum() < self.min_steps:
                continue
            masked = [f"{j + 1} ({_step_note(j, s, len(score))})"
                      for j, s in enumerate(score) if harmful[j]]
            order.append(int(r))
            gains.append(float(keep.mean()))
            reasons.append(f"failed trace: {int(keep.sum())} of {len(score)} steps trained")
            turns.append((int(r), keep.tolist()))
            why.append(f"failed trace; masked steps {', '.join(masked)}; {what}, harmful "
                       f"{'above' if sign > 0 else 'below'} {threshold:.4g}")
        if not order:
            raise _nothing("is kept: every failed trace lost its steps",
                           "raise --threshold (or -p quantile), lower -p min_steps, use "
                           "-p mode=steps, or keep successful traces (keep_successes=true)")
        ranked = np.asarray(order, np.int64)[np.argsort(-np.asarray(gains), kind="stable")]
        gain_of = dict(zip(order, gains))
        reason_of = dict(zip(order, reasons))
        ranked = _cap(self, pool, ranked)
        kept = set(ranked.tolist())
        rows = [(r, t, w) for (r, t), w in zip(turns, why) if r in kept]
        self.masks_ = make_masks([pool.ids[r] for r, _, _ in rows], turns=[t for _, t, _ in rows],
                                 reasons=[w for _, _, w in rows])
        return self._selected(pool, ranked, [gain_of[r] for r in ranked],
                              [reason_of[r] for r in ranked])

    def _threshold(self, pool: Pool, passed: np.ndarray, scorer: str, column: str,
                   sign: float) -> float:
        if self.threshold is not None:
            return float(self.threshold)
        if not len(passed):
            raise CurateError(
                "no successful traces in the pool to calibrate the harmful-step threshold "
                "on\n  fix: pass --threshold (a step score), or widen the pool to include "
                "successful traces")
        mask = np.zeros(len(pool), bool)
        mask[passed] = True
        _, values = score_values(pool.subset(mask), scorer, column, self.model)
        flat = np.concatenate([_floats(v) for v in values] or [np.zeros(0)])
        flat = flat[~np.isnan(flat)]
        if not len(flat):
            raise CurateError("the successful traces in the pool have no step scores to "
                              "calibrate on\n  fix: pass --threshold")
        q = self.quantile if sign > 0 else 1 - self.quantile
        return float(np.quantile(flat, q))


def _check_lengths(pool: Pool, values: list, what: str) -> None:
    """Per-step scores must have one entry per assistant turn of their example."""
    turns = pool._column("assistant-turns", "SELECT id, len(list_filter(messages, lambda m: "
                         "m.role = 'assistant')) AS v FROM examples", "assistant turns")
    for i, (n, v) in enumerate(zip(turns, values)):
        if v is not None and len(v) != int(n):
            raise CurateError(f"example {pool.ids[i]}: {what} has {len(v)} entries for its "
                              f"{int(n)} assistant turns\n  fix: use a per-step score with one "
                              "entry per assistant turn (e.g. steps.step_nll)")


def _step_note(j: int, score: float, steps: int) -> str:
    if j == steps - 1:
        return "final step"
    return "no score" if np.isnan(score) else f"{score:.3g}"


def _floats(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in (values or [])], np.float64)
