"""What every scorer shares: the contract, the cache key, and the resumable runner.

A scorer maps a batch of examples to score columns of the same length and order. The
runner feeds it only the examples its configuration has not scored yet, in a fixed
plan (sorted by length, then id), and commits each shard of results atomically as it
goes. Killed at any point, a rerun redoes only the shards that were not committed, with
the same batches, so its results equal an uninterrupted run's.

    <store>/scores/<scorer>/<config>/config.json   scorer, version, model, params
                                    /part-NNNNNN.parquet   id, score columns, reason
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.fingerprint import fingerprint
from curate.store import (EXAMPLES_AND_PAIRS, Store, disk_full_is_an_error, fsync, hold_lock,
                          write_atomic)

if TYPE_CHECKING:
    from curate.engine import Engine

TEXTS = {
    # DuckDB expressions over `messages`: which text a scorer reads
    "prompt": "list_filter(messages, lambda m: m.role = 'user')[-1].content",
    "response": "list_filter(messages, lambda m: m.role = 'assistant')[-1].content",
    "all": "array_to_string(list_transform(messages, lambda m: m.role || ': ' || m.content), "
           "chr(10))",
}


class Scorer:
    """Base class. Subclasses set `name`, `version`, `columns` (name -> Arrow type),
    `higher_is_better`, and implement `score`. Heavy models load on first `score`."""

    name: ClassVar[str]
    version: ClassVar[str]
    model_kind: ClassVar[str | None] = None  # "embedding" or "causal-lm" when it uses a model
    columns: ClassVar[dict[str, pa.DataType]]
    higher_is_better: ClassVar[dict[str, bool]] = {}
    needs: ClassVar[str] = "messages"  # "messages", or a key of TEXTS
    shard_rows: ClassVar[int | None] = None  # rows per committed shard [default: SHARD_ROWS]
    # attributes that hold loaded models: not shipped to engine workers, which load
    # their own once (see __getstate__)
    loaded: ClassVar[tuple[str, ...]] = ()
    on_gpu: ClassVar[bool] = False  # runs a model a GPU speeds up: one GPU per worker
    # reads the store itself (influence: warm-up run, target gradients): built with
    # `store=` and made ready before scoring by `curate.finetune.prepare_scorer`, which
    # trains the run `warmup_plan()` asks for, then calls `prepare()`
    needs_store: ClassVar[bool] = False
    max_batch_size: ClassVar[int | None] = None  # per-example gradients: memory-bound

    def __init__(self, model: str | None = None, batch_size: int = 32,
                 device: str | None = None, params: dict | None = None):
        if model is not None and self.model_kind is not None:
            from curate.models import check

            check(model, self.model_kind)  # a bad name fails before any work
        self.model = model
        self.batch_size = batch_size
        self.device = device
        self.params = params or {}  # result-changing options: part of the cache key

    def config(self) -> dict:
        """What the cache key covers: batch size and device do not change results."""
        return {"scorer": self.name, "version": self.version, "model": self.model,
                "params": self.params}

    @property
    def key(self) -> str:
        return fingerprint(self.config(), 16, "md5")

    def warmup_plan(self) -> dict | None:
        """The fine-tuning run this scorer needs trained before it can score (None: none)."""
        return None

    def prepare(self, progress=None) -> None:
        """Load what scoring needs from the store, once (a no-op for most scorers)."""

    def score(self, batch: pa.Table) -> pa.Table:
        """`batch` has `id` and the input column (`messages` or `text`); return a table
        of `columns` plus `reason` (null when scored), same length and order."""
        raise NotImplementedError

    def __getstate__(self) -> dict:
        """What a copy sent to a worker carries: the configuration, not the models."""
        state = self.__dict__.copy()
        for name in self.loaded:
            state[name] = None
        return state

    def finish(self, folder: Path) -> None:
        """Called after a run with new results (e.g. to rebuild an index)."""

    def finished(self, folder: Path) -> bool:
        """Whether `finish` is up to date with the parts (False: a run was killed between
        its last part and `finish`, so the next run finishes even with nothing to score)."""
        return True


@dataclass
class ScoreReport:
    scorer: str
    config: str
    folder: str
    scored: int
    cached: int
    skipped: int  # scored rows that carry a reason (empty text, no response, ...)
    seconds: float


class Progress:
    def start(self, total: int) -> None: ...
    def advance(self, n: int) -> None: ...


SHARD_ROWS = 2048


def run_scorer(store: Store, scorer: Scorer, progress: Progress | None = None,
               shard_rows: int | None = None, where: str | None = None,
               engine: "Engine | str | None" = None) -> ScoreReport:
    """Score every example of the store (or those matching the SQL filter `where`) not
    yet scored by this configuration, in this process or on `engine` (see
    curate.engine): the same shards and parts either way, so a run stopped on one
    engine resumes on the other."""
    from curate.engine import get_engine

    engine = get_engine(engine)
    progress = progress or Progress()
    shard_rows = shard_rows or scorer.shard_rows or SHARD_ROWS
    started = time.time()
    store.require()
    folder = store.folder("scores") / scorer.name / scorer.key
    folder.mkdir(parents=True, exist_ok=True)
    # a lock per configuration, not the store's: ingest and other scorers run meanwhile;
    # rows ingested after the start are scored by the next run
    with hold_lock(folder / ".lock", None, f"{scorer.name} ({scorer.key}) is being scored "
                                          "by another process"), \
            disk_full_is_an_error(store.root):
        config_path = folder / "config.json"
        if not config_path.is_file():
            write_atomic(config_path, json.dumps(
                {**scorer.config(), "columns": {k: str(v) for k, v in scorer.columns.items()},
                 "higher_is_better": scorer.higher_is_better}, indent=2).encode())
        os.utime(config_path)  # the newest config is the one the scores_<name> view shows
        for stale in folder.glob(".plan-*"):  # the plan of an engine run that was killed
            shutil.rmtree(stale, ignore_errors=True)
        con = store.connect()
        try:
            pending, total, cached = _pending(con, scorer, folder, where)
            progress.start(total)
            scored = skipped = 0
            # after the highest part, not the count: a part moved aside (curate verify
            # --repair) must not make a new part overwrite a committed one
            seq = 1 + max((int(p.stem.split("-")[1]) for p in folder.glob("part-*.parquet")
                           if p.stem.split("-")[1].isdigit()), default=-1)
            shards = (_run_here(scorer, pending, shard_rows, folder, seq)
                      if engine.name == "local" else
                      _run_on(engine, scorer, pending, shard_rows, folder, seq))
            for done in shards:
                scored, skipped = scored + done["rows"], skipped + done["skipped"]
                progress.advance(done["rows"])
            if scored or not scorer.finished(folder):
                scorer.finish(folder)
        finally:
            con.close()
    store.rebuild_catalog()  # a scores_<name> view, or a newer configuration behind it
    return ScoreReport(scorer.name, scorer.key, str(folder), scored, cached, skipped,
                       round(time.time() - started, 3))


def score_shard(scorer: Scorer, shard: pa.Table, part: Path) -> dict:
    """Score one planned shard and commit it as `part`; returns its row counts."""
    result = score_adaptive(scorer, shard)
    if result.num_rows != shard.num_rows:
        raise CurateError(f"scorer {scorer.name} returned {result.num_rows} rows for "
                          f"{shard.num_rows}")
    table = pa.Table.from_arrays([shard["id"], *result.columns],
                                 names=["id", *result.column_names])
    _write_part(table, part)
    return {"rows": shard.num_rows, "skipped": shard.num_rows - result["reason"].null_count}


def score_adaptive(scorer: Scorer, batch: pa.Table) -> pa.Table:
    """`scorer.score(batch)`; when the GPU runs out of memory, the batch is split in
    halves, each scored the same way, and the results joined (adaptive batches: one long
    shard does not fail a run that fits in smaller pieces)."""
    try:
        return scorer.score(batch)
    except Exception as e:
        if not _out_of_memory(e) or batch.num_rows < 2:
            raise
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = batch.num_rows // 2
    return pa.concat_tables([score_adaptive(scorer, batch.slice(0, half)),
                             score_adaptive(scorer, batch.slice(half))])


def _out_of_memory(e: Exception) -> bool:
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError) or \
        (isinstance(e, RuntimeError) and "out of memory" in str(e).lower())


class ShardWorker:
    """An engine worker: holds one copy of the scorer (its model loaded on first use,
    once per worker) and scores each shard it is given into the run's plan folder."""

    def __init__(self, scorer: Scorer):
        self.scorer = scorer

    def __call__(self, item: dict) -> dict:
        done = score_shard(self.scorer, pq.read_table(item["plan"]), Path(item["out"]))
        return {**item, **done}


def _run_here(scorer: Scorer, pending: pa.RecordBatchReader, rows: int, folder: Path,
              seq: int):
    """The planned shards scored and committed in this process, one after another."""
    for i, shard in enumerate(_shards(pending, rows)):
        yield score_shard(scorer, shard, folder / f"part-{seq + i:06d}.parquet")


def _run_on(engine, scorer: Scorer, pending: pa.RecordBatchReader, rows: int, folder: Path,
            seq: int):
    """The planned shards, written once under the configuration's folder, scored by a
    pool of workers on `engine`. Workers write their results beside the plan; this
    process, the one writer, commits each as the part the local runner would write (so
    a worker still running after the run stopped cannot touch the parts: its plan is
    gone). Yields each shard's counts as it is committed."""
    import functools

    plan = folder / f".plan-{uuid.uuid4().hex[:8]}"
    plan.mkdir()
    try:
        items = []
        for i, shard in enumerate(_shards(pending, rows)):
            path = plan / f"shard-{i:06d}.parquet"
            pq.write_table(shard, path, compression="zstd")
            items.append({"plan": str(path), "out": str(plan / f"scored-{i:06d}.parquet"),
                          "part": str(folder / f"part-{seq + i:06d}.parquet")})
        for done in engine.pool(functools.partial(ShardWorker, scorer), items,
                                gpus=scorer.on_gpu):
            os.replace(done["out"], done["part"])
            yield done
    finally:
        shutil.rmtree(plan, ignore_errors=True)


def _shards(reader: pa.RecordBatchReader, rows: int):
    """Exactly `rows` rows per shard (the last one fewer), whatever the reader's batch
    sizes: the same plan cuts the same shards on every run."""
    buffer: list[pa.RecordBatch] = []
    held = 0
    for batch in reader:
        buffer.append(batch)
        held += batch.num_rows
        while held >= rows:
            table = pa.Table.from_batches(buffer)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            buffer, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(buffer)


def _pending(con, scorer: Scorer, folder: Path, where: str | None
             ) -> tuple[pa.RecordBatchReader, int, int]:
    """Examples this configuration has not scored, streamed in plan order (length, then
    id), with their count and the count already scored."""
    import duckdb

    expr = "messages" if scorer.needs == "messages" else f"coalesce({TEXTS[scorer.needs]}, '')"
    length = "len(array_to_string(list_transform(messages, lambda m: m.content), ''))"
    done = sorted(folder.glob("part-*.parquet"))
    if done:
        parts = ", ".join("'" + str(p).replace("'", "''") + "'" for p in done)
        con.execute(f"CREATE TEMP VIEW done AS SELECT id FROM read_parquet([{parts}])")
        filters = ["id NOT IN (SELECT id FROM done)"]
        cached = con.execute("SELECT count(*) FROM done").fetchall()[0][0]
    else:
        filters, cached = [], 0
    if where:
        from curate.safety import check_expression

        filters.append(f"({check_expression(where, 'the --where filter')})")
    clause = f"WHERE {' AND '.join(filters)}" if filters else ""
    out_col = "messages" if scorer.needs == "messages" else "text"
    extra = ", outcome" if scorer.needs == "messages" else ""
    try:
        rel = EXAMPLES_AND_PAIRS
        total = con.execute(f"SELECT count(*) FROM {rel} {clause}").fetchall()[0][0]
        reader = con.sql(f"SELECT id, {expr} AS {out_col}{extra} FROM {rel} {clause} "
                         f"ORDER BY {length}, id").to_arrow_reader(4096)
    except duckdb.Error as e:
        raise CurateError(f"the --where filter failed: {e}\n  fix: write a SQL boolean "
                          "expression over the examples columns (id, source, source_row, "
                          "kind, messages, outcome, meta) and the pairs view's (prompt, "
                          "response, turns, success, reward)") from e
    return reader, total, cached


def _write_part(table: pa.Table, path: Path) -> None:
    """A shard appears whole or not at all: temp file, fsync, rename."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table, tmp, compression="zstd")
        fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
