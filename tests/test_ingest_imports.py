"""The modules of curate.ingest import one another one way only: no import cycle.
Imports inside functions count too (a lazy import only hides a cycle), and so do
relative imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "curate.ingest"
FOLDER = Path(__file__).resolve().parents[1] / "curate" / "ingest"


def _module(path: Path) -> str:
    return PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"


def _imported(path: Path, modules: set[str]) -> set[str]:
    """The package's modules `path` imports anywhere in it (`from curate.ingest import
    x` names the submodule x when there is one, else the package itself)."""
    is_package = path.stem == "__init__"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                parts = _module(path).split(".")
                parts = parts[: len(parts) - node.level + (1 if is_package else 0)]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                     for a in node.names]
        else:
            continue
        for name in names:
            # `import curate.ingest.fast.x` or the like: the longest module it is in
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out - {_module(path)}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(FOLDER.glob("*.py"))
    modules = {_module(p) for p in paths}
    return {_module(p): _imported(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    done: set[str] = set()
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in stack:
            return stack[stack.index(node):] + [node]
        if node in done:
            return None
        stack.append(node)
        for child in sorted(graph.get(node, ())):
            if cycle := visit(child):
                return cycle
        stack.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        if cycle := visit(node):
            return cycle
    return None


def test_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_ingest_imports_have_no_cycle():
    graph = import_graph()
    assert len(graph) > 1 and any(graph.values())  # the parse found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in curate.ingest: " + " -> ".join(cycle)
