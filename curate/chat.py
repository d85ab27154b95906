"""Conversations (a list of `{"role", "content"}` turns, the canonical `messages`): the
turn lookups every stage makes, in one place."""

from __future__ import annotations

ASSISTANT = "assistant"


def assistant_turns(messages: list[dict]) -> list[int]:
    """Indices of the assistant turns, in order (empty ones included): what a turn mask
    has one flag for."""
    return [i for i, m in enumerate(messages) if m["role"] == ASSISTANT]


def last_turn(messages: list[dict], role: str = ASSISTANT) -> int | None:
    """Index of the last turn of `role`, or None."""
    return next((i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == role),
                None)


def last_content(messages: list[dict], role: str = ASSISTANT) -> str:
    """Text of the last turn of `role` ('' when there is none or it is empty): the
    prompt (role user) and the response (role assistant) the scorers read."""
    i = last_turn(messages, role)
    return (messages[i]["content"] or "") if i is not None else ""


def plain(messages: list[dict]) -> list[dict]:
    """The turns as chat templates take them: role and content (never None) only."""
    return [{"role": m["role"], "content": m["content"] or ""} for m in messages]


def render_text(messages: list[dict], which: str) -> str:
    """The text the embed scorer reads (the Python twin of `scoring.base.TEXTS`):
    `prompt` (last user turn), `response` (last assistant turn), or `all` (every turn as
    a "role: content" line)."""
    if which == "prompt":
        return last_content(messages, "user")
    if which == "response":
        return last_content(messages, ASSISTANT)
    return "\n".join(f"{m['role']}: {m['content'] or ''}" for m in messages)
