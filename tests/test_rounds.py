"""kMQ iterative refinement: rounds of selection with fine-tuning feedback, saved per
round and resumed on a rerun."""

from __future__ import annotations

import json

import pytest

from conftest import DATA, rows
from curate.errors import CurateError
from curate.ingest import ingest
from curate.scoring import make_scorer, run_scorer
from curate.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("rounds") / "store")
    ingest(store, [DATA])
    run_scorer(store, make_scorer("embed"))
    run_scorer(store, make_scorer("heuristics"))
    return store


def test_rounds_select_train_and_resume(pool, tiny):
    from curate.finetune.rounds import kmq_rounds
    from curate.finetune.train import TrainConfig

    config = TrainConfig(model=tiny, max_steps=2, max_tokens=128, batch_tokens=1024)
    report = kmq_rounds(pool, "kmq", 45, rounds=3, clusters=5, config=config)
    assert [r["size"] for r in report.rounds] == [15, 30, 45]
    assert all(len(r["cluster_loss"]) == 5 for r in report.rounds[:2])
    assert "run" not in report.rounds[2]  # the last round needs no feedback
    members = {name: [i for (i,) in rows(pool, f"SELECT id FROM selection_members WHERE "
                                              f"selection = '{name}' ORDER BY rank")]
               for name in ("kmq-r1", "kmq-r2", "kmq-r3", "kmq")}
    assert members["kmq-r2"][:15] == members["kmq-r1"]  # cumulative, in pick order
    assert members["kmq"] == members["kmq-r3"] and len(set(members["kmq"])) == 45
    runs = sorted(p.name for p in (pool.root / "runs").iterdir())
    again = kmq_rounds(pool, "kmq", 45, rounds=3, clusters=5, config=config)
    assert again.rounds == report.rounds  # resumed: the same rounds, runs and losses
    assert sorted(p.name for p in (pool.root / "runs").iterdir()) == runs


def test_cli_kmeans_rounds(pool, tiny):
    from typer.testing import CliRunner

    from curate.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["select", "kmeans", "--rounds", "2", "--clusters", "4",
                                 "--budget", "20", "--name", "kmq-cli", "-p", f"model={tiny}",
                                 "-p", "max_steps=2", "-p", "max_tokens=128",
                                 "--store", str(pool.root), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [r["size"] for r in out["rounds"]] == [10, 20]
    result = runner.invoke(app, ["select", "random", "--rounds", "2", "--budget", "5",
                                 "--name", "x", "--store", str(pool.root)])
    assert isinstance(result.exception, CurateError)
    assert "--rounds goes with kmeans" in str(result.exception)


def test_rounds_on_a_given_pool_count_its_tokens(pool, tiny):
    """A caller's open Pool (here one that counts 10 tokens a row) is what the rounds
    select from and budget by; the manifests record its token counts, and the pool is
    left open for the caller."""
    import numpy as np

    from curate.finetune.rounds import kmq_rounds
    from curate.finetune.train import TrainConfig
    from curate.selectors import Pool

    class TenTokens(Pool):
        def tokens(self):
            return np.full(len(self), 10.0)

    given = TenTokens(pool)
    config = TrainConfig(model=tiny, max_steps=2, max_tokens=128, batch_tokens=1024)
    try:
        report = kmq_rounds(pool, "kmq-ten", "100 tokens", rounds=2, clusters=3,
                            config=config, pool=given)
        assert [r["size"] for r in report.rounds] == [5, 10]
        assert len(given.values("turns + 1")) == len(given)  # still open
    finally:
        given.close()
    for name, tokens in (("kmq-ten-r1", 50), ("kmq-ten", 100)):
        manifest = json.loads((pool.root / "selections" / name / "manifest.json").read_text())
        assert manifest["tokens"] == tokens
