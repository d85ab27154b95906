"""A saved selection: members with rank, gain and reason, what dedup dropped and why,
and a manifest (method, parameters, budget, input fingerprint, curate version, time).

    <store>/selections/<name>/manifest.json      the manifest, for people
                             /manifest.parquet   the same row, for the `selections` view
                             /members.parquet    selection, id, rank, gain, reason
                             /dropped.parquet    selection, id, duplicate_of, similarity, step
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.schema import SELECTION_DROPPED_SCHEMA, SELECTION_MEMBER_SCHEMA, SELECTION_SCHEMA

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class Selection:
    name: str
    method: str
    params: dict
    budget: str
    ids: list[str]
    gains: np.ndarray
    reasons: list[str]
    pool_size: int
    fingerprint: str
    pool_where: str | None = None
    tokens: int | None = None
    dropped: pa.Table | None = None  # id, duplicate_of, similarity, step
    recipe: str | None = None
    seconds: float = 0.0
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def manifest(self) -> dict:
        from curate import __version__

        return {"name": self.name, "method": self.method, "params": self.params,
                "budget": self.budget, "size": len(self.ids), "tokens": self.tokens,
                "pool_size": self.pool_size,
                "dropped": self.dropped.num_rows if self.dropped is not None else 0,
                "pool_where": self.pool_where, "fingerprint": self.fingerprint,
                "recipe": self.recipe, "curate_version": __version__,
                "created_at": self.created_at.isoformat(timespec="seconds"),
                "seconds": round(self.seconds, 3)}


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise CurateError(f"selection name {name!r} is not usable as a folder name\n  fix: "
                          "use letters, digits, '.', '_' and '-' (e.g. diverse-5pct)")
    return name


def save_selection(store, sel: Selection, overwrite: bool = False) -> Path:
    """Write the selection under the store lock; it appears whole (one rename) or not
    at all. An existing name is replaced only with `overwrite`."""
    check_name(sel.name)
    root = store.root / "selections"
    dest = root / sel.name
    with store.writer():
        if dest.exists() and not overwrite:
            raise CurateError(f"a selection named {sel.name!r} exists\n  fix: choose another "
                              "--name, or pass --overwrite to replace it")
        tmp = store.root / ".tmp" / f"selection-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        n = len(sel.ids)
        members = pa.Table.from_arrays(
            [pa.array([sel.name] * n, pa.string()), pa.array(sel.ids, pa.string()),
             pa.array(np.arange(1, n + 1), pa.int64()),
             pa.array(np.asarray(sel.gains, np.float64)), pa.array(sel.reasons, pa.string())],
            schema=SELECTION_MEMBER_SCHEMA)
        pq.write_table(members, tmp / "members.parquet", compression="zstd")
        if sel.dropped is not None and sel.dropped.num_rows:
            d = sel.dropped
            if "step" not in d.column_names:
                d = d.append_column("step", pa.array([sel.method] * d.num_rows, pa.string()))
            dropped = pa.Table.from_arrays(
                [pa.array([sel.name] * d.num_rows, pa.string()),
                 *(d[c].cast(SELECTION_DROPPED_SCHEMA.field(c).type)
                   for c in SELECTION_DROPPED_SCHEMA.names[1:])],
                schema=SELECTION_DROPPED_SCHEMA)
            pq.write_table(dropped, tmp / "dropped.parquet", compression="zstd")
        manifest = sel.manifest()
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        row = {**manifest, "params": json.dumps(sel.params, sort_keys=True),
               "created_at": sel.created_at}
        pq.write_table(pa.Table.from_pylist([row], schema=SELECTION_SCHEMA),
                       tmp / "manifest.parquet")
        root.mkdir(exist_ok=True)
        if dest.exists():
            old = store.root / ".tmp" / f"old-{uuid.uuid4().hex[:8]}"
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    store.rebuild_catalog()
    return dest


def list_selections(store) -> list[dict]:
    """Manifests of the saved selections, newest first."""
    root = store.require().root / "selections"
    out = [json.loads(p.read_text()) for p in root.glob("*/manifest.json")] \
        if root.is_dir() else []
    return sorted(out, key=lambda m: m["created_at"], reverse=True)


def delete_selection(store, name: str) -> None:
    dest = store.require().root / "selections" / check_name(name)
    with store.writer():
        if not dest.is_dir():
            raise CurateError(f"no selection named {name!r}\n  fix: list them with "
                              "`curate selections`")
        trash = store.root / ".tmp" / f"old-{uuid.uuid4().hex[:8]}"
        trash.parent.mkdir(exist_ok=True)
        os.replace(dest, trash)
        shutil.rmtree(trash, ignore_errors=True)
    store.rebuild_catalog()
