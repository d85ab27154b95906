"""Selector benchmark: curate's selection algorithms vs the reference implementations,
same data, same machine, one run.

Sections (--sections, default all):
  kmeans    FAISS k-means (curate.selectors.algorithms.kmeans) vs scikit-learn KMeans, same k (100)
            and iterations (20), on 100k x 384: time ratio and inertia ratio (goal:
            faster at inertia within 1%).
  apricot   facility location (sparse k-NN graph + lazy greedy) vs apricot-select's
            FacilityLocationSelection on 10k x 384, budget 10%: time ratio and objective
            ratio, both subsets scored on the same dense cosine objective (goal: >= 10x
            faster at >= 0.98 of apricot's objective).
  fl100k    facility location on 100k x 384, budget 10% (apricot would need a dense
            100k^2 matrix): graph build, graph recall@k against exact search (sampled),
            greedy, total (goal: under 60 s on this 2-core machine).
  semdedup  k-means + semantic dedup on 100k: docs/s and recall of planted duplicates.
See benchmarks/_kmeans_bench.py and benchmarks/_submodular_bench.py for how each
figure is measured.

Data: real embeddings. The mixed pool of ../shared/corpora (GSM8K train, Code Alpaca,
FireAct, T0: about 64k examples after dedup) is ingested and embedded once with the
packaged MiniLM (`curate score embed --text all`) into benchmarks/.cache/pool, reused
afterwards (the first run spends ~30 min on 2 cores embedding). To reach --rows (100k),
the real vectors are extended with perturbed copies of random real rows: 5% of --rows
are planted near duplicates (noise 0.15: cosine ~0.99 to their original, the pairs the
semdedup section must find) and the rest are loose variants (noise 0.7: cosine ~0.8,
below any dedup threshold). --synthetic uses synthetic topic vectors instead (no cache
needed). Rows are shuffled with a fixed seed.

Run:    .venv/bin/python benchmarks/selectors.py [--rows 100000] [--sections kmeans,...]
                                                 [--synthetic] [--quick]
Output: a table on stdout and benchmarks/results/selectors.json (selectors-quick.json
with --quick).
"""

from __future__ import annotations

import os
import sys

# This file's name (the issue's) is also a standard library module's, which asyncio and
# socket import: take this folder off the front of sys.path until the real one is loaded.
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

from _kmeans_bench import (bench_kmeans_vs_sklearn, bench_semdedup,  # noqa: E402
                           synthetic_embeddings)
from _submodular_bench import bench_fl_100k, bench_fl_vs_apricot  # noqa: E402

CORPORA = HERE.parent.parent / "shared" / "corpora"
CACHE = HERE / ".cache" / "pool"
POOL = ["gsm8k/train.jsonl", "codealpaca/code_alpaca_2k.json",
        "fireact/multitask_multimethod.alpaca.json", "t0/data_per_template"]
SECTIONS = ("kmeans", "apricot", "fl100k", "semdedup")


def real_vectors() -> np.ndarray:
    """MiniLM vectors of the whole mixed pool, embedded once into the cache store."""
    from curate.ingest import ingest
    from curate.scoring import make_scorer, run_scorer
    from curate.scoring.embed import load_vectors
    from curate.store import Store, score_views

    store = Store(CACHE)
    if not CORPORA.exists():
        sys.exit(f"no corpora at {CORPORA}: run with --synthetic")
    ingest(store, [CORPORA / p for p in POOL])  # skipped when already ingested
    report = run_scorer(store, make_scorer("embed", text="all"))  # only what is missing
    if report.scored:
        print(f"embedded {report.scored} rows in {report.seconds:.0f}s (cached from now on)")
    _, X = load_vectors(score_views(store.root)["scores_embed"])
    return X


def extend(X: np.ndarray, rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X grown to `rows` with perturbed copies; returns it (shuffled) and the planted
    (duplicate, original) pairs."""
    rng = np.random.default_rng(seed)
    n, d = X.shape
    if rows <= n:
        X = X[np.sort(rng.choice(n, rows, replace=False))]
        n = rows
    planted_n = int(0.05 * rows) if rows > n else 0
    loose_n = rows - n - planted_n
    orig = rng.choice(n, planted_n + max(loose_n, 0), replace=True)
    noise = np.r_[np.full(planted_n, 0.15), np.full(max(loose_n, 0), 0.7)].astype(np.float32)
    extra = X[orig] + (noise / np.sqrt(d))[:, None] * rng.standard_normal(
        (len(orig), d), dtype=np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    full = np.concatenate([X, extra]).astype(np.float32)
    perm = rng.permutation(len(full))
    where = np.empty_like(perm)
    where[perm] = np.arange(len(perm))  # old row -> new row
    planted = np.stack([where[n + np.arange(planted_n)], where[orig[:planted_n]]], axis=1)
    return np.ascontiguousarray(full[perm]), planted.astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--apricot-rows", type=int, default=10_000)
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--synthetic", action="store_true", help="synthetic vectors, no corpora")
    ap.add_argument("--quick", action="store_true", help="smoke run: 8k rows, 2k for apricot")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.rows, args.apricot_rows = 8000, 2000
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        sys.exit(f"unknown sections {sorted(unknown)}; use {', '.join(SECTIONS)}")

    t0 = time.time()
    load_start = os.getloadavg()[0]
    if args.synthetic:
        base = synthetic_embeddings(args.rows, seed=0)
        data = f"synthetic topic vectors (1000 topics), {args.rows} x 384"
        X, planted = extend(base[: int(args.rows * 0.95)], args.rows)
    else:
        base = real_vectors()
        data = (f"MiniLM vectors of the mixed pool ({len(base)} real rows of GSM8K train, "
                "Code Alpaca, FireAct, T0) extended with perturbed copies")
        X, planted = extend(base, args.rows)
    print(f"data: {data}; X {X.shape}, {len(planted)} planted near duplicates "
          f"({time.time() - t0:.0f}s to load)")
    rng = np.random.default_rng(1)
    results: dict[str, dict] = {}
    if "kmeans" in sections:
        results["kmeans"] = bench_kmeans_vs_sklearn(X, k=100, iters=20)
    if "apricot" in sections:
        sample = np.sort(rng.choice(len(X), min(args.apricot_rows, len(X)), replace=False))
        results["apricot"] = bench_fl_vs_apricot(X[sample], budget_frac=0.1)
    if "fl100k" in sections:
        results["fl100k"] = bench_fl_100k(X, budget_frac=0.1)
    if "semdedup" in sections:
        results["semdedup"] = bench_semdedup(X, planted, threshold=0.95, k=100)

    print(table(results))
    out = Path(args.out) if args.out else HERE / "results" / (
        "selectors-quick.json" if args.quick else "selectors.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "selectors", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(("curate", "faiss-cpu", "faiss-gpu", "scikit-learn", "apricot-select",
                             "numpy")),
        "loadavg_1m_start_end": [load_start, os.getloadavg()[0]], "data": data, "rows": len(X), "planted": len(planted),
        "quick": args.quick, "results": results}, indent=2, default=float) + "\n")
    print(f"wrote {out}")


def table(results: dict[str, dict]) -> str:
    lines = ["", f"{'section':<10} {'figure':<44} {'value':>12}", "-" * 68]

    def row(section: str, name: str, value) -> None:
        v = f"{value:,.3f}" if isinstance(value, float) else str(value)
        lines.append(f"{section:<10} {name:<44} {v:>12}")

    if r := results.get("kmeans"):
        row("kmeans", "sklearn KMeans seconds", r["runs"]["sklearn"]["seconds"])
        for name in ("curate_all", "curate_subsampled"):
            run = r["runs"][name]
            row("kmeans", f"{name} seconds", run["seconds"])
            row("kmeans", f"{name} speedup vs sklearn (x)", run["speedup_vs_sklearn"])
            row("kmeans", f"{name} inertia ratio vs sklearn", run["inertia_ratio_vs_sklearn"])
    if r := results.get("apricot"):
        for key, value in r.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row("apricot", key, value)
    if r := results.get("fl100k"):
        for key in ("n", "budget", "k_neighbors", "graph_s", "recall_at_k", "greedy_s",
                    "total_s", "goal_met"):
            row("fl100k", key, r[key])
    if r := results.get("semdedup"):
        for key in ("n", "k", "threshold", "kmeans_seconds", "dedup_seconds",
                    "docs_per_second", "planted_pairs", "recall",
                    "recall_within_clusters_only", "recall_strict",
                    "pairs_split_across_clusters", "dropped", "non_planted_drops"):
            row("semdedup", key, r[key])
    return "\n".join(lines)


if __name__ == "__main__":
    main()
