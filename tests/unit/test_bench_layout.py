"""bench/ has no import cycle: no two of its modules import each other, directly or
through others, counting imports under ``if TYPE_CHECKING:`` and inside functions.

The scripts run as ``python bench/run.py``, so bench/ is on sys.path and its modules
import each other by top-level names (``harness``, ``rows.base``); tests import them as
``bench.x``. The checker (``tests/imports.py``, which ``test_layering`` uses for ``gateway/``) reads
every ``bench/**/*.py`` with ``ast`` (nothing is imported), resolves the imports of
bench's own modules in all three forms (top-level, ``bench.``-prefixed, relative), and
searches the graph for strongly connected parts.
Run as a module from the checkout, it prints the graph and the cycles:
``python -m tests.unit.test_bench_layout``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.imports import cycles, edges, module_names

BENCH = Path(__file__).resolve().parents[2] / "bench"


def graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of ``root`` it imports (``bench.x`` is ``x``)."""
    return edges(module_names(root), alias="bench")


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
