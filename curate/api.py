"""The Python API: one object per store, with the CLI's verbs as methods.

    import curate
    store = curate.Store.open("my-store")             # or create it
    store.ingest("data/*.jsonl")                       # the CLI's summary, as a report
    store.score("embed", text="all")
    sel = store.select("kmeans", budget="5%", name="diverse")
    store.sql("SELECT source, count(*) FROM examples GROUP BY 1").pl()
    store.examples(selection="diverse").to_polars()
    store.export("diverse", "train.jsonl", format="messages")
    ds = store.to_hf("diverse")                        # a datasets.Dataset

Every method is the library call the CLI command makes, with the same checks, errors
(`CurateError` with a `fix:` line), caching and resumption. Query results are lazy:
`sql` and `examples` return a `Query`, which runs when you ask for rows (`.pl()`,
`.arrow()`, `.df()`, `.fetchall()`) on a connection opened for that call, so holding
one never blocks a writer. This module sits above the stages and nothing in the
library imports it.
"""

from __future__ import annotations

import glob
from pathlib import Path

from curate.errors import CurateError
from curate.store import Store as _CoreStore


def _query_failed(con, sql: str, exc: Exception) -> CurateError:
    """The error of a failed query, with the fix `curate sql` gives for it."""
    from curate.scoring import SCORERS
    from curate.store import sql_hint

    return CurateError(f"query failed: {exc}\n  fix: {sql_hint(con, sql, exc, SCORERS)}")


class Query:
    """A SQL query over a store's views, run when rows are asked for."""

    def __init__(self, core: _CoreStore, sql: str):
        self.core = core
        self.sql = sql

    def _run(self, fetch):
        import duckdb

        con = self.core.connect()
        try:
            try:
                return fetch(con.sql(self.sql))
            except duckdb.Error as exc:
                raise _query_failed(con, self.sql, exc) from None
        finally:
            con.close()

    def pl(self):
        """The rows as a polars DataFrame."""
        return self._run(lambda rel: rel.pl())

    to_polars = pl

    def arrow(self):
        """The rows as a pyarrow Table."""
        return self._run(lambda rel: rel.to_arrow_table())

    to_arrow = arrow

    def df(self):
        """The rows as a pandas DataFrame (needs pandas)."""
        return self._run(lambda rel: rel.df())

    to_pandas = df

    def fetchall(self) -> list[tuple]:
        return self._run(lambda rel: rel.fetchall())

    def __len__(self) -> int:
        return Query(self.core, f"SELECT count(*) FROM ({self.sql})").fetchall()[0][0]

    def __repr__(self) -> str:
        return f"Query({self.sql!r})"


def _select_words():
    """How `Store.select` spells a selection's parts, for parse_selection's messages."""
    from curate.selectors import SpecWords

    return SpecWords(name_fix="pass name=, e.g. name='diverse-5pct'", method="a method",
                     recipe="recipe=", either_fix="e.g. store.select('kmeans', budget='5%', "
                     "name='diverse')", show_spec=False)


class Store:
    """A curate store (see the module docstring). `Store.open(path)` opens it, creating
    an empty store there when `create` is true and the path is new or empty."""

    def __init__(self, path: str | Path | None = None):
        self.core = _CoreStore(path)

    @classmethod
    def open(cls, path: str | Path | None = None, create: bool = True) -> "Store":
        store = cls(path)
        if not store.core.exists:
            if not create:
                store.core.require()  # the "not a store" error, with its fix
            with store.core.writer():
                pass  # makes the store and its (empty) catalog
        return store

    @property
    def root(self) -> Path:
        return self.core.root

    def __repr__(self) -> str:
        return f"curate.Store({str(self.root)!r})"

    # ------------------------------------------------------------------ stages
    def ingest(self, *paths: str | Path, format: str = "auto", source: str | None = None,
               mapping: dict[str, str] | str | None = None, force: bool = False,
               engine=None, **options):
        """Ingest files, folders or glob patterns (`curate ingest`); returns the
        IngestReport (per-file counts, quarantine, refused files)."""
        from curate.ingest import ingest

        if not paths:
            raise CurateError("ingest needs at least one path\n  fix: e.g. "
                              "store.ingest('data/*.jsonl')")
        files: list[str] = []
        for p in map(str, paths):
            if glob.has_magic(p):
                matched = sorted(glob.glob(p, recursive=True))
                if not matched:
                    raise CurateError(f"no file matches {p!r}\n  fix: check the pattern "
                                      "and the working directory")
                files += matched
            else:
                files.append(p)
        return ingest(self.core, files, format=format, source=source, mapping=mapping,
                      force=force, engine=engine, **options)

    def score(self, scorer: str, *, where: str | None = None, engine=None, progress=None,
              **options):
        """Score every example not yet scored by this configuration (`curate score`);
        options are the scorer's (e.g. text="all", model=..., target=...)."""
        from curate.finetune import prepare_scorer
        from curate.scoring import run_scorer, scorer_from_spec

        sc, where = scorer_from_spec(self.core.require(), {**options, "name": scorer,
                                                           "where": where})
        prepare_scorer(self.core, sc, progress)
        return run_scorer(self.core, sc, progress=progress, where=where, engine=engine)

    def select(self, method: str | None = None, budget: str | int | None = None,
               name: str | None = None, *, recipe: str | Path | None = None,
               where: str | None = None, embed: str | None = None, overwrite: bool = False,
               **params):
        """Run a selector with its options as keywords (`curate select METHOD`), or a
        recipe file (`recipe=`, `curate select --recipe`), and save the result as
        selection `name`; returns the Selection. A recipe is a path or a packaged recipe's
        name (`recipe="dedup"`)."""
        from curate.selectors import parse_selection

        spec = parse_selection({"name": name, "method": method, "recipe": recipe,
                                "budget": None if budget is None else str(budget),
                                "where": where, "embed": embed, "params": params},
                               _select_words())
        return spec.run(self.core.require(), overwrite=overwrite)

    def export(self, selection: str | None, out: str | Path, format: str = "jsonl",
               where: str | None = None):
        """Write a selection's examples (all of them for None) to `out` (`curate export`)."""
        from curate.export import export

        return export(self.core.require(), out, format=format, selection=selection, where=where)

    # ------------------------------------------------------------------ reading
    def sql(self, query: str) -> Query:
        """A query over the store's views (`curate sql`), run lazily: `.pl()`, `.arrow()`,
        `.df()`, `.fetchall()`. Queries only, as `curate sql` takes them."""
        import duckdb

        from curate.safety import check_read_only

        self.core.require()
        try:
            check_read_only(query)
        except duckdb.Error as exc:  # a syntax error: the hint `curate sql` gives
            con = self.core.connect()
            try:
                raise _query_failed(con, query, exc) from None
            finally:
                con.close()
        return Query(self.core, query)

    def examples(self, selection: str | None = None, where: str | None = None) -> Query:
        """The stored examples (a selection's, in its rank order), as a lazy Query."""
        from curate.export import export_query

        return Query(self.core, export_query(self.core.require(), selection, where))

    def selections(self) -> list[dict]:
        """The saved selections' manifests (`curate selections`)."""
        from curate.selection import list_selections

        return list_selections(self.core.require())

    def to_hf(self, selection: str | None = None, where: str | None = None):
        """The examples (a selection's, in rank order) as a `datasets.Dataset`."""
        try:
            import datasets
        except ImportError:
            raise CurateError("to_hf needs the `datasets` package\n  fix: pip install "
                              "datasets") from None
        return datasets.Dataset(self.examples(selection, where).arrow())
