"""The lean server's request (``gateway.http.server``), as its handler gets it
(``messages.Incoming``): ``Request`` holds the head, ``Body`` the body as it arrives,
and ``LeanStream`` writes a ``StreamResponse`` to the connection.

* Request bodies: Content-Length or chunked, bounded by the server's
  ``max_body``; ``Expect: 100-continue`` is answered when the handler first
  waits for the body; a body that stops arriving for ``body_timeout`` seconds
  fails the read. Reads raise the gateway's own errors (``RequestTooLarge``,
  ``RequestTimeout``, ``InvalidRequest``).
* Writes go straight to the transport; only a paused transport (the peer reads
  slowly) makes ``write`` wait.

These classes reach their connection (``connection.Connection``, which builds
them) only through what ``Link`` lists, so this module imports nothing of it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from gateway.errors import InvalidRequest, RequestTimeout, body_too_large
from gateway.http.messages import (
    CONTINUE,
    Headers,
    WebSocket,
    date_line,
    header_lines,
    status_line,
)
from gateway.limits import REQUEST_BODY_HIGH_WATER

LAST_CHUNK = b"0\r\n\r\n"


class Bounds(Protocol):
    """What a request body needs of its server: its bounds."""

    max_body: int
    body_timeout: float


class Link(Protocol):
    """What a request, its body and its stream use of their connection."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport | None
    read_paused: bool
    write_paused: bool
    started: bool
    detached: bool

    @property
    def server(self) -> Bounds: ...

    def update_reading(self) -> None: ...

    async def drain(self) -> None: ...

    def keep(self, req: Request) -> bool: ...


class Body:
    """A request's body on the lean server (``request.content``).

    Its queue has the shape of an upstream answer's (``upstream.connection``): chunks
    with their size, one waiting reader woken by the feeder, the source paused past a
    high-water mark and resumed when the reader takes what is buffered. They stay two
    copies: one base class for both (tried: each inheriting its chunks, waiter, pause
    and take from it) cost 6.3k instructions a plain non-streaming request, 337.2k ->
    343.5k (+1.9 %, ``bench/instructions.py``), where the refactor's bar is 1 %.
    """

    __slots__ = ("_conn", "_chunks", "_size", "_total", "_eof", "_error", "_waiter", "_expect")

    def __init__(self, conn: Link, expect: bool) -> None:
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._size = 0  # buffered, unread
        self._total = 0  # received
        self._eof = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._expect = expect  # 100 Continue not sent yet

    @property
    def complete(self) -> bool:
        return self._eof

    @property
    def buffered_too_much(self) -> bool:
        return self._size > REQUEST_BODY_HIGH_WATER

    # ---- fed by the connection -------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            return
        self._total += len(data)
        limit = self._conn.server.max_body
        if self._total > limit:
            self.fail(body_too_large(limit))
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._size > REQUEST_BODY_HIGH_WATER:
            self._conn.update_reading()
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._expect = False
        self._wake()

    def fail(self, exc: Exception) -> None:
        if self._error is None:
            self._error = exc
            self._chunks.clear()
            self._size = 0
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---- read by the handler ---------------------------------------------------------

    async def _wait(self) -> None:
        conn = self._conn
        if self._expect:
            self._expect = False
            if conn.transport is not None:
                conn.transport.write(CONTINUE)
        self._waiter = waiter = conn.loop.create_future()
        timer = conn.loop.call_later(conn.server.body_timeout, self._timed_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _timed_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            self.fail(RequestTimeout("The request body stopped arriving before its end."))

    def _take(self) -> bytes:
        """Everything buffered; reading resumes if it was paused."""
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        if self._conn.read_paused:
            self._conn.update_reading()
        return data

    async def read(self, limit: int) -> bytes:
        """The whole body; ``RequestTooLarge`` past ``limit`` bytes.

        What is buffered is taken on every wake-up, so a body larger than the
        read-pause mark keeps flowing (the socket is read again at once).
        """
        parts: list[bytes] = []
        total = 0
        while True:
            if self._error is not None:
                raise self._error
            if self._chunks:
                data = self._take()
                total += len(data)
                if total > limit:
                    raise body_too_large(limit)
                parts.append(data)
                continue
            if self._eof:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            await self._wait()


class Request:
    """A request on the lean server."""

    __slots__ = (
        "method", "path", "content_length", "content", "headers", "keep_alive", "http10", "_conn",
    )  # fmt: skip

    def __init__(
        self,
        conn: Link,
        method: str,
        path: str,
        length: int | None,
        expect: bool,
        headers: Headers,
    ) -> None:
        self._conn = conn
        self.method = method
        self.path = path
        self.content_length = length
        self.content = Body(conn, expect)
        self.headers = headers
        self.keep_alive = True
        self.http10 = False

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._conn.transport

    def abort(self) -> None:
        """Cut the connection (an answer that cannot be finished honestly)."""
        transport = self._conn.transport
        if transport is not None:
            transport.close()

    def detach(self) -> bool:
        self._conn.detached = True
        return True

    # Stubs until the WebSocket transport (branch i21-ws) replaces them.
    def wants_websocket(self) -> bool:
        return False

    async def accept_websocket(self, headers: dict[str, str] | None = None) -> WebSocket:
        raise InvalidRequest("This server does not serve WebSockets.")

    async def open_stream(self, status: int, headers: dict[str, str] | None) -> LeanStream:
        conn = self._conn
        conn.started = True
        if self.http10:
            self.keep_alive = False  # no chunked framing: the end of the body is the close
        keep = conn.keep(self)
        stream = LeanStream(conn, chunked=not self.http10)
        framing = b"Transfer-Encoding: chunked\r\n" if stream.chunked else b""
        close = b"" if keep else b"Connection: close\r\n"
        stream.head = b"%s%s%s%s%s\r\n" % (
            status_line(status),
            header_lines(headers),
            date_line(),
            framing,
            close,
        )
        if self.method == "HEAD":
            stream.head_only = True
            await stream.send(b"")
        return stream


class LeanStream:
    """The lean server's side of a stream: chunked (HTTP/1.0: until the close); the
    head goes out with the first body bytes."""

    __slots__ = ("conn", "head", "chunked", "head_only")

    def __init__(self, conn: Link, *, chunked: bool) -> None:
        self.conn = conn
        self.head = b""
        self.chunked = chunked
        self.head_only = False

    async def send(self, data: bytes) -> None:
        conn = self.conn
        transport = conn.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        if self.head:
            data = self.head + data
            self.head = b""
        transport.write(data)
        if conn.write_paused:
            await conn.drain()

    async def write(self, data: bytes) -> None:
        if self.head_only:
            return
        await self.send(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)

    async def write_eof(self, data: bytes) -> None:
        if self.head_only:
            return
        if self.chunked:
            data = b"%x\r\n%s\r\n%s" % (len(data), data, LAST_CHUNK) if data else LAST_CHUNK
        await self.send(data)
