"""Prefect flows on the sample data, under one Prefect test server for the session: the
whole pipeline end to end, a rerun with nothing new (all cached), an incremental run
that ingests and scores only a new file's rows, a retry after a store lock held by
another process is released, `curate serve` registering its schedule, running a flow
run and stopping cleanly, and the shipped prefect.yaml / demo config against the
flow's parameters."""

from __future__ import annotations

import contextvars
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from conftest import DATA, ROOT, rows

import flows  # noqa: F401  (sets Prefect's defaults before the test server starts)
from curate.errors import CurateError
from curate.store import Store
from flows import curate_flow, ingest_flow, score_flow

pytestmark = pytest.mark.usefixtures("one_thread")

SCORERS = ["heuristics", {"name": "embed", "text": "prompt"}]
SELECTIONS = [{"name": "diverse", "recipe": "selectors/kmeans-balanced.yaml", "budget": 20},
              {"name": "rand", "method": "random", "budget": 10}]
TASKS_PER_RUN = 1 + 2 + 2 + 2 + 1  # ingest, 2 scorers, 2 selections, 2 exports, report


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One Prefect test server (slow to start) with its own PREFECT_HOME; yields its API
    URL."""
    from prefect.settings import (PREFECT_API_URL, PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH,
                                  temporary_settings)
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    with temporary_settings(updates={PREFECT_HOME: str(home),
                                     PREFECT_LOCAL_STORAGE_PATH: str(home / "storage")}):
        with prefect_test_harness(server_startup_timeout=180):
            yield PREFECT_API_URL.value()


@pytest.fixture(scope="module")
def pipeline(prefect_server, tmp_path_factory):
    """A watched folder with two sample files, and the first run of curate_flow on it."""
    root = tmp_path_factory.mktemp("flow")
    watch = root / "incoming"
    watch.mkdir()
    for name in ("qa_math.jsonl", "solutions_labelled.jsonl"):
        shutil.copy(DATA / name, watch / name)
    params = dict(store=str(root / "store"), watch=[str(watch)], scorers=SCORERS,
                  selections=SELECTIONS, export={"format": "messages", "dir": str(root / "out")})
    return root, watch, params, curate_flow(**params)


def test_end_to_end(pipeline):
    root, _, params, first = pipeline
    store = Store(params["store"])
    (examples,), = rows(store, "SELECT count(*) FROM examples")
    assert first["files_ingested"] == 2 and first["rows_new"] == examples == 61 + 35
    assert first["rows_scored"] == {"heuristics": examples, "embed": examples}
    assert first["selections"] == ["diverse", "rand"] and first["cached_tasks"] == 0
    sizes = dict(rows(store, "SELECT name, size FROM selections"))
    assert sizes == {"diverse": 20, "rand": 10}
    for name, size in sizes.items():
        out = root / "out" / f"{name}.messages.jsonl"
        assert str(out) in first["exports"]
        assert len(out.read_text().splitlines()) == size
    assert first["report"] == str(store.root / "report.html")
    assert Path(first["report"]).is_file()
    (status, rows_new, selections), = rows(store, "SELECT status, rows_new, selections "
                                                  "FROM flow_runs")
    assert (status, rows_new, selections) == ("completed", examples, '["diverse", "rand"]')


def test_rerun_cached_then_incremental(pipeline):
    root, watch, params, first = pipeline
    store = Store(params["store"])

    again = curate_flow(**params)  # nothing new: every task answers from the cache
    assert again["cached_tasks"] == TASKS_PER_RUN
    assert (again["files_ingested"], again["rows_new"], again["selections"]) == (0, 0, [])
    assert again["rows_scored"] == {"heuristics": 0, "embed": 0}
    assert again["report"] == first["report"]

    (before,), = rows(store, "SELECT count(*) FROM examples")
    shutil.copy(DATA / "agent_traces.json", watch / "agent_traces.json")
    third = curate_flow(**params)
    (after,), = rows(store, "SELECT count(*) FROM examples")
    new = after - before
    assert new == 30  # 32 traces, one exact duplicate, one quarantined
    assert (third["files_ingested"], third["files_skipped"], third["rows_new"]) == (1, 2, new)
    assert third["rows_scored"] == {"heuristics": new, "embed": new}  # only the new rows
    for view in ("scores_heuristics", "scores_embed"):
        assert rows(store, f"SELECT count(*), count(DISTINCT id) FROM {view}") == \
            [(after, after)]
    assert third["selections"] == ["diverse", "rand"]
    assert rows(store, "SELECT DISTINCT pool_size FROM selections WHERE name = 'rand'") == \
        [(after,)]
    runs = rows(store, "SELECT files_ingested, rows_new, cached_tasks FROM flow_runs "
                       "ORDER BY started_at")
    assert runs == [(2, before, 0), (0, 0, TASKS_PER_RUN), (1, new, 0)]

    bad = {**params, "selections": [{"name": "x", "recipe": "selectors/no-such.yaml"}]}
    with pytest.raises(CurateError, match="no recipe file"):  # a user mistake: no retries
        curate_flow(**bad)
    (status, error), = rows(store, "SELECT status, error FROM flow_runs WHERE status <> "
                                   "'completed'")
    assert status == "failed" and "no recipe file" in error


LOCK_HOLDER = """
import sys, time
from pathlib import Path
from curate.store import Store, hold_lock
store = Store(sys.argv[1]); store._init()
with hold_lock(store.root / ".lock", 0, "busy"):
    print("held", flush=True)
    sys.stdin.readline()  # released when the test closes our stdin
"""


def test_busy_lock_is_retried(prefect_server, tmp_path, monkeypatch):
    """Another process holds the store lock; the ingest task fails on it, is retried,
    and succeeds once that process lets go (released only after the first failure)."""
    store = tmp_path / "store"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(store)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    monkeypatch.setenv("CURATE_LOCK_WAIT", "0.5")

    retried = threading.Event()
    messages = []

    class Watch(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())
            if "Retry 1/" in record.getMessage():
                retried.set()

    handler = Watch()
    logging.getLogger("prefect.task_runs").addHandler(handler)
    try:
        with ThreadPoolExecutor(1) as pool:
            ctx = contextvars.copy_context()  # the test server's settings
            future = pool.submit(ctx.run, ingest_flow, str(store), [str(DATA / "qa_math.jsonl")])
            assert retried.wait(120), messages
            holder.stdin.close()  # the other writer finishes: the lock is free
            assert holder.wait(30) == 0
            result = future.result(timeout=120)
    finally:
        logging.getLogger("prefect.task_runs").removeHandler(handler)
        if holder.poll() is None:
            holder.kill()
    assert any("StoreBusyError" in m for m in messages), messages
    assert result["rows_new"] == 61
    assert rows(Store(store), "SELECT status, rows_new FROM flow_runs") == [("completed", 61)]


def test_influence_scores_in_a_flow(prefect_server, pipeline, tiny):
    """The influence scorer needs the store (target, warm-up, gradients): the score
    task gives it, and a second run answers from the cache."""
    root, _, params, _ = pipeline
    spec = {"name": "influence", "target": "source:qa_math", "model": tiny, "warmup": 8,
            "checkpoints": 1, "dim": 64, "max_tokens": 128,
            "where": "source = 'solutions_labelled'"}
    scored = score_flow(params["store"], [spec])
    n = rows(Store(params["store"]),
             "SELECT count(*) FROM examples WHERE source = 'solutions_labelled'")[0][0]
    assert scored == {"influence": n}
    assert rows(Store(params["store"]), "SELECT count(influence) FROM scores_influence")[0][0] == n
    assert score_flow(params["store"], [spec]) == {"influence": 0}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_registers_schedule_runs_and_stops(prefect_server, tmp_path, sig):
    """`curate serve` registers curate/NAME with its cron schedule and parameters, runs a
    flow run of it (asked for through the API) in its process, and on the signal exits
    0 with the schedule paused."""
    from prefect.client.orchestration import get_client

    name = f"test-{sig.name.lower()}"
    watch, store = tmp_path / "incoming", tmp_path / "store"
    watch.mkdir()
    shutil.copy(DATA / "qa_math.jsonl", watch)
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PREFECT_HOME": str(tmp_path),
           "PREFECT_RUNNER_POLL_FREQUENCY": "2", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "curate.cli", "serve", str(watch), "--store", str(store),
         "--cron", "30 3 * * *", "--name", name, "--score", "heuristics", "--select",
         "r=random", "--budget", "5", "--no-report"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            if line.startswith("serving deployment"):
                break
        assert f"curate/{name}" in lines[-1], "".join(lines)
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name(f"curate/{name}")
            assert [s.schedule.cron for s in dep.schedules] == ["30 3 * * *"]
            assert dep.parameters["store"] == str(store)
            assert dep.parameters["watch"] == [str(watch)]
            if sig == signal.SIGTERM:  # once: the served process runs the flow
                client.create_flow_run_from_deployment(dep.id)
                deadline = time.monotonic() + 180
                while time.monotonic() < deadline and not list(store.glob("flow_runs/*/*")):
                    time.sleep(1)
                assert rows(Store(store), "SELECT status, rows_new, selections "
                                          "FROM flow_runs") == [("completed", 61, '["r"]')]
            proc.send_signal(sig)
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, "".join(lines) + out
            assert "stopped" in out
            assert client.read_deployment_by_name(f"curate/{name}").paused
    finally:
        if proc.poll() is None:
            proc.kill()


def test_shipped_deployments_and_demo_match_the_flow():
    """prefect.yaml's deployments and flows/demo.yaml name the flow and parameters that
    exist, and their cron schedules parse."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert spec["deployments"]
    for dep in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(ROOT / dep["entrypoint"]))
        assert flow.name == "curate"
        flow.validate_parameters(dep["parameters"])
        for s in dep["schedules"]:
            CronSchedule(cron=s["cron"], timezone=s.get("timezone"))
        for recipe in [s["recipe"] for s in dep["parameters"]["selections"] if "recipe" in s]:
            assert (ROOT / recipe).is_file()
    demo = yaml.safe_load((ROOT / "flows" / "demo.yaml").read_text())
    curate_flow.validate_parameters({**demo, "store": "demo-store"})


def test_run_options_become_flow_parameters(tmp_path):
    """`curate run --score` takes names and option mappings; both pass the flow's
    parameter validation; a mapping without a name fails naming the fix."""
    from curate.cli import _flow_params

    params = _flow_params(None, None, tmp_path / "store", [
        "heuristics", '{"name": "influence", "target": "source:gsm8k/test", "warmup": 64}',
        "{name: embed, text: prompt}"], ["r=random"], "10", None, None, None, None, True)
    assert params["scorers"] == ["heuristics", {"name": "influence",
                                                "target": "source:gsm8k/test", "warmup": 64},
                                 {"name": "embed", "text": "prompt"}]
    assert params["selections"] == [{"name": "r", "method": "random", "budget": "10"}]
    curate_flow.validate_parameters(params)
    for bad in ('{"target": "x"}', '{"name": '):
        with pytest.raises(CurateError, match="not a scorer name or a mapping with a name"):
            _flow_params(None, None, tmp_path, [bad], None, None, None, None, None, None, True)
