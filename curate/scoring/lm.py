"""Causal-LM scores: response perplexity with and without the prompt, IFD, entropy,
token counts, and per-token response losses (for token cleaning).

For each example the last assistant turn is the response and every turn before it the
prompt, rendered with the model's chat template. Loss covers the response tokens and
the end-of-turn token only. IFD (Cherry-LLM, Li et al. 2024) = PPL(response | prompt) /
PPL(response alone): near or above 1, the prompt does not help the model, the example
is hard or noisy.

Speed: every text is tokenized once, in batches; sequences are grouped by length under
a token budget (little padding), run through the decoder, and the output head is applied
to the response positions only, never to the whole vocabulary at every position.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.chat import last_turn, plain
from curate.scoring.base import Scorer

_SENTINEL = "\x00CURATE-RESPONSE\x00"
HEAD_ROWS = 256  # response positions per output-head chunk


class LMScorer(Scorer):
    name = "lm"
    version = "1"
    model_kind = "causal-lm"
    columns = {
        "nll": pa.float32(), "ppl": pa.float32(), "nll_uncond": pa.float32(),
        "ppl_uncond": pa.float32(), "ifd": pa.float32(), "entropy": pa.float32(),
        "prompt_tokens": pa.int32(), "response_tokens": pa.int32(), "truncated": pa.bool_(),
        "token_losses": pa.list_(pa.float16()),
    }
    higher_is_better = {"nll": False, "ppl": False, "ifd": True}
    needs = "messages"
    loaded = ("_lm",)
    on_gpu = True

    def __init__(self, model: str | None = "smollm2-135m", max_tokens: int = 2048,
                 batch_tokens: int = 16384, batch_size: int = 32, device: str | None = None):
        super().__init__(model=model or "smollm2-135m", batch_size=batch_size, device=device,
                         params={"max_tokens": max_tokens})
        self.max_tokens = max_tokens
        self.batch_tokens = batch_tokens  # a speed knob: not part of the cache key
        self._lm = None

    def _load(self):
        if self._lm is None:
            from curate.models import load_causal_lm

            model, tok = load_causal_lm(self.model, self.device)
            limit = getattr(model.config, "max_position_embeddings", None) or self.max_tokens
            self.max_tokens = min(self.max_tokens, limit)
            self._lm = (model, tok, self._uncond_prefix(tok))
        return self._lm

    @staticmethod
    def _split(tok, messages: list[dict]) -> tuple[str, str]:
        """Template text before and after the last assistant content."""
        text = tok.apply_chat_template(messages, tokenize=False)
        head, _, tail = text.rpartition(_SENTINEL)
        return head, tail

    def _uncond_prefix(self, tok) -> tuple[list[int], list[int]]:
        head, tail = self._split(tok, [{"role": "assistant", "content": _SENTINEL}])
        enc = tok([head, tail], add_special_tokens=False)["input_ids"]
        return enc[0], enc[1][:1]

    @classmethod
    def with_model(cls, model, tokenizer, max_tokens: int = 2048,
                   batch_tokens: int = 16384) -> "LMScorer":
        """A scorer over an already loaded model (evaluation of a fine-tuned run)."""
        scorer = cls.__new__(cls)
        Scorer.__init__(scorer, model=None, params={"max_tokens": max_tokens})
        scorer.max_tokens = min(max_tokens, getattr(model.config, "max_position_embeddings",
                                                    None) or max_tokens)
        scorer.batch_tokens = batch_tokens
        scorer._lm = (model, tokenizer, scorer._uncond_prefix(tokenizer))
        return scorer

    def _encode(self, messages_list: list) -> tuple[list, list, list, list, list, list]:
        """Token sequences of every example: (cond, spans, uncond, spans_u, truncated,
        reasons); spans are where the scored response starts."""
        _, tok, (u_prefix, _) = self._load()
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
            turns = plain(messages[:last])
            head, tail = self._split(tok, turns + [{"role": "assistant", "content": _SENTINEL}])
            heads.append(head)
            responses.append(response)
            ends.append(tail)
            reasons.append(None)
        enc_heads = tok(heads, add_special_tokens=False)["input_ids"]
        enc_resp = tok(responses, add_special_tokens=False)["input_ids"]
        enc_ends = tok(ends, add_special_tokens=False)["input_ids"]

        cond, uncond, spans, spans_u, truncated = [], [], [], [], []
        for h, r, e in zip(enc_heads, enc_resp, enc_ends):
            r = r + e[:1]  # the end-of-turn token is part of what is learned
            cut = False
            if len(r) > self.max_tokens - 1:
                r, cut = r[: self.max_tokens - 1], True
            room = self.max_tokens - len(r)
            if len(h) > room:
                h, cut = h[len(h) - room:], True  # keep the turns nearest the response
            u = u_prefix[max(0, len(u_prefix) - room):]
            cond.append(h + r)
            spans.append(len(h))
            uncond.append(u + r)
            spans_u.append(len(u))
            truncated.append(cut)
        return cond, spans, uncond, spans_u, truncated, reasons

    def response_nll(self, messages_list: list) -> tuple[np.ndarray, np.ndarray, list]:
        """Mean NLL of each example's response given its prompt (the conditional pass
        only), its scored token count (0 when skipped), and the skip reasons."""
        model, tok, _ = self._load()
        cond, spans, _, _, _, reasons = self._encode(messages_list)
        nll, _, _ = self._token_losses(model, tok, cond, spans, reasons, with_entropy=False)
        counts = np.array([len(c) - s if r is None else 0
                           for c, s, r in zip(cond, spans, reasons)], np.int64)
        return nll, counts, reasons

    def score(self, batch: pa.Table) -> pa.Table:
        model, tok, _ = self._load()
        cond, spans, uncond, spans_u, truncated, reasons = self._encode(
            batch["messages"].to_pylist())
        n = batch.num_rows
        nll, ent, losses = self._token_losses(model, tok, cond, spans, reasons, with_entropy=True)
        nll_u, _, _ = self._token_losses(model, tok, uncond, spans_u, reasons, with_entropy=False)
        out = {c: [] for c in self.columns}
        for i in range(n):
            ok = reasons[i] is None
            out["nll"].append(nll[i] if ok else None)
            out["ppl"].append(float(np.exp(nll[i])) if ok else None)
            out["nll_uncond"].append(nll_u[i] if ok else None)
            out["ppl_uncond"].append(float(np.exp(nll_u[i])) if ok else None)
            out["ifd"].append(float(np.exp(nll[i] - nll_u[i])) if ok else None)
            out["entropy"].append(ent[i] if ok else None)
            out["prompt_tokens"].append(spans[i] if ok else None)
            out["response_tokens"].append(len(cond[i]) - spans[i] if ok else None)
            out["truncated"].append(truncated[i] if ok else None)
            out["token_losses"].append(losses[i] if ok else None)
        arrays = [pa.array(out[c], t) for c, t in self.columns.items()]
        return pa.Table.from_arrays(arrays + [pa.array(reasons, pa.string())],
                                    names=[*self.columns, "reason"])

    def _token_losses(self, model, tok, seqs, starts, reasons, with_entropy):
        """Per-example mean NLL (and entropy) over tokens from `start` on, in batches
        grouped by length under the token budget; results in input order."""
        import torch

        n = len(seqs)
        mean_nll = np.zeros(n, np.float64)
        mean_ent = np.zeros(n, np.float64)
        per_token: list = [None] * n
        todo = [i for i in range(n) if reasons[i] is None]
        todo.sort(key=lambda i: len(seqs[i]))
        dev = next(model.parameters()).device
        head = model.get_output_embeddings()
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        k = 0
        while k < len(todo):
            # grow the batch while the padded size stays under the budget
            j = k + 1
            while j < len(todo) and (j - k + 1) * len(seqs[todo[j]]) <= self.batch_tokens:
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
                # right padding under a causal mask: no real token ever sees a pad, so
                # no attention mask is needed, and the plain causal kernel is the fastest
                hidden = decoder(input_ids=ids.to(dev)).last_hidden_state
                picked = hidden[torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)]
                tgt = torch.tensor(targets, device=dev)
                nll_parts, ent_parts = [], []
                # the vocabulary is wide (49k for SmolLM2): a few hundred positions at a
                # time keep the log-probabilities in cache instead of streaming gigabytes
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
