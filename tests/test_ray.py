"""The ray engine against the local one: the same scores (part for part), the same
ingest, runs that resume across engines, a worker killed mid-run, the Prefect flow on
RayTaskRunner, and a two-node cluster on this machine."""

from __future__ import annotations

import json
import os
import sys

import pyarrow.parquet as pq
import pytest

from conftest import DATA, rows, single, write_jsonl

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

from curate.engine import RayEngine, get_engine  # noqa: E402
from curate.errors import CurateError, InputError  # noqa: E402
from curate.ingest import ingest  # noqa: E402
from curate.finetune import prepare_scorer  # noqa: E402
from curate.scoring import make_scorer, run_scorer  # noqa: E402
from curate.scoring.heuristics import HeuristicsScorer  # noqa: E402
from curate.store import Store  # noqa: E402

SHARD = 16


@pytest.fixture(scope="module")
def engine():
    """One local Ray instance (2 CPUs) for the module; workers run this module's test
    scorers by value (tests/ is not importable on a worker)."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    eng = RayEngine(workers=2)
    eng.start()
    yield eng
    eng.close()


def _corpus(path, n=120):
    write_jsonl(path, [{"messages": single(f"question {i} " + "why " * (i % 7),
                                           f"answer {i} " + "because " * (i % 11))}
                       for i in range(n)])
    return path


def _parts(store: Store, scorer: str) -> dict[str, object]:
    folder = next((store.root / "scores" / scorer).iterdir())
    return {p.name: pq.read_table(p) for p in sorted(folder.glob("part-*.parquet"))}


def _scores(store: Store, scorer: str) -> list[tuple]:
    return rows(store, f"SELECT * FROM scores_{scorer} ORDER BY id")


def _local_and_ray(tmp_path, engine, scorer_fn):
    out = []
    for name, eng in (("local", None), ("ray", engine)):
        st = Store(tmp_path / name)
        ingest(st, [_corpus(tmp_path / "corpus.jsonl")])
        run_scorer(st, scorer_fn(), shard_rows=SHARD, engine=eng)
        out.append(st)
    return out


def test_engine_names_and_install_hint(monkeypatch):
    assert get_engine().name == "local" and get_engine(None).name == "local"
    with pytest.raises(CurateError, match="(?s)unknown engine 'spark'.*local, ray"):
        get_engine("spark")
    with pytest.raises(CurateError, match="--address applies to the ray engine"):
        get_engine("local", address="auto")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(CurateError, match=r"pip install 'curate\[ray\]'"):
        get_engine("ray")


@pytest.mark.parametrize("name", ["heuristics", "embed"])
def test_scores_equal_local_part_for_part(tmp_path, engine, name):
    local, on_ray = _local_and_ray(tmp_path, engine, lambda: make_scorer(name))
    a, b = _parts(local, name), _parts(on_ray, name)
    assert list(a) == list(b) and len(a) == -(-120 // SHARD)
    assert all(a[k].equals(b[k]) for k in a)
    assert _scores(local, name) == _scores(on_ray, name)
    if name == "embed":  # the index is rebuilt by the driver after the workers' parts
        assert (next((on_ray.root / "scores" / "embed").iterdir()) / "index.faiss").is_file()
    assert not list((on_ray.root / "scores").glob("*/*/.plan-*"))  # the plan is removed


def test_lm_scores_equal_local(tmp_path, engine, tiny):
    local, on_ray = _local_and_ray(tmp_path, engine,
                                   lambda: make_scorer("lm", model=tiny, max_tokens=128))
    a, b = _parts(local, "lm"), _parts(on_ray, "lm")
    assert list(a) == list(b) and all(a[k].equals(b[k]) for k in a)


class _StopAfter:
    """A progress callback that interrupts the run after `n` committed shards."""

    def __init__(self, n):
        self.n, self.done = n, 0

    def start(self, total):
        pass

    def advance(self, n):
        self.done += 1
        if self.done == self.n:
            raise KeyboardInterrupt


@pytest.mark.parametrize("first", ["local", "ray"])
def test_run_stopped_on_one_engine_resumes_on_the_other(tmp_path, engine, first):
    reference = Store(tmp_path / "reference")
    ingest(reference, [_corpus(tmp_path / "corpus.jsonl")])
    run_scorer(reference, make_scorer("heuristics"), shard_rows=SHARD)
    st = Store(tmp_path / "store")
    ingest(st, [tmp_path / "corpus.jsonl"])
    engines = {"local": None, "ray": engine}
    with pytest.raises(KeyboardInterrupt):
        run_scorer(st, make_scorer("heuristics"), shard_rows=SHARD, engine=engines[first],
                   progress=_StopAfter(3))
    committed = len(_parts(st, "heuristics"))
    assert committed == 3  # the shards committed before the stop, on either engine
    second = "ray" if first == "local" else "local"
    report = run_scorer(st, make_scorer("heuristics"), shard_rows=SHARD,
                        engine=engines[second])
    assert report.cached == committed * SHARD and report.scored == 120 - report.cached
    assert _scores(st, "heuristics") == _scores(reference, "heuristics")
    from curate.verify import verify

    assert verify(st).clean


class SelfKillingScorer(HeuristicsScorer):
    """Kills its own Ray actor (ray.kill) on its third shard, once: a worker lost mid-run."""

    name = "heuristics"
    marker: str = ""

    def score(self, batch):
        if self.calls_file().exists():
            seen = int(self.calls_file().read_text()) + 1
        else:
            seen = 1
        self.calls_file().write_text(str(seen))
        if seen == 3 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            ray.kill(ray.get_runtime_context().current_actor, no_restart=False)
        return super().score(batch)

    def calls_file(self):
        from pathlib import Path

        return Path(self.marker + f".{os.getpid()}")


def test_worker_killed_mid_run_leaves_the_store_consistent(tmp_path, engine):
    from curate.verify import verify

    reference = Store(tmp_path / "reference")
    ingest(reference, [_corpus(tmp_path / "corpus.jsonl")])
    run_scorer(reference, make_scorer("heuristics"), shard_rows=SHARD)
    st = Store(tmp_path / "store")
    ingest(st, [tmp_path / "corpus.jsonl"])
    scorer = SelfKillingScorer()
    scorer.marker = str(tmp_path / "killed")
    try:  # Ray Data retries the lost shard on a new actor, or the run fails: both are fine
        run_scorer(st, scorer, shard_rows=SHARD, engine=engine)
    except Exception:  # noqa: BLE001
        pass
    assert os.path.exists(scorer.marker)  # an actor was killed
    assert verify(st).clean  # whatever was committed is whole
    report = run_scorer(st, make_scorer("heuristics"), shard_rows=SHARD, engine=engine)
    assert report.scored + report.cached == 120
    assert _scores(st, "heuristics") == _scores(reference, "heuristics")


def test_ingest_on_ray_equals_local(tmp_path, engine):
    stores = []
    for name, eng in (("local", None), ("ray", engine)):
        st = Store(tmp_path / name)
        report = ingest(st, [DATA], engine=eng)
        assert report.consistent
        stores.append((st, report.to_dict()["totals"]))
    (a, ta), (b, tb) = stores
    assert ta == tb and ta["stored"] > 400
    for table, cols in (("examples", "*"), ("quarantine", "source, source_row, reason, raw"),
                        ("duplicates", "id, source, source_row")):
        q = f"SELECT {cols} FROM {table} ORDER BY ALL"
        assert rows(a, q) == rows(b, q)


def test_ingest_on_ray_bad_file_is_the_same_error(tmp_path, engine):
    bad = tmp_path / "bad.csv"
    bad.write_text('instruction,output\n"unclosed,quote\n')
    good = write_jsonl(tmp_path / "good.jsonl", [{"instruction": "a", "output": "b"}])
    st = Store(tmp_path / "store")
    with pytest.raises(InputError) as local_error:
        ingest(Store(tmp_path / "local"), [good, bad])
    with pytest.raises(InputError) as ray_error:
        ingest(st, [good, bad], engine=engine)
    assert type(ray_error.value) is InputError  # not wrapped in Ray's task error
    a, b = local_error.value, ray_error.value
    assert (b.path, b.row, b.fix) == (a.path, a.row, a.fix) and "bad.csv" in str(b)
    assert rows(st, "SELECT count(*) FROM examples") == [(1,)]  # the file before it is kept


def test_cli_score_and_ingest_take_the_engine(tmp_path, engine):
    from typer.testing import CliRunner

    from curate.cli import app

    store = str(tmp_path / "store")
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", str(_corpus(tmp_path / "c.jsonl", 40)), "--engine",
                                 "ray", "--store", store, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["totals"]["stored"] == 40
    result = runner.invoke(app, ["score", "heuristics", "--engine", "ray", "--workers", "2",
                                 "--store", store, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["scored"] == 40
    result = runner.invoke(app, ["score", "heuristics", "--engine", "dask", "--store", store])
    assert isinstance(result.exception, CurateError)  # main() prints it, exit 2
    assert "unknown engine 'dask'" in str(result.exception)


def test_flow_on_ray_task_runner(tmp_path, engine):
    from flows.pipeline import run_pipeline

    st = Store(tmp_path / "store")
    params = {"store": str(st.root), "watch": [str(_corpus(tmp_path / "c.jsonl", 60))],
              "scorers": ["heuristics"], "selections": [{"name": "some", "method": "random",
                                                         "budget": 10}],
              "export": {}, "report": False, "engine": {"name": "ray", "workers": 2}}
    result = run_pipeline(params)
    assert result["rows_new"] == 60 and result["rows_scored"] == {"heuristics": 60}
    assert result["selections"] == ["some"]
    assert rows(st, "SELECT count(*) FROM selection_members WHERE selection = 'some'") == [(10,)]
    again = run_pipeline(params)  # the same Prefect cache, on Ray too
    assert again["rows_new"] == 0 and again["cached_tasks"] >= 2


def test_influence_on_ray_equals_local(tmp_path, engine, tiny):
    """The warm-up runs in this process (as `curate score influence` does); each actor
    prepares itself from the warm-up run and computes its shards' gradients."""
    import numpy as np

    from curate.scoring.influence import InfluenceScorer

    sums = [{"instruction": f"Add {a} and {b}.", "output": f"The sum is {a + b}."}
            for a, b in zip(range(3, 35, 2), range(30, 14, -1))]
    target = write_jsonl(tmp_path / "target.jsonl", sums[:3])
    corpus = write_jsonl(tmp_path / "pool.jsonl", sums[3:])
    out = []
    for name, eng in (("local", None), ("ray", engine)):
        st = Store(tmp_path / name)
        ingest(st, [corpus])
        scorer = InfluenceScorer(store=st, target=str(target), model=tiny, warmup=8,
                                 checkpoints=1, dim=256, max_tokens=64, lora_r=4,
                                 warmup_epochs=1)
        prepare_scorer(st, scorer)
        report = run_scorer(st, scorer, shard_rows=4, engine=eng)
        assert report.scored == len(sums) - 3
        out.append(rows(st, "SELECT id, influence, grad_norm FROM scores_influence ORDER BY id"))
    (a, b) = out
    assert [r[0] for r in a] == [r[0] for r in b]
    assert np.allclose([r[1:] for r in a], [r[1:] for r in b], rtol=1e-3, atol=1e-4)


def test_cli_select_partitions_on_ray(tmp_path, engine):
    from typer.testing import CliRunner

    from curate.cli import app

    st = Store(tmp_path / "store")
    ingest(st, [_corpus(tmp_path / "c.jsonl", 60)])
    run_scorer(st, make_scorer("embed"))
    runner = CliRunner()
    picked = {}
    for eng in ("local", "ray"):
        result = runner.invoke(app, ["select", "facility-location", "--budget", "12",
                                     "--partitions", "3", "--engine", eng, "--name", f"fl-{eng}",
                                     "--store", str(st.root), "--json"])
        assert result.exit_code == 0, result.output
        manifest = json.loads(result.output)
        assert manifest["size"] == 12 and manifest["params"]["partitions"] == 3
        picked[eng] = rows(st, f"SELECT id FROM selection_members WHERE selection = 'fl-{eng}' "
                               "ORDER BY rank")
    assert picked["local"] == picked["ray"]
