"""The Responses WebSocket session (``gateway.api.websocket``) of a real gateway
(``open_gateway``) against the fake upstream, through ``Gateway.handle``.

The transport is stood in for by ``FakeSocket`` (an in-memory pair of queues with
the ``http.messages.WebSocket`` methods) and ``Upgrade`` (a request that asks for
the upgrade and is handed that socket): swapping them for a real client over a
real server is all a transport test needs to change.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import orjson
import pytest

from gateway import limits
from gateway.api.endpoints import Gateway
from gateway.config import COMPACTION_PROMPT, Auth, Http, Ops
from gateway.core.translate.compaction import SUMMARY_HEADING
from gateway.http.messages import Headers
from gateway.ops.lifecycle import listen, open_gateway
from tests.conftest import WEATHER, FakeUpstream, chunk, completion, make_config, text_stream
from tests.integration.ops_support import parse, value

TERMINAL = ("response.completed", "response.incomplete", "response.failed", "error")
WAIT = 5.0


class FakeSocket:
    """The server's side of a WebSocket, driven by the test as the client."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.sent: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed: tuple[int, str] | None = None
        self.closed_event = asyncio.Event()
        self.sends_left: int | None = None  # then send raises: the client is gone

    # ---- the WebSocket protocol (what the session sees) ----

    async def receive(self) -> bytes | None:
        if self.closed is not None:
            return None
        return await self.inbox.get()

    async def send(self, data: bytes) -> None:
        if self.closed is not None:
            raise ConnectionResetError("closed")
        if self.sends_left is not None:
            if self.sends_left <= 0:
                raise ConnectionResetError("the client went away")
            self.sends_left -= 1
        data.decode()  # a text message: UTF-8
        self.sent.put_nowait(bytes(data))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.closed = (code, reason)
            self.closed_event.set()

    # ---- the client's side ----

    def put(self, doc: Any) -> None:
        self.inbox.put_nowait(doc if isinstance(doc, bytes) else orjson.dumps(doc))

    def hang_up(self) -> None:
        self.inbox.put_nowait(None)

    async def message(self) -> bytes:
        return await asyncio.wait_for(self.sent.get(), WAIT)

    async def response(self) -> list[bytes]:
        """Messages up to and with a terminal event (or an error)."""
        out = []
        while True:
            data = await self.message()
            out.append(data)
            if orjson.loads(data)["type"] in TERMINAL:
                return out

    async def create(self, **body: Any) -> list[dict]:
        self.put({"type": "response.create", "model": "m1", **body})
        return [orjson.loads(m) for m in await self.response()]

    async def closing(self) -> tuple[int, str]:
        await asyncio.wait_for(self.closed_event.wait(), WAIT)
        assert self.closed is not None
        return self.closed


class Upgrade:
    """A ``GET /v1/responses`` that asks for the WebSocket (``messages.Incoming``)."""

    method = "GET"
    path = "/v1/responses"
    content_length = None

    def __init__(self, socket: FakeSocket, headers: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
        self.socket = socket
        self.headers = Headers(list(headers))
        self.accepted: dict[str, str] | None = None

    def wants_websocket(self) -> bool:
        return True

    async def accept_websocket(self, headers: dict[str, str] | None = None) -> FakeSocket:
        self.accepted = dict(headers or {})
        return self.socket

    @property
    def content(self) -> Any:
        raise AssertionError("an upgrade has no body")

    async def open_stream(self, status: int, headers: Any) -> Any:
        raise AssertionError("an upgrade opens no stream")

    def abort(self) -> None:
        raise AssertionError("an upgrade is not aborted")

    def detach(self) -> bool:
        return False


class Client:
    """One connection: the socket, the request, and the task that serves it."""

    def __init__(self, gateway: Gateway, headers: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
        self.socket = FakeSocket()
        self.request = Upgrade(self.socket, headers)
        self.task = asyncio.ensure_future(gateway.handle(self.request))  # type: ignore[arg-type]

    async def end(self) -> Any:
        """The client hangs up; the handler's answer."""
        self.socket.hang_up()
        return await asyncio.wait_for(self.task, WAIT)


@pytest.fixture
async def gateway(upstream: FakeUpstream) -> AsyncIterator[Gateway]:
    async with open_gateway(make_config(upstream.url)) as gw:
        yield gw


@pytest.fixture
async def connect(gateway: Gateway) -> AsyncIterator[Any]:
    clients: list[Client] = []

    def connect(**kw: Any) -> Client:
        clients.append(Client(gateway, **kw))
        return clients[-1]

    yield connect
    for c in clients:
        c.socket.hang_up()
        c.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await c.task


def normal(events: list[dict]) -> list[dict]:
    """Events with their ids and times replaced by what stays the same between two runs."""
    names: dict[str, str] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if k in ("id", "item_id", "call_id") and isinstance(v, str):
                    v = names.setdefault(v, f"id{len(names)}")
                elif k in ("created_at", "completed_at") and v is not None:
                    v = 0
                out[k] = walk(v)
            return out
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return [walk(e) for e in events]


def masked(data: bytes) -> bytes:
    """An event's bytes with its ids and times masked."""
    data = re.sub(rb'"(resp|msg|fc|call|rs|ctc)_[0-9a-zA-Z]+"', b'"ID"', data)
    return re.sub(rb'"(created_at|completed_at)":[0-9]+', b'"T":0', data)


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def user(text: str) -> dict:
    return {"type": "message", "role": "user", "content": text}


# ---- one response, and several ---------------------------------------------------------


async def test_one_response_is_the_sse_stream_frame_for_frame(
    gateway: Gateway, upstream: FakeUpstream, connect: Any
) -> None:
    upstream.reply = upstream.sse_reply(text_stream("Hel", "lo ", "there"))
    body = {"model": "m1", "input": "hi", "instructions": "be brief", "tools": [WEATHER]}
    async with (
        listen(gateway, "127.0.0.1", 0) as server,
        aiohttp.ClientSession() as http,
    ):
        port = server.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/v1/responses"
        async with http.post(url, data=orjson.dumps({**body, "stream": True})) as r:
            sse = await r.read()
        ws = connect()
        ws.socket.put({"type": "response.create", **body, "stream": True})
        messages = await ws.socket.response()
        raw = [orjson.loads(m) for m in messages]
    frames = [f for f in sse.split(b"\n\n") if f]
    over_sse = [f.partition(b"\ndata: ")[2] for f in frames]
    assert [orjson.loads(f) for f in over_sse] and len(over_sse) == len(messages)
    assert [e["sequence_number"] for e in raw] == list(range(len(raw)))
    assert normal(raw) == normal([orjson.loads(f) for f in over_sse])
    # the very bytes, but for ids and times (a message is the JSON, exactly)
    assert [masked(m) for m in messages] == [masked(f) for f in over_sse]
    assert types(raw)[-1] == "response.completed"
    assert upstream.received[0] == upstream.received[1]
    assert ws.request.accepted is not None and "x-request-id" in ws.request.accepted


async def test_two_responses_in_a_row(upstream: FakeUpstream, connect: Any) -> None:
    upstream.reply = upstream.sse_reply(text_stream("one"))
    ws = connect()
    first = await ws.socket.create(input="a", stream=False)  # (streamed all the same)
    upstream.reply = upstream.sse_reply(text_stream("two"))
    second = await ws.socket.create(input="b", background=True)
    assert types(first)[-1] == types(second)[-1] == "response.completed"
    assert second[0]["sequence_number"] == 0
    assert first[-1]["response"]["id"] != second[-1]["response"]["id"]
    assert second[-1]["response"]["output"][0]["content"][0]["text"] == "two"
    assert [r["messages"] for r in upstream.received] == [
        [{"role": "user", "content": "a"}],
        [{"role": "user", "content": "b"}],
    ]
    assert all(r["stream"] is True for r in upstream.received)
    assert await ws.end() is not None


async def test_a_second_create_waits_for_the_first(upstream: FakeUpstream, connect: Any) -> None:
    upstream.reply = upstream.sse_reply(text_stream("a", "b", "c"), delay=0.05)
    ws = connect()
    ws.socket.put({"type": "response.create", "model": "m1", "input": "one"})
    ws.socket.put({"type": "response.create", "model": "m1", "input": "two"})
    first = [orjson.loads(m) for m in await ws.socket.response()]
    second = [orjson.loads(m) for m in await ws.socket.response()]
    assert types(first)[-1] == types(second)[-1] == "response.completed"
    assert first[-1]["response"]["id"] != second[-1]["response"]["id"]
    assert {e["response"]["id"] for e in first if "response" in e} == {first[0]["response"]["id"]}


# ---- continuation -------------------------------------------------------------------------


async def test_continuation_sends_the_whole_conversation(
    upstream: FakeUpstream, connect: Any
) -> None:
    upstream.reply = upstream.sse_reply(text_stream("Hello", " you"))
    ws = connect()
    first = await ws.socket.create(input=[user("hi")], instructions="sys")
    rid = first[-1]["response"]["id"]
    upstream.reply = upstream.sse_reply(text_stream("fine"))
    second = await ws.socket.create(
        input=[user("how are you?")], instructions="sys", previous_response_id=rid
    )
    assert types(second)[-1] == "response.completed"
    assert second[0]["response"]["previous_response_id"] == rid
    assert upstream.received[1]["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello you"},
        {"role": "user", "content": "how are you?"},
    ]
    # and a third, on the second
    third = await ws.socket.create(
        input="and now?", previous_response_id=second[-1]["response"]["id"]
    )
    assert types(third)[-1] == "response.completed"
    assert upstream.received[2]["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello you"},
        {"role": "user", "content": "how are you?"},
        {"role": "assistant", "content": "fine"},
        {"role": "user", "content": "and now?"},
    ]


def call_stream(call_id: str, name: str, arguments: str) -> list[bytes]:
    fn = {"name": name, "arguments": arguments}
    return [
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function", "function": fn}]}),
        chunk({}, "tool_calls"),
        b"data: [DONE]\n\n",
    ]


async def test_a_tool_loop_by_continuation(upstream: FakeUpstream, connect: Any) -> None:
    upstream.reply = upstream.sse_reply(call_stream("call_1", "get_weather", '{"city":"Oslo"}'))
    ws = connect()
    first = await ws.socket.create(input="weather in Oslo?", tools=[WEATHER])
    final = first[-1]["response"]
    assert final["output"][0]["type"] == "function_call"
    upstream.reply = upstream.sse_reply(text_stream("Sunny."))
    output = {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 20 C"}
    second = await ws.socket.create(
        input=[output], tools=[WEATHER], previous_response_id=final["id"]
    )
    assert types(second)[-1] == "response.completed"
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
    }
    assert upstream.received[1]["messages"] == [
        {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 20 C"},
    ]


async def test_a_compaction_trigger_compacts_the_remembered_conversation(
    upstream: FakeUpstream, connect: Any
) -> None:
    """A ``compaction_trigger`` continuing the tool loop (what Codex 0.171 sends when its
    context fills mid-turn): one summarisation of the whole conversation, without tools;
    its one compaction item, sent back, is the summary the upstream sees."""
    upstream.reply = upstream.sse_reply(call_stream("call_1", "get_weather", '{"city":"Oslo"}'))
    ws = connect()
    first = await ws.socket.create(input="weather in Oslo?", tools=[WEATHER])
    upstream.reply = upstream.json_reply(completion("Asked for Oslo's weather: sunny."))
    output = {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 20 C"}
    previous = first[-1]["response"]["id"]
    compacted = await ws.socket.create(
        input=[output, {"type": "compaction_trigger"}],
        tools=[WEATHER],
        stream=True,
        previous_response_id=previous,
    )
    assert types(compacted) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
        "response.completed",
    ]
    final = compacted[-1]["response"]
    assert final["previous_response_id"] == previous
    [item] = final["output"]
    assert item["type"] == "compaction" and item["encrypted_content"]
    summarised = upstream.received[1]
    assert "tools" not in summarised and "stream" not in summarised
    assert [m["role"] for m in summarised["messages"]] == ["user", "assistant", "tool", "user"]
    assert summarised["messages"][-1] == {"role": "user", "content": COMPACTION_PROMPT}
    # A compaction is not remembered; the compacted history comes whole.
    upstream.reply = upstream.sse_reply(text_stream("Anything else?"))
    refused = await ws.socket.create(input="thanks", previous_response_id=final["id"])
    assert refused[-1]["error"]["code"] == "previous_response_not_found"
    after = await ws.socket.create(input=[item, user("thanks")], tools=[WEATHER])
    assert types(after)[-1] == "response.completed"
    assert upstream.received[2]["messages"] == [
        {"role": "user", "content": SUMMARY_HEADING + "Asked for Oslo's weather: sunny."},
        {"role": "user", "content": "thanks"},
    ]


async def test_an_output_for_no_known_call_fails_the_turn(
    upstream: FakeUpstream, connect: Any
) -> None:
    upstream.reply = upstream.sse_reply(call_stream("call_1", "get_weather", "{}"))
    ws = connect()
    first = await ws.socket.create(input="weather?", tools=[WEATHER])
    output = {"type": "function_call_output", "call_id": "call_9", "output": "?"}
    [error] = await ws.socket.create(
        input=[output], tools=[WEATHER], previous_response_id=first[-1]["response"]["id"]
    )
    assert error["type"] == "error" and error["status"] == 400
    assert error["error"]["param"] == "input[0].call_id"
    assert len(upstream.received) == 1


async def test_previous_response_not_found(upstream: FakeUpstream, connect: Any) -> None:
    upstream.reply = upstream.sse_reply(text_stream("ok"))
    ws = connect()
    [error] = await ws.socket.create(input="hi", previous_response_id="resp_unknown")
    assert error == {
        "type": "error",
        "status": 400,
        "error": {
            "message": error["error"]["message"],
            "type": "invalid_request_error",
            "param": "previous_response_id",
            "code": "previous_response_not_found",
        },
    }
    assert not upstream.received
    # another connection's response is not this one's
    done = await ws.socket.create(input="hi")
    other = connect()
    [error] = await other.socket.create(input="x", previous_response_id=done[-1]["response"]["id"])
    assert error["error"]["code"] == "previous_response_not_found"


async def test_a_failed_continuation_evicts(upstream: FakeUpstream, connect: Any) -> None:
    upstream.reply = upstream.sse_reply(text_stream("ok"))
    ws = connect()
    rid = (await ws.socket.create(input="hi"))[-1]["response"]["id"]
    upstream.reply = upstream.json_reply({"error": {"message": "boom"}}, status=500)
    [error] = await ws.socket.create(input="more", previous_response_id=rid)
    assert error["type"] == "error" and error["status"] == 502
    upstream.reply = upstream.sse_reply(text_stream("ok"))
    [error] = await ws.socket.create(input="more", previous_response_id=rid)
    assert error["error"]["code"] == "previous_response_not_found"
    # a continuation that ends in response.failed evicts too
    rid = (await ws.socket.create(input="hi"))[-1]["response"]["id"]
    upstream.reply = upstream.sse_reply(text_stream("half")[:2], then="drop")
    failed = await ws.socket.create(input="more", previous_response_id=rid)
    assert types(failed)[-1] == "response.failed"
    [error] = await ws.socket.create(input="more", previous_response_id=rid)
    assert error["error"]["code"] == "previous_response_not_found"


async def test_warm_up_then_continue(upstream: FakeUpstream, connect: Any) -> None:
    ws = connect()
    warm = await ws.socket.create(input=[user("hi")], instructions="sys", generate=False)
    assert types(warm) == ["response.created", "response.in_progress", "response.completed"]
    assert [e["sequence_number"] for e in warm] == [0, 1, 2]
    assert warm[-1]["response"]["output"] == [] and warm[-1]["response"]["status"] == "completed"
    assert not upstream.received
    upstream.reply = upstream.sse_reply(text_stream("hello"))
    done = await ws.socket.create(
        input=[user("go on")], instructions="sys", previous_response_id=warm[-1]["response"]["id"]
    )
    assert types(done)[-1] == "response.completed"
    assert upstream.received[0]["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "go on"},
    ]


async def test_the_remembered_conversation_is_bounded(
    gateway: Gateway, upstream: FakeUpstream, connect: Any
) -> None:
    gateway.max_body = 3000
    upstream.reply = upstream.sse_reply(text_stream("ok"))
    ws = connect()
    rid = (await ws.socket.create(input="x" * 1000))[-1]["response"]["id"]
    rid = (await ws.socket.create(input="y" * 1000, previous_response_id=rid))[-1]["response"]["id"]
    assert len(upstream.received[1]["messages"]) == 3
    rid = (await ws.socket.create(input="z" * 1000, previous_response_id=rid))[-1]["response"]["id"]
    # past the bound: the third response was not remembered
    [error] = await ws.socket.create(input="w", previous_response_id=rid)
    assert error["error"]["code"] == "previous_response_not_found"


# ---- messages that are not responses --------------------------------------------------------


async def test_processed_is_silent_and_bad_messages_are_errors(
    upstream: FakeUpstream, connect: Any
) -> None:
    upstream.reply = upstream.sse_reply(text_stream("ok"))
    ws = connect()
    ws.socket.put({"type": "response.processed", "response_id": "resp_1"})
    for bad, code in (
        (b"{not json", None),
        (b"[1, 2]", "invalid_type"),
        ({"type": "response.cancel"}, "invalid_value"),
        ({"model": "m1", "input": "no type"}, "invalid_value"),
        ({"type": "response.create", "input": "no model"}, "missing_required_parameter"),
        ({"type": "response.create", "model": "m1", "temperature": 9}, "invalid_value"),
        ({"type": "response.create", "model": "nope", "input": "x"}, "model_not_found"),
    ):
        ws.socket.put(bad)
        error = orjson.loads(await ws.socket.message())
        assert error["type"] == "error" and error["error"]["code"] == code, bad
        assert error["status"] == (404 if code == "model_not_found" else 400)
    done = await ws.socket.create(input="still there?")
    assert types(done)[-1] == "response.completed"
    assert ws.socket.sent.empty() and ws.socket.closed is None


async def test_an_upstream_error_before_the_stream(upstream: FakeUpstream, connect: Any) -> None:
    upstream.reply = upstream.json_reply({"error": {"message": "bad things"}}, status=500)
    ws = connect()
    [error] = await ws.socket.create(input="hi")
    assert error["type"] == "error" and error["status"] == 502
    assert "bad things" in error["error"]["message"]
    upstream.reply = upstream.json_reply({"error": {"message": "too long", "param": "x"}}, 422)
    [error] = await ws.socket.create(input="hi")
    assert (error["status"], error["error"]["message"], error["error"]["param"]) == (
        422,
        "too long",
        "x",
    )
    upstream.reply = upstream.sse_reply(text_stream("ok"))
    assert types(await ws.socket.create(input="hi"))[-1] == "response.completed"


async def test_a_stream_that_breaks_ends_with_one_failed(
    upstream: FakeUpstream, connect: Any
) -> None:
    upstream.reply = upstream.sse_reply(text_stream("half", "way")[:3], then="drop")
    ws = connect()
    events = await ws.socket.create(input="hi")
    assert types(events).count("response.failed") == 1
    assert not {"response.completed", "response.incomplete"} & set(types(events))
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert ws.socket.closed is None
    upstream.reply = upstream.sse_reply(text_stream("ok"))
    assert types(await ws.socket.create(input="again"))[-1] == "response.completed"


async def test_the_client_gone_mid_response_cuts_the_upstream(
    gateway: Gateway, upstream: FakeUpstream, connect: Any
) -> None:
    upstream.reply = upstream.sse_reply(text_stream("a", "b")[:3], then="hang")
    ws = connect()
    ws.socket.sends_left = 3
    ws.socket.put({"type": "response.create", "model": "m1", "input": "hi"})
    await asyncio.wait_for(upstream.disconnected.wait(), WAIT)
    await asyncio.wait_for(ws.task, WAIT)
    assert gateway.in_flight == 0 and not gateway.streams and gateway.sockets == 0


# ---- the drain, and the socket's limits -------------------------------------------------------


async def test_an_idle_socket_holds_no_drain(
    gateway: Gateway, upstream: FakeUpstream, connect: Any
) -> None:
    upstream.reply = upstream.sse_reply(text_stream("ok"))
    ws = connect()
    assert types(await ws.socket.create(input="hi"))[-1] == "response.completed"
    assert await gateway.idle(0.5)
    gateway.process.drain()
    assert await ws.socket.closing() == (1001, "the gateway is shutting down")
    await asyncio.wait_for(ws.task, WAIT)
    assert gateway.in_flight == 0


async def test_the_drain_during_a_response(
    gateway: Gateway, upstream: FakeUpstream, connect: Any
) -> None:
    upstream.reply = upstream.sse_reply(text_stream("a", "b", "c", "d"), delay=0.1)
    ws = connect()
    ws.socket.put({"type": "response.create", "model": "m1", "input": "hi"})
    await ws.socket.message()  # response.created: it runs
    assert gateway.in_flight == 1
    gateway.process.drain()
    assert not await gateway.idle(0.05)
    events = [orjson.loads(m) for m in await ws.socket.response()]
    assert types(events)[-1] == "response.completed"
    assert await ws.socket.closing() == (1001, "the gateway is shutting down")
    assert await gateway.idle(1.0)


async def test_the_drain_deadline_fails_the_response(
    gateway: Gateway, upstream: FakeUpstream, connect: Any
) -> None:
    upstream.reply = upstream.sse_reply(text_stream("a")[:2], then="hang")
    ws = connect()
    ws.socket.put({"type": "response.create", "model": "m1", "input": "hi"})
    await ws.socket.message()
    gateway.process.drain()
    assert not await gateway.idle(0.2)
    gateway.cut_streams()
    events = [orjson.loads(m) for m in await ws.socket.response()]
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_shutting_down"
    assert (await ws.socket.closing())[0] == 1001


async def test_the_connection_cap(
    upstream: FakeUpstream, connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "WEBSOCKET_MAX_AGE", 0.3)
    upstream.reply = upstream.sse_reply(text_stream("a", "b", "c", "d"), delay=0.15)
    ws = connect()
    events = await ws.socket.create(input="hi")  # outlives the cap: finished all the same
    assert types(events)[-1] == "response.completed"
    error = orjson.loads(await ws.socket.message())
    assert (
        error["type"] == "error" and error["error"]["code"] == "websocket_connection_limit_reached"
    )
    assert (await ws.socket.closing())[0] == 1000
    # idle at the cap: the same
    quiet = connect()
    error = orjson.loads(await quiet.socket.message())
    assert error["error"]["code"] == "websocket_connection_limit_reached"
    assert (await quiet.socket.closing())[0] == 1000


async def test_the_idle_timeout(upstream: FakeUpstream) -> None:
    cfg = make_config(upstream.url)
    cfg = msgspec.structs.replace(cfg, http=Http(websocket_idle_timeout=0.2))
    async with open_gateway(cfg) as gateway:
        assert gateway.websocket_idle == 0.2
        ws = Client(gateway)
        assert await ws.socket.closing() == (1000, "idle timeout")
        assert ws.socket.sent.empty()
        await asyncio.wait_for(ws.task, WAIT)


async def test_the_idle_timeout_runs_from_the_last_message(
    gateway: Gateway, upstream: FakeUpstream, connect: Any
) -> None:
    gateway.websocket_idle = 0.3
    ws = connect()  # (a message before the timeout each time: the socket stays)
    upstream.reply = upstream.sse_reply(text_stream("ok"))
    for _ in range(3):
        await asyncio.sleep(0.2)
        ws.socket.put({"type": "response.processed", "response_id": "resp_1"})
    assert types(await ws.socket.create(input="hi"))[-1] == "response.completed"
    assert ws.socket.closed is None
    assert await ws.socket.closing() == (1000, "idle timeout")


# ---- what the process sees ---------------------------------------------------------------------


class Calls:
    def __init__(self) -> None:
        self.done: list[Any] = []

    def started(self, call: Any) -> None:
        pass

    def finished(self, call: Any) -> None:
        self.done.append(call)


async def test_each_response_is_a_call(
    gateway: Gateway, upstream: FakeUpstream, connect: Any
) -> None:
    calls = Calls()
    gateway.observer = calls
    upstream.reply = upstream.sse_reply(text_stream("ok"))
    ws = connect()
    await ws.socket.create(input="hi")
    await ws.socket.create(input="hi", previous_response_id="resp_nope")
    assert gateway.sockets == 1
    await ws.end()
    assert gateway.sockets == 0
    ok, failed = calls.done
    assert (ok.endpoint, ok.status, ok.outcome, ok.model) == (
        "responses_ws",
        200,
        "completed",
        "m1",
    )
    assert ok.events > 3 and ok.usage is not None and ok.ttft is not None
    assert (failed.endpoint, failed.status, failed.outcome) == ("responses_ws", 400, "failed")
    assert ok.rid != failed.rid
    # a socket whose handler is cancelled (its server shut down) is no request either
    cut = connect()
    assert types(await cut.socket.create(input="hi"))[-1] == "response.completed"
    cut.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cut.task
    assert [c.endpoint for c in calls.done] == ["responses_ws"] * 3
    assert gateway.in_flight == 0 and gateway.sockets == 0


async def test_a_non_streaming_upstream(upstream: FakeUpstream, start_gateway: Any) -> None:
    """A deployment that does not stream: its whole answer is replayed as the events."""
    cfg = make_config(upstream.url, supports={"streaming": False})
    async with open_gateway(cfg) as gateway:
        upstream.reply = upstream.json_reply(completion("whole"))
        ws = Client(gateway)
        events = await ws.socket.create(input="hi")
        assert types(events)[-1] == "response.completed"
        assert events[-1]["response"]["output"][0]["content"][0]["text"] == "whole"
        assert "stream" not in upstream.received[0]
        await ws.end()


async def test_metrics_access_log_and_the_client_key(upstream: FakeUpstream) -> None:
    out = io.BytesIO()
    cfg = msgspec.structs.replace(
        make_config(upstream.url), auth=Auth(keys_env="K"), ops=Ops(log_format="json")
    )
    async with open_gateway(cfg, {"K": "sk-key"}, access_out=out) as gateway:
        wrong = Client(gateway, headers=[(b"authorization", b"Bearer sk-nope")])
        refused = await asyncio.wait_for(wrong.task, WAIT)
        assert refused.status == 401 and wrong.request.accepted is None
        upstream.reply = upstream.sse_reply(text_stream("a", "b"))
        ws = Client(gateway, headers=[(b"authorization", b"Bearer sk-key")])
        events = await ws.socket.create(input="hi")
        await ws.socket.create(input="x", previous_response_id="resp_gone")
        scrape = gateway.ops[("GET", "/metrics")]
        during = parse((await scrape(ws.request)).body)  # type: ignore[union-attr, arg-type]
        assert value(during, "gateway_websockets_open") == 1
        assert value(during, "gateway_requests_in_flight") == 0
        await ws.end()
        after = parse((await scrape(ws.request)).body)  # type: ignore[union-attr, arg-type]
        assert value(after, "gateway_websockets_open") == 0
        total = "gateway_requests_total"
        assert value(after, total, endpoint="responses_ws", status="200") == 1
        assert value(after, total, endpoint="responses_ws", status="400") == 1
        assert value(after, total, endpoint="responses", status="401") == 1
        assert value(after, total) == 3  # (the upgrade itself is not a request of its own)
        assert value(after, "gateway_stream_events_total", endpoint="responses_ws") == len(events)
        await asyncio.sleep(0.15)
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [(a["endpoint"], a["status"]) for a in lines] == [
        ("responses", 401),
        ("responses_ws", 200),
        ("responses_ws", 400),
    ]
    assert lines[1]["events"] == len(events) and len(lines[1]["tenant"]) == 12
    assert lines[2]["error"] == "previous_response_not_found"
