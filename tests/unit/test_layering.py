"""Imports point downward only (CONTRIBUTING.md): the pure core imports no I/O, and
the shared leaves and the core import nothing of the I/O shell.

Every module under ``gateway/core/`` is found by walking the folder, so a new
module there is checked without editing this test.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import gateway.core

CORE = sorted(m.name for m in pkgutil.walk_packages(gateway.core.__path__, prefix="gateway.core."))
LEAVES = ["gateway.config", "gateway.errors", "gateway.limits"]
IO = ("asyncio", "aiohttp", "socket", "httptools", "uvloop", "redis", "selectors", "ssl")
SHELL = ("gateway.http", "gateway.upstream", "gateway.api", "gateway.ops", "gateway.demo")


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
