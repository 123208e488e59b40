"""End-to-end tests with real third-party clients, installed by ``make e2e`` (not part of
``make test``): the pinned Codex CLI under ``.e2e/``. Without it these tests skip; with
``CI`` set, a missing client fails them instead."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
from typing import Any

import pytest

from gateway.api.calls import Call
from gateway.config import Config, Deployment, Listen
from gateway.demo.upstream import DemoOptions, make_handler
from gateway.ops.lifecycle import listen, open_gateway

ROOT = pathlib.Path(__file__).parents[2]


@pytest.fixture(scope="session")
def codex_bin() -> str:
    """The Codex CLI that ``make e2e`` installed (``CODEX_BIN``), at the pinned version."""
    path = os.environ.get("CODEX_BIN") or str(ROOT / ".e2e" / "node_modules" / ".bin" / "codex")
    found = shutil.which(path)
    if not found:
        message = f"Codex CLI not installed at {path}: run `make e2e`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(pathlib.Path(found).resolve())


@pytest.fixture
async def start(aiohttp_raw_server: Any) -> Any:
    """``await start(model, script, hosted_tools)``: the scripted demo upstream (which
    records each chat request it receives in ``received``) and a gateway in front of it
    → (demo options, the gateway's URL, the gateway's calls as they end: their endpoint
    label and status, ``responses_ws`` for each response on a WebSocket)."""
    async with contextlib.AsyncExitStack() as stack:

        async def run(
            model: str, script: list, hosted_tools: str
        ) -> tuple[DemoOptions, str, list[tuple[str, int]]]:
            options = DemoOptions(models=(model,), script=script)
            demo = await aiohttp_raw_server(make_handler(options))
            upstream = str(demo.make_url("/v1"))
            dep = Deployment(upstream=upstream, models=(model,), hosted_tools=hosted_tools)
            cfg = Config(listen=Listen(), deployment=(dep,))
            gateway = await stack.enter_async_context(open_gateway(cfg, {}))
            calls: list[tuple[str, int]] = []
            observer = gateway.observer
            assert observer is not None
            finished = observer.finished

            def record(call: Call) -> None:
                calls.append((call.endpoint, call.status))
                finished(call)

            observer.finished = record  # type: ignore[method-assign]
            server = await stack.enter_async_context(listen(gateway, "127.0.0.1", 0))
            return options, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", calls

        yield run
