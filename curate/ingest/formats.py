"""Record formats: how one input record becomes canonical examples.

A format maps a record (a dict) to a list of `Row`s: the messages as (role, content)
pairs, the kind, the outcome, and every input field it did not map (kept in `meta`).
It raises `RowError` with a reason when the record cannot become an example; the reader
sends that record to quarantine. ReAct text in a response turns the example into a
trace whatever the outer format.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from curate.errors import InputError
from curate.ingest.react import has_action, is_react, parse_reward, split_react
from curate.ingest.sources import RowError

Turns = list[tuple[str, str]]


@dataclass(slots=True)
class Row:
    messages: Turns
    kind: str
    success: bool | None
    reward: float | None
    extras: dict


# Field names a record may use for each part, first match wins.
USER_KEYS = ("instruction", "prompt", "question", "query")
INPUT_KEYS = ("input", "context")
RESPONSE_KEYS = ("output", "response", "completion", "answer")
OUTCOME_KEYS = ("reward", "success", "is_correct", "correct")
MAP_TARGETS = ("instruction", "input", "response", "system", "prompt", "completion",
               "question", "answer", "output", "messages", "conversations", "reward",
               "success")

EOS_MARKERS = ("<|endoftext|>", "</s>", "<|im_end|>", "<|eot_id|>", "<eos>", "<|end|>")
# ASCII whitespace only, as in RE2, so that the vectorized path strips exactly the same
_EOS = re.compile(r"(?:\s*(?:" + "|".join(re.escape(m) for m in EOS_MARKERS) + r"))+\s*$",
                  re.ASCII)

ROLE_ALIASES = {
    "system": "system", "user": "user", "human": "user", "assistant": "assistant",
    "gpt": "assistant", "chatgpt": "assistant", "bard": "assistant", "model": "assistant",
    "bot": "assistant", "tool": "tool", "function": "tool", "observation": "tool",
    "ipython": "tool", "function_response": "tool", "function_call": "assistant",
}


def _text(rec: dict, key: str, required: bool = True) -> str | None:
    value = rec.get(key)
    if value is None:
        if required:
            raise RowError(f"missing field: {key!r}")
        return None
    if not isinstance(value, str):
        raise RowError(f"wrong type: field {key!r} is {type(value).__name__} ({_short(value)}), "
                       "expected text")
    return value


def _short(value: object, n: int = 40) -> str:
    s = repr(value)
    return s if len(s) <= n else s[: n - 3] + "..."


def _first_key(rec: dict, keys: Iterable[str]) -> str | None:
    for k in keys:
        if k in rec:
            return k
    return None


def _outcome(rec: dict, used: set) -> tuple[bool | None, float | None]:
    """Outcome from reward / success-like fields, when the record has them."""
    success: bool | None = None
    reward: float | None = None
    for key in OUTCOME_KEYS:
        if key not in rec or rec[key] is None:
            continue
        value = rec[key]
        used.add(key)
        if isinstance(value, bool):
            success = value
        elif isinstance(value, (int, float)):
            if key == "reward":
                reward = float(value)
            else:
                success = bool(value)
        elif isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            success = value.strip().lower() in ("true", "1")
        else:
            raise RowError(f"wrong type: field {key!r} is {_short(value)}, expected a number or "
                           "true/false")
    if success is None and reward is not None:
        success = reward > 0
    return success, reward


def _extras(rec: dict, used: set) -> dict:
    return {k: v for k, v in rec.items() if k not in used}


def finish(turns: Turns, extras: dict, success: bool | None, reward: float | None,
           force_trace: bool = False) -> Row:
    """Shared tail of every format: ReAct expansion, validation, kind."""
    if not any(r == "assistant" and c.strip() for r, c in turns):
        raise RowError("empty response: no assistant/response text")
    react = False
    acting = [c for r, c in turns if r == "assistant" and has_action(c)]
    if acting and (any(is_react(c) for c in acting) or any(
            r in ("user", "tool") and c.lstrip().startswith("Observation") for r, c in turns)):
        react = True
        expanded: Turns = []
        for role, content in turns:
            if role == "assistant" and has_action(content):
                expanded.extend(split_react(content))
            elif role == "user" and content.lstrip().startswith("Observation"):
                expanded.append(("tool", content))  # chat renderings send observations as user
            else:
                expanded.append((role, content))
        turns = expanded
        if reward is None and success is None:
            parsed = parse_reward(turns[-1][1]) if turns[-1][0] == "tool" else None
            if parsed:
                success, reward = parsed
    elif force_trace:
        raise RowError("not a trace: the response has no Thought/Action/Observation lines")
    if react or force_trace or any(r == "tool" for r, _ in turns) or success is not None \
            or reward is not None:
        kind = "trace"
    elif sum(r == "assistant" for r, _ in turns) > 1:
        kind = "conversation"
    else:
        kind = "instruction"
    return Row(turns, kind, success, reward, extras)


def map_flat(rec: dict, user_keys=USER_KEYS, response_keys=RESPONSE_KEYS,
             force_trace: bool = False) -> list[Row]:
    """Alpaca, prompt/completion, question/answer: [system] user assistant."""
    used: set = set()
    ukey = _first_key(rec, user_keys)
    rkey = _first_key(rec, response_keys)
    if ukey is None:
        raise RowError(f"missing field: an instruction (one of {', '.join(user_keys)})")
    if rkey is None:
        raise RowError(f"missing field: a response (one of {', '.join(response_keys)})")
    user = _text(rec, ukey)
    response = _text(rec, rkey)
    used.update((ukey, rkey))
    ikey = _first_key(rec, INPUT_KEYS)
    if ikey is not None:
        used.add(ikey)
        extra_input = _text(rec, ikey, required=False)
        if extra_input and extra_input.strip():
            user = f"{user}\n\n{extra_input}"
    extras_ann: dict = {}
    match = _EOS.search(response) if response.rstrip().endswith(EOS_MARKERS) else None
    if match:
        extras_ann["eos_stripped"] = match.group(0).strip()
        response = response[: match.start()]
    turns: Turns = []
    system = _text(rec, "system", required=False) if "system" in rec else None
    if "system" in rec:
        used.add("system")
        if system and system.strip():
            turns.append(("system", system))
    turns += [("user", user), ("assistant", response)]
    success, reward = _outcome(rec, used)
    extras = _extras(rec, used)
    if extras_ann:
        extras["_curate"] = extras_ann
    return [finish(turns, extras, success, reward, force_trace)]


def _content(value: object, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # OpenAI content parts
        texts = [p.get("text", "") for p in value if isinstance(p, dict) and p.get("type") == "text"]
        if len(texts) == len(value):
            return "\n".join(texts)
    raise RowError(f"wrong type: {where} is {type(value).__name__} ({_short(value)}), "
                   "expected text")


def map_turns(rec: dict, key: str, role_key: str, content_key: str) -> list[Row]:
    """Chat messages (`role`/`content`) and ShareGPT (`from`/`value`)."""
    turns_in = rec.get(key)
    if not isinstance(turns_in, list) or not turns_in:
        raise RowError(f"wrong type: field {key!r} is {_short(turns_in)}, expected a non-empty "
                       "list of turns")
    turns: Turns = []
    turn_extras: dict = {}
    for i, t in enumerate(turns_in):
        if not isinstance(t, dict):
            raise RowError(f"wrong type: {key}[{i}] is {type(t).__name__}, expected an object")
        raw_role = t.get(role_key)
        role = ROLE_ALIASES.get(str(raw_role).lower()) if isinstance(raw_role, str) else None
        if role is None:
            raise RowError(f"unknown role: {key}[{i}].{role_key} is {_short(raw_role)}; expected one of "
                           "system, user, assistant, tool (or human, gpt, function)")
        turns.append((role, _content(t.get(content_key), f"{key}[{i}].{content_key}")))
        rest = {k: v for k, v in t.items() if k not in (role_key, content_key)}
        if role != raw_role:
            rest["_role"] = raw_role
        if rest:
            turn_extras[str(i)] = rest
    used = {key}
    success, reward = _outcome(rec, used)
    extras = _extras(rec, used)
    if turn_extras:
        extras["_turns"] = turn_extras  # per-turn fields (name, tool_calls, original role)
    return [finish(turns, extras, success, reward)]


def map_multi_response(rec: dict) -> list[Row]:
    """One prompt, several labelled model solutions: one trace per solution."""
    ukey = _first_key(rec, USER_KEYS)
    if ukey is None:
        raise RowError("missing field: a question")
    question = _text(rec, ukey)
    models = {k: v for k, v in rec.items()
              if isinstance(v, dict) and ("solution" in v or "response" in v)}
    if not models:
        raise RowError("missing field: no model solutions (objects with 'solution' and 'is_correct')")
    shared = {k: v for k, v in rec.items() if k != ukey and k not in models}
    rows = []
    for name, sol in models.items():
        used = {"solution", "response"}
        text = sol.get("solution", sol.get("response"))
        if not isinstance(text, str):
            raise RowError(f"wrong type: {name}.solution is {_short(text)}, expected text")
        success, reward = _outcome(sol, used)
        extras = {**shared, "model": name, **_extras(sol, used)}
        rows.append(finish([("user", question), ("assistant", text)], extras, success, reward,
                           force_trace=False))
        rows[-1].kind = "trace"
    return rows


@dataclass(frozen=True)
class Format:
    name: str
    help: str
    map: Callable[[dict], list[Row]]
    detect: Callable[[dict], bool]


def _has(*keys):
    return lambda r: all(k in r for k in keys)


def _is_multi(r: dict) -> bool:
    return _first_key(r, USER_KEYS) is not None and any(
        isinstance(v, dict) and "solution" in v for v in r.values())


FORMATS: dict[str, Format] = {f.name: f for f in [
    Format("messages", "chat {messages: [{role, content}]} (OpenAI style, tool turns too)",
           lambda r: map_turns(r, "messages", "role", "content"), _has("messages")),
    Format("sharegpt", "ShareGPT {conversations: [{from, value}]}",
           lambda r: map_turns(r, "conversations", "from", "value"), _has("conversations")),
    Format("multi_response", "one question, several labelled model solutions "
           "{question, <model>: {solution, is_correct}}", map_multi_response, _is_multi),
    Format("alpaca", "Alpaca {instruction, input, output}",
           lambda r: map_flat(r, ("instruction",)), _has("instruction")),
    Format("prompt_completion", "{prompt, completion}; end-of-text markers are stripped",
           lambda r: map_flat(r, ("prompt",)), _has("prompt")),
    Format("qa", "question/answer {question, answer}",
           lambda r: map_flat(r, ("question",)), _has("question", "answer")),
    Format("react", "Alpaca-shaped records whose outputs are ReAct traces (kind trace)",
           lambda r: map_flat(r, force_trace=True), lambda r: False),
]}


def detect(records: list[dict], path: str) -> Format:
    """The format most of the first records match, by their fields."""
    dicts = [r for r in records if isinstance(r, dict)]
    votes: dict[str, int] = {}
    for r in dicts:
        for f in FORMATS.values():
            if f.detect(r):
                votes[f.name] = votes.get(f.name, 0) + 1
                break
    if votes:
        return FORMATS[max(votes, key=votes.get)]
    keys = sorted({k for r in dicts[:20] for k in r})
    raise InputError(
        f"unknown record format: fields {keys[:12]} match none of {', '.join(FORMATS)}",
        path=path,
        fix="name the format with --format, or map your columns, e.g. "
        "--map instruction=COLUMN,response=COLUMN",
    )


def rename(rec: dict, mapping: dict[str, str]) -> dict:
    """Apply a --map (canonical name -> input column) to one record."""
    if not mapping:
        return rec
    out = {k: v for k, v in rec.items() if k not in mapping.values()}
    for target, column in mapping.items():
        if column in rec:
            out[target] = rec[column]
    return out


def rename_columns(table, mapping: dict[str, str]):
    """`rename` for an Arrow table: the same columns, named as the format expects."""
    if not mapping:
        return table
    mapped = [c for c in mapping.values() if c in table.column_names]
    out = table.drop_columns(list(dict.fromkeys(mapped)))
    for target, column in mapping.items():
        if column in table.column_names:
            if target in out.column_names:
                out = out.drop_columns([target])
            out = out.append_column(target, table[column])
    return out


def parse_mapping(text: str | None) -> dict[str, str]:
    """`instruction=question,response=answer` -> {'instruction': 'question', ...}."""
    if not text:
        return {}
    mapping = {}
    for part in text.split(","):
        if "=" not in part:
            raise InputError(f"--map entry {part!r} is not NAME=COLUMN",
                             fix="write --map instruction=question,response=answer")
        target, column = (s.strip() for s in part.split("=", 1))
        if target not in MAP_TARGETS:
            raise InputError(f"--map target {target!r} is unknown",
                             fix=f"use one of {', '.join(MAP_TARGETS)}")
        mapping[target] = column
    return mapping
