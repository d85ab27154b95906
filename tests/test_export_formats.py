"""The trainer formats (trl-prompt-completion, llama-factory, hf), each read back with its
consumer's own loader: `datasets`, TRL's data utilities, LLaMA-Factory's rules."""

import json

import pytest

from conftest import rows, write_jsonl
from curate.errors import CurateError
from curate.export import export
from curate.ingest import ingest

datasets = pytest.importorskip("datasets")

SYSTEM = "You are a terse tutor."
TOOLS = [{"type": "function", "function": {
    "name": "calc", "description": "Evaluate arithmetic.",
    "parameters": {"type": "object", "properties": {"expr": {"type": "string"}},
                   "required": ["expr"]}}}]
CALL = {"type": "function", "function": {"name": "calc", "arguments": {"expr": "12*7"}}}
INSTRUCTIONS = [{"instruction": "Name a prime.", "input": "", "output": "7."},
                {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}]
CHATS = [
    {"messages": [{"role": "system", "content": SYSTEM},
                  {"role": "user", "content": "What is 2+2?"},
                  {"role": "assistant", "content": "4."},
                  {"role": "user", "content": "And 3+3?"},
                  {"role": "assistant", "content": "6."}]},
    {"messages": [{"role": "user", "content": "What is 12*7?"},
                  {"role": "assistant", "content": "", "tool_calls": [CALL]},
                  {"role": "tool", "content": "84", "name": "calc"},
                  {"role": "assistant", "content": "12*7 = 84."}], "tools": TOOLS},
]
REACT = [{"instruction": "Answer by Thought, Action and Observation steps.",
          "input": "Question: Where does the River Tarrow rise?",
          "output": "Thought: I should search.\nAction: search[River Tarrow]\n"
                    "Observation: It rises on Mount Orran.\nThought: That is the answer.\n"
                    "Action: finish[Mount Orran]\nObservation: Episode finished, reward = True"}]


@pytest.fixture
def filled(tmp_path, store):
    ingest(store, [write_jsonl(tmp_path / "alpaca.jsonl", INSTRUCTIONS),
                   write_jsonl(tmp_path / "chat.jsonl", CHATS),
                   write_jsonl(tmp_path / "react.jsonl", REACT)])
    assert rows(store, "SELECT count(*) FROM examples WHERE kind = 'trace'") == [(2,)]
    return store


def _count(store) -> int:
    return rows(store, "SELECT count(*) FROM examples")[0][0]


def _load_json(path, tmp_path):
    return datasets.load_dataset("json", data_files=str(path), split="train",
                                 cache_dir=str(tmp_path / "hf-cache"))


def _by_first_user(records, key="prompt"):
    def first_user(r):
        if key == "prompt":
            return next(m["content"] for m in r["prompt"] if m["role"] == "user")
        return r["conversations"][0]["value"]
    return {first_user(r)[:12]: r for r in records}


def test_trl_prompt_completion(tmp_path, filled, tokenizer):
    out = tmp_path / "trl.jsonl"
    assert export(filled, out, "trl-prompt-completion").rows == _count(filled) == 5
    ds = _load_json(out, tmp_path)
    assert len(ds) == 5 and set(ds.column_names) == {"prompt", "completion", "tools"}
    for r in ds:
        assert r["prompt"][-1]["role"] == "user" and r["completion"][0]["role"] == "assistant"
        assert r["completion"][-1]["role"] == "assistant"
    got = _by_first_user(list(ds))
    chat = got["What is 2+2?"]
    assert (chat["prompt"][0]["role"], chat["prompt"][0]["content"]) == ("system", SYSTEM)
    assert [m["content"] for m in chat["prompt"]][1:] == ["What is 2+2?", "4.", "And 3+3?"]
    assert [m["content"] for m in chat["completion"]] == ["6."]
    tool = got["What is 12*7"]
    assert json.loads(tool["tools"]) == TOOLS
    assert [m["role"] for m in tool["completion"]] == ["assistant", "tool", "assistant"]
    assert tool["completion"][0]["tool_calls"][0]["function"]["name"] == "calc"
    react = got["Answer by Th"]
    assert react["tools"] is None and len(react["prompt"]) == 1  # the task
    assert [m["role"] for m in react["completion"]] == ["assistant", "tool", "assistant"]
    assert "Episode finished" not in json.dumps(react["completion"])  # no training target

    trl = pytest.importorskip("trl.data_utils")  # the dev extra installs it
    tok = tokenizer  # SmolLM2's, its chat template included
    for r in ds:
        assert trl.is_conversational(r)
        example = {"prompt": r["prompt"], "completion": r["completion"]}
        text = trl.maybe_apply_chat_template(
            example, tok, tools=json.loads(r["tools"]) if r["tools"] else None)
        assert text["prompt"].endswith("<|im_start|>assistant\n")
        assert text["completion"].strip() and text["completion"].endswith("<|im_end|>\n")
    assert SYSTEM in trl.maybe_apply_chat_template(
        {"prompt": chat["prompt"], "completion": chat["completion"]}, tok)["prompt"]


def test_llama_factory(tmp_path, filled):
    folder = tmp_path / "lf"
    folder.mkdir()
    other = {"file_name": "other.json", "columns": {"prompt": "instruction"}}
    (folder / "dataset_info.json").write_text(json.dumps({"other": other}))
    out = folder / "curated.jsonl"
    assert export(filled, out, "llama-factory").rows == _count(filled)
    info = json.loads((folder / "dataset_info.json").read_text())
    assert info["other"] == other  # kept
    assert info["curated"] == {
        "file_name": "curated.jsonl", "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                 "assistant_tag": "gpt", "observation_tag": "observation",
                 "function_tag": "function_call", "system_tag": "system"}}
    ds = _load_json(out, tmp_path)
    assert len(ds) == _count(filled)
    for r in ds:  # what LLaMA-Factory's sharegpt converter keeps (it skips other rows)
        turns = [t["from"] for t in r["conversations"]]
        assert len(turns) % 2 == 0
        assert all(t in (("human", "observation"), ("gpt", "function_call"))[i % 2]
                   for i, t in enumerate(turns))
    got = _by_first_user(list(ds), "conversations")
    assert got["What is 2+2?"]["system"] == SYSTEM
    assert [t["from"] for t in got["What is 2+2?"]["conversations"]] == ["human", "gpt"] * 2
    tool = got["What is 12*7"]
    assert [t["from"] for t in tool["conversations"]] == \
        ["human", "function_call", "observation", "gpt"]
    assert json.loads(tool["conversations"][1]["value"]) == [CALL["function"]]
    assert json.loads(tool["tools"]) == TOOLS and tool["system"] is None
    assert got["Answer by Th"]["conversations"][-1]["from"] == "gpt"
    export(filled, folder / "again.jsonl", "llama-factory", where="kind = 'trace'")
    info = json.loads((folder / "dataset_info.json").read_text())
    assert set(info) == {"other", "curated", "again"}
    with pytest.raises(CurateError, match="already has a dataset named 'other'"):
        export(filled, folder / "other.jsonl", "llama-factory")  # not ours: kept
    assert json.loads((folder / "dataset_info.json").read_text())["other"] == other
    assert not (folder / "other.jsonl").exists()


def test_unrepresentable_rows_fail_by_id(tmp_path, store):
    bad = [{"messages": [{"role": "user", "content": "One."}, {"role": "user", "content": "Two."},
                         {"role": "assistant", "content": "Both."}]}]
    ingest(store, [write_jsonl(tmp_path / "bad.jsonl", bad)])
    (bad_id,), = rows(store, "SELECT id FROM examples")
    out = tmp_path / "o" / "lf.jsonl"
    with pytest.raises(CurateError, match=rf"(?s)example {bad_id}.*'human' where LLaMA-Factory "
                                          rf"needs gpt.*fix: .*--where \"id <> '{bad_id}'\""):
        export(store, out, "llama-factory")
    assert not out.exists() and not (out.parent / "dataset_info.json").exists()
    assert export(store, tmp_path / "trl.jsonl", "trl-prompt-completion").rows == 1
    (tmp_path / "o" / "dataset_info.json").write_text("[1, 2]")
    with pytest.raises(CurateError, match="not a JSON object"):
        export(store, out, "llama-factory")



def test_tool_calls_come_out_in_openai_shape(tmp_path, store):
    """A bare {name, args} call and a sharegpt function_call turn both become
    {type: function, function: {name, arguments}} tool calls for TRL."""
    ingest(store, [write_jsonl(tmp_path / "bare.jsonl", [{"messages": [
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "name": "weather", "args": {"city": "Rome"}}]},
        {"role": "tool", "content": "20"}, {"role": "assistant", "content": "20 C."}]}])])
    ingest(store, [write_jsonl(tmp_path / "sharegpt.jsonl", [{"conversations": [
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "Paris"}}'},
        {"from": "observation", "value": "12"}, {"from": "gpt", "value": "12 C."}]}])])
    out = tmp_path / "trl.jsonl"
    assert export(store, out, "trl-prompt-completion").rows == 2
    got = {r["prompt"][0]["content"]: r["completion"][0]
           for r in map(json.loads, out.read_text().splitlines())}
    assert got["Weather in Rome?"]["tool_calls"] == [{"id": "c1", "type": "function", "function": {
        "name": "weather", "arguments": {"city": "Rome"}}}]
    paris = got["Weather in Paris?"]
    assert paris["content"] == "" and paris["tool_calls"] == [{"type": "function", "function": {
        "name": "weather", "arguments": {"city": "Paris"}}}]
    lf = tmp_path / "lf.jsonl"
    export(store, lf, "llama-factory")
    calls = [t["value"] for r in map(json.loads, lf.read_text().splitlines())
             for t in r["conversations"] if t["from"] == "function_call"]
    assert sorted(json.loads(c)[0]["arguments"]["city"] for c in calls) == ["Paris", "Rome"]

def test_hf_folder(tmp_path, filled, monkeypatch):
    from curate.selectors import select

    sel = select(filled, "random", "pick3", budget=3)
    folder = tmp_path / "hf-out"
    assert export(filled, folder, "hf", selection="pick3").rows == 3
    assert sorted(p.name for p in (folder / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nconfigs:\n- config_name: default\n  data_files:\n"
                           "  - split: train\n    path: data/train-*\n---\n")
    assert "3 examples" in card and "pick3" in card
    manifest = json.loads((folder / "curate_manifest.json").read_text())
    assert manifest["selection"]["name"] == "pick3"
    assert manifest["selection"]["fingerprint"] == sel.fingerprint
    assert manifest["selection"]["params"]["budget"] == 3 and manifest["curate_version"]
    ds = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf-cache"))
    assert list(ds) == ["train"] and len(ds["train"]) == 3
    assert ds["train"]["id"] == sel.ids  # rank order
    assert {"messages", "id", "source", "kind"} <= set(ds["train"].column_names)

    monkeypatch.setattr("curate.export._SHARD_ROWS", 2)  # a rerun replaces the folder
    (folder / "data" / "stale.parquet").write_bytes(b"")
    assert export(filled, folder, "hf").rows == _count(filled) == 5
    assert sorted(p.name for p in (folder / "data").iterdir()) == \
        [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    manifest = json.loads((folder / "curate_manifest.json").read_text())
    assert manifest["selection"] is None and manifest["store"] == str(filled.root.resolve())
    ds = datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "hf-c2"))
    assert len(ds) == 5
    assert not list(tmp_path.glob(".hf-out*"))  # nothing staged left behind


def test_hf_refuses_a_foreign_folder(tmp_path, filled):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(CurateError, match="not a curate hf export"):
        export(filled, folder, "hf")
    assert (folder / "notes.txt").read_text() == "keep me"
    (folder / "notes.txt").unlink()
    assert export(filled, folder, "hf", where="kind = 'trace'").rows == 2  # empty is fine
    with pytest.raises(CurateError, match="only --format hf writes a folder"):
        export(filled, folder, "messages")
