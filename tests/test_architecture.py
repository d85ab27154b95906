"""The import graph: every module imports only its own layer and the layers below it
(see README, Architecture). Imports inside functions count too: a lazy import is still
a call into that layer."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# low to high; a module is in the layer of its longest matching prefix
LAYERS = [
    ("core", ("curate", "curate.errors", "curate.units", "curate.safety", "curate.schema",
              "curate.store", "curate.engine", "curate.chat", "curate.selection",
              "curate.models", "curate.tokens", "curate.fingerprint", "curate.ngrams")),
    ("ingest", ("curate.ingest",)),
    ("targets", ("curate.targets",)),
    ("scoring", ("curate.scoring",)),
    ("selectors", ("curate.selectors",)),
    ("finetune", ("curate.finetune",)),
    ("outputs", ("curate.export", "curate.stats", "curate.verify", "curate.report")),
    ("interfaces", ("curate.api", "curate.cli", "flows")),
]

def layer(module: str) -> int:
    best, level = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, level = len(p), i
    assert level is not None, f"module {module} is in no layer: add it to LAYERS"
    return level


def module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def upward() -> set[tuple[str, str]]:
    found = set()
    for path in sorted([*(ROOT / "curate").rglob("*.py"), *(ROOT / "flows").rglob("*.py")]):
        here = layer(module_of(path))
        for name in imports(path):
            if name.split(".")[0] in ("curate", "flows") and layer(name) > here:
                found.add((str(path.relative_to(ROOT)), name))
    return found


def test_no_import_runs_up_a_layer():
    found = sorted(upward())
    assert not found, "imports that run up a layer (move the shared code down instead):\n" + \
        "\n".join(f"  {f} imports {m}" for f, m in found)


def test_the_store_owns_its_layout():
    """Stages ask the store for its folders (`store.folder(kind, ...)`), so no library
    module builds `<root>/<folder>` paths itself."""
    import re

    from curate.store import FOLDERS, Store

    by_hand = re.compile(r'\.root / "(' + "|".join(FOLDERS) + r')"')
    found = [f"{p.relative_to(ROOT)}:{n}" for p in
             sorted([*(ROOT / "curate").rglob("*.py"), *(ROOT / "flows").rglob("*.py")])
             if p != ROOT / "curate" / "store.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if by_hand.search(line)]
    assert not found, "store folders joined by hand (use store.folder):\n  " + "\n  ".join(found)
    store = Store(ROOT / "no-such-store")
    assert store.folder("runs", "r1") == store.root / "runs" / "r1"
    import pytest

    with pytest.raises(ValueError, match="no store folder 'model'"):
        store.folder("model")
