"""Guards for what a user types that reaches the file system or SQL: names that become
folders, queries given to `curate sql`, and SQL expressions (`--where`, `--score`, ...)
spliced into the tool's own queries.

The connections themselves are locked down by `Store.connect()` (no files outside the
store, no extensions, no setting changes); these checks refuse the rest with a message
that says what is allowed: statements other than queries, and expressions that would
smuggle in a second statement.
"""

from __future__ import annotations

import re

from curate.errors import CurateError, QueryError

NAME_CHARACTERS = ("letters, digits, '.', '_' and '-', starting with a letter or digit "
                   "(no '/', '\\' or '..')")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_name(name: str, what: str = "selection name", example: str = "diverse-5pct",
               max_length: int = 100) -> str:
    """`name` when it is safe as one folder name inside the store, else a CurateError
    naming the allowed characters: no path separators, no `..`, no leading dot."""
    text = name if isinstance(name, str) else ""
    if not _NAME.match(text) or ".." in text or len(text) > max_length:
        raise CurateError(
            f"{what} {name!r} is not usable as a folder name\n  fix: use {NAME_CHARACTERS}, "
            f"at most {max_length} characters (e.g. {example})")
    return name


# what `curate sql` runs: queries only (DESCRIBE, SHOW, SUMMARIZE, WITH, FROM and VALUES
# parse as SELECT); EXPLAIN when what it explains is a query
_ALLOWED = ("SELECT", "EXPLAIN")
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(?:ANALY[SZ]E\s+)?(?:\([^)]*\)\s*)?", re.I)
_WHAT = {
    "COPY": "COPY reads or writes files", "EXPORT": "EXPORT DATABASE writes files",
    "ATTACH": "ATTACH opens another database", "DETACH": "DETACH changes the catalog",
    "LOAD": "INSTALL / LOAD add extensions", "SET": "SET / RESET / USE change settings",
    "PRAGMA": "PRAGMA can change settings", "CALL": "CALL runs procedures",
    "CREATE": "CREATE changes the catalog", "DROP": "DROP changes the catalog",
    "ALTER": "ALTER changes the catalog", "INSERT": "INSERT writes rows",
    "UPDATE": "UPDATE writes rows", "DELETE": "DELETE writes rows",
    "TRANSACTION": "transactions are not needed for queries",
    "VACUUM": "VACUUM writes the database", "ANALYZE": "ANALYZE writes statistics",
}
READ_ONLY_FIX = ("run a query: SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE or EXPLAIN; "
                 "to save rows use `curate sql QUERY --format csv > FILE` or `curate export`")


def check_read_only(sql: str) -> None:
    """Refuse anything but queries (QueryError), before DuckDB runs a statement of it.
    A syntax error propagates as DuckDB's ParserException."""
    import duckdb

    statements = duckdb.extract_statements(sql)
    if not statements:
        raise QueryError("no SQL statement given\n  fix: e.g. curate sql "
                         "\"SELECT source, count(*) FROM examples GROUP BY 1\"")
    for statement in statements:
        kind = statement.type.name
        text = " ".join(statement.query.split())
        if kind == "EXPLAIN" and _explains_a_query(statement.query):
            continue
        if kind not in _ALLOWED or kind == "EXPLAIN":
            why = _WHAT.get(kind, f"{kind} statements are not queries")
            if kind == "EXPLAIN":
                why = "EXPLAIN ANALYZE runs what it explains, and that is not a query"
            shown = text if len(text) <= 60 else text[:57] + "..."
            raise QueryError(f"curate sql is read-only: refused {shown!r} ({why})\n  fix: "
                             + READ_ONLY_FIX)


def _explains_a_query(sql: str) -> bool:
    import duckdb

    m = _EXPLAIN.match(sql)
    if not m:
        return False
    try:
        inner = duckdb.extract_statements(sql[m.end():])
    except duckdb.Error:
        return False
    return len(inner) == 1 and inner[0].type.name == "SELECT"


def check_expression(expr: str, what: str = "the --where filter") -> str:
    """`expr` when it is one SQL expression: spliced into a query it must not end that
    query and start another (`1); COPY ...`). Syntax errors are left to the query
    itself, whose error names the position."""
    import duckdb

    try:
        statements = duckdb.extract_statements(f"SELECT ({expr})")
    except duckdb.Error:
        return expr
    if len(statements) != 1 or statements[0].type.name != "SELECT":
        raise QueryError(f"{what} {expr!r} is not one SQL expression (it holds a ';' that "
                         "starts another statement)\n  fix: give a single expression, e.g. "
                         "\"kind = 'instruction' AND turns <= 4\"")
    return expr
