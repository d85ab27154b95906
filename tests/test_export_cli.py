"""Export formats that trainers read as is, and the CLI end to end (exit codes, JSON)."""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from conftest import write_jsonl
from curate.errors import CurateError
from curate.export import export
from curate.ingest import ingest

RECS = [{"instruction": f"Q{i}?", "input": "", "output": f"A{i}.", "tag": i % 2} for i in range(6)]


@pytest.fixture
def filled(tmp_path, store):
    ingest(store, [write_jsonl(tmp_path / "a.jsonl", RECS)])
    return store


def test_export_messages_loads_with_datasets(tmp_path, filled):
    out = tmp_path / "out" / "train.jsonl"
    assert export(filled, out, "messages").rows == 6
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0] == {"messages": [{"role": "user", "content": "Q0?"},
                                     {"role": "assistant", "content": "A0."}]}
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("json", data_files=str(out), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert ds.column_names == ["messages"] and len(ds) == 6


def test_export_parquet_and_jsonl(tmp_path, filled):
    export(filled, tmp_path / "x.parquet", "parquet")
    table = pq.read_table(tmp_path / "x.parquet")
    assert table.num_rows == 6 and "messages" in table.column_names
    export(filled, tmp_path / "x.jsonl", "jsonl", where="json_extract(meta, '$.tag') = 1")
    rows = [json.loads(x) for x in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["meta"] == {"tag": 1} for r in rows)
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "x.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 6


def test_export_errors_leave_no_file(tmp_path, filled):
    out = tmp_path / "bad.jsonl"
    with pytest.raises(CurateError, match="--where filter failed"):
        export(filled, out, where="no_such_column = 1")
    with pytest.raises(CurateError, match="no selection named 'top'"):
        export(filled, out, selection="top")
    assert not out.exists() and not list(tmp_path.glob(".bad.jsonl*"))


def _cli(*args, env_store=None):
    env = dict(os.environ)
    if env_store:
        env["CURATE_STORE"] = str(env_store)
    return subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_cli_end_to_end(tmp_path):
    data = write_jsonl(tmp_path / "a.jsonl", RECS + ['{"broken'])
    st = tmp_path / "st"
    r = _cli("ingest", data, "--store", st, "--json")
    assert r.returncode == 0, r.stderr
    totals = json.loads(r.stdout)["totals"]
    assert totals["read"] == totals["stored"] + totals["duplicates"] + totals["quarantined"] == 7
    r = _cli("stats", "--json", env_store=st)  # the store from CURATE_STORE
    assert json.loads(r.stdout)["totals"][0]["examples"] == 6
    r = _cli("sql", "SELECT count(*) AS n FROM quarantine", "--format", "csv", "--store", st)
    assert r.stdout.split() == ["n", "1"]
    r = _cli("export", "--out", tmp_path / "m.jsonl", "--format", "messages", "--store", st)
    assert r.returncode == 0 and "wrote 6 examples" in r.stdout
    r = _cli("ingest", data, "--store", st)
    assert "skipped" in r.stdout and "[ok]" in r.stdout


@pytest.mark.parametrize("args,message", [
    (["sql", "SELECT * FROM nope"], "SQL error"),
    (["sql", "DROP VIEW examples"], "read-only"),
    (["ingest", "/no/such/file.jsonl"], "no such file"),
    (["export", "--out", "x.jsonl", "--format", "xml"], "unknown export format"),
])
def test_cli_errors_are_one_clear_message(tmp_path, args, message):
    st = tmp_path / "st"
    _cli("ingest", write_jsonl(tmp_path / "a.jsonl", RECS), "--store", st)
    r = _cli(*args, "--store", st)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_cli_help_explains_commands():
    r = _cli("--help")
    for cmd in ("ingest", "stats", "sql", "export"):
        assert cmd in r.stdout
    r = _cli("ingest", "--help")
    assert "--map" in r.stdout and "--format" in r.stdout
