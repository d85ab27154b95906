"""Selection at scale: GreeDi facility location, the partitioned k-NN graph and
distributed k-means, on the local engine and on a real (local) Ray instance."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from curate.errors import CurateError
from curate.selectors.diversity import FacilityLocationSelector, KMeansSelector
from curate.selectors.algorithms.graph import knn_graph
from curate.selectors.algorithms.kmeans import kmeans
from curate.selectors.algorithms.submodular import (facility_location, facility_location_objective,
                                         greedi_facility_location)
from test_submodular import clustered


def dense_objective(X: np.ndarray, selected: np.ndarray) -> float:
    """The dense facility-location objective: each row's best cosine to the subset, >= 0."""
    D, _ = faiss.knn(X, X[selected], 1, metric=faiss.METRIC_INNER_PRODUCT)
    return float(np.maximum(D[:, 0], 0.0).sum())


class ArrayPool:
    """The few Pool methods the FL and k-means selectors use, over in-memory arrays."""

    def __init__(self, X: np.ndarray, tokens: np.ndarray | None = None):
        self.X = X
        self.ids = np.array([f"row{i}" for i in range(len(X))])
        self.start_size = len(X)
        self._tokens = tokens

    def __len__(self) -> int:
        return len(self.X)

    def embeddings(self) -> np.ndarray:
        return self.X

    def tokens(self) -> np.ndarray:
        return self._tokens


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(4000, d=32, centers=40, seed=0)


# ------------------------------------------------------------------ GreeDi facility location
@pytest.mark.parametrize("seed", [0, 1])
def test_greedi_objective_is_within_2_percent_of_single_greedy(seed):
    X = clustered(4000, d=32, centers=40, seed=seed)
    graph = knn_graph(X, k=16, method="flat")
    single, _ = facility_location(graph=graph, limit=400)
    order, gains = greedi_facility_location(X, limit=400, partitions=4, k_neighbors=16,
                                            method="flat", seed=seed)
    assert len(order) == 400 == len(set(order.tolist()))
    sparse = facility_location_objective(graph, order) / facility_location_objective(graph, single)
    dense = dense_objective(X, order) / dense_objective(X, single)
    assert sparse >= 0.98 and dense >= 0.98, (sparse, dense)
    # stage 2's gains are its whole-set coverage objective: close to the dense one
    assert gains.sum() == pytest.approx(dense_objective(X, order), rel=0.02)


def test_greedi_small_budget_keeps_the_dense_objective(data):
    graph = knn_graph(data, k=16, method="flat")
    single, _ = facility_location(graph=graph, limit=200)
    order, _ = greedi_facility_location(data, limit=200, partitions=4, k_neighbors=16,
                                        method="flat")
    assert dense_objective(data, order) >= 0.98 * dense_objective(data, single)


def test_greedi_is_deterministic_and_one_partition_is_the_plain_greedy(data):
    a = greedi_facility_location(data, limit=100, partitions=3, k_neighbors=8, seed=5)
    b = greedi_facility_location(data, limit=100, partitions=3, k_neighbors=8, seed=5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # one partition: stage 1 is the single greedy; stage 2 re-runs it on its own picks
    one, _ = greedi_facility_location(data, limit=100, partitions=1, k_neighbors=8,
                                      method="flat")
    single, _ = facility_location(graph=knn_graph(data, k=8, method="flat"), limit=100)
    assert len(one) == 100 and set(one.tolist()) == set(single.tolist())


def test_greedi_respects_costs_limit_quality_and_fill():
    X = clustered(1200, d=16, centers=12, seed=3)
    costs = np.random.default_rng(0).integers(1, 50, len(X)).astype(float)
    limit = 2000.0
    order, gains = greedi_facility_location(X, costs, limit, partitions=3, k_neighbors=8)
    assert costs[order].sum() <= limit
    assert len(set(order.tolist())) == len(order)
    rest = np.setdiff1d(np.arange(len(X)), order)
    assert (costs[rest] > limit - costs[order].sum()).all()  # nothing else fits
    # a count budget larger than what the objective needs: filled by quality, gain 0
    quality = np.arange(60, dtype=float)
    tiny = clustered(60, d=8, centers=2, noise=0.01, seed=1)
    order, gains = greedi_facility_location(tiny, limit=50, partitions=2, k_neighbors=60,
                                            quality=quality)
    assert len(order) == 50 and (gains >= 0).all()
    filled = order[gains == 0]
    assert np.array_equal(filled, np.sort(filled)[::-1])  # highest quality first
    # a budget nothing fits: empty
    order, gains = greedi_facility_location(X, np.full(len(X), 10.0), 5.0, partitions=2)
    assert len(order) == 0 == len(gains)


def test_greedi_rejects_bad_arguments(data):
    with pytest.raises(ValueError, match="partitions"):
        greedi_facility_location(data, limit=10, partitions=0)
    with pytest.raises(ValueError, match="optimizer"):
        greedi_facility_location(data, limit=10, optimizer="magic")
    with pytest.raises(ValueError, match="L2-normalized"):
        greedi_facility_location(data * 2, limit=10)


def test_objective_helper_matches_the_greedy_gains(data):
    graph = knn_graph(data, k=16, method="flat")
    quality = np.random.default_rng(0).random(len(data))
    order, gains = facility_location(graph=graph, limit=150, quality=quality,
                                     quality_weight=0.5)
    value = facility_location_objective(graph, order, quality=quality, quality_weight=0.5)
    assert value == pytest.approx(gains.sum(), rel=1e-9)
    assert facility_location_objective(graph, np.empty(0, np.int64)) == 0.0


# ------------------------------------------------------------------ partitioned k-NN graph
@pytest.mark.parametrize("partitions,k", [(2, 10), (5, 16), (7, 3)])
def test_partitioned_exact_graph_equals_single_index_graph(data, partitions, k):
    idx, sim = knn_graph(data, k=k, method="flat")
    pidx, psim = knn_graph(data, k=k, method="flat", partitions=partitions)
    np.testing.assert_allclose(psim, sim, atol=1e-5)
    # indices agree except where two neighbours tie in similarity (within rounding)
    differ = idx != pidx
    assert differ.mean() < 1e-3
    assert np.all(np.abs(sim[differ] - psim[differ]) < 1e-5)


def test_partitioned_graph_pads_when_shards_are_small():
    X = clustered(9, d=4, centers=2, seed=0)
    idx, sim = knn_graph(X, k=12, method="flat", partitions=4)
    ref = knn_graph(X, k=12, method="flat")
    assert np.array_equal(idx[:, 9:], np.full((9, 3), -1)) and np.isneginf(sim[:, 9:]).all()
    np.testing.assert_allclose(sim[:, :9], ref[1][:, :9], atol=1e-6)
    assert (idx[:, 0] == np.arange(9)).all()


# ------------------------------------------------------------------ distributed k-means
@pytest.mark.parametrize("spherical", [True, False])
def test_distributed_kmeans_matches_faiss_lloyd(data, spherical):
    # 4000 rows < 40 * 256: FAISS trains on every row, so both run the same Lloyd steps
    ref = kmeans(data, 40, seed=0, spherical=spherical)
    ours = kmeans(data, 40, seed=0, spherical=spherical, partitions=3)
    assert ours.inertia == pytest.approx(ref.inertia, rel=1e-5)
    assert (ours.labels == ref.labels).mean() > 0.999
    np.testing.assert_allclose(ours.centroids, ref.centroids, atol=1e-4)


def test_distributed_kmeans_on_all_rows_is_within_1_percent():
    X = clustered(6000, d=32, centers=60, seed=2)
    ref = kmeans(X, 60, seed=0, max_points_per_centroid=40)  # FAISS subsamples 2400 rows
    ours = kmeans(X, 60, seed=0, max_points_per_centroid=40, partitions=4)
    assert ours.inertia <= ref.inertia * 1.01
    assert ours.labels.shape == (6000,) and ours.sizes.sum() == 6000


# ------------------------------------------------------------------ selectors
def test_selectors_with_one_partition_are_unchanged(data):
    pool = ArrayPool(data)
    fl = FacilityLocationSelector(budget=100, neighbors=16).fit(pool)
    ref, ref_gains = facility_location(graph=knn_graph(data, k=16), limit=100)
    assert np.array_equal(fl.ranking_, ref) and np.array_equal(fl.gains_, ref_gains)
    assert not hasattr(fl, "objective_")
    km = KMeansSelector(budget=100, clusters=40).fit(pool)
    assert np.array_equal(km.labels_, kmeans(data, 40, seed=0).labels)
    params = FacilityLocationSelector(budget=100).get_params()
    assert params["partitions"] == 1 and params["engine"] is None


def test_selectors_with_partitions_record_them(data):
    from curate.engine import get_engine

    pool = ArrayPool(data)
    fl = FacilityLocationSelector(budget="10%", neighbors=16, partitions=4,
                                  engine=get_engine("local")).fit(pool)
    assert len(fl.ranking_) == 400 and fl.objective_ == pytest.approx(fl.gains_.sum())
    params = fl.get_params()
    assert params["partitions"] == 4 and params["engine"] == "local"
    km = KMeansSelector(budget=200, clusters=30, partitions=2, strategy="proportional").fit(pool)
    assert len(km.ranking_) == 200 and km.get_params()["partitions"] == 2
    tokens = np.random.default_rng(0).integers(5, 200, len(data))
    fl = FacilityLocationSelector(budget="20k tokens", partitions=2).fit(ArrayPool(data, tokens))
    assert tokens[fl.ranking_].sum() <= 20_000
    with pytest.raises(CurateError, match="partitions"):
        FacilityLocationSelector(budget=10, partitions=0).fit(pool)


# ------------------------------------------------------------------ a real Ray engine
@pytest.fixture(scope="module")
def ray_engine():
    ray = pytest.importorskip("ray")
    from curate.engine import get_engine

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield get_engine("ray", workers=2)
    finally:
        ray.shutdown()


def test_greedi_graph_and_kmeans_on_ray_equal_local(data, ray_engine):
    local = greedi_facility_location(data, limit=300, partitions=4, k_neighbors=16,
                                     engine="local")
    remote = greedi_facility_location(data, limit=300, partitions=4, k_neighbors=16,
                                      engine=ray_engine)
    assert np.array_equal(local[0], remote[0]) and np.allclose(local[1], remote[1])
    graph = knn_graph(data, k=8, method="flat", partitions=3, engine=ray_engine)
    ref = knn_graph(data, k=8, method="flat", partitions=3)
    # Ray workers run FAISS on one thread: BLAS sums round differently in the last bit
    assert np.array_equal(graph[0], ref[0]) and np.allclose(graph[1], ref[1], atol=1e-6)
    km = kmeans(data, 20, seed=0, iters=5, partitions=2, engine=ray_engine)
    assert np.array_equal(km.labels, kmeans(data, 20, seed=0, iters=5, partitions=2).labels)
