"""kMQ iterative refinement (Diversify and Conquer, Yu et al. 2024): selection in rounds
with the model's own training feedback.

Round 1 takes the round's share of the budget with balanced quotas over k-means
clusters of the pool. After each round a model is fine-tuned on everything selected so
far and its mean response loss is measured on a seeded sample of each cluster's rows
not selected yet; the next round's quotas go to the clusters the model still finds
hard (`refine_quotas`: softmax of the standardized losses). Every round is saved as
selection `<name>-r<i>` (cumulative) and trained as an ordinary `curate finetune` run,
so a stopped run resumes from the last finished round; the last round is also saved as
`<name>`.

Token cleaning's self-evolving rounds (`token_clean_rounds`) live here too: each round's
reference is fine-tuned on the cleaned chunks so far, then the token-clean estimator
scores the next chunk with it.

This lives above the selectors (it trains), so that the estimators stay pure: k-means
only draws each round's rows, token cleaning only masks with the references it is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from curate.errors import CurateError
from curate.finetune.train import TrainConfig, finetune
from curate.models import load_run_model
from curate.tokens import response_nll

PROBE_ROWS = 16  # unselected rows per cluster whose loss is the round's feedback


@dataclass
class RoundsReport:
    name: str
    rounds: list[dict] = field(default_factory=list)  # per round: size, run, cluster losses


def kmq_rounds(store, name: str, budget, rounds: int = 3, clusters: int | None = None,
               config: TrainConfig | None = None, where: str | None = None, seed: int = 0,
               temperature: float = 1.0, probe_rows: int = PROBE_ROWS,
               say=lambda text: None, pool=None) -> RoundsReport:
    """Select `budget` from the pool in `rounds` rounds (see the module docstring);
    returns what each round chose and measured. `config` trains each round's model.
    `pool`: an open Pool to select from instead of `Pool(store, where)` (one whose
    `tokens()` counts differently, say); the caller keeps it and closes it."""
    from curate.selectors import Budget, Pool
    from curate.selectors.algorithms import kmeans as km
    from curate.selection import Selection, check_name, save_selection

    check_name(name)
    if int(rounds) != rounds or rounds < 1:
        raise CurateError(f"--rounds {rounds!r} must be a whole number >= 1")
    config = config or TrainConfig()
    report = RoundsReport(name)
    own = pool is None
    if own:
        pool = Pool(store, where)
    where = pool.where
    try:
        costs, limit = Budget.parse(budget).resolve(pool)
        k = clusters or max(2, int(round(np.sqrt(len(pool) / 2))))
        if not 1 <= k <= len(pool):
            raise CurateError(f"--clusters {k} must be between 1 and the pool size {len(pool)}")
        labels = km.kmeans(pool.embeddings(), k, seed=seed).labels
        params = {"rounds": rounds, "clusters": k, "seed": seed, "temperature": temperature,
                  "probe_rows": probe_rows, "train": config.__dict__, "where": where,
                  "budget": str(Budget.parse(budget))}
        chosen = np.zeros(len(pool), bool)
        order: list[int] = []
        reasons: list[str] = []
        losses = None
        for r in range(1, rounds + 1):
            round_name = f"{name}-r{r}"
            saved = _saved(store, round_name, params, pool)
            share = limit * r / rounds - costs[chosen].sum()  # what this round may add
            if saved is not None:
                order, reasons = saved
                chosen[:] = False
                chosen[order] = True
                say(f"round {r}: selection {round_name} already made ({len(order)} rows)")
            else:
                rest = np.flatnonzero(~chosen)
                if losses is None:
                    picked, why = km.balanced_sample(labels[rest], costs[rest], share,
                                                     seed=seed + r)
                else:
                    picked, why = km.refine_quotas(labels[rest], losses, costs[rest], share,
                                                   temperature=temperature, seed=seed + r)
                new = rest[np.asarray(picked, np.int64)]
                order = order + new.tolist()
                reasons = reasons + [f"round {r}: {w}" for w in why]
                chosen[new] = True
                save_selection(store, Selection(
                    name=round_name, method="kmq-rounds", params={**params, "round": r},
                    budget=params["budget"], ids=list(pool.ids[order]),
                    gains=np.zeros(len(order)), reasons=reasons, pool_size=len(pool),
                    fingerprint=pool.fingerprint(), pool_where=where,
                    tokens=int(pool.tokens()[order].sum())), overwrite=True)
                say(f"round {r}: selected {len(new)} more rows ({len(order)} in {round_name})")
            entry = {"round": r, "selection": round_name, "size": len(order)}
            if r < rounds:  # the feedback for the next round
                run = finetune(store, round_name, config)
                model, tokenizer = load_run_model(store, run.run_id, config.device)
                losses = _cluster_losses(store, pool, labels, chosen, (model, tokenizer),
                                         config.max_tokens, k, probe_rows, seed + r)
                entry |= {"run": run.run_id, "cluster_loss": [None if np.isnan(v) else
                                                               round(float(v), 4)
                                                               for v in losses]}
                say(f"round {r}: trained {run.run_id}; mean probe loss "
                    f"{np.nanmean(losses):.4f} over {k} clusters")
            report.rounds.append(entry)
        save_selection(store, Selection(
            name=name, method="kmq-rounds", params={**params, "log": report.rounds},
            budget=params["budget"], ids=list(pool.ids[order]), gains=np.zeros(len(order)),
            reasons=reasons, pool_size=len(pool), fingerprint=pool.fingerprint(),
            pool_where=where, tokens=int(pool.tokens()[order].sum())), overwrite=True)
    finally:
        if own:
            pool.close()
    return report


def _saved(store, name: str, params: dict, pool):
    """(pool rows in order, reasons) of a round saved by the same run, else None."""
    import pyarrow.parquet as pq

    folder = store.folder("selections") / name
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    same = {k: v for k, v in manifest["params"].items() if k != "round"} == \
        json.loads(json.dumps(params))
    if not same or manifest["fingerprint"] != pool.fingerprint():
        return None
    members = pq.read_table(folder / "members.parquet").sort_by("rank")
    index = {i: k for k, i in enumerate(pool.ids)}
    return [index[i] for i in members["id"].to_pylist()], members["reason"].to_pylist()


def _cluster_losses(store, pool, labels: np.ndarray, chosen: np.ndarray, lm, max_tokens: int,
                    k: int, rows: int, seed: int) -> np.ndarray:
    """Mean response NLL of the round's model on up to `rows` unselected rows of each
    cluster (NaN for a cluster with none left)."""
    rng = np.random.default_rng(seed)
    probe: list[int] = []
    for c in range(k):
        members = np.flatnonzero((labels == c) & ~chosen)
        probe += rng.permutation(members)[:rows].tolist()
    ids = list(pool.ids[probe])
    con = store.connect()
    try:
        table = con.sql("SELECT id, messages FROM examples WHERE id IN (SELECT unnest(?))",
                        params=[ids]).to_arrow_table()
    finally:
        con.close()
    by_id = dict(zip(table["id"].to_pylist(), table["messages"].to_pylist()))
    nll, counts = response_nll(*lm, [by_id[i] for i in ids], max_tokens)
    values = np.where(counts > 0, nll, np.nan)
    out = np.full(k, np.nan)
    for c in range(k):
        mine = values[labels[probe] == c]
        if np.isfinite(mine).any():
            out[c] = np.nanmean(mine)
    return out


def token_clean_rounds(store, name: str, rounds: int, *, round_steps: int | None = None,
                       where: str | None = None, overwrite: bool = False,
                       say=lambda text: None, **options):
    """Token cleaning with a reference that evolves over `rounds` chunks of the pool (see
    `curate.selectors.token_clean`); `options` are the token-clean estimator's. Each round's
    training set is saved as selection `tc-<key>-r<r>` and trained with the first
    reference run's configuration (`round_steps` overrides its step count), as a cached
    run: a rerun retrains nothing. Returns the final Selection, saved as `name`."""
    from curate.selectors import Pool, make_selector, select
    from curate.selection import save_selection

    cleaner = make_selector("token-clean", rounds=rounds, **options)
    references: list[str] = []
    if rounds > 1:
        reference = options.get("reference")
        if not reference:
            raise CurateError("token-clean rounds need a reference run\n  fix: pass "
                              "--reference RUN_ID (a finished run on a trusted slice)")
        folder = store.finished_run(reference, fix="or fine-tune a reference on a small "
                                    "trusted selection (curate finetune --selection NAME)")
        base = json.loads((folder / "config.json").read_text())["config"]
        config = TrainConfig(**{**base, "device": cleaner.device})
        if round_steps is not None:
            config.max_steps = int(round_steps)
        pool = Pool(store, where)
        try:
            for r in range(1, rounds):
                training = cleaner.round_selection(pool, [reference, *references])
                save_selection(store, training, overwrite=True)
                run = finetune(store, training.name, config)
                say(f"round {r}: trained {run.run_id} on {training.name} "
                    f"({len(training.ids)} examples)")
                references.append(run.run_id)
        finally:
            pool.close()
    cleaner.round_references = references or None
    return select(store, cleaner, name, where=where, overwrite=overwrite)
