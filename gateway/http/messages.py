"""What a handler of the lean HTTP server sees: ``Request`` (with its ``Body``),
and the two kinds of answer, ``Response`` (one write) and ``StreamResponse``.

The names and methods are the subset of aiohttp's ``web`` API the gateway used.
The connection side is in ``gateway.http.server``.

* Request bodies: Content-Length or chunked, bounded by the server's
  ``max_body`` (reads raise ``BodyTooLarge``); ``Expect: 100-continue`` is
  answered when the handler first waits for the body.
* Writes go straight to the transport; only a paused transport (the peer reads
  slowly) makes ``write`` wait.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from functools import lru_cache
from http import HTTPStatus
from typing import TYPE_CHECKING

from gateway.errors import body_too_large
from gateway.limits import REQUEST_BODY_HIGH_WATER

if TYPE_CHECKING:
    from gateway.http.server import Connection

STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode() for s in HTTPStatus}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"


class HttpError(Exception):
    """A request the server refuses; raised by body reads, answered with ``status``."""

    status = 400


class BadRequest(HttpError):
    status = 400


class BodyTooLarge(HttpError):
    status = 413

    def __init__(self, limit: int, size: int | None = None) -> None:
        super().__init__(body_too_large(limit, size).message)
        self.limit = limit
        self.size = size


_date_second = -1
_date_line = b""


def date_line() -> bytes:
    """``Date: ...\\r\\n``, formatted once per second."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_line = b"Date: %s\r\n" % formatdate(now, usegmt=True).encode()
    return _date_line


def status_line(status: int) -> bytes:
    return STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status


@lru_cache(maxsize=256)
def header_line(name: str, value: str) -> bytes:
    """``name: value\r\n``, checked for line breaks; the same few headers go out with
    every answer, so each is built and checked once."""
    line = f"{name}: {value}\r\n"
    if line.count("\n") != 1 or "\r" in line[:-2]:
        raise ValueError(f"a line break in header {name!r}")
    return line.encode("latin-1")


def header_lines(headers: dict[str, str] | None) -> bytes:
    if not headers:
        return b""
    return b"".join([header_line(k, v) for k, v in headers.items()])


class Body:
    """A request's body, as the handler reads it (``request.content``)."""

    __slots__ = ("_conn", "_chunks", "_size", "_total", "_eof", "_error", "_waiter", "_expect")

    def __init__(self, conn: Connection, expect: bool) -> None:
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
            self.fail(BodyTooLarge(limit))
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
        try:
            await waiter
        finally:
            self._waiter = None

    def _take(self, n: int) -> bytes:
        chunks = self._chunks
        if len(chunks) == 1 and len(chunks[0]) == n:
            data = chunks.popleft()
        else:
            joined = b"".join(chunks)
            chunks.clear()
            data, rest = joined[:n], joined[n:]
            if rest:
                chunks.append(rest)
        self._size -= n
        if self._conn.read_paused:
            self._conn.update_reading()
        return data

    async def readany(self) -> bytes:
        """The bytes buffered so far (waiting for some); b"" at the end of the body."""
        while True:
            if self._error is not None:
                raise self._error
            if self._chunks:
                return self._take(self._size)
            if self._eof:
                return b""
            await self._wait()

    async def readexactly(self, n: int) -> bytes:
        while self._size < n:
            if self._error is not None:
                raise self._error
            if self._eof:
                raise asyncio.IncompleteReadError(self._take(self._size), n)
            await self._wait()
        if self._error is not None:
            raise self._error
        return self._take(n)


class Request:
    __slots__ = ("method", "path", "content_length", "content", "keep_alive", "http10", "_conn")

    def __init__(
        self, conn: Connection, method: str, path: str, length: int | None, expect: bool
    ) -> None:
        self._conn = conn
        self.method = method
        self.path = path
        self.content_length = length
        self.content = Body(conn, expect)
        self.keep_alive = True
        self.http10 = False

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._conn.transport


class Response:
    """A whole answer: status, headers and body, sent in one write."""

    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(
        self,
        *,
        status: int = 200,
        body: bytes = b"",
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers

    def encode(self, keep: bool, http10: bool, head_only: bool) -> bytes:
        """The whole answer as bytes: status line, headers, and (unless HEAD) the body."""
        if not keep:
            conn = b"Connection: close\r\n"
        elif http10:
            conn = b"Connection: keep-alive\r\n"
        else:
            conn = b""
        body = self.body
        ctype = self.content_type
        head = b"%s%s%s%sContent-Length: %d\r\n%s\r\n" % (
            status_line(self.status),
            header_line("Content-Type", ctype) if ctype else b"",
            header_lines(self.headers),
            date_line(),
            len(body),
            conn,
        )
        return head if head_only else head + body


class StreamResponse:
    """An answer written piece by piece: chunked (HTTP/1.0: until the connection closes)."""

    __slots__ = ("status", "headers", "_conn", "_head", "_chunked", "_done")

    def __init__(self, *, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = headers
        self._conn: Connection | None = None
        self._head = b""
        self._chunked = True
        self._done = False

    @property
    def prepared(self) -> bool:
        return self._conn is not None

    async def prepare(self, request: Request) -> None:
        """Build the head; it goes out with the first body bytes."""
        conn = self._conn = request._conn
        conn.started = True
        if request.http10:
            request.keep_alive = False  # no chunked framing: the end of the body is the close
        keep = conn.keep(request)
        self._chunked = not request.http10
        framing = b"Transfer-Encoding: chunked\r\n" if self._chunked else b""
        close = b"" if keep else b"Connection: close\r\n"
        self._head = b"%s%s%s%s%s\r\n" % (
            status_line(self.status),
            header_lines(self.headers),
            date_line(),
            framing,
            close,
        )
        if request.method == "HEAD":
            self._done = True
            await self._send(b"")

    async def _send(self, data: bytes) -> None:
        conn = self._conn
        assert conn is not None, "write before prepare"
        transport = conn.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        if self._head:
            data = self._head + data
            self._head = b""
        transport.write(data)
        if conn.write_paused:
            await conn.drain()

    async def write(self, data: bytes) -> None:
        if not data or self._done:
            return
        await self._send(b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data)

    async def write_eof(self, data: bytes = b"") -> None:
        """Write ``data`` and the end of the body, in one write."""
        if self._done:
            return
        self._done = True
        if self._chunked:
            data = b"%x\r\n%s\r\n%s" % (len(data), data, LAST_CHUNK) if data else LAST_CHUNK
        await self._send(data)


Reply = Response | StreamResponse
Handler = Callable[[Request], Awaitable[Reply]]
