"""Every input format on tiny hand-written files: messages, kind, outcome, meta."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_jsonl
from curate.errors import InputError
from curate.ingest import FileReader, ingest


def read_all(path, **kw):
    reader = FileReader(path, **kw)
    batches = list(reader)
    table = pa.concat_tables([b.examples for b in batches]) if batches else None
    rejects = [r for b in batches for r in b.rejects]
    return reader, (table.to_pylist() if table is not None else []), rejects


def turns(row):
    return [(m["role"], m["content"]) for m in row["messages"]]


ALPACA = [
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "category": "math"},
    {"instruction": "Say hi.", "input": "", "output": "Hi!"},
]


@pytest.mark.parametrize("container", ["json", "jsonl", "jsonl.gz", "jsonl.zst"])
def test_alpaca_in_every_container(tmp_path, container):
    path = tmp_path / f"a.{container}"
    if container == "json":
        path.write_text(json.dumps(ALPACA))
    else:
        write_jsonl(path, ALPACA, {"jsonl.gz": "gzip", "jsonl.zst": "zstd"}.get(container))
    reader, out, rejects = read_all(path)
    assert reader.format.name == "alpaca" and not rejects
    assert turns(out[0]) == [("user", "Add the numbers.\n\n2 and 3"), ("assistant", "5")]
    assert turns(out[1]) == [("user", "Say hi."), ("assistant", "Hi!")]
    assert [r["kind"] for r in out] == ["instruction", "instruction"]
    assert json.loads(out[0]["meta"]) == {"category": "math"}  # unmapped fields kept
    assert out[1]["meta"] is None and out[0]["outcome"] is None
    assert [r["source_row"] for r in out] == [0, 1]
    assert out[0]["source"] == "a"


def test_chat_messages_with_tool_turns(tmp_path):
    rec = {"messages": [
        {"role": "system", "content": "You can use a calculator."},
        {"role": "user", "content": "What is 12*7?"},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "calc", "args": "12*7"}]},
        {"role": "tool", "content": "84", "name": "calc"},
        {"role": "assistant", "content": "12*7 = 84."}], "conversation_id": "c1"}
    plain = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
                          {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Ciao"}]}
    reader, out, rejects = read_all(write_jsonl(tmp_path / "chat.jsonl", [rec, plain]))
    assert reader.format.name == "messages" and not rejects
    assert [r for r, _ in turns(out[0])] == ["system", "user", "assistant", "tool", "assistant"]
    assert out[0]["kind"] == "trace" and out[1]["kind"] == "conversation"
    meta = json.loads(out[0]["meta"])
    assert meta["conversation_id"] == "c1"
    assert meta["_turns"]["2"]["tool_calls"][0]["name"] == "calc"  # per-turn fields kept
    assert meta["_turns"]["3"]["name"] == "calc"


def test_sharegpt_roles(tmp_path):
    rec = {"id": "x1", "conversations": [
        {"from": "system", "value": "Be kind."}, {"from": "human", "value": "Q?"},
        {"from": "gpt", "value": "A."}]}
    reader, out, _ = read_all(write_jsonl(tmp_path / "s.jsonl", [rec]))
    assert reader.format.name == "sharegpt"
    assert turns(out[0]) == [("system", "Be kind."), ("user", "Q?"), ("assistant", "A.")]
    assert json.loads(out[0]["meta"])["id"] == "x1"


def test_prompt_completion_strips_end_of_text(tmp_path):
    recs = [{"prompt": "Capital of France?", "completion": " Paris<|endoftext|>"},
            {"prompt": "2+2?", "completion": "4"}]
    reader, out, _ = read_all(write_jsonl(tmp_path / "pc.jsonl", recs))
    assert reader.format.name == "prompt_completion"
    assert turns(out[0]) == [("user", "Capital of France?"), ("assistant", " Paris")]
    assert json.loads(out[0]["meta"]) == {"_curate": {"eos_stripped": "<|endoftext|>"}}
    assert out[1]["meta"] is None


def test_question_answer(tmp_path):
    recs = [{"question": "Tom has 3 apples and eats 1. How many?", "answer": "3-1=2\n#### 2"}]
    reader, out, _ = read_all(write_jsonl(tmp_path / "qa.jsonl", recs))
    assert reader.format.name == "qa"
    assert turns(out[0])[1] == ("assistant", "3-1=2\n#### 2")


REACT = ("Thought: I should look it up.\nAction: search[Eiffel Tower]\n"
         "Observation: The Eiffel Tower is in Paris.\nThought: Done.\nAction: finish[Paris]\n"
         "Observation: Episode finished, reward = {r}\n")


@pytest.mark.parametrize("reward,success", [("True", True), ("0", False)])
def test_alpaca_with_react_outputs_becomes_trace(tmp_path, reward, success):
    recs = [{"instruction": "Where is the Eiffel Tower?", "input": "",
             "output": REACT.format(r=reward)}]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(recs))
    _, out, _ = read_all(path)
    row = out[0]
    assert row["kind"] == "trace"
    assert [r for r, _ in turns(row)] == ["user", "assistant", "tool", "assistant", "tool"]
    assert turns(row)[1][1] == "Thought: I should look it up.\nAction: search[Eiffel Tower]"
    assert row["outcome"] == {"success": success, "reward": 1.0 if success else 0.0}


def test_react_chat_rendering_hashes_like_alpaca(tmp_path):
    text = REACT.format(r="True")
    alpaca = tmp_path / "a.json"
    alpaca.write_text(json.dumps([{"instruction": "Where is it?", "input": "", "output": text}]))
    steps = [s for s in text.strip().split("\nObservation")]
    msgs = [{"role": "user", "content": "Where is it?"},
            {"role": "assistant", "content": steps[0]},
            {"role": "user", "content": "Observation" + steps[1].split("\n")[0]},
            {"role": "assistant", "content": "\n".join(steps[1].split("\n")[1:])},
            {"role": "user", "content": "Observation" + steps[2]}]
    chat = write_jsonl(tmp_path / "c.jsonl", [{"messages": msgs}])
    _, a, _ = read_all(alpaca)
    _, c, _ = read_all(chat)
    assert c[0]["kind"] == "trace" and c[0]["outcome"]["success"] is True
    assert a[0]["id"] == c[0]["id"]


def test_multi_response_one_example_per_solution(tmp_path):
    rec = {"question": "1+1?", "ground_truth": "2",
           "m_small": {"is_correct": False, "solution": "3"},
           "m_big": {"is_correct": True, "solution": "1+1=2"}}
    reader, out, _ = read_all(write_jsonl(tmp_path / "sol.jsonl", [rec]))
    assert reader.format.name == "multi_response"
    assert len(out) == 2 and all(r["source_row"] == 0 and r["kind"] == "trace" for r in out)
    by_model = {json.loads(r["meta"])["model"]: r for r in out}
    assert by_model["m_big"]["outcome"]["success"] is True
    assert by_model["m_small"]["outcome"]["success"] is False
    assert json.loads(by_model["m_big"]["meta"])["ground_truth"] == "2"


def test_csv_with_column_map(tmp_path, store):
    path = tmp_path / "r.csv"
    path.write_text('question,answer,rating\n"Why, though?","Because ""reasons""\nand more",3\n'
                    "Plain?,Yes,5\n")
    report = ingest(store, [path], mapping="instruction=question,response=answer")
    f = report.files[0]
    assert (f.read, f.stored, f.quarantined) == (2, 2, 0)
    con = store.connect()
    got = con.execute("SELECT messages, meta FROM examples ORDER BY source_row").fetchall()
    assert got[0][0][0]["content"] == "Why, though?"
    assert got[0][0][1]["content"] == 'Because "reasons"\nand more'
    assert json.loads(got[0][1]) == {"rating": "3"}


def test_parquet_with_column_map(tmp_path, store):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"q": ["a?", "b?"], "a": ["A", "B"], "score": [0.5, 0.9]}), path)
    report = ingest(store, [path], mapping="instruction=q,response=a")
    assert report.files[0].stored == 2 and report.files[0].format == "alpaca"


def test_explicit_format_overrides_detection(tmp_path):
    recs = [{"instruction": "Where?", "input": "", "output": "Paris"}]
    path = write_jsonl(tmp_path / "x.jsonl", recs)
    _, out, rejects = read_all(path, format="react")
    assert not out and rejects[0][1].startswith("not a trace")


def test_unknown_format_names_file_and_fix(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"foo": 1, "bar": 2}])
    with pytest.raises(InputError) as e:
        list(FileReader(path))
    assert "odd.jsonl" in str(e.value) and "--map" in str(e.value)
    with pytest.raises(InputError, match="unknown format"):
        FileReader(path, format="yaml")


def test_unreadable_file_type(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just some words\n")
    with pytest.raises(InputError, match="notes.txt.*cannot tell the file type"):
        FileReader(path)
