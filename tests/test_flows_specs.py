"""The flows' selection and scorer specs go through the library's parsers
(curate.selectors.parse_selection, curate.scoring.scorer_from_spec), and their cache keys
stay what they were for the same spec."""

from __future__ import annotations

import pytest

from conftest import ROOT
from curate.errors import CurateError
from curate.store import Store

tasks = pytest.importorskip("flows.tasks")


def _old_select_key(root, spec, text):  # the key as flows/tasks.py computed it before
    return "select-" + tasks._digest(str(root), spec, text, tasks._listing(root, tasks.INGESTED),
                                     tasks._listing(root, tasks.SCORED))


def test_select_key_is_unchanged_and_the_same_from_any_directory(tmp_path, monkeypatch):
    store = str(tmp_path / "store")
    root = Store(store).root
    spec = {"name": "deduped", "recipe": "selectors/dedup.yaml", "budget": "5%"}
    text = (ROOT / "selectors" / "dedup.yaml").read_text()
    here = tasks._select_key(None, {"store": store, "spec": spec})
    assert here == _old_select_key(root, spec, text)
    monkeypatch.chdir(tmp_path)  # the recipe by its packaged name now
    assert tasks._select_key(None, {"store": store, "spec": spec}) == here
    method = {"name": "r", "method": "random", "budget": 5}
    assert tasks._select_key(None, {"store": store, "spec": method}) == \
        _old_select_key(root, method, None)
    missing = {"name": "x", "recipe": "selectors/no-such.yaml"}
    assert tasks._select_key(None, {"store": store, "spec": missing}) == \
        _old_select_key(root, missing, None)  # the task itself reports it


def test_score_key_is_unchanged(tmp_path):
    from curate.scoring import make_scorer

    store = str(tmp_path / "store")
    root = Store(store).root
    for spec, scorer, where in (("heuristics", make_scorer("heuristics"), None),
                                ({"name": "heuristics", "where": "source = 'a'"},
                                 make_scorer("heuristics"), "source = 'a'")):
        assert tasks._score_key(None, {"store": store, "spec": spec}) == "score-" + \
            tasks._digest(str(root), scorer.key, where, tasks._listing(root, tasks.INGESTED))
    assert tasks._score_key(None, {"store": store, "spec": {"where": "x"}}) is None


def test_scorer_from_spec(tmp_path):
    from curate.scoring import scorer_from_spec

    store = Store(tmp_path / "store")
    spec = {"name": "embed", "text": "prompt", "where": "kind = 'trace'"}
    scorer, where = scorer_from_spec(store, spec)
    assert scorer.name == "embed" and scorer.needs == "prompt" and where == "kind = 'trace'"
    assert spec == {"name": "embed", "text": "prompt", "where": "kind = 'trace'"}  # unchanged
    assert scorer_from_spec(store, "heuristics")[1] is None
    with pytest.raises(CurateError, match=r"scorer spec \{'text': 'prompt'\} has no name\n"
                                          r"  fix: e\.g\. \{name: embed, text: prompt\}$"):
        scorer_from_spec(store, {"text": "prompt"})
    with pytest.raises(CurateError, match="unknown scorer 'nope'"):
        scorer_from_spec(store, "nope")
    with pytest.raises(CurateError, match="takes no option colour"):
        scorer_from_spec(store, {"name": "embed", "colour": "red"})


def test_resolve_recipe_is_the_library_one():
    assert not hasattr(tasks, "resolve_recipe") and not hasattr(tasks, "_scorer")
