"""Read one file into canonical example batches plus rejected rows."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import InputError
from curate.ingest.fast import Flat, map_flat
from curate.ingest.formats import (FORMATS, Format, apply_mapping, detect, is_plain, rename,
                                   rename_columns, suggest_fix)
from curate.ingest.sources import (CONTAINERS, HEAD_BYTES, RowError, Source, jsonl_records,
                                   layout_of, parse_jsonl, raw_text, sniff_container,
                                   split_name)
from curate.schema import EXAMPLE_SCHEMA, MESSAGE, example_ids
from curate.units import format_bytes

DEFAULT_BATCH_ROWS = 16384
DEFAULT_MAX_RECORD_BYTES = 4 << 20  # a 4 MiB example is ~1M tokens: not SFT data
DETECT_ROWS = 32  # records sampled for format auto-detection
# formats the vectorized JSONL path handles, with the field that holds the instruction
FAST_FLAT = {"alpaca": "instruction", "prompt_completion": "prompt", "qa": "question"}


@dataclass
class Batch:
    """Examples in the canonical schema (ids set) and the rows that failed, with reasons."""

    examples: pa.Table
    rejects: list[tuple[int, str, str]] = field(default_factory=list)  # (row, reason, raw)
    records: int = 0  # input records consumed (a multi-response record gives several examples)
    fields: Counter = field(default_factory=Counter)  # "user=instruction, response=output": n
    bytes_read: int = 0  # of the file, when the batch was read by an engine worker


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
        if format != "auto" and format not in FORMATS:
            hint = " (the file type comes from the name: .jsonl, .json, .csv, .parquet)" \
                if format in CONTAINERS else ""
            raise InputError(f"unknown format {format!r}{hint}", path=str(path),
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
        self._records = Source(self.path, container, compression, max_record_bytes,
                               is_record=self._is_record)
        self._format_arg = format
        self.format: Format | None = None

    @property
    def size(self) -> int:
        return self._records.size

    @property
    def bytes_read(self) -> int:
        return self._records.bytes_read

    def __iter__(self) -> Iterator[Batch]:
        for chunk in self._records.chunks():
            if self.format is None:
                self._resolve_format(list(itertools.islice(chunk.records(), DETECT_ROWS)))
                if self.format is None:
                    return
            user_key = FAST_FLAT.get(self.format.name) if is_plain(self.mapping) else None
            parsed = chunk.table() if user_key else None
            flat = None
            if parsed is not None:
                table, rows = parsed
                if self.mapping:
                    table = rename_columns(table, self.mapping)
                flat = map_flat(table, user_key, self.max_record_bytes)
            if flat is None:
                records = list(chunk.records())
                for i in range(0, len(records), self.batch_rows):
                    yield self._convert(records[i: i + self.batch_rows])
                continue
            batch = self._convert(list(chunk.records(flat.slow)))
            n = len(flat.keep)
            table = flat_table(flat, pa.array([self.source] * n, pa.string()), rows[flat.keep])
            if n:
                batch.fields[self._mapped_fields(flat.fields) if self.mapping else flat.fields] += n
            yield Batch(_merge(table, batch.examples), batch.rejects, records=n + batch.records,
                        fields=batch.fields)

    def _is_record(self, doc: dict) -> bool:
        """Whether a JSON document that is one object is itself a record: its fields
        match a format (else its values are the records)."""
        doc = rename(doc, self.mapping)
        return any(f.detect(doc) for f in FORMATS.values())

    def detect_from(self, data: bytes) -> None:
        """Set `format` from the first lines of a JSON-lines file already in memory
        (left unset when the content is not JSON lines: the file is read alone)."""
        if layout_of(data[:HEAD_BYTES], len(data) > HEAD_BYTES, "jsonl") != "lines":
            return
        lines = data.split(b"\n", DETECT_ROWS // 2)[:DETECT_ROWS // 2]  # flat files fail fast
        self._resolve_format(list(jsonl_records(0, b"\n".join(lines), self.max_record_bytes)))

    def _resolve_format(self, head: list) -> None:
        if self._format_arg in FORMATS:
            self.format = FORMATS[self._format_arg]
        else:
            sample = [rename(r, self.mapping) for _, r, _ in head if isinstance(r, dict)]
            if not sample:
                # an empty file reads nothing; an all-broken one goes to quarantine
                self.format = FORMATS["alpaca"] if head else None
            else:
                try:
                    self.format = detect(sample, str(self.path))
                except InputError as e:
                    fix = suggest_fix(self, [orjson.dumps(r, default=str) for _, r, _ in head
                                             if isinstance(r, dict)])
                    if fix is None:
                        raise
                    raise InputError(str(e).split("\n")[0].split(": ", 1)[1], path=str(self.path),
                                     fix=f"read it with {fix}") from None

    def _convert(self, chunk: list[tuple[int, object, object]]) -> Batch:
        fmt, mapping, limit = self.format, self.mapping, self.max_record_bytes
        offsets, roles, contents = [0], [], []
        kinds, success, reward, metas, src_rows = [], [], [], [], []
        rejects: list[tuple[int, str, str]] = []
        fields: Counter = Counter()
        dumps = orjson.dumps
        for row, rec, raw in chunk:
            try:
                if isinstance(rec, RowError):
                    raise rec
                if not isinstance(rec, dict):
                    raise RowError(f"wrong type: the record is {type(rec).__name__}, expected a JSON "
                                   "object")
                produced = [ex for r in apply_mapping(rec, mapping) for ex in fmt.map(r)]
                for ex in produced:
                    if sum(len(c) for _, c in ex.messages) > limit:
                        raise RowError(f"too large: record text is over the {format_bytes(limit)} "
                                       "limit (raise it with --max-record-mb if intended)")
            except RowError as e:
                rejects.append((row, str(e), raw_text(raw, rec)))
                continue
            except RecursionError:
                rejects.append((row, "too deep: the record nests deeper than Python can follow",
                                raw_text(raw, None)))
                continue
            for ex in produced:
                fields[ex.fields] += 1
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
        if mapping:
            fields = Counter({self._mapped_fields(k): v for k, v in fields.items()})
        return Batch(table, rejects, records=len(chunk), fields=fields)

    def _mapped_fields(self, fields: str) -> str:
        """`user=instruction, response=response` in the file's own names under --map."""
        def name(field: str) -> str:
            return self.mapping.get(field, field)

        return ", ".join(f"{part}={'+'.join(name(f) for f in names.split('+'))}"
                         for part, _, names in (p.partition("=") for p in fields.split(", ")))


_SPLIT_NAMES = {"train", "test", "dev", "validation", "valid", "eval", "data", "val"}


def flat_table(flat: Flat, source: pa.Array, rows: np.ndarray) -> pa.Table:
    """Canonical rows from the vectorized path: [user, assistant] turns, ids hashed."""
    n = len(flat.keep)
    contents = pa.concat_arrays([flat.user, flat.response]).take(
        np.stack([np.arange(n), np.arange(n) + n], axis=1).reshape(-1))
    roles = pa.DictionaryArray.from_arrays(
        pa.array(np.tile(np.array([0, 1], np.int8), n)), ["user", "assistant"]).cast(pa.string())
    messages = pa.ListArray.from_arrays(
        pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)),
        pa.StructArray.from_arrays([roles, contents], fields=list(MESSAGE)))
    return pa.Table.from_arrays(
        [example_ids(messages), source, pa.array(rows, pa.int64()),
         pa.array(["instruction"] * n, pa.string()), messages,
         pa.nulls(n, EXAMPLE_SCHEMA.field("outcome").type), flat.meta],
        schema=EXAMPLE_SCHEMA)


def _merge(fast: pa.Table, slow: pa.Table) -> pa.Table:
    """Both paths' rows of one chunk, back in file order."""
    if not slow.num_rows:
        return fast
    table = pa.concat_tables([fast, slow])
    return table.take(pc.sort_indices(table["source_row"]))


def read_bundle(readers: list[FileReader], datas: list[bytes]) -> list[Batch] | None:
    """Many small JSON-lines files of one flat format, mapped in one vectorized pass.

    A directory of small files (T0's 294 templates) would otherwise pay the fixed cost
    of the vectorized path per file. Gives one Batch per file, equal to reading each
    alone; None when the bundle does not fit the vectorized path (read them one by one).
    """
    fmt = readers[0].format
    user_key = FAST_FLAT.get(fmt.name) if fmt else None
    limit = readers[0].max_record_bytes
    if user_key is None or any(r.format is not fmt or r.mapping for r in readers):
        return None
    datas = [d if not d or d.endswith(b"\n") else d + b"\n" for d in datas]
    starts = np.cumsum([0] + [d.count(b"\n") for d in datas])
    parsed = parse_jsonl(b"".join(datas), limit)
    if parsed is None:
        return None
    table, lines = parsed
    flat = map_flat(table, user_key, limit)
    if flat is None:
        return None
    kept = lines[flat.keep]
    file_of = np.searchsorted(starts, kept, side="right") - 1
    sources = pa.array([r.source for r in readers], pa.string()).take(pa.array(file_of))
    fast = flat_table(flat, sources, kept - starts[file_of])
    bounds = np.searchsorted(file_of, np.arange(len(readers) + 1))
    slow_lines = lines[flat.slow]
    slow_file = np.searchsorted(starts, slow_lines, side="right") - 1
    out = []
    for i, reader in enumerate(readers):
        local = slow_lines[slow_file == i] - starts[i]
        slow = reader._convert(list(jsonl_records(0, datas[i], limit, local)))
        part = fast.slice(bounds[i], bounds[i + 1] - bounds[i])
        if part.num_rows:
            slow.fields[flat.fields] += part.num_rows
        out.append(Batch(_merge(part, slow.examples), slow.rejects, fields=slow.fields,
                         records=part.num_rows + slow.records))
    return out


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
