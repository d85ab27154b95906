"""Export examples (all, a filtered set, or a saved selection) to files trainers read.

- `jsonl`: one canonical example per line, `meta` as a JSON object.
- `parquet`: the canonical schema; `datasets.load_dataset("parquet", ...)` reads it.
- `messages`: `{"messages": [{"role", "content"}, ...]}` per line, what TRL's SFTTrainer
  and `datasets.load_dataset("json", ...)` take as is. A selection's loss masks become
  axolotl's per-message fields (chat_template datasets with `message_field_training:
  training` and `message_field_training_detail: train_detail`): every assistant message
  of a turn-masked example gets `training` (true/false), and the last assistant message
  of a token-masked example gets `train_detail`, a list of `{begin_offset, end_offset,
  train}` character spans of its content (end inclusive) covering the whole content.
- `trl-prompt-completion`: TRL's conversational prompt-completion lines, `{"prompt":
  [turns through the last user turn, system included], "completion": [the assistant
  and tool turns after it], "tools": JSON text of the tool definitions or null}`. A
  trace's prompt is its task and its completion every step and observation.
- `llama-factory`: LLaMA-Factory's sharegpt lines, `{"conversations": [{"from": human |
  gpt | function_call | observation, "value"}], "system", "tools"}` (the system turn in
  its own column), and the file's entry merged into `dataset_info.json` beside it.
- `hf`: `--out` is a folder that `datasets.load_dataset(folder)` reads: sharded Parquet
  `data/train-{i:05d}-of-{n:05d}.parquet`, a README.md dataset card (its `configs`
  front matter names the files) and `curate_manifest.json` (what was exported: the
  selection's manifest, or the --where filter and the store).

In the two trainer formats the conversation ends at its last assistant turn: what
follows it (a trace's closing observation such as `Episode finished, reward = 1`, kept
in `outcome`; an unanswered user turn) is no training target. A tool call kept in
`meta._turns` (chat input with `tool_calls`, sharegpt `function_call` turns) comes back:
as the assistant message's `tool_calls` for TRL, as a `function_call` turn for
LLaMA-Factory. A row a format cannot represent is an error naming its id, never dropped.

Rows stream from DuckDB in batches (memory stays flat) into a temp file (or folder) that
is renamed into place when complete: an interrupted export leaves nothing partial behind.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from curate.chat import ASSISTANT, assistant_turns, last_turn, plain
from curate.errors import CurateError, QueryError
from curate.store import Store, publish, write_atomic

EXPORT_FORMATS = ("jsonl", "parquet", "messages", "trl-prompt-completion", "llama-factory",
                  "hf")
_BATCH = 8192
_SHARD_ROWS = 100_000  # `hf` shards: this many rows, or about _SHARD_BYTES, whichever first
_SHARD_BYTES = 256 << 20
HF_MANIFEST = "curate_manifest.json"


@dataclass
class ExportReport:
    path: str
    format: str
    rows: int


def export_query(store: Store, selection: str | None = None, where: str | None = None) -> str:
    """The SQL that picks the exported rows, in order (selection rank, else as stored)."""
    if where:
        from curate.safety import check_expression

        check_expression(where, "the --where filter")
    if selection is not None:
        members = str(store.saved_selection(selection) / "members.parquet").replace("'", "''")
        sql = (f"SELECT e.* FROM examples e JOIN read_parquet('{members}') s USING (id)"
               + (f" WHERE ({where})" if where else "") + " ORDER BY s.rank")
    else:
        sql = "SELECT * FROM examples" + (f" WHERE ({where})" if where else "")
    return sql


def export(store: Store, out: str | Path, format: str = "jsonl", selection: str | None = None,
           where: str | None = None) -> ExportReport:
    """Write the chosen examples to `out` (a file; a folder for `hf`); returns the row count."""
    import duckdb

    if format not in EXPORT_FORMATS:
        raise CurateError(f"unknown export format {format!r}\n  fix: use one of "
                          f"{', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    if format == "hf":
        _check_hf_folder(out)
    elif out.is_dir():
        raise CurateError(f"{out} is a directory\n  fix: give a file path, e.g. {out}/export.jsonl"
                          " (only --format hf writes a folder)")
    info = _dataset_info(out) if format == "llama-factory" else None
    out.parent.mkdir(parents=True, exist_ok=True)
    sql = export_query(store.require(), selection, where)
    con = store.connect()
    try:
        try:
            reader = con.sql(sql).to_arrow_reader(_BATCH)
        except duckdb.Error as e:
            raise QueryError(f"the --where filter failed: {e}\n  fix: write a SQL boolean "
                             "expression over the examples columns (id, source, source_row, "
                             "kind, messages, outcome, meta)") from e
        if format == "parquet":
            rows = _write_parquet(reader, out)
        elif format == "hf":
            rows = _write_hf(reader, out, store, selection, where)
        elif format == "messages":
            rows = _write_lines(reader, out, _messages_record(store, selection))
        else:
            rows = _write_lines(reader, out, {"jsonl": _canonical_record,
                                              "trl-prompt-completion": _trl_record,
                                              "llama-factory": _llama_factory_record}[format])
    finally:
        con.close()
    if info is not None:
        _register_llama_factory(out, info)
    return ExportReport(str(out), format, rows)


# ---------------------------------------------------------------- shared row iteration
def _rows(reader: pa.RecordBatchReader) -> Iterator[dict]:
    """The exported examples as dicts, `meta` parsed to an object (None when empty)."""
    for batch in reader:
        for row in batch.to_pylist():
            meta = row.get("meta")
            row["meta"] = orjson.loads(meta) if meta else None
            yield row


def _write_lines(reader: pa.RecordBatchReader, out: Path, record: Callable[[dict], dict]) -> int:
    """One JSON line per example, `record(row)` each, into a temp file renamed to `out`."""
    tmp = out.with_name(f".{out.name}.partial")
    rows = 0
    try:
        with open(tmp, "wb") as f:
            for row in _rows(reader):
                f.write(orjson.dumps(record(row)) + b"\n")
                rows += 1
        publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def _unrepresentable(row: dict, format: str, why: str) -> CurateError:
    return CurateError(f"example {row['id']} (source {row['source']!r}, row {row['source_row']}) "
                       f"cannot be written as {format}: {why}\n  fix: export it with --format "
                       f"messages or jsonl, or leave it out with --where \"id <> '{row['id']}'\"")


def _turn_extras(row: dict) -> dict[int, dict]:
    """Per-turn input fields ingest kept in `meta._turns` (tool_calls, name, the original
    role), by turn index."""
    meta = row["meta"]
    turns = meta.get("_turns") if isinstance(meta, dict) else None
    if not isinstance(turns, dict):
        return {}
    return {int(k): v for k, v in turns.items() if k.isdigit() and isinstance(v, dict)}


def _openai_call(call):
    """A tool call in OpenAI's shape `{type: function, function: {name, arguments}}`, the
    one chat templates read, from a bare `{name, arguments | args | parameters}`; any
    other shape is passed through as the input had it."""
    if not isinstance(call, dict) or "function" in call or not isinstance(call.get("name"), str):
        return call
    args = next((call[k] for k in ("arguments", "args", "parameters") if k in call), {})
    return {**({"id": call["id"]} if "id" in call else {}), "type": "function",
            "function": {"name": call["name"], "arguments": args}}


def _function_call_text(text: str) -> list | None:
    """The calls a sharegpt `function_call` turn holds as JSON text (one call or a list),
    or None when the text is not that."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    calls = value if isinstance(value, list) else [value]
    if calls and all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls):
        return calls
    return None


def _turns(row: dict) -> list[dict]:
    """The turns (role, content) through the last assistant turn, with the tool calls
    that ingest kept in `meta._turns` (or a sharegpt `function_call` turn's JSON) back on
    their assistant turns as OpenAI-shaped `tool_calls`."""
    messages = plain(row["messages"])
    extras = _turn_extras(row)
    for i in assistant_turns(messages):
        calls = extras.get(i, {}).get("tool_calls")
        if not calls and extras.get(i, {}).get("_role") == "function_call":
            calls = _function_call_text(messages[i]["content"])
            if calls:
                messages[i]["content"] = ""
        if calls:
            messages[i]["tool_calls"] = [_openai_call(c) for c in calls]
    end = last_turn(messages)
    return messages[: end + 1] if end is not None else messages


def _tools(row: dict, format: str) -> str | None:
    """The example's tool definitions (input field `tools`, kept in meta) as JSON text,
    the form TRL's SFTTrainer and LLaMA-Factory read; None when it has none."""
    tools = row["meta"].get("tools") if isinstance(row["meta"], dict) else None
    if not tools:
        return None
    if isinstance(tools, str):
        try:
            orjson.loads(tools)
        except orjson.JSONDecodeError:
            raise _unrepresentable(row, format, "its meta.tools is text but not JSON") from None
        return tools
    return orjson.dumps(tools).decode()


# ---------------------------------------------------------------- one record per format
def _canonical_record(row: dict) -> dict:
    return row


def _messages_record(store: Store, selection: str | None) -> Callable[[dict], dict]:
    annotate = _mask_annotator(store, selection) if selection else None
    if annotate is None:
        return lambda row: {"messages": row["messages"]}
    return lambda row: {"messages": annotate(row["id"], row["messages"])}


def _trl_record(row: dict) -> dict:
    """`trl-prompt-completion`: the prompt through the last user turn, the rest after it."""
    messages = _turns(row)
    cut = last_turn(messages, "user")
    if cut is None:
        raise _unrepresentable(row, "trl-prompt-completion", "it has no user turn")
    if cut + 1 == len(messages) or messages[cut + 1]["role"] != ASSISTANT:
        raise _unrepresentable(row, "trl-prompt-completion", "its last user turn is not "
                               "followed by an assistant turn")
    return {"prompt": messages[: cut + 1], "completion": messages[cut + 1:],
            "tools": _tools(row, "trl-prompt-completion")}


_SHAREGPT_ROLES = {"user": "human", "assistant": "gpt", "tool": "observation"}


def _llama_factory_record(row: dict) -> dict:
    """`llama-factory`: sharegpt turns, which LLaMA-Factory needs in strict alternation
    (human or observation, then gpt or function_call) and skips otherwise: such a row
    is an error here, not a silent gap in training."""
    messages, extras = _turns(row), _turn_extras(row)
    first = 1 if messages and messages[0]["role"] == "system" else 0
    conversations = []
    for i, m in enumerate(messages[first:], first):
        if m["role"] == "system":
            raise _unrepresentable(row, "llama-factory", f"turn {i + 1} is a system turn after "
                                   "the first turn (LLaMA-Factory has one system prompt)")
        if "tool_calls" in m:  # LLaMA-Factory's function_call value: JSON of the calls
            calls = [c.get("function", c) if isinstance(c, dict) else c for c in m["tool_calls"]]
            turn = {"from": "function_call", "value": orjson.dumps(calls).decode()}
        elif m["role"] == ASSISTANT and extras.get(i, {}).get("_role") == "function_call":
            turn = {"from": "function_call", "value": m["content"]}
        else:
            turn = {"from": _SHAREGPT_ROLES[m["role"]], "value": m["content"]}
        expected = ("human", "observation") if len(conversations) % 2 == 0 \
            else ("gpt", "function_call")
        if turn["from"] not in expected:
            raise _unrepresentable(row, "llama-factory", f"turn {i + 1} is {turn['from']!r} where "
                                   f"LLaMA-Factory needs {' or '.join(expected)} (it skips such "
                                   "rows)")
        conversations.append(turn)
    return {"conversations": conversations,
            "system": messages[0]["content"] if first else None,
            "tools": _tools(row, "llama-factory")}


def _dataset_info(out: Path) -> dict:
    """The `dataset_info.json` beside `out` (empty when there is none), read before the
    export so that a broken one fails it up front."""
    path = out.parent / "dataset_info.json"
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except ValueError as e:
        raise CurateError(f"{path} is not valid JSON ({e})\n  fix: repair it or move it away; "
                          "the llama-factory export adds its entry to it") from None
    if not isinstance(info, dict):
        raise CurateError(f"{path} is not a JSON object of datasets\n  fix: repair it or move "
                          "it away; the llama-factory export adds its entry to it")
    mine = info.get(out.stem)
    if isinstance(mine, dict) and mine.get("file_name", out.name) != out.name:
        raise CurateError(f"{path} already has a dataset named {out.stem!r}, for the file "
                          f"{mine.get('file_name')!r}\n  fix: give --out another file name "
                          "(the entry is named after its stem)")
    return info


def _register_llama_factory(out: Path, info: dict) -> None:
    """Add (or replace) the entry of `out`, keyed by its stem, keeping every other one."""
    info[out.stem] = {
        "file_name": out.name, "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                 "assistant_tag": "gpt", "observation_tag": "observation",
                 "function_tag": "function_call", "system_tag": "system"}}
    write_atomic(out.parent / "dataset_info.json",
                 json.dumps(info, indent=2, ensure_ascii=False).encode() + b"\n")


# ---------------------------------------------------------------- file and folder writers
def _write_parquet(reader: pa.RecordBatchReader, out: Path) -> int:
    tmp = out.with_name(f".{out.name}.partial")
    rows = 0
    try:
        with pq.ParquetWriter(tmp, reader.schema, compression="zstd") as w:
            for batch in reader:
                w.write_batch(batch)
                rows += batch.num_rows
        publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def _check_hf_folder(out: Path) -> None:
    """`out` may be new, empty, or a previous `hf` export (which is replaced)."""
    if out.exists() and not out.is_dir():
        raise CurateError(f"{out} is a file\n  fix: --format hf writes a folder; give a "
                          "folder path")
    if out.is_dir() and any(out.iterdir()) and not (out / HF_MANIFEST).is_file():
        raise CurateError(f"{out} is a folder with other files in it (no {HF_MANIFEST}, so "
                          "not a curate hf export to replace)\n  fix: give a new or empty "
                          "folder")


def _write_hf(reader: pa.RecordBatchReader, out: Path, store: Store, selection: str | None,
              where: str | None) -> int:
    """`hf`: Parquet shards, the dataset card and the manifest, staged in a folder beside
    `out` and renamed into place."""
    stage = out.with_name(f".{out.name}.partial")
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "data").mkdir(parents=True)
    shards: list[Path] = []
    writer, in_shard, shard_bytes, rows = None, 0, 0, 0
    sources: Counter = Counter()
    kinds: Counter = Counter()
    try:
        for batch in reader:
            sources.update(batch.column("source").to_pylist())
            kinds.update(batch.column("kind").to_pylist())
            while batch.num_rows:
                if writer is None or in_shard >= _SHARD_ROWS or shard_bytes >= _SHARD_BYTES:
                    if writer is not None:
                        writer.close()
                    shards.append(stage / "data" / f"train-{len(shards):05d}.parquet")
                    writer = pq.ParquetWriter(shards[-1], reader.schema, compression="zstd")
                    in_shard, shard_bytes = 0, 0
                part = batch.slice(0, _SHARD_ROWS - in_shard)
                writer.write_batch(part)
                in_shard, shard_bytes = in_shard + part.num_rows, shard_bytes + part.nbytes
                rows += part.num_rows
                batch = batch.slice(part.num_rows)
        if writer is None:  # no rows: one empty shard, so that the dataset still loads
            shards.append(stage / "data" / "train-00000.parquet")
            pq.write_table(reader.schema.empty_table(), shards[-1])
        else:
            writer.close()
        for i, shard in enumerate(shards):
            shard.rename(shard.with_name(f"train-{i:05d}-of-{len(shards):05d}.parquet"))
        manifest = _hf_manifest(store, selection, where, rows)
        (stage / HF_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        (stage / "README.md").write_text(_dataset_card(manifest, sources, kinds))
        publish(stage, out)
    finally:
        if writer is not None:
            writer.close()
        shutil.rmtree(stage, ignore_errors=True)
    return rows


def _selection_manifest(store: Store, selection: str) -> dict:
    """The saved selection's manifest (method, params, budget, fingerprint, recipe, ...)."""
    return json.loads((store.saved_selection(selection) / "manifest.json").read_text())


def _hf_manifest(store: Store, selection: str | None, where: str | None, rows: int) -> dict:
    from curate import __version__

    manifest = {"format": "hf", "rows": rows, "curate_version": __version__,
                "selection": _selection_manifest(store, selection) if selection else None,
                "where": where}
    if selection is None:
        manifest["store"] = str(store.root.resolve())
    return manifest


def _dataset_card(manifest: dict, sources: Counter, kinds: Counter) -> str:
    sel = manifest["selection"]
    what = (f"the selection `{sel['name']}` ({sel['method']}, budget {sel['budget']}, "
            f"{sel['size']} of a pool of {sel['pool_size']}; pool fingerprint "
            f"`{sel['fingerprint']}`)" if sel else f"the store `{manifest['store']}`")
    if manifest["where"]:
        what += f", filtered by `{manifest['where']}`"
    mix = lambda c: ", ".join(f"{k} {n}" for k, n in c.most_common()) or "none"  # noqa: E731
    return ("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
            "    path: data/train-*\n---\n\n"
            f"# Fine-tuning data exported by curate {manifest['curate_version']}\n\n"
            f"{manifest['rows']} examples from {what}.\n\n"
            f"- sources: {mix(sources)}\n- kinds: {mix(kinds)}\n\n"
            "Columns: the canonical example (`id`, `source`, `source_row`, `kind`, `messages` "
            "as role/content turns, `outcome`, `meta` as JSON text). `datasets.load_dataset` "
            f"on this folder reads the train split; {HF_MANIFEST} holds the full manifest.\n")


def _mask_annotator(store: Store, selection: str) -> Callable | None:
    """(id, messages) -> messages with axolotl's `training` / `train_detail` fields from
    the selection's masks; None when it has none."""
    from curate.selection import load_masks

    masks = load_masks(store, selection)
    if masks is None:
        return None
    by_id = {r["id"]: r for r in masks.to_pylist()}
    tokenizer = None
    if any(r["tokens"] is not None for r in by_id.values()):
        from transformers import AutoTokenizer

        from curate.models import resolve

        params = _selection_manifest(store, selection)["params"]
        model = params.get("mask_model")
        if not model:
            raise CurateError(f"selection {selection!r} has token masks but its manifest names "
                              "no mask_model (the tokenizer they refer to)\n  fix: export with "
                              "--format jsonl or parquet, and read the masks from SQL "
                              "(selection_masks)")
        tokenizer = AutoTokenizer.from_pretrained(str(resolve(model, "causal-lm")))

    def annotate(example_id: str, messages: list[dict]) -> list[dict]:
        row = by_id.get(example_id)
        if row is None:
            return messages
        messages = [dict(m) for m in messages]
        assistant = assistant_turns(messages)
        if row["turns"] is not None:
            for j, flag in zip(assistant, row["turns"]):
                messages[j]["training"] = bool(flag)
        if row["tokens"] is not None and assistant:
            messages[assistant[-1]]["train_detail"] = _char_spans(
                tokenizer, messages, row["tokens"], example_id)
        return messages

    return annotate


def _char_spans(tokenizer, messages: list[dict], mask: list[int], example_id: str) -> list[dict]:
    """The token mask of the last assistant turn as runs of its content characters:
    [{begin_offset, end_offset (inclusive), train}], tokenized in context as in training.
    The end-of-turn entry has no characters (axolotl's `train_on_eos` governs it)."""
    import numpy as np

    from curate.tokens import render_spans

    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    text, spans = render_spans(tokenizer, turns)
    a, b, _ = spans[-1]
    offsets = np.asarray(tokenizer(text, add_special_tokens=False,
                                   return_offsets_mapping=True)["offset_mapping"]).reshape(-1, 2)
    inside = np.flatnonzero((offsets[:, 0] < b) & (offsets[:, 1] > a))
    if len(mask) != len(inside) + 1:
        raise CurateError(f"token mask of example {example_id} has {len(mask)} entries, but "
                          f"its last assistant turn has {len(inside) + 1} tokens under the "
                          "selection's mask_model\n  fix: the masks were built with another "
                          "tokenizer; rebuild the selection")
    starts = np.maximum(offsets[inside, 0], a) - a
    out: list[dict] = []
    for k, keep in enumerate(mask[:-1]):
        if out and out[-1]["train"] == bool(keep):
            continue
        if out:
            out[-1]["end_offset"] = int(starts[k]) - 1
        out.append({"begin_offset": 0 if not out else int(starts[k]), "end_offset": b - a - 1,
                    "train": bool(keep)})
    return out
