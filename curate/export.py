"""Export examples (all, a filtered set, or a saved selection) to files trainers read.

- `jsonl`: one canonical example per line, `meta` as a JSON object.
- `parquet`: the canonical schema; `datasets.load_dataset("parquet", ...)` reads it.
- `messages`: `{"messages": [{"role", "content"}, ...]}` per line, what TRL's SFTTrainer
  and `datasets.load_dataset("json", ...)` take as is. A selection's loss masks become
  axolotl's per-message fields (chat_template datasets with `message_field_training:
  training` and `message_field_training_detail: train_detail`): every assistant message
  of a turn-masked example gets `training` (true/false), and the last assistant message
  of a token-masked example gets `train_detail`, a list of `{begin_offset, end_offset,
  train}` character spans of its content (end inclusive) covering the whole content.

Rows stream from DuckDB in batches (memory stays flat) into a temp file that is renamed
into place when complete: an interrupted export leaves no partial file behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from curate.chat import assistant_turns
from curate.errors import CurateError, QueryError
from curate.store import Store, publish

EXPORT_FORMATS = ("jsonl", "parquet", "messages")
_BATCH = 8192


@dataclass
class ExportReport:
    path: str
    format: str
    rows: int


def export_query(store: Store, selection: str | None = None, where: str | None = None) -> str:
    """The SQL that picks the exported rows, in order (selection rank, else as stored)."""
    if where:
        from curate.safety import check_expression

        check_expression(where, "the --where filter")
    if selection is not None:
        members = str(store.saved_selection(selection) / "members.parquet").replace("'", "''")
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
    annotate = _mask_annotator(store, selection) if format == "messages" and selection else None
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
                    f.write(_jsonl(batch, format, annotate))
                    rows += batch.num_rows
        publish(tmp, out)
    finally:
        con.close()
        tmp.unlink(missing_ok=True)
    return ExportReport(str(out), format, rows)


def _jsonl(batch: pa.RecordBatch, format: str, annotate: Callable | None = None) -> bytes:
    dumps = orjson.dumps
    if format == "messages":
        rows = batch.column("messages").to_pylist()
        if annotate is not None:
            rows = [annotate(i, m) for i, m in zip(batch.column("id").to_pylist(), rows)]
        return b"".join(dumps({"messages": m}) + b"\n" for m in rows)
    lines = []
    for row in batch.to_pylist():
        meta = row.get("meta")
        row["meta"] = orjson.loads(meta) if meta else None
        lines.append(dumps(row) + b"\n")
    return b"".join(lines)


def _mask_annotator(store: Store, selection: str) -> Callable | None:
    """(id, messages) -> messages with axolotl's `training` / `train_detail` fields from
    the selection's masks; None when it has none."""
    import json

    from curate.selection import load_masks

    masks = load_masks(store, selection)
    if masks is None:
        return None
    by_id = {r["id"]: r for r in masks.to_pylist()}
    tokenizer = None
    if any(r["tokens"] is not None for r in by_id.values()):
        from transformers import AutoTokenizer

        from curate.models import resolve

        params = json.loads((store.folder("selections") / selection / "manifest.json")
                            .read_text())["params"]
        model = params.get("mask_model")
        if not model:
            raise CurateError(f"selection {selection!r} has token masks but its manifest names "
                              "no mask_model (the tokenizer they refer to)\n  fix: export with "
                              "--format jsonl or parquet, and read the masks from SQL "
                              "(selection_masks)")
        tokenizer = AutoTokenizer.from_pretrained(str(resolve(model, "causal-lm")))

    def annotate(example_id: str, messages: list[dict]) -> list[dict]:
        row = by_id.get(example_id)
        if row is None:
            return messages
        messages = [dict(m) for m in messages]
        assistant = assistant_turns(messages)
        if row["turns"] is not None:
            for j, flag in zip(assistant, row["turns"]):
                messages[j]["training"] = bool(flag)
        if row["tokens"] is not None and assistant:
            messages[assistant[-1]]["train_detail"] = _char_spans(
                tokenizer, messages, row["tokens"], example_id)
        return messages

    return annotate


def _char_spans(tokenizer, messages: list[dict], mask: list[int], example_id: str) -> list[dict]:
    """The token mask of the last assistant turn as runs of its content characters:
    [{begin_offset, end_offset (inclusive), train}], tokenized in context as in training.
    The end-of-turn entry has no characters (axolotl's `train_on_eos` governs it)."""
    import numpy as np

    from curate.tokens import render_spans

    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    text, spans = render_spans(tokenizer, turns)
    a, b, _ = spans[-1]
    offsets = np.asarray(tokenizer(text, add_special_tokens=False,
                                   return_offsets_mapping=True)["offset_mapping"]).reshape(-1, 2)
    inside = np.flatnonzero((offsets[:, 0] < b) & (offsets[:, 1] > a))
    if len(mask) != len(inside) + 1:
        raise CurateError(f"token mask of example {example_id} has {len(mask)} entries, but "
                          f"its last assistant turn has {len(inside) + 1} tokens under the "
                          "selection's mask_model\n  fix: the masks were built with another "
                          "tokenizer; rebuild the selection")
    starts = np.maximum(offsets[inside, 0], a) - a
    out: list[dict] = []
    for k, keep in enumerate(mask[:-1]):
        if out and out[-1]["train"] == bool(keep):
            continue
        if out:
            out[-1]["end_offset"] = int(starts[k]) - 1
        out.append({"begin_offset": 0 if not out else int(starts[k]), "end_offset": b - a - 1,
                    "train": bool(keep)})
    return out
