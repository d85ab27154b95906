"""Every file of ../shared/corpora with --format auto: counts add up, each format maps as
its data says. Skipped (with the reason) where the corpora are absent."""

import collections

import pytest

from conftest import CORPORA, corpora_path, rows
from curate.ingest import FileReader, ingest

pytestmark = pytest.mark.corpora


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    corpora_path()
    from curate.store import Store

    store = Store(tmp_path_factory.mktemp("pool") / "store")
    report = ingest(store, [CORPORA])
    return store, report


def test_whole_pool_counts_add_up(pool):
    store, report = pool
    assert len(report.files) == 301  # 7 gsm8k/fireact/codealpaca files + 294 T0 templates
    assert report.consistent
    tot = report.to_dict()["totals"]
    assert tot["read"] >= 66_000
    assert tot["read"] == tot["stored"] + tot["duplicates"] + tot["quarantined"]
    (n_ex, n_dup, n_q) = rows(store, "SELECT (SELECT count(*) FROM examples), "
                                     "(SELECT count(*) FROM duplicates), "
                                     "(SELECT count(*) FROM quarantine)")[0]
    assert (n_ex, n_dup, n_q) == (tot["stored"], tot["duplicates"], tot["quarantined"])
    assert rows(store, "SELECT count(DISTINCT id) = count(*) FROM examples") == [(True,)]


def test_formats_detected(pool):
    _, report = pool
    fmt = {f.path.split("corpora/")[1]: f.format for f in report.files}
    assert fmt["gsm8k/train.jsonl"] == "qa"
    assert fmt["gsm8k/example_model_solutions.jsonl"] == "multi_response"
    assert fmt["fireact/multitask_multimethod.alpaca.json"] == "alpaca"
    assert fmt["fireact/multitask_multimethod.messages.jsonl"] == "messages"
    assert fmt["fireact/hotpotqa_dev.json"] == "qa"
    assert fmt["codealpaca/code_alpaca_2k.json"] == "alpaca"
    t0 = {v for k, v in fmt.items() if k.startswith("t0/")}
    assert t0 == {"prompt_completion", None}  # None: the T0 folder has some empty files
    empty = [f for f in report.files if f.format is None]
    assert empty and all(f.read == 0 for f in empty)


def test_per_source_expectations(pool):
    store, report = pool
    by = {f.path.split("corpora/")[1]: f for f in report.files}
    assert by["gsm8k/train.jsonl"].stored == 7473
    assert by["gsm8k/test.jsonl"].stored == 1319
    sols = by["gsm8k/example_model_solutions.jsonl"]
    assert sols.records == 1319 and sols.read == 4 * 1319  # one example per model solution
    # FireAct: every row is a ReAct trace; outcomes from "Episode finished, reward = ..."
    alpaca = corpora_path("fireact", "multitask_multimethod.alpaca.json")
    outcomes = collections.Counter(
        o["success"] for b in FileReader(alpaca) for o in b.examples["outcome"].to_pylist())
    assert outcomes == {True: 2014, False: 49}  # reward = True/1: 2014; False/0: 49
    assert rows(store, "SELECT DISTINCT kind FROM examples WHERE source LIKE 'multitask%'") \
        == [("trace",)]
    # the chat rendering of the same traces hashes like the alpaca one
    assert by["fireact/multitask_multimethod.messages.jsonl"].duplicates > 1000
    # code alpaca has two empty outputs; T0 has completions that are only <|endoftext|>
    assert by["codealpaca/code_alpaca_2k.json"].quarantined == 2
    (eos,) = rows(store, "SELECT count(*) FROM examples WHERE source LIKE 'adversarial_qa%' AND "
                         "json_extract_string(meta, '$._curate.eos_stripped') = '<|endoftext|>'")[0]
    assert eos > 0
    assert rows(store, "SELECT count(*) FROM pairs WHERE response LIKE '%<|endoftext|>%'") == [(0,)]


def test_trace_turn_structure(pool):
    store, _ = pool
    (msgs,) = rows(store, "SELECT messages FROM examples WHERE source = "
                          "'multitask_multimethod.alpaca' AND len(messages) > 4 LIMIT 1")[0]
    roles = [m["role"] for m in msgs]
    assert roles[0] == "user" and roles[1] == "assistant" and roles[2] == "tool"
    assert msgs[1]["content"].startswith("Thought:") and "\nAction:" in msgs[1]["content"]
    assert msgs[-1]["content"].startswith("Observation: Episode finished")
