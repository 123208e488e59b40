"""The lean upstream client against raw sockets: reuse, stale connections, framing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from gateway.demo.upstream import DemoOptions, make_server
from gateway.errors import (
    UpstreamBadResponse,
    UpstreamBusy,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.upstream.connection import UpstreamConnection
from gateway.upstream.pool import Pool
from tests.conftest import read_request

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Serve], object]]:
    """``await raw_server(handler)`` → a base URL; at the end, every connection the
    handlers still hold is cut (so that a failed test does not hang its handlers)."""
    servers: list[asyncio.Server] = []
    held: list[tuple[asyncio.StreamWriter, asyncio.Task]] = []

    async def start(handler: Serve) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            held.append((writer, task))
            await handler(reader, writer)  # type: ignore[misc]

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    yield start  # type: ignore[misc]
    for s in servers:
        s.close()
    for writer, task in held:
        writer.transport.abort()
        task.cancel()
    await asyncio.sleep(0)


def pool(url: str, read_timeout: float = 5.0) -> Pool:
    return Pool(url, connect_timeout=2.0, read_timeout=read_timeout)


async def test_keep_alive_reuse_and_stale_retry(raw_server: Callable) -> None:
    connections = 0
    requests: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            for _ in range(2):  # serve two requests, then close the idle connection
                requests.append(await read_request(reader))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    p = pool(await raw_server(handler))
    head = p.head("POST", "/chat/completions", {"Content-Type": "application/json"})
    for _ in range(5):
        resp = await p.request(head, b"{}")
        assert resp.status == 200 and await resp.read() == b"ok"
        resp.release()
        await asyncio.sleep(0.01)
    assert len(requests) == 5
    assert connections == 3
    assert requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
    assert requests[0].endswith(b"Content-Length: 2\r\n\r\n{}")
    p.close()


async def test_body_until_eof_and_chunked(raw_server: Callable) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = await read_request(reader)
        if b"/eof" in req:
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"3\r\nabc\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"2\r\nde\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()

    p = pool(await raw_server(handler))
    resp = await p.request(p.head("GET", "/eof", {}), b"")
    assert await resp.read() == b"until the end"
    resp.release()
    resp = await p.request(p.head("GET", "/chunked", {}), b"")
    assert await resp.read_some() == b"abc"
    assert await resp.read_some() == b"de"
    assert await resp.read_some() == b""
    resp.release()
    p.close()


async def test_errors(raw_server: Callable) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = await read_request(reader)
        if b"/garbage" in req:
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        elif b"/cut" in req:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        elif b"/slow" in req:
            await reader.read()  # answers nothing until the client gives up
        await writer.drain()
        writer.close()

    p = pool(await raw_server(handler), read_timeout=0.2)
    with pytest.raises(UpstreamBadResponse):
        await p.request(p.head("GET", "/garbage", {}), b"")
    resp = await p.request(p.head("GET", "/cut", {}), b"")
    with pytest.raises(UpstreamUnavailable):
        await resp.read()
    resp.release()
    with pytest.raises(UpstreamTimeout):
        await p.request(p.head("GET", "/slow", {}), b"")
    closed = pool("http://127.0.0.1:9/v1")
    with pytest.raises(UpstreamUnavailable):
        await closed.request(closed.head("GET", "/x", {}), b"")
    p.close()


BIG = bytes(range(256)) * (8 * 1024)  # 2 MiB


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("how", ["read", "read_some"])
async def test_two_mib_answer_arrives_intact(raw_server: Callable, framing: str, how: str) -> None:
    """Far above the high-water mark: reading pauses and resumes, and never stalls."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if framing == "length":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG) + BIG)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(BIG), 5000):
                piece = BIG[i : i + 5000]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.read(), 5)  # until the client closes
        writer.close()

    p = pool(await raw_server(handler), read_timeout=2.0)
    resp = await p.request(p.head("POST", "/chat/completions", {}), b"{}")
    try:
        if how == "read":
            got = await resp.read()
        else:
            parts = []
            while data := await resp.read_some():
                parts.append(data)
            got = b"".join(parts)
    finally:
        resp.release()
        p.close()
    assert len(got) == len(BIG) and got == BIG


DONE = b"data: [DONE]\n\n"


async def read_stream(resp: UpstreamConnection) -> bytes:
    """As the endpoints read a stream: until ``[DONE]``, then release."""
    got = b""
    while not got.endswith(DONE):
        data = await resp.read_some()
        assert data, "the body ended before [DONE]"
        got += data
    return got


async def test_streams_reuse_one_connection_when_the_end_comes_late(raw_server: Callable) -> None:
    """Model servers send ``[DONE]``, and the end of the chunked body a moment later."""
    accepts = 0
    requests = 0
    served = 0
    cuts = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepts, requests, served, cuts
        accepts += 1
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError as exc:
                cuts += bool(exc.partial)  # a clean end is between two requests
                break
            events = b'data: {"n": %d}\n\n' % requests + DONE
            requests += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
            writer.write(b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(events), events))
            await writer.drain()
            await asyncio.sleep(0.05)
            if reader.at_eof() or reader.exception() is not None:
                cuts += 1  # the client left before the end of the body
                break
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            served += 1
        writer.close()

    p = pool(await raw_server(handler))
    head = p.head("POST", "/chat/completions", {})
    for i in range(20):
        resp = await p.request(head, b"{}")
        assert await read_stream(resp) == b'data: {"n": %d}\n\n' % i + DONE
        resp.release()
    while served < 20 and cuts == 0:  # the last end arrives off our path
        await asyncio.sleep(0.01)
    p.close()
    await asyncio.sleep(0.05)
    assert (accepts, served, cuts) == (1, 20, 0)


async def test_released_mid_answer_closes_a_server_that_keeps_sending(
    raw_server: Callable,
) -> None:
    """The client left mid-answer and the upstream keeps generating: the drain's bound
    on bytes closes the connection, long before its time bound."""
    closed = asyncio.Event()
    sent_after_release = 0
    released = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent_after_release
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"data: " + b"x" * 4000 + b"\n\n"
        frame = b"%x\r\n%s\r\n" % (len(piece), piece)
        try:
            for _ in range(10_000):  # 40 MB at most
                writer.write(frame)
                await writer.drain()
                if released.is_set():
                    sent_after_release += len(frame)
                if reader.at_eof():
                    break
                await asyncio.sleep(0.001)
        except ConnectionError:
            pass
        closed.set()
        writer.close()

    p = Pool(await raw_server(handler), connect_timeout=2.0, read_timeout=5.0, drain_timeout=60.0)
    resp = await p.request(p.head("POST", "/chat/completions", {}), b"{}")
    assert await resp.read_some()
    resp.release()
    released.set()
    await asyncio.wait_for(closed.wait(), 10)
    assert resp.transport is None and not p.idle
    assert sent_after_release > 0  # it did keep sending after the release
    p.close()


async def test_cancelled_read_closes_at_once(raw_server: Callable) -> None:
    """A reader cancelled while it waits (the client went away): closed without a drain,
    so that an upstream generating slowly sees the client gone now."""
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await reader.read()  # nothing more, until the client closes
        closed.set()
        writer.close()

    p = Pool(await raw_server(handler), connect_timeout=2.0, read_timeout=60.0, drain_timeout=60.0)
    resp = await p.request(p.head("POST", "/chat/completions", {}), b"{}")
    assert await resp.read_some() == b"hello"

    async def pump() -> None:
        try:
            while await resp.read_some():
                pass
        finally:
            resp.release()

    task = asyncio.ensure_future(pump())
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.wait_for(closed.wait(), 10)
    p.close()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the loop run until ``condition`` holds (a bounded wait, not a timing test)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


def counting_server(accepts: list[int], eofs: asyncio.Queue[None]) -> Serve:
    """Answers each request at once with ``ok``; counts connections and clean ends."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepts[0] += 1
        try:
            while True:
                await read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            eofs.put_nowait(None)
        writer.close()

    return handler


async def test_connection_cap_waits_for_a_free_one(raw_server: Callable) -> None:
    accepts = [0]
    url = await raw_server(counting_server(accepts, asyncio.Queue()))
    p = Pool(url, connect_timeout=2.0, read_timeout=5.0, max_connections=2, pool_timeout=10.0)
    head = p.head("POST", "/chat/completions", {})
    first = await p.request(head, b"{}")
    second = await p.request(head, b"{}")
    third = asyncio.ensure_future(p.request(head, b"{}"))
    await until(lambda: len(p.waiters) == 1, "the third request waits")
    assert accepts[0] == 2 and p.open == 2 and not third.done()
    assert await first.read() == b"ok"
    first.release()  # handed to the third request
    resp = await asyncio.wait_for(third, 5)
    assert resp is first and await resp.read() == b"ok"
    resp.release()
    second.release()  # (unread: its rest is drained, then pooled)
    await until(lambda: len(p.idle) == 2, "both pooled")
    assert accepts[0] == 2 and p.open == 2
    p.close()
    await until(lambda: p.open == 0 and not p.conns, "all closed")


async def test_connection_cap_fails_clearly_past_the_wait(raw_server: Callable) -> None:
    accepts = [0]
    url = await raw_server(counting_server(accepts, asyncio.Queue()))
    p = Pool(url, connect_timeout=2.0, read_timeout=5.0, max_connections=2, pool_timeout=0.2)
    head = p.head("POST", "/chat/completions", {})
    held = [await p.request(head, b"{}") for _ in range(2)]
    with pytest.raises(UpstreamBusy) as caught:
        await p.request(head, b"{}")
    err = caught.value
    assert err.status == 503 and isinstance(err, UpstreamUnavailable)
    assert "All 2 connections to the upstream server at 127.0.0.1:" in err.message
    assert "none came free within 0.2 s" in err.message
    assert accepts[0] == 2 and p.open == 2 and not p.waiters
    for resp in held:
        await resp.read()
        resp.release()
    assert len(p.idle) == 2 and p.open == 2
    p.close()


async def test_no_slot_leaks_on_failure_or_cancel(raw_server: Callable) -> None:
    silent = asyncio.Event()
    eofs = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal eofs
        await read_request(reader)
        await reader.read()  # never answers; returns when the client closes
        eofs += 1
        silent.set()
        writer.close()

    p = Pool(await raw_server(handler), connect_timeout=2.0, read_timeout=30.0, max_connections=1)
    head = p.head("POST", "/chat/completions", {})
    # cancelled while waiting for the headers: the connection is closed, its slot free
    task = asyncio.ensure_future(p.request(head, b"{}"))
    await until(lambda: p.open == 1 and p.conns, "connected")
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert p.open == 0
    await asyncio.wait_for(silent.wait(), 5)
    # cancelled while waiting for a slot: nothing taken
    task = asyncio.ensure_future(p.request(head, b"{}"))
    await until(lambda: p.open == 1 and p.conns, "connected again")
    waiter = asyncio.ensure_future(p.request(head, b"{}"))
    await until(lambda: len(p.waiters) == 1, "waiting for the slot")
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not p.waiters and p.open == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert p.open == 0
    # a connect that fails gives its slot back
    refused = Pool(
        "http://127.0.0.1:9/v1", connect_timeout=2.0, read_timeout=1.0, max_connections=1
    )
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable):
            await refused.request(refused.head("GET", "/x", {}), b"")
        assert refused.open == 0
    p.close()


async def test_idle_connections_closed_by_the_timer(raw_server: Callable) -> None:
    accepts = [0]
    eofs: asyncio.Queue[None] = asyncio.Queue()
    url = await raw_server(counting_server(accepts, eofs))
    p = Pool(url, connect_timeout=2.0, read_timeout=5.0, idle_timeout=0.2)
    head = p.head("POST", "/chat/completions", {})
    resps = [await p.request(head, b"{}") for _ in range(3)]
    for resp in resps:
        assert await resp.read() == b"ok"
        resp.release()
    assert len(p.idle) == 3 and p.open == 3
    for _ in range(3):  # the server sees each end without another request
        await asyncio.wait_for(eofs.get(), 5)
    assert not p.idle and p.open == 0 and p.sweeper is None
    resp = await p.request(head, b"{}")  # and the pool still works
    assert await resp.read() == b"ok"
    resp.release()
    p.close()
    assert p.sweeper is None
    await asyncio.wait_for(eofs.get(), 5)
    assert accepts[0] == 4


async def test_close_ends_draining_connections(raw_server: Callable) -> None:
    ended = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"%x\r\n%s\r\n" % (len(DONE), DONE))  # and the end never comes
        await writer.drain()
        await reader.read()
        ended.set()
        writer.close()

    p = Pool(await raw_server(handler), connect_timeout=2.0, read_timeout=5.0, drain_timeout=60.0)
    resp = await p.request(p.head("POST", "/chat/completions", {}), b"{}")
    assert await read_stream(resp) == DONE
    resp.release()
    assert p.draining == 1 and p.open == 1
    p.close()
    await asyncio.wait_for(ended.wait(), 5)
    assert p.draining == 0 and p.open == 0
    with pytest.raises(UpstreamUnavailable):
        await p.request(p.head("GET", "/x", {}), b"")


async def test_demo_streams_share_one_connection() -> None:
    """Against aiohttp (the bundled demo: the chunked body's end is a write of its
    own after ``[DONE]``), and the demo's connection count the bench reads."""
    demo = make_server(DemoOptions(record=False))
    server = await asyncio.get_running_loop().create_server(demo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    p = pool(f"http://127.0.0.1:{port}/v1")
    stats = pool(f"http://127.0.0.1:{port}")
    try:
        head = p.head("POST", "/chat/completions", {"Content-Type": "application/json"})
        body = orjson.dumps(
            {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        )
        for _ in range(20):
            resp = await p.request(head, body)
            assert resp.status == 200 and b'"finish_reason":"stop"' in await read_stream(resp)
            resp.release()
        resp = await stats.request(stats.head("GET", "/demo/stats", {}), b"")
        stats_doc = orjson.loads(await resp.read())
        assert stats_doc["connections_accepted"] == 2  # ours + this
        assert stats_doc["connections_open"] == 2 and stats_doc["streams_cut"] == 0
        resp.release()
    finally:
        stats.close()
        p.close()
        server.close()
        await demo.shutdown(1.0)
