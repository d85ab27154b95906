"""Influence benchmark: curate's batched per-example LoRA gradient features vs one
backward pass per example, same rows, same model object, same projection, same run.

Both methods produce, for every example, the feature the `influence` scorer stores: the
gradient of the example's mean token loss (assistant tokens, curate.tokens
tokenization, LM head on trained positions only) with respect to the LoRA weights,
Adam-preconditioned with one set of moments (LESS), projected to --dim with the same
blockwise SRHT (curate.scoring.influence.Projector), scaled to unit length.

Methods:
  curate  -- curate.scoring.influence.gradient_features: examples sorted by length and
             grouped under --batch-tokens (at most --batch-size rows); one forward and one
             backward per batch; per-example gradients from layer hooks (G_b^T X_b).
  loop    -- one example at a time: forward, loss.backward(), the LoRA parameters'
             .grad concatenated, preconditioned and projected (LESS's reference loop).

The model: SmolLM2-135M with a fresh LoRA adapter (r=8 on q/k/v/o/gate/up/down, as the
warm-up trains), its B matrices drawn at random (std 0.02; peft starts them at zero, and
then the A gradients would all be zero) and Adam moments drawn at random, both from a
fixed seed: the work is that of a warmed-up snapshot. Rows: the first --rows GSM8K train
pairs, truncated to --max-tokens. examples/s = rows / wall seconds of the method's work
(model loaded and warmed before timing); CPU seconds are recorded too (the 2-CPU machine
is shared). --rounds K cuts the rows into K chunks and alternates which method runs first
from chunk to chunk, so load from other processes falls on both alike.

Equality: cosine between the two methods' features, per example (goal: >= 0.999; the
features are float16, so not bit-equal).
Goal (the issue): curate >= 5x loop in examples/s, on 500 rows.

Run:    .venv/bin/python benchmarks/influence.py [--rows 500] [--max-tokens 256]
                                                 [--dim 8192] [--rounds 2] [--quick]
Output: a table on stdout and benchmarks/results/influence.json (influence-quick.json
with --quick; --out to choose).
"""

from __future__ import annotations

import os
import sys

# benchmarks/selectors.py shadows the standard library module that socket imports: take
# this folder off the front of sys.path until the real one is loaded (as selectors.py does)
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
import selectors  # noqa: E402,F401  (the standard library's)

sys.path += [_HERE, os.path.dirname(_HERE)]

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _machine import machine  # noqa: E402

HERE = Path(_HERE)
ROOT = HERE.parent

CORPORA = ROOT.parent / "shared" / "corpora"


def load_rows(n: int) -> list[list[dict]]:
    path = CORPORA / "gsm8k" / "train.jsonl"
    if not path.is_file():
        sys.exit(f"needs the real corpora at {CORPORA} (see its README)")
    out = []
    with path.open() as f:
        for line in f:
            rec = json.loads(line)
            out.append([{"role": "user", "content": rec["question"]},
                        {"role": "assistant", "content": rec["answer"]}])
            if len(out) == n:
                break
    return out


def build_model(seed: int):
    """SmolLM2-135M + a LoRA adapter with random B, and random Adam moments."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curate.finetune.train import LORA_TARGETS
    from curate.models import quiet_peft
    from curate.models import resolve
    from curate.scoring.influence import Snapshot, gradient_size

    path = str(resolve("smollm2-135m", "causal-lm"))
    tok = AutoTokenizer.from_pretrained(path)
    with quiet_peft():
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                               LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16,
                                          target_modules=list(LORA_TARGETS)))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    d = gradient_size(model)
    moments = Snapshot(step=1, lr=1e-4, weights={},
                       exp_avg=torch.randn(d, generator=gen) * 1e-4,
                       exp_avg_sq=torch.rand(d, generator=gen) * 1e-7,
                       betas=(0.9, 0.999), eps=1e-8)
    return model.eval(), tok, moments


def run_curate(model, examples, projector, adam, batch_tokens, batch_size):
    from curate.scoring.influence import gradient_features

    done, feats, _ = gradient_features(model, examples, projector, adam, batch_tokens,
                                       batch_size)
    return {e.index: f for e, f in zip(done, feats)}


def run_loop(model, examples, projector, adam):
    import torch

    from curate.finetune.train import batch_loss
    from curate.scoring.influence import _unit, adam_direction, trainable_linears

    params = [p for _, m in trainable_linears(model) for p in m.parameters() if p.requires_grad]
    out = {}
    for e in examples:
        model.zero_grad(set_to_none=True)
        loss, count = batch_loss(model, [e])
        (loss / count).backward()
        with torch.no_grad():
            g = torch.cat([p.grad.reshape(-1) for p in params])[None]
            g = adam_direction(g, adam.exp_avg, adam.exp_avg_sq, adam.betas, adam.eps)
            out[e.index] = _unit(projector(g).numpy()).astype(np.float16)[0]
    model.zero_grad(set_to_none=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--dim", type=int, default=8192)
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: 16 rows, 64 tokens")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.rows, args.max_tokens, args.rounds = 16, 64, 1
    import torch

    from curate.tokens import encode
    from curate.scoring.influence import Projector, gradient_size

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    model, tok, adam = build_model(args.seed)
    examples = encode(tok, load_rows(args.rows), args.max_tokens)
    projector = Projector(gradient_size(model), args.dim, seed=args.seed)
    load_s = time.time() - started
    run_curate(model, examples[:4], projector, adam, args.batch_tokens, args.batch_size)
    run_loop(model, examples[:2], projector, adam)  # warm both paths

    chunks = np.array_split(np.arange(len(examples)), args.rounds)
    timing = {m: {"seconds": 0.0, "cpu_seconds": 0.0} for m in ("curate", "loop")}
    feats: dict[str, dict] = {"curate": {}, "loop": {}}
    load_seen = []
    for r, chunk in enumerate(chunks):
        part = [examples[i] for i in chunk]
        for method in (("curate", "loop") if r % 2 == 0 else ("loop", "curate")):
            load_seen.append(os.getloadavg()[0])
            wall, cpu = time.perf_counter(), time.process_time()
            if method == "curate":
                got = run_curate(model, part, projector, adam, args.batch_tokens,
                                 args.batch_size)
            else:
                got = run_loop(model, part, projector, adam)
            timing[method]["seconds"] += time.perf_counter() - wall
            timing[method]["cpu_seconds"] += time.process_time() - cpu
            feats[method].update(got)
            print(f"round {r + 1}/{len(chunks)} {method}: {len(part)} rows, "
                  f"{timing[method]['seconds']:.1f}s so far", flush=True)

    keys = sorted(feats["curate"])
    a = np.stack([feats["curate"][k] for k in keys]).astype(np.float32)
    b = np.stack([feats["loop"][k] for k in keys]).astype(np.float32)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    tokens = sum(len(e.input_ids) for e in examples)
    results = {m: {**t, "rows": len(examples), "tokens": tokens,
                   "examples_per_s": len(examples) / t["seconds"]} for m, t in timing.items()}
    ratio = results["curate"]["examples_per_s"] / results["loop"]["examples_per_s"]
    cpu_ratio = results["loop"]["cpu_seconds"] / results["curate"]["cpu_seconds"]
    goals = {"curate >= 5x loop (examples/s)": ratio >= 5,
             "features agree (cosine >= 0.999)": bool(cos.min() >= 0.999)}

    print(f"\n{len(examples)} GSM8K rows, {tokens:,} tokens (max {args.max_tokens}), LoRA "
          f"r=8: {projector.d:,} gradient parameters -> dim {args.dim}; "
          f"torch threads {torch.get_num_threads()}\n")
    print("| method | rows | wall s | cpu s | examples/s | speedup |")
    print("|---|---|---|---|---|---|")
    for m, r in results.items():
        sp = f"{ratio:.2f}x" if m == "curate" else ""
        print(f"| {m} | {r['rows']:,} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
              f"{r['examples_per_s']:.2f} | {sp} |")
    print(f"\nCPU-time ratio loop/curate: {cpu_ratio:.2f}x; feature cosine curate vs loop: "
          f"min {cos.min():.5f}, mean {cos.mean():.5f}")
    for g, ok in goals.items():
        print(f"goal {g}: {'met' if ok else 'NOT met'}")

    out = Path(args.out) if args.out else HERE / "results" / (
        "influence-quick.json" if args.quick else "influence.json")
    record = {
        "benchmark": "influence", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(("curate", "torch", "transformers", "peft")),
        "data": "gsm8k/train.jsonl, first rows", "rows": len(examples), "issue_rows": 500,
        "quick": args.quick, "model": "smollm2-135m", "lora_r": 8,
        "gradient_parameters": projector.d, "dim": args.dim, "max_tokens": args.max_tokens,
        "batch_tokens": args.batch_tokens, "batch_size": args.batch_size, "tokens": tokens,
        "rounds": args.rounds, "model_load_s": round(load_s, 2),
        "loadavg_1m_seen": [min(load_seen), max(load_seen)],
        "results": results, "speedup_wall": ratio, "speedup_cpu": cpu_ratio,
        "feature_cosine": {"min": float(cos.min()), "mean": float(cos.mean())}, "goals": goals,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
