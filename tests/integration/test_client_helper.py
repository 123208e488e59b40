"""``gateway.client``: the official SDK's retries become safe through the gateway (one
Idempotency-Key per logical call, kept across the SDK's retries), streams are never
retried, and the request id is on every result and exception."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import openai
import pytest
from aiohttp import web

from gateway.client import AsyncClient, Client
from tests.conftest import FakeUpstream, completion


def helper(url: str, **kw: Any) -> AsyncClient:
    kw.setdefault("max_retries", 2)
    kw.setdefault("timeout", 30.0)
    return AsyncClient(base_url=url, api_key="sk-test", **kw)


async def test_a_retry_after_a_timeout_replays_instead_of_generating_again(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    async def slow(request: web.BaseRequest, body: dict) -> web.StreamResponse:
        await asyncio.sleep(1.0)
        return web.json_response(completion("generated once"))

    upstream.reply = slow
    c = helper(gateway_url, timeout=0.4, max_retries=3)
    resp = await c.responses.create(model="m1", input="Hi")
    assert resp.output_text == "generated once"
    assert len(upstream.received) == 1  # the SDK retried; the model ran once
    assert resp._request_id
    await c.close()


async def test_the_plain_sdk_generates_again_on_the_same_retry(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    """What the helper prevents (so the test above can fail)."""

    async def slow(request: web.BaseRequest, body: dict) -> web.StreamResponse:
        await asyncio.sleep(1.0)
        return web.json_response(completion())

    upstream.reply = slow
    c = openai.AsyncOpenAI(base_url=gateway_url, api_key="x", timeout=0.4, max_retries=1)
    with pytest.raises(openai.APITimeoutError):
        await c.responses.create(model="m1", input="Hi")
    await asyncio.sleep(1.2)
    assert len(upstream.received) == 2
    await c.close()


async def test_each_logical_call_has_its_own_key(gateway_url: str, upstream: FakeUpstream) -> None:
    c = helper(gateway_url)
    await c.responses.create(model="m1", input="Hi")
    await c.responses.create(model="m1", input="Hi")
    await c.chat.completions.create(model="m1", messages=[{"role": "user", "content": "Hi"}])
    assert len(upstream.received) == 3
    raw = await c.responses.with_raw_response.create(model="m1", input="Hi")
    assert "idempotent-replayed" not in raw.headers
    await c.close()


async def test_a_callers_own_key_replays(gateway_url: str, upstream: FakeUpstream) -> None:
    c = helper(gateway_url)
    a = await c.responses.create(model="m1", input="Hi", idempotency_key="order-1")
    b = await c.chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "Hi"}], idempotency_key="order-2"
    )
    a2 = await c.responses.create(model="m1", input="Hi", idempotency_key="order-1")
    b2 = await c.chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "Hi"}], idempotency_key="order-2"
    )
    assert len(upstream.received) == 2
    assert a2.id == a.id and b2.id == b.id
    await c.close()


async def test_a_failed_attempt_is_retried_for_real(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    calls = 0

    async def flaky(request: web.BaseRequest, body: dict) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            return web.json_response({"error": {"message": "busy"}}, status=500)
        return web.json_response(completion("second"))

    upstream.reply = flaky
    c = helper(gateway_url)
    assert (await c.responses.create(model="m1", input="Hi")).output_text == "second"
    assert calls == 2
    await c.close()


async def test_streams_are_never_retried(gateway_url: str, upstream: FakeUpstream) -> None:
    upstream.reply = upstream.json_reply({"error": {"message": "busy"}}, status=500)
    c = helper(gateway_url, max_retries=3)
    with pytest.raises(openai.APIStatusError) as info:
        await c.responses.create(model="m1", input="Hi", stream=True)
    assert info.value.status_code == 502 and info.value.request_id
    assert len(upstream.received) == 1
    with pytest.raises(openai.APIStatusError):
        await c.chat.completions.create(
            model="m1", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    assert len(upstream.received) == 2
    await c.close()


async def test_the_request_id_is_on_exceptions_without_an_answer() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = helper(f"http://127.0.0.1:{port}/v1", max_retries=0)
    with pytest.raises(openai.APIConnectionError) as info:
        await c.responses.create(model="m1", input="Hi")
    assert info.value.request_id.startswith("req_")  # type: ignore[attr-defined]
    await c.close()


async def test_the_sync_client(gateway_url: str, upstream: FakeUpstream) -> None:
    def run() -> tuple[str, str | None]:
        with Client(base_url=gateway_url, api_key="x") as c:
            resp = c.responses.create(model="m1", input="Hi", idempotency_key="sync-1")
            again = c.responses.create(model="m1", input="Hi", idempotency_key="sync-1")
            assert again.id == resp.id
            return resp.output_text, resp._request_id

    text, rid = await asyncio.to_thread(run)
    assert text == "Hello!" and rid and len(upstream.received) == 1
