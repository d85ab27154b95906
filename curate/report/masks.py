"""Token-mask viewer: a selection's turn and token loss masks drawn over its examples.

Token masks refer to the `lm` scorer's tokenization of the last assistant turn (its
content tokens, then the end-of-turn token of the rendered conversation), with the
tokenizer named by the selection manifest's `mask_model`. Without that tokenizer only
the turn masks are drawn.
"""

from __future__ import annotations

import functools
import html
import json

import pyarrow.parquet as pq

from curate.chat import assistant_turns, last_turn

MAX_TOKENS_SHOWN = 400
MAX_TURN_CHARS = 600


def mask_tables(root) -> dict[str, list[dict]]:
    """selection name -> its mask rows (id, turns, tokens, reason), from masks.parquet."""
    out = {}
    for path in sorted(root.glob("selections/*/masks.parquet")):
        rows = pq.read_table(path).to_pylist()
        if rows:
            out[path.parent.name] = rows
    return out


@functools.cache
def _tokenizer(model: str):
    """The tokenizer of `model` (a registry name or a local folder)."""
    from transformers import AutoTokenizer

    from curate.models import resolve

    return AutoTokenizer.from_pretrained(str(resolve(model, "causal-lm")))


def load_tokenizer(model: str | None) -> tuple[object | None, str | None]:
    """(tokenizer, None), or (None, why it is unavailable)."""
    if not model:
        return None, "the selection manifest names no mask_model"
    try:
        return _tokenizer(model), None
    except Exception as exc:  # noqa: BLE001 - any load failure falls back to turn masks
        return None, f"tokenizer of {model!r} unavailable ({str(exc).splitlines()[0]})"


def response_tokens(tok, messages: list[dict]) -> list[str]:
    """The text of each trained token of the last assistant turn, as the lm scorer
    tokenizes it: the content tokens, then the end-of-turn token."""
    from curate.tokens import split_at_response

    last = last_turn(messages)
    content = messages[last]["content"] or ""
    _, tail = split_at_response(tok, messages[:last])
    end = tok(tail, add_special_tokens=False)["input_ids"][:1]
    if getattr(tok, "is_fast", False):
        enc = tok(content, add_special_tokens=False, return_offsets_mapping=True)
        pieces, end_char = [], 0
        for a, b in enc["offset_mapping"]:  # a character split over byte tokens: shown once
            pieces.append(content[max(a, end_char):b])
            end_char = max(end_char, b)
    else:
        ids = tok(content, add_special_tokens=False)["input_ids"]
        pieces = [tok.decode([i]) for i in ids]
    return pieces + [tok.decode(end)] if end else pieces


def render_example(messages: list[dict], mask: dict, tok) -> str:
    """One example's conversation with masked turns and tokens marked."""
    turns_mask = mask.get("turns")
    tokens_mask = mask.get("tokens")
    assistant = assistant_turns(messages)
    parts = []
    notes = []
    if turns_mask is not None and len(turns_mask) != len(assistant):
        notes.append(f"turn mask has {len(turns_mask)} entries for {len(assistant)} "
                     "assistant turns")
    for i, m in enumerate(messages):
        content = m["content"] or ""
        k = assistant.index(i) if i in assistant else None
        masked_turn = (k is not None and turns_mask is not None and k < len(turns_mask)
                       and turns_mask[k] is False)
        cls = "turn masked-turn" if masked_turn else "turn"
        label = html.escape(m["role"]) + (" · no loss" if masked_turn else "")
        if k is not None and i == assistant[-1] and tokens_mask is not None and tok is not None \
                and not masked_turn:
            try:
                body, note = _token_spans(tok, messages, tokens_mask)
            except Exception as exc:  # noqa: BLE001 - e.g. a tokenizer without a chat template
                body = html.escape(content[:MAX_TURN_CHARS])
                note = f"token mask not drawn: {str(exc).splitlines()[0] if str(exc) else exc!r}"
            notes += [note] if note else []
        else:
            body = html.escape(content[:MAX_TURN_CHARS]) + (
                f"<span class='more'> … ({len(content) - MAX_TURN_CHARS:,} more chars)</span>"
                if len(content) > MAX_TURN_CHARS else "")
        parts.append(f"<div class='{cls}'><div class='role'>{label}</div>"
                     f"<div class='content'>{body}</div></div>")
    if tokens_mask is not None and tok is None:
        masked = sum(1 for t in tokens_mask if not t)
        notes.append(f"token mask: {masked} of {len(tokens_mask)} tokens masked (not drawn)")
    head = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    return head + "".join(parts)


def _token_spans(tok, messages: list[dict], mask: list[int]) -> tuple[str, str | None]:
    pieces = response_tokens(tok, messages)
    note = None
    if len(pieces) != len(mask):
        note = (f"token mask has {len(mask)} entries, the tokenizer gives {len(pieces)} "
                "tokens: drawn up to the shorter")
    n = min(len(pieces), len(mask))
    masked = sum(1 for t in mask if not t)
    out = [f"<span class='note'>{masked} of {len(mask)} tokens masked</span><br>"]
    for piece, keep in list(zip(pieces, mask))[:MAX_TOKENS_SHOWN]:
        cls = "tok" if keep else "tok masked"
        out.append(f"<span class='{cls}'>{html.escape(piece)}</span>")
    if n > MAX_TOKENS_SHOWN:
        out.append(f"<span class='more'> … ({n - MAX_TOKENS_SHOWN:,} more tokens)</span>")
    return "".join(out), note


def section(store, con, limit_selections: int = 4, per_selection: int = 3) -> str:
    """The token-mask section's HTML (says so when no selection carries masks)."""
    tables = mask_tables(store.root)
    if not tables:
        return ("<p class='empty'>No selection carries loss masks (token cleaning and trace "
                "selections write <code>masks.parquet</code>).</p>")
    out = []
    names = sorted(tables, key=lambda s: _created(store.root, s), reverse=True)
    for name in names[:limit_selections]:
        rows = tables[name]
        params = _params(store.root, name)
        model = params.get("mask_model")
        tok, why = load_tokenizer(model) if any(r.get("tokens") is not None for r in rows) \
            else (None, None)
        # examples with token masks first, then the most masked
        rows = sorted(rows, key=lambda r: (r.get("tokens") is None,
                                           -sum(1 for t in (r.get("tokens") or []) if not t),
                                           r["id"]))
        shown = rows[:per_selection]
        ids = [r["id"] for r in shown]
        found = dict(con.execute("SELECT id, messages FROM examples WHERE list_contains(?, id)",
                                 [ids]).fetchall())
        n_turn = sum(1 for r in rows if r.get("turns") is not None)
        n_tok = sum(1 for r in rows if r.get("tokens") is not None)
        out.append(f"<h3>{html.escape(name)}</h3><p>{len(rows):,} masked examples "
                   f"({n_turn:,} with turn masks, {n_tok:,} with token masks)"
                   + (f"; tokenizer: <code>{html.escape(model)}</code>" if tok is not None else "")
                   + "</p>")
        if why:
            out.append(f"<p class='note'>{html.escape(why)}: showing turn masks only.</p>")
        for r in shown:
            messages = found.get(r["id"])
            if messages is None:
                out.append(f"<p class='note'>example {html.escape(r['id'])} is not in the store"
                           "</p>")
                continue
            reason = f" — {html.escape(r['reason'])}" if r.get("reason") else ""
            out.append(f"<div class='example'><div class='exid'>{html.escape(r['id'])}{reason}"
                       f"</div>{render_example(messages, r, tok)}</div>")
    if len(names) > limit_selections:
        out.append(f"<p class='note'>{len(names) - limit_selections} more selections with "
                   "masks not shown.</p>")
    return "".join(out)


def _manifest(root, name: str) -> dict:
    path = root / "selections" / name / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _params(root, name: str) -> dict:
    """The selection's parameters; `mask_model` is among them (recipes included)."""
    return _manifest(root, name).get("params") or {}


def _created(root, name: str) -> str:
    return _manifest(root, name).get("created_at") or ""
