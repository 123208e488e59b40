"""WebSockets through real sockets on both HTTP servers (the lean one and aiohttp's), with
the ``websockets`` package as the client (and raw sockets where it would not misbehave):
the handshake and its headers, a 1 MB message echoed both ways with permessage-deflate
agreed, an oversized message closed with 1009, pings answered, the server's own pings and
their timeout, the client's close, a client gone mid-send, and a slow reader holding the
server's sends back instead of being buffered for."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.config import Http
from gateway.http.aiohttp_server import AiohttpServer
from gateway.http.messages import UPGRADED, Incoming, Reply, Response
from gateway.http.server import Server
from gateway.limits import KiB, MiB

MAX_BODY = 2 * MiB


class App:
    """An echo handler (``/echo``) and a sender (``/flood``: ``count`` messages of
    ``size`` bytes, as fast as the client takes them); what each handler saw."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()
        self.outcome = ""
        self.sent = 0
        self.count = 64
        self.size = 512 * KiB

    async def handle(self, request: Incoming) -> Reply:
        if not request.wants_websocket():
            return Response(body=b"plain", content_type="text/plain")
        ws = await request.accept_websocket({"x-request-id": "req_ws"})
        try:
            if request.path == "/patient":  # receive cancelled by timeouts, then used
                for _ in range(3):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ws.receive(), 0.01)
                while (message := await ws.receive()) is not None:
                    await ws.send(message)
            elif request.path == "/flood":
                payload = json.dumps(os.urandom(self.size // 2 - 4).hex()).encode()
                for _ in range(self.count):
                    await ws.send(payload)
                    self.sent += 1
                await ws.close()
            else:
                while (message := await ws.receive()) is not None:
                    await ws.send(message)
                for _ in range(6):  # (done is done, however often it is asked)
                    assert await ws.receive() is None
            self.outcome = "ended"
        except ConnectionError:
            self.outcome = "send raised"
        except asyncio.CancelledError:
            self.outcome = "cancelled"
            raise
        finally:
            self.ended.set()
        return UPGRADED


Start = Callable[..., Any]


@pytest.fixture(params=["lean", "aiohttp"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def serve(kind: str) -> AsyncIterator[Start]:
    """``await serve(app, **http_limits)`` -> the server's ws:// base URL."""
    loop = asyncio.get_running_loop()
    listeners: list[asyncio.Server] = []
    servers: list[Server | AiohttpServer] = []

    async def start(app: App, max_body: int = MAX_BODY, **limits: Any) -> str:
        cls = Server if kind == "lean" else AiohttpServer
        server = cls(app.handle, max_body=max_body, limits=Http(**limits))
        listener = await loop.create_server(server, "127.0.0.1", 0)
        listeners.append(listener)
        servers.append(server)
        return f"ws://127.0.0.1:{listener.sockets[0].getsockname()[1]}"

    yield start
    for listener in listeners:
        listener.close()
    for server in servers:
        await server.shutdown(1.0)
    for listener in listeners:
        await listener.wait_closed()


def close_code(ws: ClientConnection) -> int | None:
    return ws.close_code


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_echo_1mb_both_ways(serve: Start, compression: str | None) -> None:
    app = App()
    url = await serve(app)
    message = json.dumps({"text": "é" + os.urandom(MiB // 2 - 16).hex()})
    async with connect(url + "/echo", compression=compression, max_size=None) as ws:
        assert ws.response is not None
        assert ws.response.status_code == 101
        assert ws.response.headers["x-request-id"] == "req_ws"
        agreed = ws.response.headers.get("sec-websocket-extensions") or ""
        assert agreed.startswith("permessage-deflate") == (compression == "deflate")
        for _ in range(2):
            await ws.send(message)
            assert await ws.recv() == message
        await ws.send(b'{"binary": true}')  # (a binary message comes back as text)
        assert await ws.recv() == '{"binary": true}'
    assert close_code(ws) == 1000  # the client's close, answered
    await asyncio.wait_for(app.ended.wait(), 5)
    assert app.outcome == "ended"


async def test_oversized_message_is_1009(serve: Start) -> None:
    app = App()
    url = await serve(app, max_body=64 * KiB)
    async with connect(url + "/echo", max_size=None) as ws:
        await ws.send("x" * (64 * KiB))
        assert await ws.recv() == "x" * (64 * KiB)  # the bound itself passes
        await ws.send(json.dumps(os.urandom(64 * KiB).hex()))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert close_code(ws) == 1009
    await asyncio.wait_for(app.ended.wait(), 5)


async def test_ping_is_answered(serve: Start) -> None:
    app = App()
    url = await serve(app)
    async with connect(url + "/echo", ping_interval=None) as ws:
        pong = await ws.ping(b"hi")
        await asyncio.wait_for(pong, 5)
        await ws.send("{}")
        assert await ws.recv() == "{}"


async def test_client_gone_mid_send(serve: Start) -> None:
    """The handler floods; the client reads once and cuts the connection: the handler
    ends (its send raises, or it is cancelled with the connection)."""
    app = App()
    app.count = 10_000
    app.size = 64 * KiB
    url = await serve(app)
    async with connect(url + "/flood", compression=None, max_size=None) as ws:
        await ws.recv()
        assert ws.transport is not None
        ws.transport.abort()
    await asyncio.wait_for(app.ended.wait(), 5)
    assert app.outcome in ("send raised", "cancelled")
    assert app.sent < app.count


async def test_slow_reader_holds_the_sender_back(serve: Start) -> None:
    """A client that stops reading: the server's sends wait (a few MB in the sockets'
    buffers at most), then all of it arrives once the client reads again."""
    app = App()
    url = await serve(app)
    async with connect(url + "/flood", compression=None, max_size=None, max_queue=1) as ws:
        await ws.recv()
        await asyncio.sleep(0.3)
        stalled = app.sent
        await asyncio.sleep(0.3)
        assert app.sent == stalled  # waiting, not buffering
        assert stalled * app.size < 24 * MiB  # of the 32 MiB
        got = 1
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()
                got += 1
    assert got == app.count
    assert close_code(ws) == 1000
    assert app.outcome == "ended"


async def test_cancelled_receive_keeps_the_socket(serve: Start) -> None:
    app = App()
    url = await serve(app)
    async with connect(url + "/patient") as ws:
        await asyncio.sleep(0.1)
        await ws.send('{"late": 1}')
        assert await asyncio.wait_for(ws.recv(), 5) == '{"late": 1}'
    assert close_code(ws) == 1000
    await asyncio.wait_for(app.ended.wait(), 5)
    assert app.outcome == "ended"


async def test_client_close_ends_the_handler(serve: Start) -> None:
    app = App()
    url = await serve(app)
    ws = await connect(url + "/echo")
    await ws.send("{}")
    assert await ws.recv() == "{}"
    await ws.close(4000, "bye")
    assert close_code(ws) == 4000
    await asyncio.wait_for(app.ended.wait(), 5)
    assert app.outcome == "ended"


# ---- raw sockets: the handshake refused, and a client that never answers pings ---------

HANDSHAKE = (
    b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
)
KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"


async def raw(url: str, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    host, port = url.removeprefix("ws://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head + b"\r\n")
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return reader, writer, answer


async def test_malformed_handshake_is_400(serve: Start) -> None:
    url = await serve(App())
    reader, writer, head = await raw(url, HANDSHAKE)  # no Sec-WebSocket-Key
    try:
        assert head.startswith(b"HTTP/1.1 400 ")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        error = json.loads(await reader.readexactly(length))["error"]
        assert error["type"] == "invalid_request_error"
        assert "Sec-WebSocket-Key" in error["message"]
    finally:
        writer.close()


async def test_server_pings_and_gives_up_on_silence(serve: Start, kind: str) -> None:
    """The server pings after the interval; a client that never answers is closed (the
    lean server sends 1011 first; aiohttp cuts the connection)."""
    app = App()
    url = await serve(app, websocket_ping_interval=0.2, websocket_ping_timeout=0.4)
    reader, writer, head = await raw(url, HANDSHAKE + KEY)
    try:
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
        opcodes: list[int] = []
        codes: list[int] = []
        while True:
            frame = await asyncio.wait_for(reader.read(2), 5)
            if not frame:
                break
            opcode, length = frame[0] & 0x0F, frame[1] & 0x7F
            payload = await reader.readexactly(length)
            opcodes.append(opcode)
            if opcode == 0x8:
                codes.append(int.from_bytes(payload[:2], "big"))
        assert opcodes[0] == 0x9  # a ping
        assert codes == ([1011] if kind == "lean" else [])
        await asyncio.wait_for(app.ended.wait(), 5)
    finally:
        writer.close()


async def test_server_pings_an_answering_client_stays(serve: Start) -> None:
    app = App()
    url = await serve(app, websocket_ping_interval=0.1, websocket_ping_timeout=0.2)
    async with connect(url + "/echo", ping_interval=None) as ws:  # (it answers pings)
        await asyncio.sleep(1.0)
        await ws.send("{}")
        assert await ws.recv() == "{}"
    assert close_code(ws) == 1000


async def test_shutdown_closes_1001(kind: str) -> None:
    """A socket still open when the shutdown's time is up is closed with 1001."""
    app = App()
    loop = asyncio.get_running_loop()
    server = (Server if kind == "lean" else AiohttpServer)(app.handle, max_body=MAX_BODY)
    listener = await loop.create_server(server, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{listener.sockets[0].getsockname()[1]}/echo"
    try:
        async with connect(url) as ws:
            await ws.send("{}")
            assert await ws.recv() == "{}"
            server.begin_drain()  # (left alone: its handler ends it)
            await ws.send("[]")
            assert await ws.recv() == "[]"
            listener.close()
            await server.shutdown(0.2)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        assert close_code(ws) == 1001
    finally:
        listener.close()
        await listener.wait_closed()
