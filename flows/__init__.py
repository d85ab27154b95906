"""Prefect flows over curate: one flow per stage (ingest, score, select, export,
evaluate, compare) and `curate_flow`, the whole pipeline on a watched folder, with
deployments in prefect.yaml and `curate serve` / `curate run` on the command line.
See flows/README.md."""

import os

# The server Prefect starts for local runs would otherwise try to send usage
# heartbeats to prefect.io (machines here are offline); a user setting wins.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Its first start creates the database; on a busy small machine that can pass the 20 s
# Prefect waits by default.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from flows.pipeline import (compare_flow, curate_flow, evaluate_flow, export_flow,  # noqa: E402
                            ingest_flow, score_flow, select_flow)

__all__ = ["compare_flow", "curate_flow", "evaluate_flow", "export_flow", "ingest_flow",
           "score_flow", "select_flow"]
