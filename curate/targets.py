"""Targets: the examples a selection is aimed at, or a run is measured on.

A target is a selection, a source of the store (`source:NAME`, or the bare name when it
is not also a selection), or a file in any format `curate ingest` reads (ingested once
into a side store under `<store>/targets/`). Selectors (similarity, kmeans --strategy
target), scorers (influence) and evaluation all read targets through `load_target`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from curate.errors import CurateError
from curate.fingerprint import fingerprint
from curate.store import Store


@dataclass
class Target:
    name: str  # as the user gave it
    kind: str  # selection | source | file
    ids: list[str]
    messages: list[list[dict]]

    @property
    def fingerprint(self) -> str:
        return fingerprint("\n".join(sorted(self.ids)), 16)


def load_target(store: Store, target: str) -> Target:
    """The target's examples: a selection, a source (`source:NAME` or a bare name), or
    a file (ingested once into a side store under <store>/targets/)."""
    from curate.selection import list_selections

    store.require()
    kind, _, name = target.partition(":")
    if not name:
        kind, name = "", target
    selections = {s["name"] for s in list_selections(store)}
    con = store.connect()
    try:
        sources = {r[0] for r in con.execute("SELECT DISTINCT source FROM examples").fetchall()}
        if kind == "" and Path(name).exists() and name not in selections | sources:
            kind = "file"
        if kind == "":
            hits = [k for k, names in (("selection", selections), ("source", sources))
                    if name in names]
            if len(hits) > 1:
                raise CurateError(f"target {name!r} is both a selection and a source\n  fix: "
                                  f"write selection:{name} or source:{name}")
            kind = hits[0] if hits else ""
        if kind == "selection" and name in selections:
            sql = ("SELECT e.id, e.messages FROM examples e JOIN selection_members s "
                   "USING (id) WHERE s.selection = ? ORDER BY s.rank")
        elif kind == "source" and name in sources:
            sql = "SELECT id, messages FROM examples WHERE source = ? ORDER BY source_row, id"
        elif kind == "file":
            return _file_target(store, name)
        else:
            raise CurateError(
                f"no target {target!r}: not a selection, a source of the store, or a file\n"
                f"  fix: use one of the selections ({', '.join(sorted(selections)) or 'none'}), "
                f"a source (see `curate stats`), or a path")
        t = con.sql(sql, params=[name]).to_arrow_table()
    finally:
        con.close()
    if t.num_rows == 0:
        raise CurateError(f"target {target!r} has no examples")
    return Target(target, kind, t["id"].to_pylist(), t["messages"].to_pylist())


def _file_target(store: Store, path: str) -> Target:
    from curate.ingest import ingest

    side = Store(store.folder("targets") / re.sub(r"[^A-Za-z0-9._-]", "_", Path(path).name))
    ingest(side, [path])  # a second call skips the file by its hash
    con = side.connect()
    try:
        t = con.sql("SELECT id, messages FROM examples ORDER BY source, source_row, id"
                        ).to_arrow_table()
    finally:
        con.close()
    if t.num_rows == 0:
        raise CurateError(f"target file {path} has no valid examples\n  fix: see `curate sql "
                          f"\"SELECT * FROM quarantine\" --store {side.root}`")
    return Target(path, "file", t["id"].to_pylist(), t["messages"].to_pylist())
