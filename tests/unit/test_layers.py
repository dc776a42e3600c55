"""The layers point one way, and no module imports itself back through another.

Read from the source with ``ast`` (every import counts: top-level, lazy inside a function,
and under ``TYPE_CHECKING``), so a shortcut taken anywhere shows here. The rules, lowest first:

- ``worker.domain``: the shared vocabulary; imports no other project module.
- ``worker.wire`` and ``worker.settings``: the wire format and the one ``Settings``; only the domain.
- ``worker.storage``: all SQL; the domain and the wire, never retrieval, core or settings.
- ``worker.retrieval``: ranking and deciding; the storage *interfaces* only (never a store).
- ``worker.core``: the pipeline, encoders, lifecycle; retrieval and the storage interfaces,
  never settings, observability, the concrete store or the local stack.
- Everything else (``worker.configs``, ``worker.adapter``, ``worker.cli``, ``worker.local``,
  ``worker.observability``, ``trainer``) composes the layers below and is imported by none of them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("worker", "trainer")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join([*base, node.module] if node.module else base)
            elif node.module:
                # ``from worker.storage import interfaces`` imports a module, not a name.
                yield node.module
                yield from (f"{node.module}.{alias.name}" for alias in node.names)


def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {module_name(p): p for p in files}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges[name] = {m for m in imported(path) if m in modules and m != name}
    return edges


def under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


TOP = ("worker.configs", "worker.adapter", "worker.cli", "worker.local", "worker.observability", "worker.logs",
       "worker.app", "worker.console", "trainer")  # fmt: skip

RULES: dict[str, tuple[str, ...]] = {
    # layer -> what it must never import
    "worker.domain": ("worker.wire", "worker.settings", "worker.storage", "worker.retrieval", "worker.core", *TOP),
    "worker.wire": ("worker.settings", "worker.storage", "worker.retrieval", "worker.core", *TOP),
    "worker.settings": ("worker.wire", "worker.storage", "worker.retrieval", "worker.core", *TOP),
    "worker.storage": ("worker.settings", "worker.retrieval", "worker.core", *TOP),
    "worker.retrieval": ("worker.settings", "worker.core", *TOP),
    "worker.core": ("worker.settings", *TOP),
}


def test_every_layer_imports_only_the_layers_below_it() -> None:
    edges = graph()
    broken = sorted(
        f"{source} imports {target}"
        for source, targets in edges.items()
        for layer, forbidden in RULES.items()
        if under(source, layer)
        for target in targets
        if under(target, *forbidden)
    )
    assert broken == []


def test_retrieval_and_core_reach_storage_only_through_its_interfaces() -> None:
    edges = graph()
    allowed = {"worker.storage.interfaces"}
    broken = sorted(
        f"{source} imports {target}"
        for source, targets in edges.items()
        if under(source, "worker.retrieval", "worker.core")
        for target in targets
        if under(target, "worker.storage") and target not in allowed and target != "worker.storage"
    )
    # ``worker.storage`` itself (the package) would be the concrete Store.
    concrete = sorted(
        f"{s} imports worker.storage"
        for s, ts in edges.items()
        if under(s, "worker.retrieval", "worker.core") and "worker.storage" in ts
    )
    assert broken == [] and concrete == []


def test_there_is_no_import_cycle() -> None:
    edges = graph()
    # Packages' __init__ modules re-export their children; an edge into one's own package is not a cycle.
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_checker_sees_a_lazy_import() -> None:
    # The rules are only worth something if an import inside a function counts too.
    tree = ast.parse("def f():\n    from worker.settings import Settings\n")
    found = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert found == ["worker.settings"]
