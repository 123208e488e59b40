"""Load shedding: a global ([overload]) and a per-deployment bound on requests in
flight upstream, a bounded FIFO queue in front, then 503 + Retry-After in the OpenAI
envelope (code ``server_overloaded``); slots never lost to a client that leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.api.endpoints import Gateway
from gateway.config import Config, Deployment, Listen, Overload
from gateway.ops.lifecycle import listen, open_gateway
from gateway.upstream.admission import Gate
from tests.conftest import FakeUpstream, completion


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    stack: list[Any] = []

    async def start(cfg: Config) -> tuple[str, Gateway]:
        cm = open_gateway(cfg)
        gw = await cm.__aenter__()
        stack.append(cm)
        server_cm = listen(gw, "127.0.0.1", 0)
        server = await server_cm.__aenter__()
        stack.append(server_cm)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", gw

    yield start
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


def slow(upstream: FakeUpstream, seconds: float) -> None:
    async def reply(request: Any, body: dict) -> Any:
        await asyncio.sleep(seconds)
        return await FakeUpstream.json_reply(completion("done"))(request, body)

    upstream.reply = reply


async def post(session: aiohttp.ClientSession, url: str) -> tuple[int, dict, dict]:
    async with session.post(url + "/responses", json={"model": "m1", "input": "x"}) as r:
        return r.status, orjson.loads(await r.read()), dict(r.headers)


def gates(gw: Gateway) -> tuple[Gate, ...]:
    return gw.router._deployments[0][1].gates


@pytest.mark.parametrize("where", ["deployment", "gateway"])
async def test_beyond_the_bound_requests_queue_then_get_503(
    upstream: FakeUpstream, serve: Any, where: str
) -> None:
    bound = {"max_in_flight": 2, "max_queued": 2, "queue_timeout": 0.25}
    if where == "deployment":
        dep = Deployment(upstream=upstream.url, models=("m1",), **bound)
        cfg = Config(listen=Listen(), deployment=(dep,))
    else:
        dep = Deployment(upstream=upstream.url, models=("m1",))
        cfg = Config(listen=Listen(), deployment=(dep,), overload=Overload(**bound))
    url, gw = await serve(cfg)
    (gate,) = gates(gw)
    slow(upstream, 0.6)
    async with aiohttp.ClientSession() as s:
        tasks = [asyncio.ensure_future(post(s, url)) for _ in range(7)]
        await asyncio.sleep(0.1)
        assert gate.active == 2 and len(gate.waiters) == 2  # never more than the queue
        results = await asyncio.gather(*tasks)
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 200] + [503] * 5
    for status, doc, headers in results:
        if status == 503:
            assert doc["error"]["code"] == "server_overloaded"
            assert doc["error"]["type"] == "server_error" and where in doc["error"]["message"]
            assert int(headers["Retry-After"]) >= 1
    assert len(upstream.received) == 2  # the shed ones never went upstream
    assert gate.active == 0 and not gate.waiters


async def test_queued_requests_are_served_in_turn(upstream: FakeUpstream, serve: Any) -> None:
    dep = Deployment(upstream=upstream.url, models=("m1",), max_in_flight=1, queue_timeout=5.0)
    url, gw = await serve(Config(listen=Listen(), deployment=(dep,)))
    slow(upstream, 0.05)
    async with aiohttp.ClientSession() as s:
        results = await asyncio.gather(*(post(s, url) for _ in range(8)))
    assert [status for status, _, _ in results] == [200] * 8
    (gate,) = gates(gw)
    assert gate.active == 0 and not gate.waiters


async def test_a_client_leaving_while_queued_or_served_loses_no_slot(
    upstream: FakeUpstream, serve: Any
) -> None:
    dep = Deployment(upstream=upstream.url, models=("m1",), max_in_flight=1, queue_timeout=5.0)
    url, gw = await serve(Config(listen=Listen(), deployment=(dep,)))
    (gate,) = gates(gw)
    slow(upstream, 0.3)
    async with aiohttp.ClientSession() as s:
        tasks = [asyncio.ensure_future(post(s, url)) for _ in range(4)]
        await asyncio.sleep(0.1)
        assert gate.active == 1 and len(gate.waiters) == 3
        for t in tasks:  # every client goes away: the served one and the queued ones
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for _ in range(100):
        if gate.active == 0 and not gate.waiters:
            break
        await asyncio.sleep(0.02)
    assert gate.active == 0 and not gate.waiters
    slow(upstream, 0.0)
    async with aiohttp.ClientSession() as s:
        assert (await post(s, url))[0] == 200  # the slot is still there


async def test_gate_hands_a_freed_slot_to_the_first_waiter() -> None:
    gate = Gate("deployment", 1, 10, 5.0)
    await gate.enter()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await gate.enter()
        order.append(i)
        await asyncio.sleep(0)
        gate.leave()

    tasks = [asyncio.ensure_future(waiter(i)) for i in range(5)]
    await asyncio.sleep(0.01)
    gate.leave()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4] and gate.active == 0
