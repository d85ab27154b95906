"""Evaluate a fine-tuned run, or the untouched base model, on a target.

Primary metric: the mean per-token NLL of the target's reference responses given their
prompts (the last assistant turn and its end-of-turn token, exactly as the `lm` scorer
computes it), pooled over all target tokens. Where the references carry an extractable
answer (GSM8K's `#### 42`), `accuracy=True` adds exact match of greedy generations.

A target is a selection, a source of the store (`source:NAME`, or the bare name), or a
file in any format `curate ingest` reads (see curate/targets.py). A target that
overlaps the run's training selection is reported (`overlap`: contamination) and warned
about, as is a training selection that shares a 13-word n-gram with it (the fix is
`curate decontaminate`).

    <store>/evals/<eval_id>/eval.parquet       one row (the `evals` view)
                           /examples.parquet   per example: nll, tokens, correct
"""

from __future__ import annotations

import json
import re
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.chat import last_turn
from curate.errors import CurateError
from curate.fingerprint import fingerprint
from curate.schema import EVAL_EXAMPLE_SCHEMA, EVAL_SCHEMA
from curate.store import Store, publish
from curate.targets import Target, load_target
from curate.tokens import response_nll

BASE = "base"
_ANSWER = re.compile(r"####\s*([-+$]?[\d,]*\.?\d+)")
_NUMBER = re.compile(r"[-+]?\$?\d[\d,]*\.?\d*")


def extract_answer(text: str | None, reference: bool = False) -> str | None:
    """The final number of a solution: after `####` when present, else (for model
    output only) the last number in the text; commas, `$` and trailing `.0` dropped."""
    if not text:
        return None
    m = _ANSWER.findall(text)
    if m:
        raw = m[-1]
    elif reference:
        return None
    else:
        nums = _NUMBER.findall(text)
        if not nums:
            return None
        raw = nums[-1]
    raw = raw.replace(",", "").replace("$", "").rstrip(".")
    try:
        value = float(raw)
    except ValueError:
        return None
    return str(int(value)) if value == int(value) else str(value)


@dataclass
class EvalReport:
    eval_id: str
    run_id: str
    model: str
    target: str
    examples: int
    tokens: int
    nll: float
    accuracy: float | None
    accuracy_examples: int
    overlap: int
    seconds: float
    cached: bool = False


def evaluate(store: Store, target: str, run_id: str | None = None, model: str = "smollm2-135m",
             accuracy: bool = False, max_new_tokens: int = 256, max_tokens: int = 2048,
             device: str | None = None, limit: int | None = None) -> EvalReport:
    """Score the target's references under a run's model (or the base `model` when
    `run_id` is None) and save the result; an identical evaluation is reused."""
    started = time.time()
    tgt = load_target(store, target)
    if limit:
        tgt = Target(tgt.name, tgt.kind, tgt.ids[:limit], tgt.messages[:limit])
    run = run_id or BASE
    trained_ids: set[str] = set()
    if run != BASE:
        config = _run_config(store, run)
        model = config.get("model", model)
        trained_ids = _selection_ids(store, config.get("selection"))
    overlap = len(trained_ids.intersection(tgt.ids))
    if trained_ids:
        from curate.selectors.decontaminate import selection_overlap

        found = selection_overlap(store, config["selection"], tgt)
        if found:  # same ids, or a shared 13-gram: a warning, not an error
            warnings.warn(f"run {run}: " + found.message(), stacklevel=2)
    key = fingerprint({"run": run, "model": model if run == BASE else None,
                       "target": tgt.fingerprint, "accuracy": accuracy,
                       "max_new_tokens": max_new_tokens if accuracy else None,
                       "max_tokens": max_tokens}, 10)
    eval_id = f"{_slug(run)}-{key}"
    folder = store.folder("evals") / eval_id
    if (folder / "eval.parquet").is_file():
        row = pq.read_table(folder / "eval.parquet").to_pylist()[0]
        return EvalReport(eval_id, run, row["model"], row["target"], row["examples"],
                          row["tokens"], row["nll"], row["accuracy"], row["accuracy_examples"],
                          row["overlap"], row["seconds"], cached=True)

    lm, tok = _load(store, run, model, device)
    nll, counts = response_nll(lm, tok, tgt.messages, max_tokens)
    reasons = [None if c else "no response text" for c in counts]
    scored = counts > 0
    if not scored.any():
        raise CurateError(f"no target example of {target!r} has a response to score")
    pooled = float((nll[scored] * counts[scored]).sum() / counts[scored].sum())
    correct: list[bool | None] = [None] * len(tgt.ids)
    acc, acc_n = None, 0
    if accuracy:
        correct = _exact_match(lm, tok, tgt.messages, max_new_tokens)
        checked = [c for c in correct if c is not None]
        if not checked:
            raise CurateError(f"target {target!r} has no extractable answers (`#### N`)\n"
                              "  fix: drop --accuracy; the NLL is the primary metric")
        acc, acc_n = float(np.mean(checked)), len(checked)
    seconds = round(time.time() - started, 3)
    from curate import __version__

    tmp = store.folder("evals") / f".{eval_id}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pydict({
        "eval_id": [eval_id] * len(tgt.ids), "id": tgt.ids,
        "nll": [float(v) if s else None for v, s in zip(nll, scored)],
        "tokens": counts.tolist(), "correct": correct, "reason": reasons},
        schema=EVAL_EXAMPLE_SCHEMA), tmp / "examples.parquet")
    row = {"eval_id": eval_id, "run_id": run, "model": model, "target": tgt.name,
           "target_fingerprint": tgt.fingerprint, "examples": int(scored.sum()),
           "tokens": int(counts.sum()), "nll": pooled, "accuracy": acc,
           "accuracy_examples": acc_n, "overlap": overlap, "seconds": seconds,
           "created_at": datetime.now(timezone.utc), "curate_version": __version__}
    pq.write_table(pa.Table.from_pylist([row], schema=EVAL_SCHEMA), tmp / "eval.parquet")
    publish(tmp, folder, replace=False)  # a concurrent identical evaluation may finish first
    store.rebuild_catalog()
    return EvalReport(eval_id, run, model, tgt.name, row["examples"], row["tokens"], pooled,
                      acc, acc_n, overlap, seconds)


def _load(store: Store, run: str, model: str, device: str | None):
    if run == BASE:
        from curate.models import load_causal_lm

        return load_causal_lm(model, device)
    from curate.models import load_run_model

    return load_run_model(store, run, device)


def _run_config(store: Store, run: str) -> dict:
    folder = store.finished_run(run, fix="or omit --run to evaluate the base model")
    return json.loads((folder / "config.json").read_text())


def _selection_ids(store: Store, selection: str | None) -> set[str]:
    members = store.folder("selections") / str(selection) / "members.parquet"
    return set(pq.read_table(members, columns=["id"])["id"].to_pylist()) \
        if selection and members.is_file() else set()


def _exact_match(model, tok, conversations: list[list[dict]], max_new_tokens: int,
                 batch_size: int = 8) -> list[bool | None]:
    """Greedy generation for every example with an extractable reference answer."""
    import torch

    todo, prompts, refs = [], [], []
    for i, messages in enumerate(conversations):
        last = last_turn(messages)
        ref = extract_answer(messages[last]["content"], reference=True) if last is not None \
            else None
        if ref is not None:
            todo.append(i)
            refs.append(ref)
            prompts.append(tok.apply_chat_template(messages[:last], tokenize=False,
                                                   add_generation_prompt=True))
    out: list[bool | None] = [None] * len(conversations)
    side = tok.padding_side
    tok.padding_side = "left"
    dev = next(model.parameters()).device
    try:
        order = sorted(range(len(todo)), key=lambda k: len(prompts[k]))
        for b in range(0, len(order), batch_size):
            group = order[b:b + batch_size]
            enc = tok([prompts[k] for k in group], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(dev)
            with torch.inference_mode():
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id)
            texts = tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for k, text in zip(group, texts):
                out[todo[k]] = extract_answer(text) == refs[k]
    finally:
        tok.padding_side = side
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:60]


def list_evals(store: Store) -> list[dict]:
    root = store.folder("evals")
    rows = [pq.read_table(p).to_pylist()[0] for p in root.glob("*/eval.parquet")] \
        if root.is_dir() else []
    return sorted(rows, key=lambda r: r["created_at"])

