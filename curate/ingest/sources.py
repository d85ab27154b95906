"""Containers: stream raw records out of JSONL, JSON arrays, CSV and Parquet files,
plain or compressed (.gz, .zst), in bounded memory.

Each yields `(row, record, raw)`: the 0-based position of the record in the file, the
parsed record (a dict) or a `RowError`, and the raw bytes or text for quarantine.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

from curate.errors import InputError

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
CONTAINERS = ("jsonl", "json", "csv", "parquet")
_EXT = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv",
        ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class RowError(Exception):
    """One record cannot become an example; the reason goes to quarantine."""


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
    """A binary stream of the decompressed file (over `raw` when given, for progress)."""
    raw = raw if raw is not None else open(path, "rb", buffering=1 << 20)
    if compression == "gzip":
        return io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), buffer_size=1 << 20)
    if compression == "zstd":
        import zstandard

        return io.BufferedReader(
            zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), buffer_size=1 << 20)
    return raw


class Source:
    """The records of one file; `bytes_read` tells how far through the file it is."""

    def __init__(self, path: Path, container: str, compression: str | None,
                 max_record_bytes: int):
        self.path, self.container, self.compression = path, container, compression
        self.max_record_bytes = max_record_bytes
        self.size = os.stat(path).st_size
        self._raw: io.IOBase | None = None

    @property
    def bytes_read(self) -> int:
        try:
            return self._raw.tell() if self._raw is not None and not self._raw.closed else 0
        except (OSError, ValueError):
            return 0

    def _open(self) -> io.BufferedIOBase:
        self._raw = open(self.path, "rb", buffering=1 << 20)
        return open_bytes(self.path, self.compression, self._raw)

    def chunks(self, chunk_bytes: int = 4 << 20) -> Iterator[tuple[int, bytes]]:
        """JSON lines only: (row of the first line, bytes of whole lines)."""
        with self._open() as f:
            row, rest = 0, b""
            while True:
                block = f.read(chunk_bytes)
                if not block:
                    if rest:
                        yield row, rest
                    return
                block = rest + block if rest else block
                cut = block.rfind(b"\n")
                if cut < 0:  # one line longer than a chunk: keep reading
                    rest = block
                    continue
                chunk, rest = block[: cut + 1], block[cut + 1:]
                yield row, chunk
                row += chunk.count(b"\n")

    def __iter__(self) -> Iterator[tuple[int, object, object]]:
        if self.container == "jsonl":
            return (rec for first, chunk in self.chunks()
                    for rec in jsonl_records(first, chunk, self.max_record_bytes))
        if self.container == "json":
            return _json_array(self._open(), self.path, self.compression)
        if self.container == "csv":
            return _csv(self.path, self._open, self.compression)
        if self.container == "parquet":
            return _parquet(self.path)
        raise InputError(f"unknown container {self.container!r}", path=str(self.path))


def sniff_container(path: Path, compression: str | None) -> str:
    """JSON array or JSON lines, by the first non-space byte; for unknown extensions."""
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


def _too_big(size: int, limit: int) -> RowError:
    return RowError(
        f"too large: record is {size / 1e6:.1f} MB, over the {limit / 1e6:.1f} MB limit "
        "(raise it with --max-record-mb if such records are intended)"
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


def _csv(path: Path, opener, compression: str | None):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    delimiter = "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","
    with open_bytes(path, compression) as f:
        header = f.readline()
    names = next(iter(__import__("csv").reader([header.decode("utf-8-sig")],
                                               delimiter=delimiter)), [])
    if not names:
        raise InputError("the CSV file has no header row", path=str(path),
                         fix="add a header line naming the columns")
    reader = pacsv.open_csv(
        opener(),
        read_options=pacsv.ReadOptions(block_size=1 << 22),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, strings_can_be_null=False),
    )
    row = 0
    try:
        for batch in reader:
            for rec in batch.to_pylist():
                yield row, rec, None
                row += 1
    except pa.ArrowInvalid as e:
        raise InputError(f"CSV parse error after data row {row}: {e}", path=str(path),
                         row=row, fix="check quoting on that row") from e


def _parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types here
        raise InputError(f"not a readable Parquet file: {e}", path=str(path)) from e
    row = 0
    for batch in pf.iter_batches(batch_size=8192):
        for rec in batch.to_pylist():
            yield row, rec, None
            row += 1


def raw_text(raw: object, record: object) -> str:
    """Text kept in quarantine: the raw line (invalid bytes escaped) or the record."""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "backslashreplace").rstrip("\n")
    if raw is not None:
        return str(raw)
    try:
        return orjson.dumps(record, default=str).decode()
    except TypeError:
        return repr(record)

