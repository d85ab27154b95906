"""The ray engine on a two-node Ray cluster started on this machine
(`ray.cluster_utils.Cluster`, one CPU per node): scores, ingest and a partitioned
selection equal the local engine's, with work on both nodes."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import DATA, rows, single, write_jsonl

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

from curate.engine import RayEngine  # noqa: E402
from curate.ingest import ingest  # noqa: E402
from curate.scoring import make_scorer, run_scorer  # noqa: E402
from curate.store import Store  # noqa: E402


@pytest.fixture(scope="module")
def cluster_engine():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    engine = RayEngine(address=cluster.address)
    engine.start()
    yield engine
    engine.close()
    cluster.shutdown()


def test_two_nodes_two_workers(cluster_engine):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    assert cluster_engine.parallelism() == 2  # one worker per CPU, across the nodes
    def node(_):
        import time

        time.sleep(0.5)  # one CPU a node: the tasks cannot all run on one
        return ray.get_runtime_context().get_node_id()

    assert len(set(cluster_engine.map(node, range(6)))) == 2  # tasks ran on both nodes


@pytest.mark.parametrize("name", ["heuristics", "embed"])
def test_scores_equal_local_on_two_nodes(tmp_path, cluster_engine, name):
    corpus = write_jsonl(tmp_path / "c.jsonl", [
        {"messages": single(f"q{i} " + "word " * (i % 9), f"a{i} " + "more " * (i % 5))}
        for i in range(96)])
    stores = []
    for engine in (None, cluster_engine):
        st = Store(tmp_path / ("ray" if engine else "local"))
        ingest(st, [corpus])
        run_scorer(st, make_scorer(name), shard_rows=16, engine=engine)
        stores.append(st)
    parts = [{p.name: pq.read_table(p) for p in
              sorted(next((st.root / "scores" / name).iterdir()).glob("part-*.parquet"))}
             for st in stores]
    assert list(parts[0]) == list(parts[1]) and len(parts[0]) == 6
    assert all(parts[0][k].equals(parts[1][k]) for k in parts[0])


def test_ingest_equal_local_on_two_nodes(tmp_path, cluster_engine):
    a, b = Store(tmp_path / "local"), Store(tmp_path / "ray")
    ta = ingest(a, [DATA]).to_dict()["totals"]
    tb = ingest(b, [DATA], engine=cluster_engine).to_dict()["totals"]
    assert ta == tb
    q = "SELECT * FROM examples ORDER BY id"
    assert rows(a, q) == rows(b, q)


def test_greedi_on_two_nodes_equals_local(cluster_engine):
    from curate.selectors.algorithms.submodular import greedi_facility_location

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    local = greedi_facility_location(X, limit=100, partitions=4, method="flat")
    on_ray = greedi_facility_location(X, limit=100, partitions=4, method="flat",
                                      engine=cluster_engine)
    assert np.array_equal(local[0], on_ray[0])
