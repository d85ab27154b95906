"""Broken rows go to quarantine with a reason and their raw text; valid rows are kept."""

import json

import pytest

from conftest import rows, write_jsonl
from curate.errors import InputError
from curate.ingest import ingest

GOOD = {"instruction": "Name a colour.", "input": "", "output": "Blue."}


def _mixed_lines():
    return [
        json.dumps(GOOD),
        '{"instruction": "Truncated", "output": "oops',  # malformed JSON
        json.dumps({"instruction": "Empty answer", "input": "", "output": "   "}),
        json.dumps({"instruction": "Wrong type", "input": "", "output": 42}),
        json.dumps({"instruction": "No output at all"}),
        '["not", "an", "object"]',
        "",  # blank line: not a record
        json.dumps({"instruction": "Last good one", "input": "", "output": "Green."}),
    ]


def test_bad_rows_quarantined_with_reasons(tmp_path, store):
    lines = _mixed_lines()
    path = tmp_path / "mixed.jsonl"
    data = "\n".join(lines).encode() + b"\n"
    # invalid UTF-8 inside a string value
    data += b'{"instruction": "Bad bytes \xff\xfe here", "input": "", "output": "x"}\n'
    path.write_bytes(data)
    report = ingest(store, [path], max_quarantine="100%")  # 6 of 8 bad: kept on purpose
    f = report.files[0]
    assert (f.stored, f.duplicates, f.quarantined) == (2, 0, 6)
    assert f.read == f.stored + f.duplicates + f.quarantined
    got = dict(rows(store, "SELECT source_row, reason FROM quarantine"))
    assert "malformed JSON" in got[1]
    assert got[2] == "empty response: no assistant/response text"
    assert "'output' is int (42), expected text" in got[3]
    assert got[4].startswith("missing field: a response")
    assert "expected a JSON object" in got[5]
    assert "invalid UTF-8" in got[8]
    raw = dict(rows(store, "SELECT source_row, raw FROM quarantine"))
    assert raw[1] == lines[1]  # the raw text, exactly as written
    assert "\\xff\\xfe" in raw[8]  # undecodable bytes shown escaped, not lost
    kept = [r[0] for r in rows(store, "SELECT source_row FROM examples ORDER BY 1")]
    assert kept == [0, 7]


def test_huge_record_goes_to_quarantine(tmp_path, store):
    big = {"instruction": "Summarise.", "input": "word " * 2_000_000, "output": "Words."}
    path = write_jsonl(tmp_path / "big.jsonl", [GOOD, big])
    assert path.stat().st_size > 10_000_000
    report = ingest(store, [path])
    assert (report.files[0].stored, report.files[0].quarantined) == (1, 1)
    (reason,) = rows(store, "SELECT reason FROM quarantine")[0]
    assert "over the 4.0 MiB limit" in reason and "--max-record-mb" in reason


def test_huge_record_in_json_array(tmp_path, store):
    big = {"instruction": "Summarise.", "input": "word " * 1_000_000, "output": "Words."}
    path = tmp_path / "big.json"
    path.write_text(json.dumps([GOOD, big]))
    report = ingest(store, [path], max_record_bytes=1 << 20)
    assert (report.files[0].stored, report.files[0].quarantined) == (1, 1)


def test_broken_json_array_keeps_rows_before_the_break(tmp_path, store):
    path = tmp_path / "cut.json"
    path.write_text(json.dumps([GOOD, {**GOOD, "output": "Red."}])[:-30])
    report = ingest(store, [path])
    f = report.files[0]
    assert f.stored == 1 and f.quarantined == 1
    (reason,) = rows(store, "SELECT reason FROM quarantine")[0]
    assert "array cannot be parsed after item 0" in reason


def test_unknown_format_stops_and_keeps_earlier_files(tmp_path, store):
    good = write_jsonl(tmp_path / "a_good.jsonl", [GOOD])
    odd = write_jsonl(tmp_path / "b_odd.jsonl", [{"x": 1}])
    with pytest.raises(InputError, match="b_odd.jsonl"):
        ingest(store, [good, odd])
    assert rows(store, "SELECT count(*) FROM examples") == [(1,)]
    # the rerun skips the committed file
    report = ingest(store, [good])
    assert report.files[0].skipped


def test_missing_path_error(store):
    with pytest.raises(InputError, match="no such file"):
        ingest(store, ["/nonexistent/file.jsonl"])


def test_empty_file(tmp_path, store):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    report = ingest(store, [path])
    assert report.files[0].read == 0 and report.consistent
