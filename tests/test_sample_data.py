"""The project's own sample corpus (data/): the planted cases its README lists."""

from conftest import DATA, rows
from curate.ingest import ingest


def test_sample_corpus_planted_cases(store):
    report = ingest(store, [DATA])
    tot = report.to_dict()["totals"]
    assert tot["files"] == 8 and report.consistent
    assert tot["quarantined"] == 8  # the 8 planted broken rows
    assert tot["duplicates"] == 12  # the 12 planted exact duplicates
    broken = set(rows(store, "SELECT regexp_extract(path, '[^/]+$'), source_row FROM quarantine"))
    assert broken == {("alpaca_general.json", 140), ("chat_support.jsonl", 66),
                      ("chat_support.jsonl", 72), ("chat_support.jsonl", 25),
                      ("sharegpt_tutor.jsonl.gz", 17), ("qa_math.jsonl", 20),
                      ("prompt_completion.jsonl.zst", 40), ("agent_traces.json", 31)}
    kinds = dict(rows(store, "SELECT kind, count(*) FROM examples GROUP BY 1"))
    assert kinds["trace"] >= 30 and kinds["conversation"] > 0 and kinds["instruction"] > 300
