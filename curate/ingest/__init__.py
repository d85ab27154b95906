"""Ingest files into a store: read, hash, deduplicate, quarantine, commit.

Files are committed atomically in groups (one rename per ~256 MB of input; see
`curate.store`), each with a run row of its own. A file already ingested with the same
options is skipped by its content hash; `force` reads it again (its rows then all count
as duplicates). Counts always satisfy read = stored + duplicates + quarantined.
"""

from __future__ import annotations

import glob as globlib
import json
import shutil
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.engine import get_engine
from curate.errors import InputError
from curate.fingerprint import fingerprint
from curate.ingest.formats import FORMATS, parse_mapping, suggest_fix
from curate.ingest.reader import (DEFAULT_MAX_RECORD_BYTES, FAST_FLAT, Batch, FileReader,
                                  read_bundle, source_name)
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
    requarantined: int = 0  # of `quarantined`: already in quarantine from an earlier run
    skipped: str | None = None  # why the file was not read (already ingested)
    error: str | None = None  # why the file failed part way (nothing of it was kept)
    refused: str | None = None  # why the file was refused (too much quarantined)
    refused_rows: int = 0  # valid rows of a refused file, not stored
    fix: str | None = None  # what would read a refused file right
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    # which input fields became which part, with the examples each way gave:
    # {"user=instruction+input, response=output": 2000}
    fields: dict[str, int] = field(default_factory=dict)


@dataclass
class IngestReport:
    files: list[FileReport] = field(default_factory=list)

    def total(self, key: str) -> int:
        return sum(getattr(f, key) for f in self.files)

    @property
    def consistent(self) -> bool:
        return all(f.read == f.stored + f.duplicates + f.quarantined + f.refused_rows
                   for f in self.files)

    @property
    def refused(self) -> list[FileReport]:
        return [f for f in self.files if f.refused]

    def to_dict(self) -> dict:
        keys = ("records", "read", "stored", "duplicates", "quarantined", "refused_rows")
        return {"totals": {k: self.total(k) for k in keys} | {
                    "files": len(self.files),
                    "skipped_files": sum(1 for f in self.files if f.skipped),
                    "refused_files": len(self.refused)},
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


def file_hash(path: Path, data: bytes | None = None) -> str:
    """XXH3-128 of the file's bytes (of `data` when the file is already in memory)."""
    import xxhash

    if data is not None:
        return xxhash.xxh3_128_hexdigest(data)
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


DEFAULT_MAX_QUARANTINE = 0.5


def ingest(store: Store, paths: Iterable[str | Path], format: str = "auto",
           source: str | None = None, mapping: dict[str, str] | str | None = None,
           force: bool = False, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
           max_quarantine: float | str = DEFAULT_MAX_QUARANTINE,
           progress: Progress | None = None, engine=None) -> IngestReport:
    """Ingest every file under `paths` into `store`; returns per-file counts. On the ray
    `engine` (see curate.engine) files are read in parallel on its workers; this process
    stays the one writer of the store.

    A file with more than `max_quarantine` of its rows quarantined (all of them, always)
    is refused: its quarantined rows are kept for inspection, nothing else of it is
    stored, and its report says why (`refused`) and what would fix it; the other files
    are ingested as usual. `IngestReport.refused` lists such files.
    """
    if isinstance(mapping, str):
        mapping = parse_mapping(mapping)
    limit = parse_share(max_quarantine)
    files = expand_paths(paths)
    engine = get_engine(engine)
    with store.writer() as writer:
        job = _Ingest(store, writer, format, source, mapping or {}, force, max_record_bytes,
                      progress or Progress(), limit)
        try:
            if engine.name == "local":
                for path in files:
                    job.add(path)
            else:
                job.add_on(engine, files)
            job.close()
        except Exception:
            # the failed file left nothing behind (see _Ingest._read); keep the files
            # before it, those waiting in a bundle included, then stop
            job.salvage(read_waiting=True)
            raise
        except BaseException:
            # Ctrl-C / SIGTERM: read nothing more; the files finished so far are kept
            job.salvage(read_waiting=False)
            raise
    return job.report


# Small files are committed together (one rename per ~256 MB of input) so that a
# directory of many small files does not pay a commit each; a crash redoes one group.
GROUP_BYTES = 256 << 20
FLUSH_BYTES = 64 << 20  # Arrow bytes buffered per table before a Parquet part is written
# Small JSON-lines files of one flat format are read together (see reader.read_bundle).
SMALL_FILE_BYTES = 1 << 20
SUGGEST_ROWS = 64  # quarantined rows a refused file's fix is tried on
BUNDLE_BYTES = 8 << 20


def parse_share(value: float | str) -> float:
    """`50%`, `50` or `0.5` -> 0.5 (the share of a file's rows --max-quarantine allows)."""
    text = str(value).strip()
    try:
        share = float(text.rstrip("%"))
    except ValueError:
        share = -1.0
    if text.endswith("%") or share > 1:
        share /= 100
    if not 0 <= share <= 1:
        raise InputError(f"--max-quarantine {value!r} is not a share of rows",
                         fix="give a percentage (50%) or a fraction (0.5) between 0 and 1")
    return share


class _Ingest:
    """One `ingest` call: skips, bundles, per-file accounting, commit groups."""

    def __init__(self, store, writer, format, source, mapping, force, max_record_bytes,
                 progress, max_quarantine=DEFAULT_MAX_QUARANTINE):
        from curate import __version__

        self.store, self.writer, self.format, self.source = store, writer, format, source
        self.mapping, self.force, self.limit, self.progress = mapping, force, max_record_bytes, \
            progress
        self.version = __version__
        self.max_quarantine = max_quarantine
        self.invocation = new_run_id("ingest")
        self.report = IngestReport()
        runs = store.read_table("ingest_runs", ["options_key", "run_id", "error"]).to_pylist()
        self.done = {r["options_key"]: r["run_id"] for r in runs if r["error"] is None}
        self.seen = {int(i, 16) for i in store.read_table("examples", ["id"])["id"].to_pylist()}
        self.group: _Group | None = None
        self.bundle: list[tuple[Path, FileReport, dict, FileReader, bytes]] = []

    def add(self, path: Path) -> None:
        planned = self._plan(path)
        if planned is None:
            return
        fr, run, reader, data = planned
        if data is not None:
            reader.detect_from(data)
            if reader.format is not None and FAST_FLAT.get(reader.format.name):
                if self.bundle and self.bundle[0][3].format is not reader.format:
                    self._flush_bundle()
                self.bundle.append((path, fr, run, reader, data))
                if sum(len(b[4]) for b in self.bundle) >= BUNDLE_BYTES:
                    self._flush_bundle()
                return
        self._flush_bundle()
        self._read(path, fr, run, reader, iter(reader))

    def add_on(self, engine, paths: list[Path]) -> None:
        """Read the files on `engine`'s workers, several at a time, each streaming its
        batches back; this process deduplicates and commits them in file order, as
        `add` does one by one (the same rows, counts and commits)."""
        # (the bytes a small file was hashed from are not kept: workers read the file)
        planned = [(path, p[:3]) for path in paths if (p := self._plan(path)) is not None]
        specs = [(str(path), self.format, fr.source, self.mapping, self.limit)
                 for path, (fr, _, _) in planned]
        for (path, (fr, run, reader)), results in zip(planned, engine.stream(_read_file, specs)):
            self._read(path, fr, run, reader, _streamed(reader, results))

    def _plan(self, path: Path) -> tuple[FileReport, dict, FileReader, bytes | None] | None:
        """The file's report, run row and reader; None (and a report saying so) when it
        was already ingested with the same options."""
        fr = FileReport(path=str(path), source=self.source or source_name(path))
        small = (split_name(path) == ("jsonl", None) and not self.mapping
                 and path.stat().st_size <= SMALL_FILE_BYTES)
        data = path.read_bytes() if small else None
        digest = file_hash(path, data)
        key = fingerprint([digest, self.format, fr.source, self.mapping], algo="md5")
        if key in self.done and not self.force:
            fr.skipped = f"already ingested in run {self.done[key]}"
            self.report.files.append(fr)
            self.progress.finish(fr)
            return None
        run = {"invocation_id": self.invocation, "file_hash": digest, "options_key": key,
               "mapping": json.dumps(self.mapping), "curate_version": self.version}
        reader = FileReader(path, format=self.format, source=fr.source, mapping=self.mapping,
                            max_record_bytes=self.limit)
        return fr, run, reader, data

    def close(self) -> None:
        self._flush_bundle()
        self._commit()

    def _commit(self) -> None:
        """Commit the open group, once: a commit interrupted part way (Ctrl-C during its
        catalog rebuild) is not tried again by `salvage`, its staging already moved."""
        group, self.group = self.group, None
        if group is not None:
            group.commit()

    def salvage(self, read_waiting: bool) -> None:
        """After an error or an interrupt: commit the files finished so far (after
        reading those waiting in the bundle when `read_waiting`)."""
        try:
            if read_waiting:
                self._flush_bundle()
            else:
                self.bundle = []
        finally:
            self._commit()

    def _flush_bundle(self) -> None:
        bundle, self.bundle = self.bundle, []
        if not bundle:
            return
        batches = read_bundle([b[3] for b in bundle], [b[4] for b in bundle]) \
            if len(bundle) > 1 else None
        for i, (path, fr, run, reader, _) in enumerate(bundle):
            self._read(path, fr, run, reader, iter(reader) if batches is None else [batches[i]])

    def _read(self, path: Path, fr: FileReport, run: dict, reader: FileReader,
              batches: Iterable[Batch]) -> None:
        """Account one file's batches into the commit group.

        A file that fails part way (an unreadable stretch, Ctrl-C, SIGTERM) leaves
        nothing behind: its parts and buffered rows are dropped from the group and its
        ids forgotten, so that a rerun reads it anew instead of finding its own rows as
        duplicates.
        """
        group = self.group = self.group or _Group(self.writer)
        started = time.time()
        fr.run_id = group.run_id
        reasons: Counter = Counter()
        fields: Counter = Counter()
        path_text = str(path)
        added: list[int] = []  # ids this file added to `seen`: forgotten if it fails
        quarantined = self._quarantined(run["file_hash"])
        sample: list[tuple[int, str, str]] = []  # rejects, for the fix a refusal suggests
        group.begin_file()
        self.progress.start(path, reader.size)
        try:
            for batch in batches:
                ex = batch.examples
                keep = np.ones(ex.num_rows, bool)
                seen = self.seen
                for i, id_ in enumerate(ex["id"].to_pylist()):
                    key = int(id_, 16)
                    if key in seen:
                        keep[i] = False
                    else:
                        seen.add(key)
                        added.append(key)
                n_dup = int(ex.num_rows - keep.sum())
                if n_dup:
                    d = ex.filter(pa.array(~keep))
                    group.add("duplicates", pa.table({
                        "id": d["id"], "source": d["source"], "source_row": d["source_row"],
                        "path": pa.array([path_text] * n_dup, pa.string()),
                        "run_id": pa.array([fr.run_id] * n_dup, pa.string())},
                        schema=DUPLICATE_SCHEMA))
                stored = ex.filter(pa.array(keep)) if n_dup else ex
                if stored.num_rows:
                    group.add("examples", stored)
                rejects = batch.rejects
                if rejects:
                    reasons.update(_reason_kind(w) for _, w, _ in rejects)
                    sample += rejects[: max(0, SUGGEST_ROWS - len(sample))]
                    # a file read again (--force) does not quarantine the same rows twice
                    new = [r for r in rejects if r[0] not in quarantined]
                    fr.requarantined += len(rejects) - len(new)
                    if new:
                        rows, why, raw = zip(*new)
                        group.add("quarantine", pa.table({
                            "source": [fr.source] * len(rows), "source_row": list(rows),
                            "path": [path_text] * len(rows), "reason": list(why),
                            "raw": list(raw), "run_id": [fr.run_id] * len(rows)},
                            schema=QUARANTINE_SCHEMA))
                fields.update(batch.fields)
                fr.records += batch.records
                fr.stored += stored.num_rows
                fr.duplicates += n_dup
                fr.quarantined += len(rejects)
                self.progress.advance(max(reader.bytes_read, batch.bytes_read))
        except BaseException as e:
            group.drop_file()
            self.seen.difference_update(added)
            fr.error = f"{type(e).__name__}: {e}"
            fr.records = fr.stored = fr.duplicates = fr.quarantined = fr.requarantined = 0
            raise
        finally:
            fr.format = reader.format.name if reader.format else None
            fr.read = fr.stored + fr.duplicates + fr.quarantined + fr.refused_rows
            fr.reasons = dict(reasons)
            fr.fields = dict(fields.most_common())
            fr.seconds = round(time.time() - started, 3)
            self.report.files.append(fr)
        fr.read = fr.stored + fr.duplicates + fr.quarantined
        if fr.quarantined and (fr.quarantined == fr.read or
                               fr.quarantined > self.max_quarantine * fr.read):
            self._refuse(fr, group, added, reasons, sample, reader)
            run["error"] = f"refused: {fr.refused}"
        group.end_file()
        run.update({
            "run_id": fr.run_id, "path": str(path.absolute()), "file_bytes": reader.size,
            "source": fr.source, "format": fr.format, "records": fr.records,
            "read": fr.read, "stored": fr.stored, "duplicates": fr.duplicates,
            "quarantined": fr.quarantined, "requarantined": fr.requarantined,
            "refused_rows": fr.refused_rows, "fields": json.dumps(fr.fields),
            "started_at": datetime.fromtimestamp(started, timezone.utc),
            "finished_at": datetime.now(timezone.utc), "seconds": fr.seconds})
        group.runs.append(run)
        if not fr.refused:
            self.done[run["options_key"]] = fr.run_id
        self.progress.finish(fr)
        group.bytes += reader.size
        if group.bytes >= GROUP_BYTES:
            self._commit()

    def _refuse(self, fr: FileReport, group: "_Group", added: list[int], reasons: Counter,
                sample: list, reader: FileReader) -> None:
        """Too much of the file was quarantined: most likely it was read in the wrong
        shape. Keep its quarantined rows (to look at), store nothing else of it."""
        group.drop_file(keep=("quarantine",))
        self.seen.difference_update(added)
        fr.refused_rows = fr.stored + fr.duplicates
        fr.stored = fr.duplicates = 0
        share = fr.quarantined / fr.read
        top, n = reasons.most_common(1)[0]
        example = next((why for _, why, _ in sample if _reason_kind(why) == top), top)
        fix = suggest_fix(reader, [raw for _, _, raw in sample])
        limit = "" if fr.quarantined == fr.read else \
            f", over --max-quarantine {self.max_quarantine:.0%}"
        fr.refused = (f"{fr.quarantined} of {fr.read} rows ({share:.0%}) quarantined{limit}; "
                      f"top reason: {example} (x{n}); nothing of the file was stored, its "
                      "quarantined rows are in the quarantine table")
        fr.fix = (f"read it again with {fix}" if fix else
                  "look at the rows (curate sql \"SELECT reason, raw FROM quarantine\"), then "
                  "name the fields with --map NAME=FIELD (nested: --map "
                  "response=instances[].output) or the shape with --format") + \
            (" (or raise --max-quarantine)" if fr.quarantined < fr.read else "")

    def _quarantined(self, file_hash: str) -> set[int]:
        """Rows of this file content already in quarantine from an earlier run (a group
        holds several files: a run's rows are told apart by the file's name)."""
        runs = self.store.read_table("ingest_runs", ["run_id", "path", "file_hash"]).to_pylist()
        names = {(r["run_id"], Path(r["path"]).name) for r in runs if r["file_hash"] == file_hash}
        if not names:
            return set()
        q = self.store.read_table("quarantine", ["run_id", "path", "source_row"]).to_pylist()
        return {r["source_row"] for r in q if (r["run_id"], Path(r["path"]).name) in names}


class _Group:
    """One staged commit: Parquet parts of one or more files plus their run rows.

    Parts are written by a background thread (compression releases the GIL), so that
    encoding overlaps with reading the next files.
    """

    def __init__(self, writer):
        from concurrent.futures import ThreadPoolExecutor

        self.writer = writer
        self.run_id = new_run_id("ingest")
        self.folder = writer.stage(self.run_id)
        self.runs: list[dict] = []
        self.bytes = 0
        self.buffers: dict[str, list[pa.Table]] = {}
        self.buffered: dict[str, int] = {}
        self.parts = 0
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="curate-parquet")
        self.pending: list = []
        self.marks: dict[str, int] | None = None  # buffer lengths when the current file began
        self.failed: Exception | None = None
        self.file_parts: list[tuple[str, Path]] = []

    def add(self, name: str, table: pa.Table) -> None:
        self.buffers.setdefault(name, []).append(table)
        self.buffered[name] = self.buffered.get(name, 0) + table.nbytes
        if self.buffered[name] >= FLUSH_BYTES:
            self._flush(name)

    # A part holds rows of finished files or of the file being read, never both, so
    # that a file failing part way can be taken out again (drop_file).
    def begin_file(self) -> None:
        self.marks = {name: len(tables) for name, tables in self.buffers.items()}
        self.file_parts: list[tuple[str, Path]] = []

    def end_file(self) -> None:
        self.marks, self.file_parts = None, []

    def drop_file(self, keep: tuple[str, ...] = ()) -> None:
        """Forget the rows of the file being read (but those of the tables in `keep`):
        their parts and buffered tables."""
        for f in self.pending:
            try:
                f.result()
            except Exception as e:  # noqa: BLE001 - raised again by commit
                self.failed = e
        self.pending = []
        for name, part in self.file_parts:
            if name not in keep:
                part.unlink(missing_ok=True)
        for name in [n for n in self.buffers if n not in keep]:
            kept = self.buffers[name][: (self.marks or {}).get(name, 0)]
            self.buffers[name] = kept
            self.buffered[name] = sum(t.nbytes for t in kept)
        self.end_file()

    def _flush(self, name: str) -> None:
        tables = self.buffers.pop(name, [])
        self.buffered.pop(name, None)
        marks = self.marks
        if marks is None:
            self._write(name, tables, current=False)
            return
        mark = marks.get(name, 0)
        self._write(name, tables[:mark], current=False)
        self._write(name, tables[mark:], current=True)
        marks[name] = 0

    def _write(self, name: str, tables: list[pa.Table], current: bool) -> None:
        if not tables:
            return
        path = self.folder / f"{name}-{self.parts:05d}.parquet"
        self.parts += 1
        if current:
            self.file_parts.append((name, path))
        for done in [f for f in self.pending if f.done()]:
            done.result()
        # at most one part waits while another is written: memory stays bounded
        while len([f for f in self.pending if not f.done()]) > 1:
            self.pending[0].result()
            self.pending.pop(0)
        self.pending.append(self.pool.submit(_write_part, tables, path))

    def commit(self) -> None:
        if self.failed is not None:
            raise self.failed  # a part of a finished file was not written: commit nothing
        for name in list(self.buffers):
            self._flush(name)
        for f in self.pending:
            f.result()
        self.pool.shutdown()
        if self.runs:
            pq.write_table(pa.Table.from_pylist(self.runs, schema=INGEST_RUN_SCHEMA),
                           self.folder / "run.parquet")
            self.writer.commit(self.folder, f"ingest/{self.run_id}")
        else:
            shutil.rmtree(self.folder, ignore_errors=True)


def _read_file(spec: tuple) -> Iterable[tuple[Batch, str]]:
    """An engine task: one file's batches, each with the name of the format read."""
    path, format, source, mapping, limit = spec
    reader = FileReader(path, format=format, source=source, mapping=mapping,
                        max_record_bytes=limit)
    for batch in reader:
        batch.bytes_read = reader.bytes_read
        yield batch, reader.format.name


def _streamed(reader: FileReader, results: Iterable[tuple[Batch, str]]) -> Iterable[Batch]:
    """Batches read elsewhere, with the format they were read in set on `reader`."""
    for batch, name in results:
        reader.format = FORMATS[name]
        yield batch


def _write_part(tables: list[pa.Table], path: Path) -> None:
    pq.write_table(pa.concat_tables(tables), path, compression="zstd")


def _reason_kind(reason: str) -> str:
    """The category of a quarantine reason: every reason reads `category: detail`."""
    return reason.split(":", 1)[0].strip()
