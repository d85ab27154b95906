"""Shapes public corpora come in that a flat-record reader loses: nested instances
(self-instruct, Super-NaturalInstructions), one JSON object of records keyed by id
(trajectory dumps), record lists inside an object, JSON lines named .json, ReAct traces
with the task inside the transcript, predictions with a reference, nested --map paths,
and the refusal of a file that would be almost all quarantined. Each fixture is written
here in the shape of the public file, with its field names and quirks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import rows, write_jsonl
from curate.errors import InputError
from curate.ingest import ingest
from curate.selectors import select
from curate.store import Store

ALPACA_HEADER = ("Below is an instruction that describes a task. Write a response that "
                 "appropriately completes the request.")


def examples(store, where: str = "true") -> list[dict]:
    con = store.connect()
    try:
        rel = con.execute(f"SELECT source_row, kind, messages, outcome, meta FROM examples "
                          f"WHERE {where} ORDER BY source_row, id")
        cols = [d[0] for d in rel.description]
        out = [dict(zip(cols, r)) for r in rel.fetchall()]
    finally:
        con.close()
    for r in out:
        r["turns"] = [(m["role"], m["content"]) for m in r["messages"]]
        r["meta"] = json.loads(r["meta"]) if r["meta"] else {}
    # several examples of one record (instances): in the order of the list
    return sorted(out, key=lambda r: (r["source_row"], *[
        v["index"] for v in r["meta"].values() if isinstance(v, dict) and "index" in v]))


def cli(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------ nested instances
SELF_INSTRUCT = [
    {"id": "seed_task_0", "name": "breakfast_suggestion",
     "instruction": "Is there anything I can eat for a breakfast that doesn't include eggs?",
     "instances": [{"input": "", "output": "Yes: oatmeal with banana and nuts."}],
     "is_classification": False},
    {"id": "seed_task_1", "name": "antonym_relation",
     "instruction": "What is the relation between the given pairs?",
     "instances": [{"input": "Night : Day :: Right : Left", "output": "Antonyms."},
                   {"input": "Hot : Cold :: Up : Down", "output": "Opposites."}],
     "is_classification": False},
]


def test_self_instruct_instances_one_example_each(tmp_path, store):
    report = ingest(store, [write_jsonl(tmp_path / "seed_tasks.jsonl", SELF_INSTRUCT)])
    f = report.files[0]
    assert (f.format, f.records, f.stored, f.quarantined) == ("instances", 2, 3, 0)
    got = examples(store)
    assert [r["turns"] for r in got] == [
        [("user", SELF_INSTRUCT[0]["instruction"]),
         ("assistant", "Yes: oatmeal with banana and nuts.")],
        [("user", "What is the relation between the given pairs?\n\nNight : Day :: Right : Left"),
         ("assistant", "Antonyms.")],
        [("user", "What is the relation between the given pairs?\n\nHot : Cold :: Up : Down"),
         ("assistant", "Opposites.")]]
    assert [r["meta"]["instances"]["index"] for r in got] == [0, 0, 1]
    assert got[1]["meta"]["name"] == "antonym_relation" and "instances" not in json.dumps(
        [r["turns"] for r in got])
    assert "user=instruction+instances[].input, response=instances[].output" in f.fields


def test_super_natural_instructions_task_file(tmp_path, store):
    """SuperNI task files: one JSON document, capitalised keys, lists of texts."""
    task = {"Contributors": ["x"], "Definition": ["Answer with the sum of the numbers."],
            "Positive Examples": [{"input": "1 2", "output": "3", "explanation": "1+2"}],
            "Instances": [{"id": "task1-a", "input": "2 2", "output": ["4", "four"]},
                          {"id": "task1-b", "input": "3 4", "output": ["7"]}]}
    path = tmp_path / "task001_sum.json"
    path.write_text(json.dumps(task, indent=2))
    report = ingest(store, [path])
    assert (report.files[0].format, report.files[0].stored) == ("instances", 2)
    got = examples(store)
    assert got[0]["turns"] == [("user", "Answer with the sum of the numbers.\n\n2 2"),
                               ("assistant", "4")]
    assert got[0]["meta"]["other_response"] == ["four"]
    assert got[0]["meta"]["Instances"] == {"index": 0, "id": "task1-a"}  # as spelled
    assert got[0]["meta"]["Positive Examples"][0]["explanation"] == "1+2"


# ------------------------------------------------------------ one object of records
def _fireact_traj(question: str, answer: str, ok: bool) -> str:
    return (f"{ALPACA_HEADER}\n\n### Instruction:\n{question}\n\n### Response:\n"
            f"Thought: I need to search {question}\nAction: search[{question}]\n"
            f"Observation: A page about {answer}.\nThought: The answer is {answer}.\n"
            f"Action: finish[{answer}]\nObservation: Episode finished, reward = {ok}\n")


def _trajectory_dump(n: int) -> dict:
    """FireAct's trajs/*.json: {"<question idx>": {reward, em, f1, gt, pred, prompt: "",
    traj, traj_by_line}} with the task inside the Alpaca-templated transcript."""
    dump = {}
    for i in range(n):
        q, a, ok = f"Who founded company number {i}?", f"Founder {i}", i % 2 == 0
        traj = _fireact_traj(q, a, ok)
        dump[str(6000 + 7 * i)] = {"reward": ok, "em": ok, "f1": 1.0 if ok else 0,
                                   "gt": a.lower(), "pred": a.lower() if ok else "nobody",
                                   "prompt": "", "traj": traj,
                                   "traj_by_line": traj.split("\n")}
    return dump


def test_trajectory_dump_keyed_by_id(tmp_path, store):
    path = tmp_path / "hotpotqa_dev_0_500_llama-2-7b.json"
    path.write_text(json.dumps(_trajectory_dump(500), indent=2))
    report = ingest(store, [path])
    f = report.files[0]
    assert (f.format, f.read, f.stored, f.quarantined) == ("trajectory", 500, 500, 0)
    first = examples(store, "source_row = 0")[0]
    q = "Who founded company number 0?"
    assert first["kind"] == "trace"
    assert first["turns"][0] == ("user", q)  # the task, not the template, not empty
    assert [r for r, _ in first["turns"]] == ["user", "assistant", "tool", "assistant", "tool"]
    assert first["turns"][1][1] == f"Thought: I need to search {q}\nAction: search[{q}]"
    assert first["outcome"] == {"success": True, "reward": 1.0}
    assert first["meta"]["_key"] == "6000" and first["meta"]["reference"] == "founder 0"
    assert first["meta"]["_curate"]["task_from"] == {"template": "alpaca",
                                                     "header": ALPACA_HEADER}
    assert ALPACA_HEADER not in json.dumps(first["turns"])
    # one prompt per trace: rejection sampling keeps every correct trace, not 2 of 500
    assert rows(store, "SELECT count(DISTINCT prompt) FROM pairs") == [(500,)]
    sel = select(store, "rejection-sampling", "rs", k=2)
    assert len(sel.ids) == 250


def test_trajectory_dump_of_chat_turns_and_react_prompt(tmp_path, store):
    """The same dump from a chat model (traj = turns, observations sent as user turns),
    and ReAct's own dumps (a few-shot prompt, the transcript opening `Question: ...`)."""
    dump = {
        "6238": {"reward": True, "gt": "seth macfarlane", "prompt": [],
                 "traj": [{"role": "user", "content": "Who created the show?"},
                          {"role": "assistant",
                           "content": "Thought: It is Seth MacFarlane.\nAction: finish[Seth MacFarlane]"},
                          {"role": "user", "content": "Observation: Episode finished, reward = True"}]},
        "17": {"reward": 0.25, "gt": "1972", "prompt": "Solve a question answering task with "
               "interleaving Thought, Action, Observation steps.\nQuestion: (few-shot) ...",
               "traj": "Question: Since what year?\nThought 1: Search it.\nAction 1: "
                       "Search[year]\nObservation 1: 1972.\nThought 2: Done.\n"
                       "Action 2: Finish[1972]\nObservation 2: Episode finished, reward = 0.25"},
    }
    path = tmp_path / "trajs.json"
    path.write_text(json.dumps(dump))
    ingest(store, [path])
    chat, react = sorted(examples(store), key=lambda r: r["meta"]["_key"])[::-1]
    assert chat["turns"] == [
        ("user", "Who created the show?"),
        ("assistant", "Thought: It is Seth MacFarlane.\nAction: finish[Seth MacFarlane]"),
        ("tool", "Observation: Episode finished, reward = True")]
    assert chat["outcome"]["success"] is True
    assert react["turns"][0] == ("system", dump["17"]["prompt"])
    assert react["turns"][1] == ("user", "Since what year?")
    assert react["turns"][2] == ("assistant", "Thought 1: Search it.\nAction 1: Search[year]")
    assert react["outcome"] == {"success": True, "reward": 0.25}  # numeric reward kept
    assert react["meta"]["_curate"]["task_from"] == {"label": "Question:"}


@pytest.mark.parametrize("layout", ["wrapped", "splits"])
def test_records_inside_an_object(tmp_path, store, layout):
    recs = [{"instruction": f"Q{i}", "output": f"A{i}"} for i in range(4)]
    doc = {"version": "1.0", "data": recs} if layout == "wrapped" else \
        {"train": recs[:3], "test": recs[3:]}
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(doc))
    f = ingest(store, [path], max_quarantine="100%").files[0]
    assert f.stored == 4
    keys = [r["meta"]["_key"] for r in examples(store)]
    assert keys == (["data"] * 4 if layout == "wrapped" else ["train"] * 3 + ["test"])
    if layout == "wrapped":  # a top-level value that is no record is not dropped unseen
        assert rows(store, "SELECT reason, raw FROM quarantine") == [
            ("not a record: the top-level field 'version' holds \"1.0\", not an object or "
             "a list of records", '{"version":"1.0"}')]


def test_large_keyed_object_streams(tmp_path, store, monkeypatch):
    """Over the one-call size the object streams pair by pair, with the same rows."""
    import curate.ingest.sources as sources

    path = tmp_path / "trajs.json"
    path.write_text(json.dumps(_trajectory_dump(40)))
    monkeypatch.setattr(sources, "WHOLE_JSON_BYTES", 1000)
    ingest(store, [path])
    small = Store(tmp_path / "small")
    monkeypatch.undo()
    ingest(small, [path])
    q = "SELECT id, source_row, meta FROM examples ORDER BY id"
    assert rows(store, q) == rows(small, q) and len(rows(store, q)) == 40


@pytest.mark.parametrize("name, text", [
    ("lines.json", '{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n'),
    ("array.jsonl", '[\n {"instruction": "a", "output": "b"},\n {"instruction": "c", "output": "d"}\n]\n'),
    ("pretty.jsonl", '{\n  "instruction": "a",\n  "output": "b"\n}\n'),
    ("keyed.jsonl", '{\n "x": {"instruction": "a", "output": "b"},\n "y": {"instruction": "c", "output": "d"}\n}'),
])
def test_layout_comes_from_the_content_not_the_name(tmp_path, store, name, text):
    path = tmp_path / name
    path.write_text(text)
    f = ingest(store, [path]).files[0]
    assert (f.quarantined, f.stored) == (0, text.count('"instruction"'))


# --------------------------------------------------------- predictions and references
def test_predictions_keep_the_reference(tmp_path, store):
    preds = [{"prompt": "Capital of France?", "response": "Paris", "target": "Paris"},
             {"prompt": "2+2?", "response": "5", "target": "4", "model": "m1"}]
    f = ingest(store, [write_jsonl(tmp_path / "predictions.jsonl", preds)]).files[0]
    got = examples(store)
    assert got[1]["turns"] == [("user", "2+2?"), ("assistant", "5")]
    assert got[1]["meta"] == {"reference": "4", "model": "m1",
                              "_curate": {"reference_from": "target"}}
    assert f.fields == {"user=prompt, response=response, reference=target": 2}
    # where the only answer field is `targets`, it is the response (FLAN inputs/targets)
    flan = [{"inputs": "Translate: chat", "targets": "cat"}]
    f = ingest(store, [write_jsonl(tmp_path / "flan.jsonl", flan)]).files[0]
    assert (f.format, f.fields) == ("input_output", {"user=inputs, response=targets": 1})


# ------------------------------------------------------------------ nested --map paths
def test_map_takes_nested_paths_in_json(tmp_path, store):
    recs = [{"task": {"text": "Name a color."}, "answers": ["Red.", "Blue."], "n": 1},
            {"task": {"text": "Name a fruit."}, "answers": ["Apple."], "n": 2}]
    path = write_jsonl(tmp_path / "nested.jsonl", recs)
    f = ingest(store, [path], mapping="instruction=task.text,response=answers[0]").files[0]
    assert f.stored == 2
    got = examples(store)
    assert got[0]["turns"] == [("user", "Name a color."), ("assistant", "Red.")]
    assert got[0]["meta"] == {"answers": ["Red.", "Blue."], "n": 1}  # the mapped text goes
    assert f.fields == {"user=task.text, response=answers[0]": 2}


def test_map_explodes_a_list_and_reads_a_trace_field(tmp_path, store):
    recs = [{"instruction": "Add.", "examples": [{"in": "1 2", "out": "3"}, {"in": "2 2", "out": "4"}]}]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(recs))
    f = ingest(store, [path], mapping="input=examples[].in,response=examples[].out").files[0]
    assert f.stored == 2
    assert [r["meta"]["examples"]["index"] for r in examples(store)] == [0, 1]
    dump = {"a": {"ask": "What is b?", "steps": "Thought: b.\nAction: finish[b]\n"
                  "Observation: Episode finished, reward = True"}}
    (tmp_path / "dump.json").write_text(json.dumps(dump))
    f = ingest(store, [tmp_path / "dump.json"], mapping="instruction=ask,traj=steps").files[0]
    assert f.format == "trajectory"
    (trace,) = examples(store, "kind = 'trace'")
    assert trace["turns"][0] == ("user", "What is b?") and trace["outcome"]["success"]


def test_map_refuses_two_exploded_lists():
    from curate.ingest import parse_mapping

    with pytest.raises(InputError, match="more than one list"):
        parse_mapping("input=a[].x,response=b[].y")
    with pytest.raises(InputError, match="cannot be read"):
        parse_mapping("response=a[x")


# -------------------------------------------------------------- refusing a lost file
def test_all_quarantined_file_is_refused_with_the_fix(tmp_path):
    recs = [{"instruction": f"Add {i}.", "examples": [{"in": f"{i} 1", "out": str(i + 1)}]}
            for i in range(10)]
    path = write_jsonl(tmp_path / "tasks.jsonl", recs)
    good = write_jsonl(tmp_path / "good.jsonl", [{"instruction": "Hi", "output": "Hello"}])
    st = tmp_path / "st"
    r = cli("ingest", path, good, "--store", st)
    assert r.returncode == 2, r.stdout + r.stderr
    err = " ".join(r.stderr.split())
    assert "tasks.jsonl: refused: 10 of 10 rows (100%) quarantined" in err
    assert "top reason: missing field: a response" in err
    assert "--map input=examples[].in,response=examples[].out" in err
    store = Store(st)
    # the rows stay in quarantine, nothing else of the file; the other file is stored
    assert rows(store, "SELECT count(*) FROM quarantine") == [(10,)]
    assert rows(store, "SELECT source, count(*) FROM examples GROUP BY 1") == [("good", 1)]
    # the same command again: refused again, the rows not quarantined twice
    assert cli("ingest", path, "--store", st).returncode == 2
    assert rows(store, "SELECT count(*) FROM quarantine") == [(10,)]
    r = cli("ingest", path, "--store", st, "--map", "input=examples[].in,response=examples[].out")
    assert r.returncode == 0, r.stderr
    assert rows(store, "SELECT count(*) FROM examples WHERE source = 'tasks'") == [(10,)]


def test_mostly_quarantined_file_is_refused_over_the_limit(tmp_path, store):
    recs = [{"instruction": "ok", "output": "fine"}] + [{"instruction": f"bad {i}"} for i in range(3)]
    path = write_jsonl(tmp_path / "mostly_bad.jsonl", recs)
    report = ingest(store, [path])
    f = report.files[0]
    assert report.refused == [f] and (f.read, f.stored, f.quarantined, f.refused_rows) == (4, 0, 3, 1)
    assert "over --max-quarantine 50%" in f.refused and report.consistent
    assert rows(store, "SELECT count(*) FROM examples") == [(0,)]
    again = ingest(store, [path], max_quarantine="80%")  # not skipped: the run was refused
    assert again.files[0].stored == 1 and again.files[0].requarantined == 3
    assert rows(store, "SELECT count(*) FROM quarantine") == [(3,)]


def test_force_does_not_quarantine_rows_twice(tmp_path, store):
    recs = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(20)] + \
        ["{not json"] * 3 + [{"instruction": "no answer"}] * 6
    path = write_jsonl(tmp_path / "mixed.jsonl", recs)
    first = ingest(store, [path]).files[0]
    again = ingest(store, [path], force=True).files[0]
    assert (first.read, first.stored, first.quarantined) == (29, 20, 9)
    assert (again.read, again.duplicates, again.quarantined, again.requarantined) == (29, 20, 9, 9)
    assert rows(store, "SELECT count(*) FROM quarantine") == [(9,)]
    assert rows(store, "SELECT sum(quarantined - requarantined) FROM ingest_runs") == [(9,)]


# ----------------------------------------------------------------- Ctrl-C and SIGTERM
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_commits_nothing_of_the_file(tmp_path, sig, code):
    recs = [{"instruction": f"q{i} " + "x" * 200, "output": f"a{i} " + "y" * 400}
            for i in range(150_000)]
    small = write_jsonl(tmp_path / "a_small.jsonl", recs[:10])
    big = write_jsonl(tmp_path / "b_big.jsonl", recs[10:])
    st = tmp_path / "st"
    proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "ingest", small, big,
                             "--store", st], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list(st.glob(".tmp/*/examples-*.parquet")):
        time.sleep(0.01)  # the big file is being read: its first part is staged
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, out + err
    assert "nothing of" in err and "b_big.jsonl" in " ".join(err.split())
    store = Store(st)
    # the file finished before is kept, nothing of the interrupted one
    assert rows(store, "SELECT source, count(*) FROM examples GROUP BY 1") == [("a_small", 10)]
    assert rows(store, "SELECT count(*) FROM ingest_runs") == [(1,)]
    # the rerun reads the rest once: no row of the user's own counted as a duplicate
    r = cli("ingest", small, big, "--store", st, "--json")
    totals = json.loads(r.stdout)["totals"]
    assert (totals["stored"], totals["duplicates"], totals["skipped_files"]) == (149_990, 0, 1)


def test_error_part_way_keeps_nothing_of_the_file(tmp_path, store):
    """A CSV that breaks after its first rows: the error names the file, nothing of it is
    stored, and once it is fixed its rows are stored, not found as duplicates."""
    head = "instruction,output\n" + "".join(f"q{i},a{i}\n" for i in range(5000))
    path = tmp_path / "broken.csv"
    path.write_text(head + "q,a,extra column\n" + "".join(f"r{i},b{i}\n" for i in range(10)))
    ok = write_jsonl(tmp_path / "a_first.jsonl", [{"instruction": "x", "output": "y"}])
    with pytest.raises(InputError, match="broken.csv"):
        ingest(store, [ok, path])
    assert rows(store, "SELECT source, count(*) FROM examples GROUP BY 1") == [("a_first", 1)]
    path.write_text(head)
    f = ingest(store, [ok, path]).files[1]
    assert (f.stored, f.duplicates) == (5000, 0)


# ------------------------------------------------ chat shapes the issue does not name
def test_other_chat_shapes(tmp_path, store):
    """lmsys-chat-1m / WildChat (`conversation`), UltraChat (`data`: texts, user first),
    ShareGPT files whose turns use role/content, HH-RLHF (`chosen` / `rejected`
    Human:/Assistant: transcripts, no prompt field)."""
    files = {
        "lmsys.jsonl": [{"conversation_id": "c1", "model": "m", "conversation": [
            {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}],
            "turn": 1, "language": "English"}],
        "ultrachat.jsonl": [{"id": "0", "data": ["What is rain?", "Water falling.",
                                                 "And snow?", "Frozen water."]}],
        "sharegpt_roles.jsonl": [{"id": "s", "conversations": [
            {"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "7"}]}],
        "hh.jsonl": [{"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4.",
                      "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 5."}],
    }
    report = ingest(store, [write_jsonl(tmp_path / n, r) for n, r in files.items()])
    assert [(f.format, f.stored, f.quarantined) for f in report.files] == [
        ("messages", 1, 0), ("text_turns", 1, 0), ("sharegpt", 1, 0), ("preference", 1, 0)]
    by_source = {r[0]: r[1] for r in rows(store, "SELECT source, messages FROM examples")}
    assert [m["content"] for m in by_source["ultrachat"]] == files["ultrachat.jsonl"][0]["data"]
    assert [(m["role"], m["content"]) for m in by_source["hh"]] == [
        ("user", "What is 2+2?"), ("assistant", "4.")]
    assert rows(store, "SELECT json_extract_string(meta, '$.rejected') FROM examples "
                       "WHERE source = 'hh'") == [("\n\nHuman: What is 2+2?\n\nAssistant: 5.",)]
    assert rows(store, "SELECT json_extract_string(meta, '$.conversation_id') FROM examples "
                       "WHERE source = 'lmsys'") == [("c1",)]
