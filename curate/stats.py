"""Summaries of a store: rows per source and kind, lengths, quarantine and duplicates."""

from __future__ import annotations

from curate.store import Store

_QUERIES = {
    "totals": """
        SELECT (SELECT count(*) FROM examples) AS examples,
               (SELECT count(*) FROM duplicates) AS duplicates,
               (SELECT count(*) FROM quarantine) AS quarantined,
               (SELECT count(DISTINCT source) FROM examples) AS sources,
               (SELECT count(*) FROM ingest_runs) AS ingested_files""",
    "by_source": """
        SELECT source, kind, count(*) AS rows,
               round(avg(length(prompt)))::BIGINT AS prompt_chars_mean,
               round(avg(length(response)))::BIGINT AS response_chars_mean,
               quantile_cont(length(response), 0.5)::BIGINT AS response_chars_p50,
               max(length(response)) AS response_chars_max,
               round(avg(turns), 1) AS turns_mean,
               count(success) AS with_outcome,
               round(avg(success::INT), 3) AS success_rate
        FROM pairs GROUP BY source, kind ORDER BY rows DESC, source, kind""",
    "by_kind": """
        SELECT kind, count(*) AS rows, round(avg(length(response)))::BIGINT AS response_chars_mean
        FROM pairs GROUP BY kind ORDER BY rows DESC""",
    "quarantine": """
        SELECT regexp_extract(reason, '^[^:]*') AS reason, count(*) AS rows,
               min(path || ' row ' || source_row) AS example
        FROM quarantine GROUP BY 1 ORDER BY rows DESC""",
    "duplicates": """
        SELECT source, count(*) AS rows FROM duplicates GROUP BY source ORDER BY rows DESC""",
}


def store_stats(store: Store) -> dict[str, list[dict]]:
    """Each summary as a list of row dicts (JSON-ready)."""
    con = store.require().connect()
    try:
        out = {}
        for name, sql in _QUERIES.items():
            rel = con.sql(sql)
            cols = rel.columns
            out[name] = [dict(zip(cols, r)) for r in rel.fetchall()]
        return out
    finally:
        con.close()
