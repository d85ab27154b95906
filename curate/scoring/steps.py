"""Per-step losses of multi-turn examples (agent traces, dialogues): the mean token NLL
of every assistant turn given everything before it, under one causal LM.

A trace's steps are its assistant turns. The conversation is tokenized exactly as the
fine-tune stage tokenizes it (`curate.tokens.encode`: chat template, each turn's
content tokens plus its end-of-turn token) and run through the model once; the trained
tokens fall into one run per non-empty assistant turn (role headers separate them), and
each run's mean loss is that step's score. The expert-failures selector reads these to
find the harmful steps of failed traces.

Columns, one list entry per assistant message in order (empty turns and turns cut off
by `max_tokens` are null):

    step_nll      mean token NLL of the step (its content and end-of-turn token)
    step_tokens   tokens scored in the step (0 when null)
    step_count    assistant messages
    max_step_nll  the largest step_nll
    truncated     the oldest tokens were cut to fit `max_tokens`
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.chat import assistant_turns
from curate.errors import CurateError
from curate.scoring.lm import LMScorer
from curate.tokens import IGNORE, encode, token_losses


class StepLossScorer(LMScorer):
    name = "steps"
    version = "1"
    columns = {
        "step_nll": pa.list_(pa.float32()), "step_tokens": pa.list_(pa.int32()),
        "step_count": pa.int32(), "max_step_nll": pa.float32(), "truncated": pa.bool_(),
    }
    higher_is_better = {"max_step_nll": False}
    needs = "messages"

    def score(self, batch: pa.Table) -> pa.Table:
        model, tok = self._load()
        messages_list = batch["messages"].to_pylist()
        examples = {e.index: e for e in encode(tok, messages_list, self.max_tokens)}
        order = sorted(examples)
        seqs = [examples[i].input_ids.tolist() for i in order]
        starts = [int(np.flatnonzero(examples[i].labels != IGNORE)[0]) for i in order]
        _, _, losses = token_losses(model, tok, seqs, starts, batch_tokens=self.batch_tokens)
        out = {c: [] for c in self.columns}
        reasons = []
        per_example = dict(zip(order, zip(starts, losses)))
        for i, messages in enumerate(messages_list):
            turns = assistant_turns(messages)
            if i not in examples:
                reasons.append("no assistant turn with text" if messages else "no messages")
                for c in self.columns:
                    out[c].append(None)
                continue
            ex = examples[i]
            start, token_loss = per_example[i]
            step_loss = token_loss.astype(np.float32)[ex.labels[start:] != IGNORE]
            runs = step_runs(messages, ex, batch["id"][i].as_py())
            nll = [float(step_loss[runs[s]].mean()) if s in runs else None
                   for s in range(len(turns))]
            out["step_nll"].append(nll)
            out["step_tokens"].append([len(runs[s]) if s in runs else 0
                                       for s in range(len(turns))])
            out["step_count"].append(len(turns))
            out["max_step_nll"].append(max((v for v in nll if v is not None), default=None))
            out["truncated"].append(bool(ex.truncated))
            reasons.append(None)
        arrays = [pa.array(out[c], t) for c, t in self.columns.items()]
        return pa.Table.from_arrays(arrays + [pa.array(reasons, pa.string())],
                                    names=[*self.columns, "reason"])


def step_runs(messages: list[dict], example, example_id: str) -> dict[int, np.ndarray]:
    """Step (0-based, over the assistant messages in order) -> the indices of its tokens
    among `example`'s trained tokens (`curate.tokens.encode` output, label order).
    The trained tokens fall into one run per non-empty assistant turn (role headers
    separate them); truncation cuts the oldest turns, so the runs belong to the last ones.
    Empty turns and turns cut off have no entry."""
    positions = np.flatnonzero(example.labels != IGNORE)
    runs = np.split(np.arange(len(positions)), np.flatnonzero(np.diff(positions) > 1) + 1)
    turns = assistant_turns(messages)
    filled = [s for s, j in enumerate(turns) if messages[j]["content"]]
    if len(runs) > len(filled) or (len(runs) < len(filled) and not example.truncated):
        raise CurateError(
            f"example {example_id}: its {len(filled)} assistant turns tokenize into "
            f"{len(runs)} separate spans, so steps cannot be told apart\n  fix: use a model "
            "whose chat template puts a role header before every turn (ChatML, Llama 3)")
    return dict(zip(filled[len(filled) - len(runs):], runs))
