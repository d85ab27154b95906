"""Hostile input for `curate ingest`: each kind is a real file, ingested by a real
`curate ingest` process whose peak RSS is measured (`RUSAGE_CHILDREN` of a wrapper
process that runs only that one command).

A kind survives when the command exits as expected (0, or 2 with `error: <reason>` where
the whole file cannot be read), prints no traceback, the counts add up
(read = stored + duplicates + quarantined), every good row around the hostile one is
stored (`rows_lost` counts those missing) and the hostile row is quarantined with the
expected reason (else a mismatch). `run(workdir)` gives one row per kind;
`benchmarks/faults.py` joins them to its table.

Run:   .venv/bin/python benchmarks/_hostile.py [WORKDIR]
"""

from __future__ import annotations

import os
import sys

# benchmarks/selectors.py would shadow the standard library's `selectors` (subprocess
# needs it): this folder goes to the end of sys.path, as faults.py does
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import gzip  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CURATE = [sys.executable, "-c", "from curate.cli import main; main()"]
GOOD = [{"instruction": f"Question {i}?", "input": "", "output": f"Answer {i}."} for i in range(3)]
DEPTH = 10_000
BIG = 200 << 20  # bytes of the long line / item
BOMB = 2 << 30  # decompressed bytes of the bombs

_MEASURE = ("import resource, subprocess, sys\n"
            "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
            "sys.stdout.buffer.write(r.stdout); sys.stderr.buffer.write(r.stderr)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(r.returncode)\n")


def _lines(records) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n"
                    for r in records)


def _deep(depth: int = DEPTH) -> bytes:
    return b"[" * depth + b"]" * depth


def _zeros(path: Path, total: int, compression: str) -> None:
    """`total` zero bytes, compressed, written as repeated members/frames of one block
    (valid concatenated gzip members / zstd frames), so that it takes a second."""
    block = bytes(64 << 20)
    if compression == "gzip":
        member = gzip.compress(block, compresslevel=9)
    else:
        import zstandard

        member = zstandard.ZstdCompressor(level=19).compress(block)
    with open(path, "wb") as f:
        for _ in range(total // len(block)):
            f.write(member)


def _long_line(path: Path, size: int, before: list, after: list) -> None:
    """JSON lines with one `size`-byte line (no newline inside), written in blocks."""
    with open(path, "wb") as f:
        f.write(_lines(before))
        f.write(b'{"instruction": "x", "input": "", "output": "')
        block = b"a" * (8 << 20)
        for _ in range(size // len(block)):
            f.write(block)
        f.write(b'"}\n')
        f.write(_lines(after))


# kind -> (writer(path), file name, good rows expected stored, reason expected, exit code)
def _cases():
    def nested_jsonl(p):
        p.write_bytes(_lines(GOOD[:2] + [_deep()] + GOOD[2:]))

    def nested_array(p):
        p.write_bytes(b"[" + b",".join([json.dumps(GOOD[0]).encode(), _deep(),
                                        json.dumps(GOOD[1]).encode()]) + b"]")

    def nested_field(p):
        rec = json.dumps({**GOOD[0], "output": "nested", "extra": 0}).encode()
        p.write_bytes(_lines(GOOD + [rec.replace(b'"extra": 0', b'"extra": ' + _deep())]))

    def million_turns(p):
        turn = b'{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"}'
        with open(p, "wb") as f:
            f.write(_lines(GOOD))
            f.write(b'{"messages": [' + b", ".join([turn] * 500_000) + b"]}\n")

    def gz_bomb(p):
        _zeros(p, BOMB, "gzip")

    def zst_bomb(p):
        _zeros(p, BOMB, "zstd")

    def nul_bytes(p):
        p.write_bytes(_lines(GOOD + [
            {"instruction": "escaped \u0000 NUL", "input": "", "output": "kept \u0000 too"},
            b'{"instruction": "raw \x00 NUL", "input": "", "output": "x"}']))

    def lone_surrogate(p):
        p.write_bytes(_lines(GOOD + [b'{"instruction": "bad \\ud800 half", "input": "", '
                                     b'"output": "x"}']))

    def surrogate_array(p):
        p.write_bytes(b"[" + b",".join([json.dumps(g).encode() for g in GOOD] + [
            b'{"instruction": "bad \\ud800 half", "input": "", "output": "x"}']) + b"]")

    def long_line(p):
        _long_line(p, BIG, GOOD[:2], GOOD[2:])

    def truncated_gz(p):
        data = gzip.compress(_lines([{**GOOD[0], "output": f"a{i}"} for i in range(50_000)]))
        p.write_bytes(data[: len(data) // 2])

    return {
        "nested JSON (JSONL)": (nested_jsonl, "nested.jsonl", 3, "malformed JSON", 0),
        "nested JSON (array)": (nested_array, "nested.json", 2, "wrong type", 0),
        "nested JSON (field)": (nested_field, "field.jsonl", 3, "malformed JSON", 0),
        "1M-turn conversation": (million_turns, "turns.jsonl", 3, "too large", 0),
        "gzip bomb": (gz_bomb, "bomb.jsonl.gz", 0, "compression bomb", 2),
        "zstd bomb": (zst_bomb, "bomb.jsonl.zst", 0, "compression bomb", 2),
        "NUL bytes": (nul_bytes, "nul.jsonl", 4, "malformed JSON", 0),
        "lone surrogate (JSONL)": (lone_surrogate, "surrogate.jsonl", 3, "malformed JSON", 0),
        # ijson's C parser reads a lone surrogate as "?": stored as valid UTF-8 (noted)
        "lone surrogate (array)": (surrogate_array, "surrogate.json", 3, "", 0),
        "200 MB line": (long_line, "long.jsonl", 3, "too large", 0),
        "truncated gzip": (truncated_gz, "cut.jsonl.gz", 0, "cannot decompress", 2),
    }


KINDS = list(_cases())


def ingest_measured(store: Path, path: Path, *args: str) -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, peak RSS in MiB) of `curate ingest --json PATH`."""
    env = {**os.environ, "CURATE_STORE": str(store)}
    r = subprocess.run([sys.executable, "-c", _MEASURE, *CURATE, "ingest", "--json",
                        "--max-quarantine", "100%", *args, str(path)],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    err, _, rss = r.stderr.rstrip("\n").rpartition("\n")
    return r.returncode, r.stdout, err, int(rss) / 1024


def make(kind: str, folder: Path) -> Path:
    write, name, *_ = _cases()[kind]
    path = folder / name
    write(path)
    return path


def check(kind: str, workdir: Path) -> dict:
    """Ingest one hostile kind; the row of the table plus what was seen."""
    _, name, good, reason, code = _cases()[kind]
    folder = workdir / kind.replace(" ", "_").replace("(", "").replace(")", "")
    folder.mkdir(parents=True, exist_ok=True)
    path = make(kind, folder)
    store = folder / "store"
    rc, out, err, rss = ingest_measured(store, path)
    path.unlink()  # the big inputs do not outlive their trial
    problems = []
    if rc != code:
        problems.append(f"exit {rc}, expected {code}")
    if "Traceback" in err or "Traceback" in out:
        problems.append("traceback")
    stored = quarantined = 0
    reasons: dict = {}
    if rc == 0:
        f = json.loads(out)["files"][0]
        stored, quarantined, reasons = f["stored"], f["quarantined"], f["reasons"]
        if f["read"] != f["stored"] + f["duplicates"] + f["quarantined"]:
            problems.append("counts do not add up")
        if reason and not any(k.startswith(reason) for k in reasons):
            problems.append(f"reasons {reasons}, expected {reason!r}")
    elif code and reason not in " ".join(err.split()):  # rich wraps at the terminal width
        problems.append(f"error {err[-300:]!r} lacks {reason!r}")
    lost = max(0, good - stored)
    if lost:
        problems.append(f"{lost} good rows lost")
    return {"kind": kind, "trials": 1, "survived": int(not problems), "rows_lost": lost,
            "mismatches": int(bool(problems)), "peak_rss_mb": round(rss, 1),
            "stored": stored, "quarantined": quarantined, "reasons": reasons, "rc": rc,
            "stderr": err[-2000:], "problems": problems, "store": str(store)}


def run(workdir: Path) -> list[dict]:
    """One row per hostile input kind: kind, trials, survived, rows_lost, mismatches,
    peak_rss_mb (plus what was seen: problems, reasons)."""
    return [check(kind, Path(workdir)) for kind in KINDS]


def main() -> None:
    workdir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="hostile-"))
    rows = run(workdir)
    width = max(len(r["kind"]) for r in rows)
    print(f"{'kind':<{width}}  trials  survived  rows_lost  mismatches  peak_rss_mb")
    for r in rows:
        print(f"{r['kind']:<{width}}  {r['trials']:>6}  {r['survived']:>8}  {r['rows_lost']:>9}  "
              f"{r['mismatches']:>10}  {r['peak_rss_mb']:>11}"
              + (f"   {'; '.join(r['problems'])}" if r["problems"] else ""))


if __name__ == "__main__":
    main()
