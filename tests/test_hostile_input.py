"""Hostile input: each kind ingested by a real `curate ingest` process, with bounded
memory (peak RSS measured), the hostile row quarantined with a reason (or a clear error
where the whole file cannot be read), the good rows around it kept, and no traceback.
The inputs are built by benchmarks/_hostile.py (also the benchmark's table)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import ROOT, rows, write_jsonl
from curate.errors import InputError
from curate.ingest import ingest

sys.path.append(str(ROOT / "benchmarks"))
import _hostile  # noqa: E402

MAX_RSS_MB = 600  # an idle `curate ingest` is ~180 MiB; the inputs are 30 MB to 2 GB


def _store_text_is_valid_utf8(store_dir: Path) -> None:
    for part in (store_dir / "ingest").rglob("*.parquet"):
        pq.read_table(part).validate(full=True)  # invalid UTF-8 in a string fails here


@pytest.mark.parametrize("kind", _hostile.KINDS)
def test_hostile_kind_survives_in_bounded_memory(kind, tmp_path):
    r = _hostile.check(kind, tmp_path)
    assert not r["problems"], (r["problems"], r["stderr"])
    assert r["peak_rss_mb"] < MAX_RSS_MB, r
    assert "Traceback" not in r["stderr"]
    if r["rc"] == 2:
        assert r["stderr"].lstrip().startswith("error:") and "fix:" in r["stderr"]
        if (Path(r["store"]) / "catalog.duckdb").exists():
            from curate.store import Store

            assert rows(Store(r["store"]), "SELECT count(*) FROM examples") == [(0,)]
    else:
        if _hostile._cases()[kind][3]:  # a reason is expected: the hostile row is quarantined
            assert r["quarantined"] >= 1
        _store_text_is_valid_utf8(Path(r["store"]))


def test_truncated_gz_names_file_offset_and_cause_and_keeps_earlier_files(tmp_path, store):
    good = write_jsonl(tmp_path / "a_good.jsonl", [_hostile.GOOD[0]])
    cut = _hostile.make("truncated gzip", tmp_path)
    env_store = str(store.root)
    r = subprocess.run([*_hostile.CURATE, "ingest", str(good), str(cut)], cwd=ROOT,
                       capture_output=True, text=True,
                       env={**__import__("os").environ, "CURATE_STORE": env_store})
    assert r.returncode == 2, r.stderr
    err = " ".join(r.stderr.split())
    assert "Traceback" not in r.stderr and "Aborted" not in r.stderr
    assert err.startswith("error:") and "cut.jsonl.gz" in err
    assert "cannot decompress (gzip) after" in err and "of the compressed file" in err
    assert "EOFError" in err and "incomplete or damaged" in err and "gzip -t" in err
    assert "KiB" in err  # the offset, in the one size unit
    # the file before it is committed, nothing of the broken one
    assert rows(store, "SELECT source, count(*) FROM examples GROUP BY 1") == [("a_good", 1)]
    assert rows(store, "SELECT count(*) FROM quarantine") == [(0,)]
    assert rows(store, "SELECT count(*) FROM ingest_runs WHERE path LIKE '%cut.jsonl.gz'") \
        == [(0,)]


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_damaged_compressed_file_is_an_input_error(tmp_path, store, compression):
    records = [{**_hostile.GOOD[0], "output": f"a{i}"} for i in range(20_000)]
    ext = ".gz" if compression == "gzip" else ".zst"
    path = write_jsonl(tmp_path / f"x.jsonl{ext}", records, compress=compression)
    data = bytearray(path.read_bytes())
    data = data[: len(data) - 20]  # truncated
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"cannot decompress") as e:
        ingest(store, [path])
    assert str(path) in str(e.value) and "fix:" in str(e.value)
    assert rows(store, "SELECT count(*) FROM examples") == [(0,)]


def test_escaped_nul_is_kept_through_sql_and_export(tmp_path, store):
    from curate.export import export

    path = _hostile.make("NUL bytes", tmp_path)
    report = ingest(store, [path], max_quarantine="100%")
    f = report.files[0]
    assert (f.stored, f.quarantined) == (4, 1)
    (reason,) = rows(store, "SELECT reason FROM quarantine")[0]
    assert reason.startswith("malformed JSON")  # a raw NUL is a control character
    (raw,) = rows(store, "SELECT raw FROM quarantine")[0]
    assert "\x00" in raw or "\\x00" in raw
    got = rows(store, "SELECT messages[1].content, messages[2].content FROM examples "
                      "WHERE messages[1].content LIKE 'escaped%'")
    assert got == [("escaped \x00 NUL", "kept \x00 too")]
    out = tmp_path / "out.jsonl"
    export(store, out, format="messages")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    texts = [m["content"] for x in lines for m in x["messages"]]
    assert "escaped \x00 NUL" in texts and "kept \x00 too" in texts


def test_lone_surrogates_never_reach_the_store(tmp_path, store):
    jsonl = _hostile.make("lone surrogate (JSONL)", tmp_path)
    array = _hostile.make("lone surrogate (array)", tmp_path)
    report = ingest(store, [jsonl, array], max_quarantine="100%")
    lines, arr = report.files
    assert (lines.stored, lines.quarantined) == (3, 1)
    assert lines.read == lines.stored + lines.duplicates + lines.quarantined
    (reason,) = rows(store, "SELECT reason FROM quarantine")[0]
    assert reason.startswith("malformed JSON") and "surrogate" in reason
    # a JSON array streams through ijson, which reads the lone surrogate as "?"
    assert arr.read == arr.stored + arr.duplicates + arr.quarantined == 4
    _store_text_is_valid_utf8(store.root)
    bad = rows(store, "SELECT messages[1].content FROM examples WHERE messages[1].content "
                      "LIKE 'bad%'")
    assert bad in ([], [("bad ? half",)])


def test_long_line_is_capped_sampled_and_reading_resyncs(tmp_path, store):
    path = tmp_path / "long.jsonl"
    _hostile._long_line(path, 40 << 20, _hostile.GOOD[:2], _hostile.GOOD[2:])
    report = ingest(store, [path], max_record_bytes=1 << 20)
    f = report.files[0]
    assert (f.stored, f.quarantined) == (3, 1)
    ((row, reason, n),) = rows(store, "SELECT source_row, reason, length(raw) FROM quarantine")
    assert row == 2 and reason.startswith("too large: record is 40.0 MiB, over the 1.0 MiB")
    assert n <= 64 << 10
    assert [r[0] for r in rows(store, "SELECT source_row FROM examples ORDER BY 1")] == [0, 1, 3]


def test_long_last_line_without_newline(tmp_path, store):
    path = tmp_path / "tail.jsonl"
    with open(path, "wb") as fh:
        fh.write(_hostile._lines(_hostile.GOOD))
        fh.write(b'{"instruction": "' + b"b" * (12 << 20))  # no newline, no end
    report = ingest(store, [path])
    f = report.files[0]
    assert (f.stored, f.quarantined) == (3, 1)
    assert rows(store, "SELECT source_row FROM quarantine") == [(3,)]


def test_repeated_line_zst_bomb_message(tmp_path, store):
    import zstandard

    path = tmp_path / "bomb.jsonl.zst"
    member = zstandard.ZstdCompressor(level=19).compress(
        _hostile._lines([_hostile.GOOD[0]]) * 400_000)  # 26 MB in ~2 KB
    with open(path, "wb") as fh:
        for _ in range(20):
            fh.write(member)
    with pytest.raises(InputError, match=r"compression bomb: .* inflated to over .*MiB"):
        ingest(store, [path])
    assert rows(store, "SELECT count(*) FROM examples") == [(0,)]
