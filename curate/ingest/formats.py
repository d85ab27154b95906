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
from curate.ingest.react import (has_action, is_react, parse_reward, preamble,
                                 split_react, split_task)
from curate.ingest.sources import RowError

Turns = list[tuple[str, str]]


@dataclass(slots=True)
class Row:
    messages: Turns
    kind: str
    success: bool | None
    reward: float | None
    extras: dict
    fields: str = ""  # which input fields became which part, e.g. "user=instruction"


# Field names a record may use for each part, first match wins (any letter case).
USER_KEYS = ("instruction", "prompt", "question", "query", "problem")
INPUT_KEYS = ("input", "context", "inputs")  # appended to the instruction, or the prompt
RESPONSE_KEYS = ("output", "response", "completion", "solution", "answer", "prediction",
                 "generation", "outputs", "targets", "target", "chosen")
# a trace: ReAct text or a list of turns, the task in its opening text or in a field
TRACE_KEYS = ("traj", "trajectory", "trace")
# beside a response, a reference answer is kept as meta.reference
REFERENCE_KEYS = ("reference", "references", "target", "targets", "gt", "gold",
                  "expected_answer", "expected_output")
OUTCOME_KEYS = ("reward", "success", "is_correct", "correct")
MAP_TARGETS = ("instruction", "input", "response", "system", "prompt", "completion",
               "question", "answer", "output", "messages", "conversations", "reward",
               "success", "reference", "traj")

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


def _text(rec: dict, key: str, required: bool = True, extras: dict | None = None
          ) -> str | None:
    """The text of a field. A list of texts (SuperNI's definitions and outputs) reads as
    its first item when `extras` is given (the others go there, as `other_<key>`), else
    as its items joined by blank lines."""
    value = rec.get(key)
    if value is None:
        if required:
            raise RowError(f"missing field: {key!r}")
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if extras is None:
            return "\n\n".join(value)
        if len(value) > 1:
            extras[f"other_{key}"] = value[1:]
        return value[0]
    if not isinstance(value, str):
        raise RowError(f"wrong type: field {key!r} is {type(value).__name__} ({_short(value)}), "
                       "expected text")
    return value


def _short(value: object, n: int = 40) -> str:
    s = repr(value)
    return s if len(s) <= n else s[: n - 3] + "..."


def _first_key(rec: dict, keys: Iterable[str]) -> str | None:
    """The first of `keys` the record has, as the record spells it (any letter case)."""
    for k in keys:
        if k in rec:
            return k
    lower = {k.lower(): k for k in rec if isinstance(k, str)}
    for k in keys:
        if k in lower:
            return lower[k]
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
            if key == "reward":  # as `Episode finished, reward = True` reads
                reward = float(value)
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
           force_trace: bool = False, fields: str = "") -> Row:
    """Shared tail of every format: ReAct expansion, validation, kind."""
    if not any(r == "assistant" and c.strip() for r, c in turns):
        raise RowError("empty response: no assistant/response text")
    react = False
    acting = [c for r, c in turns if r == "assistant" and has_action(c)]
    if acting and (any(is_react(c) for c in acting) or any(
            r in ("user", "tool") and c.lstrip().startswith("Observation") for r, c in turns)):
        react = True
        expanded: Turns = []
        first = True
        for role, content in turns:
            if role == "assistant" and has_action(content):
                keep = True
                if first:
                    keep = not _take_task(expanded, preamble(content), extras)
                    first = False
                expanded.extend(split_react(content, keep_preamble=keep))
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
    return Row(turns, kind, success, reward, extras, fields)


def _take_task(turns: Turns, opening: str, extras: dict) -> bool:
    """Make the task in a transcript's opening text (before its first step) the user
    turn; True when the opening was taken.

    A task framed by an Alpaca template or a `Question:` label joins the user turn (or
    is it, when there is none or it is empty): otherwise every trace of a dump whose
    prompt field is empty or shared would have the same prompt. Unframed opening text
    is taken only when there is no user text at all; else it stays with the first step.
    """
    if not opening.strip():
        return False
    task, notes = split_task(opening)
    users = [i for i, (r, c) in enumerate(turns) if r == "user" and c.strip()]
    if task is None:
        if users:
            return False
        task = opening.strip()
    if notes:
        extras.setdefault("_curate", {})["task_from"] = notes
    turns[:] = [(r, c) for r, c in turns if r != "user" or c.strip()]
    if users and turns[-1][0] == "user":
        if turns[-1][1].strip() != task:
            turns[-1] = ("user", f"{turns[-1][1]}\n\n{task}")
    else:
        turns.append(("user", task))
    return True


def map_flat(rec: dict, user_keys=USER_KEYS, response_keys=RESPONSE_KEYS,
             force_trace: bool = False) -> list[Row]:
    """Alpaca, prompt/completion, question/answer, input/output: [system] user assistant.

    Which field is which: the first of `user_keys` is the instruction, an input field
    (input, context) is appended to it, or is the prompt when there is no instruction;
    the first of `response_keys` is the response; a reference field beside it (target,
    reference, gt, ...) is kept as meta.reference.
    """
    used: set = set()
    ukey = _first_key(rec, user_keys)
    rkey = _first_key(rec, response_keys)
    ikey = _first_key(rec, INPUT_KEYS)
    if ukey is None and ikey is not None:
        ukey, ikey = ikey, None
    if ukey is None:
        raise RowError(f"missing field: an instruction (one of {', '.join(user_keys)})")
    if rkey is None:
        raise RowError(f"missing field: a response (one of {', '.join(response_keys)})")
    extras_pre: dict = {}
    user = _text(rec, ukey)
    used.update((ukey, rkey))
    parts = [ukey]
    if ikey is not None:
        used.add(ikey)
        parts.append(ikey)
        extra_input = _text(rec, ikey, required=False)
        if extra_input and extra_input.strip():
            user = f"{user}\n\n{extra_input}"
    chat = _message_list(rec.get(rkey))
    response = None if chat is not None else _text(rec, rkey, extras=extras_pre)
    extras_ann: dict = {}
    if response is not None:
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
    if chat is not None:  # a response given as turns (preference data: chosen = [...])
        chat_turns = _turns(chat, rkey)
        if not any(r == "user" for r, _ in chat_turns):
            turns.append(("user", user))
        elif not chat_turns or user.strip() != next(c for r, c in chat_turns if r == "user").strip():
            used.discard(ukey)  # the prompt field is not one of the turns: kept in meta
        turns += chat_turns
    else:
        turns += [("user", user), ("assistant", response)]
    success, reward = _outcome(rec, used)
    extras = _extras(rec, used)
    extras.update(extras_pre)
    fields = f"user={'+'.join(parts)}, response={rkey}"
    ref = _first_key({k: v for k, v in extras.items() if k != rkey}, REFERENCE_KEYS)
    if ref is not None:
        extras["reference"] = extras.pop(ref)
        fields += f", reference={ref}"
        if ref != "reference":
            extras_ann["reference_from"] = ref
    if extras_ann:
        extras["_curate"] = extras_ann
    return [finish(turns, extras, success, reward, force_trace, fields)]


def _message_list(value: object) -> list | None:
    """`value` when it is a list of chat turns (objects with a role), else None."""
    if isinstance(value, list) and value and all(
            isinstance(t, dict) and ("role" in t or "from" in t) for t in value):
        return value
    return None


def _turns(turns_in: list, key: str, turn_extras: dict | None = None,
           names: tuple[str, str] | None = None) -> Turns:
    """(role, content) pairs of a list of turns: `names` = (role field, content field),
    else `role`/`content` or `from`/`value`, whichever each turn has."""
    turns: Turns = []
    for i, t in enumerate(turns_in):
        if not isinstance(t, dict):
            raise RowError(f"wrong type: {key}[{i}] is {type(t).__name__}, expected an object")
        role_key, content_key = names if names and names[0] in t else (
            ("role", "content") if "role" in t else ("from", "value"))
        raw_role = t.get(role_key)
        role = ROLE_ALIASES.get(str(raw_role).lower()) if isinstance(raw_role, str) else None
        if role is None:
            raise RowError(f"unknown role: {key}[{i}].{role_key} is {_short(raw_role)}; expected "
                           "one of system, user, assistant, tool (or human, gpt, function)")
        turns.append((role, _content(t.get(content_key), f"{key}[{i}].{content_key}")))
        if turn_extras is not None:
            rest = {k: v for k, v in t.items() if k not in (role_key, content_key)}
            if role != raw_role:
                rest["_role"] = raw_role
            if rest:
                turn_extras[str(i)] = rest
    return turns


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


def map_turns(rec: dict, keys: tuple[str, ...], role_key: str, content_key: str
              ) -> list[Row]:
    """Chat messages (`role`/`content`), ShareGPT (`from`/`value`; each turn may use
    either), and turns given as plain texts (UltraChat's `data`: user and assistant in
    turn)."""
    key = _first_key(rec, keys)
    turns_in = rec.get(key)
    if not isinstance(turns_in, list) or not turns_in:
        raise RowError(f"wrong type: field {key!r} is {_short(turns_in)}, expected a non-empty "
                       "list of turns")
    turn_extras: dict = {}
    if all(isinstance(t, str) for t in turns_in):
        turns = [("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(turns_in)]
    else:
        turns = _turns(turns_in, key, turn_extras, (role_key, content_key))
    used = {key}
    success, reward = _outcome(rec, used)
    extras = _extras(rec, used)
    if turn_extras:
        extras["_turns"] = turn_extras  # per-turn fields (name, tool_calls, original role)
    return [finish(turns, extras, success, reward, fields=f"turns={key}")]


# Hugging Face chat data names its turns so (lmsys-chat-1m and WildChat: conversation)
MESSAGE_KEYS = ("messages", "conversation", "chat", "dialog", "dialogue")


def _is_chat(r: dict) -> bool:
    key = _first_key(r, MESSAGE_KEYS)
    return key is not None and (key == "messages" or _message_list(r[key]) is not None)


def _is_text_turns(r: dict) -> bool:
    """UltraChat: {"id", "data": ["user text", "assistant text", ...]}."""
    key = _first_key(r, ("data",))
    return key is not None and isinstance(r[key], list) and len(r[key]) >= 2 and all(
        isinstance(t, str) for t in r[key])


_SPEAKER = re.compile(r"(?:^|\n\n)(Human|Assistant|User|H|A):[ \t]?", re.MULTILINE)


def transcript_turns(text: str) -> Turns | None:
    """`\\n\\nHuman: ...\\n\\nAssistant: ...` (Anthropic HH) as turns; None when the
    text is not such a transcript."""
    marks = list(_SPEAKER.finditer(text))
    if len(marks) < 2 or text[: marks[0].start()].strip():
        return None
    roles = {"Human": "user", "User": "user", "H": "user", "Assistant": "assistant",
             "A": "assistant"}
    turns = [(roles[m.group(1)], text[m.end(): marks[i + 1].start() if i + 1 < len(marks)
                                       else len(text)].strip())
             for i, m in enumerate(marks)]
    return turns if {"user", "assistant"} <= {r for r, _ in turns} else None


def map_preference(rec: dict) -> list[Row]:
    """Preference pairs without a prompt field: `chosen` / `rejected` transcripts (HH-RLHF).
    The chosen conversation is the example; the rejected one stays in meta."""
    key = _first_key(rec, ("chosen",))
    value = rec.get(key)
    turns = transcript_turns(value) if isinstance(value, str) else (
        _turns(value, key) if _message_list(value) is not None else None)
    if turns is None:
        raise RowError(f"wrong type: field {key!r} is {_short(value)}, expected a Human:/Assistant: "
                       "transcript or a list of turns")
    success, reward = _outcome(rec, {key})
    return [finish(turns, _extras(rec, {key}), success, reward, fields=f"turns={key}")]


def map_trajectory(rec: dict) -> list[Row]:
    """An agent trajectory: `traj` (or trajectory, trace) holds ReAct text or a list of
    turns; the task is the instruction/question field, else the transcript's opening
    text (an Alpaca template, `Question: ...`); a non-empty `prompt` beside such a task
    is the system turn (ReAct's instructions and few-shot examples); `reward`/`success`
    is the outcome and `gt` (target, ...) the reference."""
    tkey = _first_key(rec, TRACE_KEYS)
    value = rec.get(tkey)
    used = {tkey}
    turns: Turns = []
    pkey = _first_key(rec, USER_KEYS)
    prompt = rec.get(pkey) if pkey else None
    if pkey is not None:
        used.add(pkey)
    if isinstance(prompt, list) and not prompt:
        prompt = None
    chat = _message_list(prompt)
    if chat is not None:
        turns += _turns(chat, pkey)
    elif prompt is not None and not isinstance(prompt, str):
        raise RowError(f"wrong type: field {pkey!r} is {_short(prompt)}, expected text or turns")
    if _message_list(value) is not None:
        turns += _turns(value, tkey)
    elif isinstance(value, str):
        task, _ = split_task(preamble(value))
        if isinstance(prompt, str) and prompt.strip():
            # the prompt is the instructions when the transcript opens with the task
            turns.append(("system" if task else "user", prompt))
        turns.append(("assistant", value))
    else:
        raise RowError(f"wrong type: field {tkey!r} is {_short(value)}, expected ReAct text "
                       "or a list of turns")
    success, reward = _outcome(rec, used)
    extras = _extras(rec, used)
    fields = f"user={pkey or 'opening text'}, trace={tkey}"
    ref = _first_key(extras, REFERENCE_KEYS)
    if ref is not None:
        extras["reference"] = extras.pop(ref)
        fields += f", reference={ref}"
        if ref != "reference":
            extras.setdefault("_curate", {})["reference_from"] = ref
    row = finish(turns, extras, success, reward, fields=fields)
    if "task_from" in row.extras.get("_curate", {}):
        row.fields = row.fields.replace(f"user={pkey or 'opening text'}",
                                        f"user={tkey} opening", 1)
    row.kind = "trace"
    return [row]


def map_instances(rec: dict) -> list[Row]:
    """Self-instruct / Super-NaturalInstructions tasks: one instruction with a list of
    `instances` ({input, output}): one example per instance (instruction + input ->
    output), the instance's index and other fields in meta.instances."""
    lkey = _first_key(rec, ("instances",))
    ukey = _first_key(rec, USER_KEYS + ("definition",))
    if ukey is None:
        raise RowError(f"missing field: an instruction beside {lkey!r}")
    mapping = {"instruction": ukey, "input": f"{lkey}[].input", "response": f"{lkey}[].output"}
    rows = []
    for r in apply_mapping(rec, mapping):
        rows += map_flat(r, ("instruction",), ("response",))
        rows[-1].fields = f"user={ukey}+{lkey}[].input, response={lkey}[].output"
    return rows


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
                           fields=f"user={ukey}, response=<model>.solution"))
        rows[-1].kind = "trace"
    return rows


@dataclass(frozen=True)
class Format:
    name: str
    help: str
    map: Callable[[dict], list[Row]]
    detect: Callable[[dict], bool]


def _has(*keys):
    return lambda r: all(_first_key(r, (k,)) is not None for k in keys)


def _is_multi(r: dict) -> bool:
    return _first_key(r, USER_KEYS) is not None and any(
        isinstance(v, dict) and "solution" in v for v in r.values())


def _is_instances(r: dict) -> bool:
    key = _first_key(r, ("instances",))
    return key is not None and isinstance(r[key], list) and bool(r[key]) and all(
        isinstance(i, dict) for i in r[key])


def _is_input_output(r: dict) -> bool:
    return _first_key(r, USER_KEYS) is None and _first_key(r, INPUT_KEYS) is not None and \
        _first_key(r, RESPONSE_KEYS) is not None


FORMATS: dict[str, Format] = {f.name: f for f in [
    Format("messages", "chat {messages: [{role, content}]} (OpenAI style, tool turns too; "
           "also conversation, chat, dialog)",
           lambda r: map_turns(r, MESSAGE_KEYS, "role", "content"), _is_chat),
    Format("sharegpt", "ShareGPT {conversations: [{from, value}]}",
           lambda r: map_turns(r, ("conversations",), "from", "value"), _has("conversations")),
    Format("text_turns", "turns as plain texts, user first {data: [text, text, ...]} (UltraChat)",
           lambda r: map_turns(r, ("data",), "role", "content"), _is_text_turns),
    Format("preference", "preference pairs {chosen, rejected} as Human:/Assistant: "
           "transcripts or turns, no prompt field (HH-RLHF): the chosen one",
           map_preference, lambda r: _first_key(r, ("chosen",)) is not None and
           _first_key(r, USER_KEYS + INPUT_KEYS) is None),
    Format("trajectory", "agent trajectories {traj: ReAct text or turns, prompt, reward, gt}; "
           "the task from the prompt field or the transcript's opening (Alpaca template, "
           "Question: ...)", map_trajectory, lambda r: _first_key(r, TRACE_KEYS) is not None),
    Format("instances", "self-instruct / SuperNI {instruction, instances: [{input, output}]}: "
           "one example per instance", map_instances, _is_instances),
    Format("multi_response", "one question, several labelled model solutions "
           "{question, <model>: {solution, is_correct}}", map_multi_response, _is_multi),
    Format("alpaca", "Alpaca {instruction, input, output}",
           lambda r: map_flat(r, ("instruction",)), _has("instruction")),
    Format("prompt_completion", "{prompt, completion}; end-of-text markers are stripped",
           lambda r: map_flat(r, ("prompt",)), _has("prompt")),
    Format("qa", "question/answer {question, answer} (also query, problem / solution)",
           lambda r: map_flat(r, ("question", "query", "problem")),
           lambda r: _first_key(r, ("question", "query", "problem")) is not None and
           _first_key(r, RESPONSE_KEYS) is not None),
    Format("input_output", "{input, output}, {inputs, targets} (FLAN): input is the prompt",
           lambda r: map_flat(r, ()), _is_input_output),
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
    """Apply a --map to one record for format detection: its first mapped record (the
    record itself when the mapping does not fit it)."""
    if not mapping:
        return rec
    try:
        return apply_mapping(rec, mapping)[0]
    except RowError:
        return rec


_EXPLODE = object()  # `[]` in a path: one record per list element
_PATH_TOKEN = re.compile(r"\.?([^.\[\]]+)|\[(\d*)\]")


def parse_path(text: str) -> list:
    """`a.b[0].c` -> ['a', 'b', 0, 'c']; `instances[].output` -> ['instances', _EXPLODE,
    'output']."""
    tokens, pos = [], 0
    while pos < len(text):
        m = _PATH_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise InputError(f"--map path {text!r} cannot be read at {text[pos:]!r}",
                             fix="write FIELD, FIELD.SUB, LIST[0].FIELD or LIST[].FIELD")
        tokens.append(m.group(1) if m.group(1) is not None else
                      (int(m.group(2)) if m.group(2) else _EXPLODE))
        pos = m.end()
    return tokens


_MISSING = object()


def _get(value: object, tokens: list) -> object:
    for t in tokens:
        if isinstance(t, str) and isinstance(value, dict) and t in value:
            value = value[t]
        elif isinstance(t, int) and isinstance(value, list) and -len(value) <= t < len(value):
            value = value[t]
        else:
            return _MISSING
    return value


def _without(value: object, tokens: list) -> object:
    """A copy of `value` without the field at `tokens` (an emptied object goes too)."""
    if not tokens or not isinstance(value, dict) or not isinstance(tokens[0], str) \
            or tokens[0] not in value:
        return value
    out = dict(value)
    if len(tokens) == 1:
        del out[tokens[0]]
    else:
        inner = _without(out[tokens[0]], tokens[1:])
        if inner == {}:
            del out[tokens[0]]
        else:
            out[tokens[0]] = inner
    return out


def apply_mapping(rec: dict, mapping: dict[str, str]) -> list[dict]:
    """Records with the fields a format expects, from a --map (name -> path in the
    record). Paths may go into objects and lists (`task.text`, `answers[0]`); one list
    may be exploded with `[]` (`response=instances[].output`): one record per element,
    the element's index and unmapped fields kept under the list's name. Mapped fields
    leave the record, so meta does not hold them twice."""
    if not mapping:
        return [rec]
    paths = {t: parse_path(c) for t, c in mapping.items()}
    lists = {tuple(p[: p.index(_EXPLODE)]) for p in paths.values() if _EXPLODE in p}
    base: object = rec
    values = {}
    for target, path in paths.items():
        if _EXPLODE not in path:
            values[target] = _get(rec, path)
            if values[target] is not _MISSING:
                base = _without(base, path)
    if not lists:
        return [{**base, **{t: v for t, v in values.items() if v is not _MISSING}}]
    prefix = list(next(iter(lists)))
    items = _get(rec, prefix)
    where = mapping[next(t for t, p in paths.items() if _EXPLODE in p)]
    if items is _MISSING:
        raise RowError(f"missing field: {where!r} (from --map) is not in the record")
    if not isinstance(items, list) or not items:
        raise RowError(f"wrong type: {where!r} (from --map) is {_short(items)}, expected a "
                       "non-empty list")
    base = _without(base, prefix)
    name = next((t for t in reversed(prefix) if isinstance(t, str)), "items")
    out = []
    for i, item in enumerate(items):
        r = {**base, **{t: v for t, v in values.items() if v is not _MISSING}}
        rest = item
        for target, path in paths.items():
            if _EXPLODE in path:
                sub = path[len(prefix) + 1:]
                value = _get(item, sub) if sub else item
                if value is not _MISSING:
                    r[target] = value
                    rest = _without(rest, sub) if sub else {}
        r[name] = {"index": i, **rest} if isinstance(rest, dict) else {"index": i,
                                                                          "value": rest}
        out.append(r)
    return out


def is_plain(mapping: dict[str, str]) -> bool:
    """True when every --map path is a top-level column (the vectorized path takes it)."""
    return all(len(parse_path(c)) == 1 and isinstance(parse_path(c)[0], str)
               for c in mapping.values())


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
        parse_path(column)
        mapping[target] = column
    lists = {c.split("[]")[0] for c in mapping.values() if "[]" in c}
    if len(lists) > 1 or any(c.count("[]") > 1 for c in mapping.values()):
        raise InputError(f"--map explodes more than one list ({', '.join(sorted(lists))})",
                         fix="explode one list per record, e.g. "
                         "--map input=instances[].input,response=instances[].output")
    return mapping


def suggest_fix(reader, raws: list[str]) -> str | None:
    """The `--format` or `--map` under which these quarantined records (raw JSON text)
    would read best, tried on them; None when nothing simple reads them.

    A candidate scores the share of the records' text that lands in the examples'
    turns, so that a mapping which reads a record by ignoring most of it (taking the
    instruction as the response, say) loses to one that reads all of it.
    """
    import orjson

    records = []
    for raw in raws:
        try:
            rec = orjson.loads(raw)
        except (orjson.JSONDecodeError, TypeError):
            continue
        if isinstance(rec, dict):
            records.append(rec)
    if not records:
        return None
    auto = reader._format_arg not in FORMATS
    texts = [[t for t in _leaf_texts(r) if t] for r in records]

    def score(fmt: Format | None, mapping: dict[str, str]) -> float:
        if fmt is None:
            try:
                fmt = detect([rename(r, mapping) for r in records], "")
            except InputError:
                return 0.0
        total = 0.0
        for rec, leaves in zip(records, texts):
            try:
                rows = [ex for r in apply_mapping(rec, mapping) for ex in fmt.map(r)]
            except (RowError, RecursionError):
                continue
            if not all(any(r == "assistant" and _EOS.sub("", c).strip() for r, c in row.messages)
                       and any(r == "user" and c.strip() for r, c in row.messages)
                       for row in rows):
                continue  # a prompt and a response (not only an end-of-text marker) each
            said = "\n".join(c for row in rows for _, c in row.messages)
            size = sum(len(t) for t in leaves) or 1
            total += sum(len(t) for t in leaves if t in said) / size
        return total / len(records)

    def option(mapping: dict[str, str]) -> str:
        return "--map " + ",".join(f"{k}={v}" for k, v in mapping.items())

    tried: list[tuple[float, int, str]] = []  # (score, -options changed, option)
    for fmt in FORMATS.values():
        if fmt is not reader.format:
            tried.append((score(fmt, reader.mapping), -1, f"--format {fmt.name}"))
    paths = _candidate_paths(records)
    mappings = [{target: path} for target in ("response", "instruction", "traj")
                for path in paths]
    listed = [p for p in paths if "[]." in p]
    mappings += [{"input": a, "response": b} for a in listed for b in listed
                 if a != b and a.split("[].")[0] == b.split("[].")[0]]
    plain = [p for p in paths if "." not in p][:8]
    mappings += [{"instruction": a, "response": b} for a in plain for b in plain if a != b]
    for change in mappings:
        mapping = {**reader.mapping, **change}
        try:
            parse_mapping(option(mapping)[len("--map "):])
        except InputError:
            continue
        tried.append((score(None if auto else reader.format, mapping) + _name_prior(change),
                      -len(change), option(mapping)))
    best, _, text = max(tried, default=(0.0, 0, ""))
    return text if best >= 0.5 else None


_RESPONSE_HINTS = ("out", "resp", "answer", "complet", "target", "solution", "reply", "traj")
_PROMPT_HINTS = ("in", "question", "prompt", "instruction", "query", "task", "ask")


def _name_prior(change: dict[str, str]) -> float:
    """A tie-break between mappings that read as much: fields named like their part."""
    prior = 0.0
    for target, path in change.items():
        name = re.split(r"[.\[\]]+", path.strip("[]."))[-1].lower()
        hints = _RESPONSE_HINTS if target in ("response", "traj") else _PROMPT_HINTS
        prior += 0.01 * any(name.startswith(h) for h in hints)
    return prior


def _leaf_texts(value: object) -> list[str]:
    """Every text inside a record, stripped."""
    if isinstance(value, str):
        return [value.strip()]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _leaf_texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _leaf_texts(v)]
    return []


def _candidate_paths(records: list[dict], limit: int = 24) -> list[str]:
    """Fields that could hold a part of an example: text, turns, or text inside a list of
    objects (`instances[].output`) or an object (`task.text`)."""
    paths: dict[str, None] = {}
    for rec in records[:8]:
        for key, value in rec.items():
            if not isinstance(key, str) or not key.isidentifier():
                continue
            if isinstance(value, str) or _message_list(value) is not None:
                paths[key] = None
            elif isinstance(value, list) and value and isinstance(value[0], dict):
                paths.update({f"{key}[].{k}": None for k, v in value[0].items()
                              if isinstance(v, str) and k.isidentifier()})
            elif isinstance(value, dict):
                paths.update({f"{key}.{k}": None for k, v in value.items()
                              if isinstance(v, str) and k.isidentifier()})
    return list(paths)[:limit]
