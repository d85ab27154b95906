"""The store: a directory of Parquet parts with a DuckDB catalog of views over them.

    <store>/
      store.json               marks the directory as a curate store (format version)
      catalog.duckdb           views over everything below; rebuilt atomically, never
                               held open by a writer, so readers are never blocked
      ingest/<run_id>/         one commit of one or more ingested files (N = part number):
          examples-N.parquet   rows in the canonical schema (new ids only)
          quarantine-N.parquet rejected rows with reason and raw text
          duplicates-N.parquet rows whose id was already stored
          run.parquet          one row per file: path, file hash, counts, times, version
      .lock                    held by the one writer (flock)
      .tmp/                    staging; a commit is one rename out of here

A crash leaves at most a staging folder, which the next writer removes: the store is
never half-written, and a rerun redoes only the file that was not committed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError, StoreBusyError, StoreError
from curate.schema import (DUPLICATE_SCHEMA, EVAL_EXAMPLE_SCHEMA, EVAL_SCHEMA, EXAMPLE_SCHEMA,
                           FLOW_RUN_SCHEMA,
                           QUARANTINE_SCHEMA, RUN_SCHEMA, SELECTION_DROPPED_SCHEMA,
                           SELECTION_MASK_SCHEMA, SELECTION_MEMBER_SCHEMA, SELECTION_SCHEMA)

STORE_FORMAT = 1
DEFAULT_STORE = "curate-store"

INGEST_RUN_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("invocation_id", pa.string()),
    ("path", pa.string()),
    ("file_hash", pa.string()),
    ("file_bytes", pa.int64()),
    ("options_key", pa.string()),  # file hash + format + source + mapping
    ("source", pa.string()),
    ("format", pa.string()),
    ("mapping", pa.string()),
    ("records", pa.int64()),
    ("read", pa.int64()),
    ("stored", pa.int64()),
    ("duplicates", pa.int64()),
    ("quarantined", pa.int64()),
    # of `quarantined`: rows already in quarantine from an earlier run of the same file
    # content (--force), not stored there again
    ("requarantined", pa.int64()),
    # valid rows of a file refused for too many quarantined ones (--max-quarantine): not
    # stored; such a run has `error` set, so a rerun reads the file again
    ("refused_rows", pa.int64()),
    ("fields", pa.string()),  # JSON: which input fields became which part, examples each
    ("started_at", pa.timestamp("us", tz="UTC")),
    ("finished_at", pa.timestamp("us", tz="UTC")),
    ("seconds", pa.float64()),
    ("curate_version", pa.string()),
    ("error", pa.string()),  # set when the file failed part way; a rerun reads it again
])

# view name -> (glob relative to the store, schema used when no part exists yet)
VIEWS: dict[str, tuple[str, pa.Schema]] = {
    "examples": ("ingest/*/examples-*.parquet", EXAMPLE_SCHEMA),  # N: part number
    "quarantine": ("ingest/*/quarantine-*.parquet", QUARANTINE_SCHEMA),
    "duplicates": ("ingest/*/duplicates-*.parquet", DUPLICATE_SCHEMA),
    "ingest_runs": ("ingest/*/run.parquet", INGEST_RUN_SCHEMA),
    "selections": ("selections/*/manifest.parquet", SELECTION_SCHEMA),
    "selection_members": ("selections/*/members.parquet", SELECTION_MEMBER_SCHEMA),
    "selection_dropped": ("selections/*/dropped.parquet", SELECTION_DROPPED_SCHEMA),
    "selection_masks": ("selections/*/masks.parquet", SELECTION_MASK_SCHEMA),
    "runs": ("runs/*/run.parquet", RUN_SCHEMA),
    "evals": ("evals/*/eval.parquet", EVAL_SCHEMA),
    "eval_examples": ("evals/*/examples.parquet", EVAL_EXAMPLE_SCHEMA),
    "flow_runs": ("flow_runs/*/run.parquet", FLOW_RUN_SCHEMA),
}


def default_store_path() -> Path:
    return Path(os.environ.get("CURATE_STORE", DEFAULT_STORE))


def new_run_id(prefix: str) -> str:
    """Sortable by time, unique across processes: 20261122T001500-ingest-1a2b3c4d."""
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{prefix}-{uuid.uuid4().hex[:8]}"


# the store's folders besides the examples' parts: what each stage keeps (the layout is
# the store's: stages ask for `store.folder(kind, ...)`, never join names themselves)
FOLDERS = ("ingest", "scores", "selections", "runs", "evals", "compare", "gradients",
           "targets", "flow_runs", "exports")


class Store:
    """A curate store directory. Reading needs nothing; writing goes through `writer()`."""

    def __init__(self, path: str | Path | None = None):
        self.root = Path(path if path is not None else default_store_path()).absolute()

    # ---------------------------------------------------------------- layout
    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.duckdb"

    def folder(self, kind: str, *names: str) -> Path:
        """The folder the store keeps `kind` in (one of FOLDERS), or a path inside it."""
        if kind not in FOLDERS:
            raise ValueError(f"no store folder {kind!r}: one of {', '.join(FOLDERS)}")
        return self.root.joinpath(kind, *names)

    def finished_run(self, run_id: str, fix: str = "") -> Path:
        """The folder of the finished fine-tune run `run_id`; an id that is not one is a
        clear error listing the finished runs (and `fix`, what else would do)."""
        from curate.safety import check_name

        folder = self.folder("runs", check_name(run_id, "run id", "my-run", 150))
        if (folder / "run.parquet").is_file() and (folder / "config.json").is_file():
            return folder
        runs = self.folder("runs")
        done = sorted(p.parent.name for p in runs.glob("*/run.parquet")) if runs.is_dir() else []
        raise CurateError(f"no finished run {run_id!r} in {self.root}\n  fix: use one of: "
                          f"{', '.join(done) or '(none yet: run curate finetune)'}"
                          + (f"; {fix}" if fix else ""))

    def saved_selection(self, name: str) -> Path:
        """The folder of the saved selection `name`; a name that is not one is a clear
        error listing the saved selections."""
        from curate.safety import check_name

        folder = self.folder("selections", check_name(name))
        if (folder / "manifest.json").is_file():
            return folder
        root = self.folder("selections")
        names = sorted(p.parent.name for p in root.glob("*/manifest.json")) \
            if root.is_dir() else []
        raise CurateError(f"no selection named {name!r} in {self.root}\n  fix: use one of: "
                          f"{', '.join(names) or '(none yet: run curate select)'}; list them "
                          "with `curate selections`")

    @property
    def exists(self) -> bool:
        return (self.root / "store.json").is_file()

    def require(self) -> "Store":
        """Fail clearly when the path is not a store (for read-only commands)."""
        self._check_directory()
        if not self.exists:
            raise StoreError(
                f"{self.root} is not a curate store\n  fix: ingest something first "
                f"(curate ingest FILE --store {self.root}), or point --store / CURATE_STORE "
                "at an existing store")
        return self

    def _check_directory(self) -> None:
        """A store is a directory: a regular file there (or above it) is a clear error,
        not a traceback from the first os call."""
        for path in (self.root, *self.root.parents):
            if path.exists():
                if not path.is_dir():
                    what = "is a file" if path == self.root else f"is inside the file {path}"
                    raise StoreError(
                        f"store path {self.root} {what}, not a directory\n  fix: point "
                        "--store (or CURATE_STORE) at a directory: an existing store, or a "
                        "new or empty one to create a store in")
                return

    def _init(self) -> None:
        self._check_directory()
        if self.root.exists() and any(self.root.iterdir()) and not self.exists:
            raise StoreError(
                f"{self.root} exists and is not a curate store (no store.json)\n"
                "  fix: choose an empty or new directory with --store")
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.exists:
            write_atomic(self.root / "store.json",
                          json.dumps({"format": STORE_FORMAT, "created_at": _now_iso()}).encode())

    # ---------------------------------------------------------------- writing
    @contextlib.contextmanager
    def writer(self, wait: float | None = None) -> Iterator["Writer"]:
        """Hold the store's write lock. A second writer waits up to `wait` seconds
        (default: CURATE_LOCK_WAIT or 30), then fails naming the holder."""
        self._init()
        with hold_lock(self.root / ".lock", wait,
                       f"{self.root} is being written by another process"), \
                disk_full_is_an_error(self.root):
            tmp = self.root / ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)  # leftovers of a crashed writer
            tmp.mkdir()
            writer = Writer(self)
            try:
                yield writer
            finally:
                # what a failed or interrupted writer staged (a full disk gets it back)
                shutil.rmtree(tmp, ignore_errors=True)
                if writer.committed or not self.catalog_path.exists():
                    self.rebuild_catalog()

    # ---------------------------------------------------------------- reading
    def parts(self, view: str) -> list[Path]:
        glob, _ = VIEWS[view]
        return sorted(self.root.glob(glob))

    def read_table(self, view: str, columns: list[str] | None = None) -> pa.Table:
        """All committed parts of a view as one Arrow table (for small tables and ids)."""
        parts = self.parts(view)
        schema = VIEWS[view][1]
        if not parts:
            return schema.empty_table() if columns is None else \
                pa.schema([schema.field(c) for c in columns]).empty_table()
        # ParquetFile, not pyarrow.dataset: that one imports pandas (0.2 s) on first use
        wanted = schema if columns is None else pa.schema([schema.field(c) for c in columns])
        tables = []
        for part in parts:
            f = pq.ParquetFile(part)
            have = [c for c in wanted.names if c in f.schema_arrow.names]
            t = f.read(columns=have)
            for c in wanted.names:  # a column added to the schema later reads as null
                if c not in t.column_names:
                    t = t.append_column(wanted.field(c), pa.nulls(t.num_rows, wanted.field(c).type))
            tables.append(t.select(wanted.names).cast(wanted))
        return pa.concat_tables(tables)

    def connect(self):
        """A read-only DuckDB connection with every view (never blocks on a writer),
        locked down (`lock_down`): it reads files of this store only, loads no extension
        and changes no setting, so user SQL run on it cannot reach anything else."""
        import duckdb

        self.require()
        if self.catalog_path.is_file():
            con = duckdb.connect(str(self.catalog_path), read_only=True)
            try:
                rows = con.execute("SELECT root, signature FROM _curate").fetchall()
                row = rows[0] if rows else None
                if row and tuple(row) == (str(self.root), _signature(self.root)):
                    lock_down(con, self.root)
                    return con
            except duckdb.Error:
                pass
            con.close()
        # moved or not yet built: same views, in memory (writable, hence locked down too)
        con = duckdb.connect()
        _create_views(con, self.root)
        lock_down(con, self.root)
        return con

    def rebuild_catalog(self) -> None:
        """Write catalog.duckdb anew beside the old one and swap it in (atomic)."""
        import duckdb

        # beside the catalog, not in .tmp: a scorer rebuilds it without the store lock
        tmp = self.root / f".catalog-{uuid.uuid4().hex[:8]}.duckdb"
        try:
            with disk_full_is_an_error(self.root):
                con = duckdb.connect(str(tmp))
                try:
                    _create_views(con, self.root)
                    con.execute("CREATE TABLE _curate AS SELECT ? AS root, ? AS signature, "
                                "? AS format, ? AS built_at",
                                [str(self.root), _signature(self.root), STORE_FORMAT,
                                 _now_iso()])
                    con.execute("CHECKPOINT")
                finally:
                    con.close()
        except BaseException:  # the old catalog stays; no half-built one beside it
            for leftover in (tmp, Path(str(tmp) + ".wal")):
                leftover.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.catalog_path)
        with contextlib.suppress(FileNotFoundError):
            os.remove(str(tmp) + ".wal")


def lock_down(con, root: Path) -> None:
    """DuckDB's own sandbox on `con`: files are reachable only under `root` (COPY TO,
    ATTACH, EXPORT and read_* elsewhere fail), no extension is installed or loaded, and
    the configuration is locked (SET fails). What is left inside the store, statements
    that write (COPY into the store, CREATE in an in-memory catalog), `curate sql`
    refuses by statement type (curate.safety.check_read_only)."""
    (locked,), = con.execute("SELECT current_setting('lock_configuration')").fetchall()
    if locked:  # another connection to the same database instance did it already
        return
    dirs = sorted({str(root) + os.sep, str(root.resolve()) + os.sep})
    for setting in ("autoinstall_known_extensions", "autoload_known_extensions",
                    "allow_community_extensions"):
        con.execute(f"SET {setting} = false")
    con.execute("SET allowed_directories = ?", [dirs])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


@contextlib.contextmanager
def hold_lock(path: Path, wait: float | None, busy: str) -> Iterator[None]:
    """An exclusive flock on `path`. Another holder makes this wait up to `wait` seconds
    (default: CURATE_LOCK_WAIT or 30), then fail with `busy` and the holder's pid."""
    wait = float(os.environ.get("CURATE_LOCK_WAIT", 30)) if wait is None else wait
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = path.read_text(errors="replace").strip() or "unknown"
                    raise StoreBusyError(f"{busy} ({holder})\n  fix: wait for it to finish, or "
                                     "raise CURATE_LOCK_WAIT (seconds) to queue behind it"
                                     ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {_now_iso()}".encode())
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def disk_full_is_an_error(root: Path) -> Iterator[None]:
    """A full disk (ENOSPC, EDQUOT, from Python, Arrow or DuckDB) becomes a StoreError
    that names the store and the fix, instead of a traceback."""
    import duckdb

    try:
        yield
    except (OSError, duckdb.Error) as e:  # DuckDB: IOException, FatalException
        full = getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or \
            "No space left on device" in str(e) or "Disk quota exceeded" in str(e)
        if not full:
            raise
        raise StoreError(
            f"no space left on the device of store {root} ({e})\n  fix: free space there "
            "(or move the store to a bigger disk and pass --store), then run the same "
            "command again; nothing partial was committed") from e


def _signature(root: Path) -> str:
    """Which views have parts (and which score configurations they show): the catalog
    is stale when this changes."""
    names = [n for n, (g, _) in VIEWS.items() if any(root.glob(g))]
    names += [f"{name}={folder.name}" for name, folder in score_views(root).items()]
    return ",".join(names)


def score_views(root: Path) -> dict[str, Path]:
    """scores_<scorer> -> the folder of its most recently run configuration."""
    out = {}
    for scorer in sorted((root / "scores").glob("*")):
        configs = [c for c in scorer.glob("*/config.json") if any(c.parent.glob("part-*.parquet"))]
        if configs:
            newest = max(configs, key=lambda c: (c.stat().st_mtime_ns, c.parent.name))
            out[f"scores_{scorer.name}"] = newest.parent
    return out


# Derived views: prompt and response are the last user and assistant turns, not copies.
PAIR_COLUMNS = """
               list_filter(messages, lambda m: m.role = 'user')[-1].content AS prompt,
               list_filter(messages, lambda m: m.role = 'assistant')[-1].content AS response,
               len(messages) AS turns, outcome.success AS success, outcome.reward AS reward"""
DERIVED_VIEWS = {
    "pairs": f"SELECT id, source, source_row, kind, {PAIR_COLUMNS} FROM examples",
}
# the examples with the pairs' columns: what a scorer's --where is written over
EXAMPLES_AND_PAIRS = f"(SELECT *, {PAIR_COLUMNS} FROM examples) AS examples"


def _create_views(con, root: Path) -> None:
    for name, (glob, schema) in VIEWS.items():
        if any(root.glob(glob)):
            path = str(root / glob).replace("'", "''")
            con.execute(f"CREATE OR REPLACE VIEW {name} AS "
                        f"SELECT * FROM read_parquet('{path}', union_by_name = true)")
        else:
            con.register(f"_empty_{name}", schema.empty_table())
            con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _empty_{name}")
            con.unregister(f"_empty_{name}")
    for name, sql in DERIVED_VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
    for name, folder in score_views(root).items():
        config = json.loads((folder / "config.json").read_text())
        glob = str(folder / "part-*.parquet").replace("'", "''")
        literals = ", ".join(
            f"'{str(v).replace(chr(39), chr(39) * 2)}' AS {k}" for k, v in (
                ("scorer", config["scorer"]), ("scorer_version", config["version"]),
                ("model", config.get("model") or ""),
                ("params", json.dumps(config.get("params", {}), sort_keys=True)),
                ("config", folder.name)))
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT *, {literals} "
                    f"FROM read_parquet('{glob}')")


class Writer:
    """Staging and commits for the process holding the lock."""

    def __init__(self, store: Store):
        self.store = store
        self.committed = 0

    def stage(self, run_id: str) -> Path:
        path = self.store.root / ".tmp" / run_id
        path.mkdir(parents=True)
        return path

    def commit(self, staged: Path, dest: str) -> Path:
        """Move a staged folder to `dest` (relative to the store) in one rename."""
        target = self.store.root / dest
        publish(staged, target)
        self.committed += 1
        if self.committed == 1:
            self.store.rebuild_catalog()  # again when the writer closes
        return target


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(staged: Path, dest: Path, *, replace: bool = True,
            old: Path | None = None) -> bool:
    """Move a staged file or folder to `dest` in one rename, after syncing it: readers
    see the previous copy or the new one, never a half-written one. This is how every
    result reaches the store (and an export its file).

    An existing file is replaced atomically. An existing folder is swapped out: moved to
    `old` (default `.<name>-old` beside it; a crash between the two renames leaves it
    there, see `curate.finetune.train._recover`), then deleted. With `replace=False` an
    existing `dest` wins: the staged copy is dropped and False returned (a concurrent
    identical job finished first)."""
    for f in (staged.iterdir() if staged.is_dir() else [staged]):
        if f.is_file():
            fsync(f)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and not replace:
        if staged.is_dir():
            shutil.rmtree(staged, ignore_errors=True)
        else:
            staged.unlink(missing_ok=True)
        return False
    if dest.is_dir():
        old = old or dest.with_name(f".{dest.name}-old")
        old.parent.mkdir(parents=True, exist_ok=True)
        os.replace(dest, old)
        os.replace(staged, dest)
        fsync(dest.parent)
        shutil.rmtree(old, ignore_errors=True)
        return True
    os.replace(staged, dest)
    fsync(dest.parent)
    return True


def write_atomic(path: Path, data: bytes) -> None:
    """Write a small file by temp file + fsync + rename."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    publish(tmp, path)


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def sql_hint(con, query: str, error: Exception, scorers=()) -> str:
    """The fix for a failed query (`curate sql`, `curate.Store.sql`), fitted to the
    error: the syntax, the views this store has (`con` is a connection to it), the
    columns of the views the query names. `scorers`: the scorer names, so that a missing
    `scores_<scorer>` view says which `curate score` makes it."""
    import re

    import duckdb

    text = str(error)
    if isinstance(error, duckdb.ParserException):
        return "check the SQL syntax at the position marked above"
    if isinstance(error, duckdb.PermissionException):
        return ("curate sql reads the files of this store only, through its views; "
                "ingest other files first (curate ingest FILE), then query them")
    views = sorted(r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
    ).fetchall() if not r[0].startswith("_"))
    missing = re.search(r"Table with name (\S+) does not exist", text)
    if missing:
        name = missing.group(1)
        scorer = name.removeprefix("scores_") if name.startswith("scores_") else None
        if scorer and scorer in scorers:
            return (f"no {scorer} scores in this store yet: run `curate score {scorer}` "
                    f"first; the views here are {', '.join(views)}")
        return f"the views of this store are {', '.join(views)}"
    column = re.search(r'column "([^"]+)" not found|does not have a column named "([^"]+)"',
                       text)
    if column:
        named = [v for v in views if re.search(rf"\b{re.escape(v)}\b", query)]
        parts = []
        for view in named:
            cols = [r[0] for r in con.execute(f'DESCRIBE "{view}"').fetchall()]
            parts.append(f"{view} has {', '.join(cols)}")
        return "; ".join(parts) if parts else "see the candidate bindings above"
    return "see the position marked above"
