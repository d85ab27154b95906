"""Token cleaning: keep the examples of the pool, but train only on their informative
response tokens; the rest get a token mask (selection masks, `selection_masks`).

Two strategies:

- `influence` (Token Cleaning, Pang et al., ICML 2025, arXiv:2502.01968): a token's
  influence is its loss under the base model minus its loss under a reference model
  (a finished fine-tuning run: `curate finetune` on a small trusted slice, or a warm-up).
  A high value means fine-tuning taught the model that token: it carries task signal;
  near zero or negative, the token is already known or is noise. The top `keep` fraction
  of tokens is kept, within each example (`scope="example"`, as Rho-1 ranks) or over the
  whole pool (`scope="global"`, the paper's fixed-model cleaning). With `rounds=N` the
  reference evolves (the paper's self-evolving cleaning): the pool is cut into N chunks
  in pool order, and chunk r is scored by the r-th reference, `[reference,
  *round_references][r]`. Round r's reference is fine-tuned on the first reference run's
  own selection plus chunks 0..r-1 cleaned (`round_selection`), so the estimator never
  trains: `curate.finetune.rounds.token_clean_rounds` (`curate select token-clean
  --rounds N`) trains each round's reference and passes them in. Chunks already cleaned
  by this estimator with the same reference are not scored again.

- `q-tuning` (Q-Tuning, Wang et al. 2025, "Winning the Pruning Gamble: A Unified
  Approach to Joint Sample and Token Pruning for Efficient Supervised Fine-Tuning",
  arXiv:2509.23873): each example sits on the error (perplexity, `ppl`) x uncertainty
  (predictive entropy, `entropy`) plane of the `lm` scorer. With thresholds at the
  quantiles q and 1 - q of each axis: Q1 (error >= high, entropy >= high) is harmful
  noise and Q3 (error < low, entropy < low) redundant knowledge, both dropped; Q4
  (error < low, entropy >= high), calibration data, is kept whole; Q2 (error >= high,
  entropy < low), valuable misconceptions, is kept with its tokens pruned: each token
  scores (1 - lambda) PPL_i + lambda (PPL_i-1 + PPL_i+1) / 2 (neighbour-aware, lambda =
  `neighbor`) and the `keep` fraction with the lowest scores is trained. Samples between
  the thresholds are dropped. q defaults to 0.5 (a median split); with a count or
  fraction budget q is found by bisection (as the paper does) so that Q2 + Q4 holds the
  budget, at most what the median split keeps. The paper prunes dynamically with the
  model being trained; here the plane comes from the base model's `lm` scores, once.

Token losses follow the mask contract of curate/tokens.py: one entry per trained
token of the last assistant turn (its content, then the end-of-turn token). They come from
`scores_lm.token_losses` where the `lm` scorer ran with the same model and did not
truncate, else they are computed here with the same encoding. Tokens past a truncated
response's scored head are not judged and stay trained.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa

from curate.chat import last_content
from curate.errors import CurateError
from curate.fingerprint import fingerprint
from curate.selection import Selection, make_masks
from curate.selectors.base import Budget, Selector, rank_by, take_in_order
from curate.selectors.pool import Pool

STRATEGIES = ("influence", "q-tuning")
SCOPES = ("example", "global")


class TokenCleaner(Selector):
    """Mask the uninformative response tokens of every pool example (see module doc)."""

    name = "token-clean"
    budget_required = False  # without a budget: every example of the pool, masked

    def __init__(self, reference: str | None = None, keep: float | str = 0.6,
                 scope: str = "example", strategy: str = "influence", rounds: int = 1,
                 round_references: list[str] | None = None, model: str | None = None,
                 quantile: float | None = None, neighbor: float = 0.5,
                 error: str = "ppl", uncertainty: str = "entropy", budget=None,
                 max_tokens: int = 2048, batch_tokens: int = 16384, device: str | None = None):
        self.reference = reference
        self.keep = keep
        self.scope = scope
        self.strategy = strategy
        self.rounds = rounds
        self.round_references = round_references
        self.model = model
        self.quantile = quantile
        self.neighbor = neighbor
        self.error = error
        self.uncertainty = uncertainty
        self.budget = budget
        self.max_tokens = max_tokens
        self.batch_tokens = batch_tokens
        self.device = device

    # ------------------------------------------------------------------ fit
    def fit(self, pool: Pool) -> "TokenCleaner":
        keep = self._check()
        if len(pool) == 0:
            raise CurateError("the pool is empty: nothing to clean\n  fix: check the --where "
                              "filter and the earlier recipe steps")
        ids = list(pool.ids)
        messages = _messages(pool, ids)
        if self.strategy == "q-tuning":
            return self._fit_q_tuning(pool, ids, messages, keep)
        return self._fit_influence(pool, ids, messages, keep)

    def _check(self) -> float:
        """The keep fraction; fails on options that cannot work, before any model loads."""
        keep = _fraction(self.keep)
        problems = [
            (self.strategy not in STRATEGIES, f"strategy={self.strategy!r}",
             " or ".join(STRATEGIES)),
            (self.scope not in SCOPES, f"scope={self.scope!r}", " or ".join(SCOPES)),
            (not isinstance(self.rounds, int) or self.rounds < 1, f"rounds={self.rounds!r}",
             "a whole number >= 1"),
            (self.strategy == "influence" and not self.reference, "no --reference",
             "--reference RUN_ID (a finished run: `curate finetune` on a trusted slice)"),
            (self.strategy == "q-tuning" and self.rounds != 1, f"rounds={self.rounds}",
             "rounds=1 with q-tuning (it needs no reference)"),
            (self.strategy == "influence" and isinstance(self.rounds, int)
             and len(self._references()) != self.rounds,
             f"rounds={self.rounds} and {len(self._references())} reference(s)",
             "`curate select token-clean --rounds N` (curate.finetune.rounds."
             "token_clean_rounds), which trains the reference of every later round and "
             "passes them as round_references"),
            (self.quantile is not None and not 0 < float(self.quantile) <= 0.5,
             f"quantile={self.quantile}", "0 < quantile <= 0.5"),
            (not 0 <= float(self.neighbor) <= 1, f"neighbor={self.neighbor}",
             "0 <= neighbor <= 1"),
        ]
        for bad, what, fix in problems:
            if bad:
                raise CurateError(f"token-clean cannot run with {what}\n  fix: use {fix}")
        return keep

    # ------------------------------------------------------------ influence
    def _references(self) -> list[str]:
        return [r for r in [self.reference, *(self.round_references or [])] if r]

    def _fit_influence(self, pool: Pool, ids: list[str], messages: list,
                       keep: float) -> "TokenCleaner":
        influence, kept = self._clean_chunks(pool, ids, messages, self._references(), keep)
        gains = np.array([float(v.mean()) if v is not None and len(v) else np.nan
                          for v in influence])
        reasons = [f"kept {int(m.sum())}/{len(m)} tokens (influence {g:.3f})" if m is not None
                   else "no response tokens scored" for m, g in zip(kept, gains)]
        self.references_ = self._references()
        return self._finish(pool, ids, messages, kept, gains, reasons, self._base_name(pool),
                            rank_by(gains))

    def _base_name(self, pool: Pool) -> str:
        return self.model or _run_config(pool.store, self.reference)["config"]["model"]

    def _clean_chunks(self, pool: Pool, ids: list[str], messages: list, references: list[str],
                      keep: float) -> tuple[list, list]:
        """Per example (None outside the first len(references) chunks): token influence
        (base loss minus the chunk's reference loss) and the kept-token mask."""
        base_name = self._base_name(pool)
        self._tok = _tokenizer(base_name)
        chunks = np.array_split(np.arange(len(ids)), self.rounds)
        influence: list[np.ndarray | None] = [None] * len(ids)
        kept: list[np.ndarray | None] = [None] * len(ids)
        done = getattr(self, "_chunks_done", {})
        base = None
        for r, (chunk, reference) in enumerate(zip(chunks, references)):
            key = (pool.fingerprint(), r, reference, keep, self.scope, base_name)
            if key not in done:
                if base is None:
                    base = _cached_losses(pool, ids, base_name)
                done[key] = self._clean_chunk(pool.store, chunk, messages, base, base_name,
                                              reference, keep)
            for i, v, m in zip(chunk, *done[key]):
                influence[int(i)], kept[int(i)] = v, m
        self._chunks_done = done  # a later fit with more round references reuses them
        return influence, kept

    def _clean_chunk(self, store, chunk: np.ndarray, messages: list, base: list,
                     base_name: str, reference: str, keep: float) -> tuple[list, list]:
        from curate.models import load_run_model

        todo = [int(i) for i in chunk if base[i] is None]
        if todo:
            model, tok = _base_model(base_name, self.device)
            for i, losses in zip(todo, self._losses(model, tok, [messages[i] for i in todo])):
                base[i] = losses
        model, tok = load_run_model(store, reference, self.device)
        ref = self._losses(model, tok, [messages[int(i)] for i in chunk])
        del model
        influence = [base[int(i)].astype(np.float64) - losses.astype(np.float64)
                     if base[int(i)] is not None and losses is not None else None
                     for i, losses in zip(chunk, ref)]
        return influence, _keep_top(influence, keep, self.scope)

    def round_selection(self, pool: Pool, references: list[str]) -> Selection:
        """The training set of round `len(references)` (>= 1): the first reference run's
        own selection plus the chunks before it, cleaned by `references` (the first
        reference and the later rounds' so far). Not saved, not trained: the caller does
        both (`curate.finetune.rounds.token_clean_rounds`)."""
        keep = self._check_round(references)
        store = pool.store
        ids = list(pool.ids)
        messages = _messages(pool, ids)
        _, kept = self._clean_chunks(pool, ids, messages, references, keep)
        r = len(references)
        chunks = np.array_split(np.arange(len(ids)), self.rounds)[:r]
        members = [ids[int(i)] for c in chunks for i in c]
        masks = {ids[int(i)]: kept[int(i)] for c in chunks for i in c if kept[int(i)] is not None}
        run_config = _run_config(store, self.reference)
        trusted = [row[0] for row in _rows(store, "SELECT id FROM selection_members WHERE "
                                           "selection = ? ORDER BY rank",
                                           [run_config["selection"]])]
        seen = set(members)
        members += [i for i in trusted if i not in seen]
        params = {k: v for k, v in self.get_params().items() if k != "round_references"}
        key = fingerprint([self.reference, pool.fingerprint(), params], 10)
        position = {i: k for k, i in enumerate(ids)}
        mask_ids = [i for i in masks if (masks[i] == 0).any()]
        return Selection(
            name=f"tc-{key}-r{r}", method="token-clean-round", budget="all", ids=members,
            params={"round": r, "reference": self.reference,
                    "mask_model": run_config["config"]["model"]},
            gains=np.zeros(len(members)),
            reasons=["cleaned" if i in seen else "trusted" for i in members],
            pool_size=len(ids), fingerprint=pool.fingerprint(),
            masks=make_masks(mask_ids, tokens=[
                _pad(masks[i], self._full_count(messages[position[i]])) for i in mask_ids]))

    def _check_round(self, references: list[str]) -> float:
        keep = _fraction(self.keep)
        if self.strategy != "influence" or not self.reference:
            raise CurateError("token-clean rounds need strategy=influence and a reference\n  "
                              "fix: pass --reference RUN_ID")
        if not 1 <= len(references) < self.rounds:
            raise CurateError(f"round {len(references)} of {self.rounds} has no training set"
                              f"\n  fix: pass 1 to {self.rounds - 1} references")
        return keep

    # ------------------------------------------------------------- q-tuning
    def _fit_q_tuning(self, pool: Pool, ids: list[str], messages: list,
                      keep: float) -> "TokenCleaner":
        error = pool.values(self.error, "error score")
        uncertainty = pool.values(self.uncertainty, "uncertainty score")
        missing = np.isnan(error) | np.isnan(uncertainty)
        if missing.any():
            raise CurateError(
                f"{int(missing.sum())} of {len(ids)} pool examples have no {self.error} / "
                f"{self.uncertainty} score\n  fix: run `curate score lm` (it scores only what "
                "is missing), or narrow the pool with --where \"ppl IS NOT NULL\"")
        q = float(self.quantile) if self.quantile is not None else 0.5
        if self.budget is not None and Budget.parse(self.budget).kind != "tokens":
            _, limit = self._budget(pool)
            q = _bisect_quantile(error, uncertainty, int(limit))
        quadrant = quadrants(error, uncertainty, q)
        self.quantile_ = q
        self.quadrants_ = quadrant
        chosen = np.flatnonzero((quadrant == 2) | (quadrant == 4))
        base_name = self.model or _lm_model(pool) or "smollm2-135m"
        self._tok = _tokenizer(base_name)
        base = _cached_losses(pool, ids, base_name)
        todo = [int(i) for i in chosen if quadrant[i] == 2 and base[i] is None]
        if todo:
            model, tok = _base_model(base_name, self.device)
            for i, losses in zip(todo, self._losses(model, tok, [messages[i] for i in todo])):
                base[i] = losses
        kept: list[np.ndarray | None] = [None] * len(ids)
        for i in chosen:
            if quadrant[i] == 2 and base[i] is not None:
                kept[i] = _keep_lowest(neighbor_scores(base[i], float(self.neighbor)), keep)
        reasons = [""] * len(ids)
        for i in chosen:
            what = "Q2 misconception" if quadrant[i] == 2 else "Q4 calibration"
            tokens = (f": kept {int(kept[i].sum())}/{len(kept[i])} tokens"
                      if kept[i] is not None else "")
            reasons[i] = f"{what} ({self.error}={error[i]:.3g}, " \
                         f"{self.uncertainty}={uncertainty[i]:.3g}){tokens}"
        order = chosen[rank_by(error[chosen])]  # the larger error first
        return self._finish(pool, ids, messages, kept, error, reasons, base_name, order)

    # --------------------------------------------------------------- shared
    def _losses(self, model, tok, messages: list) -> list[np.ndarray | None]:
        """Per-token response losses under `model` (the lm scorer's encoding)."""
        from curate.tokens import response_losses

        return response_losses(model, tok, messages, self.max_tokens, self.batch_tokens)

    def _full_count(self, messages: list[dict]) -> int:
        """Trained tokens of the last assistant turn (content + end-of-turn), untruncated,
        under the base model's tokenizer, as the lm scorer counts them."""
        text = last_content(messages)
        if not text or not text.strip():
            return 0
        return len(self._tok(text, add_special_tokens=False)["input_ids"]) + 1

    def _finish(self, pool: Pool, ids: list[str], messages: list, kept: list, gains,
                reasons: list[str], base_name: str, order: np.ndarray) -> "TokenCleaner":
        if self.budget is not None:
            costs, limit = self._budget(pool)
            order = take_in_order(order, costs, limit)
        mask_ids, tokens, why = [], [], []
        for i in order:
            m = kept[int(i)]
            if m is None or not (m == 0).any():
                continue
            mask_ids.append(ids[int(i)])
            tokens.append(_pad(m, self._full_count(messages[int(i)])))
            why.append(f"token-clean ({self.strategy}): {reasons[int(i)]}")
        self.masks_ = make_masks(mask_ids, tokens=tokens, reasons=why)
        self.mask_model_ = base_name
        self.kept_ = {ids[int(i)]: kept[int(i)] for i in order if kept[int(i)] is not None}
        g = np.nan_to_num(np.asarray(gains, np.float64)[order], nan=0.0)
        return self._selected(pool, order, g, [reasons[int(i)] for i in order])


# ----------------------------------------------------------------- helpers
def quadrants(error: np.ndarray, uncertainty: np.ndarray, q: float) -> np.ndarray:
    """Q-Tuning quadrant per example (1-4; 0 between the thresholds) with thresholds at
    the quantiles q and 1 - q of each axis."""
    e_lo, e_hi = np.quantile(error, q), np.quantile(error, 1 - q)
    u_lo, u_hi = np.quantile(uncertainty, q), np.quantile(uncertainty, 1 - q)
    high_e, low_e = error >= e_hi, error < e_lo
    high_u, low_u = uncertainty >= u_hi, uncertainty < u_lo
    out = np.zeros(len(error), np.int8)
    out[high_e & high_u] = 1
    out[high_e & low_u] = 2
    out[low_e & low_u] = 3
    out[low_e & high_u] = 4
    return out


def _bisect_quantile(error: np.ndarray, uncertainty: np.ndarray, k: int) -> float:
    """The smallest quantile q in (0, 0.5] whose Q2 + Q4 holds at least k examples (0.5
    when even the median split holds fewer)."""
    def kept(q: float) -> int:
        quad = quadrants(error, uncertainty, q)
        return int(((quad == 2) | (quad == 4)).sum())

    lo, hi = 0.0, 0.5
    if kept(hi) < k:
        return hi
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if kept(mid) >= k else (mid, hi)
    return hi


def neighbor_scores(losses: np.ndarray, lam: float) -> np.ndarray:
    """Q-Tuning's neighbour-aware token score over token perplexities: (1 - lam) PPL_i +
    lam (PPL_i-1 + PPL_i+1) / 2, an edge token standing in for its missing neighbour."""
    ppl = np.exp(np.minimum(np.asarray(losses, np.float64), 50.0))
    prev = np.concatenate([ppl[:1], ppl[:-1]])
    nxt = np.concatenate([ppl[1:], ppl[-1:]])
    return (1 - lam) * ppl + lam * (prev + nxt) / 2


def _keep_top(scores: list[np.ndarray | None], keep: float, scope: str) -> list:
    """0/1 masks keeping the highest-scoring `keep` fraction of tokens, per example or over
    all of them (ties: the earlier token, then the earlier example)."""
    out: list[np.ndarray | None] = [None if s is None else np.zeros(len(s), np.uint8)
                                    for s in scores]
    if scope == "example":
        for s, m in zip(scores, out):
            if s is not None and len(s):
                m[np.argsort(-s, kind="stable")[: max(1, math.ceil(keep * len(s)))]] = 1
        return out
    have = [k for k, s in enumerate(scores) if s is not None and len(s)]
    if not have:
        return out
    flat = np.concatenate([scores[k] for k in have])
    owner = np.concatenate([np.full(len(scores[k]), k) for k in have])
    position = np.concatenate([np.arange(len(scores[k])) for k in have])
    top = np.argsort(-flat, kind="stable")[: max(1, math.ceil(keep * len(flat)))]
    for k, p in zip(owner[top], position[top]):
        out[k][p] = 1
    return out


def _keep_lowest(scores: np.ndarray, keep: float) -> np.ndarray:
    mask = np.zeros(len(scores), np.uint8)
    if len(scores):
        mask[np.argsort(scores, kind="stable")[: max(1, math.ceil(keep * len(scores)))]] = 1
    return mask


def _fraction(value) -> float:
    """`keep` as a fraction in (0, 1]: 0.6, "0.6" or "60%"."""
    text = str(value).strip()
    try:
        f = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        f = float("nan")
    if not 0 < f <= 1:
        raise CurateError(f"token-clean keep={value!r} is not a fraction of tokens\n  fix: "
                          "use a number in (0, 1] or a percentage, e.g. --keep 0.6 or 60%")
    return f


def _pad(mask: np.ndarray, full: int) -> np.ndarray:
    """A mask over the scored head of a response, extended to all `full` trained tokens
    (tokens past a truncation are not judged: trained)."""
    if full <= len(mask):
        return mask
    return np.concatenate([mask, np.ones(full - len(mask), np.uint8)])


def _base_model(name: str, device: str | None):
    from curate.models import load_causal_lm

    return load_causal_lm(name, device)


def _messages(pool: Pool, ids: list[str]) -> list:
    con = pool.store.connect()
    try:
        con.register("_token_clean_ids", pa.table({"id": ids}))
        t = con.sql("SELECT e.id, e.messages FROM examples e JOIN _token_clean_ids USING (id)"
                    ).to_arrow_table()
    finally:
        con.close()
    by_id = dict(zip(t["id"].to_pylist(), t["messages"].to_pylist()))
    return [by_id[i] for i in ids]


def _rows(store, sql: str, params: list) -> list[tuple]:
    con = store.connect()
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def _run_config(store, run_id: str) -> dict:
    """The config of the reference run (a finished fine-tune)."""
    folder = store.finished_run(run_id, fix="or fine-tune a reference on a small trusted "
                                "selection (curate finetune --selection NAME) and pass its id")
    return json.loads((folder / "config.json").read_text())


def _tokenizer(model: str):
    from transformers import AutoTokenizer

    from curate.models import resolve

    return AutoTokenizer.from_pretrained(str(resolve(model, "causal-lm")))


def _lm_model(pool: Pool) -> str | None:
    """The model the lm scorer used on this store, if it ran."""
    folder = pool._views.get("scores_lm")
    if folder is None:
        return None
    return json.loads((folder / "config.json").read_text()).get("model")


def _cached_losses(pool: Pool, ids: list[str], model: str) -> list[np.ndarray | None]:
    """`scores_lm.token_losses` per id where the lm scorer used `model` and did not
    truncate; None where they must be computed."""
    out: list[np.ndarray | None] = [None] * len(ids)
    if _lm_model(pool) != model:
        return out
    con = pool.store.connect()
    try:
        con.register("_token_clean_ids", pa.table({"id": ids}))
        t = con.sql("SELECT s.id, s.token_losses FROM scores_lm s JOIN _token_clean_ids "
                    "USING (id) WHERE NOT s.truncated AND s.token_losses IS NOT NULL "
                    "AND len(s.token_losses) = s.response_tokens").to_arrow_table()
    finally:
        con.close()
    index = {i: k for k, i in enumerate(ids)}
    for i, losses in zip(t["id"].to_pylist(), t["token_losses"].to_pylist()):
        out[index[i]] = np.asarray(losses, np.float32)
    return out
