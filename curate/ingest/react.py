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


def split_react(text: str) -> list[tuple[str, str]]:
    """Turns of one ReAct transcript: [(role, content), ...] with role assistant|tool.

    Text before the first step line and lines without a step prefix stay with the turn
    they follow, so no text is lost.
    """
    turns: list[tuple[str, str]] = []
    starts = [(m.start(), m.group(1)) for m in _STEP.finditer(text)]
    if not starts:
        return [("assistant", text.strip())]
    preamble = text[: starts[0][0]]
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
