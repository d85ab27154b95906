"""Ingest files into a store: read, hash, deduplicate, quarantine, commit per file.

Each file is one run committed atomically (see `curate.store`). A file already ingested
with the same options is skipped by its content hash; `force` reads it again (its rows
then all count as duplicates). Counts always satisfy read = stored + duplicates +
quarantined.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.errors import InputError
from curate.ingest.formats import FORMATS, parse_mapping
from curate.ingest.reader import DEFAULT_MAX_RECORD_BYTES, FileReader, source_name
from curate.ingest.sources import split_name
from curate.schema import DUPLICATE_SCHEMA, QUARANTINE_SCHEMA
from curate.store import INGEST_RUN_SCHEMA, Store, new_run_id

__all__ = ["FORMATS", "FileReader", "FileReport", "IngestReport", "expand_paths", "ingest",
           "parse_mapping"]


@dataclass
class FileReport:
    path: str
    source: str
    format: str | None = None
    run_id: str | None = None
    records: int = 0
    read: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    skipped: str | None = None  # why the file was not read (already ingested)
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class IngestReport:
    files: list[FileReport] = field(default_factory=list)

    def total(self, key: str) -> int:
        return sum(getattr(f, key) for f in self.files)

    @property
    def consistent(self) -> bool:
        return all(f.read == f.stored + f.duplicates + f.quarantined for f in self.files)

    def to_dict(self) -> dict:
        keys = ("records", "read", "stored", "duplicates", "quarantined")
        return {"totals": {k: self.total(k) for k in keys} | {
                    "files": len(self.files),
                    "skipped_files": sum(1 for f in self.files if f.skipped)},
                "files": [asdict(f) for f in self.files]}


class Progress:
    """Callbacks for long work; the CLI passes a rich progress bar, the library none."""

    def start(self, path: Path, total_bytes: int) -> None: ...
    def advance(self, done_bytes: int) -> None: ...
    def finish(self, report: FileReport) -> None: ...


_PATTERN = set("*?[")
_SKIP_NAMES = {"license", "licence", "readme", "notice", "copying"}


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named, files under directories (recursively), and glob matches, sorted.

    Inside a directory, files whose names carry no data extension (README, LICENSE,
    ...) are left out; a file named directly is always read.
    """
    out: list[Path] = []
    for p in paths:
        text = str(p)
        if _PATTERN & set(text):
            matches = sorted(Path(m) for m in globlib.glob(text, recursive=True))
            if not matches:
                raise InputError("the pattern matches no file", path=text,
                                 fix="check the pattern (quote it so the shell keeps it)")
            out += [m for m in matches if m.is_file()]
        elif Path(text).is_dir():
            out += sorted(f for f in Path(text).rglob("*")
                          if f.is_file() and not f.name.startswith(".")
                          and split_name(f)[0] is not None)
        elif Path(text).is_file():
            out.append(Path(text))
        else:
            raise InputError("no such file or directory", path=text, fix="check the path")
    seen: set[Path] = set()
    return [f for f in out if not (f.resolve() in seen or seen.add(f.resolve()))]


def file_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def ingest(store: Store, paths: Iterable[str | Path], format: str = "auto",
           source: str | None = None, mapping: dict[str, str] | str | None = None,
           force: bool = False, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
           progress: Progress | None = None) -> IngestReport:
    """Ingest every file under `paths` into `store`; returns per-file counts."""
    if isinstance(mapping, str):
        mapping = parse_mapping(mapping)
    mapping = mapping or {}
    files = expand_paths(paths)
    progress = progress or Progress()
    report = IngestReport()
    invocation = new_run_id("ingest")
    from curate import __version__

    with store.writer() as writer:
        runs = store.read_table("ingest_runs", ["options_key", "run_id", "error"]).to_pylist()
        done = {r["options_key"]: r["run_id"] for r in runs if r["error"] is None}
        seen: set[str] = set(store.read_table("examples", ["id"])["id"].to_pylist())
        group: _Group | None = None
        for path in files:
            fr = FileReport(path=str(path), source=source or source_name(path))
            digest = file_hash(path)
            key = hashlib.md5(json.dumps([digest, format, fr.source, mapping],
                                         sort_keys=True).encode()).hexdigest()
            if key in done and not force:
                fr.skipped = f"already ingested in run {done[key]}"
                report.files.append(fr)
                progress.finish(fr)
                continue
            group = group or _Group(writer)
            run = {"invocation_id": invocation, "file_hash": digest, "options_key": key,
                   "mapping": json.dumps(mapping), "curate_version": __version__}
            try:
                _ingest_file(path, fr, group, seen, run, format, mapping, max_record_bytes,
                             progress)
            except BaseException as e:
                # keep what was read (this file's rows so far included, its run marked
                # failed so a rerun reads it again), then stop
                run["error"] = f"{type(e).__name__}: {e}"
                group.commit()
                raise
            finally:
                report.files.append(fr)
            done[key] = fr.run_id
            progress.finish(fr)
            if group.bytes >= GROUP_BYTES:
                group.commit()
                group = None
        if group is not None:
            group.commit()
    return report


# Small files are committed together (one rename per ~256 MB of input) so that a
# directory of many small files does not pay a commit each; a crash redoes one group.
GROUP_BYTES = 256 << 20
FLUSH_ROWS = 65536  # rows buffered per table before a Parquet part is written


class _Group:
    """One staged commit: Parquet parts of one or more files plus their run rows."""

    def __init__(self, writer):
        self.writer = writer
        self.run_id = new_run_id("ingest")
        self.folder = writer.stage(self.run_id)
        self.runs: list[dict] = []
        self.bytes = 0
        self.buffers: dict[str, list[pa.Table]] = {}
        self.parts = 0

    def add(self, name: str, table: pa.Table) -> None:
        buf = self.buffers.setdefault(name, [])
        buf.append(table)
        if sum(t.num_rows for t in buf) >= FLUSH_ROWS:
            self._flush(name)

    def _flush(self, name: str) -> None:
        tables = self.buffers.pop(name, [])
        if tables:
            pq.write_table(pa.concat_tables(tables), self.folder / f"{name}-{self.parts:05d}.parquet",
                           compression="zstd")
            self.parts += 1

    def commit(self) -> None:
        for name in list(self.buffers):
            self._flush(name)
        if self.runs:
            pq.write_table(pa.Table.from_pylist(self.runs, schema=INGEST_RUN_SCHEMA),
                           self.folder / "run.parquet")
            self.writer.commit(self.folder, f"ingest/{self.run_id}")


def _ingest_file(path: Path, fr: FileReport, group: _Group, seen: set[str], run: dict,
                 format: str, mapping: dict, max_record_bytes: int, progress: Progress) -> None:
    """Read one file into the group; fills `fr` and the run row (also when it fails)."""
    started = time.time()
    fr.run_id = group.run_id
    group.runs.append(run)
    reasons: Counter = Counter()
    path_text = str(path)
    reader = None

    def close() -> None:
        fr.format = reader.format.name if reader and reader.format else None
        fr.read = fr.stored + fr.duplicates + fr.quarantined
        fr.reasons = dict(reasons)
        fr.seconds = round(time.time() - started, 3)
        run.update({
            "run_id": fr.run_id, "path": str(path.absolute()),
            "file_bytes": reader.size if reader else path.stat().st_size,
            "source": fr.source, "format": fr.format, "records": fr.records, "read": fr.read,
            "stored": fr.stored, "duplicates": fr.duplicates, "quarantined": fr.quarantined,
            "started_at": datetime.fromtimestamp(started, timezone.utc),
            "finished_at": datetime.now(timezone.utc), "seconds": fr.seconds})

    try:
        reader = FileReader(path, format=format, source=fr.source, mapping=mapping,
                            max_record_bytes=max_record_bytes)
        progress.start(path, reader.size)
        for batch in reader:
            ex = batch.examples
            keep = []
            dup_rows = []
            for i, id_ in enumerate(ex["id"].to_pylist()):
                if id_ in seen:
                    dup_rows.append(i)
                    keep.append(False)
                else:
                    seen.add(id_)
                    keep.append(True)
            if dup_rows:
                d = ex.take(dup_rows)
                group.add("duplicates", pa.table({
                    "id": d["id"], "source": d["source"], "source_row": d["source_row"],
                    "path": pa.array([path_text] * len(d), pa.string()),
                    "run_id": pa.array([fr.run_id] * len(d), pa.string())},
                    schema=DUPLICATE_SCHEMA))
            stored = ex.filter(pa.array(keep, pa.bool_())) if dup_rows else ex
            if stored.num_rows:
                group.add("examples", stored)
            if batch.rejects:
                rows, why, raw = zip(*batch.rejects)
                reasons.update(_reason_kind(w) for w in why)
                group.add("quarantine", pa.table({
                    "source": [fr.source] * len(rows), "source_row": list(rows),
                    "path": [path_text] * len(rows), "reason": list(why), "raw": list(raw),
                    "run_id": [fr.run_id] * len(rows)}, schema=QUARANTINE_SCHEMA))
            fr.records += batch.records
            fr.stored += stored.num_rows
            fr.duplicates += len(dup_rows)
            fr.quarantined += len(batch.rejects)
            progress.advance(reader.bytes_read)
        group.bytes += reader.size
    finally:
        close()


def _reason_kind(reason: str) -> str:
    """The category of a quarantine reason: every reason reads `category: detail`."""
    return reason.split(":", 1)[0].strip()
