"""ReAct text (`Thought:` / `Action:` / `Observation:` lines) to assistant and tool turns.

Each Thought+Action block becomes one assistant turn and each Observation one tool
turn, with the line prefixes kept, so the alpaca and chat renderings of one trace hash
alike. `Episode finished, reward = X` in the last observation becomes the outcome.
"""

from __future__ import annotations

import re

_STEP = re.compile(r"^(Thought|Action|Observation)(?:\s*\d+)?\s*:", re.MULTILINE)
_ACTION = re.compile(r"^Action(?:\s*\d+)?\s*:", re.MULTILINE)
_REWARD = re.compile(r"Episode finished,?\s*reward\s*=\s*([^\s,]+)", re.IGNORECASE)


def has_action(text: str) -> bool:
    """True when the text has an `Action:` line."""
    return "Action" in text and _ACTION.search(text) is not None


def is_react(text: str) -> bool:
    """True when the text has an `Action:` line and some other ReAct step line."""
    if not _ACTION.search(text):
        return False
    return any(m.group(1) != "Action" for m in _STEP.finditer(text))


def parse_reward(text: str) -> tuple[bool, float] | None:
    """(success, reward) from the last `Episode finished, reward = X`, or None."""
    found = _REWARD.findall(text)
    if not found:
        return None
    value = found[-1].strip().rstrip(".").lower()
    if value in ("true", "yes", "success"):
        return True, 1.0
    if value in ("false", "no", "fail", "failure"):
        return False, 0.0
    try:
        reward = float(value)
    except ValueError:
        return None
    return reward > 0, reward


# An Alpaca prompt template around the task, as agent fine-tuning data renders it.
_ALPACA = re.compile(
    r"\A\s*(?P<header>(?:Below is an instruction[^\n]*\n)?)\s*### Instruction:[ \t]*\n"
    r"(?P<instruction>.*?)(?:\n\s*### Input:[ \t]*\n(?P<input>.*?))?"
    r"\n\s*### Response:[ \t]*\n?\s*\Z", re.DOTALL)
# A labelled task at a line start: `Question: ...` (ReAct prompts), `Task:`, `Claim:`
# (FEVER), `Q:`; text before it is a header
_LABEL = re.compile(r"^[ \t]*(?:Question|Task|Claim|Q)[ \t]*:[ \t]*", re.IGNORECASE | re.MULTILINE)


def preamble(text: str) -> str:
    """The text before the first ReAct step line (all of it when there is none)."""
    m = _STEP.search(text)
    return text[: m.start()] if m else text


def split_task(text: str) -> tuple[str | None, dict]:
    """The task in the text before a ReAct transcript's first step, and what framed it.

    `(task, notes)`: task is the instruction of an Alpaca template (plus its input) or
    the text after a `Question:` / `Task:` / `Claim:` label, else None; notes say which
    template or label was taken off (kept in meta, so no text is lost unseen).
    """
    notes: dict = {}
    m = _ALPACA.match(text)
    if m:
        notes["template"] = "alpaca"
        if m.group("header").strip():
            notes["header"] = m.group("header").strip()
        task = m.group("instruction").strip()
        if m.group("input") and m.group("input").strip():
            task = f"{task}\n\n{m.group('input').strip()}"
        text = task
    label = _LABEL.search(text)
    if label:
        notes["label"] = label.group(0).strip()
        if text[: label.start()].strip():
            notes["header"] = (notes.get("header", "") + "\n" + text[: label.start()].strip()
                               ).strip()
        return text[label.end():].strip(), notes
    return (text.strip() if m else None), notes


def split_react(text: str, keep_preamble: bool = True) -> list[tuple[str, str]]:
    """Turns of one ReAct transcript: [(role, content), ...] with role assistant|tool.

    Lines without a step prefix stay with the turn they follow, and so does the text
    before the first step line unless `keep_preamble` is false (the caller took it as
    the task), so no text is lost.
    """
    turns: list[tuple[str, str]] = []
    starts = [(m.start(), m.group(1)) for m in _STEP.finditer(text)]
    if not starts:
        return [("assistant", text.strip())]
    preamble = text[: starts[0][0]] if keep_preamble else ""
    role_of = {"Thought": "assistant", "Action": "assistant", "Observation": "tool"}
    for i, (pos, word) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        piece = text[pos:end].rstrip("\n")
        role = role_of[word]
        if i == 0 and preamble.strip():
            piece = preamble.rstrip("\n") + "\n" + piece
        # a Thought followed by its Action (or a second Thought) is one assistant turn
        if turns and turns[-1][0] == role == "assistant":
            turns[-1] = (role, turns[-1][1] + "\n" + piece)
        else:
            turns.append((role, piece))
    return [(r, c.strip()) for r, c in turns]
