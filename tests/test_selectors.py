"""Selectors on a real mixed pool (GSM8K, Code Alpaca, FireAct, T0 rows from
../shared/corpora, embedded with the packaged MiniLM): budgets, seeds, baselines, the
diversity methods against the true sources, dedup, recipes, SQL views and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import CORPORA, ROOT, rows, write_jsonl
from curate.errors import CurateError
from curate.selectors import Budget, Pool, list_selections, load_recipe, make_selector, select
from curate.selectors.base import take_in_order

PER_SOURCE = 120
SOURCES = {  # source name -> (file, how to read the first rows)
    "gsm8k": ("gsm8k/train.jsonl", "jsonl"),
    "codealpaca": ("codealpaca/code_alpaca_2k.json", "json"),
    "fireact": ("fireact/multitask_multimethod.alpaca.json", "json"),
    "t0": ("t0/data_per_template/adversarial_qa_dbert_answer_the_following_q.jsonl", "jsonl"),
}


@pytest.fixture(scope="module")
def pool_store(tmp_path_factory):
    """A store of PER_SOURCE real rows per source, with heuristics and embed scores."""
    from curate.ingest import ingest
    from curate.scoring import make_scorer, run_scorer
    from curate.store import Store

    if not CORPORA.exists():
        pytest.skip(f"real corpora not found at {CORPORA} (they live in ../shared/corpora)")
    tmp = tmp_path_factory.mktemp("pool")
    store = Store(tmp / "store")
    for source, (rel, kind) in SOURCES.items():
        path = CORPORA / rel
        if kind == "jsonl":
            with path.open() as f:
                records = [json.loads(next(f)) for _ in range(PER_SOURCE)]
        else:
            records = json.loads(path.read_text())[:PER_SOURCE]
        ingest(store, [write_jsonl(tmp / f"{source}.jsonl", records)], source=source)
        if source == "gsm8k":
            ingest(store, [write_jsonl(tmp / "planted.jsonl", planted(records))],
                   source="planted")
    run_scorer(store, make_scorer("heuristics"))
    run_scorer(store, make_scorer("embed", text="all"))
    return store


N_PLANTED = 10


def planted(records: list[dict]) -> list[dict]:
    """Near copies of the first GSM8K rows: case, spacing and punctuation changes (an
    exact-dedup match after normalization) and a reworded question (semantic only)."""
    out = []
    for r in records[:N_PLANTED // 2]:
        out.append({"question": "  " + r["question"].upper().replace(" ", "  ") + " !",
                    "answer": r["answer"]})
    for r in records[N_PLANTED // 2:N_PLANTED]:
        out.append({"question": "Please solve: " + r["question"], "answer": r["answer"]})
    return out


def true_sources(store, ids) -> list[str]:
    found = dict(rows(store, "SELECT id, source FROM examples"))
    return [found[i] for i in ids]


# ------------------------------------------------------------------ budgets


@pytest.mark.parametrize("text, kind, value", [
    ("1000", "count", 1000), ("10k", "count", 10_000), ("5%", "fraction", 0.05),
    ("0.05", "fraction", 0.05), ("2M tokens", "tokens", 2_000_000),
    ("500k tokens", "tokens", 500_000), ("1500 tok", "tokens", 1500), (250, "count", 250),
])
def test_budget_parse(text, kind, value):
    b = Budget.parse(text)
    assert (b.kind, b.value) == (kind, pytest.approx(value))
    assert Budget.parse(str(b)) == b  # round-trips through the manifest


@pytest.mark.parametrize("text", ["", "lots", "0", "150%", "2.5", "-3", "1e9x"])
def test_bad_budgets_say_how_to_write_one(text):
    with pytest.raises(CurateError, match="fix: give a count"):
        Budget.parse(text)


def test_take_in_order_is_an_exact_knapsack_fill():
    rng = np.random.default_rng(0)
    costs = rng.integers(10, 500, 400).astype(float)
    order = rng.permutation(400)
    picked = take_in_order(order, costs, 5000.0)
    assert costs[picked].sum() <= 5000
    left = 5000 - costs[picked].sum()
    rest = np.setdiff1d(order, picked)
    assert costs[rest].min() > left  # nothing that was skipped still fits
    # picks keep the preference order
    pos = {int(i): k for k, i in enumerate(order)}
    assert [pos[int(i)] for i in picked] == sorted(pos[int(i)] for i in picked)
    assert list(take_in_order(order, np.ones(400), 7)) == list(order[:7])


# ------------------------------------------------------------------ baselines


def test_budgets_are_met_exactly(pool_store):
    n = PER_SOURCE * len(SOURCES) + N_PLANTED - rows(
        pool_store, "SELECT count(*) FROM duplicates")[0][0]
    assert len(select(pool_store, "random", "r-count", budget="37").ids) == 37
    frac = select(pool_store, "random", "r-frac", budget="10%")
    assert len(frac.ids) == round(0.1 * frac.pool_size) and frac.pool_size == n
    tok = select(pool_store, "random", "r-tok", budget="6k tokens")
    pool = Pool(pool_store)
    costs = dict(zip(pool.ids, pool.tokens()))
    used = sum(costs[i] for i in tok.ids)
    assert used <= 6000 and tok.tokens == used
    left = 6000 - used
    assert min(c for i, c in costs.items() if i not in set(tok.ids)) > left


def test_same_seed_same_selection_other_seed_other(pool_store):
    a = make_selector("random", budget=50, seed=3).fit(Pool(pool_store)).selected_ids_
    b = make_selector("random", budget=50, seed=3).fit(Pool(pool_store)).selected_ids_
    c = make_selector("random", budget=50, seed=4).fit(Pool(pool_store)).selected_ids_
    assert a == b and a != c


def test_topk_threshold_longest_length(pool_store):
    pool = Pool(pool_store)
    top = make_selector("topk", budget=20, score="response_chars").fit(pool)
    chars = dict(zip(pool.ids, pool.values("response_chars")))
    got = [chars[i] for i in top.selected_ids_]
    assert got == sorted(chars.values(), reverse=True)[:20]
    low = make_selector("topk", budget=5, score="response_chars", ascending=True).fit(pool)
    assert [chars[i] for i in low.selected_ids_] == sorted(chars.values())[:5]

    th = make_selector("threshold", score="distinct_1", min=0.95).fit(pool)
    d1 = pool.values("distinct_1")
    assert len(th.selected_ids_) == int(np.sum(d1 >= 0.95))
    longest = make_selector("longest", budget=10).fit(pool)
    toks = dict(zip(pool.ids, pool.values("response_tokens")))
    assert [toks[i] for i in longest.selected_ids_] == sorted(toks.values(), reverse=True)[:10]
    short = make_selector("length", max_tokens=100).fit(pool)
    total = dict(zip(pool.ids, pool.tokens()))
    assert short.selected_ids_ and all(total[i] <= 100 for i in short.selected_ids_)
    assert len(short.selected_ids_) == sum(t <= 100 for t in total.values())


def test_bad_requests_fail_before_any_work(pool_store):
    with pytest.raises(CurateError, match="larger than the pool"):
        select(pool_store, "random", "x", budget="100000")
    with pytest.raises(CurateError, match="larger than the pool"):
        select(pool_store, "random", "x", budget="1000M tokens")
    with pytest.raises(CurateError, match=r"(?s)no_such_score.*columns are .*distinct_1"):
        select(pool_store, "topk", "x", budget=5, score="no_such_score")
    with pytest.raises(CurateError, match=r"`ifd` comes from the lm scorer.*curate score lm"):
        select(pool_store, "topk", "x", budget=5, score="ifd")
    with pytest.raises(CurateError, match=r"(?s)unknown selection method .kmean.*random"):
        select(pool_store, "kmean", "x", budget=5)
    with pytest.raises(CurateError, match=r"takes no option 'clusterz'"):
        select(pool_store, "random", "x", budget=5, clusterz=3)
    with pytest.raises(CurateError, match="needs a budget"):
        select(pool_store, "random", "x")
    assert not (pool_store.root / "selections" / "x").exists()


def test_selection_views_and_export(pool_store, tmp_path):
    from curate.export import export

    sel = select(pool_store, "longest", "views-longest", budget=12, where="source = 'gsm8k'")
    got = rows(pool_store, "SELECT name, method, size, pool_size, budget, fingerprint "
                           "FROM selections WHERE name = 'views-longest'")
    assert got == [("views-longest", "longest", 12, sel.pool_size, "12", sel.fingerprint)]
    members = rows(pool_store, "SELECT id, rank FROM selection_members "
                               "WHERE selection = 'views-longest' ORDER BY rank")
    assert [m[0] for m in members] == sel.ids and [m[1] for m in members] == list(range(1, 13))
    assert set(true_sources(pool_store, sel.ids)) == {"gsm8k"}
    out = export(pool_store, tmp_path / "l.jsonl", selection="views-longest")
    lines = [json.loads(x) for x in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert out.rows == 12 and [x["id"] for x in lines] == sel.ids
    manifest = json.loads((pool_store.root / "selections" / "views-longest" /
                           "manifest.json").read_text())
    assert manifest["params"] == {"budget": 12} and manifest["curate_version"]
    assert any(m["name"] == "views-longest" for m in list_selections(pool_store))
    with pytest.raises(CurateError, match="--overwrite"):
        select(pool_store, "longest", "views-longest", budget=3)
    assert len(select(pool_store, "longest", "views-longest", budget=3, overwrite=True).ids) == 3
    assert rows(pool_store, "SELECT size FROM selections WHERE name = 'views-longest'") == [(3,)]


# ------------------------------------------------------------------ diversity methods

METHODS = [("kmeans", {"clusters": 8}), ("kmeans", {"clusters": 8, "strategy": "proportional"}),
           ("kmeans", {"clusters": 8, "strategy": "sensitivity"}),
           ("kmeans", {"clusters": 8, "strategy": "refine", "quality": "response_tokens"}),
           ("facility-location", {}), ("facility-location", {"quality": "distinct_2"}),
           ("log-det", {}), ("semdedup", {"threshold": 0.9}), ("exact-dedup", {})]


@pytest.mark.parametrize("method, params", METHODS,
                         ids=[f"{m}-{'-'.join(map(str, p.values()))}" for m, p in METHODS])
def test_every_method_meets_count_fraction_and_token_budgets(pool_store, method, params):
    pool = Pool(pool_store)
    tokens = dict(zip(pool.ids, pool.tokens()))
    for budget in ("25", "5%", "4k tokens"):
        sel = make_selector(method, budget=budget, **params).fit(Pool(pool_store))
        ids = sel.selected_ids_
        assert len(set(ids)) == len(ids) == len(sel.gains_) == len(sel.reasons_)
        if budget == "25":
            assert len(ids) == 25
        elif budget == "5%":
            assert len(ids) == round(0.05 * len(pool))
        else:
            used = sum(tokens[i] for i in ids)
            assert used <= 4000
            rest = [t for i, t in tokens.items() if i not in set(ids)]
            if method != "semdedup" and method != "exact-dedup":
                assert min(rest) > 4000 - used  # the budget is full: nothing else fits
        again = make_selector(method, budget=budget, **params).fit(Pool(pool_store))
        assert again.selected_ids_ == ids  # same seed, same selection


def test_kmeans_balanced_covers_the_true_sources(pool_store):
    sel = make_selector("kmeans", budget=40, clusters=8).fit(Pool(pool_store))
    got = true_sources(pool_store, sel.selected_ids_)
    counts = {s: got.count(s) for s in SOURCES}
    assert all(c >= 4 for c in counts.values()), counts  # every source, none starved
    # any prefix of the ranking is balanced too: the first 8 picks span 8 clusters
    assert len(set(sel.labels_[sel.ranking_[:8]])) == 8


def test_kmeans_target_quotas_follow_the_target_mix(pool_store, tmp_path):
    """A target of GSM8K and T0 rows that are not in the store: the picks follow its
    mix (the two sources take most of the budget), not the pool's four-way mix; the same
    target read from a source of the store (stored vectors) gives the same quotas."""
    from curate.errors import CurateError

    def rows_of(rel, skip, n):
        with (CORPORA / rel).open() as f:
            return [json.loads(line) for line in f][skip:skip + n]

    target = write_jsonl(tmp_path / "target.jsonl",
                         rows_of(SOURCES["gsm8k"][0], PER_SOURCE, 9)
                         + rows_of(SOURCES["t0"][0], PER_SOURCE, 3))
    where = "source <> 'planted'"
    pool = Pool(pool_store, where=where)
    sel = make_selector("kmeans", budget=40, clusters=8, strategy="target",
                        target=str(target)).fit(pool)
    got = true_sources(pool_store, sel.selected_ids_)
    assert got.count("gsm8k") + got.count("t0") >= 30, got
    assert got.count("gsm8k") > got.count("t0") > 0
    assert sel.reasons_[0].startswith("cluster ") and "weight" in sel.reasons_[0]
    # same target from inside the store: a selection of the gsm8k rows it scores as-is
    from curate.selectors import select
    select(pool_store, "topk", "gsm8k-rows", score="-source_row", budget=9,
           where="source = 'gsm8k'", overwrite=True)
    inside = make_selector("kmeans", budget=40, clusters=8, strategy="target",
                           target="gsm8k-rows").fit(Pool(pool_store, where=where))
    assert true_sources(pool_store, inside.selected_ids_).count("gsm8k") >= 30
    with pytest.raises(CurateError, match="--strategy target"):
        make_selector("kmeans", budget=40, strategy="target").fit(pool)


def test_facility_location_covers_better_than_random(pool_store):
    pool = Pool(pool_store)
    X = pool.embeddings()

    def coverage(rows):
        return float(np.maximum(X @ X[rows].T, 0).max(axis=1).sum())

    fl = make_selector("facility-location", budget=30).fit(pool)
    rand = [coverage(make_selector("random", budget=30, seed=s).fit(pool).ranking_)
            for s in range(5)]
    assert coverage(fl.ranking_) > max(rand)
    assert np.all(np.diff(fl.gains_) <= 1e-9)  # greedy gains never increase (submodular)
    first = {s.replace("planted", "gsm8k") for s in true_sources(pool_store, fl.selected_ids_[:8])}
    assert first == set(SOURCES)  # the first picks already span every source


def test_dedup_finds_the_planted_near_duplicates(pool_store):
    sel = select(pool_store, "semdedup", "dedup-sem", threshold=0.9)
    exact = select(pool_store, "exact-dedup", "dedup-exact")
    dropped = rows(pool_store, "SELECT d.selection, e.source, o.source, d.similarity "
                               "FROM selection_dropped d JOIN examples e USING (id) "
                               "JOIN examples o ON o.id = d.duplicate_of")
    sem = [(a, b) for sel_, a, b, _ in dropped if sel_ == "dedup-sem"]
    planted_pairs = [p for p in sem if set(p) == {"planted", "gsm8k"}]
    assert len(planted_pairs) == N_PLANTED  # each plant, or its original, is dropped
    ex = [(a, b, s) for sel_, a, b, s in dropped if sel_ == "dedup-exact"]
    assert sorted(ex)[: N_PLANTED // 2] == [("gsm8k", "planted", 1.0)] * (N_PLANTED // 2) or \
        sum({a, b} == {"planted", "gsm8k"} for a, b, _ in ex) == N_PLANTED // 2
    assert len(sel.ids) + sum(1 for s_, *_ in dropped if s_ == "dedup-sem") == sel.pool_size
    assert len(exact.ids) == exact.pool_size - len(ex)


def test_dedup_keeps_the_best_copy(pool_store):
    sel = make_selector("exact-dedup", keep="-response_chars").fit(Pool(pool_store))
    pool = Pool(pool_store)
    chars = dict(zip(pool.ids, pool.values("response_chars")))
    for row in sel.dropped_.to_pylist():
        assert chars[row["duplicate_of"]] <= chars[row["id"]]


def test_missing_embeddings_say_which_scorer_to_run(tmp_path):
    from curate.ingest import ingest
    from curate.store import Store

    store = Store(tmp_path / "s")
    ingest(store, [write_jsonl(tmp_path / "a.jsonl", [
        {"instruction": f"task {i}", "output": f"answer {i}"} for i in range(20)])])
    with pytest.raises(CurateError, match="curate score embed"):
        select(store, "kmeans", "k", budget=5)
    with pytest.raises(CurateError, match="curate score lm"):
        select(store, "random", "k", budget="100 tokens")


# ------------------------------------------------------------------ recipes


def test_recipe_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - filter: \"response_tokens > 3\"\n"
                   "  - select: {method: random, budgt: 5}\n")
    with pytest.raises(CurateError, match=r"bad.yaml line 3: random takes no option 'budgt'"):
        load_recipe(bad)
    bad.write_text("steps:\n  - filter: x\n  - selekt: random\n")
    with pytest.raises(CurateError, match=r"line 3: a step is one of"):
        load_recipe(bad)
    bad.write_text("steps:\n  - select: {method: random\n")
    with pytest.raises(CurateError, match=r"line \d: not valid YAML"):
        load_recipe(bad)
    bad.write_text("budget: 5%\nstep:\n  - select: random\n")
    with pytest.raises(CurateError, match=r"line 2: unknown key 'step'"):
        load_recipe(bad)
    bad.write_text("steps:\n  - dedup: random\n  - select: {method: random, budget: 5}\n")
    with pytest.raises(CurateError, match=r"line 2: 'random' is not a deduplicator"):
        load_recipe(bad)
    bad.write_text("steps:\n  - select: random\n")
    with pytest.raises(CurateError, match="needs a budget"):
        load_recipe(bad)
    assert load_recipe(bad, budget="5").steps[-1].params["budget"] == "5"


def test_recipe_runs_filter_then_select(pool_store, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("description: short gsm8k answers, longest first\n"
                      "where: \"source IN ('gsm8k', 'planted')\"\n"
                      "budget: 8\n"
                      "steps:\n"
                      "  - filter: \"response_tokens < 150\"\n"
                      "  - select: longest\n")
    sel = select(pool_store, load_recipe(recipe), "recipe-longest")
    pool = Pool(pool_store, "source IN ('gsm8k', 'planted')")
    toks = dict(zip(pool.ids, pool.values("response_tokens")))
    expect = sorted((t for t in toks.values() if t < 150), reverse=True)[:8]
    assert [toks[i] for i in sel.ids] == expect
    manifest = json.loads((pool_store.root / "selections" / "recipe-longest" /
                           "manifest.json").read_text())
    assert manifest["method"] == "recipe" and manifest["recipe"] == recipe.read_text()
    steps = manifest["params"]["steps"]
    assert steps[0]["rows_in"] == PER_SOURCE + N_PLANTED and steps[1]["rows_out"] == 8
    # a fraction is of the starting pool, not of what the filters left
    frac = select(pool_store, load_recipe(recipe, budget="5%"), "recipe-longest",
                  overwrite=True)
    assert len(frac.ids) == round(0.05 * (PER_SOURCE + N_PLANTED)) == round(0.05 * len(pool))


@pytest.mark.parametrize("recipe", sorted((ROOT / "selectors").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_recipes_parse(recipe):
    plan = load_recipe(recipe, budget="10")
    assert plan.steps[-1].kind in ("select", "dedup")


# ------------------------------------------------------------------ CLI


def cli(*args: str, store=None) -> subprocess.CompletedProcess:
    extra = ["--store", str(store.root)] if store is not None else []
    return subprocess.run([sys.executable, "-m", "curate.cli", *args, *extra],
                          capture_output=True, text=True, cwd=ROOT)


def test_cli_select_list_and_errors(pool_store):
    done = cli("select", "topk", "--score", "response_chars", "--budget", "3", "--name",
               "cli-top", "--json", store=pool_store)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["size"] == 3
    listed = json.loads(cli("selections", "--json", store=pool_store).stdout)
    assert "cli-top" in [s["name"] for s in listed]
    bad = cli("select", "random", "--budget", "lots", "--name", "z", store=pool_store)
    assert bad.returncode == 2 and "cannot read budget" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = cli("select", "random", "-p", "seed", "--budget", "3", "--name", "z", store=pool_store)
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr
    assert cli("selections", "--delete", "cli-top", store=pool_store).returncode == 0
    assert "cli-top" not in [s["name"] for s in list_selections(pool_store)]
    assert rows(pool_store, "SELECT count(*) FROM selection_members "
                            "WHERE selection = 'cli-top'") == [(0,)]


@pytest.mark.parametrize("recipe", ["kmeans-balanced.yaml", "longest-clean.yaml", "dedup.yaml"])
def test_shipped_recipes_run_on_real_rows(pool_store, recipe):
    budget = [] if recipe == "dedup.yaml" else ["--budget", "10%"]
    done = cli("select", "--recipe", f"selectors/{recipe}", *budget, "--name",
               f"shipped-{recipe}", "--overwrite", "--json", store=pool_store)
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    if not budget:  # ends with dedup and no budget: everything that is not a duplicate
        assert manifest["size"] + manifest["dropped"] == manifest["pool_size"]
    else:
        assert manifest["size"] == round(0.1 * manifest["pool_size"])
    assert manifest["dropped"] >= N_PLANTED  # the planted near copies go in the dedup steps
    assert [s for s in manifest["params"]["steps"]][-1]["rows_out"] == manifest["size"]
