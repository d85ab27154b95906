"""Cheap, model-free signals: lengths, turns, lexical diversity, repetition, and for
traces their steps, tool calls and outcome. Token counts use the tokenizer of `model`:
prompt and response tokens of the last user and assistant turns, and total tokens of the
whole conversation rendered with the chat template (what fine-tuning trains on)."""

from __future__ import annotations

import re
from collections import Counter

import pyarrow as pa

from curate.chat import assistant_turns, last_content
from curate.scoring.base import Scorer

_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def repetition_ratio(words: list[str], n: int = 3) -> float | None:
    """Share of word n-gram occurrences whose n-gram occurs more than once (the word
    repetition ratio of data-juicer / Gopher); None for texts shorter than n."""
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    total = sum(grams.values())
    return sum(c for c in grams.values() if c > 1) / total if total else None


def distinct_n(words: list[str], n: int) -> float | None:
    """Distinct n-grams / n-grams (Li et al. 2016); None for texts shorter than n."""
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


class HeuristicsScorer(Scorer):
    name = "heuristics"
    version = "2"  # 2: total_tokens
    model_kind = "causal-lm"  # its tokenizer counts tokens
    columns = {
        "prompt_chars": pa.int64(), "response_chars": pa.int64(), "total_chars": pa.int64(),
        "prompt_tokens": pa.int64(), "response_tokens": pa.int64(), "total_tokens": pa.int64(),
        "turns": pa.int32(), "response_words": pa.int64(),
        "distinct_1": pa.float32(), "distinct_2": pa.float32(), "repetition": pa.float32(),
        "steps": pa.int32(), "tool_calls": pa.int32(),
        "success": pa.bool_(), "reward": pa.float64(),
    }
    higher_is_better = {"distinct_1": True, "distinct_2": True, "repetition": False}
    needs = "messages"
    loaded = ("_tokenizer",)

    def __init__(self, model: str | None = "smollm2-135m", batch_size: int = 32,
                 device: str | None = None):
        super().__init__(model=model, batch_size=batch_size, device=device)
        self._tokenizer = None

    def _tokens(self, texts: list[str]) -> list[int]:
        enc = self._tok()(texts, add_special_tokens=False)["input_ids"]
        return [len(e) for e in enc]

    def _rendered(self, conversations: list[list[dict]]) -> list[str]:
        """Whole conversations as a trainer sees them: the chat template when the
        tokenizer has one, else the contents joined by newlines."""
        tok = self._tok()
        if getattr(tok, "chat_template", None):
            return [tok.apply_chat_template([{"role": m["role"], "content": m["content"] or ""}
                                             for m in c], tokenize=False)
                    for c in conversations]
        return ["\n".join(m["content"] or "" for m in c) for c in conversations]

    def _tok(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from curate.models import resolve

            self._tokenizer = AutoTokenizer.from_pretrained(str(resolve(self.model)))
        return self._tokenizer

    def score(self, batch: pa.Table) -> pa.Table:
        out: dict[str, list] = {c: [] for c in self.columns}
        out["reason"] = []
        prompts, responses = [], []
        conversations = batch["messages"].to_pylist()
        for messages in conversations:
            prompt, response = last_content(messages, "user"), last_content(messages)
            prompts.append(prompt)
            responses.append(response)
            words = _words(response)
            d1, d2 = distinct_n(words, 1), distinct_n(words, 2)
            out["prompt_chars"].append(len(prompt))
            out["response_chars"].append(len(response))
            out["total_chars"].append(sum(len(m["content"] or "") for m in messages))
            out["turns"].append(len(messages))
            out["response_words"].append(len(words))
            out["distinct_1"].append(d1)
            out["distinct_2"].append(d2)
            out["repetition"].append(repetition_ratio(words))
            out["steps"].append(len(assistant_turns(messages)))
            out["tool_calls"].append(sum(m["role"] == "tool" for m in messages))
            out["reason"].append(None if response.strip() else "no response text")
        out["prompt_tokens"] = self._tokens(prompts) if self.model else [None] * len(prompts)
        out["response_tokens"] = self._tokens(responses) if self.model else [None] * len(prompts)
        out["total_tokens"] = self._tokens(self._rendered(conversations)) if self.model \
            else [None] * len(prompts)
        outcome = batch["outcome"] if "outcome" in batch.column_names else None
        if outcome is not None:
            out["success"] = outcome.combine_chunks().field("success").to_pylist()
            out["reward"] = outcome.combine_chunks().field("reward").to_pylist()
        else:
            out["success"] = out["reward"] = [None] * batch.num_rows
        arrays = [pa.array(out[c], t) for c, t in self.columns.items()]
        return pa.Table.from_arrays(arrays + [pa.array(out["reason"], pa.string())],
                                    names=[*self.columns, "reason"])
