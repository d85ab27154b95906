"""Prefect tasks: one per stage, each a thin wrapper over the library call the CLI makes.

Tasks take and return small values (the store path, names, counts, paths), never
examples. Each is cached by a key built from the state of its inputs in the store (the
committed ingest runs, the score parts, the recipe text, a selection's manifest, ...),
so a rerun with nothing new answers from the cache. Failures that are transient (the
store lock held by another process, an OS error) are retried; user mistakes are not.
Model work (the embed, lm, steps and influence scorers, evaluate, compare) holds a slot
of the Prefect global concurrency limit `curate-models`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from prefect import task
from prefect.concurrency.sync import concurrency
from prefect.logging import get_run_logger

from curate.errors import CurateError, StoreBusyError
from curate.fingerprint import fingerprint
from curate.store import Store

MODEL_LIMIT = "curate-models"  # global concurrency limit around model work
RETRIES = 3
RETRY_DELAYS = [2, 10, 30]  # seconds before each retry; a busy lock already waited


def transient(task, task_run, state) -> bool:
    """Retry condition: a busy store lock, a timeout or an OS error may pass; a
    CurateError (bad option, missing file, bad recipe) will not."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        return False
    if isinstance(exc, (StoreBusyError, TimeoutError)):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, CurateError)


def ensure_model_limit(slots: int | None = None) -> None:
    """Create the `curate-models` global concurrency limit when the server has none
    (slots: CURATE_MODEL_SLOTS, default 1); an existing limit is left as configured."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    slots = slots or int(os.environ.get("CURATE_MODEL_SLOTS", 1))
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(MODEL_LIMIT)
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=MODEL_LIMIT, limit=slots))


def _model_slot(uses_model: bool):
    import contextlib

    return concurrency(MODEL_LIMIT, occupy=1) if uses_model else contextlib.nullcontext()


# ---------------------------------------------------------------- cache keys
def _listing(root: Path, *globs: str) -> list:
    """(relative path, size, mtime) of the files matching `globs`: what changed."""
    out = []
    for g in globs:
        for p in root.glob(g):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            out.append((str(p.relative_to(root)), st.st_size, st.st_mtime_ns))
    return sorted(out)


def _digest(*parts: Any) -> str:
    return fingerprint(list(parts))


def _root(store: str) -> Path:
    return Store(store).root


INGESTED = "ingest/*/run.parquet"
SCORED = "scores/*/*/part-*.parquet"


def _ingest_key(ctx, p: dict) -> str | None:
    from curate.ingest import expand_paths

    root = _root(p["store"])
    try:
        files = expand_paths(p["paths"])
    except CurateError:
        return None  # the task itself reports the bad path
    # the files and options only (not the store's ingest runs, which this task adds to);
    # a cached answer is checked against the store it was made for (`store_born`)
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return "ingest-" + _digest(str(root), stats, p.get("format"), p.get("source"),
                               p.get("mapping"))


def store_born(store: str) -> str | None:
    """When the store was created: a store deleted and made again differs."""
    path = _root(store) / "store.json"
    return json.loads(path.read_text()).get("created_at") if path.is_file() else None


def _score_key(ctx, p: dict) -> str | None:
    from curate.scoring import scorer_from_spec

    root = _root(p["store"])
    try:
        scorer, where = scorer_from_spec(Store(p["store"]), p["spec"])
    except CurateError:
        return None
    # the rows there are to score, not the parts this task adds
    return "score-" + _digest(str(root), scorer.key, where, _listing(root, INGESTED))


def _select_key(ctx, p: dict) -> str | None:
    from curate.selectors import resolve_recipe

    root = _root(p["store"])
    spec = dict(p["spec"])
    recipe = spec.get("recipe")
    text = None
    if recipe:
        try:
            text = resolve_recipe(recipe).read_text()
        except CurateError:
            pass  # no such recipe: the task itself reports it
    return "select-" + _digest(str(root), spec, text, _listing(root, INGESTED),
                               _listing(root, SCORED))


def _export_key(ctx, p: dict) -> str:
    root = _root(p["store"])
    state = _listing(root, f"selections/{p['selection']}/manifest.json") if p.get("selection") \
        else _listing(root, INGESTED)
    return "export-" + _digest(str(root), str(Path(p["out"]).absolute()), p.get("format"),
                               p.get("selection"), p.get("where"), state)


def _compare_key(ctx, p: dict) -> str:
    root = _root(p["store"])
    spec = p["spec"]
    manifests = [_listing(root, f"selections/{s}/manifest.json") for s in spec["selections"]]
    return "compare-" + _digest(str(root), spec, manifests, _listing(root, INGESTED))


def _evaluate_key(ctx, p: dict) -> str:
    root = _root(p["store"])
    return "evaluate-" + _digest(str(root), p["spec"], _listing(root, INGESTED),
                                 _listing(root, "selections/*/manifest.json", "runs/*/run.parquet"))


def _report_key(ctx, p: dict) -> str:
    root = _root(p["store"])
    state = _listing(root, "ingest/*/*.parquet", SCORED, "selections/*/*.parquet",
                     "runs/*/run.parquet", "evals/*/*.parquet", "compare/*/leaderboard.json")
    return "report-" + _digest(str(root), str(Path(p["out"]).absolute()), state)


def _options(key_fn):
    return dict(retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=transient,
                cache_key_fn=key_fn, persist_result=True)


# ---------------------------------------------------------------- stages
@task(name="ingest", **_options(_ingest_key))
def ingest_task(store: str, paths: list[str], format: str = "auto", source: str | None = None,
                mapping: str | None = None, engine: str | dict | None = None) -> dict:
    """Ingest new or changed files under `paths` (already ingested ones are skipped)."""
    from curate.engine import engine_from_spec
    from curate.ingest import ingest

    report = ingest(Store(store), paths, format=format, source=source, mapping=mapping,
                    engine=engine_from_spec(engine))
    totals = report.to_dict()["totals"]
    read = [f for f in report.files if not f.skipped]
    get_run_logger().info(
        f"ingested {len(read)} file(s), skipped {totals['skipped_files']}: {totals['stored']} new "
        f"rows, {totals['duplicates']} duplicates, {totals['quarantined']} quarantined")
    for f in report.refused:  # the other files go on; these wait for a --map or --format
        get_run_logger().warning(f"{f.path}: refused: {f.refused}\n  fix: {f.fix}")
    return {"store_born": store_born(store),
            "refused": [{"path": f.path, "reason": f.refused, "fix": f.fix}
                        for f in report.refused],
            "files_ingested": len(read), "files_skipped": totals["skipped_files"],
            "rows_new": totals["stored"], "duplicates": totals["duplicates"],
            "quarantined": totals["quarantined"], "files": [f.path for f in read]}


@task(name="score", **_options(_score_key))
def score_task(store: str, spec: str | dict, engine: str | dict | None = None) -> dict:
    """Score the rows this scorer configuration has not scored yet (new rows only), on
    `engine` (local or ray)."""
    from curate.engine import engine_from_spec
    from curate.finetune import prepare_scorer
    from curate.scoring import run_scorer, scorer_from_spec

    scorer, where = scorer_from_spec(Store(store), spec)  # `"embed"` or {name, where, ...}
    with _model_slot(scorer.on_gpu):
        prepare_scorer(Store(store), scorer)  # a warm-up run, when the scorer needs one
        report = run_scorer(Store(store), scorer, where=where, engine=engine_from_spec(engine))
    get_run_logger().info(f"{report.scorer}: scored {report.scored}, {report.cached} cached")
    return dict(report.__dict__)


@task(name="select", **_options(_select_key))
def select_task(store: str, spec: dict) -> dict:
    """Recompute one selection: `{name, recipe | method, budget, where, embed, params}`
    (curate.selectors.parse_selection; a recipe by path or packaged name)."""
    from curate.selectors import parse_selection

    selection = parse_selection(spec)
    name = selection.name
    sel = selection.run(Store(store), overwrite=True)
    m = sel.manifest()
    get_run_logger().info(f"selection {name!r}: {m['size']} of {m['pool_size']} examples")
    return {"name": name, "size": m["size"], "pool_size": m["pool_size"], "tokens": m["tokens"],
            "created_at": m["created_at"], "fingerprint": m["fingerprint"]}


@task(name="export", **_options(_export_key))
def export_task(store: str, out: str, format: str = "messages", selection: str | None = None,
                where: str | None = None) -> dict:
    """Write a selection (or the filtered store) to a file trainers read."""
    from curate.export import export

    report = export(Store(store), out, format=format, selection=selection, where=where)
    get_run_logger().info(f"wrote {report.rows} examples to {report.path}")
    return dict(report.__dict__)


@task(name="evaluate", **_options(_evaluate_key))
def evaluate_task(store: str, spec: dict) -> dict:
    """Evaluate a run (or the base model) on a target: `{target, run_id, model, accuracy,
    limit}`."""
    from curate.finetune.evaluate import evaluate

    spec = dict(spec)
    with _model_slot(True):
        report = evaluate(Store(store), spec.pop("target"), **spec)
    get_run_logger().info(f"{report.run_id} on {report.target}: NLL {report.nll:.4f}")
    return dict(report.__dict__)


@task(name="compare", **_options(_compare_key))
def compare_task(store: str, spec: dict) -> dict:
    """Fine-tune each selection and rank them on a target: `{target, selections, seeds,
    baseline, accuracy, model, method, max_steps, batch_tokens, lr, epochs}`."""
    from curate.finetune.compare import compare
    from curate.finetune.train import TrainConfig

    spec = dict(spec)
    train = {k: spec.pop(k) for k in ("model", "method", "epochs", "max_steps", "lr",
                                      "batch_tokens", "max_tokens", "seed") if k in spec}
    with _model_slot(True):
        board = compare(Store(store), spec.pop("target"), list(spec.pop("selections")),
                        config=TrainConfig(**train), **spec)
    arms = [{"selection": a["selection"], "nll_mean": a["nll_mean"],
             "delta_vs_baseline": a["delta_vs_baseline"]} for a in board["arms"]]
    get_run_logger().info("leaderboard: " + ", ".join(
        f"{a['selection']} {a['nll_mean']:.4f}" for a in arms) + f" ({board['path']})")
    return {"path": board["path"], "baseline": board["baseline"], "arms": arms,
            "base_nll": board["base"]["nll"]}


@task(name="report", **_options(_report_key))
def report_task(store: str, out: str) -> str:
    """Write the HTML run report of the store."""
    from curate.report import build_report

    path = build_report(Store(store), Path(out))
    get_run_logger().info(f"report: {path}")
    return str(path)
