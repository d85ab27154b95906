"""Read one file into canonical example batches plus rejected rows."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import InputError
from curate.ingest.fast import flat_columns
from curate.ingest.formats import FORMATS, Format, detect, rename
from curate.ingest.sources import (CONTAINERS, RowError, Source, jsonl_records, raw_text,
                                   sniff_container, split_name)
from curate.schema import EXAMPLE_SCHEMA, MESSAGE, example_ids

DEFAULT_BATCH_ROWS = 16384
DEFAULT_MAX_RECORD_BYTES = 4 << 20  # a 4 MB example is ~1M tokens: not SFT data
DETECT_ROWS = 64  # records sampled for format auto-detection
# formats the vectorized JSONL path handles, with the field that holds the instruction
FAST_FLAT = {"alpaca": "instruction", "prompt_completion": "prompt", "qa": "question"}


@dataclass
class Batch:
    """Examples in the canonical schema (ids set) and the rows that failed, with reasons."""

    examples: pa.Table
    rejects: list[tuple[int, str, str]] = field(default_factory=list)  # (row, reason, raw)
    records: int = 0  # input records consumed (a multi-response record gives several examples)


class FileReader:
    """Streams one file (`format` auto-detected from its first records unless given).

    >>> reader = FileReader("train.jsonl")          # doctest: +SKIP
    >>> for batch in reader: ...                     # doctest: +SKIP
    """

    def __init__(self, path: str | Path, format: str = "auto", source: str | None = None,
                 mapping: dict[str, str] | None = None, batch_rows: int = DEFAULT_BATCH_ROWS,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError("no such file", path=str(path), fix="check the path")
        if format != "auto" and format not in FORMATS and format not in CONTAINERS:
            raise InputError(f"unknown format {format!r}", path=str(path),
                             fix=f"use auto or one of {', '.join(FORMATS)}")
        self.source = source or source_name(self.path)
        self.mapping = mapping or {}
        self.batch_rows = batch_rows
        self.max_record_bytes = max_record_bytes
        container, compression = split_name(self.path)
        if container is None:
            container = sniff_container(self.path, compression)
        self.container = container
        self.compression = compression
        self._records = Source(self.path, container, compression, max_record_bytes)
        self._format_arg = format
        self.format: Format | None = None

    @property
    def size(self) -> int:
        return self._records.size

    @property
    def bytes_read(self) -> int:
        return self._records.bytes_read

    def __iter__(self) -> Iterator[Batch]:
        if self.container == "jsonl":
            yield from self._iter_jsonl()
            return
        it = iter(self._records)
        head = list(itertools.islice(it, DETECT_ROWS))
        self._resolve_format(head)
        if self.format is None:
            return
        rows = itertools.chain(head, it)
        while True:
            chunk = list(itertools.islice(rows, self.batch_rows))
            if not chunk:
                return
            yield self._convert(chunk)

    def _iter_jsonl(self) -> Iterator[Batch]:
        limit = self.max_record_bytes
        for first, chunk in self._records.chunks():
            if self.format is None:
                head = list(itertools.islice(jsonl_records(first, chunk, limit), DETECT_ROWS))
                self._resolve_format(head)
            user_key = FAST_FLAT.get(self.format.name)
            fast = flat_columns(chunk, user_key, limit) if user_key and not self.mapping else None
            if fast is None:
                records = list(jsonl_records(first, chunk, limit))
                for i in range(0, len(records), self.batch_rows):
                    yield self._convert(records[i: i + self.batch_rows])
                continue
            lines, user, response, meta, slow_lines, starts, ends = fast
            batch = self._convert(list(jsonl_records(first, chunk, limit, only=slow_lines)))
            n = len(lines)
            contents = pa.concat_arrays([user, response]).take(
                np.stack([np.arange(n), np.arange(n) + n], axis=1).reshape(-1))
            roles = pa.array(np.tile(np.array(["user", "assistant"], dtype=object), n),
                             pa.string())
            messages = pa.ListArray.from_arrays(
                pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)),
                pa.StructArray.from_arrays([roles, contents], fields=list(MESSAGE)))
            table = pa.Table.from_arrays(
                [example_ids(messages), pa.array([self.source] * n, pa.string()),
                 pc.add(lines, first).cast(pa.int64()),
                 pa.array(["instruction"] * n, pa.string()), messages,
                 pa.nulls(n, EXAMPLE_SCHEMA.field("outcome").type), meta],
                schema=EXAMPLE_SCHEMA)
            if batch.examples.num_rows:
                table = pa.concat_tables([table, batch.examples])
                table = table.take(pc.sort_indices(table["source_row"]))
            yield Batch(table, batch.rejects, records=n + batch.records)

    def _resolve_format(self, head: list) -> None:
        if self._format_arg in FORMATS:
            self.format = FORMATS[self._format_arg]
        else:
            sample = [rename(r, self.mapping) for _, r, _ in head if isinstance(r, dict)]
            if not sample:
                # an empty file reads nothing; an all-broken one goes to quarantine
                self.format = FORMATS["alpaca"] if head else None
            else:
                self.format = detect(sample, str(self.path))

    def _convert(self, chunk: list[tuple[int, object, object]]) -> Batch:
        fmt, mapping, limit = self.format, self.mapping, self.max_record_bytes
        offsets, roles, contents = [0], [], []
        kinds, success, reward, metas, src_rows = [], [], [], [], []
        rejects: list[tuple[int, str, str]] = []
        dumps = orjson.dumps
        for row, rec, raw in chunk:
            try:
                if isinstance(rec, RowError):
                    raise rec
                if not isinstance(rec, dict):
                    raise RowError(f"wrong type: the record is {type(rec).__name__}, expected a JSON "
                                   "object")
                produced = fmt.map(rename(rec, mapping) if mapping else rec)
                for ex in produced:
                    if sum(len(c) for _, c in ex.messages) > limit:
                        raise RowError(f"too large: record text is over the {limit / 1e6:.1f} MB limit "
                                       "(raise it with --max-record-mb if intended)")
            except RowError as e:
                rejects.append((row, str(e), raw_text(raw, rec)))
                continue
            for ex in produced:
                for r, c in ex.messages:
                    roles.append(r)
                    contents.append(c)
                offsets.append(len(roles))
                kinds.append(ex.kind)
                success.append(ex.success)
                reward.append(ex.reward)
                metas.append(dumps(ex.extras, default=str,
                                   option=orjson.OPT_NON_STR_KEYS).decode() if ex.extras else None)
                src_rows.append(row)
        messages = pa.ListArray.from_arrays(
            pa.array(offsets, pa.int32()),
            pa.StructArray.from_arrays([pa.array(roles, pa.string()),
                                        pa.array(contents, pa.string())],
                                       fields=list(MESSAGE)))
        n = len(kinds)
        outcome_valid = pa.array([s is not None or r is not None for s, r in zip(success, reward)],
                                 pa.bool_())
        outcome = pa.StructArray.from_arrays(
            [pa.array(success, pa.bool_()), pa.array(reward, pa.float64())],
            fields=list(EXAMPLE_SCHEMA.field("outcome").type),
            mask=pa.compute.invert(outcome_valid))
        table = pa.Table.from_arrays(
            [example_ids(messages) if n else pa.array([], pa.string()),
             pa.array([self.source] * n, pa.string()),
             pa.array(src_rows, pa.int64()),
             pa.array(kinds, pa.string()),
             messages, outcome,
             pa.array(metas, pa.string())],
            schema=EXAMPLE_SCHEMA)
        return Batch(table, rejects, records=len(chunk))


_SPLIT_NAMES = {"train", "test", "dev", "validation", "valid", "eval", "data", "val"}


def source_name(path: Path) -> str:
    """Default source name: the file name without its format and compression suffixes;
    a bare split name (train, test, ...) is prefixed by its folder: `gsm8k/train`."""
    name = path.name
    for _ in range(3):
        stem, dot, ext = name.rpartition(".")
        if dot and ("." + ext.lower() in (".gz", ".zst", ".zstd", ".jsonl", ".ndjson", ".json",
                                          ".csv", ".tsv", ".parquet", ".pq")):
            name = stem
    if name.lower() in _SPLIT_NAMES and path.absolute().parent.name:
        name = f"{path.absolute().parent.name}/{name}"
    return name
