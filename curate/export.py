"""Export examples (all, a filtered set, or a saved selection) to files trainers read.

- `jsonl`: one canonical example per line, `meta` as a JSON object.
- `parquet`: the canonical schema; `datasets.load_dataset("parquet", ...)` reads it.
- `messages`: `{"messages": [{"role", "content"}, ...]}` per line, what TRL's SFTTrainer
  and `datasets.load_dataset("json", ...)` take as is.

Rows stream from DuckDB in batches (memory stays flat) into a temp file that is renamed
into place when complete: an interrupted export leaves no partial file behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError, QueryError
from curate.store import Store

EXPORT_FORMATS = ("jsonl", "parquet", "messages")
_BATCH = 8192


@dataclass
class ExportReport:
    path: str
    format: str
    rows: int


def selection_names(store: Store) -> list[str]:
    root = store.root / "selections"
    return sorted(p.name for p in root.iterdir() if (p / "members.parquet").is_file()) \
        if root.is_dir() else []


def export_query(store: Store, selection: str | None = None, where: str | None = None) -> str:
    """The SQL that picks the exported rows, in order (selection rank, else as stored)."""
    if selection is not None:
        names = selection_names(store)
        if selection not in names:
            raise CurateError(
                f"no selection named {selection!r} in {store.root}"
                + (f" (there are: {', '.join(names)})" if names else " (there are none yet)")
                + "\n  fix: list them with `curate selections`; make one with `curate select`")
        members = str(store.root / "selections" / selection / "members.parquet").replace("'", "''")
        sql = (f"SELECT e.* FROM examples e JOIN read_parquet('{members}') s USING (id)"
               + (f" WHERE ({where})" if where else "") + " ORDER BY s.rank")
    else:
        sql = "SELECT * FROM examples" + (f" WHERE ({where})" if where else "")
    return sql


def export(store: Store, out: str | Path, format: str = "jsonl", selection: str | None = None,
           where: str | None = None) -> ExportReport:
    """Write the chosen examples to `out`; returns the row count."""
    import duckdb

    if format not in EXPORT_FORMATS:
        raise CurateError(f"unknown export format {format!r}\n  fix: use one of "
                          f"{', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    if out.is_dir():
        raise CurateError(f"{out} is a directory\n  fix: give a file path, e.g. {out}/export.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    sql = export_query(store.require(), selection, where)
    con = store.connect()
    tmp = out.with_name(f".{out.name}.partial")
    rows = 0
    try:
        try:
            reader = con.sql(sql).to_arrow_reader(_BATCH)
        except duckdb.Error as e:
            raise QueryError(f"the --where filter failed: {e}\n  fix: write a SQL boolean "
                             "expression over the examples columns (id, source, source_row, "
                             "kind, messages, outcome, meta)") from e
        if format == "parquet":
            with pq.ParquetWriter(tmp, reader.schema, compression="zstd") as w:
                for batch in reader:
                    w.write_batch(batch)
                    rows += batch.num_rows
        else:
            with open(tmp, "wb") as f:
                for batch in reader:
                    f.write(_jsonl(batch, format))
                    rows += batch.num_rows
        os.replace(tmp, out)
    finally:
        con.close()
        tmp.unlink(missing_ok=True)
    return ExportReport(str(out), format, rows)


def _jsonl(batch: pa.RecordBatch, format: str) -> bytes:
    dumps = orjson.dumps
    if format == "messages":
        return b"".join(dumps({"messages": m}) + b"\n"
                        for m in batch.column("messages").to_pylist())
    lines = []
    for row in batch.to_pylist():
        meta = row.get("meta")
        row["meta"] = orjson.loads(meta) if meta else None
        lines.append(dumps(row) + b"\n")
    return b"".join(lines)
