"""Selection-quality benchmark: does a selector's subset train a better model than a
random subset of the same token budget? Fine-tune SmolLM2-135M on each arm's selection
with fixed hyper-parameters, and measure the per-token NLL of held-out targets.

Pool: a seeded sample of the mixed pool in ../shared/corpora, split equally across
GSM8K train, Code Alpaca, FireAct (ReAct traces, Alpaca JSON) and T0 (rows taken
round-robin over its 294 templates), written as JSONL into the cache and ingested with
source names gsm8k, codealpaca, fireact, t0. Targets, never in the pool (asserted by id):
  gsm8k    the first --gsm8k-target rows of GSM8K test
  general  --general-per-source rows of each source from rows left out of the pool
           (ingested in their own format into a side store, exported as chat messages):
           a target that mirrors the pool's mix
  code     --code-target held-out Code Alpaca rows: a target that does not mirror the
           pool (a quarter of the pool is code)

Budget: every arm gets the same token budget, B = --budget-examples x the pool's mean
tokens per example. Tokens are those the trainer sees (the chat template rendered and
tokenized by `curate.tokens.encode`, cut at --max-tokens): the library's
`Pool.tokens()` counts the heuristics scorer's last user + last assistant turn, which
misses the earlier turns of multi-turn traces (FireAct: ~60 counted vs ~250 trained),
so the selectors here get a Pool whose `tokens()` returns the trainer's counts.

Arms (--arms; each a saved selection in the cache store; the default run takes random,
length-filter, deita, kmq-3rounds, similarity-mean and similarity-rr):
  random            --random-seeds selections (seeds 0..N-1): the baseline and its spread
  longest           longest responses ("Long Is More")
  length-filter     token length as a filter ("Random is almost all you need"): rows whose
                    response_tokens are at least the pool's median, then random (seed 0)
  deita             `select deita --score response_tokens --threshold 0.9`: longest first,
                    a row only if its MiniLM cosine to every row taken is below 0.9
  kmq-3rounds       `select kmeans --rounds 3` (kmq_rounds): balanced k-means quotas in
                    round 1, then each round's quotas to the clusters the round's
                    fine-tuned model (training seed 0) still finds hard
  similarity-mean   `select similarity --strategy mean`: top by mean MiniLM cosine to the
                    target's examples; one selection per target, evaluated on it
  similarity-rr     `select similarity --strategy round-robin` (RDS+): each target
                    example in turn takes its nearest unselected row; per target
  similarity-rr-lm  the same over the causal LM's hidden states (`score embed --model
                    smollm2-135m`, weighted mean pooling); per target
  ppl-band          the candidates nearest the median log-perplexity (Marion et al. 2023)
  ifd               highest IFD among candidates with IFD < 1 (Cherry LLM)
  kmeans-balanced   --clusters k-means clusters, equal quota per cluster (kMQ)
  kmeans-proportional  quotas that follow the pool's cluster sizes
  kmeans-refine     Diversify and Conquer, one round: the random-s0 run is the warm-up;
                    a probe of --refine-probe pool rows per cluster (not in random-s0) is
                    evaluated under the base model and the warm-up model; cluster quotas
                    by refine_quotas of the per-cluster mean --refine-signal: `gain`
                    (base - warm-up NLL: what training on the cluster's kind teaches,
                    default) or `loss` (warm-up NLL: what is not learned yet, noise too);
                    seeded random within a cluster
  fl                facility location (coverage only)
  fl-quality        facility location + quality ln(1 + response_tokens) (weight
                    --fl-quality-weight, in similarity units)
  semdedup-random   SemDeDup at cosine 0.9, then random (seed 0)
  kmeans-target     `kmeans --strategy target`: cluster quotas follow the target's
                    examples over the pool's --clusters clusters, rows nearest a target
                    example first; one selection per target, evaluated on its own
  full-pool         every pool row, for as many optimizer steps as the random-s0 run
  outcome-random    trace-aware: `outcome` drops failed traces (rows without an
                    outcome stay), then random (seed 0)
  token-clean       random-s0's rows with token masks: `token-clean` against the
                    random-s1 run as the reference model, 60% of tokens kept (global)
  influence         LESS/TracIn: `score influence` (LoRA warm-up on --influence-warmup
                    random rows, --influence-checkpoints snapshots) over the lm
                    candidates, top by influence; one selection per target
The lm scorer (both passes) runs at ~100-200 tokens/s on 2 CPU cores, so it scores only a
seeded random subset of the pool (--lm-candidates rows, --lm-max-tokens): ppl-band and
ifd choose from those candidates, every other arm from the whole pool.

Runs: every arm is trained with training seeds 0..--seeds-1 (default 3); random is
--random-seeds selections (default 5), each trained with the same training seeds, so
its spread holds both the selection's and the training seed's. Runs go seed-major
(every arm's seed 0, then seed 1, ...). Delta is against the mean of the random runs,
z = delta / their std, p = Welch's t-test of the arm's runs against the random runs;
the verdict column says "beats random" only when delta < 0 and p < 0.05. Everything (data, scores,
selections, runs, evaluations) is cached under benchmarks/.cache/quality/<data key>/, so
a rerun resumes where it stopped and reuses finished runs and evaluations.

Run:    .venv/bin/python benchmarks/selection_quality.py [--quick | --full] [--arms ...]
Output: a leaderboard per target on stdout, benchmarks/results/selection_quality.json
(selection_quality-quick.json / -full.json) and a PNG per target beside it.
"""

from __future__ import annotations

import os
import sys

# benchmarks/selectors.py shadows the standard library's `selectors` (asyncio imports it)
# when this folder is first on sys.path: take it off until the real one is loaded.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
import selectors  # noqa: E402,F401  (the standard library's)

sys.path += [_HERE, os.path.dirname(_HERE)]

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import asdict, replace  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _machine import machine  # noqa: E402

HERE = Path(_HERE)
CORPORA = HERE.parent.parent / "shared" / "corpora"
CACHE = HERE / ".cache" / "quality"
SOURCES = ("gsm8k", "codealpaca", "fireact", "t0")
ARMS = ("random", "longest", "length-filter", "ppl-band", "ifd", "kmeans-balanced",
        "kmeans-proportional", "kmeans-refine", "kmq-3rounds", "kmeans-target", "fl",
        "fl-quality", "semdedup-random", "deita", "similarity-mean", "similarity-rr",
        "similarity-rr-lm", "full-pool", "outcome-random", "token-clean", "influence")
# the default run: the baseline and the selectors of the issue-15 comparison
DEFAULT_ARMS = ("random", "length-filter", "deita", "kmq-3rounds", "similarity-mean",
                "similarity-rr")
DIVERSITY = ("kmeans-balanced", "kmeans-proportional", "kmeans-refine", "kmq-3rounds",
             "kmeans-target", "fl", "fl-quality", "semdedup-random", "deita")
# one selection per target, evaluated on it
PER_TARGET = ("similarity-mean", "similarity-rr", "similarity-rr-lm", "kmeans-target",
              "influence")
TARGETS = ("gsm8k", "general", "code")
EOS = "<|endoftext|>"

# --quick / default / --full: every value can be overridden by its flag
MODES = {
    "quick": dict(pool=300, gsm8k_target=8, general_per_source=2, code_target=6,
                  lm_candidates=20, budget_examples=4, clusters=4, refine_probe=2,
                  random_seeds=2, seeds=1, max_steps=2, epochs=1.0, max_tokens=256,
                  batch_tokens=1024, influence_warmup=16, influence_checkpoints=1),
    "default": dict(pool=2400, gsm8k_target=30, general_per_source=8, code_target=24,
                    lm_candidates=300, budget_examples=60, clusters=12, refine_probe=8,
                    random_seeds=5, seeds=3, max_steps=None, epochs=1.0, max_tokens=1024,
                    batch_tokens=2048, influence_warmup=120, influence_checkpoints=2),
    "full": dict(pool=8000, gsm8k_target=200, general_per_source=50, code_target=100,
                 lm_candidates=0, budget_examples=400, clusters=40, refine_probe=8,
                 random_seeds=5, seeds=3, max_steps=None, epochs=2.0, max_tokens=1024,
                 batch_tokens=4096, influence_warmup=400, influence_checkpoints=4),
}

_T0 = time.time()


def log(msg: str) -> None:
    print(f"[{time.time() - _T0:7.0f}s] {msg}", flush=True)


# --------------------------------------------------------------------------------- data
def read_source(source: str) -> tuple[list[dict], list[str] | None]:
    """The source's raw records in file order, and (T0) each record's template."""
    if source == "gsm8k":
        with open(CORPORA / "gsm8k" / "train.jsonl") as f:
            return [json.loads(line) for line in f if line.strip()], None
    if source == "codealpaca":
        return json.loads((CORPORA / "codealpaca" / "code_alpaca_2k.json").read_text()), None
    if source == "fireact":
        path = CORPORA / "fireact" / "multitask_multimethod.alpaca.json"
        return json.loads(path.read_text()), None
    records, templates = [], []
    for path in sorted((CORPORA / "t0" / "data_per_template").glob("*.jsonl")):
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                rec = json.loads(line)
                if str(rec.get("completion") or "").replace(EOS, "").strip():  # else quarantined
                    records.append({"prompt": rec["prompt"], "completion": rec["completion"]})
                    templates.append(path.stem)
    return records, templates


def sample_order(n: int, rng: np.random.Generator, groups: list[str] | None) -> np.ndarray:
    """A seeded order of n records; with groups (T0 templates), round-robin over the
    groups in random order, random within each, so any prefix spreads over templates."""
    if groups is None:
        return rng.permutation(n)
    by: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by.setdefault(g, []).append(i)
    lists = [list(rng.permutation(v)) for _, v in sorted(by.items())]
    lists = [lists[i] for i in rng.permutation(len(lists))]
    width = max(map(len, lists))
    return np.array([lst[k] for k in range(width) for lst in lists if k < len(lst)], np.int64)


def quotas(pool: int, available: dict[str, int]) -> dict[str, int]:
    """An equal share of the pool per source, capped at what a source has; what a capped
    source cannot take goes to the others."""
    share = {s: 0 for s in available}
    left = pool
    while left > 0:
        open_ = [s for s in available if share[s] < available[s]]
        if not open_:
            sys.exit(f"--pool {pool} is larger than the corpora allow ({sum(available.values())})")
        each = max(1, left // len(open_))
        for s in open_:
            take = min(each, available[s] - share[s], left)
            share[s] += take
            left -= take
    return share


def write_jsonl(path: Path, records: list[dict]) -> None:
    if path.is_file():
        return  # deterministic content: written once (its hash is what ingest skips on)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    tmp.replace(path)


def prepare_data(work: Path, cfg: dict) -> dict:
    """Sample the pool and the targets, ingest the pool; returns paths and counts."""
    from curate.ingest import ingest
    from curate.store import Store

    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg["data_seed"])
    raw = {s: read_source(s) for s in SOURCES}
    orders = {s: sample_order(len(raw[s][0]), rng, raw[s][1]) for s in SOURCES}
    per, n_code = cfg["general_per_source"], cfg["code_target"]
    spare = {s: per + (n_code if s == "codealpaca" else 0) for s in SOURCES}
    share = quotas(cfg["pool"], {s: len(orders[s]) - spare[s] for s in SOURCES})
    store = Store(work / "store")
    heldout, code = {}, []
    for s in SOURCES:
        records, order = raw[s][0], orders[s]
        pool_file = data / f"pool-{s}.jsonl"
        write_jsonl(pool_file, [records[i] for i in order[: share[s]]])
        ingest(store, [pool_file], source=s)  # skipped when already ingested
        heldout[s] = [records[i] for i in order[share[s]: share[s] + per]]
        if s == "codealpaca":
            code = [records[i] for i in order[share[s] + per: share[s] + per + n_code]]

    # targets: GSM8K test slice (a file), the general mix and held-out code (exported as
    # chat messages from side stores, without any row whose content is in the pool)
    with open(CORPORA / "gsm8k" / "test.jsonl") as f:
        test = [json.loads(line) for _, line in zip(range(cfg["gsm8k_target"]), f)]
    gsm8k_file = data / f"target-gsm8k-test-{cfg['gsm8k_target']}.jsonl"
    write_jsonl(gsm8k_file, test)
    pool_ids = set(_ids(store))
    general_file = data / f"target-general-{per}x{len(SOURCES)}.jsonl"
    export_target(general_file, data / "target-staging", heldout, pool_ids)
    code_file = data / f"target-code-{n_code}.jsonl"
    export_target(code_file, data / "target-code-staging", {"codealpaca": code}, pool_ids)
    return {"store": store, "targets": {"gsm8k": str(gsm8k_file), "general": str(general_file),
                                        "code": str(code_file)},
            "pool_rows": share, "pool_ids": pool_ids}


def export_target(path: Path, staging_root: Path, records: dict[str, list[dict]],
                  pool_ids: set[str]) -> None:
    """Ingest each source's held-out records (in their own format) into a side store and
    export them as chat messages, leaving out any whose content is a pool row."""
    if path.is_file():
        return
    from curate.export import export
    from curate.ingest import ingest
    from curate.store import Store

    staging = Store(staging_root)
    for s, recs in records.items():
        src = staging_root.parent / f"{staging_root.name}-src-{s}.jsonl"
        write_jsonl(src, recs)
        ingest(staging, [src], source=s)
    clash = sorted(set(_ids(staging)) & pool_ids)  # content equal to a pool row
    where = ("id NOT IN (" + ", ".join(f"'{i}'" for i in clash) + ")") if clash else None
    export(staging, path, format="messages", where=where)


def _ids(store) -> list[str]:
    con = store.connect()
    try:
        return [r[0] for r in con.execute("SELECT id FROM examples").fetchall()]
    finally:
        con.close()


def train_tokens(store, model: str, max_tokens: int) -> dict[str, int]:
    """Tokens per pool example as the trainer sees them (template rendered, cut at
    max_tokens), cached in the work folder."""
    from transformers import AutoTokenizer

    from curate.tokens import encode
    from curate.models import resolve

    path = store.root.parent / f"train-tokens-{model}-{max_tokens}.json"
    con = store.connect()
    try:
        t = con.sql("SELECT id, messages FROM examples ORDER BY id").to_arrow_table()
    finally:
        con.close()
    if path.is_file():
        cached = json.loads(path.read_text())
        if set(cached) == set(t["id"].to_pylist()):
            return cached
    tok = AutoTokenizer.from_pretrained(str(resolve(model, "causal-lm")))
    ids = t["id"].to_pylist()
    examples = encode(tok, t["messages"].to_pylist(), max_tokens)
    costs = {i: 1 for i in ids}  # no trainable token: never chosen for its size
    for e in examples:
        costs[ids[e.index]] = len(e.input_ids)
    path.write_text(json.dumps(costs))
    return costs


# ---------------------------------------------------------------------------- selection
def make_pool(store, costs: dict[str, int], where: str | None = None,
              embed_config: str | None = None):
    """curate's Pool with `tokens()` = the trainer's token counts (see the docstring)."""
    from curate.selectors import Pool

    class TrainTokenPool(Pool):
        def tokens(self) -> np.ndarray:
            return self._train_tokens[self.rows]

    pool = TrainTokenPool(store, where, embed_config)
    pool._train_tokens = np.array([costs[i] for i in pool._root_ids], np.float64)
    return pool


def save(store, pool, name: str, method: str, params: dict, budget: str, order: np.ndarray,
         gains=None, reasons=None, dropped=None, started: float | None = None, masks=None):
    """Save pool rows `order` as selection `name` (what `curate.selectors.select` does)."""
    from curate.selection import Selection, save_selection

    order = np.asarray(order, np.int64)
    sel = Selection(
        name=name, method=method, params=params, budget=budget,
        ids=list(pool.ids[order]),
        gains=np.zeros(len(order)) if gains is None else np.asarray(gains, np.float64),
        reasons=reasons or [method] * len(order), pool_size=pool.start_size,
        fingerprint=pool.fingerprint(), pool_where=pool.where,
        tokens=int(pool.tokens()[order].sum()), dropped=dropped, masks=masks,
        seconds=time.time() - (started or time.time()))
    save_selection(store, sel, overwrite=True)
    return sel


def select_method(store, costs, name: str, method: str, where: str | None = None,
                  embed_config: str | None = None, **params):
    """Run one library selector on the pool (trainer token costs) and save it."""
    from curate.selectors import make_selector

    started = time.time()
    pool = make_pool(store, costs, where, embed_config)
    try:
        s = make_selector(method, **params).fit(pool)
        return save(store, pool, name, method, s.get_params(), str(params.get("budget")),
                    s.ranking_, s.gains_, s.reasons_, started=started)
    finally:
        pool.close()


def select_then_random(store, costs, name: str, budget: str, kind: str, method: str,
                       **params):
    """A first step (a dedup or a filtering selector) over the whole pool, then a seeded
    random sample of what it keeps (the two steps of a recipe plan, on the trainer-token
    pool)."""
    from curate.selectors import make_selector

    started = time.time()
    pool = make_pool(store, costs)
    try:
        first = make_selector(method, **params).fit(pool)
        keep = np.zeros(len(pool), bool)
        keep[first.ranking_] = True
        kept = pool.subset(keep)
        rnd = make_selector("random", budget=budget, seed=0).fit(kept)
        order = kept.rows[rnd.ranking_]  # rows of the root pool == indices of `pool`
        steps = [{"kind": kind, "method": method, "params": params,
                  "rows_in": len(pool), "rows_out": int(keep.sum())},
                 {"kind": "select", "method": "random", "params": {"budget": budget, "seed": 0},
                  "rows_in": int(keep.sum()), "rows_out": len(order)}]
        dropped = getattr(first, "dropped_", None)
        if dropped is not None:
            import pyarrow as pa

            dropped = dropped.append_column("step", pa.array([f"1:{kind}:{method}"]
                                                             * len(dropped)))
        return save(store, pool, name, "recipe", {"steps": steps}, budget, order,
                    reasons=rnd.reasons_, dropped=dropped, started=started)
    finally:
        pool.close()


def select_kmq(store, costs, name: str, budget: str, cfg: dict, config) -> dict:
    """kMQ in rounds (`curate select kmeans --rounds 3`, `kmq_rounds`) on the trainer-token
    pool: each round's model is trained with the benchmark's config (seed 0)."""
    from curate.finetune.rounds import kmq_rounds

    started = time.time()
    pool = make_pool(store, costs)
    try:
        rep = kmq_rounds(store, name, budget, rounds=3, clusters=cfg["clusters"],
                         config=replace(config, seed=0), probe_rows=cfg["refine_probe"],
                         say=lambda text: log(f"  {name}: {text}"), pool=pool)
    finally:
        pool.close()
    return {"rounds": rep.rounds, "seconds": round(time.time() - started, 1)}


def select_token_clean(store, costs, name: str, rows_of: str, reference_run: str):
    """The rows of selection `rows_of`, with token masks from `token-clean` (60% of the
    tokens kept, global scope) against the fine-tuned `reference_run`."""
    from curate.selectors import make_selector

    started = time.time()
    members = store.root / "selections" / rows_of / "members.parquet"
    pool = make_pool(store, costs, f"id IN (SELECT id FROM read_parquet('{members}'))")
    try:
        s = make_selector("token-clean", reference=reference_run, keep=0.6,
                          scope="global").fit(pool)
        return save(store, pool, name, "token-clean",
                    {**s.get_params(), "mask_model": s.mask_model_}, "all", s.ranking_,
                    s.gains_, s.reasons_, started=started, masks=s.masks_)
    finally:
        pool.close()


def select_influence(store, costs, name: str, budget: str, target: str, where: str | None,
                     cfg: dict) -> tuple:
    """Score influence on `target` over the candidates (`where`), then the top rows by
    it; the gradient features of the pool are shared by every target."""
    from curate.finetune import prepare_scorer
    from curate.scoring import run_scorer
    from curate.scoring.influence import InfluenceScorer

    t = time.time()
    scorer = InfluenceScorer(store, target=target, warmup=cfg["influence_warmup"],
                             checkpoints=cfg["influence_checkpoints"],
                             max_tokens=cfg["lm_max_tokens"])
    prepare_scorer(store, scorer)
    rep = run_scorer(store, scorer, where=where)
    info = {"warmup_run": scorer.run_id, "snapshots": len(scorer.snapshots),
            "scored_now": rep.scored, "gradients_computed": scorer.computed,
            "seconds": round(time.time() - t, 1)}
    cand = f"({where}) AND influence IS NOT NULL" if where else "influence IS NOT NULL"
    return select_method(store, costs, name, "topk", where=cand, score="influence",
                         budget=budget), info


def select_refine(store, costs, name: str, budget: str, clusters: int, warmup_run: str,
                  warmup_selection: str, probe_per_cluster: int, signal: str = "gain",
                  seed: int = 0) -> dict:
    """Diversify and Conquer, one refinement round: k-means (as the kmeans arms), a probe
    of `probe_per_cluster` pool rows per cluster outside the warm-up selection, scored
    by `evaluate` under the base model and under the warm-up run; each cluster's share
    of the budget comes from `refine_quotas` of its token-pooled mean `signal` (higher =
    larger share, pooled over the probe's response tokens as the target NLL is):

        gain  base NLL - warm-up NLL: how much the warm-up training taught that cluster
              ("clusters that contribute more to learning get more weight")
        loss  the warm-up NLL itself: what is still not learned (noisy clusters too)

    Within a cluster the picks are seeded random."""
    import pyarrow.parquet as pq

    from curate.finetune.evaluate import evaluate
    from curate.selectors.algorithms import kmeans as km
    from curate.selectors.base import Budget

    started = time.time()
    pool = make_pool(store, costs)
    try:
        result = km.kmeans(pool.embeddings(), clusters, iters=20, seed=seed)
        labels = result.labels
        members = store.root / "selections" / warmup_selection / "members.parquet"
        trained = set(pq.read_table(members, columns=["id"])["id"].to_pylist())
        free = np.array([i not in trained for i in pool.ids], bool)
        rng = np.random.default_rng(seed)
        probe = []
        for c in range(result.k):
            rows = np.flatnonzero((labels == c) & free)
            probe += sorted(rng.permutation(rows)[:probe_per_cluster].tolist())
        probe_name = f"{name}-probe"
        save(store, pool, probe_name, "refine-probe",
             {"per_cluster": probe_per_cluster, "clusters": clusters, "seed": seed},
             str(len(probe)), np.array(probe))

        def per_example(run_id):
            ev = evaluate(store, f"selection:{probe_name}", run_id=run_id)
            rows = pq.read_table(store.root / "evals" / ev.eval_id / "examples.parquet",
                                 columns=["id", "nll", "tokens"]).to_pylist()
            got = {r["id"]: (r["nll"], r["tokens"]) for r in rows if r["nll"] is not None}
            nll = np.array([got.get(i, (np.nan, 0))[0] for i in pool.ids], np.float64)
            tokens = np.array([got.get(i, (np.nan, 0))[1] for i in pool.ids], np.float64)
            return ev, nll, tokens

        def pooled(values, weights):  # per cluster, token-weighted as the target NLL is
            ok = np.isfinite(values) & (weights > 0)
            total = np.bincount(labels[ok], weights=(values * weights)[ok], minlength=result.k)
            count = np.bincount(labels[ok], weights=weights[ok], minlength=result.k)
            return np.where(count > 0, total / np.maximum(count, 1e-9), np.nan)

        base_ev, base_nll, tokens = per_example(None)
        warm_ev, warm_nll, _ = per_example(warmup_run)
        loss = pooled(warm_nll, tokens)
        gain = pooled(base_nll - warm_nll, tokens)
        c, limit = Budget.parse(budget).resolve(pool)
        order, reasons = km.refine_quotas(labels, gain if signal == "gain" else loss, c, limit,
                                          1.0, None, seed)
        save(store, pool, name, "kmeans-refine",
             {"clusters": clusters, "strategy": "refine", "signal": signal,
              "warmup_run": warmup_run, "probe_evals": [base_ev.eval_id, warm_ev.eval_id],
              "probe_per_cluster": probe_per_cluster, "temperature": 1.0, "seed": seed},
             budget, order, reasons=reasons, started=started)

        def r4(a):
            return [None if math.isnan(v) else round(float(v), 4) for v in a]

        return {"signal": signal, "cluster_sizes": result.sizes.tolist(),
                "cluster_warmup_nll": r4(loss), "cluster_gain": r4(gain),
                "cluster_picks": np.bincount(labels[order], minlength=result.k).tolist(),
                "probe_rows": len(probe), "probe_evals": [base_ev.eval_id, warm_ev.eval_id],
                "probe_eval_seconds": round(base_ev.seconds + warm_ev.seconds, 1)}
    finally:
        pool.close()


def composition(store, name: str) -> dict:
    """Rows per source and trainer tokens of a saved selection."""
    con = store.connect()
    try:
        rows = con.execute(
            "SELECT e.source, count(*) FROM examples e JOIN selection_members s USING (id) "
            "WHERE s.selection = ? GROUP BY 1 ORDER BY 1", [name]).fetchall()
    finally:
        con.close()
    return {s: n for s, n in rows}


# ----------------------------------------------------------------------------- training
class StepLog:
    """finetune progress: a line when a run starts and about every quarter of it."""

    def __init__(self, label: str):
        self.label, self.done, self.total = label, 0, 0

    def start(self, total: int) -> None:
        self.total = total
        log(f"  train {self.label}: {total} steps")

    def advance(self, n: int = 1) -> None:
        before, self.done = self.done, self.done + n
        q = max(1, self.total // 4)
        if self.done // q != before // q and self.done < self.total:
            log(f"  train {self.label}: step {self.done}/{self.total}")


def train_and_eval(store, selection: str, config, targets: dict[str, str]) -> dict:
    """Fine-tune on the selection (cached by the store) and evaluate every target."""
    from curate.finetune.evaluate import evaluate
    from curate.finetune.train import finetune

    t0 = time.time()
    report = finetune(store, selection, config, progress=StepLog(f"{selection} s{config.seed}"))
    manifest = json.loads((store.root / "selections" / selection / "manifest.json").read_text())
    run = {"selection": selection, "seed": config.seed, "run_id": report.run_id,
           "selection_rows": manifest["size"], "selection_tokens": manifest["tokens"],
           "steps": report.steps, "epochs": round(report.epochs, 3),
           "examples": report.examples, "tokens": report.tokens,
           "train_seconds": round(report.seconds, 1), "final_loss": report.final_loss,
           "trained_tokens_per_second": round(report.tokens * report.epochs
                                              / max(report.seconds, 1e-9), 1),
           "loadavg_1m": round(os.getloadavg()[0], 2),
           "cached": report.cached, "max_steps": config.max_steps, "evals": {}}
    for key, target in targets.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # overlap is checked below
            ev = evaluate(store, target, run_id=report.run_id)
        if ev.overlap:
            sys.exit(f"target {key} overlaps selection {selection} ({ev.overlap} examples)")
        run["evals"][key] = {"nll": ev.nll, "eval_id": ev.eval_id, "overlap": ev.overlap,
                             "examples": ev.examples, "tokens": ev.tokens,
                             "seconds": round(ev.seconds, 1)}
    run["seconds"] = round(run["train_seconds"] + sum(e["seconds"] for e in run["evals"].values()), 1)
    log(f"  {selection} s{config.seed}: {report.steps} steps, {report.tokens:,} trained tokens, "
        + ", ".join(f"{k} NLL {e['nll']:.4f}" for k, e in run["evals"].items())
        + f" ({'cached' if report.cached else f'{time.time() - t0:.0f}s'})")
    return run


# ------------------------------------------------------------------------------ results
def leaderboard(target: str, base_nll: float, runs: list[dict], arms: list[str]) -> dict:
    """Per arm: NLL mean +- std over its runs, delta vs the random mean, z against the
    random runs' std, Welch's p when both sides have 2+ runs."""
    by: dict[str, list[dict]] = {}
    for r in runs:
        if target in r["evals"]:
            by.setdefault(r["arm"], []).append(r)
    rand = [r["evals"][target]["nll"] for r in by.get("random", [])]
    r_mean = float(np.mean(rand)) if rand else None
    r_std = float(np.std(rand, ddof=1)) if len(rand) > 1 else None
    rows = []
    for arm in arms:
        if arm not in by:
            continue
        nll = np.array([r["evals"][target]["nll"] for r in by[arm]])
        row = {"arm": arm, "selections": sorted({r["selection"] for r in by[arm]}),
               "runs": len(nll), "nll_mean": float(nll.mean()),
               "nll_std": float(nll.std(ddof=1)) if len(nll) > 1 else None,
               "examples": float(np.mean([r["examples"] for r in by[arm]])),
               "tokens": float(np.mean([r["selection_tokens"] for r in by[arm]])),
               "trained_tokens": float(np.mean([r["tokens"] for r in by[arm]])),
               "steps": float(np.mean([r["steps"] for r in by[arm]])),
               "seconds_per_run": float(np.mean([r["seconds"] for r in by[arm]])),
               "delta_vs_random": None, "z": None, "p_value": None}
        if arm != "random" and r_mean is not None:
            row["delta_vs_random"] = row["nll_mean"] - r_mean
            if r_std:
                row["z"] = row["delta_vs_random"] / r_std
            if len(nll) > 1 and len(rand) > 1:
                from scipy.stats import ttest_ind

                p = ttest_ind(nll, rand, equal_var=False).pvalue
                row["p_value"] = None if np.isnan(p) else float(p)
        row["verdict"] = verdict(row)
        rows.append(row)
    rows.sort(key=lambda r: r["nll_mean"])
    return {"target": target, "base_nll": base_nll, "random_mean": r_mean, "random_std": r_std,
            "random_runs": len(rand), "arms": rows}


P_BAR = 0.05


def beats_random(row: dict) -> bool:
    return (row["delta_vs_random"] is not None and row["delta_vs_random"] < 0
            and row["p_value"] is not None and row["p_value"] < P_BAR)


def verdict(row: dict) -> str:
    """The leaderboard's verdict column: "beats random" only at Welch's p < 0.05."""
    if row["arm"] == "random":
        return "baseline"
    if row["p_value"] is None:
        return "no test (1 run)" if row["runs"] < 2 else "no test"
    if beats_random(row):
        return "beats random"
    if row["delta_vs_random"] > 0 and row["p_value"] < P_BAR:
        return "worse than random"
    return "not significant"


def verdicts(boards: dict[str, dict]) -> dict[str, str]:
    """Per target: the best arm and whether it beats random (p < 0.05); on GSM8K also the
    best library selector against the benchmark's earlier best (embed-sim, 1.036)."""
    out = {}
    for k, b in boards.items():
        rows = [r for r in b["arms"] if r["arm"] not in ("random", "full-pool")]
        if not rows or b["random_mean"] is None:
            continue
        best = min(rows, key=lambda r: r["nll_mean"])
        winners = [r["arm"] for r in rows if beats_random(r)]
        p = f"{best['p_value']:.3g}" if best["p_value"] is not None else "n/a"
        out[k] = (f"best arm {best['arm']} {best['nll_mean']:.4f} vs random "
                  f"{b['random_mean']:.4f} +- {b['random_std'] or 0:.4f} "
                  f"({b['random_runs']} runs), delta {best['delta_vs_random']:+.4f}, p {p}; "
                  + (f"beats random at p < {P_BAR}: {', '.join(winners)}" if winners
                     else f"no arm beats random at p < {P_BAR}"))
    return out


def table(board: dict, one_seed: bool) -> str:
    head = (f"{'arm':<20} {'examples':>8} {'tokens':>8} {'trained':>8} {'steps':>5} {'NLL':>17} "
            f"{'delta':>8} {'z':>6} {'p':>6} {'s/run':>6}  verdict")
    lines = ["", f"target {board['target']}: base model NLL {board['base_nll']:.4f}"
             + (f"; random {board['random_mean']:.4f} +- {board['random_std']:.4f} over "
                f"{board['random_runs']} selections" if board["random_std"] else ""),
             head, "-" * len(head)]
    for r in board["arms"]:
        nll = f"{r['nll_mean']:.4f}" + (f" +- {r['nll_std']:.4f}" if r["nll_std"] is not None
                                        else (" (1 run)" if one_seed else ""))
        lines.append(
            f"{r['arm']:<20} {r['examples']:>8.0f} {r['tokens']:>8,.0f} "
            f"{r['trained_tokens']:>8,.0f} {r['steps']:>5.0f} "
            f"{nll:>17} "
            + (f"{r['delta_vs_random']:>+8.4f}" if r["delta_vs_random"] is not None else " " * 8)
            + (f" {r['z']:>+6.2f}" if r["z"] is not None else " " * 7)
            + (f" {r['p_value']:>6.3f}" if r["p_value"] is not None else " " * 7)
            + f" {r['seconds_per_run']:>6.0f}  {verdict(r)}")
    return "\n".join(lines)


def plot_board(board: dict, label: str, path: Path, seeds: int) -> None:
    from curate.finetune.compare import plot

    plot({"arms": [{"selection": r["arm"], "nll_mean": r["nll_mean"],
                    "nll_std": r["nll_std"] or 0.0} for r in board["arms"]],
          "baseline": "random", "base": {"nll": board["base_nll"]}, "target": label,
          "seeds": list(range(seeds))}, path)  # training seeds per arm


# --------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smoke run: pool 300, 2 steps per arm")
    mode.add_argument("--full", action="store_true", help="GPU-sized run")
    ap.add_argument("--pool", type=int, help="pool rows, split equally over the 4 sources")
    ap.add_argument("--gsm8k-target", type=int, help="GSM8K test rows in the gsm8k target")
    ap.add_argument("--general-per-source", type=int, help="rows per source in the general target")
    ap.add_argument("--code-target", type=int, help="held-out Code Alpaca rows in the code target")
    ap.add_argument("--lm-candidates", type=int, help="pool rows the lm scorer scores (0: all)")
    ap.add_argument("--lm-max-tokens", type=int, default=512)
    ap.add_argument("--budget-examples", type=int,
                    help="token budget = this many x the pool's mean tokens per example")
    ap.add_argument("--clusters", type=int, help="k for the k-means arms")
    ap.add_argument("--refine-probe", type=int, help="probe rows per cluster for kmeans-refine")
    ap.add_argument("--refine-signal", choices=("gain", "loss"), default="gain",
                    help="kmeans-refine cluster signal: base - warm-up NLL, or warm-up NLL")
    ap.add_argument("--fl-quality-weight", type=float, default=1.0)
    ap.add_argument("--semdedup-threshold", type=float, default=0.9)
    ap.add_argument("--random-seeds", type=int, help="random selections (seeds 0..N-1)")
    ap.add_argument("--seeds", type=int, help="training seeds per arm")
    ap.add_argument("--method", choices=("full", "lora"), default="full")
    ap.add_argument("--epochs", type=float)
    ap.add_argument("--max-steps", type=int, help="optimizer steps for every arm (else epochs)")
    ap.add_argument("--lr", type=float, help="default: 5e-5 full, 2e-4 lora")
    ap.add_argument("--batch-tokens", type=int, help="padded tokens per batch (4096)")
    ap.add_argument("--max-tokens", type=int, help="training sequence cut (1024)")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--arms", default=",".join(DEFAULT_ARMS),
                    help=f"comma-separated; all: {','.join(ARMS)}")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--select-only", action="store_true",
                    help="build the data and the selections, print their mix, train nothing")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    mode_name = "quick" if args.quick else "full" if args.full else "default"
    cfg = {k: (getattr(args, k) if getattr(args, k, None) is not None else v)
           for k, v in MODES[mode_name].items()}
    cfg.update(data_seed=args.data_seed, lm_max_tokens=args.lm_max_tokens,
               fl_quality_weight=args.fl_quality_weight, refine_signal=args.refine_signal,
               semdedup_threshold=args.semdedup_threshold)
    arms = [a for a in args.arms.split(",") if a]
    targets_on = [t for t in args.targets.split(",") if t]
    bad = (set(arms) - set(ARMS)) | (set(targets_on) - set(TARGETS))
    if bad:
        sys.exit(f"unknown arms/targets {sorted(bad)}; arms: {', '.join(ARMS)}; "
                 f"targets: {', '.join(TARGETS)}")
    if not CORPORA.exists():
        sys.exit(f"no corpora at {CORPORA}: this benchmark needs ../shared/corpora")

    from curate.finetune.evaluate import evaluate
    from curate.finetune.train import TrainConfig
    from curate.scoring import make_scorer, run_scorer

    key = (f"pool{cfg['pool']}-gsm{cfg['gsm8k_target']}-mix{cfg['general_per_source']}"
           f"-seed{cfg['data_seed']}")
    work = CACHE / key
    load_start = os.getloadavg()[0]
    log(f"mode {mode_name}; work folder {work}")
    prep = prepare_data(work, cfg)
    store, targets = prep["store"], {k: v for k, v in prep["targets"].items() if k in targets_on}
    from curate.targets import load_target

    target_info = {}
    for k, path in prep["targets"].items():
        tgt = load_target(store, path)
        clash = set(tgt.ids) & prep["pool_ids"]
        assert not clash, f"target {k} shares {len(clash)} examples with the pool"
        target_info[k] = {"file": path, "examples": len(tgt.ids)}
    log(f"pool {len(prep['pool_ids'])} examples ({prep['pool_rows']} rows sampled per source); "
        + ", ".join(f"target {k}: {v['examples']}" for k, v in target_info.items()))

    timings: dict[str, float] = {}
    t = time.time()
    run_scorer(store, make_scorer("heuristics"))
    rep = run_scorer(store, make_scorer("embed", text="all"))
    timings["heuristics_embed_seconds"] = round(time.time() - t, 1)
    log(f"heuristics + embed: {timings['heuristics_embed_seconds']}s ({rep.scored} embedded now)")
    config = TrainConfig(model="smollm2-135m", method=args.method, epochs=cfg["epochs"],
                         max_steps=cfg["max_steps"], lr=args.lr, batch_tokens=cfg["batch_tokens"],
                         max_tokens=cfg["max_tokens"], seed=0).resolved()
    costs = train_tokens(store, config.model, config.max_tokens)
    mean_tokens = float(np.mean(list(costs.values())))
    budget_tokens = int(round(cfg["budget_examples"] * mean_tokens, -2))
    budget = f"{budget_tokens} tokens"
    log(f"budget {budget} (= {cfg['budget_examples']} x {mean_tokens:.0f} mean trainer tokens "
        f"per pool example, {100 * cfg['budget_examples'] / len(costs):.1f}% of the pool)")

    # model scores on a seeded candidate subset (ppl-band, ifd and influence choose from it)
    lm_info, where = None, None
    n_cand = cfg["lm_candidates"] or len(costs)
    if {"ppl-band", "ifd", "influence"} & set(arms) and n_cand < len(costs):
        select_method(store, costs, "lm-candidates", "random", budget=str(n_cand), seed=1234)
        members = store.root / "selections" / "lm-candidates" / "members.parquet"
        where = f"id IN (SELECT id FROM read_parquet('{members}'))"
    if {"ppl-band", "ifd"} & set(arms):
        t = time.time()
        log(f"lm scorer on {n_cand} candidates (max_tokens {cfg['lm_max_tokens']}) ...")
        rep = run_scorer(store, make_scorer("lm", max_tokens=cfg["lm_max_tokens"]), where=where)
        timings["lm_seconds"] = round(time.time() - t, 1)
        lm_info = {"candidates": n_cand, "scored_now": rep.scored,
                   "seconds": timings["lm_seconds"], "where": where}
        log(f"lm scorer: {rep.scored} scored now, {timings['lm_seconds']}s")
    cand = f"({where}) AND ppl IS NOT NULL" if where else "ppl IS NOT NULL"

    # selections that need no training
    selections: dict[str, dict] = {}
    t = time.time()

    def built(arm: str, name: str, sel) -> None:
        if arm not in ("full-pool",) and (sel.tokens or 0) < 0.9 * budget_tokens:
            log(f"  note: {name} holds {sel.tokens} tokens, under the budget: its candidates "
                "cannot fill it" + (" (raise --lm-candidates)" if arm in ("ppl-band", "ifd",
                                                                          "influence") else ""))
        selections[name] = {"arm": arm, "method": sel.method, "params": sel.params,
                            "size": len(sel.ids), "tokens": sel.tokens,
                            "sources": composition(store, name),
                            "seconds": round(sel.seconds, 2)}

    if "random" in arms:
        for s in range(cfg["random_seeds"]):
            built("random", f"random-s{s}", select_method(store, costs, f"random-s{s}", "random",
                                                          budget=budget, seed=s))
    if "longest" in arms:
        built("longest", "longest", select_method(store, costs, "longest", "longest",
                                                   budget=budget))
    if "ppl-band" in arms:
        pool = make_pool(store, costs, cand)
        med = float(np.median(np.log(pool.values("ppl"))))
        pool.close()
        built("ppl-band", "ppl-band", select_method(
            store, costs, "ppl-band", "topk", where=cand, budget=budget,
            score=f"-abs(ln(ppl) - {med:.6f})"))
    if "ifd" in arms:
        built("ifd", "ifd", select_method(store, costs, "ifd", "topk", where=f"{cand} AND ifd < 1",
                                          budget=budget, score="ifd"))
    for strategy in ("balanced", "proportional"):
        if f"kmeans-{strategy}" in arms:
            name = f"kmeans-{strategy}"
            built(name, name, select_method(store, costs, name, "kmeans", budget=budget,
                                            clusters=cfg["clusters"], strategy=strategy, seed=0))
    if "fl" in arms:
        built("fl", "fl", select_method(store, costs, "fl", "facility-location", budget=budget))
    if "fl-quality" in arms:
        built("fl-quality", "fl-quality", select_method(
            store, costs, "fl-quality", "facility-location", budget=budget,
            quality="ln(1 + response_tokens)", quality_weight=cfg["fl_quality_weight"]))
    if "semdedup-random" in arms:
        built("semdedup-random", "semdedup-random", select_then_random(
            store, costs, "semdedup-random", budget, "dedup", "semdedup",
            threshold=cfg["semdedup_threshold"]))
    if "outcome-random" in arms:
        built("outcome-random", "outcome-random", select_then_random(
            store, costs, "outcome-random", budget, "select", "outcome", success=True,
            missing="include"))
    for arm, strategy, embed in (("similarity-mean", "mean", None),
                                 ("similarity-rr", "round-robin", None),
                                 ("similarity-rr-lm", "round-robin", config.model)):
        if arm not in arms:
            continue
        if embed:  # the causal LM's hidden states (`score embed --model ...`)
            t = time.time()
            rep = run_scorer(store, make_scorer("embed", model=embed, text="all"))
            timings[f"{arm}_embed_seconds"] = round(time.time() - t, 1)
            log(f"embed with {embed}: {rep.scored} embedded now, "
                f"{timings[f'{arm}_embed_seconds']}s")
        for k, path in targets.items():
            built(arm, f"{arm}-{k}", select_method(
                store, costs, f"{arm}-{k}", "similarity", embed_config=embed, budget=budget,
                target=path, strategy=strategy))
    if "length-filter" in arms:
        pool = make_pool(store, costs)
        med = float(np.nanmedian(pool.values("response_tokens")))
        pool.close()
        built("length-filter", "length-filter", select_then_random(
            store, costs, "length-filter", budget, "select", "threshold",
            score="response_tokens", min=med))
    if "deita" in arms:
        built("deita", "deita", select_method(store, costs, "deita", "deita", budget=budget,
                                              score="response_tokens", threshold=0.9))
    if "kmeans-target" in arms:
        for k, path in targets.items():
            built("kmeans-target", f"kmeans-target-{k}", select_method(
                store, costs, f"kmeans-target-{k}", "kmeans", budget=budget,
                clusters=cfg["clusters"], strategy="target", target=path))
    influence_info = {}
    if "influence" in arms:
        for k, path in targets.items():
            sel, influence_info[k] = select_influence(store, costs, f"influence-{k}", budget,
                                                      path, where, cfg)
            built("influence", f"influence-{k}", sel)
            log(f"  influence on {k}: {influence_info[k]}")
    if "full-pool" in arms:
        built("full-pool", "full-pool", select_method(store, costs, "full-pool", "random",
                                                      budget="100%", seed=0))
    timings["selection_seconds"] = round(time.time() - t, 1)
    log(f"{len(selections)} selections built in {timings['selection_seconds']}s")
    for name, s in selections.items():
        log(f"  {name:<22} {s['size']:>5} rows {s['tokens'] or 0:>9,} tokens  "
            + " ".join(f"{k}={v}" for k, v in s["sources"].items()))

    runs: list[dict] = []
    base: dict[str, dict] = {}
    refine_info = kmq_info = None
    if not args.select_only:
        for k, path in targets.items():
            ev = evaluate(store, path)
            base[k] = {"nll": ev.nll, "eval_id": ev.eval_id, "examples": ev.examples,
                       "tokens": ev.tokens, "seconds": ev.seconds}
            log(f"base model on {k}: NLL {ev.nll:.4f} ({ev.examples} examples, {ev.tokens} "
                f"tokens, {ev.seconds:.0f}s)")
        seeds = list(range(cfg["seeds"]))
        order = [a for a in ARMS if a in arms]
        if "kmeans-refine" in order or "full-pool" in order:
            if "random" not in order:
                sys.exit("kmeans-refine and full-pool need the random arm (its random-s0 run)")
        def trained_selections(arm: str) -> list[str]:
            """The arm's selections to train; the arms that need a trained run first
            (kmeans-refine, kmq-3rounds, token-clean) make theirs here."""
            nonlocal refine_info, kmq_info
            if arm == "random":
                return [f"random-s{s}" for s in range(cfg["random_seeds"])]
            if arm in PER_TARGET:
                return [f"{arm}-{k}" for k in targets]
            if arm == "kmeans-refine":
                refine_info = select_refine(
                    store, costs, "kmeans-refine", budget, cfg["clusters"], anchor["run_id"],
                    "random-s0", cfg["refine_probe"], cfg["refine_signal"])
                built("kmeans-refine", "kmeans-refine", _Saved(store, "kmeans-refine"))
                log(f"  kmeans-refine ({cfg['refine_signal']}): cluster warm-up NLL "
                    f"{refine_info['cluster_warmup_nll']}, gain {refine_info['cluster_gain']}, "
                    f"picks {refine_info['cluster_picks']}")
            elif arm == "kmq-3rounds":
                kmq_info = select_kmq(store, costs, "kmq-3rounds", budget, cfg, config)
                built("kmq-3rounds", "kmq-3rounds", _Saved(store, "kmq-3rounds"))
            elif arm == "token-clean":
                if "random" not in order or cfg["random_seeds"] < 2:
                    sys.exit("token-clean needs the random arm with 2+ seeds (random-s1's "
                             "run is its reference model)")
                reference = next(r["run_id"] for r in runs if r["selection"] == "random-s1")
                built("token-clean", "token-clean", select_token_clean(
                    store, costs, "token-clean", "random-s0", reference))
            return [arm]

        anchor = None  # the random-s0 run (seed 0): warm-up model and step count
        names: dict[str, list[str]] = {}  # arm -> its selections, made on the first pass
        # seed-major: every arm's seed-0 runs first, then seed 1, ..., so a run stopped
        # part way has the same number of seeds for every arm (and resumes from the cache)
        for seed in seeds:
            for arm in order:
                if arm not in names:
                    names[arm] = trained_selections(arm)
                log(f"arm {arm}, training seed {seed}")
                for name in names[arm]:
                    on = {name.removeprefix(f"{arm}-"): targets[name.removeprefix(f"{arm}-")]} \
                        if arm in PER_TARGET else targets
                    c = replace(config, seed=seed)
                    if arm == "full-pool":
                        c = replace(c, max_steps=anchor["steps"])
                    run = train_and_eval(store, name, c, on)
                    run["arm"] = arm
                    runs.append(run)
                    if name == "random-s0" and seed == 0:
                        anchor = run

    boards = {k: leaderboard(k, base[k]["nll"], runs, order) for k in targets} if runs else {}
    for k, b in boards.items():
        print(table(b, cfg["seeds"] == 1))
    bars = verdicts(boards)
    for k, v in bars.items():
        print(f"bar ({k}): {v}")

    suffix = {"quick": "-quick", "full": "-full", "default": ""}[mode_name]
    if args.select_only:
        suffix += "-selections"
    out = Path(args.out) if args.out else HERE / "results" / f"selection_quality{suffix}.json"
    out.parent.mkdir(exist_ok=True)
    for k, b in boards.items():
        if b["arms"]:
            png = out.with_name(f"{out.stem}-{k}.png")
            plot_board(b, f"{k} ({target_info[k]['examples']} examples)", png, cfg["seeds"])
            b["plot"] = str(png.relative_to(HERE)) if png.is_relative_to(HERE) else str(png)
    out.write_text(json.dumps({
        "benchmark": "selection_quality",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(("curate", "torch", "transformers", "sentence-transformers",
                            "faiss-cpu", "faiss-gpu", "numpy", "scipy")),
        "loadavg_1m_start_end": [load_start, os.getloadavg()[0]],
        "mode": mode_name, "config": cfg, "train_config": asdict(config),
        "work_folder": str(work), "arms": arms,
        "data": {"pool_examples": len(prep["pool_ids"]), "pool_rows_sampled": prep["pool_rows"],
                 "targets": target_info, "lm": lm_info,
                 "budget_tokens": budget_tokens, "mean_train_tokens_per_example": mean_tokens},
        "timings": timings, "selections": selections, "kmeans_refine": refine_info,
        "kmq_rounds": kmq_info,
        "influence": influence_info,
        "base": base, "runs": runs, "leaderboards": boards, "verdicts": bars,
        "select_only": args.select_only, "seconds": round(time.time() - _T0, 1),
    }, indent=2, default=float) + "\n")
    log(f"wrote {out}")


class _Saved:
    """A saved selection's manifest, shaped like a Selection for the summary."""

    def __init__(self, store, name: str):
        m = json.loads((store.root / "selections" / name / "manifest.json").read_text())
        self.method, self.params, self.tokens = m["method"], m["params"], m["tokens"]
        self.seconds = m["seconds"]
        self.ids = [None] * m["size"]


if __name__ == "__main__":
    main()
