"""LM-scoring benchmark: curate's `lm` scorer vs a naive Hugging Face loop and vs
fixed-order padded batches, same rows, same model object, same run.

What every method computes, per example (the last assistant turn is the response, the
turns before it the prompt, rendered with the model's chat template exactly as
curate.scoring.lm does):
  * nll        -- mean NLL of the response tokens + the end-of-turn token, given the prompt;
  * nll_uncond -- the same after the assistant-only template prefix (no prompt);
  * entropy    -- mean predictive entropy over the same positions (conditional pass);
  * per-token losses.
So every method runs 2 forward passes per example over the same token sequences.

Methods:
  curate  -- make_scorer("lm", batch_tokens=B).score(table): tokenizes in batches,
             sorts by length and groups under a token budget, applies the LM head at
             response positions only.
  naive   -- one example at a time: tokenize, model(input_ids).logits, log_softmax over
             every position, gather the response targets; twice (cond, uncond).
  padded  -- input order as given (no sorting), fixed batch size (--batch-size, 8),
             right padding + attention mask, full logits, log_softmax over every position.

tokens/s = scored sequence tokens (both passes, prompt + response, padding not counted:
the same number for every method) / wall seconds of the method's work. The model is
loaded and warmed (a short forward at batch 1 and at batch --batch-size) before timing.
CPU seconds of the process are recorded too: this 2-CPU machine is shared, and CPU
time is less sensitive than wall time to other processes running at the same time.

--rounds K cuts the rows into K contiguous chunks and runs every method on every chunk,
rotating the order from chunk to chunk, so that load from other processes on a shared
machine falls on every method alike (times are summed; curate's score() then sees one
chunk per call, so it sorts and groups within a chunk). K = 1 (the default): each method
once over all rows, curate's score() on all of them in one call (run_scorer gives it
shards of up to 2,048 rows). Peak RSS (ru_maxrss) is recorded after each method's
first chunk; it is the process's peak so far, so it is that method's own only for the
method that runs first.

Equality: per-example nll, nll_uncond and entropy of each baseline vs curate; max
absolute difference reported (goal: under 1e-3).

Goal (the issue): curate >= 3x naive and >= 1.3x padded in tokens/s.

Rows: the first --rows GSM8K train pairs (../shared/corpora/gsm8k/train.jsonl). The
issue asks for 2,000 (the default, for a GPU machine or a long CPU run); a 2-CPU machine
does ~100-600 tokens/s with SmolLM2-135M, so run it there with e.g. --rows 120.

Run:   .venv/bin/python benchmarks/lm_score.py [--rows 2000] [--quick] [--batch-size 8]
                                               [--batch-tokens 8192] [--methods curate,naive,padded]
                                               [--rounds 1] [--profile]
Output: a table on stdout and benchmarks/results/lm_score.json (lm_score-quick.json with
--quick; --out to choose).
"""

from __future__ import annotations

from _machine import machine  # benchmarks/ is on sys.path when run as a script
import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ROOT.parent / "shared" / "corpora"
GSM8K = CORPORA / "gsm8k" / "train.jsonl"
METHODS = ("curate", "naive", "padded")

sys.path.insert(0, str(ROOT))


def load_rows(n: int) -> list[list[dict]]:
    if not GSM8K.is_file():
        sys.exit(f"missing {GSM8K}: this benchmark reads real rows from ../shared/corpora")
    rows = []
    with open(GSM8K, encoding="utf-8") as f:
        for line in f:
            if len(rows) >= n:
                break
            r = json.loads(line)
            rows.append([{"role": "user", "content": r["question"]},
                         {"role": "assistant", "content": r["answer"]}])
    return rows


# ---------------------------------------------------------------- baselines ---------
# Sequences are built the way curate.tokens.response_sequences builds them (same template split, same
# sentinel, same unconditional prefix, response + first end-of-turn token), but per
# example (naive) or per batch (padded), as a user of Hugging Face would.

def split_prompt(tok, messages: list[dict]) -> tuple[str, str]:
    from curate.tokens import split_at_response

    return split_at_response(tok, messages[:-1])


def uncond_prefix(tok) -> list[int]:
    head, _ = split_prompt(tok, [{"role": "assistant", "content": ""}])
    return tok(head, add_special_tokens=False)["input_ids"]


def build(tok, batch: list[list[dict]], u_prefix: list[int]):
    """(cond ids, cond start, uncond ids, uncond start) per example of `batch`."""
    heads, responses, ends = [], [], []
    for messages in batch:
        head, tail = split_prompt(tok, messages)
        heads.append(head)
        responses.append(messages[-1]["content"])
        ends.append(tail)
    enc_h = tok(heads, add_special_tokens=False)["input_ids"]
    enc_r = tok(responses, add_special_tokens=False)["input_ids"]
    enc_e = tok(ends, add_special_tokens=False)["input_ids"]
    out = []
    for h, r, e in zip(enc_h, enc_r, enc_e):
        r = r + e[:1]
        out.append((h + r, len(h), u_prefix + r, len(u_prefix)))
    return out


def full_logits_losses(model, seqs: list[list[int]], starts: list[int], pad: int,
                       with_entropy: bool):
    """Right-padded batch through model(...).logits, log_softmax over every position;
    per example: (mean nll, mean entropy, per-token nll) over positions from start on."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(s)
        mask[b, : len(s)] = 1
    dev = next(model.parameters()).device
    ids, mask = ids.to(dev), mask.to(dev)
    with torch.inference_mode():
        if len(seqs) == 1:
            logits = model(input_ids=ids).logits
        else:
            logits = model(input_ids=ids, attention_mask=mask).logits
        logp = torch.log_softmax(logits.float(), dim=-1)  # [B, T, V]
        out = []
        for b, s in enumerate(seqs):
            lp = logp[b, starts[b] - 1: len(s) - 1]  # position t-1 predicts token t
            tgt = ids[b, starts[b]: len(s)]
            tok_nll = -lp.gather(1, tgt[:, None])[:, 0]
            ent = float((-(lp.exp() * lp).sum(-1)).mean()) if with_entropy else 0.0
            out.append((float(tok_nll.mean()), ent, tok_nll.cpu().numpy()))
    return out


def run_naive(model, tok, rows, u_prefix, pad, batch_size):
    res = {"nll": [], "nll_uncond": [], "entropy": []}
    for messages in rows:
        cond, cs, unc, us = build(tok, [messages], u_prefix)[0]
        nll, ent, _ = full_logits_losses(model, [cond], [cs], pad, True)[0]
        nll_u, _, _ = full_logits_losses(model, [unc], [us], pad, False)[0]
        res["nll"].append(nll)
        res["nll_uncond"].append(nll_u)
        res["entropy"].append(ent)
    return res


def run_padded(model, tok, rows, u_prefix, pad, batch_size):
    res = {"nll": [], "nll_uncond": [], "entropy": []}
    for k in range(0, len(rows), batch_size):
        built = build(tok, rows[k: k + batch_size], u_prefix)
        cond = full_logits_losses(model, [b[0] for b in built], [b[1] for b in built], pad, True)
        unc = full_logits_losses(model, [b[2] for b in built], [b[3] for b in built], pad, False)
        res["nll"] += [c[0] for c in cond]
        res["entropy"] += [c[1] for c in cond]
        res["nll_uncond"] += [u[0] for u in unc]
    return res


def run_curate(scorer, table):
    out = scorer.score(table)
    bad = [r for r in out["reason"].to_pylist() if r is not None]
    if bad:
        raise RuntimeError(f"curate did not score {len(bad)} rows: {bad[:3]}")
    if any(out["truncated"].to_pylist()):
        raise RuntimeError("curate truncated some rows: the baselines do not truncate")
    return {c: out[c].to_pylist() for c in ("nll", "nll_uncond", "entropy")}


# ---------------------------------------------------------------- main --------------

def peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2000,
                    help="GSM8K train rows (the issue asks for 2000; use ~120 on a 2-CPU box)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 24 rows")
    ap.add_argument("--batch-size", type=int, default=8, help="padded baseline batch size")
    ap.add_argument("--batch-tokens", type=int, default=8192, help="curate's token budget")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--device", default=None, help="cpu / cuda (default: cuda when there)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="interleave methods over this many chunks of rows (shared machines)")
    ap.add_argument("--profile", action="store_true", help="cProfile curate's score()")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    n_rows = 24 if args.quick else args.rows
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            sys.exit(f"unknown method {m!r}: use {', '.join(METHODS)}")
    out_path = Path(args.out) if args.out else \
        ROOT / "benchmarks" / "results" / ("lm_score-quick.json" if args.quick else "lm_score.json")

    import pyarrow as pa
    import torch

    from curate.schema import MESSAGES
    from curate.scoring import make_scorer

    rows = load_rows(n_rows)
    table = pa.table({"id": [f"gsm8k-{i}" for i in range(len(rows))],
                      "messages": pa.array(rows, MESSAGES)})
    t0 = time.perf_counter()
    scorer = make_scorer("lm", batch_tokens=args.batch_tokens, device=args.device)
    model, tok, _ = scorer._load()  # the same model object for every method
    load_s = time.perf_counter() - t0
    dev = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    u_prefix = uncond_prefix(tok)

    # the sequences every method scores, built once here only to count tokens
    built = build(tok, rows, u_prefix)
    n_tokens = sum(len(b[0]) + len(b[2]) for b in built)
    n_resp = sum(len(b[0]) - b[1] for b in built)

    # warm-up: kernels, allocator, thread pool; not timed
    with torch.inference_mode():
        for shape in ((1, 64), (args.batch_size, 64)):
            x = torch.randint(0, 1000, shape, device=dev)
            model(input_ids=x, attention_mask=torch.ones_like(x))
    run_curate(scorer, table.slice(0, 2))

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    print(f"lm_score: {len(rows)} GSM8K rows, {n_tokens:,} scored tokens (both passes; "
          f"{n_resp:,} response+eot tokens per pass), device {dev}, "
          f"{torch.get_num_threads()} torch threads; model load {load_s:.1f}s"
          + ("" if n_rows >= 2000 else f"  [the issue's size is 2000 rows; this run uses {n_rows}]"),
          flush=True)

    # --rounds K: the rows are cut into K contiguous chunks and every method runs every
    # chunk, in an order that rotates from chunk to chunk, so that load from other
    # processes on a shared machine falls on every method alike; times are summed.
    # K = 1 (the default) runs each method once over all rows (curate's score() gets
    # all rows in one call, as run_scorer gives it a shard of up to 2048 rows).
    rounds = max(1, min(args.rounds, len(rows)))
    bounds = [round(len(rows) * k / rounds) for k in range(rounds + 1)]
    chunks = [(bounds[k], bounds[k + 1]) for k in range(rounds)]
    wall = {m: [] for m in methods}
    cpu = {m: [] for m in methods}
    values = {m: {"nll": [], "nll_uncond": [], "entropy": []} for m in methods}
    rss_after = {}
    load_seen = []
    prof = cProfile.Profile() if args.profile else None
    for k, (lo, hi) in enumerate(chunks):
        order = methods[k % len(methods):] + methods[: k % len(methods)]
        for m in order:
            sync()
            load_seen.append(os.getloadavg()[0])
            c0, w0 = time.process_time(), time.perf_counter()
            if m == "curate":
                if prof:
                    prof.enable()
                res = run_curate(scorer, table.slice(lo, hi - lo))
                if prof:
                    prof.disable()
            elif m == "naive":
                res = run_naive(model, tok, rows[lo:hi], u_prefix, pad, args.batch_size)
            else:
                res = run_padded(model, tok, rows[lo:hi], u_prefix, pad, args.batch_size)
            sync()
            wall[m].append(time.perf_counter() - w0)
            cpu[m].append(time.process_time() - c0)
            rss_after.setdefault(m, peak_mib())
            for c in values[m]:
                values[m][c] += res[c]
            chunk_tokens = sum(len(b[0]) + len(b[2]) for b in built[lo:hi])
            print(f"  round {k + 1}/{rounds} rows {lo}-{hi}: {m}: {wall[m][-1]:.1f}s wall, "
                  f"{cpu[m][-1]:.1f}s cpu, {chunk_tokens / wall[m][-1]:,.0f} tokens/s, "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
    profile_text = None
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(30)
        profile_text = s.getvalue()
    results = {}
    for m in methods:
        w, c = sum(wall[m]), sum(cpu[m])
        results[m] = {"rows": len(rows), "tokens": n_tokens, "seconds": round(w, 3),
                      "cpu_seconds": round(c, 3), "tokens_per_s": round(n_tokens / w, 1),
                      "rounds_seconds": [round(x, 2) for x in wall[m]],
                      "peak_rss_mib_after_first_run": round(rss_after[m], 1)}

    # equality and speedups vs curate
    if "curate" in values:
        ref = values["curate"]
        for m in methods:
            if m == "curate":
                continue
            for col in ("nll", "nll_uncond", "entropy"):
                d = max(abs(a - b) for a, b in zip(ref[col], values[m][col]))
                results[m][f"max_abs_diff_{col}"] = float(f"{d:.3g}")
            results[m]["equal_within_1e-3"] = all(
                results[m][f"max_abs_diff_{c}"] < 1e-3 for c in ("nll", "nll_uncond"))
            results[m]["curate_speedup"] = round(results[m]["seconds"] / results["curate"]["seconds"], 2)
            results[m]["curate_speedup_cpu"] = round(
                results[m]["cpu_seconds"] / results["curate"]["cpu_seconds"], 2)

    goals = {}
    if "curate" in results:
        if "naive" in results:
            goals["3x_naive"] = results["naive"]["curate_speedup"] >= 3
        if "padded" in results:
            goals["1.3x_padded"] = results["padded"]["curate_speedup"] >= 1.3
        goals["equal_1e-3"] = all(r.get("equal_within_1e-3", True) for r in results.values())

    header = ("| method | rows | tokens | seconds | cpu s | tokens/s | curate speedup "
              "(wall / cpu) | max abs diff nll | nll_uncond | entropy |")
    print()
    print(header)
    print("|" + "---|" * 10)
    for m in methods:
        r = results[m]
        sp = (f"{r['curate_speedup']:.2f}x / {r['curate_speedup_cpu']:.2f}x"
              if "curate_speedup" in r else "")
        diffs = [f"{r[f'max_abs_diff_{c}']:.2g}" if f"max_abs_diff_{c}" in r else ""
                 for c in ("nll", "nll_uncond", "entropy")]
        print(f"| {m} | {r['rows']:,} | {r['tokens']:,} | {r['seconds']:.1f} | "
              f"{r['cpu_seconds']:.1f} | {r['tokens_per_s']:,.0f} | {sp} | "
              + " | ".join(diffs) + " |")
    print()
    for g, ok in goals.items():
        print(f"goal {g}: {'met' if ok else 'NOT met'}")
    if profile_text:
        print("\ncProfile of curate's score() (cumulative):\n" + profile_text)

    record = {
        "benchmark": "lm_score", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(("curate", "torch", "transformers", "pyarrow")), "data": "gsm8k/train.jsonl, first rows", "rows": len(rows),
        "issue_rows": 2000, "quick": args.quick, "model": "smollm2-135m",
        "device": str(dev), "model_load_s": round(load_s, 2),
        "batch_size_padded": args.batch_size, "batch_tokens_curate": args.batch_tokens,
        "tokens": n_tokens, "response_tokens_per_pass": n_resp,
        "tokens_definition": "sum over rows of len(cond) + len(uncond) sequences, "
                             "prompt + response + end-of-turn, padding not counted",
        "rounds": rounds, "loadavg_1m_seen": [min(load_seen), max(load_seen)],
        "results": results, "goals": goals,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {out_path.relative_to(ROOT) if out_path.is_relative_to(ROOT) else out_path}")



if __name__ == "__main__":
    main()
