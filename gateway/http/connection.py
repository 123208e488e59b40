"""One client connection of the lean HTTP/1.1 server (``gateway.http.server``):
an asyncio protocol that parses requests with httptools and runs the handler on
each.

* One ``Connection`` per socket parses requests with llhttp (strict: no
  obs-fold, no bare LF, no Content-Length beside Transfer-Encoding, no
  duplicate Content-Length, no control characters in names or values) and
  refuses what llhttp lets through: a version other than 1.1 and 1.0 (llhttp
  takes HTTP/0.9 and 2.0), a Transfer-Encoding other than ``chunked``. Each
  request runs its handler in a task of its own; pipelined requests queue and
  run in order (reading stops at ``max_pipelined`` queued; a request read past
  ``MAX_QUEUED_REQUESTS`` queued is refused, 503).
* A client that goes away cancels its handler at once.
* Bounds (``config.Http``, defaults in ``gateway.limits``): the request line,
  each header line (and name), the header count and the whole head (431); the time to
  send a head (408); a body over the limit (413, before it is read when
  Content-Length says so); open connections (one more gets 503); keep-alive
  idle time. HTTP/1.1 without exactly one Host: 400; ``Expect`` other than
  ``100-continue``: 417. Every refusal is an OpenAI-shaped JSON error, and
  the connection is closed after it.
* Keep-alive (HTTP/1.1 by default, HTTP/1.0 on request). A handler may leave a
  request body unread: if it was not received whole, the connection is closed
  after the answer.

A connection reaches its server only through what ``Owner`` lists, so this module
imports nothing of ``server``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol
from urllib.parse import unquote

import httptools

from gateway.config import Http
from gateway.errors import (
    ExpectationFailed,
    GatewayError,
    HeadersTooLarge,
    InternalError,
    InvalidRequest,
    Overloaded,
    RequestTimeout,
    body_too_large,
)
from gateway.http.messages import Handler, Headers, Response, StreamResponse, unreadable
from gateway.http.refusals import RefusalLog
from gateway.http.request import Bounds, Request
from gateway.limits import UNREAD_BODY_LINGER

log = logging.getLogger("gateway")

# The request headers the server itself reads (the rest only go to the handler).
SPECIAL = frozenset((b"content-length", b"host", b"expect", b"transfer-encoding"))
METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")}
MALFORMED = "Malformed HTTP request"


class _Refused(Exception):
    """Raised in a parser callback to stop parsing (the reason is ``Connection.refusal``)."""


class Owner(Bounds, Protocol):
    """What a connection uses of its server."""

    handler: Handler
    loop: asyncio.AbstractEventLoop
    limits: Http
    connections: set[Connection]
    refusals: RefusalLog
    closing: bool
    keepalive_timeout: float
    max_line: int
    max_field: int
    max_name: int
    max_queued: int

    def watch(self) -> None: ...

    def run_on(self, task: asyncio.Task[None]) -> None: ...

    def forget(self, conn: Connection) -> None: ...


class Connection(asyncio.Protocol):
    __slots__ = (
        "server", "loop", "transport", "parser", "url", "length", "expect", "hosts",
        "headers", "in_head", "head_size", "head_read", "head_since", "parsing", "last",
        "queue", "task", "started", "stopped", "refusal", "read_paused", "write_paused",
        "drain_waiters", "idle_since", "timer", "closed", "detached",
    )  # fmt: skip

    def __init__(self, server: Owner) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.length: int | None = None
        self.expect: bytes | None = None  # the Expect header's value
        self.hosts = 0  # Host headers seen
        self.headers: list[tuple[bytes, bytes]] = []  # the current head's, names lower-cased
        self.in_head = False
        self.head_size = 0  # bytes of the head's complete lines
        self.head_read = 0  # bytes read after the read in which the head began
        self.head_since = 0.0  # loop time the current head began
        self.parsing: Request | None = None  # headers read, body not complete
        self.last: Request | None = None  # the newest request
        self.queue: deque[Request] = deque()  # waiting for the current one to finish
        self.task: asyncio.Task[None] | None = None
        self.started = False  # the current answer has begun going out
        self.stopped = False  # no more requests are read on this connection
        self.refusal: GatewayError | None = None  # answered once the queue is done, then close
        self.read_paused = False
        self.write_paused = False
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False  # _close was called
        self.detached = False  # the current handler runs on if the client goes (detach)

    # ---- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        if len(server.connections) >= server.limits.max_connections:
            exc = Overloaded("The gateway holds as many connections as it may; try again.")
            server.refusals.note("connections", exc.message)
            self.stopped = self.closed = True
            transport.write(Response.error(exc).encode(False, False, False))  # type: ignore[attr-defined]
            transport.close()
            return
        server.connections.add(self)
        server.watch()
        self._idle()

    def data_received(self, data: bytes) -> None:
        if self.stopped:
            return
        if self.in_head:  # the head goes on from an earlier read (a slow or huge head)
            self.head_read += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No protocol upgrades here: answer the request, then close.
            self.stopped = True
            if self.last is not None:
                self.last.keep_alive = False
            return
        except httptools.HttpParserError as exc:
            refusal = self.refusal
            self.refusal = None
            self._refuse(refusal or InvalidRequest(f"{MALFORMED}: {exc}."))
            return
        # Checked after the read: a head that ends in it is bounded by on_header (its
        # lines), and the body bytes after it are not head. One that still goes on has
        # had every byte since its first read counted.
        if self.in_head and self.head_read > self.server.limits.max_head_bytes:
            self._refuse(HeadersTooLarge("The request head is too large."))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.stopped = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        task = self.task
        if task is not None:
            self.task = None
            if self.detached:
                self.server.run_on(task)
            else:
                task.cancel()
        gone = ConnectionResetError("The client closed the connection.")
        if self.parsing is not None:
            self.parsing.content.fail(gone)
        for req in self.queue:
            req.content.fail(gone)
        self.queue.clear()
        for waiter in self.drain_waiters:
            if not waiter.done():
                waiter.set_exception(gone)
        self.drain_waiters.clear()
        self.server.forget(self)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for waiter in self.drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.drain_waiters.clear()

    async def drain(self) -> None:
        if self.transport is None:
            raise ConnectionResetError("The client closed the connection.")
        if not self.write_paused:
            return
        waiter = self.loop.create_future()
        self.drain_waiters.append(waiter)
        await waiter

    # ---- httptools callbacks -----------------------------------------------------------
    # A callback that refuses the request sets ``refusal`` and raises _Refused: llhttp
    # stops, and data_received answers the refusal.

    def _stop(self, exc: GatewayError) -> None:
        self.refusal = exc
        raise _Refused(exc.message)

    def on_message_begin(self) -> None:
        self.in_head = True
        self.url = b""
        self.length = None
        self.expect = None
        self.hosts = 0
        self.headers = []
        self.head_size = self.head_read = 0
        self.head_since = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.server.max_line:
            self._stop(HeadersTooLarge("The request line is too long."))

    def on_header(self, name: bytes, value: bytes) -> None:
        # Per header: one check here (the line); the count and the whole head are
        # checked once, at the head's end (until then the head's size is bounded by
        # the read it came in, and data_received bounds the reads after it).
        key = name.lower()
        self.headers.append((key, value))
        size = len(name) + len(value)
        self.head_size += size + 4
        if size > self.server.max_name and (
            size > self.server.max_field or len(name) > self.server.max_name
        ):
            self._stop(HeadersTooLarge("A request header line is too long."))
        if key not in SPECIAL:
            return
        if key == b"content-length":
            self.length = int(value)  # (llhttp has checked the digits, and that it is the only one)
        elif key == b"host":
            self.hosts += 1
        elif key == b"expect":
            self.expect = value.lower()
        elif key == b"transfer-encoding" and value.lower() != b"chunked":
            # llhttp takes the last coding of the last such header (``identity`` then
            # ``chunked`` is chunked): a proxy in front may read it otherwise.
            self._stop(InvalidRequest("Only 'Transfer-Encoding: chunked' is understood."))

    def on_headers_complete(self) -> None:
        self.in_head = False
        limits = self.server.limits
        if len(self.headers) > limits.max_headers:
            self._stop(HeadersTooLarge(f"The request has more than {limits.max_headers} headers."))
        if self.head_size > limits.max_head_bytes:
            self._stop(HeadersTooLarge("The request head is too large."))
        parser = self.parser
        version = parser.get_http_version()
        http10 = False
        if version != "1.1":
            if version != "1.0":  # (llhttp takes 0.9, no version at all, and 2.0)
                self._stop(InvalidRequest(f"HTTP/{version} is not supported: HTTP/1.1 or 1.0."))
            http10 = True
        if self.hosts != 1 and (self.hosts or not http10):
            self._stop(InvalidRequest("An HTTP/1.1 request needs exactly one Host header."))
        expect = self.expect
        if expect is not None and expect != b"100-continue":
            self._stop(ExpectationFailed("Only 'Expect: 100-continue' is understood."))
        if self.task is not None and len(self.queue) >= self.server.max_queued:
            # (one read can hold thousands of small requests)
            self._stop(Overloaded("Too many pipelined requests wait on this connection."))
        raw = parser.get_method()
        method = METHODS.get(raw) or raw.decode("latin-1")
        url = self.url
        if not url.startswith(b"/"):  # absolute form (or "*")
            url = httptools.parse_url(url).path or b"/"
        end = url.find(b"?")
        if end >= 0:
            url = url[:end]
        path = url.decode("latin-1")
        if "%" in path:
            path = unquote(path, errors="replace")
        headers = Headers(self.headers)
        req = Request(self, method, path, self.length, expect is not None and not http10, headers)
        req.keep_alive = parser.should_keep_alive()
        req.http10 = http10
        limit = self.server.max_body
        if self.length is not None and self.length > limit:
            req.content.fail(body_too_large(limit, self.length))  # answered before it is read
        self.parsing = self.last = req
        self.queue.append(req)
        if self.task is None:
            self._next()
        elif len(self.queue) >= self.server.limits.max_pipelined:
            self.update_reading()

    def on_body(self, body: bytes) -> None:
        if self.parsing is not None:
            self.parsing.content.feed(body)

    def on_message_complete(self) -> None:
        req = self.parsing
        if req is not None:
            req.content.feed_eof()
            self.parsing = None
            if not req.keep_alive:
                self.stopped = True  # whatever follows "Connection: close" is ignored

    def head_timed_out(self) -> None:
        """The server's sweep found this head older than ``head_timeout``."""
        self._refuse(RequestTimeout("The request head did not arrive in time."))

    # ---- running requests ----------------------------------------------------------------

    def _next(self) -> None:
        """Start the next queued request, or answer a refused one, or wait idle."""
        if self.queue:
            req = self.queue.popleft()
            self.started = self.detached = False
            self.task = self.loop.create_task(self._run(req))
            if self.read_paused:
                self.update_reading()
        elif self.refusal is not None:
            self._write_error(self.refusal)
        elif self.server.closing:
            self._close()
        else:
            self._idle()

    async def _run(self, req: Request) -> None:
        try:
            try:
                resp = await self.server.handler(req)
            except GatewayError as exc:  # (a handler normally answers its own errors)
                req.keep_alive = False
                resp = Response.error(exc)
            if isinstance(resp, StreamResponse):
                if not resp.prepared:
                    await resp.prepare(req)
                await resp.write_eof()
            elif self.started:
                raise RuntimeError("a Response returned after a StreamResponse was prepared")
            else:
                self._write(req, resp)  # type: ignore[arg-type]  # (an upgrade: branch i21-ws)
                if self.write_paused:
                    await self.drain()
        except asyncio.CancelledError:
            return  # the connection is gone (connection_lost cancelled us)
        except ConnectionError:
            self.task = None
            self._close()
            return
        except Exception:
            log.exception("unhandled error on %s %s", req.method, req.path)
            self.task = None
            if not self.started:
                self._write_error(InternalError("The gateway failed unexpectedly."))
            self._close()
            return
        self.task = None
        if req.keep_alive and self.transport is not None:
            self._next()
        else:
            self._close()

    def keep(self, req: Request) -> bool:
        """Whether the connection stays open after ``req``'s answer (decided at its head)."""
        keep = req.keep_alive and req.content.complete and not self.server.closing
        req.keep_alive = keep
        return keep

    def _write(self, req: Request, resp: Response) -> None:
        self.started = True
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        data = resp.encode(self.keep(req), req.http10, req.method == "HEAD")
        transport.write(data)

    def _write_error(self, exc: GatewayError) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(Response.error(exc).encode(False, False, False))
        self._close()

    def _refuse(self, exc: GatewayError) -> None:
        """Stop reading; answer ``exc`` once the requests before it are answered; close."""
        self.server.refusals.note(type(exc).__name__, exc.message)
        self.stopped = True
        self.refusal = exc
        if self.parsing is not None:
            self.parsing.content.fail(unreadable("the HTTP framing is malformed"))
            self.parsing.keep_alive = False
            self.parsing = None
        if self.task is None:
            self._next()

    # ---- flow control and lifetime -------------------------------------------------------

    def update_reading(self) -> None:
        """Stop reading while too much is buffered unread; read again once it is not."""
        transport = self.transport
        if transport is None:
            return
        body = self.parsing.content if self.parsing is not None else None
        full = len(self.queue) >= self.server.limits.max_pipelined or (
            body is not None and body.buffered_too_much
        )
        if full and not self.read_paused:
            self.read_paused = True
            transport.pause_reading()
        elif not full and self.read_paused:
            self.read_paused = False
            transport.resume_reading()

    def _idle(self) -> None:
        self.idle_since = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_later(self.server.keepalive_timeout, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.transport is None or self.task is not None or self.queue:
            return  # busy: the timer starts again when the connection is idle
        left = self.idle_since + self.server.keepalive_timeout - self.loop.time()
        if left <= 0:
            self._close()
        else:
            self.timer = self.loop.call_later(left, self._on_timer)

    def close_when_idle(self) -> None:
        self.stopped = True
        if self.task is None:
            self._close()

    def _close(self) -> None:
        self.stopped = True
        transport = self.transport
        if transport is None or self.closed:
            return
        self.closed = True
        if (self.parsing is None and self.refusal is None) or not transport.can_write_eof():
            transport.close()
            return
        # The client may still be sending a body we will not read: closing now would
        # reset the connection, which can destroy our answer before the client reads
        # it. Send our end and drop what comes until the client closes (or UNREAD_BODY_LINGER s).
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()
        transport.write_eof()
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(UNREAD_BODY_LINGER, transport.close)

    def abort(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.transport.abort()
