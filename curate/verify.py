"""`curate verify`: check that the store's files and catalog agree, and roll back what a
crash or a damaged disk left behind.

Checks: the catalog (missing, stale, a view that fails), every Parquet part (read in
full), the counts of every ingest commit (its run rows say how many rows each file
stored, duplicated and quarantined; its parts must hold exactly that many), ids unique
in `examples`, score rows and selection members keyed to existing examples, leftovers
of crashed writers (staging, temp files) and damaged checkpoints.

Repair (`repair=True`, under the store's write lock) makes a rerun of the same
commands complete with the same result: staging leftovers are removed; damaged user
data is moved aside into `<store>/.trash/<time>/` (an ingest commit as a whole, so that
a rerun ingests its files again; a score part, so that the scorer rescores its rows; a
selection, so that `curate select` makes it again); the catalog is rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
import pyarrow as pa
import pyarrow.parquet as pq

from curate.store import Store, _signature, hold_lock

# what repair does with a problem's target, in this order
REMOVE, RECOVER, TRASH, REBUILD = "remove", "recover", "move aside", "rebuild catalog"
_ORDER = {REMOVE: 0, RECOVER: 1, TRASH: 2, REBUILD: 3}


@dataclass
class Problem:
    kind: str  # catalog, part, counts, ids, keys, leftover, checkpoint
    where: str  # path relative to the store
    what: str
    fix: str
    action: str | None = None  # what --repair does (REMOVE, RECOVER, TRASH, REBUILD)
    #                            None: by hand
    target: str | None = None  # the path repair acts on (relative), default `where`

    def line(self) -> str:
        return f"{self.where}: {self.what}\n  fix: {self.fix}"


@dataclass
class VerifyReport:
    store: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # not problems: work a rerun resumes
    repaired: list[str] = field(default_factory=list)
    parts: int = 0
    rows: int = 0
    bytes: int = 0

    @property
    def clean(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"store": self.store, "clean": self.clean, "parts": self.parts,
                "rows": self.rows, "bytes": self.bytes,
                "problems": [asdict(p) for p in self.problems], "notes": self.notes,
                "repaired": self.repaired}


class Progress:
    def start(self, total_bytes: int) -> None: ...
    def advance(self, n_bytes: int) -> None: ...


def verify(store: Store, repair: bool = False, progress: Progress | None = None
           ) -> VerifyReport:
    """Check the store; with `repair`, fix what can be fixed and check again. The report
    is the final check's, with `repaired` listing what repair did."""
    store.require()
    if not repair:
        return _check(store, progress or Progress())
    done: list[str] = []
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    trash = store.root / ".trash" / f"{stamp}-{os.getpid()}"
    staged = sorted(e.name for e in (store.root / ".tmp").glob("*"))
    with store.writer(wait=0):  # clears .tmp/ (staging of crashed writers) first
        done += [f"removed .tmp/{name}" for name in staged]
        for _round in range(3):  # moving a commit aside can orphan scores and selections
            report = _check(store, progress or Progress(), locked=True)
            fixable = [p for p in report.problems if p.action]
            if not fixable:
                break
            done += _repair(store, fixable, trash)
        store.rebuild_catalog()
    report = _check(store, Progress())
    report.repaired = done
    return report


# ------------------------------------------------------------------ checks
def _check(store: Store, progress: Progress, locked: bool = False) -> VerifyReport:
    root = store.root
    report = VerifyReport(str(root))
    out = report.problems
    _leftovers(root, out, report.notes, locked)
    parts = _parquet_files(root)
    progress.start(sum(p.stat().st_size for p in parts))
    tables: dict[Path, pa.Table | None] = {}
    for part in parts:
        tables[part] = _read_part(part, progress, out, root)
        if tables[part] is not None:
            report.parts += 1
            report.rows += tables[part].num_rows
            report.bytes += part.stat().st_size
    ids = _ingest_commits(root, tables, out)
    _scores(root, tables, ids, out)
    _selections(root, tables, ids, out)
    _runs(root, out, report.notes)
    _catalog(store, out)
    return report


def _rel(root: Path, path: Path) -> str:
    return str(path.relative_to(root))


def _parquet_files(root: Path) -> list[Path]:
    """Every committed Parquet file: not under a dot-named folder (staging, trash), not
    dot-named itself (a temp file)."""
    out = []
    for path in sorted(root.rglob("*.parquet")):
        rel = path.relative_to(root).parts
        if not any(p.startswith(".") for p in rel):
            out.append(path)
    return out


def _read_part(path: Path, progress: Progress, out: list[Problem], root: Path
               ) -> pa.Table | None:
    """The part read in full (footer and every page), or None with a problem."""
    size = path.stat().st_size
    try:
        f = pq.ParquetFile(path)
        groups = [f.read_row_group(i) for i in range(f.num_row_groups)]
        table = pa.concat_tables(groups) if groups else f.schema_arrow.empty_table()
    except (OSError, ValueError, pa.ArrowException) as e:
        action, target, fix = _owner(root, path)
        out.append(Problem("part", _rel(root, path), f"unreadable Parquet part ({e})", fix,
                           action, target))
        table = None
    progress.advance(size)
    return table


def _owner(root: Path, path: Path) -> tuple[str | None, str | None, str]:
    """What to move aside when `path` is damaged, and what the rerun then does."""
    rel = path.relative_to(root).parts
    if rel[0] == "ingest" and len(rel) > 2:
        return TRASH, f"ingest/{rel[1]}", (
            f"curate verify --repair moves commit ingest/{rel[1]} aside; then run the same "
            "`curate ingest` again (its files are read again)")
    if rel[0] == "scores" and len(rel) > 3 and rel[3].startswith("part-"):
        return TRASH, "/".join(rel), (
            "curate verify --repair moves the part aside; then run the same `curate score` "
            "again (it rescores the missing rows)")
    if rel[0] == "gradients" and len(rel) > 2:
        return TRASH, "/".join(rel), (
            "curate verify --repair moves the part aside; the next influence run "
            "computes those gradients again")
    if rel[0] == "selections" and len(rel) > 2:
        return TRASH, f"selections/{rel[1]}", (
            f"curate verify --repair moves selection {rel[1]!r} aside; then run the same "
            "`curate select` again")
    if rel[0] in ("runs", "evals", "flow_runs") and len(rel) > 2:
        return TRASH, f"{rel[0]}/{rel[1]}", (
            f"curate verify --repair moves {rel[0]}/{rel[1]} aside; then run the command "
            "that made it again")
    return None, None, "restore the file from a backup, or remove it"


def _ingest_commits(root: Path, tables: dict, out: list[Problem]) -> set[str]:
    """Per commit folder: run rows readable, parts hold exactly the counted rows. Returns
    the ids stored (and reports ids stored twice)."""
    ids: Counter = Counter()
    first: dict[str, str] = {}
    for folder in sorted(p for p in (root / "ingest").glob("*") if p.is_dir()
                         and not p.name.startswith(".")):
        name = f"ingest/{folder.name}"
        fix = (f"curate verify --repair moves {name} aside; then run the same `curate "
               "ingest` again (its files are read again)")
        run_path = folder / "run.parquet"
        if not run_path.is_file():
            out.append(Problem("counts", name, "commit has no run.parquet (its run rows were "
                               "deleted), so its rows cannot be accounted for", fix, TRASH, name))
            continue
        runs = tables.get(run_path)
        if runs is None:
            continue  # unreadable: reported as a part problem, same repair
        n_stored = sum(v or 0 for v in runs["stored"].to_pylist())
        want = {"duplicates": Counter(), "quarantine": Counter()}
        requar = runs["requarantined"].to_pylist() if "requarantined" in runs.column_names \
            else [None] * runs.num_rows
        for r, rq in zip(runs.select(["run_id", "path", "duplicates", "quarantined"])
                         .to_pylist(), requar):
            key = (r["run_id"], r["path"])
            want["duplicates"][key] += r["duplicates"] or 0
            want["quarantine"][key] += (r["quarantined"] or 0) - (rq or 0)
        have = {"examples": 0, "duplicates": Counter(), "quarantine": Counter()}
        damaged = False
        folder_ids: list[str] = []
        for part in sorted(folder.glob("*.parquet")):
            kind = part.name.split("-", 1)[0]
            if part.name == "run.parquet" or kind not in have:
                continue
            t = tables.get(part)
            if t is None:
                damaged = True
                continue
            if kind == "examples":
                have["examples"] += t.num_rows
                folder_ids += t["id"].to_pylist()
            else:
                have[kind].update(zip(t["run_id"].to_pylist(), t["path"].to_pylist()))
        if damaged:
            continue
        if have["examples"] != n_stored:
            out.append(Problem("counts", name, f"run rows say {n_stored} examples stored, its "
                               f"examples parts hold {have['examples']} (a part was deleted "
                               "or replaced)", fix, TRASH, name))
            continue
        bad = [(kind, key, want[kind][key], have[kind][key]) for kind in want
               for key in set(want[kind]) | set(have[kind]) if want[kind][key] != have[kind][key]]
        if bad:
            kind, (_, path), n_want, n_have = bad[0]
            out.append(Problem("counts", name, f"{path}: run rows say {n_want} {kind} rows, its "
                               f"{kind} parts hold {n_have}" + (f" (and {len(bad) - 1} more "
                               "mismatches)" if len(bad) > 1 else ""), fix, TRASH, name))
            continue
        for i in folder_ids:
            ids[i] += 1
            first.setdefault(i, name)
    repeated = [i for i, n in ids.items() if n > 1]
    if repeated:
        out.append(Problem("ids", "ingest", f"{len(repeated)} example id(s) are stored more than "
                           f"once (e.g. {repeated[0]}, first in {first[repeated[0]]})",
                           "restore the ingest folders from a backup, or move the later commit "
                           "aside by hand and ingest its files again"))
    return set(ids)


def _scores(root: Path, tables: dict, ids: set[str], out: list[Problem]) -> None:
    for part in sorted(root.glob("scores/*/*/part-*.parquet")):
        t = tables.get(part)
        if t is None:
            continue
        rel = _rel(root, part)
        part_ids = t["id"].to_pylist()
        orphans = [i for i in part_ids if i not in ids]
        if orphans:
            out.append(Problem("keys", rel, f"{len(orphans)} of {len(part_ids)} score rows are "
                               f"keyed to no stored example (e.g. {orphans[0]})",
                               "curate verify --repair moves the part aside; then run the same "
                               "`curate score` again (it rescores the missing rows)", TRASH, rel))
    for folder in sorted(p.parent for p in root.glob("scores/*/*/config.json")):
        seen: Counter = Counter()
        for part in sorted(folder.glob("part-*.parquet")):
            if tables.get(part) is not None:
                seen.update(tables[part]["id"].to_pylist())
        twice = [i for i, n in seen.items() if n > 1]
        if twice:
            out.append(Problem("ids", _rel(root, folder), f"{len(twice)} id(s) are scored in more "
                               f"than one part (e.g. {twice[0]})", "move the newer parts aside "
                               "by hand, or the whole folder to score again"))


def _selections(root: Path, tables: dict, ids: set[str], out: list[Problem]) -> None:
    for folder in sorted(p for p in (root / "selections").glob("*") if p.is_dir()
                         and not p.name.startswith(".")):
        rel = _rel(root, folder)
        fix = (f"curate verify --repair moves selection {folder.name!r} aside; then run the "
               "same `curate select` again")
        missing = [n for n in ("manifest.json", "manifest.parquet", "members.parquet")
                   if not (folder / n).is_file()]
        if missing:
            out.append(Problem("part", rel, f"selection is missing {', '.join(missing)}", fix,
                               TRASH, rel))
            continue
        members = tables.get(folder / "members.parquet")
        if members is None:
            continue
        member_ids = set(members["id"].to_pylist())
        orphans = [i for i in member_ids if i not in ids]
        masks = tables.get(folder / "masks.parquet")
        stray = [i for i in masks["id"].to_pylist() if i not in member_ids] \
            if masks is not None else []
        if orphans or stray:
            what = (f"{len(orphans)} member(s) are keyed to no stored example (e.g. {orphans[0]})"
                    if orphans else f"{len(stray)} mask row(s) are keyed to no member "
                    f"(e.g. {stray[0]})")
            out.append(Problem("keys", rel, what, fix, TRASH, rel))


def _runs(root: Path, out: list[Problem], notes: list[str]) -> None:
    """Fine-tune runs: a damaged checkpoint cannot resume; an unfinished one will."""
    for run in sorted(p for p in (root / "runs").glob("*") if p.is_dir()
                      and not p.name.startswith(".")):
        if (run / "run.parquet").is_file():
            continue
        state = run / "checkpoint" / "state.pt"
        if state.is_file():
            try:
                with zipfile.ZipFile(state) as z:  # torch.save writes a zip: CRC every entry
                    bad = z.testzip()
            except (OSError, zipfile.BadZipFile) as e:
                bad = str(e)
            if bad:
                rel = _rel(root, state.parent)
                out.append(Problem("checkpoint", rel, f"damaged checkpoint ({bad})",
                                   "curate verify --repair moves it aside; then run the same "
                                   "`curate finetune` again (it starts the run over)", TRASH, rel))
                continue
        notes.append(f"runs/{run.name}: unfinished fine-tune run; the same `curate finetune` "
                     "resumes it" + (" from its checkpoint" if state.is_file() else ""))


def _leftovers(root: Path, out: list[Problem], notes: list[str], locked: bool) -> None:
    """What crashed writers leave: staging under .tmp/, temp catalogs, dot-named temp
    files beside score parts and in run folders. A live writer's are not reported."""
    fix = "curate verify --repair removes it (uncommitted work; the rerun redoes it)"
    tmp = root / ".tmp"
    entries = sorted(tmp.iterdir()) if tmp.is_dir() else []
    if entries and not locked and _busy(root / ".lock"):
        notes.append(".tmp: a writer is running; its staging is not checked")
    else:
        for e in entries:
            out.append(Problem("leftover", _rel(root, e), "staging left by a crashed writer",
                               fix, REMOVE))
    for e in sorted(root.glob(".catalog-*")):
        if not _duckdb_busy(e):
            out.append(Problem("leftover", _rel(root, e), "temp catalog left by a crashed "
                               "rebuild", fix, REMOVE))
    for e in sorted(root.glob(".store.json.*")):
        out.append(Problem("leftover", _rel(root, e), "temp file left by a crashed writer",
                           fix, REMOVE))
    for folder in sorted(p.parent for p in root.glob("scores/*/*/.lock")) + \
            sorted(p.parent for p in root.glob("gradients/*/.lock")) + \
            sorted(p.parent for p in root.glob("runs/*/.lock")):
        temps = [e for e in sorted(folder.glob(".*")) if e.name != ".lock"]
        if not temps:
            continue
        if _busy(folder / ".lock"):
            notes.append(f"{_rel(root, folder)}: being written now; its temp files are not "
                         "checked")
        elif folder.parent.name == "runs":  # a checkpoint swap may need finishing
            out.append(Problem("leftover", _rel(root, folder), "temp files of an interrupted "
                               f"save ({', '.join(e.name for e in temps)})", "curate verify "
                               "--repair finishes or undoes the save (as a resumed "
                               "`curate finetune` would)", RECOVER))
        else:
            for e in temps:
                out.append(Problem("leftover", _rel(root, e), "temp file left by a crashed "
                                   "writer", fix, REMOVE))
    for e in sorted(root.glob("selections/.*")):
        out.append(Problem("leftover", _rel(root, e), "staging left by a crashed writer", fix,
                           REMOVE))
    for e in sorted(root.glob("evals/.*")):  # evaluate stages without a lock: old ones only
        if time.time() - e.stat().st_mtime > 600:
            out.append(Problem("leftover", _rel(root, e), "staging left by a crashed "
                               "evaluation", fix, REMOVE))


def _catalog(store: Store, out: list[Problem]) -> None:
    import duckdb

    fix = "curate verify --repair rebuilds it from the files (readers meanwhile use views " \
          "built in memory)"
    path = store.catalog_path
    if not path.is_file():
        out.append(Problem("catalog", path.name, "catalog.duckdb is missing", fix, REBUILD))
        return
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as e:
        out.append(Problem("catalog", path.name, f"catalog.duckdb does not open ({e})", fix,
                           REBUILD))
        return
    try:
        try:
            rows = con.execute("SELECT root, signature FROM _curate").fetchall()
        except duckdb.Error as e:
            out.append(Problem("catalog", path.name, f"catalog.duckdb has no _curate table ({e})",
                               fix, REBUILD))
            return
        root, signature = rows[0] if rows else (None, None)
        if root != str(store.root):
            out.append(Problem("catalog", path.name, f"catalog.duckdb was built for {root} (the "
                               "store was moved or copied)", fix, REBUILD))
        elif signature != _signature(store.root):
            out.append(Problem("catalog", path.name, "catalog.duckdb is stale: the files have "
                               f"views it lacks or lost ones it has (built for {signature!r}, "
                               f"the files say {_signature(store.root)!r})", fix, REBUILD))
        names = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
            "AND table_name <> '_curate' ORDER BY 1").fetchall()]
        for name in names:
            try:
                con.execute(f'SELECT count(*) FROM "{name}"').fetchall()
            except duckdb.Error as e:
                out.append(Problem("catalog", f"{path.name}:{name}", f"view {name} fails to query "
                                   f"({str(e).splitlines()[0]})", fix, REBUILD))
    finally:
        con.close()


def _busy(lock: Path) -> bool:
    """Whether a live process holds the flock on `lock` (a crashed one holds nothing)."""
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _duckdb_busy(path: Path) -> bool:
    """Whether a live DuckDB holds its (fcntl) lock on the database file `path`."""
    if path.suffix != ".duckdb":
        return False
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# ------------------------------------------------------------------ repair
def _repair(store: Store, problems: list[Problem], trash: Path) -> list[str]:
    """Carry out each distinct (action, target) once; returns what was done."""
    root = store.root
    done = []
    todo = sorted({(p.action, p.target or p.where) for p in problems},
                  key=lambda a: (_ORDER[a[0]], a[1]))
    for action, target in todo:
        path = root / target
        if action == REBUILD:
            store.rebuild_catalog()
            done.append("rebuilt catalog.duckdb")
            continue
        if not path.exists() and not path.is_symlink():
            continue
        with _owner_lock(root, path):
            if action == RECOVER:
                from curate.finetune.train import _recover

                _recover(path)
                for e in path.glob(".*"):
                    if e.name != ".lock":
                        shutil.rmtree(e) if e.is_dir() else e.unlink()
                done.append(f"finished the interrupted save in {target}")
            elif action == REMOVE:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                done.append(f"removed {target}")
            else:
                dest = trash / target
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.rename(path, dest)
                done.append(f"moved {target} aside to {_rel(root, dest)}")
    return done


@contextlib.contextmanager
def _owner_lock(root: Path, path: Path):
    """The lock of the scorer or run a path belongs to (the store lock is held already):
    repair never pulls a file from under a live writer."""
    rel = path.relative_to(root).parts
    lock = None
    if rel[0] == "scores" and len(rel) > 3:
        lock = root.joinpath(*rel[:3], ".lock")
    elif rel[0] in ("runs", "gradients") and len(rel) > 2:
        lock = root.joinpath(*rel[:2], ".lock")
    if lock is None or not lock.exists():
        yield
        return
    with hold_lock(lock, 0, f"{_rel(root, lock.parent)} is being written by another process"):
        yield
