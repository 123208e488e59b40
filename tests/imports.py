"""The imports between a tree's own modules, read from their source (``ast``), and the
cycles among them: for the layering tests of ``gateway/`` and ``bench/``.

Every import statement counts, wherever it stands: at the top, inside a function,
under ``if TYPE_CHECKING:``. A cycle is a set of modules each reachable from every
other through such imports (a strongly connected component of more than one).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path


def module_names(root: Path, top: str | None = None) -> dict[str, Path]:
    """Each module under ``root`` by its dotted name; ``top`` prefixes the names (a
    package), None names them from ``root`` itself (a folder of scripts, which import
    each other by top-level names: ``root/rows/base.py`` is ``rows.base``)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and all(part.isidentifier() for part in parts) or top and not parts:
            found[".".join(([top] if top else []) + parts)] = path
    return found


def imported_names(path: Path) -> list[tuple[str, int]]:
    """(module, level) of every import in ``path``, with the names a ``from`` import
    takes as ``module.name`` candidates too (``from rows import codex``: a module)."""
    out: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if base:
                out.append((base, node.level))
            out += [(f"{base}.{a.name}" if base else a.name, node.level) for a in node.names]
    return out


def absolute(importer: str, module: str, level: int, is_package: bool) -> str:
    """``module`` as imported by ``importer`` with ``level`` leading dots."""
    if not level:
        return module
    parts = importer.split(".") if importer else []
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def edges(modules: dict[str, Path], alias: str | None = None) -> dict[str, set[str]]:
    """Which of ``modules`` each of them imports (itself excluded): the module named
    and the packages above it that are among ``modules``. ``alias`` is another name of
    the tree's root that imports may use (``bench.x`` for the scripts' ``x``)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = path.name == "__init__.py"
        targets = set()
        for module, level in imported_names(path):
            target = absolute(name, module, level, package)
            if alias and (target == alias or target.startswith(alias + ".")):
                target = target[len(alias) + 1 :]
            parts = target.split(".")
            targets |= {m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1))}
        graph[name] = {m for m in targets if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: each strongly connected component of more than
    one module, sorted (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)
