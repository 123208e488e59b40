"""What a handler sees, whichever HTTP server runs it: a request (``Incoming``: method,
path, ``headers``, ``content``) and the two kinds of answer, ``Response`` (one write)
and ``StreamResponse`` (written piece by piece); and the pieces an answer's head is
written with (the status line, checked header lines, ``Date``).

The lean server's request is ``gateway.http.request.Request``;
``gateway.http.aiohttp_server`` gives one with the same attributes on aiohttp's
low-level server. A handler only uses what ``Incoming`` lists, and this module
imports neither server. On both, reading a body (``Content.read``) raises the
gateway's own errors (``RequestTooLarge``, ``RequestTimeout``, ``InvalidRequest``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol

from gateway.errors import GatewayError, InvalidRequest

STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode() for s in HTTPStatus}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
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

    def wants_websocket(self) -> bool: ...  # GET with Upgrade: websocket

    async def accept_websocket(self, headers: dict[str, str] | None = None) -> WebSocket: ...


class StreamOut(Protocol):
    """A server's side of a ``StreamResponse``."""

    async def write(self, data: bytes) -> None: ...

    async def write_eof(self, data: bytes) -> None: ...


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


class WebSocket(Protocol):
    async def receive(self) -> bytes | None: ...

    async def send(self, data: bytes) -> None: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class Upgraded: ...


UPGRADED = Upgraded()
Reply = Response | StreamResponse | Upgraded
Handler = Callable[[Incoming], Awaitable[Reply]]
