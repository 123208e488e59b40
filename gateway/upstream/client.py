"""A lean HTTP/1.1 client for the upstream: asyncio protocols and httptools' C parser.

aiohttp's ClientSession does much per request that a gateway talking to one
known server does not need (cookie jars, redirects, tracing signals, header
multidicts, a task per timeout). Here a request is one ``transport.write`` of
prebuilt header bytes plus the body, and the response is parsed by
``httptools`` (llhttp) straight into a byte queue. See bench/README.md for the
measured difference.

Connections are pooled per ``Pool`` (one per upstream), LIFO, at most
``limits.UPSTREAM_MAX_CONNECTIONS`` open (a request waits at most
``UPSTREAM_POOL_TIMEOUT`` seconds for one, then gets ``UpstreamBusy``: 503), and
closed by the pool's one idle timer after ``limits.UPSTREAM_IDLE`` seconds
unused, below the 5 s keep-alive of uvicorn-based servers (vLLM, SGLang) so
that a pooled connection is rarely closed under us; a request that finds its
reused connection closed before any response byte is sent again on another.

A response released before its end whose framing allows reuse (keep-alive,
Content-Length or chunked) is drained off the caller's path: model servers send
``data: [DONE]`` and only then the end of the chunked body, so a stream is
usually released a moment before its last bytes. The protocol drops what
arrives, and pools the connection at the body's end; past
``limits.UPSTREAM_DRAIN_BYTES`` or ``UPSTREAM_DRAIN_TIMEOUT`` seconds it closes
it, so that an upstream still generating for a client that left sees the
connection close. No task per drain: ``data_received`` and one timer. A read
cancelled mid-answer (the client went away), an error, or framing by the end of
the connection closes the connection at once.

Back-pressure: once ``limits.UPSTREAM_BODY_HIGH_WATER`` bytes are buffered
unread, the socket stops being read until the reader takes them (``read_some``
and ``read`` both take what has arrived each time they wake).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Protocol
from urllib.parse import urlsplit

import httptools

from gateway.errors import (
    CHUNK_TIMEOUT,
    CONNECT_TIMEOUT,
    HEADERS_TIMEOUT,
    REQUEST_TIMEOUT,
    UpstreamBadResponse,
    UpstreamBusy,
    UpstreamTimeout,
    UpstreamUnavailable,
    UpstreamUnreachable,
)
from gateway.limits import (
    UPSTREAM_BODY_HIGH_WATER,
    UPSTREAM_DRAIN_BYTES,
    UPSTREAM_DRAIN_TIMEOUT,
    UPSTREAM_DRAIN_WAIT,
    UPSTREAM_IDLE,
    UPSTREAM_MAX_CONNECTIONS,
    UPSTREAM_POOL_TIMEOUT,
)
from gateway.upstream.waiters import hand_to_first

# uvloop counts time in milliseconds: a timer may fire a little before its time.
TIMER_SLACK = 0.002
NO_DEADLINE = float("inf")
TIMED_OUT = {
    CONNECT_TIMEOUT: "Connecting to the upstream server timed out.",
    HEADERS_TIMEOUT: "The upstream server timed out before it began its answer.",
    CHUNK_TIMEOUT: "The upstream server timed out: its answer stalled.",
    REQUEST_TIMEOUT: "The upstream request ran out of time as a whole.",
}


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Timers(Protocol):
    """The clock and timers of a pool: its event loop's, or a test's fake."""

    def time(self) -> float: ...

    def call_later(
        self, delay: float, callback: Callable[..., object], *args: Any
    ) -> Cancellable: ...


class UpstreamConnection(asyncio.Protocol):
    """One connection and the response currently being read from it."""

    __slots__ = (
        "pool",
        "replica",
        "transport",
        "parser",
        "status",
        "content_type",
        "chunks",
        "buffered",
        "headers_done",
        "complete",
        "received",
        "error",
        "waiter",
        "paused",
        "idle_since",
        "framed",
        "keep_alive",
        "draining",
        "drained",
        "drain_timer",
        "slot",
        "retry_after",
        "deadline",
        "done",
    )

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.idle_since = 0.0
        self.draining = False  # released before the body's end; the rest is dropped
        self.drained = 0  # bytes dropped so far
        self.drain_timer: Cancellable | None = None
        self.slot = True  # holds one of the pool's slots (reserved before it was made)
        self.deadline = NO_DEADLINE  # the loop time by which the whole request must end
        # Called once at the first release (the replica's accounting of its load).
        self.done: Callable[[], object] | None = None
        self.replica = ""  # the base URL of the replica that answers (set by its set)
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.content_type = b""
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.headers_done = False
        self.complete = False
        self.received = False
        self.framed = False  # Content-Length or Transfer-Encoding seen
        self.keep_alive = False
        self.retry_after: bytes | None = None

    # ---- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.pool.conns.add(self)

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamBadResponse(f"The upstream sent malformed HTTP: {exc}"))
            self._close()
            return
        if self.draining:
            self._drain(len(data))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.pool.conns.discard(self)
        if self.draining:
            self._end_drain()
        self._drop_slot()
        if self.headers_done and not self.framed and exc is None:
            self.complete = True  # a body delimited by the end of the connection
            self._wake()
        elif not self.complete and self.error is None:
            self._fail(UpstreamUnavailable("The upstream server closed the connection."))

    # ---- httptools callbacks -------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self.content_type = value
        elif name in (b"content-length", b"transfer-encoding"):
            self.framed = True
        elif name == b"retry-after":
            self.retry_after = value

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        # Known from the status line and headers: HTTP/1.1 (or keep-alive), no
        # Connection: close, and a body framed by Content-Length or chunks.
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if (
            self.buffered > UPSTREAM_BODY_HIGH_WATER
            and not self.paused
            and self.transport is not None
        ):
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        # llhttp forgets keep-alive once feed_data returns: read it here.
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True
        self._wake()

    # ---- reading -----------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        self.error = exc
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def _wait(self) -> None:
        if self.error is not None:
            raise self.error
        loop = asyncio.get_running_loop()
        self.waiter = waiter = loop.create_future()
        pool = self.pool
        if self.headers_done:
            timeout, phase = pool.chunk_timeout, CHUNK_TIMEOUT
        else:
            timeout, phase = pool.headers_timeout, HEADERS_TIMEOUT
        left = self.deadline - loop.time()
        if left < timeout:
            timeout, phase = max(left, 0.0), REQUEST_TIMEOUT
        timer = loop.call_later(timeout, self._timed_out, waiter, phase)
        try:
            await waiter
        except asyncio.CancelledError:
            # Cancelled mid-answer (the client went away): nobody wants the rest,
            # and the upstream should see the connection close and stop generating.
            if self.error is None:
                self.error = UpstreamUnavailable("The read of the upstream answer was cancelled.")
            raise
        finally:
            timer.cancel()
            self.waiter = None

    def _timed_out(self, waiter: asyncio.Future[None], phase: str) -> None:
        if not waiter.done():
            self.error = UpstreamTimeout(TIMED_OUT[phase], code=phase)
            waiter.set_exception(self.error)

    async def read_headers(self) -> None:
        while not self.headers_done:
            await self._wait()

    def ready(self) -> bool:
        """``read_some`` would return bytes or the end at once (never an error)."""
        return bool(self.chunks) or self.complete

    async def read_some(self) -> bytes:
        """The body bytes that arrived since the last call (waiting for some); b"" at the end."""
        while True:
            chunks = self.chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self.buffered = 0
                if self.paused and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                return data
            if self.complete:
                return b""
            await self._wait()

    async def read(self) -> bytes:
        """The whole body, waiting for its end.

        The chunks are taken as they arrive (as ``read_some`` takes them), so that
        reading resumes whenever the high-water mark paused it: a body of any size
        completes, and what is held is the body itself and no more.
        """
        parts: list[bytes] = []
        chunks = self.chunks
        while True:
            if chunks:
                parts += chunks
                chunks.clear()
                self.buffered = 0
                if self.paused and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
            if self.complete:
                return b"".join(parts)
            await self._wait()

    def release(self) -> None:
        """Done with the response: the connection goes back to the pool if it can.

        Read to its end: pooled now. Not read to its end but framed for reuse:
        drained (see the module's docstring), then pooled. Otherwise closed.
        """
        done = self.done
        if done is not None:
            self.done = None
            done()
        transport = self.transport
        if transport is None:
            return
        if self.error is None and self.keep_alive and not transport.is_closing():
            if self.complete:
                if self.paused:
                    transport.resume_reading()
                    self.paused = False
                self._reset()
                self.pool._put_idle(self)
                return
            if self.headers_done:
                self._start_drain()
                return
        self._close()

    def abort(self) -> None:
        """Nobody wants the rest (the client went away): close the connection now, so
        that the upstream sees it and stops generating; ``release()`` still follows."""
        if self.error is None:
            self.error = UpstreamUnavailable("The client went away.")
        self._close()

    # ---- draining ----------------------------------------------------------------------

    def _start_drain(self) -> None:
        pool = self.pool
        pool.draining += 1
        self.draining = True
        self.drained = 0
        self.drain_timer = pool.timers.call_later(pool.drain_timeout, self._drain_expired)
        self._drain(self.buffered)  # what the reader left unread counts against the bound

    def _drain(self, received: int) -> None:
        """After each read while draining: pool at the body's end, close past the bound."""
        if self.complete:
            self._end_drain()
            self.release()
            return
        self.drained += received
        if self.drained > self.pool.drain_bytes:
            self._close()
            return
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def _drain_expired(self) -> None:
        self.drain_timer = None
        self._close()

    def _end_drain(self) -> None:
        self.pool.draining -= 1
        self.draining = False
        timer = self.drain_timer
        if timer is not None:
            self.drain_timer = None
            timer.cancel()

    def _close(self) -> None:
        """Close the connection and give its slot back now (not when asyncio reports
        the loss): a caller may take it at once."""
        if self.draining:
            self._end_drain()
        transport = self.transport
        if transport is not None:
            transport.close()
        self._drop_slot()

    def _drop_slot(self) -> None:
        if self.slot:
            self.slot = False
            self.pool._slot_freed()


class Pool:
    """Keep-alive connections to one upstream origin, at most ``max_connections``.

    Each connection holds a slot from the moment a request decides to open it
    (connecting) until it is closed: in use, draining and idle alike, so
    ``open`` counts them all. A request that finds no idle connection opens one
    if a slot is free; it waits instead, in FIFO order, when all slots are
    taken (at most ``pool_timeout`` seconds, then ``UpstreamBusy``) or when a
    connection is draining that no earlier waiter is waiting for (at most
    ``limits.UPSTREAM_DRAIN_WAIT`` seconds, then it opens one). A connection
    coming back (released, or drained) and a slot coming free (a connection
    closed, a connect failed) go straight to the first waiter. One timer per
    pool closes idle connections after ``idle_timeout`` seconds.
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        headers_timeout: float | None = None,
        chunk_timeout: float | None = None,
        max_connections: int = UPSTREAM_MAX_CONNECTIONS,
        pool_timeout: float = UPSTREAM_POOL_TIMEOUT,
        idle_timeout: float = UPSTREAM_IDLE,
        drain_bytes: int = UPSTREAM_DRAIN_BYTES,
        drain_timeout: float = UPSTREAM_DRAIN_TIMEOUT,
        drain_wait: float = UPSTREAM_DRAIN_WAIT,
        timers: Timers | None = None,
    ) -> None:
        """``read_timeout``: the default of ``headers_timeout`` (the wait for the
        response headers) and ``chunk_timeout`` (each gap between two body chunks).
        ``timers``: the clock of the pool's own timers (drain, idle, the wait for
        a connection); by default the running event loop's."""
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if url.scheme == "https" else None
        )
        default_port = self.port == (443 if self.ssl else 80)
        host = self.host if ":" not in self.host else f"[{self.host}]"
        self.host_header = host if default_port else f"{host}:{self.port}"
        self.path = url.path.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.headers_timeout = headers_timeout or read_timeout
        self.chunk_timeout = chunk_timeout or read_timeout
        self.max_connections = max_connections
        self.pool_timeout = pool_timeout
        self.idle_timeout = idle_timeout
        self.drain_bytes = drain_bytes
        self.drain_timeout = drain_timeout
        self.drain_wait = drain_wait
        self._timers = timers
        self.open = 0  # slots taken: connecting, in use, draining, idle
        self.draining = 0  # connections draining
        self.conns: set[UpstreamConnection] = set()  # connected and not yet lost
        self.idle: deque[UpstreamConnection] = deque()  # LIFO: the oldest on the left
        self.waiters: deque[asyncio.Future[UpstreamConnection | None]] = deque()
        self.sweeper: Cancellable | None = None
        self.closed = False

    @property
    def timers(self) -> Timers:
        timers = self._timers
        if timers is None:
            timers = self._timers = asyncio.get_running_loop()
        return timers

    def head(self, method: str, path: str, headers: dict[str, str], *, root: bool = False) -> bytes:
        """The constant part of a request's head, built once per route; ``path`` under
        the base URL's path, or (``root``) from the origin's root."""
        prefix = "" if root else self.path
        lines = [f"{method} {prefix}{path} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")

    # ---- a request ---------------------------------------------------------------------

    async def request(
        self, head: bytes, body: bytes, deadline: float = NO_DEADLINE
    ) -> UpstreamConnection:
        """Send a request; return once the response headers are in. ``deadline``: the
        loop time by which the whole request (connect to the body's end) must be done."""
        message = b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
        while True:
            conn = self._take_idle()
            if conn is None:
                if self.closed:
                    raise UpstreamUnavailable("The gateway is shutting down.")
                if not self._take_slot():
                    conn = await self._wait_turn()
                if conn is None:  # a slot: open a new connection in it
                    return await self._send(await self._connect(deadline), message, deadline)
            try:
                return await self._send(conn, message, deadline)
            except UpstreamUnavailable:
                if conn.received:
                    raise
                # The pooled connection was closed under us before it answered
                # (it is closed now): again, on another one.

    def _take_slot(self) -> bool:
        """Take a slot for a new connection, unless the request should wait: no slot is
        free, or a connection is draining that no earlier waiter waits for."""
        if self.open < self.max_connections and self.draining <= len(self.waiters):
            self.open += 1
            return True
        return False

    async def _wait_turn(self) -> UpstreamConnection | None:
        """A connection handed over, or None: a slot handed over, for a new one."""
        timers = self.timers
        fut: asyncio.Future[UpstreamConnection | None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        deadline = timers.time() + self.pool_timeout
        first = self.pool_timeout
        if self.open < self.max_connections:  # waiting for a drain
            first = min(self.drain_wait, first)
        timer: list[Cancellable] = []  # the timer's current handle (it may set a later one)
        timer.append(timers.call_later(first, self._turn_timed_out, fut, deadline, timer))
        try:
            return await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._hand_back(fut.result())  # handed over, but we were cancelled
            raise
        finally:
            timer[0].cancel()
            with suppress(ValueError):
                self.waiters.remove(fut)  # still there unless handed over

    def _turn_timed_out(
        self,
        fut: asyncio.Future[UpstreamConnection | None],
        deadline: float,
        timer: list[Cancellable],
    ) -> None:
        if fut.done():
            return
        if self.open < self.max_connections:
            self.open += 1  # the drain did not end in time: a new connection
            fut.set_result(None)
            return
        timers = self.timers
        left = deadline - timers.time()
        if left > TIMER_SLACK:
            timer[0] = timers.call_later(left, self._turn_timed_out, fut, deadline, timer)
            return
        fut.set_exception(
            UpstreamBusy(
                f"All {self.max_connections} connections to the upstream server at "
                f"{self.host}:{self.port} are in use; none came free within "
                f"{self.pool_timeout:g} s."
            )
        )

    def _hand_back(self, conn: UpstreamConnection | None) -> None:
        if conn is None:
            self._slot_freed()
        else:
            self._put_idle(conn)

    def _slot_freed(self) -> None:
        """A slot's holder is done with it: it goes to the first waiter, or is free."""
        if not hand_to_first(self.waiters, None):
            self.open -= 1

    async def _connect(self, deadline: float = NO_DEADLINE) -> UpstreamConnection:
        """A new connection, in the slot the caller took (given back if it fails)."""
        made: list[UpstreamConnection] = []

        def protocol() -> UpstreamConnection:
            conn = UpstreamConnection(self)
            made.append(conn)
            return conn

        loop = asyncio.get_running_loop()
        timeout, phase = self.connect_timeout, CONNECT_TIMEOUT
        left = deadline - loop.time()
        if left < timeout:
            timeout, phase = max(left, 0.0), REQUEST_TIMEOUT
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    protocol,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                ),
                timeout,
            )
        except BaseException as exc:
            if made:
                made[0]._close()
            else:
                self._slot_freed()
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(TIMED_OUT[phase], code=phase) from exc
            if isinstance(exc, OSError):
                raise UpstreamUnreachable(
                    f"Cannot connect to the upstream server at {self.host}:{self.port}: "
                    f"{exc.strerror or exc}"
                ) from exc
            raise
        return proto

    @staticmethod
    async def _send(
        conn: UpstreamConnection, message: bytes, deadline: float = NO_DEADLINE
    ) -> UpstreamConnection:
        transport = conn.transport
        if transport is None or transport.is_closing():
            conn._close()
            raise UpstreamUnavailable("The upstream server closed the connection.")
        conn.error = None
        conn.deadline = deadline
        transport.write(message)
        try:
            await conn.read_headers()
        except BaseException:
            conn._close()
            raise
        return conn

    # ---- idle connections --------------------------------------------------------------

    def _put_idle(self, conn: UpstreamConnection) -> None:
        """A connection ready for its next request: to the first waiter, or pooled."""
        if conn.transport is None:
            return  # lost meanwhile (its slot went with it)
        if hand_to_first(self.waiters, conn):
            return
        if self.closed:
            conn._close()
            return
        timers = self.timers
        conn.idle_since = timers.time()
        self.idle.append(conn)
        if self.sweeper is None:
            self.sweeper = timers.call_later(self.idle_timeout, self._sweep)

    def _take_idle(self) -> UpstreamConnection | None:
        idle = self.idle
        if not idle:
            return None
        now = self.timers.time()
        while idle:
            conn = idle.pop()
            transport = conn.transport
            if transport is None:
                continue
            # Bytes on an idle connection answer nothing we asked: do not reuse it.
            if (
                transport.is_closing()
                or conn.received
                or now - conn.idle_since >= self.idle_timeout
            ):
                conn._close()
                continue
            return conn
        return None

    def _sweep(self) -> None:
        """The pool's idle timer: close what has been idle for ``idle_timeout``, and
        come back when the next one is due (at most four times per ``idle_timeout``)."""
        self.sweeper = None
        idle = self.idle
        timers = self.timers
        now = timers.time()
        limit = self.idle_timeout
        while idle:
            conn = idle[0]
            if conn.transport is not None and now - conn.idle_since < limit - TIMER_SLACK:
                break
            idle.popleft()
            conn._close()
        if idle:
            due = idle[0].idle_since + limit - now
            self.sweeper = timers.call_later(max(due, limit / 4), self._sweep)

    def close(self) -> None:
        """Stop the idle timer; close every connection (idle, draining, in use);
        fail the requests waiting for one."""
        self.closed = True
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_exception(UpstreamUnavailable("The gateway is shutting down."))
        self.idle.clear()
        for conn in list(self.conns):
            conn._close()
