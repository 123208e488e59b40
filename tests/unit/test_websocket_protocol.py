"""The lean server's WebSockets (``gateway.http.websocket``) driven as a protocol on a fake
transport (no sockets), with wsproto's client side building the client's bytes (masked,
deflated when agreed) and reading the server's.

The handshake and the frames after it are fed whole, one byte at a time and split at
random points; every way gives the same echoes. Fragmented and deflated messages, pings,
the close codes (1000 answered, 1009 past the bound, 1007 for text that is not UTF-8,
1002 for an unmasked frame), a malformed handshake (400 in the OpenAI envelope), the
server's keep-alive ping and its timeout (short config bounds).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import WSConnection
from wsproto.connection import Connection, ConnectionType
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from gateway.config import Http
from gateway.http.messages import UPGRADED, Incoming, Reply, Response
from gateway.http.server import Server
from gateway.http.websocket import BoundedDeflate, LeanWebSocket
from gateway.limits import WEBSOCKET_CLOSE_WAIT, KiB, MiB
from tests.fakes import FakeTransport
from tests.unit.test_http_protocol import parse_answers, settle, split

MAX_BODY = 1 * MiB

Handler = Callable[[Incoming], Awaitable[Reply]]


async def echo(request: Incoming) -> Reply:
    """Accept, and send every message back; a plain request gets ``plain``."""
    if not request.wants_websocket():
        return Response(body=b"plain", content_type="text/plain")
    ws = await request.accept_websocket({"x-request-id": "req_ws"})
    while (message := await ws.receive()) is not None:
        await ws.send(message)
    return UPGRADED


# ---- a wsproto client against a connection on a fake transport --------------------------


class Peer:
    """One lean connection on a fake transport, and a wsproto client reading its writes."""

    def __init__(
        self,
        handler: Handler = echo,
        *,
        deflate: bool = False,
        limits: Http | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        self.server = Server(handler, max_body=max_body, limits=limits)
        self.conn = self.server()
        self.transport = FakeTransport(self.conn)
        self.conn.connection_made(self.transport)  # type: ignore[arg-type]
        self.client = WSConnection(ConnectionType.CLIENT)  # reads the server's bytes
        self.deflate = deflate
        # Builds the client's frames before the 101 is read (the client may send its first
        # frame right after the handshake): deflate as the server agrees to it.
        extensions = []
        if deflate:
            extensions.append(PerMessageDeflate())
            extensions[0].finalize("permessage-deflate")
        self.sender = Connection(ConnectionType.CLIENT, extensions=extensions)
        self.seen = 0  # bytes of the transport's writes given to the client
        self.events: list[Event] = []

    def handshake(self) -> bytes:
        extensions = [PerMessageDeflate()] if self.deflate else []
        return self.client.send(Request(host="x", target="/v1/responses", extensions=extensions))

    def frames(self, *events: Event) -> bytes:
        return b"".join(self.sender.send(e) for e in events)

    def feed(self, pieces: Sequence[bytes]) -> None:
        for piece in pieces:
            self.conn.data_received(piece)

    def read(self) -> list[Event]:
        """The events of what the server wrote since the last read."""
        data = self.transport.data
        if len(data) > self.seen:
            self.client.receive_data(data[self.seen :])
            self.seen = len(data)
            self.events.extend(self.client.events())
        return self.events

    def messages(self) -> list[str]:
        """Whole text messages received so far (fragments joined)."""
        out, parts = [], []
        for e in self.read():
            if isinstance(e, Message):
                parts.append(e.data)
                if e.message_finished:
                    out.append("".join(parts))
                    parts = []
        return out

    def closes(self) -> list[int]:
        return [e.code for e in self.read() if isinstance(e, CloseConnection)]

    async def wait(self, until: Callable[[], bool]) -> None:
        await settle(lambda: (self.read() and False) or until())

    async def done(self) -> None:
        """Wait for the connection to close."""
        await settle(lambda: self.transport.closed)
        assert self.transport.closed
        await settle(lambda: not self.server.connections)
        assert not self.server.connections


MESSAGES = ["{}", '{"type": "response.create"}', "é" * 3000, json.dumps({"x": "y" * 70_000})]


def client_bytes(peer: Peer, fragment: bool) -> bytes:
    """The handshake and the MESSAGES (the last one in three fragments when ``fragment``)."""
    wire = peer.handshake()
    events: list[Event] = [TextMessage(data=m) for m in MESSAGES[:-1]]
    last = MESSAGES[-1]
    if fragment:
        a, b = len(last) // 3, 2 * len(last) // 3
        events += [
            TextMessage(data=last[:a], message_finished=False),
            TextMessage(data=last[a:b], message_finished=False),
            TextMessage(data=last[b:]),
        ]
    else:
        events.append(TextMessage(data=last))
    return wire + peer.frames(*events)


async def echo_run(way: str, deflate: bool, fragment: bool, seed: int = 0) -> Peer:
    peer = Peer(deflate=deflate)
    wire = client_bytes(peer, fragment)
    if way == "whole":
        pieces = [wire]
    elif way == "bytes":
        pieces = [wire[i : i + 1] for i in range(len(wire))]
    else:
        rng = random.Random(seed)
        pieces = split(wire, [rng.randrange(len(wire)) for _ in range(rng.randrange(1, 40))])
    peer.feed(pieces)
    await peer.wait(lambda: len(peer.messages()) == len(MESSAGES))
    peer.feed([peer.frames(CloseConnection(code=1000))])
    await peer.done()
    return peer


def check_echo(peer: Peer) -> None:
    accepted = [e for e in peer.read() if isinstance(e, AcceptConnection)]
    assert accepted, peer.events
    assert (b"x-request-id", b"req_ws") in accepted[0].extra_headers
    assert bool(accepted[0].extensions) == peer.deflate
    assert peer.messages() == MESSAGES
    assert peer.closes() == [1000]  # the client's close, answered


@pytest.mark.parametrize("deflate", [False, True])
@pytest.mark.parametrize("fragment", [False, True])
@pytest.mark.parametrize("way", ["whole", "bytes", "random"])
def test_echo_every_way(way: str, deflate: bool, fragment: bool) -> None:
    check_echo(asyncio.run(echo_run(way, deflate, fragment, seed=7)))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32), deflate=st.booleans(), fragment=st.booleans())
def test_echo_split_at_random(seed: int, deflate: bool, fragment: bool) -> None:
    check_echo(asyncio.run(echo_run("random", deflate, fragment, seed)))


def test_first_frame_in_the_handshake_read() -> None:
    async def scenario() -> None:
        peer = Peer()
        peer.feed([peer.handshake() + peer.frames(TextMessage(data='{"a": 1}'))])
        await peer.wait(lambda: peer.messages() == ['{"a": 1}'])
        assert peer.messages() == ['{"a": 1}']
        assert not peer.transport.closed
        peer.feed([peer.frames(CloseConnection(code=1000))])
        await peer.done()
        assert peer.closes() == [1000]

    asyncio.run(scenario())


def test_ping_is_answered() -> None:
    async def scenario() -> None:
        peer = Peer()
        peer.feed([peer.handshake() + peer.frames(Ping(payload=b"hi"))])
        await peer.wait(lambda: any(isinstance(e, Pong) for e in peer.events))
        assert [e.payload for e in peer.read() if isinstance(e, Pong)] == [b"hi"]
        peer.transport.close()
        await peer.done()

    asyncio.run(scenario())


# ---- the close codes -------------------------------------------------------------------


def raw_frame(opcode: int, payload: bytes, *, mask: bool = True, fin: bool = True) -> bytes:
    """One frame built by hand (for what wsproto's client would never send)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def closed_with(peer: Peer, frames: bytes) -> int:
    """Feed the handshake and ``frames``; the server's close code (then answered)."""
    peer.feed([peer.handshake() + frames])
    await peer.wait(lambda: bool(peer.closes()))
    codes = peer.closes()
    assert len(codes) == 1, peer.events
    peer.feed([peer.frames(CloseConnection(code=codes[0]))])  # the client answers
    await peer.done()
    return codes[0]


def test_oversized_message_is_1009() -> None:
    async def scenario() -> None:
        peer = Peer(max_body=10 * KiB)
        big = TextMessage(data="x" * (10 * KiB + 1))
        assert await closed_with(peer, peer.frames(big)) == 1009
        assert peer.messages() == []

    asyncio.run(scenario())


def test_oversized_fragmented_message_is_1009() -> None:
    async def scenario() -> None:
        peer = Peer(max_body=10 * KiB)
        parts = [TextMessage(data="x" * 4 * KiB, message_finished=False) for _ in range(3)]
        assert await closed_with(peer, peer.frames(*parts)) == 1009

    asyncio.run(scenario())


def test_deflate_bomb_is_1009_without_inflating_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A small deflated frame that would inflate to 64 MiB: refused at the bound, and no
    inflation step ever gives more than the bound (the socket holds no more either)."""
    inflated: list[int] = []
    held: list[int] = []
    inflate = BoundedDeflate.frame_inbound_payload_data

    def spy(self: BoundedDeflate, proto: Any, data: bytes) -> Any:
        out = inflate(self, proto, data)
        inflated.append(self.inflated)  # (of the message so far)
        return out

    monkeypatch.setattr(BoundedDeflate, "frame_inbound_payload_data", spy)

    async def scenario() -> None:
        peer = Peer(deflate=True, max_body=64 * KiB)
        peer.feed([peer.handshake()])
        await peer.wait(lambda: any(isinstance(e, AcceptConnection) for e in peer.events))
        bomb = peer.frames(TextMessage(data="0" * (64 * MiB)))
        assert len(bomb) < 200 * KiB
        ws = peer.conn.ws
        assert isinstance(ws, LeanWebSocket)
        for i in range(0, len(bomb), 4096):
            peer.feed([bomb[i : i + 4096]])
            held.append(ws._size + ws._queued)
        await peer.wait(lambda: bool(peer.closes()))
        assert peer.closes() == [1009]
        peer.transport.close()
        await peer.done()

    asyncio.run(scenario())
    assert inflated and max(inflated) <= 64 * KiB + 1
    assert max(held) <= 64 * KiB


def test_invalid_utf8_is_1007() -> None:
    async def scenario() -> None:
        peer = Peer()
        assert await closed_with(peer, raw_frame(0x1, b'{"a": "\xff"}')) == 1007

    asyncio.run(scenario())


def test_unmasked_frame_is_1002() -> None:
    async def scenario() -> None:
        peer = Peer()
        assert await closed_with(peer, raw_frame(0x1, b"{}", mask=False)) == 1002

    asyncio.run(scenario())


def test_a_socket_done_is_cut_if_its_handler_stays() -> None:
    """After the server's close (here 1002, unanswered) a handler that does not end is
    cut within the close wait (its task cancelled with the connection)."""
    cancelled: list[bool] = []

    async def stubborn(request: Incoming) -> Reply:
        ws = await request.accept_websocket()
        assert await ws.receive() is None
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return UPGRADED

    async def scenario() -> None:
        peer = Peer(stubborn)
        peer.feed([peer.handshake() + raw_frame(0x1, b"{}", mask=False)])
        await peer.wait(lambda: bool(peer.closes()))
        assert peer.closes() == [1002]
        assert not peer.transport.closed
        await asyncio.sleep(WEBSOCKET_CLOSE_WAIT + 0.2)
        assert peer.transport.closed
        await peer.done()
        assert cancelled == [True]

    asyncio.run(scenario())


# ---- the handshake ---------------------------------------------------------------------


def upgrade_request(extra: bytes, line: bytes = b"GET /v1/responses HTTP/1.1") -> bytes:
    return line + b"\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" + extra + b"\r\n"


KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
V13 = b"Sec-WebSocket-Version: 13\r\n"


@pytest.mark.parametrize(
    "wire",
    [
        upgrade_request(V13),  # no key
        upgrade_request(KEY),  # no version
        upgrade_request(KEY + b"Sec-WebSocket-Version: 12\r\n"),
        upgrade_request(b"Sec-WebSocket-Key: c2hvcnQ=\r\n" + V13),  # not 16 bytes
        upgrade_request(KEY + V13, line=b"GET /v1/responses HTTP/1.0"),
    ],
    ids=["no key", "no version", "version 12", "short key", "HTTP/1.0"],
)
def test_malformed_handshake_is_400(wire: bytes) -> None:
    async def scenario() -> None:
        peer = Peer()
        peer.feed([wire])
        await peer.done()
        ((status, headers, body),) = parse_answers(peer.transport.data)
        assert status == 400
        assert headers["content-type"] == "application/json"
        error = json.loads(body)["error"]
        assert error["type"] == "invalid_request_error"
        assert "WebSocket" in error["message"]

    asyncio.run(scenario())


def test_handshake_answer() -> None:
    """RFC 6455's own example key gives its example accept; the head names the upgrade."""

    async def scenario() -> None:
        peer = Peer()
        peer.feed([upgrade_request(KEY + V13)])
        await settle(lambda: b"\r\n\r\n" in peer.transport.data)
        head = peer.transport.data.decode("latin-1").lower()
        assert head.startswith("http/1.1 101 switching protocols\r\n")
        assert "sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n" in head
        assert "upgrade: websocket\r\n" in head and "connection: upgrade\r\n" in head
        assert "x-request-id: req_ws\r\n" in head
        assert "sec-websocket-extensions" not in head
        peer.transport.close()
        await peer.done()

    asyncio.run(scenario())


def test_upgrade_not_accepted_is_answered_then_closed() -> None:
    async def plain(request: Incoming) -> Reply:
        assert request.wants_websocket()
        return Response(body=b"no", content_type="text/plain")

    async def scenario() -> None:
        peer = Peer(plain)
        peer.feed([upgrade_request(KEY + V13) + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"])
        await peer.done()
        ((status, headers, body),) = parse_answers(peer.transport.data)
        assert (status, body, headers["connection"]) == (200, b"no", "close")

    asyncio.run(scenario())


def test_plain_request_does_not_want_websocket() -> None:
    async def scenario() -> None:
        peer = Peer()
        peer.feed([b"GET /a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"])
        await settle(lambda: bool(parse_answers(peer.transport.data)))
        ((status, _, body),) = parse_answers(peer.transport.data)
        assert (status, body) == (200, b"plain")
        peer.transport.close()
        await peer.done()

    asyncio.run(scenario())


# ---- the handler's side ----------------------------------------------------------------


def test_handler_failing_after_accept_is_1011(caplog: pytest.LogCaptureFixture) -> None:
    async def failing(request: Incoming) -> Reply:
        ws = await request.accept_websocket()
        await ws.receive()
        raise ValueError("boom")

    async def scenario() -> None:
        peer = Peer(failing)
        peer.feed([peer.handshake() + peer.frames(TextMessage(data="{}"))])
        await peer.done()
        assert peer.closes() == [1011]

    with caplog.at_level(logging.ERROR, logger="gateway"):
        asyncio.run(scenario())
    assert "unhandled error on GET /v1/responses" in caplog.text


def test_handler_returning_a_response_after_accept_is_1011() -> None:
    async def wrong(request: Incoming) -> Reply:
        await request.accept_websocket()
        return Response(body=b"late")

    async def scenario() -> None:
        peer = Peer(wrong)
        peer.feed([peer.handshake()])
        await peer.done()
        assert peer.closes() == [1011]
        assert b"late" not in peer.transport.data

    logging.getLogger("gateway").disabled = True
    try:
        asyncio.run(scenario())
    finally:
        logging.getLogger("gateway").disabled = False


def test_handler_close_waits_for_the_answer() -> None:
    closed: list[bool] = []

    async def closing(request: Incoming) -> Reply:
        ws = await request.accept_websocket()
        await ws.close(4000, "bye")
        await ws.close()  # (a second close does nothing)
        closed.append(True)
        assert await ws.receive() is None
        with pytest.raises(ConnectionError):
            await ws.send(b"{}")
        return UPGRADED

    async def scenario() -> None:
        peer = Peer(closing)
        peer.feed([peer.handshake()])
        await peer.wait(lambda: bool(peer.closes()))
        assert peer.closes() == [4000] and not closed
        peer.feed([peer.frames(CloseConnection(code=4000))])
        await peer.done()
        assert closed

    asyncio.run(scenario())


def test_send_waits_while_the_transport_is_paused() -> None:
    sent: list[int] = []

    async def sender(request: Incoming) -> Reply:
        ws = await request.accept_websocket()
        for i in range(3):
            await ws.send(b'{"n": %d}' % i)
            sent.append(i)
        await ws.close()
        return UPGRADED

    async def scenario() -> None:
        peer = Peer(sender)
        peer.conn.pause_writing()
        peer.feed([peer.handshake()])
        for _ in range(50):
            await asyncio.sleep(0)
        assert sent == []  # the first send waits for the drain
        peer.conn.resume_writing()
        await peer.wait(lambda: len(peer.messages()) == 3)
        assert sent == [0, 1, 2]
        peer.feed([peer.frames(CloseConnection(code=1000))])
        await peer.done()

    asyncio.run(scenario())


def test_reading_pauses_while_the_handler_does_not_receive() -> None:
    """Whole messages past the bound waiting for receive pause reading; taking them
    resumes it (and the fake transport holds bytes back while it is paused)."""
    gate = asyncio.Event()
    got: list[int] = []

    async def late(request: Incoming) -> Reply:
        ws = await request.accept_websocket()
        await gate.wait()
        while (message := await ws.receive()) is not None:
            got.append(len(message))
        return UPGRADED

    async def scenario() -> None:
        peer = Peer(late, max_body=10 * KiB)
        peer.feed([peer.handshake()])
        for _ in range(3):
            peer.feed([peer.frames(TextMessage(data="x" * (4 * KiB)))])
        await settle(lambda: peer.transport.paused)  # 12 KiB waiting: past the bound
        assert peer.transport.paused
        gate.set()
        await settle(lambda: not peer.transport.paused)
        assert not peer.transport.paused and got == [4 * KiB] * 3
        peer.feed([peer.frames(CloseConnection(code=1000))])
        await peer.done()

    asyncio.run(scenario())


def test_client_gone_ends_receive_and_send() -> None:
    ends: list[object] = []

    async def waiting(request: Incoming) -> Reply:
        assert request.detach()  # (runs on after the loss, so that it sees it)
        ws = await request.accept_websocket()
        ends.append(await ws.receive())
        try:
            await ws.send(b"{}")
        except ConnectionError:
            ends.append("send raised")
        return UPGRADED

    async def scenario() -> None:
        peer = Peer(waiting)
        peer.feed([peer.handshake()])
        await peer.wait(lambda: any(isinstance(e, AcceptConnection) for e in peer.events))
        peer.transport.close()
        await settle(lambda: len(ends) == 2)
        assert ends == [None, "send raised"]

    asyncio.run(scenario())


def test_cancelled_receive_keeps_the_socket() -> None:
    async def patient(request: Incoming) -> Reply:
        ws = await request.accept_websocket()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.receive(), 0.01)
        message = await ws.receive()
        assert message is not None
        await ws.send(message)
        await ws.close()
        return UPGRADED

    async def scenario() -> None:
        peer = Peer(patient)
        peer.feed([peer.handshake()])
        await asyncio.sleep(0.05)
        peer.feed([peer.frames(TextMessage(data="[1]"))])
        await peer.wait(lambda: peer.messages() == ["[1]"])
        peer.feed([peer.frames(CloseConnection(code=1000))])
        await peer.done()

    asyncio.run(scenario())


# ---- keep-alive ------------------------------------------------------------------------

QUICK = Http(websocket_ping_interval=0.05, websocket_ping_timeout=0.1)


def test_server_pings_a_silent_client() -> None:
    async def scenario() -> None:
        peer = Peer(limits=QUICK)
        peer.feed([peer.handshake()])
        pings = lambda: [e for e in peer.read() if isinstance(e, Ping)]  # noqa: E731
        await peer.wait(lambda: bool(pings()))
        assert pings()
        for _ in range(3):  # each answered: the socket stays open
            n = len(pings())
            peer.feed([peer.frames(pings()[-1].response())])
            await peer.wait(lambda n=n: len(pings()) > n)  # type: ignore[misc]
        assert peer.closes() == [] and not peer.transport.closed
        peer.transport.close()
        await peer.done()

    asyncio.run(scenario())


def test_unanswered_ping_closes_1011() -> None:
    got: list[bytes | None] = []

    async def receiver(request: Incoming) -> Reply:
        ws = await request.accept_websocket()
        got.append(await ws.receive())
        return UPGRADED

    async def scenario() -> None:
        peer = Peer(receiver, limits=QUICK)
        peer.feed([peer.handshake()])
        await peer.wait(lambda: bool(peer.closes()))
        assert peer.closes() == [1011]
        assert any(isinstance(e, Ping) for e in peer.events)
        await peer.done()
        assert got == [None]

    asyncio.run(scenario())
