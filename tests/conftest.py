"""Shared fixtures: tiny files written per test, and the real corpora when present."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT.parent / "shared" / "corpora"
DATA = ROOT / "data"


def corpora_path(*parts: str) -> Path:
    """A file of ../shared/corpora, or skip the test with the reason."""
    path = CORPORA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real corpora not found at {CORPORA} (they live in ../shared/corpora)")
    return path


def write_jsonl(path: Path, records: list, compress: str | None = None) -> Path:
    data = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()
    if compress == "gzip":
        path.write_bytes(gzip.compress(data))
    elif compress == "zstd":
        import zstandard

        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        path.write_bytes(data)
    return path


@pytest.fixture
def store(tmp_path):
    from curate.store import Store

    return Store(tmp_path / "store")


def rows(store, sql: str) -> list[tuple]:
    con = store.connect()
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()
