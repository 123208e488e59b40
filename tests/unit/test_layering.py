"""The pure core imports no I/O: no asyncio, no aiohttp, no sockets (style guide §3)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE = [
    "gateway.config",
    "gateway.errors",
    "gateway.wire.responses",
    "gateway.wire.chat",
    "gateway.wire.chunks",
    "gateway.wire.events",
    "gateway.wire.output",
    "gateway.messages",
    "gateway.translate",
    "gateway.sse",
    "gateway.encoder",
    "gateway.toolcalls",
    "gateway.transcoder",
    "gateway.chunk_template",
]
IO = ("asyncio", "aiohttp", "socket", "httptools", "uvloop")


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io(module: str) -> None:
    code = f"import sys, {module}; print(','.join(m for m in {IO!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"


def test_the_check_can_fail() -> None:
    code = "import sys, gateway.handlers; print('asyncio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
