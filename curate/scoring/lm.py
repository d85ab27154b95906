"""Causal-LM scores: response perplexity with and without the prompt, IFD, entropy,
token counts, and per-token response losses (for token cleaning).

For each example the last assistant turn is the response and every turn before it the
prompt, rendered with the model's chat template. Loss covers the response tokens and
the end-of-turn token only. IFD (Cherry-LLM, Li et al. 2024) = PPL(response | prompt) /
PPL(response alone): near or above 1, the prompt does not help the model, the example
is hard or noisy.

Encoding and losses are `curate.tokens` (`response_sequences`, `token_losses`): every
text is tokenized once, in batches, and the output head runs on response positions only.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.scoring.base import Scorer
from curate.tokens import Responses, fitting, response_sequences, token_losses


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
            self.max_tokens = fitting(model, self.max_tokens)
            self._lm = (model, tok)
        return self._lm

    @classmethod
    def with_model(cls, model, tokenizer, max_tokens: int = 2048,
                   batch_tokens: int = 16384) -> "LMScorer":
        """A scorer over an already loaded model (evaluation of a fine-tuned run)."""
        scorer = cls.__new__(cls)
        Scorer.__init__(scorer, model=None, params={"max_tokens": max_tokens})
        scorer.max_tokens = fitting(model, max_tokens)
        scorer.batch_tokens = batch_tokens
        scorer._lm = (model, tokenizer)
        return scorer

    def responses(self, messages_list: list) -> Responses:
        """The examples' response sequences under this scorer's tokenizer and length."""
        _, tok = self._load()
        return response_sequences(tok, messages_list, self.max_tokens)

    def score(self, batch: pa.Table) -> pa.Table:
        model, tok = self._load()
        r = self.responses(batch["messages"].to_pylist())
        nll, ent, losses = token_losses(model, tok, r.cond, r.start, r.reasons,
                                        self.batch_tokens, with_entropy=True)
        nll_u, _, _ = token_losses(model, tok, r.uncond, r.start_uncond, r.reasons,
                                   self.batch_tokens)
        out = {c: [] for c in self.columns}
        for i in range(batch.num_rows):
            ok = r.reasons[i] is None
            out["nll"].append(nll[i] if ok else None)
            out["ppl"].append(float(np.exp(nll[i])) if ok else None)
            out["nll_uncond"].append(nll_u[i] if ok else None)
            out["ppl_uncond"].append(float(np.exp(nll_u[i])) if ok else None)
            out["ifd"].append(float(np.exp(nll[i] - nll_u[i])) if ok else None)
            out["entropy"].append(ent[i] if ok else None)
            out["prompt_tokens"].append(r.start[i] if ok else None)
            out["response_tokens"].append(r.response_tokens(i) if ok else None)
            out["truncated"].append(r.truncated[i] if ok else None)
            out["token_losses"].append(losses[i] if ok else None)
        arrays = [pa.array(out[c], t) for c, t in self.columns.items()]
        return pa.Table.from_arrays(arrays + [pa.array(r.reasons, pa.string())],
                                    names=[*self.columns, "reason"])
