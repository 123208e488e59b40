"""Streaming ``/v1/responses``: the SDK's helpers, exact framing, failures, disconnects."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import openai
import orjson
import pydantic
import pytest
from aiohttp import web

from tests.conftest import (
    DONE,
    WEATHER,
    FakeUpstream,
    chunk,
    completion,
    make_config,
    read_request,
    sdk,
    text_stream,
    usage_chunk,
)

TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


def parse_sse(raw: bytes) -> list[tuple[str, dict]]:
    """Strict parse of the gateway's framing: ``event: T\\ndata: {json}\\n\\n`` per event."""
    events = []
    for block in raw.split(b"\n\n"):
        if not block or block.startswith(b":"):
            continue
        lines = block.split(b"\n")
        assert len(lines) == 2, block
        assert lines[0].startswith(b"event: ") and lines[1].startswith(b"data: "), block
        name = lines[0][7:].decode()
        data = orjson.loads(lines[1][6:])
        assert data["type"] == name
        events.append((name, data))
    assert raw.endswith(b"\n\n")
    return events


def check_stream(events: list[tuple[str, dict]]) -> dict:
    names = [n for n, _ in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert names[-1] in TERMINAL and sum(n in TERMINAL for n in names) == 1
    rid = events[0][1]["response"]["id"]
    assert all(d["response"]["id"] == rid for n, d in events if "response" in d)
    return events[-1][1]["response"]


async def post_stream(url: str, body: dict) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/responses", json={**body, "stream": True}) as r:
            return r.status, await r.read()


def tool_call_chunks(index: int, call_id: str, name: str, *args: str) -> list[bytes]:
    first = {"index": index, "id": call_id, "type": "function",
             "function": {"name": name, "arguments": ""}}  # fmt: skip
    out = [chunk({"tool_calls": [first]})]
    for a in args:
        out.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": a}}]}))
    return out


async def test_text_stream_framing_and_sdk_agree(
    gateway_url: str, client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.reply = upstream.sse_reply(text_stream("Hel", "lo ", 'wo"rld', " é🙂\n"))
    status, raw = await post_stream(gateway_url, {"model": "m1", "input": "hi"})
    assert status == 200
    events = parse_sse(raw)
    final = check_stream(events)
    names = [n for n, _ in events]
    assert names == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", *["response.output_text.delta"] * 4,
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed",
    ]  # fmt: skip
    assert final["output"][0]["content"][0]["text"] == 'Hello wo"rld é🙂\n'
    assert final["usage"]["input_tokens"] == 5 and final["usage"]["output_tokens"] == 7
    assert upstream.received[-1]["stream"] is True
    assert upstream.received[-1]["stream_options"] == {"include_usage": True}

    async with client.responses.stream(model="m1", input="hi") as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        resp = await stream.get_final_response()
    assert "".join(deltas) == resp.output_text == 'Hello wo"rld é🙂\n'
    upstream.reply = upstream.json_reply(completion('Hello wo"rld é🙂\n'))
    plain = await client.responses.create(model="m1", input="hi")
    assert plain.output_text == resp.output_text


async def test_create_stream_true(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    upstream.reply = upstream.sse_reply(text_stream("a", "b"))
    stream = await client.responses.create(model="m1", input="hi", stream=True)
    types = [e.type async for e in stream]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert types.count("response.output_text.delta") == 2


async def test_tools_and_parallel_tools(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    events = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Checking."}),
        *tool_call_chunks(0, "call_A", "get_weather", '{"city"', ': "Paris"}'),
        *tool_call_chunks(1, "call_B", "get_weather", '{"city": "Rome"}'),
        chunk({}, "tool_calls"),
        usage_chunk(),
        DONE,
    ]
    upstream.reply = upstream.sse_reply(events)
    async with client.responses.stream(model="m1", input="x", tools=[WEATHER]) as stream:
        resp = await stream.get_final_response()
    assert [o.type for o in resp.output] == ["message", "function_call", "function_call"]
    assert resp.output_text == "Checking."
    calls = [o for o in resp.output if o.type == "function_call"]
    assert [(c.call_id, json.loads(c.arguments)) for c in calls] == [
        ("call_A", {"city": "Paris"}),
        ("call_B", {"city": "Rome"}),
    ]
    # the same answer, not streamed, gives the same output
    tc = [
        {"id": "call_A", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_B", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
    ]  # fmt: skip
    upstream.reply = upstream.json_reply(
        completion("Checking.", finish="tool_calls", tool_calls=tc)
    )
    plain = await client.responses.create(model="m1", input="x", tools=[WEATHER])

    def summary(items: list[Any]) -> list[tuple]:
        return [
            (o.type, o.status, o.content[0].text)
            if o.type == "message"
            else (o.type, o.status, o.call_id, o.name, o.arguments)
            for o in items
        ]

    assert summary(plain.output) == summary(resp.output)


class City(pydantic.BaseModel):
    name: str
    population: int


async def test_structured_output_stream(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    upstream.reply = upstream.sse_reply(text_stream('{"name": "Pa', 'ris", "population": 2}'))
    async with client.responses.stream(model="m1", input="x", text_format=City) as stream:
        resp = await stream.get_final_response()
    assert resp.output_parsed == City(name="Paris", population=2)
    assert upstream.received[-1]["response_format"]["json_schema"]["name"] == "City"


async def test_length_is_incomplete(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    upstream.reply = upstream.sse_reply(text_stream("cut", finish="length"))
    stream = await client.responses.create(model="m1", input="x", stream=True, max_output_tokens=1)
    events = [e async for e in stream]
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.output[0].status == "incomplete"  # type: ignore[union-attr]
    assert upstream.received[-1]["max_tokens"] == 1
    async with client.responses.stream(model="m1", input="x") as s:
        async for _ in s:
            pass
        with pytest.raises(RuntimeError):
            await s.get_final_response()


async def test_created_before_first_upstream_chunk(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    release = asyncio.Event()

    async def slow(request: web.BaseRequest, body: dict) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        await release.wait()
        for ev in text_stream("late"):
            await out.write(ev)
        await out.write_eof()
        return out

    upstream.reply = slow
    async with aiohttp.ClientSession() as s:
        async with s.post(
            gateway_url + "/responses", json={"model": "m1", "input": "x", "stream": True}
        ) as r:
            head = b""
            while head.count(b"\n\n") < 2:
                head += await asyncio.wait_for(r.content.readany(), 5)
            names = [n for n, _ in parse_sse(head)]
            assert names == ["response.created", "response.in_progress"]
            release.set()
            rest = await r.read()
    final = check_stream(parse_sse(head + rest))
    assert final["status"] == "completed"


async def test_upstream_error_status_is_plain_http_error(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.reply = upstream.json_reply({"error": {"message": "too long", "code": None}}, 400)
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model="m1", input="x", stream=True)
    assert "too long" in info.value.message


FAILURES = {
    "drop": ([chunk({"content": "partial"})], "drop"),
    "malformed": ([chunk({"content": "a"}), b"data: {not json\n\n"], "end"),
    "inband_error": (
        [chunk({"content": "a"}), b'data: {"error": {"message": "engine died", "code": 500}}\n\n'],
        "end",
    ),
    "no_finish": ([chunk({"content": "a"}), DONE], "end"),
    "eof_no_finish": ([chunk({"content": "a"})], "end"),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
async def test_failures_end_in_response_failed(
    gateway_url: str, upstream: FakeUpstream, case: str
) -> None:
    events, then = FAILURES[case]
    upstream.reply = upstream.sse_reply(events, then=then)
    status, raw = await post_stream(gateway_url, {"model": "m1", "input": "x"})
    assert status == 200
    evs = parse_sse(raw)
    final = check_stream(evs)
    assert evs[-1][0] == "response.failed"
    assert final["status"] == "failed" and final["error"]["code"] == "server_error"
    assert final["error"]["message"]
    # what was sent stays true: the partial text is in the failed response's output
    sent = "".join(d["delta"] for n, d in evs if n == "response.output_text.delta")
    assert sent in ("partial", "a")
    assert final["output"][0]["content"][0]["text"] == sent
    if case == "inband_error":
        assert "engine died" in final["error"]["message"]


async def test_idle_timeout_fails_stream(upstream: FakeUpstream, start_gateway: Any) -> None:
    url = await start_gateway(make_config(upstream.url, read_timeout=0.3))
    upstream.reply = upstream.sse_reply([chunk({"content": "a"})], then="hang")
    t0 = time.monotonic()
    status, raw = await post_stream(url, {"model": "m1", "input": "x"})
    assert time.monotonic() - t0 < 5
    final = check_stream(parse_sse(raw))
    assert final["status"] == "failed" and "timed out" in final["error"]["message"]


async def test_non_streaming_deployment_still_streams(
    upstream: FakeUpstream, start_gateway: Any, client: openai.AsyncOpenAI
) -> None:
    tc = [{"id": "call_A", "type": "function",
           "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]  # fmt: skip
    upstream.reply = upstream.json_reply(
        completion("Let me look.", finish="tool_calls", tool_calls=tc)
    )
    url = await start_gateway(make_config(upstream.url, supports={"streaming": False}))
    status, raw = await post_stream(url, {"model": "m1", "input": "x", "tools": [WEATHER]})
    assert "stream" not in upstream.received[-1]
    evs = parse_sse(raw)
    final = check_stream(evs)
    names = [n for n, _ in evs]
    assert "response.output_text.delta" in names
    assert "response.function_call_arguments.delta" in names
    assert [o["type"] for o in final["output"]] == ["message", "function_call"]
    async with sdk(url) as c:
        async with c.responses.stream(model="m1", input="x", tools=[WEATHER]) as s:
            resp = await s.get_final_response()
    assert resp.output_text == "Let me look."


async def test_keepalive_comment_while_upstream_silent(
    upstream: FakeUpstream, start_gateway: Any
) -> None:
    url = await start_gateway(make_config(upstream.url, keepalive=0.3))
    upstream.reply = upstream.sse_reply(
        [chunk({"content": "a"}), chunk({"content": "b"}), chunk({}, "stop"), DONE], delay=0.8
    )
    status, raw = await post_stream(url, {"model": "m1", "input": "x"})
    assert b"\n\n: keepalive\n\n" in raw
    final = check_stream(parse_sse(raw))
    assert final["output"][0]["content"][0]["text"] == "ab"


@pytest.mark.parametrize("path", ["/responses", "/chat/completions"])
async def test_client_disconnect_cancels_upstream(
    gateway_url: str, upstream: FakeUpstream, path: str
) -> None:
    upstream.reply = upstream.sse_reply([chunk({"content": "a"})], then="hang")
    body = {"model": "m1", "input": "x", "messages": [{"role": "user", "content": "x"}],
            "stream": True}  # fmt: skip
    async with aiohttp.ClientSession() as s:
        r = await s.post(gateway_url + path, json=body)
        await asyncio.wait_for(r.content.readany(), 5)
        await asyncio.sleep(0.05)
        assert not upstream.disconnected.is_set()
        r.close()  # drop the connection mid-stream
        t0 = time.monotonic()
        await asyncio.wait_for(upstream.disconnected.wait(), 2)
        assert time.monotonic() - t0 < 0.1 + 0.02  # the upstream's own poll period


async def test_slow_reader_back_pressure(gateway_url: str, upstream: FakeUpstream) -> None:
    """A client that stops reading stops the gateway reading from the upstream."""
    piece = chunk({"content": "x" * 4000})
    written = 0
    stop = asyncio.Event()

    async def firehose(request: web.BaseRequest, body: dict) -> web.StreamResponse:
        nonlocal written
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        try:
            while not stop.is_set() and written < 200_000_000:
                await out.write(piece)
                written += len(piece)
        except (ConnectionError, asyncio.CancelledError):
            pass
        return out

    upstream.reply = firehose
    async with aiohttp.ClientSession(read_bufsize=2**16) as s:
        r = await s.post(
            gateway_url + "/responses", json={"model": "m1", "input": "x", "stream": True}
        )
        await r.content.readany()
        await asyncio.sleep(1.0)  # the client reads nothing
        first = written
        await asyncio.sleep(0.5)
        stalled = written - first
        stop.set()
        r.close()
    # Buffers along the way (socket buffers on two connections, aiohttp's) are
    # bounded; a gateway without back-pressure would have pulled everything.
    assert first < 32_000_000, first
    assert stalled < 1_000_000, stalled


async def test_events_held_back_are_written_before_an_upstream_failure(
    start_gateway: Any,
) -> None:
    """Deltas and the upstream's drop arrive together: the deltas still go out first.

    A raw upstream sends the head and three chunks and closes its connection in the
    same write, so the gateway's upstream connection may hold the three chunks and
    the loss at once; the frames the stream holds back for the next read must be
    written before that read raises, or the client would see a gap before
    ``response.failed``.
    """
    body = b"".join(chunk({"content": t}) for t in ("a", "b", "c"))
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(body), body)
    )

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)  # mid-body: the upstream goes away
        writer.close()

    raw = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        port = raw.sockets[0].getsockname()[1]
        url = await start_gateway(make_config(f"http://127.0.0.1:{port}/v1"))
        status, data = await post_stream(url, {"model": "m1", "input": "x", "stream": True})
    finally:
        raw.close()
    assert status == 200
    events = parse_sse(data)
    check_stream(events)
    assert [d["delta"] for n, d in events if n == "response.output_text.delta"] == ["a", "b", "c"]
    assert [n for n, _ in events][-1] == "response.failed"
