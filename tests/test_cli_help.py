"""The command line explains itself: --version, an example in every --help, every
option's default, every SQL view named in `sql --help`, and tables that stay readable
at 80 columns."""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from curate import __version__
from curate.cli import app
from tests.conftest import single, write_jsonl

COMMANDS = sorted(typer.main.get_command(app).commands)


def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"},
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"curate {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_has_an_example_and_every_default(command):
    text = _help(command)
    assert re.search(rf"^\s*(│\s*)?curate {re.escape(command)}\b", text, re.M), \
        f"`curate {command} --help` shows no example"
    cmd = typer.main.get_command(app).commands[command]
    for p in cmd.params:
        if type(p).__name__ != "TyperOption" or p.required or p.name == "help":
            continue
        said = "default" in (p.help or "").lower()
        shown = isinstance(p.show_default, str) or (p.show_default and p.default is not None)
        assert said or shown, f"`curate {command} {p.opts[0]}` does not show its default"


def test_unset_and_off_defaults_are_spelled_out():
    text = _help("finetune")
    assert re.search(r"--max-steps.*\[default: \(not set\)\]", text)
    assert re.search(r"--json.*\[default: \(off\)\]", text)


def test_sql_help_lists_every_view():
    from curate.scoring import SCORERS
    from curate.store import DERIVED_VIEWS, VIEWS

    text = re.sub(r"[\s│]+", " ", _help("sql"))
    missing = [v for v in [*VIEWS, *DERIVED_VIEWS, *(f"scores_{s}" for s in SCORERS)]
               if not re.search(rf"\b{v}\b", text)]
    assert not missing, f"sql --help does not name {missing}"


def test_wide_tables_fold_into_records_at_80_columns(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"messages": single(f"q{i}", f"a{i}")}
                                               for i in range(3)])
    runner = CliRunner()
    store = str(tmp_path / "s")
    assert runner.invoke(app, ["ingest", str(data), "--store", store]).exit_code == 0
    wide = ", ".join(f"{i} AS column_number_{i}" for i in range(12))
    out = runner.invoke(app, ["sql", f"SELECT source_row, {wide} FROM examples ORDER BY "
                              "source_row", "--store", store], terminal_width=80).output
    # every column name whole on its own line, once per row, with its value beside it
    assert out.count("column_number_11") == 3
    assert re.search(r"column_number_11\s+11", out)
    assert "row 3" in out and max(len(line) for line in out.splitlines()) <= 80
    narrow = runner.invoke(app, ["sql", "SELECT source_row, 1 AS one FROM examples",
                                 "--store", store], terminal_width=80).output
    assert "row 1" not in narrow and "source_row" in narrow.splitlines()[1]
