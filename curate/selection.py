"""A saved selection: members with rank, gain and reason, what dedup dropped and why,
and a manifest (method, parameters, budget, input fingerprint, curate version, time).

    <store>/selections/<name>/manifest.json      the manifest, for people
                             /manifest.parquet   the same row, for the `selections` view
                             /members.parquet    selection, id, rank, gain, reason
                             /dropped.parquet    selection, id, duplicate_of, similarity, step
                             /masks.parquet      selection, id, turns, tokens, reason: loss
                                                 masks of members (token cleaning, traces)
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.schema import (SELECTION_DROPPED_SCHEMA, SELECTION_MASK_SCHEMA,
                           SELECTION_MEMBER_SCHEMA, SELECTION_SCHEMA)
from curate.store import publish

# a selection's loss masks without the leading `selection` column (what selectors set
# as `masks_`): see SELECTION_MASK_SCHEMA and curate/tokens.py for the contract
MASK_SCHEMA = pa.schema(list(SELECTION_MASK_SCHEMA)[1:])


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
    masks: pa.Table | None = None  # id, turns, tokens, reason (MASK_SCHEMA); members only
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def manifest(self) -> dict:
        from curate import __version__

        return {"name": self.name, "method": self.method, "params": self.params,
                "budget": self.budget, "size": len(self.ids), "tokens": self.tokens,
                "pool_size": self.pool_size,
                "dropped": self.dropped.num_rows if self.dropped is not None else 0,
                "masked": self.masks.num_rows if self.masks is not None else 0,
                "pool_where": self.pool_where, "fingerprint": self.fingerprint,
                "recipe": self.recipe, "curate_version": __version__,
                "created_at": self.created_at.isoformat(timespec="seconds"),
                "seconds": round(self.seconds, 3)}


def check_name(name: str) -> str:
    """`name` when it is safe as a folder under selections/ (see curate.safety)."""
    from curate.safety import check_name as check

    return check(name, "selection name", "diverse-5pct", max_length=100)


def save_selection(store, sel: Selection, overwrite: bool = False) -> Path:
    """Write the selection under the store lock; it appears whole (one rename) or not
    at all. An existing name is replaced only with `overwrite`."""
    check_name(sel.name)
    root = store.folder("selections")
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
        masks = check_masks(sel.masks, sel.ids)
        if masks is not None and masks.num_rows:
            pq.write_table(pa.Table.from_arrays(
                [pa.array([sel.name] * masks.num_rows, pa.string()), *masks.columns],
                schema=SELECTION_MASK_SCHEMA), tmp / "masks.parquet", compression="zstd")
        manifest = sel.manifest()
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        row = {**manifest, "params": json.dumps(sel.params, sort_keys=True),
               "created_at": sel.created_at}
        pq.write_table(pa.Table.from_pylist([row], schema=SELECTION_SCHEMA),
                       tmp / "manifest.parquet")
        publish(tmp, dest, old=store.root / ".tmp" / f"old-{uuid.uuid4().hex[:8]}")
    store.rebuild_catalog()
    return dest


def make_masks(ids: list[str], turns: list | None = None, tokens: list | None = None,
               reasons: list | None = None) -> pa.Table:
    """A mask table (MASK_SCHEMA) from per-id lists; None entries mean "all trained"."""
    n = len(ids)
    tokens = None if tokens is None else \
        [None if t is None else np.asarray(t).astype(np.uint8).tolist() for t in tokens]
    return pa.Table.from_arrays(
        [pa.array(ids, pa.string()),
         pa.array(turns if turns is not None else [None] * n, MASK_SCHEMA.field("turns").type),
         pa.array(tokens if tokens is not None else [None] * n, MASK_SCHEMA.field("tokens").type),
         pa.array(reasons if reasons is not None else [None] * n, pa.string())],
        schema=MASK_SCHEMA)


def check_masks(masks: pa.Table | None, ids: list[str]) -> pa.Table | None:
    """The masks cast to MASK_SCHEMA, rows without any mask dropped; fails on ids that
    are not members, repeated ids, or token entries other than 0/1."""
    if masks is None:
        return None
    missing = [c for c in MASK_SCHEMA.names if c not in masks.column_names and c != "reason"]
    if "id" in missing or ("turns" in missing and "tokens" in missing):
        raise CurateError(f"selection masks need columns id and turns and/or tokens, got "
                          f"{masks.column_names}\n  fix: build them with "
                          "curate.selection.make_masks")
    for c in MASK_SCHEMA.names:
        if c not in masks.column_names:
            masks = masks.append_column(MASK_SCHEMA.field(c), pa.nulls(masks.num_rows,
                                                                       MASK_SCHEMA.field(c).type))
    masks = masks.select(MASK_SCHEMA.names).cast(MASK_SCHEMA)
    has = np.logical_or(masks["turns"].is_valid().to_numpy(zero_copy_only=False),
                        masks["tokens"].is_valid().to_numpy(zero_copy_only=False))
    masks = masks.filter(pa.array(has))
    mask_ids = masks["id"].to_pylist()
    members = set(ids)
    outside = [i for i in mask_ids if i not in members]
    if outside:
        raise CurateError(f"{len(outside)} masked id(s) are not members of the selection "
                          f"(e.g. {outside[0]})\n  fix: give masks only for selected ids")
    if len(set(mask_ids)) != len(mask_ids):
        raise CurateError("selection masks repeat an id\n  fix: one mask row per example")
    flat = masks["tokens"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    if len(flat) and flat.max() > 1:
        raise CurateError("token masks hold values other than 0 and 1\n  fix: use 1 = "
                          "trained, 0 = masked")
    return masks


def load_masks(store, name: str) -> pa.Table | None:
    """The saved masks of selection `name` (MASK_SCHEMA), or None when it has none."""
    path = store.folder("selections") / check_name(name) / "masks.parquet"
    if not path.is_file():
        return None
    return pq.read_table(path).select(MASK_SCHEMA.names).cast(MASK_SCHEMA)


def merge_masks(first: pa.Table | None, second: pa.Table | None) -> pa.Table | None:
    """Masks of two steps combined per id: a field set by both is ANDed (a token mask
    pair must have equal lengths), a field set by one is kept, reasons are joined."""
    if first is None or not first.num_rows:
        return second
    if second is None or not second.num_rows:
        return first
    rows: dict[str, dict] = {}
    for table in (first, second):
        for row in table.select(MASK_SCHEMA.names).to_pylist():
            old = rows.get(row["id"])
            if old is None:
                rows[row["id"]] = row
                continue
            for kind in ("turns", "tokens"):
                a, b = old[kind], row[kind]
                if a is not None and b is not None:
                    if len(a) != len(b):
                        raise CurateError(
                            f"two steps give example {row['id']} {kind} masks of different "
                            f"lengths ({len(a)} and {len(b)})\n  fix: build both with the "
                            "same tokenizer (mask_model), or mask in one step only")
                    b = [int(x and y) if kind == "tokens" else bool(x and y)
                         for x, y in zip(a, b)]
                old[kind] = b if b is not None else a
            old["reason"] = "; ".join(r for r in (old["reason"], row["reason"]) if r) or None
    return pa.Table.from_pylist(list(rows.values()), schema=MASK_SCHEMA)


def list_selections(store) -> list[dict]:
    """Manifests of the saved selections, newest first."""
    root = store.require().folder("selections")
    out = [json.loads(p.read_text()) for p in root.glob("*/manifest.json")] \
        if root.is_dir() else []
    return sorted(out, key=lambda m: m["created_at"], reverse=True)


def delete_selection(store, name: str) -> None:
    dest = store.require().folder("selections") / check_name(name)
    with store.writer():
        if not dest.is_dir():
            raise CurateError(f"no selection named {name!r}\n  fix: list them with "
                              "`curate selections`")
        trash = store.root / ".tmp" / f"old-{uuid.uuid4().hex[:8]}"
        trash.parent.mkdir(exist_ok=True)
        os.replace(dest, trash)
        shutil.rmtree(trash, ignore_errors=True)
    store.rebuild_catalog()
