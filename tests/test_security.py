"""Security and messages of issue 13: the read-only SQL (`curate sql` and the user's SQL
expressions), names that become folders, safe YAML and checkpoint loading, SQL error
hints, budgets as typed, --store at a regular file, fix commands that run, and one unit
for sizes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from conftest import ROOT, rows, write_jsonl
from curate.cli import app
from curate.errors import CurateError, QueryError, StoreError
from curate.ingest import ingest
from curate.store import Store

RECS = [{"instruction": f"Question {i}?", "input": "", "output": f"Answer {i}."}
        for i in range(6)]


def _invoke(*args):
    """The CLI in this process; a CurateError comes back as `result.exception`."""
    return CliRunner().invoke(app, [str(a) for a in args])


def _cli(*args, cwd=None):
    """The real `curate` entry point (exit codes, the `error:` line)."""
    return subprocess.run([sys.executable, "-c", "from curate.cli import main; main()",
                           *map(str, args)], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200"})


@pytest.fixture
def filled(tmp_path, store):
    ingest(store, [write_jsonl(tmp_path / "a.jsonl", RECS)])
    return store


@pytest.fixture(params=["catalog", "moved"])
def any_store(request, tmp_path, filled):
    """A store whose catalog.duckdb is current, or one moved after its catalog was built
    (its connections fall back to writable in-memory views)."""
    if request.param == "catalog":
        return filled
    moved = tmp_path / "moved"
    shutil.move(filled.root, moved)
    st = Store(moved)
    con = st.connect()
    try:  # really the in-memory fallback
        assert con.execute("SELECT current_database()").fetchone()[0] == "memory"
    finally:
        con.close()
    return st


# ---------------------------------------------------------------- 1. read-only SQL
def _refused(tmp_path, root: Path) -> list[tuple[str, Path | None]]:
    """Statements `curate sql` must refuse, with the file each would have written."""
    inside, outside = root / "evil.csv", tmp_path / "evil.csv"
    return [
        (f"COPY (SELECT * FROM examples) TO '{inside}'", inside),
        (f"COPY (SELECT * FROM examples) TO '{outside}'", outside),
        (f"COPY examples TO '{outside}' (FORMAT parquet)", outside),
        (f"EXPORT DATABASE '{root / 'dump'}'", root / "dump"),
        (f"ATTACH '{root / 'other.duckdb'}' AS other", root / "other.duckdb"),
        (f"ATTACH '{tmp_path / 'other.duckdb'}' AS other", tmp_path / "other.duckdb"),
        ("INSTALL httpfs", None),
        ("LOAD httpfs", None),
        ("SET enable_external_access = true", None),
        ("SET threads = 1", None),
        ("RESET threads", None),
        ("PRAGMA enable_profiling", None),
        ("CREATE TABLE t AS SELECT * FROM examples", None),
        ("CREATE OR REPLACE VIEW examples AS SELECT 1 AS id", None),
        ("INSERT INTO quarantine SELECT * FROM quarantine", None),
        ("DROP VIEW examples", None),
        ("CALL checkpoint()", None),
        (f"SELECT 1; COPY (SELECT 1) TO '{outside}'", outside),
        (f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{inside}'", inside),
    ]


@pytest.mark.parametrize("k", range(19))
def test_sql_refuses_what_is_not_a_query(tmp_path, any_store, k):
    cases = _refused(tmp_path, any_store.root)
    assert len(cases) == 19
    query, would_write = cases[k]
    res = _invoke("sql", query, "--store", any_store.root)
    assert isinstance(res.exception, QueryError), (query, res.output, res.exception)
    message = str(res.exception)
    assert "read-only" in message and "fix: run a query" in message
    if would_write is not None:
        assert not would_write.exists()
    # the store is untouched: views answer as before
    assert rows(any_store, "SELECT count(*) FROM examples") == [(6,)]


def test_sql_still_answers_queries(any_store):
    for query in ("SELECT count(*) AS n FROM examples", "DESCRIBE pairs", "SHOW TABLES",
                  "SUMMARIZE examples", "FROM pairs LIMIT 1",
                  "WITH t AS (SELECT kind FROM examples) SELECT count(*) FROM t",
                  "EXPLAIN SELECT * FROM pairs", "EXPLAIN ANALYZE SELECT count(*) FROM pairs"):
        res = _invoke("sql", query, "--store", any_store.root, "--format", "csv")
        assert res.exit_code == 0, (query, res.output, res.exception)
    out = _invoke("sql", "SELECT count(*) AS n FROM examples", "--store", any_store.root,
                  "--format", "csv").output
    assert out.splitlines() == ["n", "6"]


def test_sql_cannot_read_files_outside_the_store(tmp_path, any_store):
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    for query in (f"SELECT * FROM read_csv('{secret}')", f"SELECT * FROM '{secret}'",
                  f"SELECT * FROM read_text('{secret}')",
                  f"SELECT * FROM read_csv('{any_store.root}/../secret.csv')",
                  "SELECT * FROM glob('/etc/*')",
                  "SELECT * FROM read_parquet('https://example.com/x.parquet')"):
        res = _invoke("sql", query, "--store", any_store.root)
        assert isinstance(res.exception, CurateError), (query, res.output)
        assert "hunter2" not in res.output
        assert "reads the files of this store only" in str(res.exception), res.exception
    # while the store's own files stay readable, by path as through the views
    part = next(any_store.root.glob("ingest/*/examples-*.parquet"))
    res = _invoke("sql", f"SELECT count(*) AS n FROM read_parquet('{part}')", "--store",
                  any_store.root, "--format", "csv")
    assert res.output.splitlines() == ["n", "6"], res.output


def test_every_store_connection_is_locked_down(tmp_path, any_store):
    """DuckDB's own sandbox on Store.connect(): what a --where or --score expression
    could reach through a subquery is refused by the connection itself."""
    outside = tmp_path / "out.csv"
    con = any_store.connect()
    try:
        for sql in (f"COPY (SELECT 1) TO '{outside}'", f"SELECT * FROM read_csv('{outside}')",
                    "LOAD httpfs", f"ATTACH '{tmp_path / 'x.duckdb'}'"):
            with pytest.raises(duckdb.PermissionException):
                con.execute(sql)
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute("SET enable_external_access = true")
        assert con.execute("SELECT current_setting('enable_external_access'), "
                           "current_setting('autoload_known_extensions')").fetchone() \
            == (False, False)
        assert con.execute("SELECT count(*) FROM pairs").fetchone() == (6,)
    finally:
        con.close()
    assert not outside.exists()
    # a second connection to the same (cached) database instance opens fine
    a, b = any_store.connect(), any_store.connect()
    assert a.execute("SELECT count(*) FROM examples").fetchone() == \
        b.execute("SELECT count(*) FROM examples").fetchone() == (6,)
    a.close(), b.close()


INJECTION = "true); COPY (SELECT * FROM examples) TO '{out}'; SELECT (1"


def test_expressions_cannot_smuggle_a_statement(tmp_path, filled):
    from curate.export import export
    from curate.scoring import make_scorer, run_scorer
    from curate.selectors import select

    out = tmp_path / "stolen.csv"
    where = INJECTION.format(out=out)
    with pytest.raises(QueryError, match="not one SQL expression"):
        export(filled, tmp_path / "x.jsonl", where=where)
    with pytest.raises(CurateError, match="not one SQL expression"):
        select(filled, "random", "r", where=where, budget=2)
    with pytest.raises(CurateError, match="not one SQL expression"):
        select(filled, "topk", "t", score=f"1); COPY (SELECT 1) TO '{out}'; SELECT (1",
               budget=2)
    with pytest.raises(CurateError, match="not one SQL expression"):
        run_scorer(filled, make_scorer("heuristics", model=None), where=where)
    assert not out.exists()
    assert not (filled.root / "selections").exists()
    # one expression, even with a ';' inside a string, still works
    assert export(filled, tmp_path / "ok.jsonl", where="source <> 'a;b'").rows == 6


# ---------------------------------------------------------------- 2. names
BAD_NAMES = ["../evil", "a/b", "a\\b", "..", ".hidden", "a..b", "/abs", "", "x" * 101]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_selection_names_that_are_not_one_folder_are_refused(tmp_path, filled, name):
    from curate.selectors import select

    with pytest.raises(CurateError) as e:
        select(filled, "random", name, budget=2)
    assert "letters, digits, '.', '_' and '-'" in str(e.value)
    assert "no '/', '\\' or '..'" in str(e.value)
    assert not (filled.root / "selections").exists()
    assert not (tmp_path / "evil").exists() and not (filled.root / "evil").exists()


def test_cli_refuses_bad_names_with_exit_2(filled):
    r = _cli("select", "random", "--budget", "2", "--name", "../evil", "--store", filled.root)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: selection name '../evil'") and "fix: use letters" in r.stderr
    assert not (filled.root.parent / "evil").exists()


@pytest.mark.parametrize("name", ["../x", "a/b", ".x", "a..b"])
def test_run_and_selection_names_of_training_and_evaluation_are_refused(filled, name):
    from curate.finetune.evaluate import _run_config
    from curate.finetune.train import TrainConfig, finetune
    from curate.models import load_run_model
    from curate.scoring.influence import run_snapshots
    from curate.selectors.token_clean import _run_config as reference_config

    with pytest.raises(CurateError, match="selection name .* not usable as a folder"):
        finetune(filled, name, TrainConfig())
    with pytest.raises(CurateError, match="run id .* not usable as a folder"):
        finetune(filled, "some-selection", TrainConfig(), run_id=name)
    for read in (lambda: load_run_model(filled, name), lambda: _run_config(filled, name),
                 lambda: reference_config(filled, name), lambda: run_snapshots(filled, name, 2)):
        with pytest.raises(CurateError, match="run id .* not usable as a folder"):
            read()
    assert not (filled.root / "runs").exists()


def test_good_names_still_pass():
    from curate.safety import check_name

    for name in ("diverse-5pct", "a.b_c-1", "R2", "x" * 100):
        assert check_name(name) == name


# ---------------------------------------------------------------- 3. YAML and checkpoints
def test_recipe_with_a_python_tag_is_refused_and_never_run(tmp_path, filled):
    from curate.selectors import load_recipe

    marker = tmp_path / "pwned"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text("steps:\n  - select: {method: random}\n"
                      f"budget: !!python/object/apply:os.system [\"touch {marker}\"]\n")
    with pytest.raises(CurateError) as e:
        load_recipe(recipe)
    message = str(e.value)
    assert f"{recipe} line 3" in message and "!!python/object/apply:os.system" in message
    assert "safe loader" in message and "fix: use plain YAML" in message
    r = _cli("select", "--recipe", recipe, "--name", "x", "--store", filled.root)
    assert r.returncode == 2 and r.stderr.startswith("error:"), r.stderr
    assert not marker.exists()


def test_flow_config_with_a_python_tag_is_refused(tmp_path):
    from curate.cli import _flow_params

    marker = tmp_path / "pwned"
    config = tmp_path / "flow.yaml"
    config.write_text(f"store: !!python/object/apply:os.system [\"touch {marker}\"]\n")
    with pytest.raises(CurateError, match="safe loader"):
        _flow_params(None, config, None, None, None, None, None, None, None, None, False)
    assert not marker.exists()


def _python_sources():
    for folder in ("curate", "flows", "benchmarks"):
        yield from (ROOT / folder).rglob("*.py")


def test_every_yaml_and_torch_load_in_the_repo_is_safe():
    unsafe_yaml = re.compile(r"yaml\.(load|load_all|full_load|unsafe_load)\(|"
                             r"Loader\s*=\s*yaml\.(Loader|FullLoader|UnsafeLoader)")
    torch_loads = 0
    for path in _python_sources():
        text = path.read_text()
        assert not unsafe_yaml.search(text), path
        for m in re.finditer(r"torch\.load\(", text):
            call = text[m.start():text.index(")", m.start()) + 1]
            assert "weights_only=True" in call, (path, call)
            torch_loads += 1
        assert "pickle.load" not in text and "allow_pickle=True" not in text, path
    assert torch_loads >= 1  # the fine-tune checkpoint


def test_checkpoint_with_code_in_it_is_not_executed(tmp_path):
    import pickle

    from curate.finetune.train import _Run

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    run_dir = tmp_path / "run"
    (run_dir / "checkpoint").mkdir(parents=True)
    with open(run_dir / "checkpoint" / "state.pt", "wb") as f:
        pickle.dump({"step": 1, "weights": Evil()}, f, protocol=2)
    run = object.__new__(_Run)
    run.dir = run_dir
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        run._load_checkpoint()
    assert not marker.exists()


# ---------------------------------------------------------------- 4. sql error hints
def test_sql_error_hints_fit_the_error(tmp_path, filled):
    from curate.scoring import make_scorer, run_scorer

    run_scorer(filled, make_scorer("heuristics", model=None))
    syntax = _invoke("sql", "SELEC count(*) FROM examples", "--store", filled.root).exception
    assert isinstance(syntax, CurateError) and "syntax" in str(syntax)
    assert "examples, " not in str(syntax) and "views" not in str(syntax)

    table = str(_invoke("sql", "SELECT * FROM exampels", "--store", filled.root).exception)
    views = table.split("the views of this store are ")[1].split(", ")
    for view in ("examples", "pairs", "quarantine", "ingest_runs", "scores_heuristics",
                 "selections", "runs"):
        assert view in views, table
    assert "_curate" not in table

    scores = str(_invoke("sql", "SELECT * FROM scores_lm", "--store", filled.root).exception)
    assert "run `curate score lm` first" in scores

    column = str(_invoke("sql", "SELECT respons FROM pairs", "--store", filled.root).exception)
    assert "pairs has id, source, source_row, kind, prompt, response, turns" in column
    assert "the views of this store" not in column
    scored = str(_invoke("sql", "SELECT ifd FROM scores_heuristics", "--store",
                         filled.root).exception)
    assert "scores_heuristics has id, " in scored and "total_tokens" in scored

    other = str(_invoke("sql", "SELECT CAST('a' AS INT)", "--store", filled.root).exception)
    assert "Conversion Error" in other and "views" not in other


def test_sql_help_lists_every_view():
    from curate.scoring import SCORERS
    from curate.store import DERIVED_VIEWS, VIEWS

    res = _invoke("sql", "--help")
    text = " ".join(res.output.replace("│", " ").split())
    for view in [*VIEWS, *DERIVED_VIEWS, *(f"scores_{s}" for s in SCORERS)]:
        assert re.search(rf"\b{view}\b", text), view


# ---------------------------------------------------------------- 5. budgets as typed
def test_budget_examples_run_as_written_and_compact_token_budgets_parse(tmp_path, filled):
    import shlex

    from curate.selectors.base import Budget

    for text in ("2M tokens", "2Mtokens", "2M-tokens", "2m_tokens", "2M TOKENS"):
        assert (Budget.parse(text).kind, Budget.parse(text).value) == ("tokens", 2_000_000)
    with pytest.raises(CurateError, match="cannot read budget"):
        Budget.parse("2M apples")
    help_text = _invoke("select", "--help").output
    assert '--budget "2M tokens"' in help_text
    # every `curate ... --budget X` line of the README and the help splits into a budget
    # that parses (unquoted `2M tokens` would leave `tokens` as an extra argument)
    lines = [line for line in (ROOT / "README.md").read_text().splitlines()
             + help_text.splitlines() if "curate " in line and "--budget" in line]
    assert lines
    for line in lines:
        command = line[line.index("curate "):].split("#")[0].strip().rstrip("\\")
        words = shlex.split(command)  # `\` at the end: continued on the next line
        value = words[words.index("--budget") + 1]
        Budget.parse(value)
        after = words[words.index("--budget") + 2:]
        assert not after or after[0].startswith("-"), line


# ---------------------------------------------------------------- 6. --store at a file
def test_store_at_a_regular_file_is_a_clear_error_for_every_command(tmp_path):
    data = write_jsonl(tmp_path / "a.jsonl", RECS)
    somefile = tmp_path / "somefile"
    somefile.write_text("not a store\n")
    for path in (somefile, somefile / "sub"):
        with pytest.raises(StoreError, match="not a directory"):
            Store(path).require()
        with pytest.raises(StoreError, match="not a directory"):
            with Store(path).writer():
                pass
        with pytest.raises(StoreError, match="not a directory"):
            ingest(Store(path), [data])
    for args in (["ingest", data], ["stats"], ["sql", "SELECT 1"], ["selections"],
                 ["select", "random", "--budget", "2", "--name", "r"],
                 ["export", "--out", tmp_path / "o.jsonl"], ["score", "heuristics"]):
        r = _cli(*args, "--store", somefile)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith(f"error: store path {somefile} is a file, not a directory")
        assert "fix: point --store" in r.stderr and "Traceback" not in r.stderr
    assert somefile.read_text() == "not a store\n"


# ---------------------------------------------------------------- 7. fixes that run
def test_not_a_store_fix_is_a_command_that_runs(tmp_path):
    data = write_jsonl(tmp_path / "a.jsonl", RECS)
    missing = tmp_path / "new-store"
    with pytest.raises(StoreError) as e:
        Store(missing).require()
    command = re.search(r"\((curate [^)]*)\)", str(e.value)).group(1)
    assert command == f"curate ingest FILE --store {missing}"
    res = _invoke(*command.replace("FILE", str(data)).split()[1:])
    assert res.exit_code == 0, (res.output, res.exception)
    assert rows(Store(missing), "SELECT count(*) FROM examples") == [(6,)]


# ---------------------------------------------------------------- 8. units
def test_format_bytes_uses_binary_units():
    from curate.units import format_bytes

    assert format_bytes(4 * 2**20) == "4.0 MiB"  # --max-record-mb 4
    assert format_bytes(4.2e6) == "4.0 MiB"  # not "4.2 MB"
    assert [format_bytes(n) for n in (0, 1023, 1024, 1536, 2**20 - 1, 3 * 2**30)] == \
        ["0 B", "1023 B", "1.0 KiB", "1.5 KiB", "1.0 MiB", "3.0 GiB"]


def test_no_decimal_megabytes_are_printed_outside_ingest():
    decimal = re.compile(r"/\s*1e[369]\b.*\b[KMG]B\b|\b[KMG]B\)?\"")
    for path in (ROOT / "curate").rglob("*.py"):
        if "ingest" in path.parts:
            continue  # switched to curate.units by its owner
        for line in path.read_text().splitlines():
            if "f\"" in line or "f'" in line:
                assert not decimal.search(line), (path, line)
