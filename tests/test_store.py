"""The store: idempotent re-ingest, run records, one writer, readers never blocked,
crash safety (SIGKILL mid-ingest, then resume)."""

import os
import shutil
import signal
import subprocess
import sys
import time

import duckdb
import pytest

from conftest import rows, write_jsonl
from curate.errors import StoreError
from curate.ingest import ingest
from curate.store import Store


def _recs(n, tag="x"):
    return [{"instruction": f"Question {tag}{i}?", "input": "", "output": f"Answer {i}."}
            for i in range(n)]


def test_reingest_adds_zero_rows_and_records_runs(tmp_path, store):
    path = write_jsonl(tmp_path / "a.jsonl", _recs(50) + _recs(5))  # 5 in-file duplicates
    first = ingest(store, [path]).files[0]
    assert (first.read, first.stored, first.duplicates) == (55, 50, 5)
    again = ingest(store, [path]).files[0]
    assert again.skipped and again.stored == 0
    forced = ingest(store, [path], force=True).files[0]
    assert (forced.stored, forced.duplicates) == (0, 55)
    assert rows(store, "SELECT count(*) FROM examples") == [(50,)]
    runs = rows(store, "SELECT path, file_hash, read, stored, duplicates, quarantined, "
                       "curate_version, finished_at FROM ingest_runs ORDER BY finished_at")
    assert len(runs) == 2
    assert runs[0][0] == str(path) and len(runs[0][1]) == 32
    assert runs[0][2:6] == (55, 50, 5, 0) and runs[1][2:6] == (55, 0, 55, 0)
    dup_ids = {r[0] for r in rows(store, "SELECT id FROM duplicates")}
    stored_ids = {r[0] for r in rows(store, "SELECT id FROM examples")}
    assert dup_ids <= stored_ids  # each duplicate names the example it repeats


def test_same_file_other_source_is_read_again(tmp_path, store):
    path = write_jsonl(tmp_path / "a.jsonl", _recs(3))
    ingest(store, [path])
    f = ingest(store, [path], source="other").files[0]
    assert not f.skipped and f.duplicates == 3


def test_second_writer_fails_clearly_and_readers_are_not_blocked(tmp_path, store):
    ingest(store, [write_jsonl(tmp_path / "a.jsonl", _recs(3))])
    with store.writer():
        with pytest.raises(StoreError, match="being written by another process"):
            with Store(store.root).writer(wait=0.2):
                pass
        # a reader in another process works while the lock is held
        out = subprocess.run([sys.executable, "-c", (
            "import duckdb,sys; c=duckdb.connect(sys.argv[1], read_only=True);"
            "print(c.execute('select count(*) from examples').fetchall()[0][0])"),
            str(store.catalog_path)], capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "3", out.stderr
        assert rows(store, "SELECT count(*) FROM examples") == [(3,)]


def test_catalog_opens_with_plain_duckdb(tmp_path, store):
    ingest(store, [write_jsonl(tmp_path / "a.jsonl", _recs(4))])
    con = duckdb.connect(str(store.catalog_path), read_only=True)
    names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"examples", "quarantine", "duplicates", "ingest_runs", "pairs"} <= names
    assert con.execute("SELECT count(*) FROM pairs WHERE response LIKE 'Answer%'").fetchall() == [(4,)]


def test_moved_store_still_queries(tmp_path, store):
    ingest(store, [write_jsonl(tmp_path / "a.jsonl", _recs(4))])
    moved = tmp_path / "moved"
    shutil.move(store.root, moved)
    assert rows(Store(moved), "SELECT count(*) FROM examples") == [(4,)]


def test_not_a_store(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(StoreError, match="not a curate store"):
        with Store(tmp_path / "junk").writer():
            pass
    with pytest.raises(StoreError, match="fix: ingest something first"):
        Store(tmp_path / "nothing").connect()


def test_sigkill_mid_ingest_then_resume_gives_the_same_store(tmp_path):
    """Kill the ingest while it writes; the store stays readable and consistent, and a
    rerun ends where an uninterrupted run ends."""
    files = [write_jsonl(tmp_path / f"part{i}.jsonl", _recs(60_000, tag=f"{i}-"))
             for i in range(4)]
    killed = Store(tmp_path / "killed")
    code = ("import sys; from curate.store import Store; from curate.ingest import ingest; "
            "import curate.ingest as m; m.GROUP_BYTES = 1;"
            "ingest(Store(sys.argv[1]), sys.argv[2:])")
    proc = subprocess.Popen([sys.executable, "-c", code, str(killed.root), *map(str, files)])
    deadline = time.time() + 120
    # kill as soon as the first file is committed, while the next ones are being read
    while time.time() < deadline:
        committed = list(killed.root.glob("ingest/*/run.parquet"))
        if committed:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert committed, "the ingest never committed a file"
    n_mid = rows(killed, "SELECT count(*) FROM examples")[0][0]
    runs_mid = rows(killed, "SELECT coalesce(sum(stored), 0) FROM ingest_runs")[0][0]
    assert n_mid == runs_mid and n_mid % 60_000 == 0 and 0 < n_mid < 240_000

    resumed = ingest(killed, files)
    assert any(f.skipped for f in resumed.files)  # committed files are not read again
    clean = Store(tmp_path / "clean")
    ingest(clean, files)
    q = "SELECT id, source, source_row FROM examples ORDER BY id"
    assert rows(killed, q) == rows(clean, q)
    assert rows(killed, "SELECT count(*) FROM duplicates") == [(0,)]
    assert not list(killed.root.glob(".tmp/*"))
