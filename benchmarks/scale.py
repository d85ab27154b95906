"""Scale benchmark: the same scoring run on the local engine and on Ray with 1 and 2
workers, and GreeDi facility location against the single-machine greedy.

Scoring: one store is built once (untimed) by `curate.ingest.ingest` from real rows of
../shared/corpora -- GSM8K train, HotPotQA dev, Code Alpaca, FireAct (messages) and T0,
read in place for the full pool, or the first rows of each (in proportion, written to a
temp dir) when `--rows` asks for fewer. Then, per scorer, every arm scores the same rows
with `run_scorer(store, scorer, where=..., engine=...)`:

  local-1   the local engine, torch at 1 thread (`torch.set_num_threads(1)`): the same
            thread count as one Ray worker
  local     the local engine, torch's default threads (2 on this machine): for reference
  ray-1     RayEngine(workers=1): one actor (1 CPU) scores every shard
  ray-2     RayEngine(workers=2): two actors (1 CPU each)
  ray-1 tiny  RayEngine(workers=1) on the first `--tiny` rows only: the fixed cost of one
            Ray run (Ray Data plan, actor start, the model loaded in the actor)

Every arm of a scorer cuts the same plan: shards of min(2,048, rows / --min-shards) rows
(8 shards at least, so that 2 workers share the work evenly; the same shard size on the
local engine keeps the parts equal). Before every arm its score folder (`<store>/scores/<scorer>`) is deleted and the catalog
rebuilt (untimed), so each arm scores every row as a first run would. A fresh scorer
object is made per arm; on the local engine the model is already in this process's cache
(loaded and warmed once, untimed), on Ray each run starts new actors that load their own
copy (inside the timing: that is part of the engine's cost; `ray-1 tiny` measures it).
Ray is started once, `ray.init(num_cpus=--ray-cpus)`, before any arm; its start-up and
its first (empty) job are timed apart and reported as overhead. Ray sets
OMP_NUM_THREADS to an actor's CPUs (1) when it is unset, so torch in each actor runs 1
thread: the benchmark checks this by asking torch inside an actor of the same kind of
pool (`engine.pool`) and records the answer. (The heuristics scorer's fast tokenizer
also has a Rust thread pool, which neither setting limits.)

Rows: heuristics over `--rows` of the store (a hash-ordered mix of every source), embed
(`--text prompt`) over `--embed-rows` GSM8K and HotPotQA rows (short prompts, the texts
benchmarks/embed.py encodes), lm (`--max-tokens 128`) over `--lm-rows` of the mix; each
a fixed set of ids (the ids ordered by hash, the first N) passed as `where=`.
Equality: each arm's parts read back (`SELECT * FROM read_parquet(parts) ORDER BY id`)
are compared with the local-1 arm's table; the Ray arms (1 thread per actor, as local-1)
must equal it exactly. The `local` arm (2 threads) may differ in the last float bits
(matmul sums split another way): then the largest difference per column is reported.
Goals (the issue): ray-1 >= 0.85x local-1 in rows/s; ray-2 >= 1.6x ray-1 for embed.

GreeDi: `benchmarks/_greedi_bench.bench_greedi(n=--greedi-n, partitions=4)` on the local
engine (and on Ray with `--greedi-ray`): greedy facility location on the whole k-NN graph
vs GreeDi (4 partitions, then greedy over the union); goal: objective >= 0.98x.

Default sizes (scaled down from the issue's; this is a 2-CPU machine): heuristics 60,000
rows, embed 3,000, lm 120, GreeDi 100,000. The issue asks for 50k+ rows for embed and 500
for lm; here embed runs at ~20-60 rows/s on one thread and lm (SmolLM2-135M) at ~1.5
rows/s, so 50k embed rows in 4 arms (~1.5 hours) and 500 lm rows (~25 minutes) do not
fit a run of ~30 minutes: pass --embed-rows 50000 --lm-rows 500 on a bigger machine or
a GPU.

Run:   .venv/bin/python benchmarks/scale.py            # defaults above, ~20 min on 2 idle CPUs
       .venv/bin/python benchmarks/scale.py --quick    # 3,000 / 400 / 16 rows, GreeDi 20k: ~4 min
       #   --rows N --embed-rows N --lm-rows N --scorers embed,heuristics,lm --arms ...
       #   --device cpu|cuda|auto --ray-cpus 2 --greedi-n N --greedi-ray --no-greedi
Output: a table on stdout and benchmarks/results/scale.json (scale-quick.json with
--quick; --out to choose).
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
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

from _machine import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ROOT.parent / "shared" / "corpora"
ARMS = ("local-1", "ray-1", "ray-2", "local", "ray-1 tiny")
GOAL_RAY1 = 0.85
GOAL_RAY2 = 1.6
EMBED_SOURCES = ("gsm8k", "hotpot")  # short prompts, as benchmarks/embed.py encodes


# ------------------------------------------------------------------ data
def sources() -> list[Path]:
    return [CORPORA / "gsm8k" / "train.jsonl", CORPORA / "fireact" / "hotpotqa_dev.json",
            CORPORA / "codealpaca" / "code_alpaca_2k.json",
            CORPORA / "fireact" / "multitask_multimethod.messages.jsonl",
            *sorted((CORPORA / "t0" / "data_per_template").glob("*.jsonl"))]


def _records(path: Path) -> list:
    if path.suffix == ".json":
        return json.loads(path.read_text())
    with open(path) as f:
        return [line for line in f if line.strip()]


def inputs(rows: int | None, dest: Path) -> list[Path]:
    """The pool's files in place (rows None), else the first rows of each group of files
    in proportion to its size, written in its own format under dest."""
    files = sources()
    if rows is None:
        return files
    groups = {"gsm8k": files[:1], "hotpot": files[1:2], "codealpaca": files[2:3],
              "fireact": files[3:4], "t0": files[4:]}
    sizes = {g: [len(_records(p)) for p in fs] for g, fs in groups.items()}
    total = sum(sum(s) for s in sizes.values())
    out = []
    for g, fs in groups.items():
        want = max(1, round(rows * 1.1 * sum(sizes[g]) / total))  # 10% over: dedup
        for p in fs:
            if want <= 0:
                break
            recs = _records(p)[:want]
            want -= len(recs)
            if not recs:
                continue
            target = dest / f"{g}-{p.name}"
            target.write_text(json.dumps(recs) if p.suffix == ".json" else "".join(recs))
            out.append(target)
    return out


def subset(store, n: int, sources: tuple[str, ...] = ()) -> tuple[str, int]:
    """A `where` over a fixed set of n ids (ordered by hash: a mix of every source, or of
    the sources whose name contains one of `sources`)."""
    only = " OR ".join(f"source LIKE '%{s}%'" for s in sources)
    where = (f"id IN (SELECT id FROM examples {'WHERE ' + only if only else ''} "
             f"ORDER BY hash(id), id LIMIT {int(n)})")
    con = store.connect()
    try:
        count = con.execute(f"SELECT count(*) FROM examples WHERE {where}").fetchall()[0][0]
    finally:
        con.close()
    return where, count


def read_scores(folder: Path):
    import duckdb

    con = duckdb.connect()
    try:
        return con.sql(f"SELECT * FROM read_parquet('{folder}/part-*.parquet') "
                       "ORDER BY id").to_arrow_table()
    finally:
        con.close()


def compare(a, b) -> dict:
    """Exact equality of two score tables, else the largest float difference."""
    import numpy as np
    import pyarrow as pa

    if a.equals(b):
        return {"equal": True}
    out = {"equal": False, "rows": [a.num_rows, b.num_rows]}
    if a.num_rows != b.num_rows or a.column_names != b.column_names:
        return out
    out["ids_equal"] = a["id"].equals(b["id"])
    diff = {}
    for name in a.column_names:
        if a[name].equals(b[name]):
            continue
        t = a.schema.field(name).type
        if pa.types.is_fixed_size_list(t) or pa.types.is_list(t):
            x = np.nan_to_num(np.asarray(a[name].combine_chunks().flatten(), float))
            y = np.nan_to_num(np.asarray(b[name].combine_chunks().flatten(), float))
        elif pa.types.is_floating(t) or pa.types.is_integer(t):
            x = np.nan_to_num(a[name].to_numpy(zero_copy_only=False).astype(float))
            y = np.nan_to_num(b[name].to_numpy(zero_copy_only=False).astype(float))
        else:
            diff[name] = "differs"
            continue
        diff[name] = float(np.abs(x - y).max()) if len(x) == len(y) else "length differs"
    out["max_abs_diff"] = diff
    return out


# ------------------------------------------------------------------ arms
def make(name: str, args):
    from curate.scoring import make_scorer

    dev = None if args.device == "auto" else args.device
    if name == "embed":
        return make_scorer("embed", text=args.text, batch_size=args.batch_size, device=dev)
    if name == "lm":
        return make_scorer("lm", max_tokens=args.max_tokens, device=dev)
    return make_scorer(name, device=dev)


def torch_threads_in_actor(engine) -> int:
    """torch's thread count inside an actor of the same pool kind scoring uses."""
    def make_probe():
        def probe(_):
            import torch

            return torch.get_num_threads()
        return probe

    return list(engine.pool(make_probe, [0]))[0]


def run_arm(store, scorer_name: str, arm: str, where: str, args, engines: dict,
            shard_rows: int):
    import torch

    from curate.scoring import run_scorer

    shutil.rmtree(store.root / "scores" / scorer_name, ignore_errors=True)
    store.rebuild_catalog()
    scorer = make(scorer_name, args)
    engine = engines["ray-1" if arm == "ray-1 tiny" else arm] if arm.startswith("ray") else None
    torch.set_num_threads(1 if arm == "local-1" else args.default_threads)
    load = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    report = run_scorer(store, scorer, where=where, engine=engine, shard_rows=shard_rows)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    torch.set_num_threads(args.default_threads)
    return {"rows": report.scored, "skipped": report.skipped, "seconds": seconds,
            "driver_cpu_seconds": cpu, "rows_per_s": report.scored / seconds,
            "load_average_before": round(load, 2)}, Path(report.folder)


def warm(store, scorer_name: str, where: str, args) -> float:
    """Load the model into this process's cache and run it once on a few rows (untimed
    for the local arms), so the local arms time steady-state scoring."""
    from curate.scoring.base import TEXTS

    scorer = make(scorer_name, args)
    t0 = time.perf_counter()
    con = store.connect()
    try:
        if scorer.needs == "messages":
            batch = con.sql(f"SELECT id, messages, outcome FROM examples WHERE {where} "
                            "LIMIT 16").to_arrow_table()
        else:
            batch = con.sql(f"SELECT id, coalesce({TEXTS[scorer.needs]}, '') AS text "
                            f"FROM examples WHERE {where} LIMIT 16").to_arrow_table()
    finally:
        con.close()
    scorer.score(batch)
    return time.perf_counter() - t0


# ------------------------------------------------------------------ report
def table(results: dict) -> str:
    lines = ["| scorer | arm | rows | seconds | rows/s | vs local-1 | equal to local-1 |",
             "|---|---|---|---|---|---|---|"]
    for scorer, arms in results.items():
        base = arms.get("local-1", {}).get("rows_per_s")
        for arm, r in arms.items():
            ratio = f"{r['rows_per_s'] / base:.2f}x" if base and arm != "ray-1 tiny" else ""
            eq = r.get("equal")
            eq = "" if eq is None else ("yes" if eq else "no")
            lines.append(f"| {scorer} | {arm} | {r['rows']:,} | {r['seconds']:.1f} | "
                         f"{r['rows_per_s']:,.1f} | {ratio} | {eq} |")
    return "\n".join(lines)


def greedi_table(rows: list[dict]) -> str:
    lines = ["| GreeDi engine | n | partitions | budget | single s (graph + greedy) | "
             "GreeDi s | speed | objective ratio | dense ratio | overlap |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for g in rows:
        lines.append(f"| {g['engine']} | {g['n']:,} | {g['partitions']} | {g['budget']:,} | "
                     f"{g['single_s']:.1f} ({g['single_graph_s']:.1f} + "
                     f"{g['single_greedy_s']:.1f}) | {g['greedi_s']:.1f} | "
                     f"{g['speed_ratio']:.2f}x | {g['objective_ratio']:.4f} | "
                     f"{g.get('dense_objective_ratio', float('nan')):.4f} | "
                     f"{g['overlap']:.2f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="3,000 heuristics rows, 400 embed, 16 lm, GreeDi at 20k")
    ap.add_argument("--rows", type=int, default=60_000,
                    help="rows in the store and for heuristics (0: the whole pool)")
    ap.add_argument("--embed-rows", type=int, default=3_000)
    ap.add_argument("--lm-rows", type=int, default=120)
    ap.add_argument("--min-shards", type=int, default=8,
                    help="shards per scorer at least (smaller shards than 2,048 rows)")
    ap.add_argument("--tiny", type=int, default=16, help="rows of the `ray-1 tiny` arm")
    ap.add_argument("--scorers", default="heuristics,embed,lm")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--text", default="prompt", choices=("prompt", "response", "all"))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128, help="lm scorer's max_tokens")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                    help="the scorers' device [cpu]")
    ap.add_argument("--ray-cpus", type=int, default=2, help="ray.init(num_cpus=...)")
    ap.add_argument("--greedi-n", type=int, default=100_000)
    ap.add_argument("--greedi-partitions", type=int, default=4)
    ap.add_argument("--greedi-ray", action="store_true", help="GreeDi on Ray too")
    ap.add_argument("--no-greedi", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None, help="temp dir parent")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.rows, args.embed_rows, args.lm_rows, args.greedi_n = 3_000, 400, 16, 20_000
    out = args.out or ROOT / "benchmarks" / "results" / ("scale-quick.json" if args.quick
                                                         else "scale.json")
    if not CORPORA.is_dir():
        sys.exit(f"no corpora at {CORPORA} (see the project's README)")
    scorers = [s for s in args.scorers.split(",") if s]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    wrong = set(arms) - set(ARMS)
    if wrong:
        sys.exit(f"unknown arm(s) {', '.join(sorted(wrong))}: use {', '.join(ARMS)}")

    import torch

    from curate.engine import _RAY_INIT, RayEngine
    from curate.ingest import ingest
    from curate.models import device
    from curate.scoring.base import SHARD_ROWS
    from curate.store import Store

    args.default_threads = torch.get_num_threads()
    dev = device(None if args.device == "auto" else args.device)
    record = {"benchmark": "scale", "date": datetime.now(timezone.utc).isoformat(
                  timespec="seconds"), "quick": args.quick, "device": dev,
              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "corpora": str(CORPORA)}
    work = Path(tempfile.mkdtemp(prefix="curate-scale-bench-", dir=args.workdir))
    results: dict = {}
    try:
        files = inputs(args.rows or None, work)
        store = Store(work / "store")
        t0 = time.perf_counter()
        ingest(store, files)
        record["ingest_seconds_untimed"] = round(time.perf_counter() - t0, 2)
        con = store.connect()
        stored = con.execute("SELECT count(*) FROM examples").fetchall()[0][0]
        con.close()
        record["store_rows"] = stored
        print(f"store: {stored:,} examples from {len(files)} files "
              f"(ingest {record['ingest_seconds_untimed']:.1f}s, untimed); device {dev}; "
              f"torch default threads {args.default_threads}", flush=True)

        engines, overhead = {}, {}
        if any(a.startswith("ray") for a in arms) or args.greedi_ray:
            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=args.ray_cpus, **_RAY_INIT)
            overhead["ray_init_s"] = time.perf_counter() - t0
            engines = {"ray-1": RayEngine(workers=1), "ray-2": RayEngine(workers=2)}
            t0 = time.perf_counter()
            overhead["torch_threads_in_actor"] = torch_threads_in_actor(engines["ray-1"])
            overhead["first_pool_job_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            torch_threads_in_actor(engines["ray-1"])
            overhead["second_pool_job_s"] = time.perf_counter() - t0
            overhead["cluster"] = {k: v for k, v in ray.cluster_resources().items()
                                   if k in ("CPU", "GPU")}
            print(f"ray.init {overhead['ray_init_s']:.1f}s; first pool job (1 actor, "
                  f"imports torch) {overhead['first_pool_job_s']:.1f}s, second "
                  f"{overhead['second_pool_job_s']:.1f}s; torch threads in an actor: "
                  f"{overhead['torch_threads_in_actor']}; cluster {overhead['cluster']}",
                  flush=True)
        record["ray_overhead"] = overhead
        gpus = int(overhead.get("cluster", {}).get("GPU", 0))

        sizes = {"heuristics": args.rows or stored, "embed": args.embed_rows,
                 "lm": args.lm_rows}
        record["warm_seconds_untimed"] = {}
        for name in scorers:
            where, n = subset(store, sizes[name], EMBED_SOURCES if name == "embed" else ())
            tiny_where, _ = subset(store, args.tiny)
            record["warm_seconds_untimed"][name] = round(warm(store, name, where, args), 2)
            # at least --min-shards shards, so that 2 workers have work to share
            shard_rows = min(make(name, args).shard_rows or SHARD_ROWS,
                             -(-n // args.min_shards))
            record.setdefault("shard_rows", {})[name] = shard_rows
            results[name] = {}
            base = None
            for arm in arms:
                workers = 2 if arm == "ray-2" else 1
                if (arm.startswith("ray") and dev.startswith("cuda") and
                        make(name, args).on_gpu and gpus < workers):
                    print(f"  {name} {arm}: skipped ({gpus} GPU(s) for {workers} GPU "
                          "workers)", flush=True)
                    continue
                r, folder = run_arm(store, name, arm, tiny_where if arm == "ray-1 tiny"
                                    else where, args, engines, shard_rows)
                if arm != "ray-1 tiny":
                    scores = read_scores(folder)
                    if base is None:  # local-1 (the first arm), or the first that ran
                        base, r["reference"] = scores, True
                    else:
                        cmp = compare(scores, base)
                        r["equal"] = cmp["equal"]
                        if not cmp["equal"]:
                            r["difference"] = cmp
                    del scores
                results[name][arm] = r
                print(f"  {name} {arm}: {r['rows']:,} rows in {r['seconds']:.1f}s "
                      f"({r['rows_per_s']:,.1f} rows/s)"
                      + ("" if r.get("equal", True) else f"  NOT equal: {r['difference']}"),
                      flush=True)
            base = None

        goals = {}
        for name, a in results.items():
            if "local-1" in a and "ray-1" in a:
                x = a["ray-1"]["rows_per_s"] / a["local-1"]["rows_per_s"]
                goals[f"{name}: ray-1 >= {GOAL_RAY1}x local-1"] = {"value": round(x, 3),
                                                                 "met": x >= GOAL_RAY1}
            if "ray-1" in a and "ray-2" in a and name == "embed":
                x = a["ray-2"]["rows_per_s"] / a["ray-1"]["rows_per_s"]
                goals[f"{name}: ray-2 >= {GOAL_RAY2}x ray-1"] = {"value": round(x, 3),
                                                               "met": x >= GOAL_RAY2}
            for arm, r in a.items():
                if "equal" in r and arm.startswith("ray"):  # the same thread count
                    goals.setdefault("every Ray arm's scores equal local-1's (exact)",
                                     {"value": [], "met": True})
                    g = goals["every Ray arm's scores equal local-1's (exact)"]
                    if not r["equal"]:
                        g["value"].append(f"{name} {arm}")
                        g["met"] = False

        greedi = []
        if not args.no_greedi:
            from _greedi_bench import GOAL_RATIO, bench_greedi

            torch.set_num_threads(args.default_threads)
            for eng in ["local"] + (["ray"] if args.greedi_ray else []):
                g = bench_greedi(n=args.greedi_n, partitions=args.greedi_partitions,
                                 engine=RayEngine(workers=args.ray_cpus) if eng == "ray"
                                 else None)
                g["engine"] = eng
                greedi.append(g)
                print(f"  GreeDi {eng}: ratio {g['objective_ratio']:.4f}, single "
                      f"{g['single_s']:.1f}s, GreeDi {g['greedi_s']:.1f}s", flush=True)
                goals[f"GreeDi ({eng}) objective >= {GOAL_RATIO}x greedy at "
                      f"n={args.greedi_n:,}"] = {"value": round(g["objective_ratio"], 4),
                                                 "met": g["goal_met"]}

        print()
        print(table(results))
        if greedi:
            print()
            print(greedi_table(greedi))
        print()
        for k, g in goals.items():
            print(f"goal {k}: {g['value']} -> {'met' if g['met'] else 'NOT met'}")
        for name, a in results.items():
            if "ray-1" in a and "local-1" in a:
                extra = a["ray-1"]["seconds"] - a["local-1"]["seconds"]
                tiny = a.get("ray-1 tiny", {}).get("seconds")
                print(f"{name}: ray-1 took {extra:+.1f}s vs local-1"
                      + (f"; a {args.tiny}-row ray-1 run takes {tiny:.1f}s (fixed cost)"
                         if tiny else ""))

        record |= {"machine": machine(("curate", "ray", "torch", "sentence-transformers",
                                       "transformers", "faiss-cpu", "pyarrow", "duckdb",
                                       "numpy")),
                   "rows": sizes, "results": results, "greedi": greedi, "goals": goals}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1, default=float) + "\n")
        print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        except ImportError:
            pass


if __name__ == "__main__":
    main()
