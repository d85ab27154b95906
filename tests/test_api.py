"""The Python API (curate.Store): the CLI's verbs as methods, on a real store."""

from __future__ import annotations

import json

import pytest

import curate
from conftest import DATA, ROOT
from curate.errors import CurateError


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    store = curate.Store.open(tmp_path_factory.mktemp("api") / "store")
    report = store.ingest(DATA / "*.jsonl", DATA / "alpaca_general.json")
    assert len(report.files) == 4
    store.score("heuristics")
    store.score("embed", text="all")
    return store


def test_open_creates_or_requires(tmp_path):
    with pytest.raises(CurateError, match="is not a curate store"):
        curate.Store.open(tmp_path / "missing", create=False)
    store = curate.Store.open(tmp_path / "new")
    assert (store.root / "store.json").is_file()
    assert len(store.examples()) == 0  # an empty store answers queries
    assert curate.Store.open(store.root, create=False).root == store.root


def test_ingest_globs_and_reports(api, tmp_path):
    with pytest.raises(CurateError, match="no file matches"):
        api.ingest(tmp_path / "*.jsonl")
    again = api.ingest(DATA / "qa_math.jsonl")  # already ingested: skipped, nothing new
    assert sum(f.stored for f in again.files) == 0
    counts = dict(api.sql("SELECT source, count(*) FROM examples GROUP BY 1").fetchall())
    assert set(counts) == {"alpaca_general", "chat_support", "qa_math", "solutions_labelled"}


def test_sql_is_lazy_and_gives_frames(api):
    import polars as pl
    import pyarrow as pa

    q = api.sql("SELECT id, response_tokens FROM scores_heuristics ORDER BY id")
    frame, table = q.pl(), q.arrow()
    assert isinstance(frame, pl.DataFrame) and isinstance(table, pa.Table)
    assert frame["id"].to_list() == table["id"].to_pylist() and len(q) == frame.height > 0
    with pytest.raises(CurateError, match="query failed"):
        api.sql("SELECT nope FROM examples").fetchall()
    with pytest.raises(CurateError):  # queries only, as `curate sql`
        api.sql("DELETE FROM examples")


def test_select_examples_export_and_hf(api, tmp_path):
    sel = api.select("kmeans", budget=30, name="diverse", clusters=5, seed=0)
    assert len(sel.ids) == 30
    frame = api.examples(selection="diverse").to_polars()
    assert frame["id"].to_list() == sel.ids  # in the selection's rank order
    report = api.export("diverse", tmp_path / "train.jsonl", format="messages")
    lines = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert report.rows == len(lines) == 30 and all("messages" in r for r in lines)
    ds = api.to_hf("diverse")
    assert ds.num_rows == 30 and ds["id"] == sel.ids
    assert "diverse" in [m["name"] for m in api.selections()]
    with pytest.raises(CurateError, match="exists"):
        api.select("random", budget=5, name="diverse")
    with pytest.raises(CurateError, match="needs a name"):
        api.select("random", budget=5)


def test_select_recipe_and_filtered_examples(api):
    sel = api.select(recipe=ROOT / "selectors" / "kmeans-balanced.yaml", budget=12,
                     name="from-recipe")
    assert len(sel.ids) == 12
    math = api.examples(selection="from-recipe", where="source = 'qa_math'").to_polars()
    assert set(math["source"]) <= {"qa_math"} and math.height <= 12
    with pytest.raises(CurateError, match="not both or neither"):
        api.select("random", recipe="x.yaml", budget=5, name="both")


def test_select_a_bare_recipe_from_another_directory(api, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no selectors/ here: the packaged recipe
    sel = api.select(recipe="kmeans-balanced", budget=12, name="bare-recipe")
    assert len(sel.ids) == 12 and sel.method == "recipe"
    with pytest.raises(CurateError, match="no recipe file nope") as e:
        api.select(recipe="nope", name="x")
    assert "kmeans-balanced" in str(e.value)
    with pytest.raises(CurateError, match="^give either a method or recipe=, not both or "
                                          "neither\n  fix: e.g. store.select"):
        api.select(name="neither")


def test_sql_errors_get_the_hint_curate_sql_gives(api):
    from typer.testing import CliRunner

    from curate.cli import app

    for query in ("SELECT nope FROM examples", "SELECT respons FROM pairs",
                  "SELECT * FROM exampels", "SELECT * FROM scores_lm",
                  "SELEC count(*) FROM examples"):
        with pytest.raises(CurateError) as e:
            api.sql(query).fetchall()
        cli = CliRunner().invoke(app, ["sql", query, "--store", str(api.root)]).exception
        assert isinstance(cli, CurateError), query
        hint = str(e.value).split("\n  fix: ")[1]
        assert hint == str(cli).split("\n  fix: ")[1], query
        assert str(e.value).startswith("query failed: ")
    assert "syntax" in hint  # the last: a parse error, raised when the query is made
    column = str(pytest.raises(CurateError, api.sql("SELECT respons FROM pairs").pl).value)
    assert "pairs has id, source, source_row, kind, prompt, response, turns" in column
    table = str(pytest.raises(CurateError, api.sql("SELECT * FROM exampels").arrow).value)
    assert "the views of this store are " in table and "scores_embed" in table
    scores = str(pytest.raises(CurateError, len, api.sql("SELECT * FROM scores_lm")).value)
    assert "run `curate score lm` first" in scores
