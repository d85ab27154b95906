"""Tokens: the one place where conversations become token ids and token ids become losses.

Two encodings, one per use:

- **SFT examples** (`encode`, `batches`): chat-template token ids with labels on
  assistant tokens only, and length-grouped batches; what fine-tuning trains, what
  influence takes gradients of, what per-step losses are read from.
- **Response sequences** (`response_sequences`, `token_losses`, `response_losses`): the
  last assistant turn as the response, scored with and without its prompt; what the
  `lm` scorer, evaluation and token cleaning read.

## SFT examples

Every assistant turn is trained: its content tokens plus the token right after them,
the end-of-turn marker (`<|im_end|>` in ChatML), so the model learns to stop. All other
tokens (system, user and tool turns, role headers, padding) get label -100. Labels are
aligned with `input_ids` as in Hugging Face models: position t-1 predicts `labels[t]`.

Assistant spans are found in characters, then mapped to tokens: the conversation is
rendered once; for each assistant turn the prefix up to it is rendered with a sentinel
as the content, and the text before the sentinel must be a prefix of the full text
(templates that rewrite earlier turns once later ones follow fail with a clear error).
The full text is tokenized once with offsets, so tokens are exactly those the model sees
in context (the same approach as TRL's `assistant_only_loss`, without needing
`{% generation %}` markers in the template).

Truncation keeps the end: tokens after the last trained one carry no loss and are
dropped; a sequence still longer than `max_tokens` loses its oldest tokens (earlier
turns, with their labels), but never the start of the last assistant turn; when that turn
alone does not fit, it keeps one token of context and loses its tail (as the `lm`
scorer does).

Token masks (`token_masks`, produced by token cleaning):

    token_masks[i] is a 1-D array of 0/1 (or bool) for example i (its index in
    `messages_list`), one entry per trained token of its LAST assistant turn, in order:
    the turn's content tokens as tokenized in the rendered conversation, then its
    end-of-turn token. Its length must equal that count (else CurateError); for an
    example the `lm` scorer did not truncate, this equals `response_tokens` and
    `len(token_losses)` of `scores_lm` under the same tokenizer. Entries of 0 get label
    -100 (not trained); the mask refers to the untruncated example. Earlier assistant
    turns are trained in full unless a turn mask says otherwise.

Turn masks (`turn_masks`, produced by trace selection):

    turn_masks[i] is a sequence of bools for example i, one per assistant message of
    the conversation in order (empty ones included); False = that turn (content and
    end-of-turn token) gets label -100 throughout. Its length must equal the number of
    assistant messages (else CurateError).

A selection's saved masks (`selection_masks`) reach `encode` through `finetune`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curate.chat import assistant_turns, last_turn, plain
from curate.errors import CurateError

IGNORE = -100  # label of tokens that are not trained (torch cross_entropy's ignore_index)
_SENTINEL = "\x00CURATE-RESPONSE\x00"
_CHUNK = 1024  # texts tokenized per call: bounds the memory of Python token lists
HEAD_ROWS = 256  # response positions per output-head chunk


@dataclass
class Example:
    """One tokenized conversation: `labels` is `input_ids` with IGNORE on untrained
    tokens; `index` is its position in the input list; `truncated` says tokens were cut."""

    input_ids: np.ndarray  # int64
    labels: np.ndarray  # int64
    index: int
    truncated: bool = False

    @property
    def trained_tokens(self) -> int:
        return int((self.labels != IGNORE).sum())


def encode(tokenizer, messages_list: list[list[dict]], max_tokens: int,
           token_masks: dict[int, np.ndarray] | None = None,
           turn_masks: dict[int, list[bool]] | None = None) -> list[Example]:
    """Tokenize conversations for SFT with loss on assistant tokens only.

    Examples left with no trained token (no assistant content, everything masked) are
    skipped: `len(messages_list) - len(result)` of them; `Example.index` says which
    input each result came from.
    """
    if max_tokens < 2:
        raise CurateError(f"max_tokens={max_tokens} leaves no room for a prompt and a "
                          "response\n  fix: use max_tokens >= 2 (e.g. 1024)")
    token_masks = token_masks or {}
    turn_masks = turn_masks or {}
    out: list[Example] = []
    for lo in range(0, len(messages_list), _CHUNK):
        chunk = messages_list[lo:lo + _CHUNK]
        rendered = [render_spans(tokenizer, messages, lo + k) for k, messages in enumerate(chunk)]
        enc = tokenizer([text for text, _ in rendered], add_special_tokens=False,
                        return_offsets_mapping=True)
        if "offset_mapping" not in enc:
            raise CurateError("the tokenizer gives no character offsets, so assistant tokens "
                              "cannot be located\n  fix: use a model with a fast (Rust) "
                              "tokenizer (tokenizer.json)")
        for k, (_, spans) in enumerate(rendered):
            index = lo + k
            if index in turn_masks:
                spans = _apply_turn_mask(spans, chunk[k], turn_masks[index], index)
            example = _label(np.asarray(enc["input_ids"][k], np.int64),
                             np.asarray(enc["offset_mapping"][k], np.int64).reshape(-1, 2),
                             spans, max_tokens, token_masks.get(index), index)
            if example is not None:
                out.append(example)
    return out


def _apply_turn_mask(spans: list[tuple[int, int, bool]], messages: list[dict], turns,
                     index: int) -> list[tuple[int, int, bool]]:
    """Spans with the `trained` flag of every turn its mask switches off cleared."""
    flags = [bool(t) for t in turns]
    ordinals = assistant_turns(messages)
    if len(flags) != len(ordinals):
        raise CurateError(f"turn mask of example {index} has {len(flags)} entries, but it "
                          f"has {len(ordinals)} assistant turns\n  fix: one flag per assistant "
                          "message, in order (empty ones included)")
    content = [j for j in ordinals if messages[j]["content"]]  # the turns with a span
    trained = [flags[ordinals.index(j)] for j in content]
    return [(a, b, keep and ok) for (a, b, keep), ok in zip(spans, trained)]


def render_spans(tokenizer, messages: list[dict],
                 index: int = 0) -> tuple[str, list[tuple[int, int, bool]]]:
    """The conversation's template text and the character span of every non-empty
    assistant content in it (with a `trained` flag, True here)."""
    turns = [{"role": m["role"], "content": m["content"] or ""} for m in messages]
    text = _template(tokenizer, turns, index)
    spans = []
    for j, turn in enumerate(turns):
        if turn["role"] != "assistant" or not turn["content"]:
            continue
        probe = _template(tokenizer, turns[:j] + [{"role": "assistant", "content": _SENTINEL}],
                          index)
        head, found, _ = probe.rpartition(_SENTINEL)
        start, end = len(head), len(head) + len(turn["content"])
        if not found or not text.startswith(head) or text[start:end] != turn["content"]:
            raise CurateError(
                f"example {index}: the chat template renders assistant turn {j} differently "
                "inside the full conversation than after its prefix (it rewrites or drops "
                "earlier turns, or changes assistant content), so its tokens cannot be "
                "located\n  fix: use a model whose template renders a conversation as the "
                "concatenation of its turns (ChatML, Llama 3), or train on single-turn "
                "examples")
        spans.append((start, end, True))
    return text, spans


def _template(tokenizer, turns: list[dict], index: int) -> str:
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(turns, tokenize=False)
    except (TemplateError, ValueError) as exc:  # no template, or one that rejects the turns
        raise CurateError(f"example {index}: the tokenizer's chat template cannot render it: "
                          f"{exc}\n  fix: use a model with a chat template that accepts these "
                          "roles (system, user, assistant, tool) in this order") from None


def _label(ids: np.ndarray, offsets: np.ndarray, spans: list[tuple[int, int, bool]],
           max_tokens: int, mask: np.ndarray | None, index: int) -> Example | None:
    labels = np.full(len(ids), IGNORE, np.int64)
    last: np.ndarray = np.zeros(0, np.int64)  # trained positions of the last assistant turn
    anchor = None  # first token of the last turn a turn mask leaves trained
    for a, b, trained in spans:
        inside = np.flatnonzero((offsets[:, 0] < b) & (offsets[:, 1] > a))
        if len(inside) and inside[-1] + 1 < len(ids):
            inside = np.append(inside, inside[-1] + 1)  # the end-of-turn token
        if trained:
            labels[inside] = ids[inside]
            anchor = int(inside[0]) if len(inside) else anchor
        last = inside
    if mask is not None:
        mask = np.asarray(mask).reshape(-1)
        if len(mask) != len(last):
            raise CurateError(
                f"token mask of example {index} has {len(mask)} entries, but its last "
                f"assistant turn has {len(last)} trained tokens (content + end-of-turn)\n  "
                "fix: build masks with the same tokenizer and chat template as the model "
                "being trained, from untruncated examples")
        labels[last[mask == 0]] = IGNORE

    trained = np.flatnonzero(labels != IGNORE)
    if not len(trained):
        return None
    end = int(trained[-1]) + 1  # what follows the last trained token carries no loss
    start = 0
    if end > max_tokens:
        first = anchor if anchor is not None else int(trained[0])
        start = end - max_tokens
        if start > first - 1:  # the last turn alone does not fit: keep its head
            start = max(first - 1, 0)
            end = start + max_tokens
    ids, labels = ids[start:end].copy(), labels[start:end].copy()
    labels[0] = IGNORE  # no position predicts the first token
    if not (labels != IGNORE).any():
        return None
    return Example(ids, labels, index, truncated=start > 0 or end <= int(trained[-1]))


def batches(examples: list[Example], batch_tokens: int, seed: int) -> list[list[int]]:
    """Length-grouped batches of indices into `examples`: sorted by length (ties by
    position), cut where the padded size (rows x longest) would pass `batch_tokens` (an
    example longer than that is a batch alone), then the batch order shuffled by `seed`.
    Same inputs, same batches."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].input_ids), i))
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * len(examples[i].input_ids) <= batch_tokens:
            groups[-1].append(i)
        else:
            groups.append([i])
    permutation = np.random.default_rng(seed).permutation(len(groups))
    return [groups[p] for p in permutation]


# ------------------------------------------------------------------ response sequences
# The response is the last assistant turn, every turn before it the prompt, rendered with
# the chat template; loss covers the response tokens and the end-of-turn token only.


@dataclass
class Responses:
    """Token sequences of a list of conversations, in input order. `cond[i]` is prompt +
    response, `uncond[i]` the template's bare assistant header + response; the response
    starts at `start[i]` / `start_uncond[i]`. `reasons[i]` is why example i is not scored
    (None when it is); `truncated[i]` says tokens were cut to fit `max_tokens`."""

    cond: list[list[int]]
    start: list[int]
    uncond: list[list[int]]
    start_uncond: list[int]
    truncated: list[bool]
    reasons: list[str | None]

    def response_tokens(self, i: int) -> int:
        return len(self.cond[i]) - self.start[i] if self.reasons[i] is None else 0


def split_at_response(tok, messages: list[dict]) -> tuple[str, str]:
    """Template text of `messages` (prompt turns plus a final assistant turn) before and
    after the response content."""
    turns = plain(messages) + [{"role": "assistant", "content": _SENTINEL}]
    head, _, tail = tok.apply_chat_template(turns, tokenize=False).rpartition(_SENTINEL)
    return head, tail


def response_sequences(tok, messages_list: list[list[dict]], max_tokens: int) -> Responses:
    """Every example's response with and without its prompt. A response longer than
    `max_tokens - 1` loses its tail; a prompt that does not fit loses its oldest tokens
    (the turns nearest the response stay)."""
    head, tail = split_at_response(tok, [])
    enc = tok([head, tail], add_special_tokens=False)["input_ids"]
    u_prefix = enc[0]
    heads, responses, ends, reasons = [], [], [], []
    for messages in messages_list:
        last = last_turn(messages)
        response = messages[last]["content"] if last is not None else ""
        if not response or not response.strip():
            reasons.append("no response text")
            heads.append("")
            responses.append("")
            ends.append("")
            continue
        head, tail = split_at_response(tok, messages[:last])
        heads.append(head)
        responses.append(response)
        ends.append(tail)
        reasons.append(None)
    enc_heads = tok(heads, add_special_tokens=False)["input_ids"]
    enc_resp = tok(responses, add_special_tokens=False)["input_ids"]
    enc_ends = tok(ends, add_special_tokens=False)["input_ids"]
    out = Responses([], [], [], [], [], reasons)
    for h, r, e in zip(enc_heads, enc_resp, enc_ends):
        r = r + e[:1]  # the end-of-turn token is part of what is learned
        cut = False
        if len(r) > max_tokens - 1:
            r, cut = r[: max_tokens - 1], True
        room = max_tokens - len(r)
        if len(h) > room:
            h, cut = h[len(h) - room:], True  # keep the turns nearest the response
        u = u_prefix[max(0, len(u_prefix) - room):]
        out.cond.append(h + r)
        out.start.append(len(h))
        out.uncond.append(u + r)
        out.start_uncond.append(len(u))
        out.truncated.append(cut)
    return out


def token_losses(model, tok, seqs: list[list[int]], starts: list[int],
                 skip: list | None = None, batch_tokens: int = 16384,
                 with_entropy: bool = False) -> tuple[np.ndarray, np.ndarray, list]:
    """(mean NLL, mean entropy, per-token NLL as float16) of every sequence over its
    tokens from `starts[i]` on; sequences whose `skip[i]` is set are not run (0, 0, None).

    Sequences are grouped by length under `batch_tokens` (little padding) and run through
    the decoder once; the output head is applied to the scored positions only, a few
    hundred at a time, never to the whole vocabulary at every position."""
    import torch

    n = len(seqs)
    mean_nll = np.zeros(n, np.float64)
    mean_ent = np.zeros(n, np.float64)
    per_token: list = [None] * n
    todo = [i for i in range(n) if skip is None or skip[i] is None]
    todo.sort(key=lambda i: len(seqs[i]))
    dev = next(model.parameters()).device
    head = model.get_output_embeddings()
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    k = 0
    while k < len(todo):
        # grow the batch while the padded size stays under the budget
        j = k + 1
        while j < len(todo) and (j - k + 1) * len(seqs[todo[j]]) <= batch_tokens:
            j += 1
        group = todo[k:j]
        k = j
        width = max(len(seqs[i]) for i in group)
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        rows, cols, targets, owner = [], [], [], []
        for b, i in enumerate(group):
            s = seqs[i]
            ids[b, : len(s)] = torch.tensor(s)
            span = range(starts[i], len(s))
            rows += [b] * len(span)
            cols += [t - 1 for t in span]  # position t-1 predicts token t
            targets += s[starts[i]:]
            owner += [i] * len(span)
        with torch.inference_mode():
            # right padding under a causal mask: no real token ever sees a pad, so no
            # attention mask is needed, and the plain causal kernel is the fastest
            hidden = decoder(input_ids=ids.to(dev)).last_hidden_state
            picked = hidden[torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)]
            tgt = torch.tensor(targets, device=dev)
            nll_parts, ent_parts = [], []
            # the vocabulary is wide (49k for SmolLM2): a few hundred positions at a time
            # keep the log-probabilities in cache instead of streaming gigabytes
            for lo in range(0, len(targets), HEAD_ROWS):
                logp = torch.log_softmax(head(picked[lo:lo + HEAD_ROWS]).float(), dim=-1)
                nll_parts.append(-logp.gather(1, tgt[lo:lo + HEAD_ROWS, None])[:, 0])
                if with_entropy:
                    ent_parts.append(-(logp.exp() * logp).sum(-1))
        token_nll = torch.cat(nll_parts).cpu().numpy()
        token_ent = torch.cat(ent_parts).cpu().numpy() if with_entropy else None
        owner_arr = np.array(owner)
        cuts = np.flatnonzero(np.diff(owner_arr)) + 1
        for lo, hi in zip(np.concatenate([[0], cuts]), np.append(cuts, len(owner_arr))):
            i = int(owner_arr[lo])
            mean_nll[i] = float(token_nll[lo:hi].mean())
            per_token[i] = token_nll[lo:hi].astype(np.float16)
            if with_entropy:
                mean_ent[i] = float(token_ent[lo:hi].mean())
    return mean_nll, mean_ent, per_token


def fitting(model, max_tokens: int) -> int:
    """`max_tokens`, or less when the model has fewer positions."""
    return min(max_tokens, getattr(model.config, "max_position_embeddings", None) or max_tokens)


def response_losses(model, tok, messages_list: list[list[dict]], max_tokens: int = 2048,
                    batch_tokens: int = 16384) -> list[np.ndarray | None]:
    """Per-token losses of every example's response given its prompt (None when it has no
    response), encoded in chunks that bound the memory of token lists."""
    out: list[np.ndarray | None] = []
    for lo in range(0, len(messages_list), _CHUNK):
        r = response_sequences(tok, messages_list[lo:lo + _CHUNK], fitting(model, max_tokens))
        out += token_losses(model, tok, r.cond, r.start, r.reasons, batch_tokens)[2]
    return out


def response_nll(model, tok, messages_list: list[list[dict]], max_tokens: int = 2048,
                 batch_tokens: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Mean NLL of each example's response given its prompt and its scored token count
    (0, with NLL 0, for an example without a response)."""
    nll, counts = [], []
    for lo in range(0, len(messages_list), _CHUNK):
        r = response_sequences(tok, messages_list[lo:lo + _CHUNK], fitting(model, max_tokens))
        nll.append(token_losses(model, tok, r.cond, r.start, r.reasons, batch_tokens)[0])
        counts += [r.response_tokens(i) for i in range(len(r.cond))]
    return (np.concatenate(nll) if nll else np.zeros(0)), np.array(counts, np.int64)
