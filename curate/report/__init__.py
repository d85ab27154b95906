"""Run report: one self-contained HTML page summarizing a store (composition, scores,
embeddings map, dedup and quarantine, selections, compare leaderboard, token masks)."""

from curate.report.html import build_report

__all__ = ["build_report"]
