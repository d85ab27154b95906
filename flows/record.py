"""The `flow_runs` table: one row per flow run with what it changed in the store.

    <store>/flow_runs/<flow_run_id>/run.parquet   (the `flow_runs` view)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

from curate.schema import FLOW_RUN_SCHEMA
from curate.store import Store


@dataclass
class Changes:
    """What one flow run did; the flow fills it in as tasks finish."""

    files_ingested: int = 0
    files_skipped: int = 0
    rows_new: int = 0
    duplicates: int = 0
    quarantined: int = 0
    rows_scored: dict[str, int] = field(default_factory=dict)
    selections: list[str] = field(default_factory=list)
    exports: list[str] = field(default_factory=list)
    compare: str | None = None
    report: str | None = None
    cached_tasks: int = 0

    def add_ingest(self, result: dict, cached: bool) -> None:
        if cached:  # nothing was read: every file is as it was
            self.cached_tasks += 1
            return
        for k in ("files_ingested", "files_skipped", "rows_new", "duplicates", "quarantined"):
            setattr(self, k, getattr(self, k) + result[k])

    def summary(self) -> str:
        scored = ", ".join(f"{k} {v}" for k, v in self.rows_scored.items()) or "none"
        return (f"{self.files_ingested} file(s) ingested ({self.files_skipped} skipped), "
                f"{self.rows_new} new rows ({self.duplicates} duplicates, {self.quarantined} "
                f"quarantined); scored: {scored}; selections refreshed: "
                f"{', '.join(self.selections) or 'none'}; {self.cached_tasks} task(s) cached")


def record_flow_run(store: Store, flow: str, parameters: dict, changes: Changes,
                    started: float, error: BaseException | None = None) -> dict:
    """Write the flow run's row under the store lock (one rename) and return it."""
    from prefect.runtime import flow_run

    from curate import __version__

    run_id = str(flow_run.get_id() or f"local-{int(started)}")
    row = {
        "flow_run_id": run_id, "flow_run_name": flow_run.get_name(), "flow": flow,
        "status": "failed" if error is not None else "completed",
        "started_at": datetime.fromtimestamp(started, timezone.utc),
        "finished_at": datetime.now(timezone.utc), "seconds": round(time.time() - started, 3),
        "files_ingested": changes.files_ingested, "files_skipped": changes.files_skipped,
        "rows_new": changes.rows_new, "duplicates": changes.duplicates,
        "quarantined": changes.quarantined, "rows_scored": json.dumps(changes.rows_scored),
        "selections": json.dumps(changes.selections), "exports": json.dumps(changes.exports),
        "compare": changes.compare, "report": changes.report,
        "cached_tasks": changes.cached_tasks,
        "error": None if error is None else f"{type(error).__name__}: {error}",
        "parameters": json.dumps(parameters, default=str, sort_keys=True),
        "curate_version": __version__}
    with store.writer() as writer:
        staged = writer.stage(f"flow-run-{run_id}")
        pq.write_table(pa.Table.from_pylist([row], schema=FLOW_RUN_SCHEMA),
                       staged / "run.parquet")
        dest = store.folder("flow_runs") / run_id
        if dest.exists():  # a retried flow run records its last attempt
            import shutil

            shutil.rmtree(dest)
        writer.commit(staged, f"flow_runs/{run_id}")
    return row
