"""The lean server's bounds over raw sockets, with exact bytes: head sizes and counts
(431), Host (400), Expect (417), slow heads and bodies (408), the connection cap (503),
megabyte bodies that must not stall, request headers as handlers see them, and
header values that must never inject a header into an answer."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from gateway.config import Http
from gateway.http.messages import Incoming, Reply, Response
from gateway.http.server import Server
from tests.integration.test_http_server import check_status, closed, read_response

MiB = 1024 * 1024
BIG = 8 * MiB

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def handle(request: Incoming) -> Reply:
    if request.path == "/sha":  # the body's length and digest
        body = await request.content.read(BIG)
        digest = hashlib.sha256(body).hexdigest()
        return Response(body=b"%d %s" % (len(body), digest.encode()), content_type="text/plain")
    if request.path == "/headers":
        h = request.headers
        doc = {
            "count": len(h),
            "id": h.get("x-request-id"),
            "ID": h.get("X-REQUEST-ID"),
            "all": h.getall("x-multi"),
            "absent": h.get("authorization"),
        }
        return Response(body=orjson.dumps(doc), content_type="application/json")
    if request.path == "/inject":
        return Response(body=b"x", headers={"X-Echo": request.headers.get("x-echo") or ""})
    return Response(body=b"ok", content_type="text/plain")


Start = Callable[..., Awaitable[Callable[[], Awaitable[Conn]]]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    servers: list[tuple[asyncio.Server, Server]] = []
    writers: list[asyncio.StreamWriter] = []

    async def start_(**limits: Any) -> Callable[[], Awaitable[Conn]]:
        loop = asyncio.get_running_loop()
        server = Server(handle, max_body=BIG, limits=Http(**limits))
        listener = await loop.create_server(server, "127.0.0.1", 0)
        servers.append((listener, server))
        port = listener.sockets[0].getsockname()[1]

        async def open_() -> Conn:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
            return reader, writer

        return open_

    yield start_
    for w in writers:
        w.close()
    for listener, server in servers:
        listener.close()
        await server.shutdown(1.0)


async def test_one_huge_header_line_in_one_write_is_431(start: Start) -> None:
    """The bug: a 100 KB header line sent in one write was answered 200."""
    reader, writer = await (await start())()
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 100_000 + b"\r\n\r\n")
    error = await check_status(reader, 431)
    assert error["code"] == "request_header_fields_too_large"


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431),  # request line
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 8190 + b"\r\n\r\n", 431),  # one line
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(128))
         + b"\r\n", 431),  # 129 headers
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 8000) for i in range(9))
         + b"Host: x\r\n\r\n", 431),  # every line fits, the whole head does not
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 200-ok\r\n\r\n", 417),
    ],
)  # fmt: skip
async def test_head_refusals(start: Start, head: bytes, status: int) -> None:
    reader, writer = await (await start())()
    writer.write(head)
    await check_status(reader, status)


async def test_limits_are_exact(start: Start) -> None:
    """One below each bound passes: 127 headers plus Host, a line of 8190 bytes."""
    open_ = await start()
    reader, writer = await open_()
    head = b"GET /headers HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-%d: v\r\n" % i for i in range(127)
    )
    writer.write(head + b"\r\n")
    status, _, body = await read_response(reader)
    assert status == 200 and orjson.loads(body)["count"] == 128
    reader, writer = await open_()
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * (8190 - 5) + b"\r\n\r\n")
    assert (await read_response(reader))[0] == 200


async def test_configured_limits_apply(start: Start) -> None:
    open_ = await start(max_headers=3, max_request_line=64)
    reader, writer = await open_()
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")
    await check_status(reader, 431)
    reader, writer = await open_()
    writer.write(b"GET /" + b"a" * 64 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    await check_status(reader, 431)


async def test_slow_head_is_408_and_closed(start: Start) -> None:
    reader, writer = await (await start(head_timeout=0.2))()
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    for _ in range(3):  # trickling bytes does not reset the clock
        await asyncio.sleep(0.1)
        writer.write(b"y")
    error = await check_status(reader, 408)
    assert error["code"] == "request_timeout"


async def test_trickling_body_is_408(start: Start) -> None:
    reader, writer = await (await start(body_timeout=0.2))()
    writer.write(b"POST /sha HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    status, headers, body = await read_response(reader)
    assert status == 408 and orjson.loads(body)["error"]["code"] == "request_timeout"
    assert headers["connection"] == "close"


async def test_connections_beyond_the_cap_get_503(start: Start) -> None:
    open_ = await start(max_connections=2)
    first, second = await open_(), await open_()
    await asyncio.sleep(0.05)
    reader, _ = await open_()
    status, headers, body = await read_response(reader)
    assert status == 503 and headers["retry-after"] == "1"  # as every "full, retry later"
    assert orjson.loads(body)["error"]["code"] == "server_overloaded"
    for r, w in (first, second):  # the two held connections still work
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(r))[2] == b"ok"


@pytest.mark.parametrize("size", [0, 1, 300_000, 3 * MiB, 6 * MiB])
@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("piece", [None, 65_536])
async def test_megabyte_bodies_do_not_stall(
    start: Start, size: int, framing: str, piece: int | None
) -> None:
    """The bug: a body over the read-pause mark (256 KiB) was never read to its end."""
    reader, writer = await (await start())()
    body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    if framing == "length":
        head = b"POST /sha HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size
        wire = head + body
    else:
        head = b"POST /sha HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        step = 100_000
        chunks = [body[i : i + step] for i in range(0, size, step)]
        wire = head + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    if piece is None:
        writer.write(wire)
    else:
        for i in range(0, len(wire), piece):
            writer.write(wire[i : i + piece])
            await writer.drain()
    status, _, answer = await asyncio.wait_for(read_response(reader), 30)
    assert status == 200
    assert answer == b"%d %s" % (size, hashlib.sha256(body).hexdigest().encode())
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # and the connection is reusable
    assert (await read_response(reader))[2] == b"ok"


async def test_body_over_the_limit_by_length_is_413_before_reading(start: Start) -> None:
    reader, writer = await (await start())()
    writer.write(b"POST /sha HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (BIG + 1))
    status, headers, body = await read_response(reader)
    assert status == 413 and headers["connection"] == "close"
    assert orjson.loads(body)["error"]["code"] == "request_too_large"


async def test_handlers_see_headers_case_insensitively(start: Start) -> None:
    reader, writer = await (await start())()
    writer.write(
        b"GET /headers HTTP/1.1\r\nHost: x\r\nX-Request-ID: abc-1\r\n"
        b"x-multi: 1\r\nX-Multi: 2\r\n\r\n"
    )
    status, _, body = await read_response(reader)
    assert orjson.loads(body) == {
        "count": 4, "id": "abc-1", "ID": "abc-1", "all": ["1", "2"], "absent": None,
    }  # fmt: skip


async def test_a_header_value_never_injects_a_header(start: Start) -> None:
    """A client's value echoed into an answer: obs-text passes, control characters are
    refused before anything is written (500), so no line can be injected."""
    open_ = await start()
    reader, writer = await open_()
    writer.write(b"GET /inject HTTP/1.1\r\nHost: x\r\nX-Echo: caf\xe9 ok\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers["x-echo"] == "caf\xe9 ok"
    for value in ("a\r\nInjected: 1", "a\nInjected: 1", "a\x00b", "a\x7fb"):
        with pytest.raises(ValueError):
            Response(headers={"X-Echo": value}).encode(True, False, False)
    with pytest.raises(ValueError):
        Response(headers={"X Bad": "v"}).encode(True, False, False)


async def test_refusals_are_logged_once_per_burst(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    open_ = await start()
    for _ in range(5):
        reader, writer = await open_()
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        await check_status(reader, 400)
    lines = [r for r in caplog.records if r.getMessage().startswith("refused:")]
    assert len(lines) == 1
    assert await closed(reader)
