"""bench/ has no import cycle: no two of its modules import each other, directly or
through others, counting imports under ``if TYPE_CHECKING:`` and inside functions.

The scripts run as ``python bench/run.py``, so bench/ is on sys.path and its modules
import each other by top-level names (``harness``, ``rows.base``); tests import them as
``bench.x``. The checker reads every ``bench/**/*.py`` with ``ast`` (nothing is
imported), resolves the imports of bench's own modules in all three forms (top-level,
``bench.``-prefixed, relative), and searches the graph for strongly connected parts.
Run as a script, it prints the graph and the cycles: ``python tests/unit/test_bench_layout.py``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def modules(root: Path) -> dict[str, Path]:
    """Every module under ``root`` by the dotted name a script in ``root`` imports it
    by: ``root/x.py`` is ``x``, ``root/rows/base.py`` is ``rows.base``, and
    ``root/rows/__init__.py`` is ``rows``."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts and all(part.isidentifier() for part in parts):
            found[".".join(parts)] = path
    return found


def targets(name: str, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that importing the dotted ``name`` loads: the module
    itself and the packages above it (``bench.`` is the folder itself, a namespace)."""
    if name == "bench" or name.startswith("bench."):
        name = name[len("bench.") :]
    parts = name.split(".")
    return {m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in known}


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that module ``name`` (at ``path``) imports, anywhere in
    its text."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found |= targets(alias.name, known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = package.split(".") if package else []
                up = up[: len(up) + 1 - node.level]  # level 1: this package; 2: its parent
                base = ".".join([*up, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            if base:
                found |= targets(base, known)
            for alias in node.names:  # `from rows import codex`: codex may be a module
                found |= targets(f"{base}.{alias.name}" if base else alias.name, known)
    found.discard(name)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of ``root`` it imports."""
    known = modules(root)
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The graph's cycles, as its strongly connected parts of two modules or more
    (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part: list[str] = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                part.append(top)
                if top == node:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def test_bench_has_no_import_cycle() -> None:
    edges = graph(BENCH)
    # The checker sees the real imports (a checker that resolves nothing finds no cycle).
    assert {"harness", "report", "rows.base", "rows.identity"} <= edges["run"]
    assert "rows.base" in edges["rows.codex"]
    assert "rows.identity" in edges["instructions"]  # inside a function
    assert cycles(edges) == []


def test_no_row_imports_the_driver() -> None:
    edges = graph(BENCH)
    assert [name for name, imported in edges.items() if "run" in imported] == []


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.mark.parametrize(
    "files",
    [
        # the old shape: a row names the driver's type for its annotations only
        {
            "run.py": "import row\n",
            "row.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from run import Bench\n"
            ),
        },
        {"a.py": "import bench.b\n", "b.py": "def f():\n    from bench.a import x\n"},
        {
            "pkg/__init__.py": "",
            "pkg/m.py": "from . import n\n",
            "pkg/n.py": "from .m import y\n",
        },
        {"pkg/__init__.py": "", "pkg/m.py": "import top\n", "top.py": "from pkg import m\n"},
    ],
    ids=["type-checking", "bench-prefix", "relative", "package-member"],
)
def test_the_checker_finds_a_two_module_cycle(tmp_path: Path, files: dict[str, str]) -> None:
    write(tmp_path, files)
    found = cycles(graph(tmp_path))
    assert len(found) == 1 and len(found[0]) == 2, found


def test_the_checker_passes_a_chain(tmp_path: Path) -> None:
    write(tmp_path, {"a.py": "import b\nimport json\n", "b.py": "import c\n", "c.py": ""})
    assert graph(tmp_path) == {"a": {"b"}, "b": {"c"}, "c": set()}
    assert cycles(graph(tmp_path)) == []


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else BENCH
    edges = graph(root)
    for name in sorted(edges):
        print(f"{name} -> {', '.join(sorted(edges[name])) or '-'}")
    print("cycles:", cycles(edges) or "none")
