"""k-means, cluster-based sampling and dedup on synthetic embeddings (fast: no models)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curate.selectors.algorithms.dedup import exact_dedup, normalized_text_key, semantic_dedup
from curate.selectors.algorithms.kmeans import (balanced_sample, cluster_means, kmeans,
                                     proportional_sample, refine_quotas, sensitivity_sample)

N, D, K = 3000, 32, 10


def unit(X: np.ndarray) -> np.ndarray:
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def blobs(n: int = N, d: int = D, k: int = K, noise: float = 0.1, seed: int = 0):
    """k well-separated Gaussian blobs on the unit sphere (noise = expected norm of the
    perturbation) and their true labels."""
    rng = np.random.default_rng(seed)
    centers = unit(rng.standard_normal((k, d)))
    truth = rng.integers(0, k, n)
    return unit(centers[truth] + noise / np.sqrt(d) * rng.standard_normal((n, d))), truth


@pytest.fixture(scope="module")
def data():
    return blobs()


@pytest.fixture(scope="module")
def clustered(data):
    return kmeans(data[0], K, seed=0, n_init=3)


def token_costs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(10, 501, n).astype(np.float64)


def assert_token_budget(order: np.ndarray, costs: np.ndarray, limit: float) -> None:
    """Within budget, no repeats, and no unpicked item fits in what is left."""
    assert len(np.unique(order)) == len(order)
    spent = costs[order].sum()
    assert spent <= limit
    rest = np.setdiff1d(np.arange(len(costs)), order)
    assert len(rest) == 0 or costs[rest].min() > limit - spent


# ----------------------------------------------------------------------------- kmeans
def test_kmeans_is_deterministic_and_recovers_blobs(data, clustered):
    from sklearn.metrics import adjusted_rand_score

    X, truth = data
    again = kmeans(X, K, seed=0, n_init=3)
    np.testing.assert_array_equal(again.labels, clustered.labels)
    np.testing.assert_array_equal(again.centroids, clustered.centroids)
    assert adjusted_rand_score(truth, clustered.labels) >= 0.9
    assert clustered.labels.dtype == np.int64 and clustered.centroids.shape == (K, D)
    np.testing.assert_allclose(np.linalg.norm(clustered.centroids, axis=1), 1.0, atol=1e-4)
    cos = np.einsum("ij,ij->i", X, clustered.centroids[clustered.labels])
    np.testing.assert_allclose(clustered.distances, 1.0 - cos, atol=1e-5)
    assert clustered.sizes.sum() == N


def test_kmeans_inertia_matches_sklearn(data):
    from sklearn.cluster import KMeans

    X = data[0]
    ours = kmeans(X, K, seed=0, n_init=3, spherical=False)
    theirs = KMeans(n_clusters=K, n_init=3, random_state=0).fit(X)

    def inertia(centroids, labels):
        return float(((X.astype(np.float64) - centroids[labels]) ** 2).sum())

    assert inertia(ours.centroids, ours.labels) == pytest.approx(ours.inertia, rel=1e-4)
    assert ours.inertia <= 1.01 * inertia(theirs.cluster_centers_, theirs.labels_)


def test_kmeans_rejects_more_clusters_than_points():
    with pytest.raises(ValueError, match="k=11 .* n=10"):
        kmeans(unit(np.random.default_rng(0).standard_normal((10, 4))), 11)


# ----------------------------------------------------------------------------- balanced
@pytest.mark.parametrize("budget", [0, 1, 37, 1000, N - 1, N, 5000])
def test_balanced_count_budget_is_exact(data, budget):
    truth = data[1]
    order, reasons = balanced_sample(truth, np.ones(N), budget)
    assert len(order) == min(budget, N) == len(reasons)
    assert len(np.unique(order)) == len(order) and order.dtype == np.int64
    if 0 < budget <= K * np.bincount(truth).min():
        counts = np.bincount(truth[order], minlength=K)
        assert counts.max() - counts.min() <= 1


def test_balanced_small_clusters_give_their_share_away():
    labels = np.repeat(np.arange(5), [5, 3, 200, 300, 400])
    order, reasons = balanced_sample(labels, np.ones(len(labels)), 100)
    counts = np.bincount(labels[order], minlength=5)
    assert len(order) == 100
    assert counts[0] == 5 and counts[1] == 3
    assert sorted(counts[2:]) == [30, 31, 31]
    assert reasons[list(labels[order]).index(0)] == "cluster 0 (quota 5/5)"


def test_balanced_seed_score_and_prefix(data):
    truth = data[1]
    ones = np.ones(N)
    a, _ = balanced_sample(truth, ones, 200, seed=1)
    b, _ = balanced_sample(truth, ones, 200, seed=1)
    c, _ = balanced_sample(truth, ones, 200, seed=2)
    np.testing.assert_array_equal(a, b)
    assert set(a) != set(c)
    # every prefix is itself balanced (round-robin over clusters)
    for p in range(1, len(a) + 1):
        counts = np.bincount(truth[a[:p]], minlength=K)
        assert counts.max() - counts.min() <= 1
    # with a score, each cluster gives its best members
    score = np.random.default_rng(3).random(N)
    order, _ = balanced_sample(truth, ones, 200, score=score)
    for c in range(K):
        members = np.flatnonzero(truth == c)
        taken = order[truth[order] == c]
        best = members[np.argsort(-score[members], kind="stable")[:len(taken)]]
        assert set(taken) == set(best)


def test_balanced_token_budget(data):
    truth = data[1]
    costs = token_costs(N)
    order, reasons = balanced_sample(truth, costs, 40_000)
    assert_token_budget(order, costs, 40_000)
    spent = np.bincount(truth[order], weights=costs[order], minlength=K)
    assert spent.min() >= 4000 - 500 and spent.max() <= 4000 + 500
    assert reasons[0].endswith(" cost)")


# ----------------------------------------------------------------------------- proportional
def test_proportional_quotas_sum_exactly():
    labels = np.repeat(np.arange(4), [500, 300, 150, 50])
    for budget in (7, 101, 333, 999):
        order, _ = proportional_sample(labels, np.ones(1000), budget)
        counts = np.bincount(labels[order], minlength=4)
        assert counts.sum() == budget
        ideal = budget * np.array([500, 300, 150, 50]) / 1000
        assert np.all(np.abs(counts - ideal) < 1)  # largest remainder: floor or ceil
        # the leftover units go to the largest remainders
        extra = counts - np.floor(ideal)
        frac = ideal - np.floor(ideal)
        if 0 < extra.sum() < 4:
            assert frac[extra == 1].min() >= frac[extra == 0].max()


def test_proportional_token_budget(data):
    truth = data[1]
    costs = token_costs(N, seed=5)
    for limit in (1_000, 25_000, 300_000, costs.sum() + 1):
        order, _ = proportional_sample(truth, costs, limit, score=-costs)
        assert_token_budget(order, costs, limit)
    order, _ = proportional_sample(truth, costs, 100_000)
    share = np.bincount(truth[order], weights=costs[order], minlength=K) / costs[order].sum()
    total = np.bincount(truth, weights=costs, minlength=K) / costs.sum()
    np.testing.assert_allclose(share, total, atol=0.01)


# ----------------------------------------------------------------------------- sensitivity
def test_sensitivity_sample_reproducible_with_formula_weights(data, clustered):
    X = data[0]
    ones = np.ones(N)
    order, reasons, weights = sensitivity_sample(X, clustered, ones, 150, seed=4)
    again, _, _ = sensitivity_sample(X, clustered, ones, 150, seed=4)
    np.testing.assert_array_equal(order, again)
    assert len(order) == 150 == len(reasons) == len(weights)
    d = ((X - clustered.centroids[clustered.labels]).astype(np.float64) ** 2).sum(1)
    sizes = np.bincount(clustered.labels)
    p = 0.5 * d / d.sum() + 0.5 / (K * sizes[clustered.labels])
    np.testing.assert_allclose(weights, 1.0 / (N * p[order]), rtol=1e-6)

    costs = token_costs(N)
    order, _, _ = sensitivity_sample(X, clustered, costs, 30_000, seed=4)
    assert_token_budget(order, costs, 30_000)


def test_sensitivity_prefers_far_points(data, clustered):
    X = data[0]
    d = clustered.distances
    far, near = d >= np.quantile(d, 0.9), d <= np.quantile(d, 0.1)
    hits = np.zeros(N)
    for seed in range(100):
        order, _, _ = sensitivity_sample(X, clustered, np.ones(N), 60, seed=seed, alpha=0.9)
        hits[order] += 1
    assert hits[far].mean() > 1.5 * hits[near].mean()


# ----------------------------------------------------------------------------- refine
def test_refine_quotas_follows_quality_and_temperature(data):
    truth = data[1]
    quality = np.arange(K, dtype=np.float64)
    ones = np.ones(N)
    counts = {}
    for t in (0.25, 1.0, 4.0, 1e6):
        order, reasons = refine_quotas(truth, quality, ones, 600, temperature=t)
        assert len(order) == 600
        counts[t] = np.bincount(truth[order], minlength=K)
        assert np.all(np.diff(counts[t]) >= 0)  # better clusters never get less
    temps = sorted(counts)
    best = [counts[t][-1] for t in temps]
    worst = [counts[t][0] for t in temps]
    assert best == sorted(best, reverse=True) and worst == sorted(worst)
    assert counts[1e6].max() - counts[1e6].min() <= 1  # infinite temperature = balanced
    assert "weight" in reasons[0]
    costs = token_costs(N)
    order, _ = refine_quotas(truth, quality, costs, 50_000, temperature=1.0)
    assert_token_budget(order, costs, 50_000)


def test_cluster_means_is_nan_safe():
    labels = np.array([0, 0, 1, 1, 2])
    means = cluster_means(labels, np.array([1.0, 3.0, np.nan, 4.0, np.nan]), k=4)
    np.testing.assert_array_equal(means, [2.0, 4.0, np.nan, np.nan])


# ----------------------------------------------------------------------------- semantic dedup
def planted(n_base: int = 2000, n_dups: int = 200, d: int = 64, seed: int = 0):
    """Random unit vectors (pairwise cosine < 0.7) plus near copies of some of them
    (cosine >= 0.97) appended at the end; returns X and the originals of the copies."""
    rng = np.random.default_rng(seed)
    base = unit(rng.standard_normal((n_base, d)))
    originals = rng.choice(n_base, n_dups, replace=False)
    copies = unit(base[originals] + 0.15 / np.sqrt(d) * rng.standard_normal((n_dups, d)))
    assert np.einsum("ij,ij->i", copies, base[originals]).min() >= 0.97
    return np.vstack([base, copies]), originals


def reference_semdedup(X, labels, threshold, score):
    """Plain loop of the SemDeDup greedy rule, for comparison."""
    keep = np.ones(len(X), bool)
    dup = np.full(len(X), -1)
    kept: dict[int, list[int]] = {}
    for i in np.lexsort((np.arange(len(X)), -score, labels)):
        mine = kept.setdefault(int(labels[i]), [])
        if mine:
            sims = X[mine] @ X[i]
            if sims.max() >= threshold:
                keep[i], dup[i] = False, mine[int(sims.argmax())]
                continue
        mine.append(int(i))
    return keep, dup


def test_semantic_dedup_finds_planted_duplicates():
    X, originals = planted()
    n_base = len(X) - len(originals)
    labels = kmeans(X, 8, seed=0).labels
    result = semantic_dedup(X, labels, threshold=0.95)
    dups = np.arange(n_base, len(X))
    assert (~result.keep[dups]).mean() >= 0.95
    assert result.keep[:n_base].all()  # no false drops among well-separated points
    found = ~result.keep[dups]
    np.testing.assert_array_equal(result.duplicate_of[dups][found], originals[found])
    assert np.all(result.similarity[dups][found] >= 0.95)
    assert np.isnan(result.similarity[result.keep]).all()
    assert (result.duplicate_of[result.keep] == -1).all()
    assert result.n_dropped == found.sum()

    # keep_score decides which member of a pair survives
    score = np.zeros(len(X))
    score[dups] = 1.0
    flipped = semantic_dedup(X, labels, threshold=0.95, keep_score=score)
    gone = originals[~flipped.keep[originals]]
    assert len(gone) >= 0.95 * len(originals) and flipped.keep[dups].all()
    copy_of = dict(zip(originals.tolist(), dups.tolist()))
    np.testing.assert_array_equal(flipped.duplicate_of[gone], [copy_of[g] for g in gone.tolist()])


@pytest.mark.parametrize("chunk", [1, 37, 4096])
def test_semantic_dedup_matches_greedy_reference(chunk):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((150, 16))
    X = unit(np.repeat(base, 4, axis=0) + 0.15 * rng.standard_normal((600, 16)))
    labels = rng.integers(0, 3, 600)
    score = rng.random(600)
    keep, dup = reference_semdedup(X, labels, 0.97, score)
    result = semantic_dedup(X, labels, threshold=0.97, keep_score=score, chunk=chunk)
    assert 50 < result.n_dropped < 500
    np.testing.assert_array_equal(result.keep, keep)
    np.testing.assert_array_equal(result.duplicate_of, dup)


# ----------------------------------------------------------------------------- exact dedup
def test_exact_dedup_on_normalized_text():
    texts = ["Hello,  World!", "hello world", "ＨＥＬＬＯ\u3000world.", "hello, there", None, ""]
    keys = normalized_text_key(texts)
    assert keys.dtype == np.uint64
    assert keys[0] == keys[1] == keys[2] and keys[3] != keys[0] and keys[4] == keys[5]
    np.testing.assert_array_equal(normalized_text_key(pa.array(texts)), keys)

    result = exact_dedup(keys)
    np.testing.assert_array_equal(result.keep, [True, False, False, True, True, False])
    np.testing.assert_array_equal(result.duplicate_of, [-1, 0, 0, -1, -1, 4])
    assert result.similarity[1] == 1.0 and np.isnan(result.similarity[0])

    preferred = exact_dedup(keys, keep_score=np.array([0.1, 0.9, 0.9, 0, 0, 0]))
    np.testing.assert_array_equal(preferred.keep, [False, True, False, True, True, False])
    assert preferred.duplicate_of[0] == 1 and preferred.duplicate_of[2] == 1


def test_boundary_pass_finds_twins_that_kmeans_split():
    from curate.selectors.algorithms.dedup import semantic_dedup

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 16)).astype(np.float32)
    X[1] = X[0] + 0.01 * rng.standard_normal(16).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    labels = np.r_[0, 1, np.arange(38) % 2].astype(np.int64)  # the twins in two clusters
    second = 1 - labels
    alone = semantic_dedup(X, labels, 0.95)
    assert alone.keep[:2].all()  # within-cluster SemDeDup cannot see the pair
    both = semantic_dedup(X, labels, 0.95, second_labels=second)
    assert both.keep.sum() == 39 and not both.keep[1] and both.duplicate_of[1] == 0
    keep_score = np.zeros(40)
    keep_score[1] = 1.0  # now the second twin is the better one to keep
    flipped = semantic_dedup(X, labels, 0.95, keep_score, second_labels=second)
    assert not flipped.keep[0] and flipped.duplicate_of[0] == 1
