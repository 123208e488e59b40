"""What a handler sees, whichever HTTP server runs it: a request (method, path,
``headers``, ``content``) and the two kinds of answer, ``Response`` (one write)
and ``StreamResponse`` (written piece by piece).

``Request`` and ``Body`` here are the lean server's (``gateway.http.server``);
``gateway.http.aiohttp_server`` gives a request with the same attributes on
aiohttp's low-level server. A handler only uses what ``Incoming`` lists.

* Request bodies: Content-Length or chunked, bounded by the server's
  ``max_body``; ``Expect: 100-continue`` is answered when the handler first
  waits for the body; a body that stops arriving for ``body_timeout`` seconds
  fails the read. Reads raise the gateway's own errors (``RequestTooLarge``,
  ``RequestTimeout``, ``InvalidRequest``).
* Writes go straight to the transport; only a paused transport (the peer reads
  slowly) makes ``write`` wait.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol

from gateway.errors import GatewayError, InvalidRequest, RequestTimeout, body_too_large
from gateway.limits import REQUEST_BODY_HIGH_WATER

if TYPE_CHECKING:
    from gateway.http.server import Connection

STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode() for s in HTTPStatus}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"
# Bytes allowed in a header value we send: visible ASCII, space, tab, and obs-text.
_VALUE_BYTES = bytes([9, *range(32, 127), *range(128, 256)])
_TOKEN_BYTES = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_CUT_VALUE = bytes.maketrans(b"", b"")

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


_NAME_PREFIXES: dict[str, bytes] = {}  # checked header names -> b"Name: "


def _name_prefix(name: str) -> bytes:
    raw = name.encode("latin-1")
    if not raw or raw.translate(_CUT_VALUE, _TOKEN_BYTES):
        raise ValueError(f"not a header name: {name!r}")
    prefix = raw + b": "
    if len(_NAME_PREFIXES) < 256:  # (names come from the code: a few)
        _NAME_PREFIXES[name] = prefix
    return prefix


def header_line(name: str, value: str) -> bytes:
    """``name: value\\r\\n``, checked: the name a token, the value free of control
    characters (no CR, LF or NUL can inject a header or split the answer). A name is
    checked once; a value of visible ASCII and spaces (nearly all: request ids, types,
    counts) needs no more than two C calls, other values a byte-wise check."""
    prefix = _NAME_PREFIXES.get(name) or _name_prefix(name)
    if value.isascii() and value.isprintable():
        return prefix + value.encode("ascii") + b"\r\n"
    raw = value.encode("latin-1")
    if raw.translate(_CUT_VALUE, _VALUE_BYTES):
        raise ValueError(f"a control character in the value of header {name!r}")
    return prefix + raw + b"\r\n"


def header_lines(headers: dict[str, str] | None) -> bytes:
    if not headers:
        return b""
    return b"".join([header_line(k, v) for k, v in headers.items()])


_NAMES: dict[str, bytes] = {}  # header names the code looks up -> their lower-cased bytes


def _name_key(name: str) -> bytes:
    key = name.lower().encode("latin-1")
    if len(_NAMES) < 256:  # (names come from the code, not from clients)
        _NAMES[name] = key
    return key


class Headers:
    """A request's headers as received (at most the server's header count), with
    case-insensitive lookup. Names are kept lower-cased, values as bytes until read."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[bytes, bytes]] | None = None) -> None:
        self._items = items if items is not None else []

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (any case), decoded as latin-1."""
        key = _NAMES.get(name) or _name_key(name)
        for k, v in self._items:
            if k == key:
                return v.decode("latin-1")
        return default

    def getall(self, name: str) -> list[str]:
        key = name.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in self._items if k == key]

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


class Content(Protocol):
    """A request body as handlers read it."""

    async def read(self, limit: int) -> bytes: ...


class Incoming(Protocol):
    """What a handler may use of a request, on either server."""

    method: str
    path: str
    content_length: int | None
    headers: Headers

    @property
    def content(self) -> Content: ...

    async def open_stream(self, status: int, headers: dict[str, str] | None) -> StreamOut: ...

    def abort(self) -> None: ...

    def detach(self) -> bool:
        """Let the handler run to its end even if the client goes away (its answer is
        then dropped), instead of being cancelled. False where the server cannot: the
        handler must then shield the work that has to finish itself."""
        ...


class StreamOut(Protocol):
    """A server's side of a ``StreamResponse``."""

    async def write(self, data: bytes) -> None: ...

    async def write_eof(self, data: bytes) -> None: ...


class Body:
    """A request's body on the lean server (``request.content``)."""

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
        conn: Connection,
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

    def __init__(self, conn: Connection, *, chunked: bool) -> None:
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

    @classmethod
    def error(cls, exc: GatewayError) -> Response:
        """The OpenAI-shaped error answer for ``exc`` (with its headers: Retry-After)."""
        return cls(
            status=exc.status, body=exc.body(), content_type="application/json", headers=exc.headers
        )

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
    """An answer written piece by piece, on whichever server the request came from."""

    __slots__ = ("status", "headers", "_out", "_done")

    def __init__(self, *, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = headers
        self._out: StreamOut | None = None
        self._done = False

    @property
    def prepared(self) -> bool:
        return self._out is not None

    async def prepare(self, request: Incoming) -> None:
        """Start the answer (its head goes out with the first body bytes)."""
        self._out = await request.open_stream(self.status, self.headers)

    async def write(self, data: bytes) -> None:
        if not data or self._done:
            return
        assert self._out is not None, "write before prepare"
        await self._out.write(data)

    async def write_eof(self, data: bytes = b"") -> None:
        """Write ``data`` and the end of the body, in one write."""
        if self._done:
            return
        self._done = True
        assert self._out is not None, "write_eof before prepare"
        await self._out.write_eof(data)


def unreadable(what: str) -> InvalidRequest:
    """The 400 for a body the HTTP parser refused (bad chunk framing, cut short)."""
    return InvalidRequest(f"The request body could not be read: {what}.")


Reply = Response | StreamResponse
Handler = Callable[[Incoming], Awaitable[Reply]]
