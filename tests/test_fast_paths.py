"""The vectorized paths (Arrow tables, bundles of small files) give exactly what the
per-row path gives: same ids, rows, meta, quarantine and counts."""

import json

import pyarrow as pa
import pytest

import curate.ingest as ingest_module
import curate.ingest.reader as reader_module
from conftest import CORPORA, corpora_path, rows, write_jsonl
from curate.ingest import FileReader, ingest
from curate.store import Store

EXAMPLES = "SELECT id, source, source_row, kind, messages, outcome, meta FROM examples ORDER BY id"
QUARANTINE = "SELECT source, source_row, reason, raw FROM quarantine ORDER BY source, source_row"


def _per_row(monkeypatch):
    monkeypatch.setattr(reader_module, "FAST_FLAT", {})
    monkeypatch.setattr(ingest_module, "FAST_FLAT", {})


@pytest.mark.corpora
@pytest.mark.parametrize("name", ["gsm8k/train.jsonl", "fireact/hotpotqa_dev.json",
                                  "codealpaca/code_alpaca_2k.json",
                                  "t0/data_per_template/adversarial_qa_dbert_based_on.jsonl"])
def test_vectorized_file_equals_row_path(name, monkeypatch):
    path = corpora_path(*name.split("/"))
    batches = list(FileReader(path))
    fast = pa.concat_tables([b.examples for b in batches])
    fast_rejects = [r for b in batches for r in b.rejects]
    _per_row(monkeypatch)
    batches = list(FileReader(path))
    assert fast.equals(pa.concat_tables([b.examples for b in batches]))
    assert fast_rejects == [r for b in batches for r in b.rejects]


def _both(tmp_path, monkeypatch, paths, **kw):
    fast = Store(tmp_path / "fast")
    fast_report = ingest(fast, paths, **kw)
    with monkeypatch.context() as m:
        _per_row(m)
        m.setattr(ingest_module, "SMALL_FILE_BYTES", 0)  # no bundles either
        slow = Store(tmp_path / "slow")
        slow_report = ingest(slow, paths, **kw)
    assert rows(fast, EXAMPLES) == rows(slow, EXAMPLES)
    assert rows(fast, QUARANTINE) == rows(slow, QUARANTINE)
    counts = [(f.path, f.format, f.read, f.stored, f.duplicates, f.quarantined)
              for f in fast_report.files]
    assert counts == [(f.path, f.format, f.read, f.stored, f.duplicates, f.quarantined)
                      for f in slow_report.files]
    return fast_report


@pytest.mark.corpora
def test_bundled_t0_templates_equal_one_by_one(tmp_path, monkeypatch):
    folder = corpora_path("t0", "data_per_template")
    paths = sorted(folder.glob("*.jsonl"))[:60] + sorted(folder.glob("trec_*"))[-8:]
    report = _both(tmp_path, monkeypatch, paths)
    assert report.to_dict()["totals"]["quarantined"] > 0  # empty completions in trec files


def test_bundle_of_mixed_small_files(tmp_path, monkeypatch):
    alpaca = [{"instruction": f"Q{i}", "input": "x" if i % 2 else "", "output": f"A{i}",
               **({"tag": i} if i % 3 else {})} for i in range(30)]
    qa = [{"question": f"Q{i}", "answer": f"A{i}<|endoftext|>"} for i in range(20)]
    chat = [{"messages": [{"role": "user", "content": f"Q{i}"},
                          {"role": "assistant", "content": f"A{i}"}]} for i in range(5)]
    react = [{"instruction": "Where?", "input": "",
              "output": "Thought: look\nAction: finish[x]\nObservation: Episode finished, "
                        "reward = True"}]
    paths = [
        write_jsonl(tmp_path / "a1.jsonl", alpaca[:15] + ['{"broken', json.dumps(react[0])]),
        write_jsonl(tmp_path / "a2.jsonl", alpaca[10:] + [json.dumps({"instruction": "E",
                                                                      "output": ""})]),
        write_jsonl(tmp_path / "b.jsonl", qa),
        write_jsonl(tmp_path / "c.jsonl", chat),
        write_jsonl(tmp_path / "d.jsonl", qa[:5] + alpaca[:3]),
        tmp_path / "e.jsonl",
    ]
    paths[-1].write_text("")
    report = _both(tmp_path, monkeypatch, paths)
    by = {f.path.rsplit("/", 1)[1]: f for f in report.files}
    assert by["a2.jsonl"].duplicates == 5 and by["a1.jsonl"].quarantined == 1
    assert report.consistent


def test_csv_with_map_equals_row_path(tmp_path, monkeypatch):
    path = tmp_path / "r.csv"
    path.write_text("q,a,score\n" + "".join(f'"Q {i}, really?","A {i}",{i}\n' for i in range(50))
                    + '"empty",,3\n')
    _both(tmp_path, monkeypatch, [path], mapping="instruction=q,response=a")


@pytest.mark.corpora
def test_whole_pool_fast_equals_row_path(tmp_path, monkeypatch):
    corpora_path()
    _both(tmp_path, monkeypatch, [CORPORA / "gsm8k", CORPORA / "codealpaca"])
