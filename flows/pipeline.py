"""Prefect flows: one per stage and `curate_flow`, the whole pipeline end to end
(ingest -> score -> select -> export -> optional evaluate / compare -> report).

Each flow records itself in the store's `flow_runs` table with what it changed. Run a
flow as a plain function call (Prefect starts its ephemeral local server, nothing to
set up) or against a server when PREFECT_API_URL is set.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from flows.record import Changes, record_flow_run
from flows.tasks import (compare_task, ensure_model_limit, evaluate_task, export_task,
                         ingest_task, report_task, score_task, select_task, store_born)

DEFAULT_SCORERS: list[str | dict[str, Any]] = ["heuristics", "embed"]
DEFAULT_SELECTIONS: list[dict[str, Any]] = [{"name": "deduped", "recipe": "selectors/dedup.yaml"}]
EXPORT_SUFFIX = {"messages": ".messages.jsonl", "jsonl": ".jsonl", "parquet": ".parquet"}


def _call(task, *args, valid=None, changes: Changes | None = None, **kwargs):
    """Run a task; a cached result whose output is gone from disk (`valid` says) is
    computed again. Returns (result, cached). On the ray engine the task runs on the
    flow's RayTaskRunner, one at a time (each stage's own work fans out on the engine)."""
    state = _run(task, args, kwargs)
    result = state.result()
    cached = state.name == "Cached"
    if cached and valid is not None and not valid(result):
        get_run_logger().info(f"{task.name}: cached output is gone, computing it again")
        result = _run(task.with_options(refresh_cache=True), args, kwargs).result()
        cached = False
    if cached and changes is not None:
        changes.cached_tasks += 1
    return result, cached


# stages whose work runs on the engine's workers: their task only waits, holding no CPU
_DISPATCHERS = {"ingest", "score"}


def _run(task, args: tuple, kwargs: dict):
    """The task's final state: called in the flow's thread, or submitted to the flow's
    task runner when that is Ray's."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or type(ctx.task_runner).__name__ != "RayTaskRunner":
        return task(*args, return_state=True, **kwargs)
    from prefect_ray.context import remote_options

    with remote_options(num_cpus=0) if task.name in _DISPATCHERS else contextlib.nullcontext():
        future = task.submit(*args, **kwargs)
    future.wait()
    return future.state


def run_pipeline(params: dict) -> dict:
    """`curate_flow(**params)` on the task runner of its `engine` (Ray's for the ray
    engine). Tasks on Ray workers report to the same Prefect API: PREFECT_API_URL, or a
    local one started here for the run when it is not set."""
    from curate.engine import engine_from_spec

    runner = engine_from_spec(params.get("engine")).task_runner()
    if runner is None:
        return curate_flow(**params)
    with _shared_api():
        return curate_flow.with_options(task_runner=runner)(**params)


@contextlib.contextmanager
def _shared_api():
    """Prefect's ephemeral server lives in this process's subprocess; workers would each
    start their own. Start it first and name it in the environment they inherit."""
    import os

    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def _selection_current(store: str):
    """A cached selection is valid while its saved manifest is the one it produced."""
    def check(result: dict) -> bool:
        import json

        from curate.store import Store

        path = Store(store).folder("selections") / result["name"] / "manifest.json"
        return path.is_file() and json.loads(path.read_text())["created_at"] == \
            result["created_at"]
    return check


@contextlib.contextmanager
def _recorded(store: str, name: str, parameters: dict):
    """Record the flow run in the store on the way out, completed or failed."""
    from curate.store import Store

    changes, started = Changes(), time.time()
    error = None
    try:
        yield changes
    except BaseException as e:
        error = e
        raise
    finally:
        try:
            record_flow_run(Store(store), name, parameters, changes, started, error)
        except Exception as e:  # the run's own error matters more than its record
            get_run_logger().warning(f"could not record the flow run in {store}: {e}")
        get_run_logger().info(changes.summary())


def _ingested(store: str):
    """A cached ingest is valid for the store it was made in (not one made anew)."""
    return lambda result: result.get("store_born") == store_born(store)


def _scores_kept(result: dict) -> bool:
    """A cached scoring is valid while its parts are there."""
    return any(Path(result["folder"]).glob("part-*.parquet")) or \
        not (result["scored"] + result["cached"])


def _score_all(store: str, scorers: list, changes: Changes, engine=None) -> None:
    for spec in scorers:
        result, cached = _call(score_task, store, spec, engine=engine, valid=_scores_kept,
                               changes=changes)
        changes.rows_scored[result["scorer"]] = changes.rows_scored.get(result["scorer"], 0) + \
            (0 if cached else result["scored"])


def _select_all(store: str, selections: list[dict], changes: Changes) -> list[dict]:
    out = []
    for spec in selections:
        result, cached = _call(select_task, store, spec, valid=_selection_current(store),
                               changes=changes)
        if not cached:
            changes.selections.append(result["name"])
        out.append(result)
    return out


@flow(name="curate")
def curate_flow(store: str = "curate-store", watch: list[str] | None = None,
                format: str = "auto", scorers: list[str | dict[str, Any]] | None = None,
                selections: list[dict[str, Any]] | None = None,
                export: dict[str, Any] | None = None, evaluate: dict[str, Any] | None = None,
                compare: dict[str, Any] | None = None, report: bool | str = True,
                engine: str | dict[str, Any] | None = None) -> dict:
    """The whole pipeline on a watched folder: ingest what is new, score the new rows,
    recompute the selections, export them, optionally evaluate / compare, and write the
    report. A rerun with nothing new answers every stage from the cache.

    - store: the store directory
    - watch: folders, files or globs to ingest (files already ingested are skipped)
    - scorers: names or {name, where, ...scorer options}; default heuristics, embed
    - selections: [{name, recipe | method, budget, where, ...options}]; a recipe is a
      path or a packaged recipe's name (dedup, selectors/dedup.yaml); default the
      `deduped` recipe selectors/dedup.yaml
    - export: {format: messages|jsonl|parquet, dir: DIR (default <store>/exports)};
      null to skip
    - evaluate: {target, run_id, model, accuracy, limit}; compare: {target, selections,
      seeds, max_steps, batch_tokens, ...}; both off by default
    - report: true (<store>/report.html), a path, or false
    - engine: local (default) or ray, or {name: ray, address: ..., workers: N}: where
      ingest and scoring run (see curate.engine); run through `run_pipeline` (as `curate
      run` does), the ray engine also runs the tasks on Prefect's RayTaskRunner
    """
    params = dict(store=store, watch=watch, format=format, scorers=scorers,
                  selections=selections, export=export, evaluate=evaluate, compare=compare,
                  report=report, engine=engine)
    scorers = DEFAULT_SCORERS if scorers is None else scorers
    selections = DEFAULT_SELECTIONS if selections is None else selections
    export = {"format": "messages"} if export is None else export
    with _recorded(store, "curate", params) as changes:
        ensure_model_limit()
        if watch:
            result, cached = _call(ingest_task, store, list(watch), format=format,
                                   engine=engine, valid=_ingested(store))
            changes.add_ingest(result, cached)
        _score_all(store, scorers, changes, engine)
        chosen = _select_all(store, selections, changes)
        if export:
            _export_all(store, chosen, export, changes)
        if evaluate:
            _call(evaluate_task, store, evaluate, changes=changes)
        if compare:
            board, _ = _call(compare_task, store, compare, changes=changes,
                             valid=lambda b: (Path(b["path"]) / "leaderboard.json").is_file())
            changes.compare = board["path"]
        if report:
            _report(store, report, changes)
    from prefect.runtime import flow_run

    return {"store": str(store), "flow_run": flow_run.get_name(), **changes.__dict__}


def _export_all(store: str, chosen: list[dict], export: dict, changes: Changes) -> None:
    from curate.store import Store

    fmt = export.get("format", "messages")
    folder = Path(export.get("dir") or Store(store).folder("exports"))
    for sel in chosen:
        out = folder / f"{sel['name']}{EXPORT_SUFFIX.get(fmt, '.' + fmt)}"
        result, cached = _call(export_task, store, str(out), format=fmt, selection=sel["name"],
                               valid=lambda r: Path(r["path"]).is_file(), changes=changes)
        if not cached:
            changes.exports.append(result["path"])


def _report(store: str, report: bool | str, changes: Changes) -> None:
    from curate.store import Store

    out = Store(store).root / "report.html" if report is True else Path(report)
    changes.report, _ = _call(report_task, store, str(out), changes=changes,
                              valid=lambda p: Path(p).is_file())


# ---------------------------------------------------------------- one stage each
@flow(name="curate-ingest")
def ingest_flow(store: str, paths: list[str], format: str = "auto", source: str | None = None,
                mapping: str | None = None, engine: str | dict[str, Any] | None = None) -> dict:
    """Ingest the files under `paths` that are new or changed (read on `engine`)."""
    with _recorded(store, "curate-ingest", dict(store=store, paths=paths, format=format,
                                                source=source, mapping=mapping,
                                                engine=engine)) as changes:
        result, cached = _call(ingest_task, store, list(paths), format=format, source=source,
                               mapping=mapping, engine=engine, valid=_ingested(store))
        changes.add_ingest(result, cached)
    return result


@flow(name="curate-score")
def score_flow(store: str, scorers: list[str | dict[str, Any]] | None = None,
               engine: str | dict[str, Any] | None = None) -> dict:
    """Score the rows each scorer has not scored yet (on `engine`)."""
    scorers = DEFAULT_SCORERS if scorers is None else scorers
    with _recorded(store, "curate-score", dict(store=store, scorers=scorers,
                                               engine=engine)) as changes:
        ensure_model_limit()
        _score_all(store, scorers, changes, engine)
    return changes.rows_scored


@flow(name="curate-select")
def select_flow(store: str, selections: list[dict[str, Any]] | None = None) -> list[dict]:
    """Recompute the selections whose inputs changed."""
    selections = DEFAULT_SELECTIONS if selections is None else selections
    with _recorded(store, "curate-select", dict(store=store, selections=selections)) as changes:
        chosen = _select_all(store, selections, changes)
    return chosen


@flow(name="curate-export")
def export_flow(store: str, out: str, format: str = "messages", selection: str | None = None,
                where: str | None = None) -> dict:
    """Export a selection (or the filtered store) to a file."""
    with _recorded(store, "curate-export", dict(store=store, out=out, format=format,
                                                selection=selection, where=where)) as changes:
        result, cached = _call(export_task, store, out, format=format, selection=selection,
                               where=where, valid=lambda r: Path(r["path"]).is_file(),
                               changes=changes)
        if not cached:
            changes.exports.append(result["path"])
    return result


@flow(name="curate-evaluate")
def evaluate_flow(store: str, target: str, run_id: str | None = None,
                  model: str = "smollm2-135m", accuracy: bool = False,
                  limit: int | None = None) -> dict:
    """Evaluate a fine-tuning run (or the base model) on a target."""
    spec = dict(target=target, run_id=run_id, model=model, accuracy=accuracy, limit=limit)
    with _recorded(store, "curate-evaluate", dict(store=store, **spec)) as changes:
        ensure_model_limit()
        result, _ = _call(evaluate_task, store, spec, changes=changes)
    return result


@flow(name="curate-compare")
def compare_flow(store: str, target: str, selections: list[str], seeds: int = 3,
                 options: dict[str, Any] | None = None) -> dict:
    """Fine-tune on each selection and rank them on the target (see `curate compare`)."""
    spec = {"target": target, "selections": list(selections), "seeds": seeds, **(options or {})}
    with _recorded(store, "curate-compare", dict(store=store, **spec)) as changes:
        ensure_model_limit()
        board, _ = _call(compare_task, store, spec, changes=changes,
                         valid=lambda b: (Path(b["path"]) / "leaderboard.json").is_file())
        changes.compare = board["path"]
    return board
