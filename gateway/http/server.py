"""A lean HTTP/1.1 server: asyncio protocols and httptools' C request parser.

The gateway's handlers need little from an HTTP server: the method, the path,
the body, and two kinds of answer (``gateway.http.messages``). This module
serves exactly that, without aiohttp's per-request machinery (request objects
with header multidicts, URL objects, access-log hooks, payload writers). See
bench/README.md for the measured difference.

* One ``Connection`` per socket parses requests with llhttp. Each request runs
  its handler in a task of its own; pipelined requests queue and run in order.
* A client that goes away cancels its handler at once.
* Keep-alive (HTTP/1.1 by default, HTTP/1.0 on request); a connection idle for
  ``keepalive_timeout`` seconds (``limits.HTTP_KEEPALIVE_IDLE``) is closed.
* A malformed request gets a 400 and the connection is closed. A handler may
  leave a request body unread: if it was not received whole, the connection
  is closed after the answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from urllib.parse import unquote

import httptools

from gateway.http.messages import (
    BadRequest,
    BodyTooLarge,
    Handler,
    HttpError,
    Request,
    Response,
    StreamResponse,
)
from gateway.limits import (
    HTTP_KEEPALIVE_IDLE,
    MAX_PIPELINED,
    MAX_REQUEST_HEAD,
    UNREAD_BODY_LINGER,
)

log = logging.getLogger("gateway")

METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")}


class Server:
    """The protocol factory for ``loop.create_server``, and the set of open connections."""

    def __init__(
        self, handler: Handler, *, max_body: int, keepalive_timeout: float = HTTP_KEEPALIVE_IDLE
    ) -> None:
        self.handler = handler
        self.max_body = max_body
        self.keepalive_timeout = keepalive_timeout
        self.loop = asyncio.get_running_loop()
        self.connections: set[Connection] = set()
        self.closing = False
        self._all_closed: asyncio.Future[None] | None = None

    def __call__(self) -> Connection:
        return Connection(self)

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        done = self._all_closed
        if not self.connections and done is not None and not done.done():
            done.set_result(None)

    async def shutdown(self, timeout: float) -> None:
        """Close idle connections; give busy ones ``timeout`` s to finish, then abort them.

        Stop the listening socket first (``asyncio.Server.close``).
        """
        self.closing = True
        for conn in list(self.connections):
            conn.close_when_idle()
        if self.connections:
            self._all_closed = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._all_closed), timeout)
            except TimeoutError:
                log.warning("%d connection(s) still busy at shutdown", len(self.connections))
        for conn in list(self.connections):
            conn.abort()


class Connection(asyncio.Protocol):
    __slots__ = (
        "server",
        "loop",
        "transport",
        "parser",
        "url",
        "length",
        "expect",
        "in_head",
        "head_bytes",
        "parsing",
        "last",
        "queue",
        "task",
        "started",
        "stopped",
        "bad",
        "read_paused",
        "write_paused",
        "drain_waiters",
        "idle_since",
        "timer",
        "closed",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.length: int | None = None
        self.expect = False
        self.in_head = False
        self.head_bytes = 0
        self.parsing: Request | None = None  # headers read, body not complete
        self.last: Request | None = None  # the newest request
        self.queue: deque[Request] = deque()  # waiting for the current one to finish
        self.task: asyncio.Task[None] | None = None
        self.started = False  # the current answer has begun going out
        self.stopped = False  # no more requests are read on this connection
        self.bad = False  # a malformed request: answer 400 once the queue is done
        self.read_paused = False
        self.write_paused = False
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False  # _close was called

    # ---- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        self._idle()

    def data_received(self, data: bytes) -> None:
        if self.stopped:
            return
        if self.in_head:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_REQUEST_HEAD:
                self._malformed()
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No protocol upgrades here: answer the request, then close.
            self.stopped = True
            if self.last is not None:
                self.last.keep_alive = False
        except httptools.HttpParserError:
            self._malformed()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.stopped = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None:
            self.task.cancel()
            self.task = None
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

    def on_message_begin(self) -> None:
        self.in_head = True
        self.url = b""
        self.length = None
        self.expect = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        n = len(name)
        if n == 14 and name.lower() == b"content-length":
            self.length = int(value)
        elif n == 6 and name.lower() == b"expect":
            self.expect = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_bytes = 0
        parser = self.parser
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
        http10 = parser.get_http_version() == "1.0"
        req = Request(self, method, path, self.length, self.expect and not http10)
        req.keep_alive = parser.should_keep_alive()
        req.http10 = http10
        limit = self.server.max_body
        if self.length is not None and self.length > limit:
            req.content.fail(BodyTooLarge(limit, self.length))
        self.parsing = self.last = req
        self.queue.append(req)
        if self.task is None:
            self._next()
        elif len(self.queue) >= MAX_PIPELINED:
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

    # ---- running requests ----------------------------------------------------------------

    def _next(self) -> None:
        """Start the next queued request, or answer a malformed one, or wait idle."""
        if self.queue:
            req = self.queue.popleft()
            self.started = False
            self.task = self.loop.create_task(self._run(req))
            if self.read_paused:
                self.update_reading()
        elif self.bad:
            self._write_error(400, b"Malformed HTTP request.")
        elif self.server.closing:
            self._close()
        else:
            self._idle()

    async def _run(self, req: Request) -> None:
        try:
            try:
                resp = await self.server.handler(req)
            except HttpError as exc:
                req.keep_alive = False
                resp = Response(
                    status=exc.status, body=str(exc).encode(), content_type="text/plain"
                )
            if isinstance(resp, StreamResponse):
                if not resp.prepared:
                    await resp.prepare(req)
                await resp.write_eof()
            elif self.started:
                raise RuntimeError("a Response returned after a StreamResponse was prepared")
            else:
                self._write(req, resp)
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
                self._write_error(500, b"Internal server error.")
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

    def _write_error(self, status: int, message: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            resp = Response(status=status, body=message, content_type="text/plain")
            transport.write(resp.encode(False, False, False))
        self._close()

    def _malformed(self) -> None:
        self.stopped = True
        self.bad = True
        if self.parsing is not None:
            self.parsing.content.fail(BadRequest("Malformed request body."))
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
        full = len(self.queue) >= MAX_PIPELINED or (body is not None and body.buffered_too_much)
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
        if (self.parsing is None and not self.bad) or not transport.can_write_eof():
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
