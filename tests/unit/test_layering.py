"""Imports point downward only (CONTRIBUTING.md): the pure core imports no I/O, the
shared leaves and the core import nothing of the I/O shell, each part of the package
imports only the parts its row of CONTRIBUTING's table names, and no two modules
import each other (directly or through others).

Every module under ``gateway/core/`` is found by walking the folder, so a new
module there is checked without editing this test.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import gateway.core
from tests import imports

CORE = sorted(m.name for m in pkgutil.walk_packages(gateway.core.__path__, prefix="gateway.core."))
LEAVES = ["gateway.config", "gateway.errors", "gateway.limits"]
IO = ("asyncio", "aiohttp", "socket", "httptools", "uvloop", "redis", "selectors", "ssl")
SHELL = (
    "gateway.http",
    "gateway.upstream",
    "gateway.stores",
    "gateway.api",
    "gateway.ops",
    "gateway.demo",
)


def imported(module: str) -> list[str]:
    """The I/O and shell modules that importing ``module`` (alone, in a fresh
    interpreter) brings into ``sys.modules``."""
    watched = IO + SHELL
    code = (
        f"import sys, {module}; "
        f"print(','.join(m for m in {watched!r} if m in sys.modules or "
        f"any(k.startswith(m + '.') for k in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_the_core_is_found() -> None:
    assert {"gateway.core.stream.transcoder", "gateway.core.translate.request"} <= set(CORE)
    assert "gateway.core.wire.chunks" in CORE


@pytest.mark.parametrize("module", CORE + LEAVES)
def test_pure_module_imports_no_io(module: str) -> None:
    assert imported(module) == [], f"{module} pulls in {imported(module)}"


# Pure modules of the shell (CONTRIBUTING: "pure" in its row): no I/O, like the core.
PURE_SHELL = ["gateway.upstream.policy"]


@pytest.mark.parametrize("module", PURE_SHELL)
def test_pure_shell_module_imports_no_io(module: str) -> None:
    package = module.rsplit(".", 1)[0]
    assert imported(module) == [package], f"{module} pulls in {imported(module)}"


def test_config_does_not_import_the_core() -> None:
    """config is a leaf: the core learns of a deployment only through Capabilities."""
    code = (
        "import sys, gateway.config; print(any(k.startswith('gateway.core') for k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_check_can_fail() -> None:
    assert "asyncio" in imported("gateway.api.endpoints")
    assert "gateway.http" in imported("gateway.api.endpoints")


# The table of CONTRIBUTING.md: what each part of the package may import of the others.
LEAF = {"gateway", "gateway.errors", "gateway.limits", "gateway.config"}
MAY_IMPORT = {
    "gateway.core": {"gateway.core", "gateway.errors", "gateway.limits"},
    "gateway.http": {"gateway.http"} | LEAF,
    "gateway.upstream": {"gateway.upstream", "gateway.core.capabilities"} | LEAF,
    "gateway.api": {"gateway.api", "gateway.http", "gateway.upstream", "gateway.stores"}
    | {"gateway.core"}
    | LEAF,
    "gateway.stores": {"gateway.stores", "gateway.core"} | LEAF,
    "gateway.ops": {"gateway.ops", "gateway.api", "gateway.http", "gateway.upstream"}
    | {"gateway.stores"}
    | LEAF,
    "gateway.demo": {"gateway.demo"},
    "gateway.client": set(),
    "gateway.config": {"gateway.limits"},
    "gateway.errors": set(),
    "gateway.limits": set(),
}
ROOT = Path(gateway.core.__file__).parents[2]  # the checkout


def part_of(module: str) -> str:
    return next(p for p in sorted(MAY_IMPORT, key=len, reverse=True) if is_in(module, p))


def is_in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def gateway_imports(path: Path) -> set[str]:
    """The modules of the package that ``path`` imports (and, for a ``from`` import,
    the names it takes: ``gateway.limits`` for ``from gateway import limits``)."""
    found = imports.imported_names(path)
    return {n for n, _ in found if is_in(n, "gateway") and n != "gateway"}


def modules() -> list[tuple[str, Path]]:
    """Every module of the package with a part in the table (cli and __main__ may
    import anything)."""
    found = []
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name not in ("gateway", "gateway.cli", "gateway.__main__"):
            found.append((name, path))
    return found


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_imports_point_downward(module: str, path: Path) -> None:
    allowed = MAY_IMPORT[part_of(module)]
    wrong = sorted(
        name for name in gateway_imports(path) if not any(is_in(name, a) for a in allowed)
    )
    assert wrong == [], f"{module} imports {wrong}; see CONTRIBUTING.md"


def test_the_direction_check_can_fail() -> None:
    source = ROOT / "gateway" / "core" / "stream" / "transcoder.py"
    assert gateway_imports(source) and not any(
        is_in(n, "gateway.http") for n in gateway_imports(source)
    )
    assert "gateway.api.pings" in gateway_imports(ROOT / "gateway" / "ops" / "lifecycle.py")
    assert part_of("gateway.core.stream.sse") == "gateway.core"
    assert not any(is_in("gateway.api.pings", a) for a in MAY_IMPORT["gateway.core"])
    assert "gateway.api" not in MAY_IMPORT["gateway.stores"]
    assert part_of("gateway.stores.redis") == "gateway.stores"


def test_no_import_cycle_in_the_package() -> None:
    """No two modules of ``gateway/`` import each other, directly or through others,
    counting imports inside functions and under TYPE_CHECKING."""
    graph = imports.edges(imports.module_names(ROOT / "gateway", "gateway"))
    assert imports.cycles(graph) == []


def test_the_cycle_check_can_fail(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
    )
    (pkg / "c.py").write_text("def late():\n    from . import d\n")
    (pkg / "d.py").write_text("from .c import late\n")
    (pkg / "e.py").write_text("import pkg.a\n")  # imports into a cycle: not part of it
    graph = imports.edges(imports.module_names(pkg, "pkg"))
    assert imports.cycles(graph) == [["pkg.a", "pkg.sub.b"], ["pkg.c", "pkg.d"]]


MAX_LINES = 500  # a module longer than this holds two things a reader looks for apart


def test_no_module_is_over_500_lines() -> None:
    long = {m: n for m, p in modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split where a reader would look for two things: {long}"
