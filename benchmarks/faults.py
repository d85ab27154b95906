"""Fault-injection benchmark: kill curate at random points, repair, rerun, compare.

Each trial copies the store as it was before a stage (ingest, score heuristics, score
embed, select random, select kmeans, finetune, export, catalog rebuild), starts the
stage's real `curate` command in a process of its own, sends it SIGKILL, SIGINT or
SIGTERM after a seeded random delay (uniform over the uninterrupted command's wall time,
interpreter start included), then checks:

  * the store opens (`Store(...).connect()`) and `curate verify --repair` leaves it
    clean (a re-check finds no problem);
  * the same command, run again, completes (exit 0);
  * the stage's tables equal an uninterrupted run's: ids, scores, selections, run rows,
    loss curves and weights, exported bytes; sorted Arrow tables compared exactly,
    timestamp, run id and seconds columns left out;
  * rows lost (rows of the uninterrupted run missing after the rerun) and mismatches
    (tables that differ) must both be 0.

Commits are made small so that a kill can land between commits as well as inside one:
ingest commits each file alone (GROUP_BYTES=1, as tests/test_store.py does) and scorers
commit every 64-256 rows; finetune checkpoints every 50 steps of a 60-step run of a
2-layer Llama built here (the tests' `tiny` fixture). The commands run through
`curate.cli.main` itself (its signal handling included).

Run:   .venv/bin/python benchmarks/faults.py [--trials 60] [--seed 0] [--stages ingest,...]
Output: one table on stdout and benchmarks/results/faults.json. With benchmarks/_hostile.py
present, its rows (hostile input) join the table.
"""

from __future__ import annotations

import os
import sys

# benchmarks/selectors.py would shadow the standard library's `selectors` (subprocess
# needs it): this folder goes to the end of sys.path, as influence.py does
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse
import hashlib
import json
import random
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent

# the real CLI entry point, with commit sizes from the environment (see the docstring)
WRAPPER = """
import os, sys
import curate.ingest as ingest_module
import curate.scoring.base as score_base
if os.environ.get("FAULTS_GROUP_BYTES"):
    ingest_module.GROUP_BYTES = int(os.environ["FAULTS_GROUP_BYTES"])
if os.environ.get("FAULTS_SHARD_ROWS"):
    score_base.SHARD_ROWS = int(os.environ["FAULTS_SHARD_ROWS"])
from curate.cli import main
sys.argv = ["curate", *sys.argv[1:]]
main()
"""
REBUILD = "import sys; from curate.store import Store; Store(sys.argv[1]).rebuild_catalog()"
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}
DROP = {"run_id", "invocation_id", "seconds", "created_at", "finished_at", "started_at",
        "built_at", "curate_version"}


def curate_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", WRAPPER, *args]


def env(**extra: str) -> dict:
    e = {**os.environ, "CURATE_LOCK_WAIT": "30", "TOKENIZERS_PARALLELISM": "false",
         "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    e.pop("CURATE_STORE", None)
    e.update(extra)
    return e


# ------------------------------------------------------------------ corpus and models
def make_corpus(folder: Path, files: int = 6, rows: int = 400, seed: int = 0) -> list[Path]:
    """JSONL files of alpaca and chat rows with planted duplicates (within and across
    files) and broken lines (quarantine)."""
    rng = random.Random(seed)
    words = ("alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega river stone "
             "cloud seven forty blue green quick lazy").split()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for f in range(files):
        lines = []
        for i in range(rows):
            q = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
            a = " ".join(rng.choice(words) for _ in range(rng.randint(5, 60)))
            if i % 50 == 7:
                lines.append('{"instruction": "broken')  # malformed JSON: quarantined
            elif i % 40 == 3 and f:
                lines.append(json.dumps({"instruction": f"Shared question {i}?",
                                         "output": f"Shared answer {i}."}))  # across files
            elif f % 2:
                lines.append(json.dumps({"messages": [
                    {"role": "user", "content": f"{q} ({f}-{i})?"},
                    {"role": "assistant", "content": a}]}))
            else:
                lines.append(json.dumps({"instruction": f"{q} ({f}-{i})?", "input": "",
                                         "output": a}))
        lines += lines[:5]  # in-file duplicates
        path = folder / f"part{f}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        out.append(path)
    return out


def build_tiny_model(folder: Path) -> str:
    """The tests' tiny model: a 2-layer Llama with the SmolLM2 tokenizer."""
    if (folder / "config.json").is_file():
        return str(folder)
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from curate.models import resolve

    tok = AutoTokenizer.from_pretrained(str(resolve("smollm2-135m", "causal-lm")))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, initializer_range=0.1)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


# ------------------------------------------------------------------ what is compared
def sorted_table(table, drop: set[str] = frozenset()):
    """The table without volatile columns (timestamps, run ids, seconds), rows sorted."""
    import pyarrow as pa

    keep = [f.name for f in table.schema if f.name not in DROP | set(drop)
            and not pa.types.is_timestamp(f.type)]
    table = table.select(keep)
    sortable = [c for c in keep if _sortable(table.schema.field(c).type)]
    return table.sort_by([(c, "ascending") for c in sortable]) if sortable else table


def _sortable(t) -> bool:
    import pyarrow as pa

    return not (pa.types.is_list(t) or pa.types.is_struct(t) or pa.types.is_fixed_size_list(t)
                or pa.types.is_large_list(t) or pa.types.is_map(t))


def view(store: Path, name: str, drop: set[str] = frozenset()):
    from curate.store import Store

    con = Store(store).connect()
    try:
        return sorted_table(con.sql(f"SELECT * FROM {name}").to_arrow_table(), drop)
    finally:
        con.close()


def file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


# ------------------------------------------------------------------ stages
@dataclass
class Stage:
    """One command under test: the store it starts from, how to run it, what it makes."""
    name: str
    argv: Callable[[Path], list[str]]  # store -> command line
    tables: Callable[[Path], dict]  # store -> name -> comparable value
    rows: str  # the table whose rows count as "lost" when missing
    before: str | None = None  # the stage whose finished store this one starts from
    env: dict = field(default_factory=dict)
    base: Path | None = None  # the store before the command (None: no store yet)
    expected: dict | None = None  # tables of an uninterrupted run
    seconds: float = 0.0  # its wall time
    done: Path | None = None  # the store after the uninterrupted run


def stages(work: Path, files: list[Path], tiny: str | None) -> dict[str, Stage]:
    inputs = [str(f) for f in files]
    out = work / "export.jsonl"

    def scores(name, drop=frozenset()):
        return lambda s: {f"scores_{name}": view(s, f"scores_{name}", drop)}

    def embed_tables(s):
        import pyarrow.parquet as pq

        folder = next((s / "scores" / "embed").glob("*/index_ids.parquet"), None)
        return {"scores_embed": view(s, "scores_embed"),
                "index_ids": None if folder is None else
                sorted_table(pq.read_table(folder))}

    def selection(name):
        return lambda s: {"members": view(s, f"(SELECT * FROM selection_members WHERE "
                                             f"selection = '{name}')"),
                          "manifest": view(s, f"(SELECT * FROM selections WHERE "
                                              f"name = '{name}')")}

    def finetune_tables(s):
        import pyarrow.parquet as pq

        runs = view(s, "runs", {"path"})
        run_dirs = sorted((s / "runs").glob("*/run.parquet"))
        got = {"runs": runs}
        for r in run_dirs:
            got[f"{r.parent.name}/loss"] = sorted_table(pq.read_table(r.parent / "loss.parquet"))
            for w in sorted(r.parent.glob("model/*.safetensors")):
                got[f"{r.parent.name}/{w.name}"] = _tensors(w)
        return got

    def catalog_tables(s):
        import duckdb

        from curate.store import _signature

        path = s / "catalog.duckdb"
        if not path.is_file():
            return {"catalog": None}
        con = duckdb.connect(str(path), read_only=True)
        try:
            names = [r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' "
                "ORDER BY 1").fetchall()]
            counts = {n: con.execute(f'SELECT count(*) FROM "{n}"').fetchall()[0][0]
                      for n in names if n != "_curate"}
            sig = con.execute("SELECT signature FROM _curate").fetchall()[0][0]
        finally:
            con.close()
        return {"catalog": counts, "signature": sig == _signature(s)}

    ingest_tables = lambda s: {  # noqa: E731
        "examples": view(s, "examples"), "duplicates": view(s, "duplicates"),
        "quarantine": view(s, "quarantine"),
        "ingest_runs": view(s, "ingest_runs", {"fields"})}
    all_st = [
        Stage("ingest", lambda s: curate_cmd("ingest", *inputs, "--store", str(s)),
              ingest_tables, "examples", env={"FAULTS_GROUP_BYTES": "1"}),
        Stage("score heuristics", lambda s: curate_cmd("score", "heuristics", "--store", str(s)),
              scores("heuristics"), "scores_heuristics", before="ingest",
              env={"FAULTS_SHARD_ROWS": "256"}),
        Stage("score embed", lambda s: curate_cmd("score", "embed", "--text", "prompt",
                                                  "--where", "source = 'part0'",
                                                  "--store", str(s)),
              embed_tables, "scores_embed", before="ingest", env={"FAULTS_SHARD_ROWS": "64"}),
        Stage("select random", lambda s: curate_cmd(
            "select", "random", "--budget", "10%", "--seed", "3", "--name", "rnd",
            "--overwrite", "--store", str(s)), selection("rnd"), "members", before="ingest"),
        Stage("select kmeans", lambda s: curate_cmd(
            "select", "kmeans", "--clusters", "8", "--budget", "60", "--where",
            "source = 'part0'", "--name", "km", "--overwrite", "--store", str(s)),
            selection("km"), "members", before="score embed"),
        Stage("export", lambda s: curate_cmd("export", "--out", str(out), "--format",
                                             "messages", "--store", str(s)),
              lambda s: {"file": file_digest(out)}, "file", before="ingest"),
        Stage("catalog rebuild", lambda s: [sys.executable, "-c", REBUILD, str(s)],
              catalog_tables, "catalog", before="score heuristics"),
    ]
    if tiny:
        all_st.append(Stage(
            "finetune", lambda s: curate_cmd(
                "finetune", "--selection", "rnd", "--model", tiny, "--method", "full",
                "--max-steps", "60", "--batch-tokens", "128", "--max-tokens", "64",
                "--lr", "1e-2", "--device", "cpu", "--store", str(s)),
            finetune_tables, "runs", before="select random"))
    return {s.name: s for s in all_st}


def _tensors(path: Path) -> str:
    """A digest of every tensor's bytes (bit-identical weights, not file metadata)."""
    from safetensors.numpy import load_file

    h = hashlib.sha256()
    for k, v in sorted(load_file(str(path)).items()):
        h.update(k.encode())
        h.update(v.tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------ running
def run(argv: list[str], extra_env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env(**extra_env), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def prepare(stage: Stage, all_stages: dict[str, Stage], work: Path) -> Stage:
    """The store before the stage, then an uninterrupted run of it (the expected tables)."""
    if stage.expected is not None:
        return stage
    base = None
    if stage.before:
        prev = prepare(all_stages[stage.before], all_stages, work)
        base = prev.done
    stage.base = base
    store = work / "stores" / stage.name.replace(" ", "-")
    shutil.rmtree(store, ignore_errors=True)
    _fresh_copy(base, store)
    started = time.monotonic()
    res = run(stage.argv(store), stage.env)
    stage.seconds = time.monotonic() - started
    if res.returncode != 0:
        raise RuntimeError(f"{stage.name}: uninterrupted run failed ({res.returncode}):\n"
                           f"{res.stdout}\n{res.stderr}")
    stage.expected = stage.tables(store)
    stage.done = store
    return stage


def _fresh_copy(base: Path | None, store: Path) -> None:
    from curate.store import Store

    store.parent.mkdir(parents=True, exist_ok=True)
    if base is not None:
        shutil.copytree(base, store, symlinks=True)
        Store(store).rebuild_catalog()  # built for the copy's own path


def trial(stage: Stage, sig: str, delay: float, work: Path) -> dict:
    """One kill, repair, rerun and comparison; returns the measurements."""
    from curate.store import Store
    from curate.verify import verify

    store = work / "trial-store"
    shutil.rmtree(store, ignore_errors=True)
    _fresh_copy(stage.base, store)
    for f in work.glob("*export.jsonl*"):
        f.unlink()
    log = work / "trial.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(stage.argv(store), env=env(**stage.env), stdout=err,
                                stderr=err, cwd=ROOT, start_new_session=True)
        time.sleep(delay)
        hit = proc.poll() is None
        if hit:
            proc.send_signal(SIGNALS[sig])
        try:
            rc = proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    text = log.read_text(errors="replace")
    result = {"stage": stage.name, "signal": sig, "delay": round(delay, 3), "hit": hit,
              "rc": rc, "traceback": "Traceback" in text and sig != "SIGKILL" and hit,
              "problems": [], "repaired": []}
    survived = True
    if Store(store).exists:
        try:
            Store(store).connect().close()
        except Exception as e:  # noqa: BLE001 - measured, not raised
            survived = False
            result["problems"].append(f"store does not open: {e}")
        rep = verify(Store(store), repair=True)
        result["repaired"] = rep.repaired
        if not rep.clean:
            survived = False
            result["problems"] += [p.line() for p in rep.problems]
    again = run(stage.argv(store), stage.env)
    result["rerun_rc"] = again.returncode
    if again.returncode != 0:
        survived = False
        result["problems"].append(f"rerun failed: {again.stderr[-2000:]}")
    got = stage.tables(store) if again.returncode == 0 else {}
    result["mismatches"] = [k for k in stage.expected if got.get(k) != stage.expected[k]]
    result["rows_lost"] = _lost(stage, got)
    result["clean_exit"] = (not hit or sig == "SIGKILL" or rc in (128 + SIGNALS[sig], 0)
                            or rc == -SIGNALS[sig])
    result["survived"] = survived and not result["mismatches"] and not result["rows_lost"]
    if not result["clean_exit"] or result["traceback"] or not result["survived"]:
        result["log"] = text[-3000:]
    return result


def _lost(stage: Stage, got: dict) -> int:
    want = stage.expected.get(stage.rows)
    have = got.get(stage.rows)
    if want is None:
        return 0
    if have is None:
        return _count(want)
    if hasattr(want, "column_names") and "id" in want.column_names:
        return len(set(want["id"].to_pylist()) - set(have["id"].to_pylist()))
    return max(0, _count(want) - _count(have)) if want != have and hasattr(want, "num_rows") \
        else 0


def _count(value) -> int:
    return getattr(value, "num_rows", 1)


# ------------------------------------------------------------------ the benchmark
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stages", default=None, help="comma-separated stage names")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "faults.json")
    args = ap.parse_args()

    from _machine import machine

    work = Path(tempfile.mkdtemp(prefix="curate-faults-"))
    started = time.time()
    try:
        files = make_corpus(work / "corpus")
        tiny = build_tiny_model(work / "tiny")
        all_stages = stages(work, files, tiny)
        names = args.stages.split(",") if args.stages else list(all_stages)
        for name in names:
            prepare(all_stages[name], all_stages, work)
            print(f"  {name}: uninterrupted {all_stages[name].seconds:.1f}s", flush=True)
        rng = random.Random(args.seed)
        kinds = [(n, s) for s in SIGNALS for n in names]  # every stage early on
        results = []
        for i in range(args.trials):
            name, sig = kinds[i % len(kinds)]
            stage = all_stages[name]
            delay = rng.uniform(0, stage.seconds * 1.05)
            r = trial(stage, sig, delay, work)
            results.append(r)
            print(f"  [{i + 1}/{args.trials}] {name} {sig} at {delay:.2f}s: rc {r['rc']}, "
                  f"{'survived' if r['survived'] else 'FAILED ' + str(r['problems'][:2])}"
                  f"{' mismatches ' + str(r['mismatches']) if r['mismatches'] else ''}",
                  flush=True)
        rows = summarize(results)
        rows += hostile(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "faults", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "trials": args.trials, "seed": args.seed, "seconds": round(time.time() - started, 1),
        "machine": machine(("curate", "pyarrow", "duckdb", "torch", "faiss-cpu")),
        "summary": rows, "trials_detail": results}, indent=2, default=str) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


def summarize(results: list[dict]) -> list[dict]:
    by: dict[tuple, list[dict]] = {}
    for r in results:
        by.setdefault((r["signal"], r["stage"]), []).append(r)
    return [{"kind": f"{sig} x {stage}", "trials": len(rs),
             "hit": sum(r["hit"] for r in rs),
             "survived": sum(r["survived"] for r in rs),
             "rows_lost": sum(r["rows_lost"] for r in rs),
             "mismatches": sum(len(r["mismatches"]) for r in rs),
             "clean_exits": sum(r["clean_exit"] for r in rs)}
            for (sig, stage), rs in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0]))]


def hostile(work: Path) -> list[dict]:
    """Rows of benchmarks/_hostile.py (hostile input), when that file exists."""
    try:
        from _hostile import run as run_hostile
    except ImportError:
        return []
    folder = work / "hostile"
    folder.mkdir(exist_ok=True)
    return run_hostile(folder)


def table(rows: list[dict]) -> str:
    head = ("fault kind (signal x stage)", "trials", "signal landed", "survived", "rows lost",
            "mismatches after rerun", "clean exit", "peak RSS MiB")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = (r["kind"], r["trials"], r.get("hit", ""), r["survived"], r["rows_lost"],
                 r["mismatches"], r.get("clean_exits", ""), r.get("peak_rss_mb", ""))
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    total = sum(r["trials"] for r in rows)
    ok = sum(r["survived"] for r in rows)
    lost = sum(r["rows_lost"] for r in rows)
    bad = sum(r["mismatches"] for r in rows)
    lines.append(f"\n{ok}/{total} survived; rows lost {lost} (must be 0); mismatches after "
                 f"rerun {bad} (must be 0)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
