"""Containers: read JSONL, JSON arrays, CSV and Parquet files, plain or compressed
(.gz, .zst), as a stream of `Chunk`s in bounded memory.

A chunk holds a run of records twice over: as an Arrow table where the container parses
to one cheaply (Arrow's JSON and CSV readers, Parquet batches), for the vectorized path,
and as raw records `(row, record, raw)` for the per-row path: the record's 0-based
position in the file, the parsed record (a dict) or a `RowError`, and the raw bytes or
text kept in quarantine.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pajson

from curate.errors import InputError

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
CONTAINERS = ("jsonl", "json", "csv", "parquet")
_EXT = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv",
        ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class RowError(Exception):
    """One record cannot become an example; the reason goes to quarantine."""


Record = tuple[int, object, object]  # (row, dict or RowError, raw bytes/text or None)
WHOLE_JSON_BYTES = 64 << 20  # JSON arrays up to this size are parsed in one call
CHUNK_BYTES = 4 << 20
CHUNK_ROWS = 16384


class Chunk:
    """Consecutive records of one file.

    `table()` gives them as one Arrow table with their file positions (None when the
    container cannot), parsed on first use only, since formats read per row never need
    it; `records(positions)` yields the raw records at those table positions (all records
    when None) for the per-row path.
    """

    def __init__(self, load: Callable[[], tuple[pa.Table, np.ndarray] | None],
                 records: Callable[[object, Iterable[int] | None], Iterator[Record]]):
        self._load, self._records = load, records
        self._table: tuple[pa.Table, np.ndarray] | None = None
        self._loaded = False

    def table(self) -> tuple[pa.Table, np.ndarray] | None:
        if not self._loaded:
            self._table, self._loaded = self._load(), True
        return self._table

    def records(self, positions: Iterable[int] | None = None) -> Iterator[Record]:
        return self._records(self._table, positions)


def split_name(path: Path) -> tuple[str | None, str | None]:
    """(container, compression) from the file name; container None when unknown."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = None
    if suffixes and suffixes[-1] in COMPRESSIONS:
        compression = COMPRESSIONS[suffixes.pop()]
    container = _EXT.get(suffixes[-1]) if suffixes else None
    return container, compression


def open_bytes(path: Path, compression: str | None, raw: io.IOBase | None = None
               ) -> io.BufferedIOBase:
    """A binary stream of the decompressed file (over `raw` when given, for progress).

    A decompression failure (a truncated or damaged file) or a compression bomb raises
    `InputError` naming the file, how far it got and the cause (see `_Decompressed`)."""
    raw = raw if raw is not None else open(path, "rb", buffering=1 << 20)
    if compression == "gzip":
        inner = gzip.GzipFile(fileobj=raw, mode="rb")
    elif compression == "zstd":
        import zstandard  # noqa: F401  (missing package: fail here, by its name)

        inner = _ZstdFrames(raw)  # stream_reader would end quietly at a truncated frame
    else:
        return raw
    return io.BufferedReader(_Decompressed(inner, raw, path, compression),
                             buffer_size=1 << 20)


class _ZstdFrames(io.RawIOBase):
    """Zstandard frames one after another, decompressed from small slices of input (so
    that no call inflates more than ~32 MiB, even for a bomb), and an `EOFError` when
    the input ends inside a frame: a truncated file is never read as a shorter one."""

    FEED = 1 << 10

    def __init__(self, raw):
        import zstandard

        self._raw = raw
        self._zstd = zstandard.ZstdDecompressor()
        self._obj = self._zstd.decompressobj()
        self._pending = memoryview(b"")
        self._in_frame = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not len(self._pending):
            chunk = self._raw.read(self.FEED)
            if not chunk:
                if self._in_frame:
                    raise EOFError("the zstd stream ends inside a frame: the file is truncated")
                return 0
            self._pending = memoryview(self._feed(chunk))
        n = min(len(b), len(self._pending))
        b[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _feed(self, data: bytes) -> bytes:
        out = []
        while data:
            self._in_frame = True
            out.append(self._obj.decompress(data))
            if not self._obj.eof:
                break
            data = self._obj.unused_data  # the next frame starts here
            self._obj = self._zstd.decompressobj()
            self._in_frame = False
        return b"".join(out)

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


# A compressed file that inflates more than BOMB_RATIO times, past BOMB_FLOOR bytes, is
# refused: text corpora compress 3-20x; a ratio over 1000 is zeros or one repeated line.
BOMB_RATIO = 1000
BOMB_FLOOR = 16 << 20


class _Decompressed(io.RawIOBase):
    """A decompressing stream whose failures are `InputError`s with the offset and the
    cause, and which stops at a compression bomb."""

    def __init__(self, inner, raw, path: Path, compression: str):
        self._inner, self._raw, self._path, self._compression = inner, raw, path, compression
        self.out = 0  # decompressed bytes given so far

    def readable(self) -> bool:
        return True

    def _read_in(self) -> int:
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def readinto(self, b) -> int:
        try:
            n = self._inner.readinto(b)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - EOFError, zlib.error, BadGzipFile, ZstdError
            raise self._error(e) from e
        self.out += n or 0
        read_in = self._read_in()
        if self.out > BOMB_FLOOR and self.out > BOMB_RATIO * max(read_in, 1):
            from curate.units import format_bytes

            raise InputError(
                f"compression bomb: {format_bytes(read_in)} of {self._compression} data "
                f"inflated to over {format_bytes(self.out)} (ratio over {BOMB_RATIO}:1); "
                "reading stopped", path=str(self._path),
                fix="this is not a text corpus (zeros or one repeated line); decompress it "
                "yourself and check the content if it is intended")
        return n

    def _error(self, e: Exception) -> InputError:
        from curate.units import format_bytes

        tool = "gzip -t" if self._compression == "gzip" else "zstd -t"
        cause = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        return InputError(
            f"cannot decompress ({self._compression}) after {format_bytes(self._read_in())} "
            f"of the compressed file ({format_bytes(self.out)} decompressed): {cause}",
            path=str(self._path),
            fix=f"the file is incomplete or damaged: download it again (check it with "
            f"`{tool} {self._path}`)")

    def close(self) -> None:
        try:
            self._inner.close()
            self._raw.close()
        finally:
            super().close()


class Source:
    """The records of one file; `bytes_read` tells how far through the file it is."""

    def __init__(self, path: Path, container: str, compression: str | None,
                 max_record_bytes: int, is_record: Callable[[dict], bool] | None = None):
        self.path, self.container, self.compression = path, container, compression
        self.max_record_bytes = max_record_bytes
        self.size = os.stat(path).st_size
        self._raw: io.IOBase | None = None
        # whether a JSON document that is one object is a record itself (else its values
        # are: records keyed by id, or lists of records)
        self.is_record = is_record or (lambda doc: False)
        self.layout: str | None = None  # JSON files: array, lines or document

    @property
    def bytes_read(self) -> int:
        try:
            return self._raw.tell() if self._raw is not None and not self._raw.closed else 0
        except (OSError, ValueError):
            return 0

    def _open(self) -> io.BufferedIOBase:
        self._raw = open(self.path, "rb", buffering=1 << 20)
        return open_bytes(self.path, self.compression, self._raw)

    def _byte_chunks(self, f: io.BufferedIOBase) -> Iterator[tuple[int, bytes | _Oversized]]:
        """JSON lines: (row of the first line, bytes of whole lines), or (row,
        `_Oversized`) for a line longer than the record limit: it is not kept whole (a
        sample is), the rest of it is skipped up to the next newline, so memory stays
        bounded by the limit plus a chunk whatever the line lengths."""
        row, rest = 0, b""
        limit = self.max_record_bytes
        big: _Oversized | None = None  # the oversized line being skipped
        while True:
            block = f.read(CHUNK_BYTES)
            if big is not None:
                nl = block.find(b"\n")
                if block and nl < 0:
                    big.size += len(block)
                    continue
                big.size += nl if block else 0
                yield row, big
                row, big = row + 1, None
                block = block[nl + 1:]
                if not block:
                    if not rest and nl < 0:
                        return
                    continue
            if not block:
                if rest:
                    yield row, rest
                return
            block = rest + block if rest else block
            cut = block.rfind(b"\n")
            if cut < 0:  # one line longer than a chunk: keep reading, up to the limit
                rest = block
                if len(rest) > limit:
                    big, rest = _Oversized(len(rest), rest[:SAMPLE_BYTES]), b""
                continue
            chunk, rest = block[: cut + 1], block[cut + 1:]
            yield row, chunk
            row += chunk.count(b"\n")
            if len(rest) > limit:
                big, rest = _Oversized(len(rest), rest[:SAMPLE_BYTES]), b""

    def chunks(self) -> Iterator[Chunk]:
        if self.container in ("jsonl", "json"):
            # the content decides, not the name: JSON lines named .json, a JSON array or
            # a pretty-printed document named .jsonl, one object of records, ...
            self.layout = json_layout(self.path, self.compression, self.container)
            return self._jsonl_chunks() if self.layout == "lines" else self._json_chunks()
        if self.container == "csv":
            return _table_chunks(_csv_batches(self.path, self._open, self.compression))
        if self.container == "parquet":
            return _table_chunks(_parquet_batches(self.path))
        raise InputError(f"unknown container {self.container!r}", path=str(self.path))

    def _jsonl_chunks(self) -> Iterator[Chunk]:
        limit = self.max_record_bytes

        def load(first: int, data: bytes):
            parsed = parse_jsonl(data, limit)
            return None if parsed is None else (parsed[0], parsed[1] + first)

        def records(first: int, data: bytes, parsed, pos):
            lines = None if pos is None else (parsed[1] - first)[np.asarray(pos, dtype=np.int64)]
            return jsonl_records(first, data, limit, lines)

        with self._open() as f:
            for first, data in self._byte_chunks(f):
                if isinstance(data, _Oversized):
                    yield Chunk(lambda: None, lambda parsed, pos, rec=(
                        first, _too_big(data.size, limit, sampled=True), data.sample):
                        iter([rec]))
                    continue
                yield Chunk(lambda first=first, data=data: load(first, data),
                            lambda parsed, pos, first=first, data=data:
                            records(first, data, parsed, pos))

    def _json_chunks(self) -> Iterator[Chunk]:
        """A JSON array, or one JSON object (see `document_records`). Documents up to
        WHOLE_JSON_BYTES parse in one orjson call; larger ones stream through ijson."""
        items: Iterator[Record] | None = None
        if self.compression is None and self.size <= WHOLE_JSON_BYTES:
            with self._open() as f:
                data = f.read()
            try:
                parsed = orjson.loads(data)
            except orjson.JSONDecodeError:
                parsed = _lenient_json(data)  # else the streaming parser finds the break
            if isinstance(parsed, list):
                items = (_checked(i, r) for i, r in enumerate(parsed))
            elif isinstance(parsed, dict):
                items = (_checked(row, rec) if raw is None else (row, rec, raw) for row, rec, raw
                         in document_records(iter(parsed.items()), parsed, self.is_record))
            elif parsed is not None:
                raise InputError(f"the file holds one JSON {type(parsed).__name__}, not records",
                                 path=str(self.path),
                                 fix="write the records as a JSON array or as JSON lines")
        if items is None:
            items = _json_array(self._open(), self.path, self.compression) \
                if self.layout == "array" else \
                _json_object(self._open(), self.path, self.compression, self.is_record)
        while True:
            batch = []
            for rec in items:
                batch.append(rec)
                if len(batch) >= CHUNK_ROWS:
                    break
            if not batch:
                return

            def load(batch=batch):
                table = records_table([r for _, r, _ in batch])
                return None if table is None else (
                    table, np.array([row for row, _, _ in batch], np.int64))

            yield Chunk(load, lambda parsed, pos, batch=batch: iter(batch) if pos is None
                        else (batch[int(p)] for p in pos))


def _lenient_json(data: bytes) -> object | None:
    """A document orjson refuses only for a lone surrogate escape (`"\\ud800"`), parsed
    by Python's json so that the records holding one can be quarantined one by one
    (ijson would turn it into `?` unseen); None for any other break."""
    import json
    import re

    if not re.search(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}", data):
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None


def _checked(row: int, record: object) -> Record:
    """A parsed record, or a RowError when its text is not valid Unicode."""
    try:
        orjson.dumps(record)
    except (orjson.JSONEncodeError, TypeError) as e:
        if "surrogate" in str(e):
            return row, RowError("invalid UTF-8: a lone surrogate (\\ud800-\\udfff) in the "
                                 "record's text"), repr(record).encode("utf-8", "backslashreplace")
    return row, record, None


HEAD_BYTES = 1 << 20  # read to tell a JSON file's layout


def json_layout(path: Path, compression: str | None, container: str) -> str:
    """How a JSON file holds its records, from its first bytes: `array` (a JSON array),
    `lines` (one JSON value per line) or `document` (one JSON object, possibly over many
    lines). The name's extension only breaks ties."""
    with open_bytes(path, compression) as f:
        head = f.read(HEAD_BYTES)
        more = bool(f.read(1))
    return layout_of(head, more, container)


def layout_of(head: bytes, more: bool, container: str) -> str:
    """`json_layout` from the file's first bytes (`more`: the file goes on after them)."""
    head = head.lstrip()
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:].lstrip()
    if head.startswith(b"["):
        return "array"
    if not head.startswith(b"{"):
        return "lines" if container == "jsonl" else "array"
    cut = head.find(b"\n")
    if cut < 0:  # one line: the whole file, or a first line longer than the head
        return "document" if container == "json" else "lines"
    try:
        orjson.loads(head[:cut])  # the first line is one whole JSON value
    except orjson.JSONDecodeError:
        return "document"  # an object spread over lines: pretty-printed JSON
    if head[cut:].strip() or more:
        return "lines"  # a second value follows the first: JSON lines, whatever the name
    return "document" if container == "json" else "lines"


def document_records(pairs: Iterator[tuple[str, object]], whole: dict | None,
                     is_record: Callable[[dict], bool]) -> Iterator[Record]:
    """Records of a JSON document that is one object.

    The object is one record when it looks like one (`is_record`); else each value is:
    an object (records keyed by id, as trajectory dumps are: `{"<id>": {...}}`) or a
    list of records (`{"data": [...]}`, `{"train": [...], "test": [...]}`), each record
    given the key it was under as the field `_key` (kept in meta). A value that is
    neither goes to quarantine, so nothing is dropped unseen.
    """
    if whole is not None and is_record(whole):
        yield 0, whole, None
        return
    row = 0
    for key, value in pairs:
        if isinstance(value, dict):
            yield row, {**value, "_key": key}, None
            row += 1
        elif isinstance(value, list) and value:
            for item in value:
                yield row, ({**item, "_key": key} if isinstance(item, dict) else item), None
                row += 1
        else:
            yield row, RowError(
                f"not a record: the top-level field {key!r} holds {_short_json(value)}, "
                "not an object or a list of records"), orjson.dumps({key: value}, default=str)
            row += 1


def _short_json(value: object, n: int = 40) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= n else text[: n - 3] + "..."


def _json_object(f: io.BufferedIOBase, path: Path, compression: str | None,
                 is_record: Callable[[dict], bool]) -> Iterator[Record]:
    """`document_records` of a large (or broken) one-object file, streamed pair by pair
    with ijson: memory is bounded by the largest top-level value."""
    import ijson

    state = {"row": -1}

    def pairs():
        with f:
            try:
                yield from ijson.kvitems(f, "", use_float=True)
            except (ijson.JSONError, UnicodeDecodeError) as e:
                state["error"] = e

    for rec in document_records(pairs(), None, is_record):
        state["row"] = rec[0]
        yield rec
    if "error" in state:
        row = state["row"]
        yield row + 1, RowError(
            f"malformed JSON: the object cannot be parsed after record {row} "
            f"({state['error']}); the rest of the file is kept here as raw text"), \
            _tail(path, compression)


def records_table(records: list) -> pa.Table | None:
    """Parsed JSON records as one Arrow table, or None when they do not fit one
    (not all objects, or a field with mixed types): the per-row path takes them then."""
    if not all(isinstance(r, dict) for r in records):
        return None
    keys = dict.fromkeys(k for r in records for k in r)
    try:
        return pa.table({k: pa.array([r.get(k) for r in records]) for k in keys})
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return None


def _table_chunks(batches: Iterator[pa.RecordBatch]) -> Iterator[Chunk]:
    row = 0
    for batch in batches:
        table = pa.Table.from_batches([batch])
        rows = np.arange(row, row + batch.num_rows, dtype=np.int64)
        row += batch.num_rows

        def records(parsed, pos, table=table, rows=rows):
            for p in range(table.num_rows) if pos is None else pos:
                yield int(rows[p]), table.slice(int(p), 1).to_pylist()[0], None

        yield Chunk(lambda table=table, rows=rows: (table, rows), records)


def sniff_container(path: Path, compression: str | None) -> str:
    """JSON or JSON lines, by the first non-space byte; for unknown extensions (the
    layout inside is told apart later, see `json_layout`)."""
    with open_bytes(path, compression) as f:
        head = f.read(4096).lstrip()
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:].lstrip()
    if head.startswith(b"["):
        return "json"
    if head.startswith(b"{"):
        return "jsonl"
    raise InputError(
        "cannot tell the file type: it is not JSON, JSON lines, CSV or Parquet by name "
        "or content",
        path=str(path),
        fix="rename it with one of .jsonl .json .csv .parquet (optionally .gz/.zst), "
        "or convert it to JSON lines",
    )


SAMPLE_BYTES = 64 << 10  # of a line too large to keep: the start kept in quarantine


class _Oversized:
    """A JSON line over the record limit, skipped: its size and its first bytes."""

    def __init__(self, size: int, sample: bytes):
        self.size, self.sample = size, sample


def _too_big(size: int, limit: int, sampled: bool = False) -> RowError:
    from curate.units import format_bytes

    note = f"; raw holds its first {format_bytes(SAMPLE_BYTES)}" if sampled else ""
    return RowError(
        f"too large: record is {format_bytes(size)}, over the {format_bytes(limit)} limit "
        f"(raise it with --max-record-mb if such records are intended){note}"
    )


def jsonl_records(first_row: int, chunk: bytes, limit: int,
                  only: Iterable[int] | None = None) -> Iterator[tuple[int, object, object]]:
    """Records of a chunk of JSON lines (or of the lines listed in `only`)."""
    loads = orjson.loads
    lines = chunk.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    for i in (range(len(lines)) if only is None else only):
        line = lines[i]
        row = first_row + int(i)
        if len(line) > limit:
            yield row, _too_big(len(line), limit), line
            continue
        try:
            yield row, loads(line), line
        except orjson.JSONDecodeError as e:
            if not line.strip():
                continue  # blank line: not a record
            if row == 0 and line.startswith(b"\xef\xbb\xbf"):
                try:
                    yield row, loads(line[3:]), line
                    continue
                except orjson.JSONDecodeError:
                    pass
            yield row, RowError(_json_reason(line, e)), line


def _json_reason(line: bytes, e: Exception) -> str:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as u:
        return f"invalid UTF-8: at byte {u.start} of the line"
    return f"malformed JSON: {e}"


def parse_jsonl(chunk: bytes, limit: int) -> tuple[pa.Table, np.ndarray] | None:
    """A chunk of whole JSON lines as a table plus the line index of each row, or None
    when only the per-row parser can say what is wrong with it."""
    buf = np.frombuffer(chunk, np.uint8)
    ends = np.flatnonzero(buf == 10)
    if len(chunk) and chunk[-1:] != b"\n":
        ends = np.append(ends, len(chunk))
    if not len(ends):
        return None
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts
    nonblank = lengths > 0
    # every non-blank line must open an object: anything else is for the careful path
    if not np.all(buf[starts[nonblank]] == ord("{")) or np.any(lengths > limit):
        return None
    if _too_deep(buf):
        return None  # Arrow's JSON reader recurses per level (a stack overflow at 10k)
    try:
        # threads pay off on big chunks only; a small file parses 5x faster without
        options = pajson.ReadOptions(block_size=len(chunk) + 1, use_threads=len(chunk) > 1 << 20)
        table = pajson.read_json(io.BytesIO(chunk), read_options=options)
        table.validate(full=True)  # Arrow's JSON reader passes invalid UTF-8 through
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    lines = np.flatnonzero(nonblank)
    if table.num_rows != len(lines):
        return None
    return table, lines


MAX_DEPTH = 256  # nesting the vectorized path takes; deeper lines go to orjson (limit 1024)


def _too_deep(buf: np.ndarray) -> bool:
    """Whether brackets nest deeper than MAX_DEPTH anywhere in the chunk (brackets inside
    strings count too: a false alarm only costs the per-row path)."""
    opens = (buf == ord("[")) | (buf == ord("{"))
    if int(opens.sum()) <= MAX_DEPTH:
        return False
    closes = (buf == ord("]")) | (buf == ord("}"))
    return int(np.cumsum(opens.astype(np.int32) - closes).max()) > MAX_DEPTH


def _json_array(f: io.BufferedIOBase, path: Path, compression: str | None):
    """Items of a top-level JSON array, streamed with ijson's C parser."""
    import ijson

    row = -1
    with f:
        try:
            for row, item in enumerate(ijson.items(f, "item", use_float=True)):
                yield row, item, None
        except (ijson.JSONError, UnicodeDecodeError) as e:
            # Everything before the break is kept; the unreadable rest becomes one
            # quarantined record so that the counts still add up.
            yield row + 1, RowError(
                f"malformed JSON: the array cannot be parsed after item {row} ({e}); the rest of the "
                "file is kept here as raw text"), _tail(path, compression)


def _tail(path: Path, compression: str | None, limit: int = 1 << 20) -> bytes:
    """The last `limit` bytes of the decompressed file."""
    tail = b""
    with open_bytes(path, compression) as f:
        while chunk := f.read(1 << 20):
            tail = (tail + chunk)[-limit:]
    return tail


def _csv_batches(path: Path, opener, compression: str | None) -> Iterator[pa.RecordBatch]:
    """Every column as text, as written; quoted values may span lines."""
    import pyarrow.csv as pacsv

    delimiter = "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","
    with open_bytes(path, compression) as f:
        header = f.readline()
    names = next(csv.reader([header.decode("utf-8-sig")], delimiter=delimiter), [])
    if not names:
        raise InputError("the CSV file has no header row", path=str(path),
                         fix="add a header line naming the columns")
    row = 0
    try:
        reader = pacsv.open_csv(  # parses the first block already
            opener(),
            read_options=pacsv.ReadOptions(block_size=CHUNK_BYTES),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=False),
        )
        for batch in reader:
            yield batch
            row += batch.num_rows
    except pa.ArrowInvalid as e:
        raise InputError(f"CSV parse error after data row {row}: {e}", path=str(path),
                         row=row, fix="check quoting on that row") from e


def _parquet_batches(path: Path) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types here
        raise InputError(f"not a readable Parquet file: {e}", path=str(path)) from e
    yield from pf.iter_batches(batch_size=CHUNK_ROWS)


def raw_text(raw: object, record: object) -> str:
    """Text kept in quarantine: the raw line (invalid bytes escaped) or the record."""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "backslashreplace").rstrip("\n")
    if raw is not None:
        return str(raw)
    try:
        return orjson.dumps(record, default=str).decode()
    except TypeError:
        try:
            return repr(record)
        except RecursionError:  # nested deeper than Python can follow: its outer levels
            import reprlib

            short = reprlib.Repr()
            short.maxlevel, short.maxstring, short.maxother = 32, 1 << 16, 1 << 16
            return short.repr(record)

