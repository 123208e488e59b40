"""The Responses WebSocket of a whole gateway, through a real WebSocket client.

A gateway on loopback (``start_gateway``: both HTTP servers, both event loops) in
front of ``FakeUpstream``, driven by the ``websockets`` package as Codex drives it:
the upgrade on ``GET /v1/responses``, one ``response.create`` message per response,
continuations by ``previous_response_id``, the drain's close. What the session does
on its own is in ``test_websocket_session.py`` (a fake socket), the transport's
framing in ``test_websocket.py`` (an echo handler).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import orjson
import pytest
from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.config import Auth, Config
from gateway.limits import WEBSOCKET_CLOSE_WAIT
from gateway.ops.lifecycle import listen, open_gateway
from tests.conftest import WEATHER, FakeUpstream, chunk, make_config, text_stream, usage_chunk

TERMINAL = ("response.completed", "response.incomplete", "response.failed")
WAIT = 5.0
# What differs between two runs of the same request: ids and clocks.
VOLATILE = {"id", "item_id", "response_id", "created_at", "completed_at"}
KEY = "sk-ws-right"


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://", 1) + "/responses"


def create(text: Any = "Hi", **more: Any) -> bytes:
    return orjson.dumps({"type": "response.create", "model": "m1", "input": text, **more})


def user(text: str) -> list[dict[str, Any]]:
    return [{"type": "message", "role": "user", "content": text}]


async def response(ws: ClientConnection) -> list[dict[str, Any]]:
    """The messages of one response, up to its terminal event or an error message."""
    out: list[dict[str, Any]] = []
    while True:
        message = await asyncio.wait_for(ws.recv(), WAIT)
        assert isinstance(message, str)  # text frames only
        doc = json.loads(message)
        out.append(doc)
        if doc["type"] in TERMINAL or doc["type"] == "error":
            return out


async def turn(ws: ClientConnection, text: Any, **more: Any) -> dict[str, Any]:
    """One ``response.create`` and its events, checked by ``strict``: the response."""
    await ws.send(create(text, **more))
    return strict(await response(ws))


def strict(events: list[dict[str, Any]], terminal: str = "response.completed") -> dict[str, Any]:
    """Sequence numbers 0..n, exactly one terminal event, the last; its response."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events if e["type"] in TERMINAL] == [terminal]
    assert events[-1]["type"] == terminal
    return events[-1]["response"]


def stable(doc: Any) -> Any:
    """``doc`` without its ids and timestamps."""
    if isinstance(doc, dict):
        return {k: stable(v) for k, v in doc.items() if k not in VOLATILE}
    if isinstance(doc, list):
        return [stable(v) for v in doc]
    return doc


async def sse(base: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of the same request streamed over HTTP."""
    async with aiohttp.ClientSession() as s:
        async with s.post(base + "/responses", json={**body, "stream": True}) as r:
            assert r.status == 200
            raw = await r.read()
    out = []
    for block in raw.decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


def roles(upstream: FakeUpstream, n: int = -1) -> list[tuple[str, Any]]:
    """The (role, content) of each message of the upstream's ``n``-th request."""
    return [(m["role"], m.get("content")) for m in upstream.received[n]["messages"]]


async def closed_with(ws: ClientConnection) -> int | None:
    """Read until the server closes; its close code."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), WAIT)
    return ws.close_code


@pytest.fixture
async def base(upstream: FakeUpstream, start_gateway: Any) -> str:
    upstream.reply = upstream.sse_reply(text_stream("Hel", "lo"))
    return str(await start_gateway(make_config(upstream.url)))


# ---- responses ---------------------------------------------------------------------------


async def test_one_response_is_the_sse_stream_one_message_each(base: str) -> None:
    body = {"model": "m1", "input": "Hi", "tools": [WEATHER]}
    async with connect(ws_url(base)) as ws:
        await ws.send(orjson.dumps({"type": "response.create", **body}).decode())
        events = await response(ws)
    final = strict(events)
    assert final["output"][0]["content"][0]["text"] == "Hello"
    over_http = await sse(base, body)
    strict(over_http)
    assert stable(events) == stable(over_http)


async def test_two_responses_one_after_the_other_on_one_socket(
    base: str, upstream: FakeUpstream
) -> None:
    async with connect(ws_url(base)) as ws:
        first = await turn(ws, "one")
        second = await turn(ws, "two")
    assert first["id"] != second["id"]
    assert [roles(upstream, 0), roles(upstream, 1)] == [[("user", "one")], [("user", "two")]]


async def test_a_continuation_sends_the_whole_conversation_upstream(
    base: str, upstream: FakeUpstream
) -> None:
    async with connect(ws_url(base)) as ws:
        first = await turn(ws, "first")
        second = await turn(ws, user("second"), previous_response_id=first["id"])
    assert second["output"][0]["content"][0]["text"] == "Hello"
    assert roles(upstream) == [("user", "first"), ("assistant", "Hello"), ("user", "second")]


def tool_call_stream() -> list[bytes]:
    call = {"index": 0, "id": "call_1", "type": "function"}
    call["function"] = {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    return [
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [call]}),
        chunk({}, "tool_calls"),
        usage_chunk(),
        b"data: [DONE]\n\n",
    ]


async def test_a_tool_loop_by_continuation(base: str, upstream: FakeUpstream) -> None:
    upstream.reply = upstream.sse_reply(tool_call_stream())
    async with connect(ws_url(base)) as ws:
        first = await turn(ws, "Weather in Paris?", tools=[WEATHER])
        (call,) = first["output"]
        assert (call["type"], call["call_id"]) == ("function_call", "call_1")
        upstream.reply = upstream.sse_reply(text_stream("Sunny."))
        output = [{"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]
        await turn(ws, output, tools=[WEATHER], previous_response_id=first["id"])
    messages = upstream.received[-1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["tool_calls"][0]["id"] == "call_1"
    assert messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert (messages[2]["tool_call_id"], messages[2]["content"]) == ("call_1", "sunny")


# ---- previous_response_not_found ---------------------------------------------------------


async def not_found(ws: ClientConnection, previous: str) -> None:
    """A continuation of ``previous`` is refused with ``previous_response_not_found``."""
    await ws.send(create(user("again"), previous_response_id=previous))
    (error,) = await response(ws)
    assert (error["type"], error["status"]) == ("error", 400)
    assert error["error"]["code"] == "previous_response_not_found"


async def test_an_unknown_previous_id_is_not_found(base: str, upstream: FakeUpstream) -> None:
    async with connect(ws_url(base)) as ws:
        await not_found(ws, "resp_unknown")
        await turn(ws, "still here")  # the socket goes on
    assert len(upstream.received) == 1


async def test_an_id_from_another_socket_is_not_found(base: str, upstream: FakeUpstream) -> None:
    async with connect(ws_url(base)) as ws:
        first = await turn(ws, "first")
    async with connect(ws_url(base)) as ws:
        await not_found(ws, first["id"])
    assert len(upstream.received) == 1


# ---- warm-up, a failed continuation, acknowledgements, bad frames ------------------------


async def test_a_warm_up_asks_no_model_and_can_be_continued(
    base: str, upstream: FakeUpstream
) -> None:
    async with connect(ws_url(base)) as ws:
        warm = await turn(ws, "context", generate=False)
        assert warm["output"] == []
        assert upstream.received == []
        await turn(ws, user("question"), previous_response_id=warm["id"])
    assert roles(upstream) == [("user", "context"), ("user", "question")]


async def test_a_failed_continuation_forgets_the_previous_response(
    base: str, upstream: FakeUpstream
) -> None:
    async with connect(ws_url(base)) as ws:
        first = await turn(ws, "first")
        upstream.reply = upstream.raw_reply(b"boom", 500)
        await ws.send(create(user("second"), previous_response_id=first["id"]))
        failed = (await response(ws))[-1]
        assert failed["type"] in ("error", "response.failed")
        upstream.reply = upstream.sse_reply(text_stream("ok"))
        await not_found(ws, first["id"])
    assert len(upstream.received) == 2


async def test_processed_acknowledgements_get_no_answer(base: str) -> None:
    async with connect(ws_url(base)) as ws:
        first = await turn(ws, "one")
        ack = {"type": "response.processed", "response_id": first["id"]}
        await ws.send(orjson.dumps(ack).decode())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.3)
        await turn(ws, "two")


@pytest.mark.parametrize(
    "frame",
    [
        b"this is not JSON",
        b'["response.create"]',
        b'{"type": "response.cancel"}',
        b'{"type": "response.create", "model": "m1", "input": 42}',
        b'{"type": "response.create", "input": "no model"}',
    ],
)
async def test_a_bad_frame_gets_an_error_and_the_socket_goes_on(
    base: str, upstream: FakeUpstream, frame: bytes
) -> None:
    async with connect(ws_url(base)) as ws:
        await ws.send(frame.decode())
        (error,) = await response(ws)
        assert (error["type"], error["status"]) == ("error", 400)
        assert error["error"]["message"]
        await turn(ws, "after")
    assert len(upstream.received) == 1


# ---- the upgrade: keys, compression, sizes -----------------------------------------------


@pytest.mark.parametrize("key", [None, "sk-ws-wrong"])
async def test_a_missing_or_wrong_key_fails_the_upgrade_with_401(
    upstream: FakeUpstream, start_gateway: Any, key: str | None
) -> None:
    cfg = msgspec.structs.replace(make_config(upstream.url), auth=Auth(keys_env="GW_KEYS"))
    base = await start_gateway(cfg, {"GW_KEYS": KEY})
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with pytest.raises(InvalidStatus) as failed:
        async with connect(ws_url(base), additional_headers=headers):
            pass
    assert failed.value.response.status_code == 401
    assert upstream.received == []


async def test_the_right_key_opens_the_socket(upstream: FakeUpstream, start_gateway: Any) -> None:
    upstream.reply = upstream.sse_reply(text_stream("keyed"))
    cfg = msgspec.structs.replace(make_config(upstream.url), auth=Auth(keys_env="GW_KEYS"))
    base = await start_gateway(cfg, {"GW_KEYS": KEY})
    headers = {"Authorization": f"Bearer {KEY}"}
    async with connect(ws_url(base), additional_headers=headers) as ws:
        await turn(ws, "Hi")


def codex_sized() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """About 64 KB of input in 32 messages, and 30 function tools."""
    words = "the build step runs each test file then reports a summary of failures "
    items = [
        {"type": "message", "role": "user" if k % 2 == 0 else "assistant", "content": words * 27}
        for k in range(32)
    ]
    tools = [
        {**WEATHER, "name": f"tool_{k}", "description": f"Tool number {k}: " + words}
        for k in range(30)
    ]
    return items, tools


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_compressed_or_not_a_codex_sized_request_works(
    base: str, upstream: FakeUpstream, compression: str | None
) -> None:
    items, tools = codex_sized()
    frame = create(items, tools=tools)
    assert len(frame) > 60_000
    async with connect(ws_url(base), compression=compression) as ws:
        offered = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert ("permessage-deflate" in offered) == (compression == "deflate")
        await turn(ws, "small")
        await ws.send(frame.decode())
        strict(await response(ws))
    sent = upstream.received[-1]
    assert len(sent["messages"]) == 32
    assert len(sent["tools"]) == 30


# ---- a client gone, the drain ------------------------------------------------------------


async def test_a_client_gone_mid_response_cuts_the_upstream_stream(
    base: str, upstream: FakeUpstream, http_server: str
) -> None:
    """The client closes (the close handshake) while the upstream says nothing: the
    gateway answers the close and drops the upstream within a few seconds."""
    upstream.reply = upstream.sse_reply([chunk({"role": "assistant", "content": "a"})], then="hang")
    async with connect(ws_url(base)) as ws:
        await ws.send(create("x"))
        first = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert first["type"] == "response.created"
        await asyncio.sleep(0.05)
        assert not upstream.disconnected.is_set()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await ws.close()  # the close handshake: the gateway answers it mid-response
        closed = loop.time() - t0
        await asyncio.wait_for(upstream.disconnected.wait(), 3)
        assert closed < WEBSOCKET_CLOSE_WAIT + 0.5  # (the lean server's wait for its handler)
        assert loop.time() - t0 < 3.0


@contextlib.asynccontextmanager
async def draining(
    cfg: Config, http_server: str, drain_timeout: float
) -> AsyncIterator[tuple[str, asyncio.Event, asyncio.Task[None]]]:
    """A gateway served until ``stop`` is set, then drained for ``drain_timeout`` s (the
    ``listen`` context exited, as at shutdown); ``done`` ends with the drain."""
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def serve() -> None:
        async with open_gateway(cfg, {}) as gw:
            http = msgspec.structs.replace(cfg.http, server=http_server)
            async with listen(gw, "127.0.0.1", 0, http=http, drain_timeout=drain_timeout) as s:
                ready.set_result(f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}/v1")
                await stop.wait()

    done = asyncio.create_task(serve())
    try:
        yield await asyncio.wait_for(ready, WAIT), stop, done
    finally:
        stop.set()
        await asyncio.wait_for(done, 30)


async def test_the_drain_lets_a_response_finish_then_closes_with_1001(
    upstream: FakeUpstream, http_server: str
) -> None:
    upstream.reply = upstream.sse_reply(text_stream(*"slowly"), delay=0.1)
    async with draining(make_config(upstream.url), http_server, 10.0) as (url, stop, done):
        async with connect(ws_url(url)) as ws:
            await ws.send(create("x"))
            first = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            assert first["type"] == "response.created"
            stop.set()
            events = [first, *await response(ws)]
            final = strict(events)
            assert final["output"][0]["content"][0]["text"] == "slowly"
            t0 = asyncio.get_running_loop().time()
            assert await closed_with(ws) == 1001
            assert asyncio.get_running_loop().time() - t0 < 1.0  # (no wait for a close)
        await asyncio.wait_for(done, WAIT)


async def test_the_drain_deadline_fails_a_response_once_then_closes_with_1001(
    upstream: FakeUpstream, http_server: str
) -> None:
    upstream.reply = upstream.sse_reply([chunk({"role": "assistant", "content": "a"})], then="hang")
    async with draining(make_config(upstream.url), http_server, 0.5) as (url, stop, done):
        async with connect(ws_url(url)) as ws:
            await ws.send(create("x"))
            first = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            stop.set()
            events = [first, *await response(ws)]
            final = strict(events, "response.failed")
            assert final["error"]["code"] == "server_shutting_down"
            t0 = asyncio.get_running_loop().time()
            assert await closed_with(ws) == 1001
            assert asyncio.get_running_loop().time() - t0 < 1.0
        await asyncio.wait_for(done, WAIT)


async def test_the_drain_closes_an_idle_socket_with_1001_at_once(
    upstream: FakeUpstream, http_server: str
) -> None:
    upstream.reply = upstream.sse_reply(text_stream("Hi"))
    async with draining(make_config(upstream.url), http_server, 10.0) as (url, stop, done):
        async with connect(ws_url(url)) as ws:
            await turn(ws, "x")
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            stop.set()
            assert await closed_with(ws) == 1001
            assert loop.time() - t0 < 2.0
        await asyncio.wait_for(done, WAIT)


async def test_an_upstream_that_fails_mid_stream_ends_the_response_once(
    base: str, upstream: FakeUpstream
) -> None:
    async def cut(request: web.BaseRequest, body: dict) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        await out.write(chunk({"role": "assistant", "content": "par"}))
        assert request.transport is not None
        request.transport.close()
        return out

    upstream.reply = cut
    async with connect(ws_url(base)) as ws:
        await ws.send(create("x"))
        strict(await response(ws), "response.failed")
        upstream.reply = upstream.sse_reply(text_stream("again"))
        await turn(ws, "y")
