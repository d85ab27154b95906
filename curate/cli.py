"""`curate` command line: ingest, stats, sql, export, score, select.

Every command takes `--store PATH` (default: $CURATE_STORE, else ./curate-store).
User mistakes print one clear message (file, row, fix) and exit with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
import typer.core
from rich.console import Console
from rich.table import Table

from curate.errors import CurateError

class _Command(typer.core.TyperCommand):
    """A command whose every option's help says its default: typer shows the ones with a
    value; an off flag shows `off` and an unset option `not set`, unless its help already
    says what happens without it ("default: ...")."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for p in self.params:
            if (not isinstance(p, typer.core.TyperOption) or p.required or p.hidden
                    or isinstance(p.show_default, str) or "default" in (p.help or "").lower()
                    or p.name == "help"):
                continue
            if p.default is False:
                p.show_default = "off"
            elif p.default is None:
                p.show_default = "not set"


class _Typer(typer.Typer):
    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or _Command, **kwargs)


app = _Typer(  # the help is _root's docstring
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from curate import __version__

        console.print(f"curate {__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Print curate's version and exit.")] = False) -> None:
    """Choose LLM fine-tuning data: ingest corpora into a store, query it with SQL,
    score, select, export, fine-tune and compare.

    Examples:\n
      curate ingest data/ --store my-store\n
      curate score heuristics embed --store my-store\n
      curate select kmeans --budget 5% --name diverse --store my-store\n
      curate export --selection diverse --format messages --out train.jsonl --store my-store
    """

StoreOpt = Annotated[Path | None, typer.Option(
    "--store", help="Store directory (default: $CURATE_STORE, else ./curate-store).",
    show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
EngineOpt = Annotated[str, typer.Option(
    "--engine", help="Where the work runs: local (this process) or ray (a Ray cluster: "
    "workers read and score in parallel, one per CPU or GPU; needs the `ray` extra and, "
    "on a multi-node cluster, the store on a shared file system).")]
AddressOpt = Annotated[str | None, typer.Option(
    "--address", help="ray: the cluster to join, e.g. ray://head:10001 or auto (default: "
    "$RAY_ADDRESS, else a Ray instance started on this machine).", show_default=False)]
WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", help="ray: parallel workers (default: one per GPU for model scorers on a "
    "cluster with GPUs, else one per CPU).", show_default=False)]


def _engine(name: str, address: str | None, workers: int | None):
    from curate.engine import get_engine

    return get_engine(name, address, workers)


def _store(path: Path | None):
    from curate.store import Store

    return Store(path)


class _Bar:
    """A command's rich progress bar (`self.bar`), shown while the `with` block runs."""

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)


# ---------------------------------------------------------------- ingest
@app.command()
def ingest(
    paths: Annotated[list[str], typer.Argument(
        help="Files, directories (every data file inside) or globs ('data/*.jsonl').")],
    format: Annotated[str, typer.Option(
        "--format", "-f", help="Record format, or auto to detect it from the first records: "
        "auto, messages, sharegpt, trajectory, instances, multi_response, alpaca, "
        "prompt_completion, qa, input_output, react (see the README's table).")] = "auto",
    source: Annotated[str | None, typer.Option(
        help="Source name for these rows (default: the file name without extensions).")] = None,
    map: Annotated[str | None, typer.Option(
        "--map", help="Field mapping NAME=PATH,... for any file type (JSON, JSON lines, CSV, "
        "Parquet), e.g. instruction=question,response=answer. PATH may go into objects and "
        "lists (task.text, answers[0]) and explode one list into one example per element "
        "(input=instances[].input,response=instances[].output). NAMEs: instruction, input, "
        "response, system, prompt, completion, question, answer, output, messages, "
        "conversations, traj, reward, success, reference.")] = None,
    force: Annotated[bool, typer.Option(
        help="Read files again even when already ingested with the same options.")] = False,
    max_record_mb: Annotated[float, typer.Option(
        help="Records larger than this many MiB go to quarantine.")] = 4.0,
    max_quarantine: Annotated[str, typer.Option(
        help="Refuse a file when more than this share of its rows is quarantined (a file "
        "with every row quarantined is always refused): its quarantined rows are kept, "
        "nothing else of it is stored, and ingest exits with status 2 naming the top "
        "reason and the --map / --format that would read it.")] = "50%",
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    workers: WorkersOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest instruction and trace corpora into the store.

    Each file becomes canonical examples (id, source, source_row, kind, messages, outcome,
    meta); exact duplicates (by content hash) and broken rows are counted and kept aside
    in the `duplicates` and `quarantine` tables. Always: read = stored + duplicates +
    quarantined (+ the valid rows of a refused file).

    Which field becomes what (first match, any letter case; the per-file `fields` line
    and the `ingest_runs.fields` column say what was taken): the instruction is
    instruction, prompt, question, query or problem, with input or context appended (an
    input alone is the prompt); the response is output, response, completion, solution,
    answer, prediction, generation, outputs, targets, target or chosen; a reference
    beside the response (target, reference, gt, gold, expected_answer) is kept as
    meta.reference; a trace is traj, trajectory or trace. Every other field is kept in
    meta. JSON files may be an array, JSON lines, or one object: of records keyed by id
    (the key in meta._key) or of record lists.

    Examples:\n
      curate ingest data/ --store my-store\n
      curate ingest seed_tasks.jsonl                 # instances: one example each\n
      curate ingest trajs.json                       # {"<id>": {traj, reward, gt}}\n
      curate ingest dump.json --map 'instruction=ask,traj=steps'\n
      curate ingest tasks.json --map 'input=examples[].in,response=examples[].out'\n
      curate ingest shards/ --engine ray --address auto   # files read in parallel
    """
    from curate.errors import Interrupted
    from curate.ingest import expand_paths
    from curate.ingest import ingest as run_ingest

    st = _store(store)
    files = expand_paths(paths)
    if not files:
        raise CurateError("no data files found under " + ", ".join(paths))
    runner = _engine(engine, address, workers)
    with _IngestProgress(files, quiet=as_json) as progress:
        try:
            report = run_ingest(st, files, format=format, source=source, mapping=map,
                                force=force, max_record_bytes=int(max_record_mb * (1 << 20)),
                                max_quarantine=max_quarantine, progress=progress,
                                engine=runner)
        except Interrupted as e:
            e.done = (f"nothing of {progress.current} was committed; "
                      f"{progress.finished} file(s) finished before it are kept; run the "
                      "same command again to continue (finished files are skipped)"
                      if progress.current else None)
            raise
    if as_json:
        print(json.dumps(report.to_dict(), default=str))
    else:
        _print_ingest(report, st)
        if runner.name != "local":
            console.print(f"engine: {runner.describe()}", markup=False)
    if report.refused:
        raise CurateError("\n".join(
            f"{f.path}: refused: {f.refused}\n  fix: {f.fix}" for f in report.refused))


class _IngestProgress(_Bar):
    """A rich bar over the bytes of all files, naming the file being read."""

    def __init__(self, files: list[Path], quiet: bool):
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        self.quiet = quiet or not err.is_terminal
        self.current: Path | None = None  # the file being read
        self.finished = 0
        self.offset = 0
        self.size = 0
        total = sum(f.stat().st_size for f in files)
        self.bar = Progress(TextColumn("[bold]ingest[/] {task.description}"), BarColumn(),
                            DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                            console=err, transient=True, disable=self.quiet)
        self.task = self.bar.add_task("", total=total)


    def start(self, path: Path, total_bytes: int) -> None:
        self.size = total_bytes
        self.current = path
        self.bar.update(self.task, description=path.name, completed=self.offset)

    def advance(self, done_bytes: int) -> None:
        self.bar.update(self.task, completed=self.offset + min(done_bytes, self.size))

    def finish(self, report) -> None:
        self.current = None
        self.finished += 1
        self.offset += Path(report.path).stat().st_size
        self.bar.update(self.task, completed=self.offset)
        if not self.quiet and not report.skipped:
            self.bar.console.log(
                f"{report.path}: {report.format}, {report.stored} stored, "
                f"{report.duplicates} duplicates, {report.quarantined} quarantined")


def _print_ingest(report, st) -> None:
    t = Table(title=f"ingest into {st.root}")
    t.add_column("file", overflow="fold")
    t.add_column("format")
    for c in ("read", "stored", "dups", "quarantined"):
        t.add_column(c, justify="right")
    shown = [f for f in report.files if not f.skipped]
    for f in shown[:40]:
        t.add_row(Path(f.path).name, f.format or "-", str(f.read), str(f.stored),
                  str(f.duplicates), str(f.quarantined))
    if len(shown) > 40:
        t.add_row(f"... {len(shown) - 40} more files", "", "", "", "", "")
    tot = report.to_dict()["totals"]
    t.add_row("[bold]total", "", str(tot["read"]), str(tot["stored"]), str(tot["duplicates"]),
              str(tot["quarantined"]))
    console.print(t)
    reasons: dict[str, int] = {}
    for f in shown:
        for k, v in f.reasons.items():
            reasons[k] = reasons.get(k, 0) + v
    if reasons:
        console.print("quarantined: " + ", ".join(f"{k} x{v}" for k, v in
                                                  sorted(reasons.items(), key=lambda kv: -kv[1]))
                      + "  (see `curate sql \"SELECT * FROM quarantine\"`)", markup=False)
    ways: dict[str, list[str]] = {}
    for f in shown:
        for way in f.fields:
            ways.setdefault(way, []).append(Path(f.path).name)
    for way, names in ways.items():
        console.print(f"fields: {way}  ({', '.join(names[:3])}"
                      f"{f' and {len(names) - 3} more' if len(names) > 3 else ''})",
                      markup=False, highlight=False)
    skipped = [f for f in report.files if f.skipped]
    if skipped:
        console.print(f"{len(skipped)} file(s) skipped: already ingested with the same options "
                      "(use --force to read them again)")
    check = "ok" if report.consistent else "MISMATCH"
    console.print(f"read {tot['read']} = stored {tot['stored']} + duplicates "
                  f"{tot['duplicates']} + quarantined {tot['quarantined']}  [{check}]",
                  markup=False)


# ---------------------------------------------------------------- stats
@app.command()
def stats(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Rows per source and kind, length statistics (characters), quarantine reasons.

    Examples:\n
      curate stats --store my-store\n
      curate stats --json | jq '.by_source'
    """
    from curate.stats import store_stats

    st = _store(store)
    data = store_stats(st)
    if as_json:
        print(json.dumps(data, default=str))
        return
    tot = data["totals"][0]
    console.print(f"[bold]{st.root}[/]: {tot['examples']} examples from {tot['sources']} "
                  f"sources ({tot['ingested_files']} files); {tot['duplicates']} duplicates, "
                  f"{tot['quarantined']} quarantined")
    shown = {"by_source": ["source", "kind", "rows", "prompt_chars_mean", "response_chars_p50",
                           "response_chars_max", "turns_mean", "success_rate"]}
    for name, title in (("by_kind", "by kind"), ("by_source", "by source and kind"),
                        ("quarantine", "quarantine reasons"), ("duplicates", "duplicates by source")):
        rows = data[name]
        if rows:
            _print_rows(rows, title=title, limit=30, columns=shown.get(name))


MIN_COLUMN_WIDTH = 8  # narrower than this a table is unreadable: rows print as records


def _print_rows(rows: list[dict], title: str | None = None, limit: int | None = None,
                columns: list[str] | None = None) -> None:
    """Rows as a table; when the columns do not fit the terminal at MIN_COLUMN_WIDTH
    each, as records (one `column  value` block per row, like psql's expanded mode),
    paged on a terminal when longer than the screen."""
    from rich import box

    columns = columns or (list(rows[0]) if rows else [])
    shown = rows[:limit] if limit else rows
    cell = lambda r, c: "" if r.get(c) is None else str(r[c])  # noqa: E731
    if len(columns) * (MIN_COLUMN_WIDTH + 3) + 1 <= console.width:
        t = Table(title=title)
        for c in columns:
            t.add_column(str(c), overflow="fold", max_width=60)
        for r in shown:
            t.add_row(*(cell(r, c) for c in columns))
        blocks = [t]
    else:
        blocks = [f"[bold]{title}[/]"] if title else []
        for i, r in enumerate(shown, 1):
            t = Table(title=f"row {i}", title_justify="left", show_header=False,
                      box=box.SIMPLE, pad_edge=False)
            t.add_column(style="bold", no_wrap=True, max_width=max(12, console.width // 3))
            t.add_column(overflow="fold")
            for c in columns:
                t.add_row(str(c), cell(r, c))
            blocks.append(t)
    long = console.is_terminal and len(shown) * (1 if len(blocks) == 1 else len(columns) + 2) \
        > console.height
    if long:
        with console.pager(styles=True):
            console.print(*blocks)
    else:
        console.print(*blocks)
    if limit and len(rows) > limit:
        console.print(f"... {len(rows) - limit} more rows (use --json or `curate sql` for all)")


# ---------------------------------------------------------------- verify
@app.command()
def verify(
    repair: Annotated[bool, typer.Option(
        help="Roll back incomplete or damaged work (under the store lock): remove staging "
        "leftovers, move damaged commits, score parts and selections aside into "
        "<store>/.trash/, rebuild the catalog. Then rerun the same commands.")] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check that the catalog and the files agree: every part readable, counts add up,
    ids unique, scores and selections keyed to stored examples, no crash leftovers.
    Exit 0 when clean, 1 when problems remain.

    Examples:\n
      curate verify --store my-store\n
      curate verify --repair   # after a crash or a killed job
    """
    from curate.verify import verify as run_verify

    with _BytesProgress("verify", quiet=as_json) as progress:
        report = run_verify(_store(store), repair=repair, progress=progress)
    if as_json:
        print(json.dumps(report.to_dict()))
    else:
        for line in report.repaired:
            console.print(f"repaired: {line}", markup=False, highlight=False, soft_wrap=True)
        if any("aside" in line for line in report.repaired):
            console.print(f"moved-aside files are kept under {report.store}/.trash/ (delete "
                          "them when no longer needed)", markup=False, highlight=False, soft_wrap=True)
        for p in report.problems:
            console.print(f"problem: {p.line()}", markup=False, highlight=False, soft_wrap=True)
        for note in report.notes:
            console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
        state = "clean" if report.clean else f"{len(report.problems)} problem(s)"
        hint = "" if report.clean or repair else "; run `curate verify --repair` to fix them"
        console.print(f"{report.store}: {state} ({report.parts} parts, {report.rows:,} rows "
                      f"read){hint}", markup=False, highlight=False, soft_wrap=True)
    if not report.clean:
        raise typer.Exit(1)


class _BytesProgress(_Bar):
    """A rich bar over bytes read."""

    def __init__(self, label: str, quiet: bool):
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        self.bar = Progress(TextColumn(f"[bold]{label}[/]"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeRemainingColumn(), console=err,
                            transient=True, disable=quiet or not err.is_terminal)
        self.task = self.bar.add_task(label, total=None)


    def start(self, total: int) -> None:
        self.bar.update(self.task, total=total, completed=0)

    def advance(self, n: int) -> None:
        self.bar.advance(self.task, n)


# ---------------------------------------------------------------- sql
SQL_VIEWS_HELP = (
    "examples, pairs (prompt, response, turns, success, reward), quarantine, duplicates, "
    "ingest_runs, selections, selection_members, selection_dropped, selection_masks, runs, "
    "evals, eval_examples, flow_runs, and scores_<scorer> for every scorer run on the store "
    "(scores_heuristics, scores_embed, scores_lm, scores_steps, scores_influence, "
    "scores_step_influence)")


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="A read-only query (SELECT, WITH, FROM, DESCRIBE, "
                                              "SHOW, SUMMARIZE, EXPLAIN) over the views: "
                                              + SQL_VIEWS_HELP + ".")],
    format: Annotated[str, typer.Option("--format", "-f",
                                        help="table, csv or json (one object per line).")] = "table",
    store: StoreOpt = None,
) -> None:
    """Run a read-only SQL query over the store's catalog (DuckDB).

    Queries only: statements that write, change settings, attach databases or load
    extensions are refused, and no file outside the store can be read.

    Examples:\n
      curate sql "SELECT source, count(*) FROM examples GROUP BY ALL"\n
      curate sql "SELECT id, ifd FROM scores_lm ORDER BY ifd DESC LIMIT 20" -f csv\n
      curate sql "DESCRIBE pairs"
    """
    import duckdb

    from curate.safety import check_read_only

    if format not in ("table", "csv", "json"):
        raise CurateError(f"unknown --format {format!r}\n  fix: use table, csv or json")
    con = _store(store).connect()
    try:
        try:
            check_read_only(query)
            rel = con.execute(query)
        except duckdb.Error as e:
            from curate.scoring import SCORERS
            from curate.store import sql_hint

            raise CurateError(f"SQL error: {e}\n  fix: {sql_hint(con, query, e, SCORERS)}") \
                from e
        if not rel.description:
            return
        columns = [d[0] for d in rel.description]
        if format == "csv":
            import csv

            w = csv.writer(sys.stdout)
            w.writerow(columns)
            while chunk := rel.fetchmany(10000):
                w.writerows(chunk)
        elif format == "json":
            while chunk := rel.fetchmany(10000):
                for r in chunk:
                    print(json.dumps(dict(zip(columns, r)), default=str, ensure_ascii=False))
        else:
            rows = [dict(zip(columns, r)) for r in rel.fetchmany(1001)]
            _print_rows(rows[:1000], columns=columns)
            if len(rows) > 1000:
                console.print("(first 1000 rows shown; use --format csv|json for all)")
    finally:
        con.close()


# ---------------------------------------------------------------- export
@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (a folder for hf).")],
    format: Annotated[str, typer.Option(
        "--format", "-f", help="jsonl (canonical rows), parquet, messages "
        "({\"messages\": [...]} lines for TRL / datasets), trl-prompt-completion (TRL's "
        "prompt/completion lines, tools included), llama-factory (sharegpt lines plus their "
        "entry in dataset_info.json beside them), or hf (a Hugging Face dataset folder: "
        "Parquet shards, README.md card, curate_manifest.json).")] = "jsonl",
    selection: Annotated[str | None, typer.Option(help="Export this saved selection, in rank "
                                                       "order.")] = None,
    where: Annotated[str | None, typer.Option(help="SQL filter over examples columns, e.g. "
                                                   "\"kind = 'trace' AND outcome.success\".")] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export examples (all, filtered, or a selection) to a file trainers read as is.

    Examples:\n
      curate export --selection diverse --format messages --out train.jsonl\n
      curate export --where "kind = 'trace'" --format parquet --out traces.parquet\n
      curate export --selection diverse --format hf --out diverse-hf
    """
    from curate.export import export as run_export

    report = run_export(_store(store), out, format=format, selection=selection, where=where)
    if as_json:
        print(json.dumps(report.__dict__))
    else:
        console.print(f"wrote {report.rows} examples to {report.path} ({report.format})")


# ---------------------------------------------------------------- score
@app.command()
def score(
    scorer: Annotated[str, typer.Argument(
        help="heuristics, embed, lm, steps, influence or step_influence.")],
    model: Annotated[str | None, typer.Option(
        help="Registry name (see `curate models`) or a local Hugging Face folder "
        "(default: the scorer's own).")] = None,
    text: Annotated[str | None, typer.Option(
        help="embed: which text to embed: prompt, response or all (default: all).")] = None,
    batch_size: Annotated[int, typer.Option(help="embed: texts per model batch.")] = 32,
    batch_tokens: Annotated[int | None, typer.Option(
        help="lm: padded tokens per model batch (memory knob) (default: 16384).")] = None,
    max_tokens: Annotated[int | None, typer.Option(
        help="lm: longest sequence; longer prompts lose their oldest turns, noted in the "
        "`truncated` column (default: 2048).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda (default: auto).")] = None,
    where: Annotated[str | None, typer.Option(
        help="Score only the examples this SQL filter keeps, over the columns of `examples` "
        "and `pairs` (prompt, response, turns, success, reward), e.g. "
        "\"kind = 'trace' AND NOT success\".")
    ] = None,
    target: Annotated[str | None, typer.Option(
        help="influence (required): the examples to be influential for: a selection, "
        "source:NAME, or a file (as `curate evaluate --target`).")] = None,
    warmup: Annotated[int | None, typer.Option(
        help="influence: rows of the random LoRA warm-up slice (default 256).")] = None,
    warmup_run: Annotated[str | None, typer.Option(
        help="influence: a finished LoRA run with kept snapshots instead of a warm-up.")
    ] = None,
    dim: Annotated[int | None, typer.Option(
        help="influence: random projection dimension of the gradients (default 8192).")
    ] = None,
    checkpoints: Annotated[int | None, typer.Option(
        help="influence: warm-up snapshots to sum over, TracIn (default 4).")] = None,
    precondition: Annotated[str | None, typer.Option(
        help="influence: adam (LESS: Adam update direction of pool examples) or none "
        "(default adam).")] = None,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    workers: WorkersOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score every example not yet scored by this configuration (cached, resumable).

    Results land in the `scores_<scorer>` view, keyed by id. Rerunning scores only what
    is missing: new rows, or the rest of a run that was interrupted. With --engine ray the
    same shards are scored by a pool of workers (a model loaded once per worker, one GPU
    each when the cluster has GPUs) and committed as the same parts: a run stopped on one
    engine resumes on the other, with the same results.

    Examples:\n
      curate score heuristics\n
      curate score embed --text prompt\n
      curate score lm --where "source = 'gsm8k'"\n
      curate score lm --engine ray --address auto
    """
    from curate.scoring import run_scorer, scorer_from_spec

    st = _store(store).require()
    options = {"model": model, "batch_size": batch_size, "device": device}
    for key, value in (("text", text), ("batch_tokens", batch_tokens), ("max_tokens", max_tokens),
                       ("target", target), ("warmup", warmup), ("warmup_run", warmup_run),
                       ("dim", dim), ("checkpoints", checkpoints),
                       ("precondition", precondition)):
        if value is not None:
            options[key] = value
    sc, where = scorer_from_spec(st, {**options, "name": scorer, "where": where})
    gradients = sc.needs_store
    runner = _engine(engine, address, workers)
    if gradients:  # the warm-up fine-tune and the target's gradients come first
        from curate.finetune import prepare_scorer

        with _CountProgress("influence warm-up (steps)", quiet=as_json) as progress:
            prepare_scorer(st, sc, progress)
    with _CountProgress(f"score {scorer}", quiet=as_json) as progress:
        report = run_scorer(st, sc, progress=progress, where=where, engine=runner)
    if as_json:
        print(json.dumps(report.__dict__))
    else:
        console.print(f"{report.scorer}: scored {report.scored} ({report.skipped} with a reason),"
                      f" {report.cached} already cached; view scores_{report.scorer}; "
                      f"{report.seconds:.1f}s")
        if runner.name != "local":
            console.print(f"  engine: {runner.describe()}", markup=False)
        if gradients and sc.snapshots:
            console.print(f"  warm-up run {sc.run_id}: {len(sc.snapshots)} snapshot(s) at steps "
                          f"{', '.join(str(s.step) for s in sc.snapshots)}; gradients computed "
                          f"for {sc.computed} examples, the others read from {st.root}/gradients/")


class _CountProgress(_Bar):
    """A rich bar over rows with rate and ETA."""

    def __init__(self, label: str, quiet: bool):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        self.bar = Progress(TextColumn(f"[bold]{label}[/]"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                            console=err, transient=True, disable=quiet or not err.is_terminal)
        self.task = self.bar.add_task(label, total=None, rate="")


    def start(self, total: int) -> None:
        self.bar.update(self.task, total=total)

    def advance(self, n: int) -> None:
        self.bar.advance(self.task, n)
        task = self.bar.tasks[0]
        if task.elapsed:
            self.bar.update(self.task, rate=f"{task.completed / task.elapsed:,.0f} rows/s")


# ---------------------------------------------------------------- select
_SELECT_OPTIONS = {  # CLI option -> selector parameter
    "seed": "seed", "score": "score", "ascending": "ascending", "clusters": "clusters",
    "strategy": "strategy", "threshold": "threshold", "quality": "quality",
    "quality_weight": "quality_weight", "keep": "keep", "target": "target",
    "reference": "reference", "scope": "scope", "partitions": "partitions",
    "against": "against",
}
# the packaged recipes (selectors/*.yaml), named in --recipe's help; a test keeps the list
PACKAGED_RECIPES = ("dedup", "kmeans-balanced", "longest-clean", "diverse-quality",
                    "correct-diverse")


def _select_words():
    """How `curate select` spells a selection's parts, for parse_selection's messages."""
    from curate.selectors import SpecWords

    return SpecWords(name_fix="pass --name, e.g. --name diverse-5pct", method="METHOD",
                     recipe="--recipe", either_fix="`curate select METHOD --budget B --name "
                     "N`, or --recipe FILE; methods: see `curate select --help`",
                     show_spec=False)


@app.command()
def select(
    method: Annotated[str | None, typer.Argument(
        help="random, topk, threshold, longest, length, kmeans, facility-location, log-det, "
        "similarity, deita, semdedup, exact-dedup, minhash-dedup, decontaminate, token-clean, "
        "outcome, rejection-sampling, grape, expert-failures (omit with --recipe).",
        show_default=False)] = None,
    name: Annotated[str, typer.Option(help="Name to save the selection under.")] = "",
    budget: Annotated[str | None, typer.Option(
        help="A count (1000), a fraction of the pool (5%) or tokens (\"2M tokens\", quoted, "
        "or 2Mtokens).")] = None,
    recipe: Annotated[Path | None, typer.Option(
        help="A YAML recipe of steps instead of METHOD: a path, or a packaged recipe by its "
        "bare name, which works from any directory: " + ", ".join(PACKAGED_RECIPES) +
        " (also as dedup.yaml or selectors/dedup.yaml; see selectors/README.md).")] = None,
    where: Annotated[str | None, typer.Option(
        help="SQL filter that defines the pool, over pairs and score columns, e.g. "
        "\"kind = 'instruction' AND ifd < 1\".")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (random, kmeans, ...).")] = None,
    score: Annotated[str | None, typer.Option(
        help="topk / threshold / deita: score column or SQL expression to rank by, best "
        "first: the direction its scorer declares (ppl, nll: lowest first; ifd: highest), "
        "else highest first.")] = None,
    ascending: Annotated[bool | None, typer.Option(
        "--ascending/--descending", help="topk / threshold / deita: lowest (or highest) "
        "values first, whatever the scorer declares.", show_default=False)] = None,
    clusters: Annotated[int | None, typer.Option(help="kmeans / semdedup: number of clusters.")
                        ] = None,
    strategy: Annotated[str | None, typer.Option(
        help="kmeans: balanced, proportional, sensitivity, refine or target. similarity: "
        "mean or round-robin. token-clean: influence (against --reference) or q-tuning.")
    ] = None,
    target: Annotated[str | None, typer.Option(
        help="similarity (required), kmeans --strategy target: the set to match (a "
        "selection, source:NAME or a file, as for `curate evaluate`).")] = None,
    threshold: Annotated[float | None, typer.Option(
        help="semdedup: cosine similarity at or above which two examples are duplicates; "
        "minhash-dedup: estimated Jaccard of word shingles at or above which two are near "
        "duplicates (0.8); deita: cosine to a taken row at or above which a row is not taken (0.9); "
        "decontaminate: see `curate decontaminate --help`; expert-failures: step score "
        "past which a step is harmful.")
    ] = None,
    quality: Annotated[str | None, typer.Option(
        help="facility-location / log-det / kmeans: score or SQL expression for quality "
        "(higher is better, but for a score its scorer declares lower-better, e.g. ppl).")
    ] = None,
    quality_weight: Annotated[float | None, typer.Option(
        help="facility-location: weight of the quality term.")] = None,
    keep: Annotated[str | None, typer.Option(
        help="dedup: which duplicate to keep: a score expression, higher kept unless its "
        "scorer declares lower better (prefix - for "
        "lower). token-clean: the fraction of response tokens to train (0.6 or 60%).")
    ] = None,
    against: Annotated[str | None, typer.Option(
        help="decontaminate (required): the evaluation set whose overlapping rows are "
        "dropped (a file, a selection or source:NAME; see `curate decontaminate`).")
    ] = None,
    reference: Annotated[str | None, typer.Option(
        help="token-clean: the finished run (curate finetune on a trusted slice) whose "
        "per-token loss drop marks the informative tokens.")] = None,
    scope: Annotated[str | None, typer.Option(
        help="token-clean: rank tokens within each example or over the whole pool "
        "(example | global).")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="Any other option of the method, KEY=VALUE (repeatable).")
    ] = None,
    rounds: Annotated[int | None, typer.Option(
        help="kmeans: kMQ iterative refinement (Diversify and Conquer) in this many rounds: "
        "each round fine-tunes on what is selected so far and gives the next round's quotas "
        "to the clusters the model still finds hard; training options as -p model=.. -p "
        "max_steps=.. -p method=lora; each round is saved as NAME-r<i> and a rerun resumes. "
        "token-clean: the reference evolves over this many chunks of the pool (each round "
        "fine-tuned on the cleaned chunks so far; -p round_steps=S shortens it).",
        show_default=False)] = None,
    partitions: Annotated[int | None, typer.Option(
        help="facility-location: GreeDi over this many random partitions (greedy per "
        "partition, then over the union of their picks); kmeans: Lloyd's iterations over "
        "this many row blocks. Each partition is a task on --engine (default 1: one "
        "machine).", show_default=False)] = None,
    engine: Annotated[str | None, typer.Option(
        "--engine", help="facility-location / kmeans with --partitions: local or ray "
        "(default: local).", show_default=False)] = None,
    address: AddressOpt = None, workers: WorkersOpt = None,
    embed: Annotated[str | None, typer.Option(
        "--embed", "--embedder", help="Which embeddings: an embed configuration (its folder "
        "under scores/embed), the model one was made with (minilm), or lm: the newest made "
        "with a causal LM's hidden states (`curate score embed --model smollm2-135m`) "
        "(default: the newest configuration).", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a selection of the same name.")
                         ] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Choose a subset and save it as a named selection (see `curate selections`).

    Examples:\n
      curate select random --budget 5% --name random-5pct\n
      curate select topk --score ifd --budget "2M tokens" --name hard\n
      curate select kmeans --clusters 100 --budget 1000 --name diverse\n
      curate select similarity --target test.jsonl --budget 5% --name near\n
      curate select deita --score ifd --threshold 0.9 --budget 1000 --name deita\n
      curate select token-clean --reference RUN_ID --keep 0.6 --name cleaned\n
      curate select --recipe selectors/diverse-quality.yaml --name dq\n
      curate select --recipe dedup --name clean\n
      curate select minhash-dedup --threshold 0.8 --name fuzzy-deduped\n
      curate select facility-location --budget 10% --partitions 8 --name fl
    """
    import yaml

    from curate.selectors import parse_selection

    params: dict = {}
    if recipe is None:  # a recipe's options are its own
        given = dict(seed=seed, score=score, ascending=ascending, clusters=clusters,
                     strategy=strategy, threshold=threshold, quality=quality,
                     quality_weight=quality_weight, keep=keep, target=target,
                     reference=reference, scope=scope, partitions=partitions,
                     against=against)
        params = {_SELECT_OPTIONS[k]: v for k, v in given.items() if v is not None}
        if engine not in (None, "local") or address is not None or workers is not None:
            params["engine"] = _engine(engine or "local", address, workers)
        for item in param or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise CurateError(f"--param {item!r} is not KEY=VALUE\n  fix: e.g. -p iters=30")
            try:
                params[key.strip().replace("-", "_")] = yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise CurateError(f"--param {item!r}: the value is not a YAML scalar or list "
                                  f"({str(e).splitlines()[0]})\n  fix: quote it, e.g. "
                                  f"-p '{key}=\"{value}\"'") from None
    if method == "token-clean" and rounds is None and int(params.get("rounds", 1)) > 1:
        rounds = int(params.pop("rounds"))  # -p rounds=N: the same as --rounds N
    spec = parse_selection({"name": name, "method": method, "recipe": recipe, "budget": budget,
                            "where": where, "embed": embed, "params": params}, _select_words())
    st = _store(store).require()
    if rounds is not None:
        _select_rounds(st, spec.method, name, spec.params, where, rounds, overwrite, as_json)
        return
    sel = _run_selection(spec, st, overwrite, as_json)
    manifest = sel.manifest()
    if as_json:
        print(json.dumps(manifest))
    else:
        tokens = f", {manifest['tokens']:,} tokens" if manifest["tokens"] is not None else ""
        dropped = (f"; {manifest['dropped']:,} dropped, reasons in selection_dropped"
                   if manifest["dropped"] else "")
        console.print(f"selection {sel.name!r}: {manifest['size']:,} of {manifest['pool_size']:,} "
                      f"examples{tokens} ({manifest['method']}, budget {manifest['budget']}"
                      f"{dropped}) in {manifest['seconds']:.1f}s\n"
                      f"  export: curate export --selection {sel.name} --out {sel.name}.jsonl")


def _run_selection(spec, st, overwrite: bool, as_json: bool):
    """Run a parsed selection spec on the store with a status line of the step at work."""
    with err.status("selecting", spinner="dots") if not as_json and err.is_terminal \
            else _nullcontext() as status:
        def progress(step: str, rows: int) -> None:
            if status is not None:
                status.update(f"{step} on {rows:,} examples")
        return spec.run(st, overwrite=overwrite, progress=progress)


@app.command()
def decontaminate(
    against: Annotated[str, typer.Option(
        help="The evaluation set: a file of any ingest format (gsm8k_test.jsonl), a "
        "selection, or source:NAME.")],
    method: Annotated[str, typer.Option(
        help="ngram: drop rows sharing a word n-gram with a target example; embedding: "
        "drop rows whose cosine to one is at or above --threshold (needs `curate score "
        "embed`).")] = "ngram",
    ngram: Annotated[int, typer.Option(
        help="ngram: words per n-gram (after lowercasing and removing punctuation).")] = 13,
    threshold: Annotated[float | None, typer.Option(
        help="ngram: the fraction of a target example's n-grams a row must share to be "
        "dropped (default: any one shared n-gram); embedding: the cosine at or above "
        "which it is (default: 0.9).")] = None,
    text: Annotated[str, typer.Option(
        help="What is compared on both sides: all (every turn), prompt or response.")
    ] = "all",
    name: Annotated[str, typer.Option(help="Name to save the kept rows under.")
                    ] = "decontaminated",
    selection: Annotated[str | None, typer.Option(
        help="Clean this selection's members instead of the whole pool (e.g. a training "
        "selection that `curate evaluate` warned about).")] = None,
    where: Annotated[str | None, typer.Option(
        help="SQL filter that defines the pool, as for `curate select`.")] = None,
    budget: Annotated[str | None, typer.Option(
        help="Keep at most this many of the clean rows (as for `curate select`; default: "
        "all of them).")] = None,
    embed: Annotated[str | None, typer.Option(
        "--embed", help="embedding: which embeddings, as for `curate select --embed` "
        "(default: the newest configuration).", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a selection of the same name.")
                         ] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Drop the pool rows that overlap an evaluation set and save the rest as a
    selection; the dropped rows and the target example each matched are in
    `selection_dropped` (the same as `curate select decontaminate --against T`).

    Examples:\n
      curate decontaminate --against gsm8k_test.jsonl --name clean\n
      curate decontaminate --against gsm8k_test.jsonl --selection diverse --name diverse-clean\n
      curate decontaminate --against source:gsm8k/test --method embedding --threshold 0.9
    """
    from curate.selection import check_name, list_selections
    from curate.selectors import parse_selection
    from curate.selectors.decontaminate import describe_matches

    st = _store(store).require()
    if selection is not None:
        have = {s["name"] for s in list_selections(st)}
        if selection not in have:
            raise CurateError(f"no selection {selection!r}\n  fix: use one of "
                              f"{', '.join(sorted(have)) or '(none: run `curate select`)'}")
        members = (f"id IN (SELECT id FROM selection_members WHERE selection = "
                   f"'{check_name(selection)}')")
        where = f"({where}) AND {members}" if where else members
    params = {"against": against, "by": method, "ngram": ngram, "threshold": threshold,
              "text": text}
    spec = parse_selection({"name": name, "method": "decontaminate", "budget": budget,
                            "where": where, "embed": embed, "params": params}, _select_words())
    sel = _run_selection(spec, st, overwrite, as_json)
    manifest = sel.manifest()
    matches = describe_matches(st, sel, against)
    if as_json:
        print(json.dumps({**manifest, "kept": manifest["size"], "matches": matches}))
        return
    if method != "ngram":
        how = f"cosine >= {0.9 if threshold is None else threshold:g}"
    elif threshold:
        how = f"at least {threshold:g} of an example's {ngram}-grams"
    else:
        how = f"a shared {ngram}-gram"
    console.print(f"selection {sel.name!r}: kept {manifest['size']:,} of "
                  f"{manifest['pool_size']:,} examples; dropped {manifest['dropped']:,} that "
                  f"overlap {against} ({how}) in {manifest['seconds']:.1f}s", highlight=False)
    for m in matches:
        what = f": \"{m['ngram']}\"" if m.get("ngram") else ""
        console.print(f"  {m['id'][:12]} ~ target {m['duplicate_of'][:12]} (similarity "
                      f"{m['similarity']:.3f}){what}", markup=False, highlight=False)
    if manifest["dropped"]:
        console.print(f"  all of them: curate sql \"SELECT * FROM selection_dropped WHERE "
                      f"selection = '{sel.name}'\"", markup=False, highlight=False)
    console.print(f"  export: curate export --selection {sel.name} --out {sel.name}.jsonl",
                  markup=False, highlight=False)


_TRAIN_KEYS = ("model", "method", "epochs", "max_steps", "lr", "batch_tokens", "max_tokens",
               "lora_r", "device")


def _select_rounds(st, method, name, params, where, rounds, overwrite, as_json) -> None:
    """`select kmeans --rounds N` (kMQ) and `select token-clean --rounds N` (an evolving
    reference): selection with training between rounds (curate.finetune.rounds)."""
    from curate.finetune.rounds import kmq_rounds, token_clean_rounds
    from curate.finetune.train import TrainConfig

    say = (lambda t: None) if as_json else (lambda t: err.print(t, markup=False,
                                                                highlight=False))
    if method == "token-clean":
        params.pop("rounds", None)
        sel = token_clean_rounds(st, name, rounds, where=where, overwrite=overwrite, say=say,
                                 **params)
        manifest = sel.manifest()
        if as_json:
            print(json.dumps(manifest))
        else:
            console.print(f"selection {name!r}: {manifest['size']:,} examples, "
                          f"{manifest['masked']:,} with token masks, in {rounds} round(s) "
                          f"(references: {sel.params['reference']}, "
                          f"{', '.join(sel.params['round_references'] or [])})\n  export: "
                          f"curate export --selection {name} --out {name}.jsonl")
        return
    if method != "kmeans":
        raise CurateError("--rounds goes with kmeans (kMQ iterative refinement) or "
                          "token-clean (an evolving reference)\n  fix: curate select kmeans "
                          "--rounds 3 --budget B --name N")
    train = {k: params.pop(k) for k in _TRAIN_KEYS if k in params}
    options = {k: params.pop(k) for k in ("clusters", "seed", "temperature") if k in params}
    params.pop("strategy", None)  # the rounds are the refinement
    budget = params.pop("budget", None)
    if budget is None:
        raise CurateError("kmeans --rounds needs a budget\n  fix: pass --budget (1000, 5%)")
    if params:
        raise CurateError(f"kmeans --rounds takes no option {', '.join(params)}\n  fix: its "
                          f"options are --clusters, --seed, -p temperature=, and the training "
                          f"options {', '.join(_TRAIN_KEYS)} as -p KEY=VALUE")
    report = kmq_rounds(st, name, budget, rounds=rounds, config=TrainConfig(**train),
                        where=where, say=say, **options)
    if as_json:
        print(json.dumps({"name": name, "rounds": report.rounds}))
    else:
        size = report.rounds[-1]["size"] if report.rounds else 0
        console.print(f"selection {name!r}: {size:,} examples in {rounds} kMQ round(s) "
                      f"(each saved as {name}-r<i>)\n  export: curate export --selection "
                      f"{name} --out {name}.jsonl")


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@app.command()
def selections(
    delete: Annotated[str | None, typer.Option(help="Delete the selection of this name.")] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List saved selections (also in SQL: `selections`, `selection_members`,
    `selection_dropped`, `selection_masks`).

    Examples:\n
      curate selections --store my-store\n
      curate selections --delete old-try
    """
    from curate.selectors import delete_selection, list_selections

    st = _store(store).require()
    if delete:
        delete_selection(st, delete)
        console.print(f"deleted selection {delete!r}")
        return
    rows = list_selections(st)
    if as_json:
        print(json.dumps(rows))
        return
    if not rows:
        console.print("no selections yet: make one with `curate select`")
        return
    _print_rows(rows, title="selections (details: --json, or SQL on `selections`)",
                columns=["name", "method", "budget", "size", "tokens", "pool_size", "dropped",
                         "masked", "created_at"])


# ---------------------------------------------------------------- finetune / evaluate
ModelOpt = Annotated[str, typer.Option(
    help="Registry name (see `curate models`) or a local Hugging Face folder.")]


@app.command()
def finetune(
    selection: Annotated[str, typer.Option(help="The saved selection to train on.")],
    model: ModelOpt = "smollm2-135m",
    method: Annotated[str, typer.Option(help="lora or full.")] = "lora",
    epochs: Annotated[float, typer.Option(help="Passes over the selection.")] = 1.0,
    max_steps: Annotated[int | None, typer.Option(
        help="Optimizer steps (overrides --epochs).")] = None,
    lr: Annotated[float | None, typer.Option(
        help="Learning rate (default: 2e-4 for lora, 5e-5 for full).")] = None,
    batch_tokens: Annotated[int, typer.Option(
        help="Padded tokens per micro-batch (length-grouped).")] = 4096,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    max_tokens: Annotated[int, typer.Option(help="Longest training sequence.")] = 1024,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune a causal LM on a selection (loss on assistant tokens only; the
    selection's turn and token masks honoured). The run lands in <store>/runs/<id>/ and the `runs` view; rerunning the
    same command resumes from the last checkpoint, or returns the finished run.

    Examples:\n
      curate finetune --selection diverse --max-steps 200\n
      curate finetune --selection diverse --method full --epochs 2 --device cuda
    """
    from curate.finetune.train import TrainConfig, finetune as run_finetune

    config = TrainConfig(model=model, method=method, epochs=epochs, max_steps=max_steps,
                         lr=lr, batch_tokens=batch_tokens, grad_accum=grad_accum,
                         max_tokens=max_tokens, seed=seed, device=device)
    with _CountProgress("finetune (steps)", quiet=as_json) as progress:
        report = run_finetune(_store(store).require(), selection, config, progress=progress)
    info = {k: v for k, v in report.__dict__.items() if k != "losses"}
    if as_json:
        print(json.dumps(info, default=str))
    else:
        console.print(f"run {report.run_id}: " + ", ".join(
            f"{k} {v}" for k, v in info.items() if k != "run_id"))
        console.print(f"  evaluate: curate evaluate --run {report.run_id} --target TARGET")


@app.command()
def evaluate(
    target: Annotated[str, typer.Option(
        help="A selection, a source (source:NAME), or a file of any ingest format.")],
    run: Annotated[str | None, typer.Option(
        help="A finished run id (see the `runs` view) (default: the base model).")] = None,
    model: ModelOpt = "smollm2-135m",
    accuracy: Annotated[bool, typer.Option(
        help="Also exact-match accuracy of greedy answers where references have `#### N`.")
    ] = False,
    limit: Annotated[int | None, typer.Option(help="Only the first N target examples.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mean per-token NLL of the target's reference responses under a run (or the base
    model), plus accuracy with --accuracy; saved in the `evals` view.

    Examples:\n
      curate evaluate --run <run-id> --target gsm8k_test.jsonl\n
      curate evaluate --model smollm2-135m --target gsm8k_test.jsonl   # the base model
    """
    import warnings

    from curate.finetune.evaluate import evaluate as run_evaluate

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = run_evaluate(_store(store).require(), target, run_id=run, model=model,
                              accuracy=accuracy, device=device, limit=limit)
    for w in caught:
        err.print(f"[yellow]warning:[/] {_escape(str(w.message))}")
    if as_json:
        print(json.dumps(report.__dict__))
    else:
        acc = f", accuracy {report.accuracy:.3f} on {report.accuracy_examples}" \
            if report.accuracy is not None else ""
        console.print(f"{report.run_id} on {report.target}: NLL {report.nll:.4f} per token over "
                      f"{report.tokens:,} tokens of {report.examples} examples{acc}"
                      f"{' (cached)' if report.cached else ''}")


@app.command()
def compare(
    target: Annotated[str, typer.Option(help="As for `curate evaluate`.")],
    selections: Annotated[str, typer.Option(help="Comma-separated selection names.")],
    seeds: Annotated[int, typer.Option(help="Training seeds per selection.")] = 3,
    baseline: Annotated[str | None, typer.Option(
        help="Arm the others are tested against (default: the first named random*).")] = None,
    model: ModelOpt = "smollm2-135m",
    method: Annotated[str, typer.Option(help="lora or full.")] = "lora",
    epochs: Annotated[float, typer.Option()] = 1.0,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps per run.")] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    batch_tokens: Annotated[int, typer.Option()] = 4096,
    accuracy: Annotated[bool, typer.Option(help="Also exact-match accuracy (slow).")] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune on each selection (same hyper-parameters, several seeds), evaluate on
    the target, and print the leaderboard: mean ± std NLL, delta vs the baseline with
    Welch's t-test p, accuracy, wall time. Writes leaderboard.json and .png.

    Examples:\n
      curate compare --selections diverse,random-1k --target gsm8k_test.jsonl --seeds 3
    """
    import warnings

    from curate.finetune.compare import compare as run_compare, format_board
    from curate.finetune.train import TrainConfig

    config = TrainConfig(model=model, method=method, epochs=epochs, max_steps=max_steps,
                         lr=lr, batch_tokens=batch_tokens)
    names = [s.strip() for s in selections.split(",") if s.strip()]
    with err.status("compare", spinner="dots") if not as_json and err.is_terminal \
            else _nullcontext() as status, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        board = run_compare(_store(store).require(), target, names, seeds=seeds, config=config,
                            baseline=baseline, accuracy=accuracy,
                            progress=(lambda s: status.update(s)) if status else None)
    for w in caught:
        err.print(f"[yellow]warning:[/] {_escape(str(w.message))}")
    if as_json:
        print(json.dumps(board, default=str))
        return
    _print_rows(format_board(board), title=f"target {target}: NLL per token (lower is better)")
    for note in board["notes"]:
        console.print(f"note: {note}")
    console.print(f"leaderboard: {board['path']}/leaderboard.json and leaderboard.png")


# ---------------------------------------------------------------- report
@app.command()
def report(
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="HTML file to write (one self-contained page that opens offline).")
    ] = Path("report.html"),
    max_points: Annotated[int, typer.Option(
        help="Embeddings drawn on the 2-D map at most (a deterministic subsample above).")
    ] = 5000,
    store: StoreOpt = None,
) -> None:
    """Write the run report: composition, score histograms, an embedding map by cluster
    and by selection, duplicates, quarantine, selections, runs, leaderboards, token masks.

    Examples:\n
      curate report --store my-store --out report.html
    """
    from curate.report import build_report

    st = _store(store).require()
    with err.status("report", spinner="dots") if err.is_terminal else _nullcontext():
        path = build_report(st, out, max_points=max_points)
    from curate.units import format_bytes

    console.print(f"report: {path} ({format_bytes(path.stat().st_size)})")


# ---------------------------------------------------------------- flows: run / serve
WatchArg = Annotated[list[str] | None, typer.Argument(
    help="Watched folders, files or globs: what is new there is ingested (files already "
    "ingested with the same options are skipped).", show_default=False)]
ConfigOpt = Annotated[Path | None, typer.Option(
    help="YAML of curate_flow parameters (store, watch, scorers, selections, export, "
    "evaluate, compare, report; see flows/demo.yaml). Options given here override it.")]
ScoreOpt = Annotated[list[str] | None, typer.Option(
    "--score", help="A scorer to run (repeatable): a name, or a JSON/YAML mapping with its "
    "options, e.g. '{\"name\": \"influence\", \"target\": \"source:gsm8k/test\"}' "
    "(default: heuristics, embed; the config's when given).", show_default=False)]
SelectOpt = Annotated[list[str] | None, typer.Option(
    "--select", help="NAME=RECIPE.yaml or NAME=METHOD (repeatable), e.g. "
    "diverse=selectors/kmeans-balanced.yaml, random-5pct=random; a packaged recipe also by "
    "its bare name, from any directory: diverse=kmeans-balanced (default: "
    "deduped=selectors/dedup.yaml).", show_default=False)]
BudgetOpt = Annotated[str | None, typer.Option(help="Budget of every --select.")]
WhereOpt = Annotated[str | None, typer.Option(help="SQL pool filter of every --select.")]
ExportDirOpt = Annotated[Path | None, typer.Option(
    help="Where the selections are exported (default: <store>/exports).")]
ExportFormatOpt = Annotated[str | None, typer.Option(
    help="messages, jsonl or parquet (default: messages).")]
ReportOpt = Annotated[Path | None, typer.Option(
    "--report", help="Report file (default: <store>/report.html).")]
NoReportOpt = Annotated[bool, typer.Option("--no-report", help="Skip the report.")]


def _scorer_spec(item: str) -> str | dict:
    """A --score value: a scorer name, or a YAML/JSON mapping with `name` and the
    scorer's options (as under `scorers:` in a config)."""
    import yaml

    if not item.lstrip().startswith("{"):
        return item
    try:
        spec = yaml.safe_load(item)
    except yaml.YAMLError as e:
        spec = f"unreadable ({str(e).splitlines()[0]})"
    if not isinstance(spec, dict) or not spec.get("name"):
        raise CurateError(f"--score {item!r} is not a scorer name or a mapping with a name: "
                          f"{spec}\n  fix: e.g. --score lm or --score '{{\"name\": "
                          "\"influence\", \"target\": \"source:gsm8k/test\"}'")
    return spec


def _flow_params(watch, config, store, score, select, budget, where, export_dir,
                 export_format, report, no_report, engine=None, address=None,
                 workers=None) -> dict:
    """curate_flow parameters: the --config YAML, then the options given."""
    params: dict = {}
    if config is not None:
        if not config.is_file():
            raise CurateError(f"no config file {config}\n  fix: give a YAML file of "
                              "curate_flow parameters, e.g. flows/demo.yaml")
        from curate.selectors.recipe import safe_yaml

        params = safe_yaml(config.read_text(), config) or {}
        from flows import curate_flow

        known = set(curate_flow.parameters.properties)
        wrong = sorted(set(params) - known) if isinstance(params, dict) else ["(not a mapping)"]
        if wrong:
            raise CurateError(f"{config}: unknown key(s) {', '.join(wrong)}\n  fix: the keys "
                              f"are {', '.join(sorted(known))}")
    params["store"] = str(_store(store).root) if store is not None or "store" not in params \
        else params["store"]
    if watch:
        params["watch"] = list(watch)
    if score:
        params["scorers"] = [_scorer_spec(item) for item in score]
    if select:
        specs = []
        for item in select:
            name, sep, what = item.partition("=")
            if not sep or not name or not what:
                raise CurateError(f"--select {item!r} is not NAME=RECIPE|METHOD\n  fix: e.g. "
                                  "--select diverse=selectors/kmeans-balanced.yaml")
            is_recipe = what.endswith((".yaml", ".yml")) or Path(what).name in PACKAGED_RECIPES
            spec = {"name": name, "recipe" if is_recipe else "method": what}
            specs.append(spec | {k: v for k, v in (("budget", budget), ("where", where)) if v})
        params["selections"] = specs
    elif budget or where:
        raise CurateError("--budget and --where apply to --select\n  fix: add --select NAME=...")
    if export_dir is not None or export_format is not None:
        params["export"] = {**(params.get("export") or {}),
                            **({"dir": str(export_dir)} if export_dir else {}),
                            **({"format": export_format} if export_format else {})}
    if no_report:
        params["report"] = False
    elif report is not None:
        params["report"] = str(report)
    if engine is not None or address is not None or workers is not None:
        given = params.get("engine") or "local"
        spec = dict(given) if isinstance(given, dict) else {"name": given}
        spec.update({k: v for k, v in (("name", engine), ("address", address),
                                       ("workers", workers)) if v is not None})
        params["engine"] = spec
    if params.get("engine") is not None:
        from curate.engine import engine_from_spec

        engine_from_spec(params["engine"])  # a bad name or key fails before the flow starts
    return params


@app.command("run")
def run_flow(
    watch: WatchArg = None, config: ConfigOpt = None, score: ScoreOpt = None,
    select: SelectOpt = None, budget: BudgetOpt = None, where: WhereOpt = None,
    export_dir: ExportDirOpt = None, export_format: ExportFormatOpt = None,
    report: ReportOpt = None, no_report: NoReportOpt = False,
    engine: Annotated[str | None, typer.Option(
        "--engine", help="local or ray: where ingest and scoring run; ray also runs the "
        "flow's tasks on Prefect's RayTaskRunner (default: the config's engine, else local).",
        show_default=False)] = None,
    address: AddressOpt = None, workers: WorkersOpt = None,
    store: StoreOpt = None, as_json: JsonOpt = False,
) -> None:
    """Run the whole pipeline once now as a Prefect flow: ingest what is new under WATCH,
    score the new rows, recompute the selections, export them, (compare,) and write the
    report; print what changed and the report path.

    Unchanged stages answer from Prefect's task cache, so a rerun with nothing new does
    almost nothing. Runs on Prefect's ephemeral local server (nothing to start), or on
    the server PREFECT_API_URL names. Each run is a row of the `flow_runs` view.

    Examples:\n
      curate run data --store demo-store\n
      curate run incoming/ --select diverse=selectors/kmeans-balanced.yaml --budget 5%\n
      curate run --config flows/demo.yaml\n
      curate run incoming/ --engine ray --address auto
    """
    params = _flow_params(watch, config, store, score, select, budget, where, export_dir,
                          export_format, report, no_report, engine, address, workers)
    from flows.pipeline import run_pipeline

    result = run_pipeline(params)
    if as_json:
        print(json.dumps(result, default=str))
        return
    scored = ", ".join(f"{k} {v}" for k, v in result["rows_scored"].items()) or "none"
    console.print(
        f"flow run {result['flow_run']}: {result['files_ingested']} file(s) ingested "
        f"({result['files_skipped']} skipped), {result['rows_new']} new rows "
        f"({result['duplicates']} duplicates, {result['quarantined']} quarantined)\n"
        f"  scored: {scored}\n"
        f"  selections refreshed: {', '.join(result['selections']) or 'none'}\n"
        f"  exports written: {', '.join(result['exports']) or 'none'}\n"
        f"  {result['cached_tasks']} task(s) answered from the cache"
        + (f"\n  leaderboard: {result['compare']}" if result["compare"] else ""), markup=False)
    if result["report"]:
        console.print(f"report: {result['report']}", markup=False)


@app.command("serve")
def serve_flow(
    watch: WatchArg = None, config: ConfigOpt = None,
    cron: Annotated[str | None, typer.Option(
        help="Cron schedule (default: '0 2 * * *', nightly at 02:00, when no --interval).")
    ] = None,
    interval: Annotated[float | None, typer.Option(help="Run every this many seconds.")] = None,
    name: Annotated[str, typer.Option(help="Deployment name (curate/NAME).")] = "nightly",
    score: ScoreOpt = None, select: SelectOpt = None, budget: BudgetOpt = None,
    where: WhereOpt = None, export_dir: ExportDirOpt = None,
    export_format: ExportFormatOpt = None, report: ReportOpt = None,
    no_report: NoReportOpt = False,
    engine: Annotated[str | None, typer.Option(
        "--engine", help="local or ray: where each run's ingest and scoring run (default: "
        "the config's engine, else local).", show_default=False)] = None,
    address: AddressOpt = None, workers: WorkersOpt = None, store: StoreOpt = None,
) -> None:
    """Serve the pipeline on a schedule until Ctrl-C or SIGTERM (the schedule is paused
    on the way out): registers the deployment curate/NAME of curate_flow with the
    parameters (as for `curate run`) and runs each scheduled run in this process.

    Scheduling needs a Prefect server with its scheduler: the one PREFECT_API_URL names,
    else a local one this command starts and stops (`prefect server start`, database
    under PREFECT_HOME). `prefect deployment run 'curate/NAME'` triggers a run now.

    Examples:\n
      curate serve incoming/ --store nightly-store\n
      curate serve incoming/ --interval 3600 --select diverse=selectors/kmeans-balanced.yaml
    """
    params = _flow_params(watch, config, store, score, select, budget, where, export_dir,
                          export_format, report, no_report, engine, address, workers)
    import signal

    from flows.serve import serve

    # serve stops on Ctrl-C / SIGTERM itself (pausing the schedule): Python's own handler
    signal.signal(signal.SIGINT, signal.default_int_handler)
    serve(params, name=name, cron=cron if cron or interval else "0 2 * * *", interval=interval,
          say=lambda text: console.print(text, markup=False, highlight=False))


# ---------------------------------------------------------------- models
@app.command()
def models(as_json: JsonOpt = False) -> None:
    """The packaged models curate can use offline, and where they are.

    Examples:\n
      curate models\n
      curate models --json
    """
    from curate.models import describe

    rows = describe()
    if as_json:
        print(json.dumps(rows))
    else:
        _print_rows(rows, title="models (or pass any local Hugging Face folder)")



def main() -> None:
    import signal

    from curate.errors import Interrupted

    def interrupt(signum, frame):
        raise Interrupted(signum)

    # Ctrl-C and SIGTERM stop a command the same way: what is staged is dropped, what
    # was committed stays, a message says so, exit 128 + the signal number
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        try:
            app()
        except Exception as e:
            # Ctrl-C inside a DuckDB query comes out as DuckDB's own error
            if type(e).__name__ == "InterruptException" or str(e).startswith("Query interrupted"):
                raise Interrupted(signal.SIGINT) from e
            raise
    except CurateError as e:
        err.print(f"[bold red]error:[/] {_escape(str(e))}", highlight=False)
        sys.exit(2)
    except Interrupted as e:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while exiting
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        err.print(f"[bold red]interrupted[/] ({e}): {_escape(e.done or _INTERRUPTED)}",
                  highlight=False)
        sys.exit(128 + e.signum)


_INTERRUPTED = ("work in progress was dropped, finished work stays in the store; run the "
                "same command again to continue where it stopped")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


if __name__ == "__main__":
    main()
