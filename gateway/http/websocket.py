"""WebSockets on the lean server (``gateway.http.server``): the handshake's answer and
``LeanWebSocket``, the socket a handler gets from ``accept_websocket``.

* The framing is wsproto's (RFC 6455, sans-IO): the connection feeds it every read once
  the 101 is written, the bytes that followed the handshake's head first. Events are
  handled as they come, whether the handler waits in ``receive`` or not: a whole
  message is queued for ``receive``, a ping is answered, the client's close is answered
  and the connection closed.
* permessage-deflate (RFC 7692) is agreed when the client offers it.
* A message is bounded by the server's ``max_body``, counted after inflation as it
  arrives: past it the socket is closed with 1009, with no more than the bound held.
  A frame that breaks the protocol closes it with wsproto's code (1002, or 1007 for
  text that is not UTF-8). Messages waiting for ``receive`` past the bound pause
  reading until the handler takes them.
* Keep-alive: after ``websocket-ping-interval`` seconds without a frame from the
  client the server pings; nothing back within ``websocket-ping-timeout`` seconds
  closes the socket (1011). One timer per socket serves that and the wait for the
  client's close frame (``WEBSOCKET_CLOSE_WAIT``), after which the connection is cut.

A socket reaches its connection only through what ``Wire`` lists, so this module imports
nothing of ``connection``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import zlib
from collections import deque
from typing import Protocol

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol
from wsproto.handshake import server_extensions_handshake
from wsproto.utilities import LocalProtocolError

from gateway.config import Http
from gateway.http.messages import (
    UPGRADED,
    Headers,
    date_line,
    handshake_key,
    header_lines,
    status_line,
)
from gateway.limits import REQUEST_BODY_HIGH_WATER, WEBSOCKET_CLOSE_WAIT

# The constant RFC 6455 appends to the client's key before hashing it into the accept.
ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# The reasons the server's close frames give when the client's frames are refused.
REFUSALS: dict[int, str] = {
    CloseReason.PROTOCOL_ERROR: "A frame breaks the WebSocket protocol.",
    CloseReason.INVALID_FRAME_PAYLOAD_DATA: "A message is not valid (UTF-8 text, deflate).",
    CloseReason.MESSAGE_TOO_BIG: "The message is too large.",
}


class Wire(Protocol):
    """What a WebSocket uses of its connection."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport | None
    read_paused: bool
    write_paused: bool
    timer: asyncio.TimerHandle | None  # the HTTP keep-alive's, stopped at the upgrade

    async def drain(self) -> None: ...


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate that inflates a message no further than ``limit`` bytes: a
    small frame can inflate a thousandfold, so the bound is kept while inflating, and
    a message past it fails the socket (1009) before the rest is inflated."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.inflated = 0  # of the current message

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not (self._inbound_compressed and self._inbound_is_compressible):
            return data
        inflater = self._decompressor
        assert inflater is not None
        try:
            out = inflater.decompress(data, self.limit - self.inflated + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self.inflated += len(out)
        if inflater.unconsumed_tail or self.inflated > self.limit:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if fin:
            self.inflated = 0
        return super().frame_inbound_complete(proto, fin)


def handshake(
    method: str, http10: bool, headers: Headers, extra: dict[str, str] | None, limit: int
) -> tuple[bytes, list[Extension]]:
    """The 101 answering a client's handshake, and the extensions agreed; a malformed
    handshake raises ``InvalidRequest`` (nothing is sent)."""
    key = handshake_key(method, http10, headers)
    accept = base64.b64encode(hashlib.sha1(key + ACCEPT_GUID).digest())
    agreed = b""
    extensions: list[Extension] = []
    for offer in ",".join(headers.getall("sec-websocket-extensions")).split(","):
        deflate = BoundedDeflate(limit)
        answer = server_extensions_handshake([offer.strip()], [deflate])
        if answer is not None:  # (the first offer it can take: one answer at most)
            agreed = b"Sec-WebSocket-Extensions: %s\r\n" % answer
            extensions.append(deflate)
            break
    head = b"%sUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s%s%s\r\n"
    return head % (status_line(101), accept, agreed, header_lines(extra), date_line()), extensions


def hold(wire: Wire, tail: bytes) -> bytes:
    """``tail``, read after an upgrade's head while its handler has not accepted yet:
    kept for the socket, with reading paused once it holds more than a body's high-water
    mark (resumed at ``LeanWebSocket.start``)."""
    transport = wire.transport
    if len(tail) > REQUEST_BODY_HIGH_WATER and not wire.read_paused and transport is not None:
        wire.read_paused = True
        transport.pause_reading()
    return tail


def ended(ws: LeanWebSocket | None, reply: object) -> None:
    """A handler returned after its answer had begun: only ``UPGRADED`` after a WebSocket
    it accepted may be (the socket is closed, 1000, if it is still open)."""
    if ws is None:
        raise RuntimeError("a Response returned after a StreamResponse was prepared")
    if reply is not UPGRADED:
        raise RuntimeError(f"a WebSocket accepted, then {type(reply).__name__} returned")
    ws.finish(CloseReason.NORMAL_CLOSURE)


class LeanWebSocket:
    """An accepted WebSocket on the lean server (``messages.WebSocket``)."""

    __slots__ = (
        "_wire", "_proto", "_limit", "_messages", "_queued", "_parts", "_size", "_waiter",
        "_done", "_answered", "_heard", "_reads", "_reads_at_ping", "_pinged", "_timer",
        "_interval", "_timeout", "_paused", "_cutting",
    )  # fmt: skip

    def __init__(
        self,
        wire: Wire,
        extensions: list[Extension],
        limit: int,
        limits: Http,
    ) -> None:
        self._wire = wire
        self._proto = Connection(ConnectionType.SERVER, extensions=extensions)
        self._limit = limit
        self._messages: deque[bytes] = deque()  # whole, waiting for receive
        self._queued = 0  # their bytes
        self._parts: list[bytes] = []  # of the message arriving
        self._size = 0  # its bytes so far
        self._waiter: asyncio.Future[None] | None = None
        self._done = False  # nothing more is received or sent
        self._answered: asyncio.Future[None] = wire.loop.create_future()  # our close was
        self._heard = wire.loop.time()  # the last read
        self._reads = 0  # reads so far (loop times can be equal: uvloop's are in ms)
        self._pinged: float | None = None  # a keep-alive ping awaits an answer since then
        self._reads_at_ping = 0
        self._timer: asyncio.TimerHandle | None = None
        self._interval = interval = limits.websocket_ping_interval
        self._timeout = limits.websocket_ping_timeout
        self._paused = False  # reading paused: too much waits for receive
        self._cutting = False  # the timer cuts the connection (no close frame came back)
        self._schedule(interval)

    # ---- fed by the connection ---------------------------------------------------------

    def start(self, head: bytes, tail: bytes | None) -> None:
        """Write the 101 ``head``, then take ``tail``: what the client sent after its
        handshake in the same read."""
        transport = self._wire.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("The client closed the connection.")
        wire = self._wire
        if wire.timer is not None:
            wire.timer.cancel()
            wire.timer = None
        transport.write(head)
        if wire.read_paused:
            wire.read_paused = False
            transport.resume_reading()
        if tail:
            self.feed(tail)

    def feed(self, data: bytes) -> None:
        """Bytes read from the client."""
        self._heard = self._wire.loop.time()
        self._reads += 1
        proto = self._proto
        try:
            proto.receive_data(data)
        except LocalProtocolError:
            return  # bytes after the close: dropped
        for event in proto.events():
            if isinstance(event, TextMessage):
                self._take(event.data.encode(), event.message_finished)
            elif isinstance(event, BytesMessage):
                self._take(bytes(event.data), event.message_finished)
            elif isinstance(event, Ping):
                if proto.state is ConnectionState.OPEN:
                    self._write(proto.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._closed_by(event)
            # (a Pong only counts as a frame heard)

    def _take(self, data: bytes, last: bool) -> None:
        if self._done:
            return  # after a close was sent: dropped
        self._size += len(data)
        if self._size > self._limit:
            self._fail(CloseReason.MESSAGE_TOO_BIG, REFUSALS[CloseReason.MESSAGE_TOO_BIG])
            return
        parts = self._parts
        parts.append(data)
        if not last:
            return
        message = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        self._size = 0
        self._messages.append(message)
        self._queued += len(message)
        if self._queued > self._limit and not self._paused:
            self._paused = True
            transport = self._wire.transport
            if transport is not None:
                transport.pause_reading()
        self._wake()

    def _closed_by(self, event: CloseConnection) -> None:
        proto = self._proto
        if proto.state is ConnectionState.REMOTE_CLOSING:  # the client closes: answer
            self._write(proto.send(event.response()))
            self._end()
            self._cut_later()
        elif proto.state is ConnectionState.CLOSED:  # the answer to our close
            if not self._answered.done():
                self._answered.set_result(None)
        else:  # wsproto refused a frame (its close code says why; the reason is ours)
            self._fail(event.code, REFUSALS.get(event.code, ""))

    def lost(self) -> None:
        """The connection is gone."""
        self._end()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._answered.done():
            self._answered.set_result(None)

    # ---- closing -----------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        transport = self._wire.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self) -> None:
        self._done = True
        self._parts.clear()
        self._wake()

    def _fail(self, code: int, reason: str) -> None:
        """Send a close frame with ``code`` (if none went yet); end receiving and sending;
        cut the connection if the client's close does not come in time."""
        self._end()
        proto = self._proto
        if proto.state is ConnectionState.OPEN:
            self._write(proto.send(CloseConnection(code=code, reason=reason)))
            self._cut_later()

    def _cut_later(self) -> None:
        """The socket is done: its handler has ``WEBSOCKET_CLOSE_WAIT`` seconds to end
        (the connection closes then) before the connection is cut under it."""
        self._cutting = True
        self._schedule(WEBSOCKET_CLOSE_WAIT)

    def _cut(self) -> None:
        transport = self._wire.transport
        if transport is not None:
            transport.close()

    def finish(self, code: int) -> None:
        """The handler is done (or the server shuts down): a close frame with ``code``
        if none went yet. The connection closes the transport."""
        self._fail(code, "")

    # ---- the handler's side ------------------------------------------------------------

    async def receive(self) -> bytes | None:
        while True:
            if self._messages:
                message = self._messages.popleft()
                self._queued -= len(message)
                if self._paused and self._queued <= self._limit:
                    self._paused = False
                    transport = self._wire.transport
                    if transport is not None:
                        transport.resume_reading()
                return message
            if self._done:
                return None
            self._waiter = waiter = self._wire.loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    async def send(self, data: bytes) -> None:
        wire = self._wire
        transport = wire.transport
        if self._done or transport is None or transport.is_closing():
            raise ConnectionResetError("The WebSocket is closed.")
        transport.write(self._proto.send(TextMessage(data=data.decode())))
        if wire.write_paused:
            await wire.drain()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._proto.state is not ConnectionState.OPEN:
            return
        self._fail(code, reason)
        await asyncio.wait((self._answered,), timeout=WEBSOCKET_CLOSE_WAIT)
        self._cut()

    # ---- the one timer: keep-alive pings, then the close's deadline --------------------

    def _schedule(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._wire.loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._wire.transport is None:
            return
        if self._cutting:
            self._cut()
            return
        now = self._wire.loop.time()
        if self._paused:  # the silence is ours: reading is paused
            self._schedule(self._interval)
            return
        pinged = self._pinged
        if pinged is not None:
            if self._reads == self._reads_at_ping:
                if now < pinged + self._timeout:
                    self._schedule(pinged + self._timeout - now)
                else:
                    self._fail(CloseReason.INTERNAL_ERROR, "The keep-alive ping got no answer.")
                return
            self._pinged = None  # answered
        idle = now - self._heard
        if idle < self._interval:
            self._schedule(self._interval - idle)
        elif self._proto.state is ConnectionState.OPEN:
            self._write(self._proto.send(Ping()))
            self._pinged = now
            self._reads_at_ping = self._reads
            self._schedule(self._timeout)
