"""MinHash LSH benchmark: curate's fuzzy dedup (curate.selectors.algorithms.minhash,
the `minhash-dedup` selector's algorithm) vs datasketch's MinHash + MinHashLSH, same
rows, same shingles, same threshold and num_perm, one run.

Data: real rows of ../shared/corpora, GSM8K train (question + answer) and T0 (prompt +
completion, the same number of rows from each template file) up to --rows, plus
--planted near duplicates: copies of random real rows of at least 50 words with 1 to 3
words substituted, inserted or deleted (known ground truth). Rows are shuffled with a
fixed seed.

Both tools see the same shingles: curate's normalization (NFKC, lowercase, punctuation
removed) and 5-word shingles; datasketch hashes each shingle with its default SHA-1
and its MinHashLSH picks bands x rows from the threshold (curate does the same, and
gets the same parameters). Both pipelines verify candidate pairs by estimated Jaccard
>= threshold and cluster them with union-find; the row kept per cluster is the lowest
index. Figures, each for both:

  recall       planted pairs whose true Jaccard (exact, on the shingle sets) is at least
               the threshold and that end in one cluster (also for true Jaccard at least
               threshold + 0.1, and over all planted pairs)
  precision    dropped rows whose true Jaccard to the row kept for them is at least the
               threshold (the rest are false drops, or joined through a chain)
  rows/s       end to end from raw texts (datasketch: curate's normalization + Python
               shingles + MinHash.update_batch + LSH insert and query + verification +
               union-find), and the ratio ours / datasketch

Run:    .venv/bin/python benchmarks/minhash.py [--rows 20000] [--planted 1000]
                                               [--threshold 0.8] [--num-perm 128] [--quick]
Output: a table on stdout and benchmarks/results/minhash.json (minhash-quick.json with
--quick). Needs the bench extra (datasketch).
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path += [_HERE, os.path.dirname(_HERE)]

from _machine import machine  # noqa: E402  (first: it loads the standard `selectors`)

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(_HERE)
CORPORA = HERE.parent.parent / "shared" / "corpora"
SHINGLE = 5


def real_texts(rows: int) -> tuple[list[str], list[str]]:
    """All of GSM8K train, then T0 rows evenly over its template files, up to `rows`."""
    texts, sources = [], []
    with (CORPORA / "gsm8k" / "train.jsonl").open() as f:
        for line in f:
            r = json.loads(line)
            texts.append(f"{r['question']}\n{r['answer']}")
            sources.append("gsm8k")
            if len(texts) >= rows // 2:
                break
    files = sorted((CORPORA / "t0" / "data_per_template").glob("*.jsonl"))
    per_file = 2 * -(-(rows - len(texts)) // len(files))  # some files are short
    t0 = []
    for path in files:
        with path.open() as f:
            t0.append([json.loads(line) for _, line in zip(range(per_file), f)])
    for k in range(per_file):  # round-robin over the template files until `rows`
        for records in t0:
            if len(texts) < rows and k < len(records):
                texts.append(f"{records[k]['prompt']}\n{records[k]['completion']}")
                sources.append("t0")
    return texts, sources


def plant(texts: list[str], planted: int, rng) -> tuple[list[str], np.ndarray]:
    """Near copies with 1-3 word edits of random rows of >= 50 words; (copy, original)
    index pairs in the returned list (shuffled)."""
    long_enough = [i for i, t in enumerate(texts) if len(t.split()) >= 50]
    originals = rng.choice(long_enough, planted, replace=False)
    copies = []
    for i in originals:
        words = texts[i].split()
        for _ in range(int(rng.integers(1, 4))):
            op, at = rng.integers(3), int(rng.integers(len(words)))
            if op == 0:
                words[at] = f"edit{int(rng.integers(10**6))}"
            elif op == 1:
                words.insert(at, f"insert{int(rng.integers(10**6))}")
            else:
                del words[at]
        copies.append(" ".join(words))
    everything = texts + copies
    perm = rng.permutation(len(everything))
    where = np.empty_like(perm)
    where[perm] = np.arange(len(perm))
    pairs = np.stack([where[len(texts) + np.arange(planted)], where[originals]], 1)
    return [everything[p] for p in perm], pairs


def shingle_sets(texts: list[str]) -> list[set]:
    from curate.ngrams import split_words

    out = []
    for w in split_words(texts):
        out.append({" ".join(w)} if 0 < len(w) < SHINGLE else
                   {" ".join(w[i:i + SHINGLE]) for i in range(len(w) - SHINGLE + 1)})
    return out


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def clusters_of(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    return connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)),
                                directed=False)[1]


def run_ours(texts, threshold, num_perm) -> dict:
    from curate.selectors.algorithms.minhash import minhash_dedup

    stats: dict = {}
    t0 = time.perf_counter()
    result = minhash_dedup(texts, threshold=threshold, shingle=SHINGLE, num_perm=num_perm,
                           stats=stats)
    seconds = time.perf_counter() - t0
    rep = np.where(result.keep, np.arange(len(texts)), result.duplicate_of)
    return {"seconds": seconds, "rep": rep, **stats}


def run_datasketch(texts, threshold, num_perm) -> dict:
    from datasketch import MinHash, MinHashLSH

    from curate.ngrams import split_words

    t0 = time.perf_counter()
    words = split_words(texts)
    t_norm = time.perf_counter() - t0
    hashes = []
    for w in words:
        m = MinHash(num_perm=num_perm, seed=1)
        grams = [" ".join(w)] if 0 < len(w) < SHINGLE else \
            [" ".join(w[i:i + SHINGLE]) for i in range(len(w) - SHINGLE + 1)]
        if grams:
            m.update_batch([g.encode() for g in grams])
        hashes.append(m if grams else None)
    t_sig = time.perf_counter() - t0 - t_norm
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    for k, m in enumerate(hashes):
        if m is not None:
            lsh.insert(k, m)
    cand_i, cand_j = [], []
    for k, m in enumerate(hashes):
        if m is not None:
            for other in lsh.query(m):
                if other > k:
                    cand_i.append(k)
                    cand_j.append(other)
    t_lsh = time.perf_counter() - t0 - t_norm - t_sig
    keep_i, keep_j = [], []
    for a, b in zip(cand_i, cand_j):
        if hashes[a].jaccard(hashes[b]) >= threshold - 1e-12:
            keep_i.append(a)
            keep_j.append(b)
    n = len(texts)
    label = clusters_of(n, np.asarray(keep_i, np.int64), np.asarray(keep_j, np.int64))
    first = np.full(label.max() + 1, n, np.int64)
    np.minimum.at(first, label, np.arange(n))
    rep = first[label]
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rep": rep, "bands": lsh.b, "rows": lsh.r,
            "candidates": len(cand_i), "verified": len(keep_i),
            "stage_seconds": {"normalize": t_norm, "signatures": t_sig, "lsh": t_lsh,
                              "verify_cluster": seconds - t_norm - t_sig - t_lsh}}


def quality(rep: np.ndarray, pairs: np.ndarray, true_pair: np.ndarray, sets: list[set],
            threshold: float) -> dict:
    same = rep[pairs[:, 0]] == rep[pairs[:, 1]]
    above = true_pair >= threshold
    dropped = np.flatnonzero(rep != np.arange(len(rep)))
    true_drop = np.array([jaccard(sets[d], sets[rep[d]]) for d in dropped])
    planted_rows = set(pairs.ravel().tolist())
    well_above = true_pair >= threshold + 0.1
    return {"recall": float(same[above].mean()) if above.any() else None,
            "recall_j_plus_0.1": float(same[well_above].mean()) if well_above.any() else None,
            "recall_all_planted": float(same.mean()),
            "dropped": int(len(dropped)),
            "dropped_not_planted": int(sum(d not in planted_rows for d in dropped.tolist())),
            "precision": float((true_drop >= threshold).mean()) if len(dropped) else None,
            "false_drops": int((true_drop < threshold).sum()),
            "false_drops_far": int((true_drop < threshold - 0.1).sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--planted", type=int, default=1_000)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="smoke run: 3k rows, 200 planted")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.rows, args.planted = 3000, 200
    if not CORPORA.exists():
        sys.exit(f"no corpora at {CORPORA}")
    try:
        import datasketch  # noqa: F401
    except ImportError:
        sys.exit("datasketch is missing: pip install -e '.[bench]'")
    rng = np.random.default_rng(0)
    load_start = os.getloadavg()[0]
    base, _ = real_texts(args.rows - args.planted)
    texts, pairs = plant(base, args.planted, rng)
    sets = shingle_sets(texts)
    true_pair = np.array([jaccard(sets[a], sets[b]) for a, b in pairs])
    print(f"data: {len(texts)} rows ({len(base)} real GSM8K train + T0, {args.planted} "
          f"planted near duplicates; true Jaccard of the planted pairs: median "
          f"{np.median(true_pair):.3f}, {int((true_pair >= args.threshold).sum())} at or "
          f"above {args.threshold})")
    results = {}
    for name, run in (("curate", run_ours), ("datasketch", run_datasketch)):
        run(texts[:200], args.threshold, args.num_perm)  # warm-up: imports, caches
        r = run(texts, args.threshold, args.num_perm)
        r.update(quality(r.pop("rep"), pairs, true_pair, sets, args.threshold))
        r["rows_per_s"] = len(texts) / r["seconds"]
        results[name] = r
    ratio = results["curate"]["rows_per_s"] / results["datasketch"]["rows_per_s"]
    print(table(results, ratio))
    out = Path(args.out) if args.out else HERE / "results" / (
        "minhash-quick.json" if args.quick else "minhash.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "minhash", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(("curate", "datasketch", "numpy", "pyarrow", "scipy")),
        "loadavg_1m_start_end": [load_start, os.getloadavg()[0]],
        "data": {"rows": len(texts), "real": len(base), "planted": args.planted,
                 "planted_true_jaccard_median": float(np.median(true_pair)),
                 "planted_at_or_above_threshold": int((true_pair >= args.threshold).sum())},
        "threshold": args.threshold, "num_perm": args.num_perm, "shingle": SHINGLE,
        "quick": args.quick, "speed_ratio_curate_over_datasketch": ratio,
        "results": results}, indent=2, default=float) + "\n")
    print(f"wrote {out}")


def table(results: dict, ratio: float) -> str:
    keys = [("seconds", "{:.2f}"), ("rows_per_s", "{:,.0f}"), ("bands", "{}"), ("rows", "{}"),
            ("candidates", "{:,}"), ("verified", "{:,}"), ("recall", "{:.3f}"),
            ("recall_j_plus_0.1", "{:.3f}"), ("recall_all_planted", "{:.3f}"), ("dropped", "{:,}"),
            ("dropped_not_planted", "{:,}"), ("precision", "{:.3f}"),
            ("false_drops", "{:,}"), ("false_drops_far", "{:,}")]
    lines = [f"{'figure':<22}{'curate':>14}{'datasketch':>14}"]
    for key, fmt in keys:
        cells = [fmt.format(results[n][key]) if results[n].get(key) is not None else "-"
                 for n in ("curate", "datasketch")]
        lines.append(f"{key:<22}{cells[0]:>14}{cells[1]:>14}")
    lines.append(f"{'speed ratio':<22}{ratio:>13.1f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
