"""Recipes by bare name (`dedup`, `dedup.yaml`, `selectors/dedup.yaml`) from any working
directory and from an installed curate; the selection spec parser the CLI, the API and
the flows share."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
from typer.testing import CliRunner

from conftest import DATA, ROOT
from curate.errors import CurateError
from curate.selectors import (SELECTORS, Plan, SpecWords, packaged_recipes, parse_selection,
                              resolve_recipe)

SHIPPED = sorted(p.stem for p in (ROOT / "selectors").glob("*.yaml"))


# ---------------------------------------------------------------- resolution
def test_packaged_recipes_are_the_selectors_folder():
    assert sorted(packaged_recipes()) == SHIPPED and "dedup" in SHIPPED
    assert all(p.parent == ROOT / "selectors" for p in packaged_recipes().values())  # a clone
    assert not set(SHIPPED) & set(SELECTORS)  # `--select NAME=dedup` is never a method


@pytest.mark.parametrize("name", ["dedup", "dedup.yaml", "dedup.yml", "selectors/dedup.yaml",
                                  "selectors/dedup"])
def test_a_bare_name_resolves_from_any_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no selectors/ here
    assert resolve_recipe(name) == ROOT / "selectors" / "dedup.yaml"


def test_an_existing_path_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "dedup.yaml"
    mine.write_text("steps:\n  - select: {method: random, budget: 3}\n")
    assert resolve_recipe("dedup.yaml") == mine.relative_to(tmp_path)  # as given
    assert resolve_recipe("dedup") == ROOT / "selectors" / "dedup.yaml"  # no file `dedup`
    (tmp_path / "selectors").mkdir()
    (tmp_path / "selectors" / "dedup.yaml").write_text(mine.read_text())
    assert resolve_recipe("selectors/dedup.yaml").resolve() == \
        (tmp_path / "selectors" / "dedup.yaml").resolve()
    assert resolve_recipe(ROOT / "selectors" / "kmeans-balanced.yaml") == \
        ROOT / "selectors" / "kmeans-balanced.yaml"


def test_an_unknown_name_lists_the_packaged_recipes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("nope", "selectors/nope.yaml", "elsewhere/dedup.yaml", str(tmp_path / "x.yaml")):
        with pytest.raises(CurateError, match="no recipe file") as e:
            resolve_recipe(name)
        fix = str(e.value).split("fix: ")[1]
        assert all(r in fix for r in SHIPPED), fix


# ---------------------------------------------------------------- the spec parser
def test_parse_selection_method_and_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = {"name": "r", "method": "random", "budget": "5%", "where": "kind = 'trace'",
            "params": {"seed": 1, "clusters": 3}, "seed": 2}
    parsed = parse_selection(spec)
    assert (parsed.name, parsed.plan, parsed.method, parsed.where) == \
        ("r", "random", "random", "kind = 'trace'")
    assert parsed.params == {"seed": 2, "clusters": 3, "budget": "5%"}  # keys win over params
    assert spec["params"] == {"seed": 1, "clusters": 3} and "budget" in spec  # not changed
    recipe = parse_selection({"name": "k", "recipe": "kmeans-balanced", "budget": 12,
                              "embed": "minilm"})
    assert isinstance(recipe.plan, Plan) and recipe.method is None
    assert recipe.plan.steps[-1].params["budget"] == 12 and recipe.embed == "minilm"
    assert recipe.plan.source == str(ROOT / "selectors" / "kmeans-balanced.yaml")


def test_parse_selection_errors_in_the_interfaces_words(tmp_path):
    with pytest.raises(CurateError, match=r"selection spec \{'method': 'random'\} has no name"
                                          r"\n  fix: add name: NAME"):
        parse_selection({"method": "random"})
    with pytest.raises(CurateError, match="selection 'x': give either method or recipe, not "
                                          "both or neither\n  fix: e.g. {recipe:"):
        parse_selection({"name": "x", "method": "random", "recipe": "dedup"})
    with pytest.raises(CurateError, match="selection 'x': give either"):
        parse_selection({"name": "x"})
    words = SpecWords(name_fix="pass --name", method="METHOD", recipe="--recipe",
                      either_fix="see --help", show_spec=False)
    with pytest.raises(CurateError, match="^a selection needs a name\n  fix: pass --name$"):
        parse_selection({"name": ""}, words)
    with pytest.raises(CurateError, match="^give either METHOD or --recipe, not both or "
                                          "neither\n  fix: see --help$"):
        parse_selection({"name": "x"}, words)
    with pytest.raises(CurateError, match="no recipe file nope"):
        parse_selection({"name": "x", "recipe": "nope"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: []\n")
    with pytest.raises(CurateError, match="must be a non-empty list"):  # the recipe is checked
        parse_selection({"name": "x", "recipe": str(bad)})


# ---------------------------------------------------------------- the CLI
def test_cli_select_help_says_a_bare_name_works():
    from curate import cli

    assert sorted(cli.PACKAGED_RECIPES) == SHIPPED  # the names --recipe's help lists
    out = CliRunner().invoke(cli.app, ["select", "--help"], env={"COLUMNS": "300"}).output
    text = " ".join(out.split())
    assert "bare name" in text and "any directory" in text
    assert all(name in text for name in SHIPPED)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    from curate.ingest import ingest
    from curate.scoring import make_scorer, run_scorer
    from curate.store import Store

    store = Store(tmp_path_factory.mktemp("recipes") / "store")
    ingest(store, [DATA / "qa_math.jsonl"])
    run_scorer(store, make_scorer("heuristics"))
    run_scorer(store, make_scorer("embed", text="all"))
    return store


def test_cli_select_a_bare_recipe_from_another_directory(small_store, tmp_path, monkeypatch):
    from curate.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    first = runner.invoke(app, ["select", "--recipe", "dedup", "--name", "bare", "--json",
                                "--store", str(small_store.root)])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["select", "--recipe", "selectors/dedup.yaml", "--name",
                                "spelled", "--json", "--store", str(small_store.root)])
    assert again.exit_code == 0, again.output
    from curate.selection import list_selections

    by_name = {m["name"]: m for m in list_selections(small_store)}
    assert by_name["bare"]["size"] == by_name["spelled"]["size"] > 0
    assert by_name["bare"]["method"] == "recipe"
    missing = runner.invoke(app, ["select", "--recipe", "nope", "--name", "x", "--store",
                                  str(small_store.root)])
    assert isinstance(missing.exception, CurateError)
    assert "no recipe file nope" in str(missing.exception) and "dedup" in str(missing.exception)
    both = runner.invoke(app, ["select", "random", "--recipe", "dedup", "--name", "x",
                               "--store", str(small_store.root)])
    assert "give either METHOD or --recipe" in str(both.exception)
    neither = runner.invoke(app, ["select", "--name", "x", "--store", str(small_store.root)])
    assert "curate select --help" in str(neither.exception)
    unnamed = runner.invoke(app, ["select", "random", "--store", str(small_store.root)])
    assert "a selection needs a name\n  fix: pass --name" in str(unnamed.exception)


def test_run_select_takes_a_bare_recipe():
    from curate.cli import _flow_params

    params = _flow_params(None, None, None, None, ["a=dedup", "b=selectors/dedup.yaml",
                                                   "c=random", "d=my/recipe.yml"],
                          "5%", None, None, None, None, False)
    assert params["selections"] == [
        {"name": "a", "recipe": "dedup", "budget": "5%"},
        {"name": "b", "recipe": "selectors/dedup.yaml", "budget": "5%"},
        {"name": "c", "method": "random", "budget": "5%"},
        {"name": "d", "recipe": "my/recipe.yml", "budget": "5%"}]


# ---------------------------------------------------------------- the installed package
def test_pyproject_packages_every_package_and_the_recipes():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.relative_to(ROOT).parent.parts)
             for top in ("curate", "flows") for p in (ROOT / top).rglob("__init__.py")}
    assert set(setup["packages"]) == found | {"curate.recipes"}, \
        "add the new package to [tool.setuptools] packages in pyproject.toml"
    assert setup["package-dir"] == {"curate.recipes": "selectors"}
    assert setup["package-data"]["curate.recipes"] == ["*.yaml"]


def test_the_wheel_ships_the_recipes_and_resolves_them(tmp_path):
    """Build the wheel (from a copy of the tree: no build/ left in the clone), unpack it
    and resolve bare names from another directory against it."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("curate", "flows", "selectors"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(tmp_path / "whl"), str(src)],
                           capture_output=True, text=True, timeout=300)
    if built.returncode and "No module named pip" in built.stderr:
        pytest.skip("no pip in this environment")
    assert built.returncode == 0, built.stderr
    wheel, = (tmp_path / "whl").glob("curate-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n for n in names if n.startswith("curate/recipes/")) == \
        [f"curate/recipes/{r}.yaml" for r in SHIPPED]
    assert not [n for n in names if n.startswith("selectors/")]  # not a top-level folder
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import curate, sys; from curate.selectors import resolve_recipe, load_recipe; "
            "print(curate.__file__); print(resolve_recipe('dedup')); "
            "print(resolve_recipe('selectors/kmeans-balanced.yaml')); "
            "print(len(load_recipe('longest-clean.yaml').steps))\n"
            "try:\n    resolve_recipe('nope')\nexcept Exception as e:\n    print(e)")
    run = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True,
                         text=True, timeout=120, env={"PYTHONPATH": str(site), "PATH": ""})
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == str(site / "curate" / "__init__.py")  # the unpacked wheel's curate
    assert lines[1] == str(site / "curate" / "recipes" / "dedup.yaml")
    assert lines[2] == str(site / "curate" / "recipes" / "kmeans-balanced.yaml")
    assert int(lines[3]) > 1
    assert re.search("no recipe file nope", run.stdout) and all(r in run.stdout for r in SHIPPED)
