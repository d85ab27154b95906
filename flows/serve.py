"""`curate serve`: serve `curate_flow` on a schedule until Ctrl-C or SIGTERM.

Prefect's ephemeral server has no scheduler, so when PREFECT_API_URL is not set a local
Prefect server (`prefect server start`, database under PREFECT_HOME) is started for the
lifetime of the command and stopped with it. With PREFECT_API_URL set, the deployment is
registered on that server and this process runs the flow runs its scheduler creates.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from curate.errors import CurateError


@contextmanager
def prefect_api(say: Callable[[str], None], startup_timeout: float = 180):
    """Yield the API URL to use: PREFECT_API_URL when set, else that of a local server
    started here (with its scheduler) and stopped on the way out."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = PREFECT_API_URL.value()
    if url:
        yield url
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    say(f"PREFECT_API_URL is not set: starting a local Prefect server at {url} "
        "(its scheduler runs the schedule; it stops with this command)")
    from prefect.settings import PREFECT_HOME

    log = Path(PREFECT_HOME.value()) / "curate-serve-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    say(f"  its log: {log}")
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(port), "--no-ui", "--analytics-off"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(url, proc, startup_timeout, log)
        os.environ["PREFECT_API_URL"] = url  # flow-run subprocesses report here too
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            detail = log.read_text(errors="replace")[-2000:]
            raise CurateError(f"the local Prefect server exited ({proc.returncode}): {detail}\n"
                              "  fix: start one yourself (`prefect server start`) and set "
                              "PREFECT_API_URL=http://127.0.0.1:4200/api")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise CurateError(f"the local Prefect server did not answer within {timeout:.0f}s\n"
                      "  fix: start one yourself (`prefect server start`) and set "
                      "PREFECT_API_URL")


async def _until_signal(runner) -> None:
    """Run the runner until SIGTERM or Ctrl-C; both cancel it, so that it cleans up
    (pauses its schedules) on the way out."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    # start() installs this as the SIGTERM handler (its own exits at once, skipping that)
    runner.handle_sigterm = lambda *_: loop.call_soon_threadsafe(task.cancel)
    try:
        await runner.start()
    except asyncio.CancelledError:
        pass


def serve(parameters: dict[str, Any], name: str = "nightly", cron: str | None = None,
          interval: float | None = None, say: Callable[[str], None] = print) -> None:
    """Register `curate_flow` as deployment `curate/<name>` with the schedule and the
    parameters, then run its scheduled runs until interrupted (exits cleanly on SIGINT
    and SIGTERM; the schedule is paused on the way out)."""
    from prefect.deployments.runner import EntrypointType
    from prefect.runner import Runner

    from flows.pipeline import curate_flow

    if (cron is None) == (interval is None):
        raise CurateError("give one schedule\n  fix: --cron '0 2 * * *' (nightly at 02:00) "
                          "or --interval SECONDS")

    def stop(signum, frame):
        raise KeyboardInterrupt  # before the runner takes SIGTERM over: same clean stop

    signal.signal(signal.SIGTERM, stop)
    try:
        with prefect_api(say) as url:
            runner = Runner(name=f"curate-{name}", pause_on_shutdown=False)  # paused below
            deployment_id = runner.add_flow(
                curate_flow, name=name, cron=cron, interval=interval, parameters=parameters,
                entrypoint_type=EntrypointType.MODULE_PATH,
                description="curate: ingest what is new, score, select, export, report")
            when = f"cron {cron!r}" if cron else f"every {interval:g}s"
            try:
                say(f"serving deployment curate/{name} ({deployment_id}) on {when} against "
                    f"{url}; Ctrl-C or SIGTERM stops it")
                say(f"run it now from elsewhere: prefect deployment run 'curate/{name}'")
                asyncio.run(_until_signal(runner))
            except KeyboardInterrupt:
                pass
            finally:
                # however it stopped (even before the runner was up): no runs pile up
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                _pause(deployment_id, say)
    except KeyboardInterrupt:
        pass
    say("stopped")


def _pause(deployment_id, say: Callable[[str], None]) -> None:
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            client.pause_deployment(deployment_id)
        say("schedule paused (resume: serve again, or `prefect deployment resume`)")
    except Exception as e:  # the server may be gone already; stopping still succeeds
        say(f"could not pause the schedule: {e}")
