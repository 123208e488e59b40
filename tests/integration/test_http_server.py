"""The lean HTTP/1.1 server (``gateway.http.server``) over raw sockets: framing,
keep-alive, pipelining, request bodies, 100-continue, errors, disconnects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest

from gateway.config import Http
from gateway.http.messages import Reply, Response, StreamResponse
from gateway.http.request import Request
from gateway.http.server import Server

MAX_BODY = 1000


class App:
    """Routes for the tests; ``cancelled`` is set when a handler is cancelled."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.started = asyncio.Event()
        self.seen: list[str] = []

    async def handle(self, request: Request) -> Reply:
        self.seen.append(f"{request.method} {request.path}")
        path = request.path
        if path == "/echo":
            body = await request.content.read(MAX_BODY)
            text = f"{request.method} {request.content_length} ".encode() + body
            return Response(body=text, content_type="text/plain")
        if path == "/exact":
            return Response(body=await request.content.read(MAX_BODY))
        if path == "/slow":
            await asyncio.sleep(0.05)
            return Response(body=b"slow")
        if path == "/stream":
            out = StreamResponse(headers={"Content-Type": "text/event-stream"})
            await out.prepare(request)
            for piece in (b"a", b"bb", b"ccc"):
                await out.write(piece)
            await out.write_eof(b"end")
            return out
        if path == "/hang":
            out = StreamResponse()
            await out.prepare(request)
            await out.write(b"first")
            self.started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
            return out
        if path == "/boom":
            raise ValueError("a bug")
        return Response(status=404, body=path.encode())


Open = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@pytest.fixture
async def app() -> App:
    return App()


@pytest.fixture
async def connect(app: App) -> AsyncIterator[Open]:
    loop = asyncio.get_running_loop()
    server = Server(app.handle, max_body=MAX_BODY)
    listener = await loop.create_server(server, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    writers: list[asyncio.StreamWriter] = []

    async def open_() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        return reader, writer

    yield open_
    for w in writers:
        w.close()
    listener.close()
    await server.shutdown(1.0)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            data = await reader.readexactly(size + 2)
            assert data.endswith(b"\r\n")
            if size == 0:
                break
            body += data[:-2]
    else:
        body = await asyncio.wait_for(reader.read(), 5)  # until the connection closes
    return status, headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(), 5) == b""


async def test_keep_alive_reuse(connect: Open) -> None:
    reader, writer = await connect()
    for i in range(3):
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n%d" % i)
        status, headers, body = await read_response(reader)
        assert status == 200 and body == b"POST 1 %d" % i
        assert "connection" not in headers and headers["date"].endswith(" GMT")
        assert headers["content-type"] == "text/plain"


async def test_pipelined_requests_answered_in_order(connect: Open, app: App) -> None:
    reader, writer = await connect()
    writer.write(
        b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /nope?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    got = [await read_response(reader) for _ in range(4)]
    assert [b for _, _, b in got] == [b"slow", b"POST 3 abc", b"abbcccend", b"/nope"]
    assert [s for s, _, _ in got] == [200, 200, 200, 404]
    assert app.seen == ["GET /slow", "POST /echo", "GET /stream", "GET /nope"]


async def test_chunked_request_body(connect: Open) -> None:
    reader, writer = await connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    await writer.drain()
    for piece in (b"5\r\nhello\r\n", b"1\r\n \r\n", b"5\r\nworld\r\n", b"0\r\n\r\n"):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.01)
    status, _, body = await read_response(reader)
    assert status == 200 and body == b"POST None hello world"
    # the connection is still usable
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_response(reader))[2] == b"slow"


async def test_body_in_pieces_read_exactly(connect: Open) -> None:
    reader, writer = await connect()
    writer.write(b"POST /exact HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
    await asyncio.sleep(0.02)
    writer.write(b"56789")
    status, _, body = await read_response(reader)
    assert status == 200 and body == b"0123456789"


async def test_expect_100_continue(connect: Open) -> None:
    reader, writer = await connect()
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"data")
    status, _, body = await read_response(reader)
    assert status == 200 and body == b"POST 4 data"

    # too large: a 413 and no 100 Continue; the body never came, so the connection closes
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
    )
    status, headers, _ = await read_response(reader)
    assert status == 413 and headers["connection"] == "close"
    assert await closed(reader)


async def test_connection_close(connect: Open) -> None:
    reader, writer = await connect()
    writer.write(
        b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /x HTTP/1.1\r\n\r\n"
    )
    status, headers, body = await read_response(reader)
    assert status == 200 and body == b"slow" and headers["connection"] == "close"
    assert await closed(reader)


async def test_http10(connect: Open) -> None:
    reader, writer = await connect()
    writer.write(b"POST /echo HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi")
    status, headers, body = await read_response(reader)
    assert status == 200 and body == b"POST 2 hi" and headers["connection"] == "close"
    assert await closed(reader)

    # keep-alive on request; a stream is delimited by the end of the connection
    reader, writer = await connect()
    writer.write(b"GET /slow HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert body == b"slow" and headers["connection"].lower() == "keep-alive"
    writer.write(b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert status == 200 and "transfer-encoding" not in headers
    assert body == b"abbcccend"


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /x HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"NOT A REQUEST\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_malformed_request_is_400(connect: Open, raw: bytes) -> None:
    reader, writer = await connect()
    writer.write(raw)
    await check_400(reader)


async def test_endless_head_is_431(connect: Open) -> None:
    reader, writer = await connect()
    # 80 kB of head in pieces; the last piece takes it over the limit (64 KiB), so that
    # nothing is left unread when the server closes (that would reset the connection).
    for i in range(8):
        writer.write((b"GET /x HTTP/1.1\r\nX: " if i == 0 else b"") + b"y" * 10_000)
        await writer.drain()
        await asyncio.sleep(0.02)
    await check_status(reader, 431)


async def check_400(reader: asyncio.StreamReader) -> None:
    await check_status(reader, 400)


async def check_status(reader: asyncio.StreamReader, expected: int) -> dict:
    """The answer is ``expected`` in the OpenAI error envelope, and the connection closes."""
    status, headers, body = await read_response(reader)
    assert status == expected and headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    error = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert await closed(reader)
    return error


async def test_malformed_after_pipelined_request(connect: Open) -> None:
    reader, writer = await connect()
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n")
    assert (await read_response(reader))[:1] == (200,)
    assert (await read_response(reader))[0] == 400
    assert await closed(reader)


async def test_oversized_body_is_413(connect: Open) -> None:
    reader, writer = await connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n" + b"x" * 1001)
    status, headers, _ = await read_response(reader)
    assert status == 413 and headers["connection"] == "close"

    reader, writer = await connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(3):
        writer.write(b"190\r\n" + b"x" * 400 + b"\r\n")
    status, _, _ = await read_response(reader)
    assert status == 413
    assert await closed(reader)

    # answered before the body came: the rest of the body is read and dropped (no reset)
    reader, writer = await connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 413 and headers["connection"] == "close"
    for _ in range(30):
        writer.write(b"x" * 10_000)
        await writer.drain()
    assert await closed(reader)


async def test_handler_error_is_500(connect: Open) -> None:
    reader, writer = await connect()
    writer.write(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 500 and headers["connection"] == "close"


async def test_client_disconnect_cancels_handler(connect: Open, app: App) -> None:
    reader, writer = await connect()
    writer.write(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(app.started.wait(), 5)
    head = await asyncio.wait_for(reader.readuntil(b"first\r\n"), 5)
    assert b"Transfer-Encoding: chunked" in head
    writer.close()
    t0 = time.monotonic()
    await asyncio.wait_for(app.cancelled.wait(), 2)
    assert time.monotonic() - t0 < 0.1


async def test_shutdown_closes_idle_and_finishes_busy(app: App) -> None:
    loop = asyncio.get_running_loop()
    server = Server(app.handle, max_body=MAX_BODY)
    listener = await loop.create_server(server, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    idle_r, idle_w = await asyncio.open_connection("127.0.0.1", port)
    busy_r, busy_w = await asyncio.open_connection("127.0.0.1", port)
    busy_w.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.01)
    listener.close()
    await server.shutdown(5.0)
    status, headers, body = await read_response(busy_r)
    assert body == b"slow" and headers["connection"] == "close"
    assert await closed(idle_r) and await closed(busy_r)
    idle_w.close()
    busy_w.close()


async def test_idle_connection_closed_after_keepalive_timeout(app: App) -> None:
    loop = asyncio.get_running_loop()
    server = Server(app.handle, max_body=MAX_BODY, limits=Http(keepalive_timeout=0.2))
    listener = await loop.create_server(server, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_response(reader))[2] == b"slow"
    t0 = time.monotonic()
    assert await closed(reader)
    assert 0.15 < time.monotonic() - t0 < 2
    writer.close()
    listener.close()
    await server.shutdown(1.0)
