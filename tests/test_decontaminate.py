"""Decontamination against an evaluation set: word n-grams (the shared code in
curate/ngrams.py), the `decontaminate` selector through the API, the CLI, a recipe step
and embedding mode, and the overlap warnings of evaluate and compare."""

from __future__ import annotations

import json
import warnings

import pytest
from typer.testing import CliRunner

from conftest import rows, single, write_jsonl
from curate.cli import app
from curate.errors import CurateError
from curate.ingest import ingest
from curate.selectors import load_recipe, select
from curate.store import Store
from curate.targets import load_target

QUESTIONS = [
    "Natalia sold clips to forty eight of her friends in April and then she sold half as "
    "many clips in May, how many clips did she sell altogether in April and May?",
    "Weng earns twelve dollars an hour for babysitting and yesterday she just did fifty "
    "minutes of babysitting, so how much did she earn for the afternoon in total?",
    "Betty is saving money for a new wallet which costs one hundred dollars and she has "
    "only half of the money she needs, how much more money does Betty need now?",
    "James writes a three page letter to two different friends twice a week, so how many "
    "pages does he write in a whole year if every letter has the same length?",
]
TOPICS = ["tides", "volcanoes", "bread", "chess", "owls", "glaciers", "tea", "bridges",
          "comets", "violins", "deserts", "bees", "lighthouses", "maps", "coral", "kites",
          "orchards", "typewriters", "canals", "lanterns"]


def _words(text: str, start: int, count: int) -> str:
    return " ".join(text.split()[start:start + count])


@pytest.fixture(scope="module")
def contaminated(tmp_path_factory):
    """A pool of 20 clean rows and 5 rows that touch the target's questions, and the
    target file: which pool row should be dropped, matched with which target row."""
    root = tmp_path_factory.mktemp("decontaminate")
    target_file = write_jsonl(root / "eval_test.jsonl", [
        {"question": q, "answer": f"The answer is worked out step by step.\n#### {k}"}
        for k, q in enumerate(QUESTIONS)])
    clean = [{"messages": single(f"Write a short note about {t} for a curious reader.",
                                 f"{t.capitalize()} are a fine subject: here are three facts "
                                 f"about {t} worth knowing, number {k}.")}
             for k, t in enumerate(TOPICS)]
    touched = {
        "whole": single("Here is a worksheet problem: " + QUESTIONS[0], "I think 72."),
        "slice13": single("Summarize this note.", "The note says: " + _words(QUESTIONS[2], 3, 13)
                          + " and nothing else of interest."),
        "slice12": single("Summarize this note.", "A different note: " + _words(QUESTIONS[1], 4, 12)
                          + " and more unrelated words follow here."),
        "shouted": single(QUESTIONS[3].upper().replace(",", " ,, ").replace("?", "!!!"),
                          "Count them."),
        "same": single(QUESTIONS[1], "The answer is worked out step by step.\n#### 1"),
    }
    store = Store(root / "store")
    ingest(store, [write_jsonl(root / "clean.jsonl", clean)], source="clean")
    for name, messages in touched.items():
        ingest(store, [write_jsonl(root / f"{name}.jsonl", [{"messages": messages}])],
               source=name)
    ids = dict(rows(store, "SELECT source, id FROM examples WHERE source != 'clean'"))
    target = load_target(store, str(target_file))
    expect = {ids["whole"]: target.ids[0], ids["slice13"]: target.ids[2],
              ids["shouted"]: target.ids[3], ids["same"]: target.ids[1]}
    return store, target_file, target, ids, expect


def dropped(store, name: str) -> dict[str, tuple]:
    return {i: (d, s, step) for i, d, s, step in rows(
        store, f"SELECT id, duplicate_of, similarity, step FROM selection_dropped "
               f"WHERE selection = '{name}'")}


# ------------------------------------------------------------------ n-grams


def test_ngrams_normalize_and_short_texts_match_their_twins():
    from curate.ngrams import first_shared, ngrams, shared_ngrams

    g = ngrams(["Hello, World! again", "", None, "hello world", "a b c d e"], 3)
    assert g.counts.tolist() == [1, 0, 0, 1, 3]  # short rows: one gram; empty: none
    target = ngrams(["HELLO world", "x a b c y", "hello   world again!!"], 3)
    found = shared_ngrams(g, target)
    assert found.target.tolist() == [2, -1, -1, 0, 1]
    assert found.fraction[4] == pytest.approx(1 / 3) and found.shared[4] == 1
    assert first_shared("zz A, b c!", "x a b c y", 3) == "a b c"
    assert first_shared("a b", "a b c", 3) is None
    # the same gram under the same words, whatever the row; different order, different gram
    assert ngrams(["p q r"], 3).hashes[0] == ngrams(["x p q r"], 3).hashes[1]
    assert ngrams(["p q r"], 3).hashes[0] != ngrams(["r q p"], 3).hashes[0]


def test_a_gram_many_targets_share_is_credited_to_the_first_ones():
    from curate.ngrams import ngrams, shared_ngrams

    boiler = "let us think step by step"
    target = ngrams([f"{boiler} item {k}" for k in range(20)], 6)
    found = shared_ngrams(ngrams([f"so {boiler}"], 6), target, max_owners=3)
    assert found.target.tolist() == [0] and found.shared.tolist() == [1]


# ------------------------------------------------------------------ the selector


def test_ngram_drops_exactly_the_rows_sharing_a_13_gram(contaminated):
    store, target_file, target, ids, expect = contaminated
    sel = select(store, "decontaminate", "clean", against=str(target_file))
    got = dropped(store, "clean")
    assert {i: d for i, (d, _, _) in got.items()} == expect
    assert ids["slice12"] in sel.ids and len(sel.ids) == 21  # 12 shared words are not 13
    assert got[ids["same"]][1] == pytest.approx(1.0)
    assert 0.5 < got[ids["whole"]][1] < 1  # the whole question, not its answer
    assert 0 < got[ids["slice13"]][1] < 0.2  # one 13-gram of the question's
    assert got[ids["whole"]][2] == "1:select:decontaminate"
    assert sel.manifest()["dropped"] == 4 and sel.params["ngram"] == 13


def test_ngram_size_and_threshold(contaminated):
    store, target_file, _, ids, expect = contaminated
    select(store, "decontaminate", "clean8", against=str(target_file), ngram=8)
    assert set(dropped(store, "clean8")) == {*expect, ids["slice12"]}
    select(store, "decontaminate", "clean-half", against=str(target_file), threshold=0.5)
    assert set(dropped(store, "clean-half")) == {ids["whole"], ids["shouted"], ids["same"]}
    sel = select(store, "decontaminate", "clean-5", against=str(target_file), budget=5)
    assert len(sel.ids) == 5 and not set(sel.ids) & set(expect)


def test_errors_are_clear(contaminated):
    store, target_file, *_ = contaminated
    with pytest.raises(CurateError, match="needs the evaluation set"):
        select(store, "decontaminate", "x")
    with pytest.raises(CurateError, match="unknown method 'bm25'"):
        select(store, "decontaminate", "x", against=str(target_file), by="bm25")
    with pytest.raises(CurateError, match="no target"):
        select(store, "decontaminate", "x", against="nowhere.jsonl")


def test_recipe_step_by_the_deduplicators_name(contaminated, tmp_path):
    store, target_file, _, _, expect = contaminated
    recipe = tmp_path / "clean-random.yaml"
    recipe.write_text(f"steps:\n  - decontaminate: {{against: {target_file}}}\n"
                      "  - select: {method: random, budget: 10}\n")
    sel = select(store, load_recipe(recipe), "clean-recipe")
    got = dropped(store, "clean-recipe")
    assert {i: d for i, (d, _, _) in got.items()} == expect
    assert {s for _, _, s in got.values()} == {"1:dedup:decontaminate"}
    assert len(sel.ids) == 10 and not set(sel.ids) & set(expect)
    assert sel.params["steps"][0]["rows_out"] == 21



def test_a_relative_path_in_a_recipe_reads_from_the_recipe_folder(contaminated, tmp_path,
                                                                   monkeypatch):
    import shutil

    store, target_file, _, _, expect = contaminated
    folder = tmp_path / "recipes"
    folder.mkdir()
    shutil.copy(target_file, folder / "eval.jsonl")
    (folder / "clean.yaml").write_text("steps:\n  - decontaminate: {against: eval.jsonl}\n"
                                       "  - select: {method: random, budget: 10}\n")
    monkeypatch.chdir(tmp_path)  # eval.jsonl is not in the working directory
    sel = select(store, load_recipe(folder / "clean.yaml"), "clean-relative")
    assert {i: d for i, (d, _, _) in dropped(store, "clean-relative").items()} == expect
    assert sel.params["steps"][0]["dedup"]["against"] == str((folder / "eval.jsonl").resolve())

def test_embedding_mode(contaminated):
    from curate.scoring import make_scorer, run_scorer

    store, target_file, target, ids, expect = contaminated
    run_scorer(store, make_scorer("embed"))
    sel = select(store, "decontaminate", "clean-emb", against=str(target_file),
                 by="embedding", threshold=0.9)
    got = dropped(store, "clean-emb")
    assert ids["same"] in got and got[ids["same"]][0] == target.ids[1]
    assert got[ids["same"]][1] == pytest.approx(1.0, abs=1e-4)
    assert set(got) <= set(expect) and all(s >= 0.9 for _, s, _ in got.values())
    assert len(sel.ids) == 25 - len(got)
    strict = select(store, "decontaminate", "clean-emb-low", against=str(target_file),
                    by="embedding", threshold=-1.0)
    assert strict.ids == []  # every row is within cosine -1 of some target example


# ------------------------------------------------------------------ CLI


def test_cli_decontaminate_and_select_decontaminate(contaminated):
    store, target_file, target, ids, expect = contaminated
    runner = CliRunner()
    out = runner.invoke(app, ["decontaminate", "--against", str(target_file), "--store",
                              str(store.root), "--overwrite"], env={"COLUMNS": "300"})
    assert out.exit_code == 0, out.output
    assert "kept 21 of 25 examples; dropped 4" in out.stdout
    assert f'{ids["whole"][:12]} ~ target {target.ids[0][:12]} (similarity 0.677): "natalia '
    'sold clips to forty eight' in out.stdout  # the first shared n-gram
    assert "selection_dropped" in out.stdout
    js = runner.invoke(app, ["decontaminate", "--against", str(target_file), "--ngram", "8",
                             "--name", "clean-cli", "--json", "--store", str(store.root)])
    assert js.exit_code == 0, js.output
    info = json.loads(js.stdout)
    assert info["kept"] == 20 and info["dropped"] == 5 and len(info["matches"]) == 3
    assert {m["duplicate_of"] for m in info["matches"]} <= set(target.ids)
    sql = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM selection_dropped WHERE "
                              "selection = 'decontaminated'", "--format", "json", "--store",
                              str(store.root)])
    assert json.loads(sql.stdout.splitlines()[0])["n"] == 4
    # the same selector through `curate select`, and a selection's members as the pool
    sel = runner.invoke(app, ["select", "decontaminate", "--against", str(target_file),
                              "--name", "clean-select", "--json", "--store", str(store.root)])
    assert sel.exit_code == 0, sel.output and json.loads(sel.stdout)["dropped"] == 4
    select(store, "random", "some", budget=12, seed=3)
    part = runner.invoke(app, ["decontaminate", "--against", str(target_file), "--selection",
                               "some", "--name", "some-clean", "--json", "--store",
                               str(store.root)])
    info = json.loads(part.stdout)
    members = {i for (i,) in rows(store, "SELECT id FROM selection_members WHERE "
                                         "selection = 'some'")}
    assert info["pool_size"] == 12 and info["dropped"] == len(members & set(expect))
    bad = runner.invoke(app, ["decontaminate", "--against", str(target_file), "--selection",
                              "nope", "--store", str(store.root)])
    assert bad.exit_code != 0 and "no selection 'nope'" in str(bad.exception)


# ------------------------------------------------------------------ evaluate / compare


def test_evaluate_and_compare_warn_about_an_overlapping_training_selection(
        contaminated, tiny, one_thread):
    from curate.finetune import TrainConfig, finetune
    from curate.finetune.compare import compare

    store, target_file, _, ids, _ = contaminated
    # one row with the whole question; slice12 shares only 12 words with another one
    select(store, "random", "train-dirty", budget=2, overwrite=True,
           where=f"id IN ('{ids['whole']}', '{ids['slice12']}')")
    config = TrainConfig(model=str(tiny), method="full", lr=1e-2, max_steps=1,
                         batch_tokens=512, warmup_ratio=0.0, max_tokens=256)
    run = finetune(store, "train-dirty", config)
    out = CliRunner().invoke(app, ["evaluate", "--run", run.run_id, "--target",
                                   str(target_file), "--store", str(store.root)],
                             env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    assert "warning:" in out.stderr and "1 of its 2 examples share a 13-word n-gram" in \
        out.stderr and f"curate decontaminate --against {target_file}" in out.stderr
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        board = compare(store, str(target_file), ["train-dirty"], seeds=1, config=config)
    said = [str(w.message) for w in caught if "decontaminate --against" in str(w.message)]
    assert len(said) == 1 and "'train-dirty'" in said[0]
    assert any("share a 13-word n-gram" in n for n in board["notes"])
    # a clean training selection: no warning
    select(store, "decontaminate", "train-clean", against=str(target_file),
           where=f"id IN ('{ids['slice12']}')", overwrite=True)
    clean = finetune(store, "train-clean", config)
    out = CliRunner().invoke(app, ["evaluate", "--run", clean.run_id, "--target",
                                   str(target_file), "--store", str(store.root)],
                             env={"COLUMNS": "400"})
    assert out.exit_code == 0 and "warning" not in out.stderr, out.output
