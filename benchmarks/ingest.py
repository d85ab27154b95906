"""Ingest benchmark: curate vs pandas vs Hugging Face datasets, same files, same run.

What it measures, for each (method, size):
  * rows/s  -- input records read / seconds of work (imports excluded; the
               import-inclusive wall time of the whole process is reported too);
  * peak MiB -- peak RSS of a fresh worker process (ru_maxrss), so each number is
               that method's own peak, imports included (the RSS after imports is
               reported as `base MiB`).

Methods (each writes Parquet from the same input files):
  curate   -- curate.ingest.ingest(Store(fresh dir), files): parse, map to the
              canonical schema, hash ids, dedupe, quarantine, Parquet parts + DuckDB catalog.
  pandas   -- per file: pd.read_json(f, lines=<.jsonl>).to_parquet(out/i.parquet).
  datasets -- datasets.load_dataset("json", data_files=group, cache_dir=fresh) then
              .to_parquet() per split. Files are grouped by container and top-level
              keys, since one call over files with different schemas fails (a group
              that still fails is loaded file by file, and counted as `fallbacks`).

Sizes: `pool` is ../shared/corpora as is (GSM8K, FireAct, Code Alpaca, T0: ~79k
records); `xK` is K replicas of every pool file written once into a temp dir before any
timing, same formats and layout (`name.rep3.jsonl`), with ` [r3]` appended to the
first text field of every record (first message for chat records) so that every
replica has fresh ids and curate cannot skip them as duplicates.

Goal (the issue): curate >= 2x the faster baseline in rows/s, and curate's peak memory
at xK under 1.5x its peak at `pool`.

Run:   .venv/bin/python benchmarks/ingest.py [--quick] [--replicas 7] [--sizes pool,x7]
Output: a table on stdout and benchmarks/results/ingest.json (ingest-quick.json with --quick).
"""

from __future__ import annotations

from _machine import machine  # benchmarks/ is on sys.path when run as a script
import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ROOT.parent / "shared" / "corpora"
POOL = ["gsm8k/train.jsonl", "gsm8k/test.jsonl", "gsm8k/example_model_solutions.jsonl",
        "fireact/multitask_multimethod.alpaca.json",
        "fireact/multitask_multimethod.messages.jsonl", "fireact/hotpotqa_dev.json",
        "codealpaca/code_alpaca_2k.json", "t0/data_per_template/*.jsonl"]
METHODS = ("curate", "pandas", "datasets")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ------------------------------------------------------------------ workers
def work_curate(files, groups, out):
    from curate.ingest import ingest
    from curate.store import Store

    def run():
        totals = ingest(Store(out / "store"), files).to_dict()["totals"]
        assert totals["read"] == totals["stored"] + totals["duplicates"] + totals["quarantined"]
        return totals["records"], totals
    # modules curate imports lazily, kept out of the timing like every method's imports
    # (pyarrow imports pandas on first use when it is installed)
    import duckdb, ijson, polars, pyarrow.json, pyarrow.pandas_compat, xxhash  # noqa: E401,F401
    return run


def work_pandas(files, groups, out):
    import pandas as pd

    def run():
        rows = 0
        for i, f in enumerate(files):
            df = pd.read_json(f, lines=f.endswith(".jsonl"))
            df.to_parquet(out / f"{i}.parquet")
            rows += len(df)
        return rows, {}
    return run


def work_datasets(files, groups, out):
    os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
                      HF_DATASETS_DISABLE_PROGRESS_BARS="1", HF_HOME=str(out / "hf"))
    import datasets
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()

    def load(data_files, n):
        dd = datasets.load_dataset("json", data_files=data_files, cache_dir=str(out / "cache"))
        rows = 0
        for split, ds in dd.items():
            ds.to_parquet(str(out / f"{n}-{split}.parquet"))
            rows += len(ds)
        return rows

    def run():
        rows, fallbacks, n = 0, 0, 0
        for group in groups:
            try:
                rows += load(group, n)
                n += 1
            except Exception:  # noqa: BLE001  mixed types inside a group: file by file
                fallbacks += 1
                for f in group:
                    rows += load([f], n)
                    n += 1
        return rows, {"load_calls": n, "fallbacks": fallbacks}
    return run


def worker(method: str, files_list: str, out: str) -> None:
    spec = json.loads(Path(files_list).read_text())
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = globals()[f"work_{method}"](spec["files"], spec["groups"], out_dir)
    base = peak_mib()
    t0 = time.perf_counter()
    rows, extra = run()
    seconds = time.perf_counter() - t0
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_mib": peak_mib(),
                      "base_mib": base, "extra": extra}))


# ------------------------------------------------------------------ inputs
def pool_files(quick: bool) -> list[Path]:
    files: list[Path] = []
    for pattern in (["gsm8k/train.jsonl", "t0/data_per_template/*.jsonl"] if quick else POOL):
        found = sorted(CORPORA.glob(pattern))
        files += found[:30] if quick and "*" in pattern else found
    if not files:
        sys.exit(f"no corpora under {CORPORA} (see its README.md)")
    return files


def mark(rec, tag: str):
    """Append `tag` to the user text so the id changes: to a non-empty Alpaca `input`
    (curate joins instruction + input), else the first text field, else the first
    message; before trailing whitespace (curate strips it before hashing), so a record
    that is a duplicate in the pool stays one in each replica."""
    def add(d, k):
        body = d[k].rstrip()
        d[k] = body + tag + d[k][len(body):]
        return rec
    if isinstance(rec, dict):
        for k in ("input", "context"):
            if isinstance(rec.get(k), str) and rec[k].strip():
                return add(rec, k)
        for k, v in rec.items():
            if isinstance(v, str):
                return add(rec, k)
        for k in ("messages", "conversations"):
            msgs = rec.get(k)
            if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict):
                for ck in ("content", "value"):
                    if isinstance(msgs[0].get(ck), str):
                        return add(msgs[0], ck)
    raise ValueError(f"cannot mark record {str(rec)[:80]}")


def replicate(files: list[Path], k: int, dest: Path) -> list[Path]:
    """k marked copies of every file under dest, in the original layout and format."""
    out = []
    for f in files:
        rel = f.relative_to(CORPORA)
        stem, ext = rel.name.rsplit(".", 1)
        lines = f.suffix == ".jsonl"
        records = ([json.loads(x) for x in f.read_text().splitlines() if x.strip()] if lines
                   else json.loads(f.read_text()))
        for r in range(1, k + 1):
            target = dest / rel.parent / f"{stem}.rep{r}.{ext}"
            target.parent.mkdir(parents=True, exist_ok=True)
            tag = f" [r{r}]"
            marked = [mark(json.loads(json.dumps(x)), tag) for x in records]
            with open(target, "w") as fh:
                if lines:
                    fh.writelines(json.dumps(x) + "\n" for x in marked)
                else:
                    json.dump(marked, fh)
            out.append(target)
    return out


def schema_groups(files: list[Path]) -> list[list[str]]:
    """Files with the same container and top-level keys, for one load_dataset call each.

    Empty files (11 T0 templates are 0 bytes) join a group of their folder: alone,
    load_dataset raises StopIteration on them.
    """
    groups: dict[tuple, list[str]] = {}
    empty = []
    for f in files:
        if f.stat().st_size == 0:
            empty.append(f)
            continue
        with open(f) as fh:
            first = json.loads(fh.readline()) if f.suffix == ".jsonl" else json.load(fh)[0]
        groups.setdefault((f.parent, f.suffix, tuple(sorted(first))), []).append(str(f))
    for f in empty:
        key = next((k for k in groups if k[:2] == (f.parent, f.suffix)), None)
        if key:
            groups[key].append(str(f))
    return list(groups.values())


# ------------------------------------------------------------------ driver
def measure(method: str, size: str, files_list: Path, work: Path, repeat: int) -> dict:
    """Median (by work seconds) of `repeat` fresh worker processes; all times kept."""
    runs = [measure_once(method, size, files_list, work) for _ in range(repeat)]
    ok = sorted((r for r in runs if "rows" in r), key=lambda r: r["seconds"])
    if len(ok) < len(runs):
        return next(r for r in runs if "rows" not in r)
    best = ok[(len(ok) - 1) // 2] | {"runs_seconds": [round(r["seconds"], 3) for r in runs]}
    best["peak_mib"] = max(r["peak_mib"] for r in runs)  # the worst peak, not the median's
    return best


def measure_once(method: str, size: str, files_list: Path, work: Path) -> dict:
    out = work / f"out-{method}-{size}"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method,
           "--files-list", str(files_list), "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    total = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    row = {"method": method, "size": size, "total_seconds": round(total, 2)}
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return row | {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return row | res | {"rows_per_s": res["rows"] / res["seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="GSM8K train + 30 T0 files, x2")
    ap.add_argument("--replicas", type=int, default=None, help="replicas for xK (default 7)")
    ap.add_argument("--sizes", default=None, help="comma list of pool / xK (default pool,x7)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--repeat", type=int, default=None,
                    help="worker runs per measurement, median reported (default 3, quick 1)")
    ap.add_argument("--workdir", default=None, help="parent of the temp dir (default: system)")
    ap.add_argument("--json", default=None, help="results path")
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--files-list", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.files_list, args.out)

    replicas = args.replicas or (2 if args.quick else 7)
    sizes = (args.sizes or f"pool,x{replicas}").split(",")
    methods = args.methods.split(",")
    repeat = args.repeat or (1 if args.quick else 3)
    json_path = Path(args.json or ROOT / "benchmarks" / "results" /
                     ("ingest-quick.json" if args.quick else "ingest.json"))
    has_datasets = importlib.util.find_spec("datasets") is not None
    base = pool_files(args.quick)
    work = Path(tempfile.mkdtemp(prefix="curate-bench-", dir=args.workdir))
    results = []
    try:
        lists = {}
        for size in sizes:  # all inputs are written before any timing
            t0 = time.perf_counter()
            files = base if size == "pool" else replicate(base, int(size[1:]), work / size)
            lists[size] = work / f"{size}.json"
            lists[size].write_text(json.dumps({"files": [str(f) for f in files],
                                               "groups": schema_groups(files)}))
            mb = sum(len(f.read_bytes()) for f in files) / 2**20  # also warms the page cache
            print(f"{size}: {len(files)} files, {mb:.0f} MiB (prepared in "
                  f"{time.perf_counter() - t0:.1f}s)", flush=True)
        for size in sizes:
            for method in methods:
                if method == "datasets" and not has_datasets:
                    results.append({"method": method, "size": size, "skipped": "not installed"})
                    continue
                r = measure(method, size, lists[size], work, repeat)
                results.append(r)
                print(f"  {method:8} {size:5} " + (
                    f"{r['rows']:>8,} rows {r['seconds']:7.2f}s {r['peak_mib']:7.0f} MiB"
                    if "rows" in r else r.get("error", "")), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = summarize(results, sizes)
    print(table(results, summary))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({
        "benchmark": "ingest", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick, "repeat": repeat, "sizes": sizes, "corpora": str(CORPORA), "machine": machine(("curate", "pyarrow", "polars", "duckdb", "orjson", "pandas", "datasets")),
        "results": results, "summary": summary}, indent=2) + "\n")
    print(f"wrote {json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path}")


def summarize(results: list[dict], sizes: list[str]) -> dict:
    by = {(r["method"], r["size"]): r for r in results if "rows_per_s" in r}
    speed = {}
    for size in sizes:
        base = [by[m, size]["rows_per_s"] for m in ("pandas", "datasets") if (m, size) in by]
        if ("curate", size) in by and base:
            speed[size] = round(by["curate", size]["rows_per_s"] / max(base), 2)
    mem = {}
    for m in METHODS:
        if (m, "pool") in by:
            for s in sizes[1:]:
                if (m, s) in by:
                    mem[f"{m} {s}/pool"] = round(by[m, s]["peak_mib"] / by[m, "pool"]["peak_mib"], 2)
    big = [s for s in sizes if s != "pool"]
    cm = mem.get(f"curate {big[-1]}/pool") if big else None
    return {"curate_speedup_vs_faster_baseline": speed, "peak_memory_ratio": mem,
            "goal_speed_2x": min(speed.values()) >= 2 if speed else None,
            "goal_memory_flat_1.5x": cm < 1.5 if cm is not None else None}


def table(results: list[dict], summary: dict) -> str:
    head = ("method", "size", "rows", "work s", "total s", "rows/s", "base MiB", "peak MiB",
            "vs best baseline")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    speed = summary["curate_speedup_vs_faster_baseline"]
    for r in results:
        if "rows_per_s" not in r:
            lines.append(f"| {r['method']} | {r['size']} | {r.get('skipped') or r.get('error')} |")
            continue
        vs = f"{speed[r['size']]:.2f}x" if r["method"] == "curate" and r["size"] in speed else ""
        lines.append(f"| {r['method']} | {r['size']} | {r['rows']:,} | {r['seconds']:.2f} | "
                     f"{r['total_seconds']:.2f} | {r['rows_per_s']:,.0f} | {r['base_mib']:.0f} | "
                     f"{r['peak_mib']:.0f} | {vs} |")
    mem = ", ".join(f"{k} = {v:.2f}x" for k, v in summary["peak_memory_ratio"].items())
    verdict = {True: "met", False: "NOT met", None: "n/a"}
    lines += ["", f"peak memory ratios: {mem or 'n/a'}",
              f"goal curate >= 2x faster baseline: {verdict[summary['goal_speed_2x']]}; "
              f"curate peak memory flat (< 1.5x): {verdict[summary['goal_memory_flat_1.5x']]}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
