"""One connection to an upstream server and the response being read from it
(``UpstreamConnection``): an asyncio protocol, the response parsed by httptools' C
parser.

aiohttp's ClientSession does much per request that a gateway talking to one
known server does not need (cookie jars, redirects, tracing signals, header
multidicts, a task per timeout). Here a request is one ``transport.write`` of
prebuilt header bytes plus the body, and the response is parsed by
``httptools`` (llhttp) straight into a byte queue. See bench/README.md for the
measured difference. Which connection a request goes on is the pool's choice
(``pool.Pool``); the endpoints read the answer as a ``response.UpstreamResponse``.

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
and ``read`` both take what has arrived each time they wake). The lean server's
request body (``http.request.Body``) has a queue of the same shape, kept apart for
its cost: see its docstring.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Protocol

import httptools

from gateway.errors import (
    CHUNK_TIMEOUT,
    HEADERS_TIMEOUT,
    REQUEST_TIMEOUT,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.limits import UPSTREAM_BODY_HIGH_WATER
from gateway.upstream.timers import NO_DEADLINE, TIMED_OUT, Cancellable, Timers


class Owner(Protocol):
    """What a connection uses of its pool (``pool.Pool``): its timeouts and bounds, its
    sets, and where a connection and its slot go back."""

    conns: set[UpstreamConnection]  # connected and not yet lost
    draining: int  # connections draining now
    headers_timeout: float
    chunk_timeout: float
    drain_timeout: float
    drain_bytes: int
    max_answer: int  # the most of an answer ``read`` takes

    @property
    def timers(self) -> Timers: ...

    def put_idle(self, conn: UpstreamConnection) -> None: ...

    def slot_freed(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One connection and the response currently being read from it.

    The pool sends each request on it (``send``); its reader sees it as an
    ``UpstreamResponse``. Back in the pool it goes through ``Pool.put_idle``, and
    its slot through ``Pool.slot_freed`` once it is closed."""

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

    def __init__(self, pool: Owner) -> None:
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
        self.replica = ""  # the base URL of the replica that answers (set by the replica)
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
            self.cut(UpstreamBadResponse(f"The upstream sent malformed HTTP: {exc}"))
            self.close()
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
            self.cut(UpstreamUnavailable("The upstream server closed the connection."))

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

    def cut(self, exc: Exception) -> None:
        """End the response now with ``exc`` (the gateway shutting down, a parse
        error, the connection lost): the read waiting raises it, and so does every
        later read that would wait for more."""
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

    async def send(self, message: bytes, deadline: float) -> None:
        """Write a request (head and body), and wait for its response's headers.
        ``deadline``: the loop time by which the whole request must be done. A
        connection that fails here is closed."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self.close()
            raise UpstreamUnavailable("The upstream server closed the connection.")
        self.error = None
        self.deadline = deadline
        transport.write(message)
        try:
            await self.read_headers()
        except BaseException:
            self.close()
            raise

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

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, waiting for its end; at most ``limit`` bytes (the pool's
        ``max_answer`` if None): past it, ``UpstreamBadResponse`` and the connection is
        closed, holding no more than the limit and a read's worth.

        The chunks are taken as they arrive (as ``read_some`` takes them), so that
        reading resumes whenever the high-water mark paused it: a body of any size
        up to the limit completes, and what is held is the body itself and no more.
        """
        limit = self.pool.max_answer if limit is None else limit
        parts: list[bytes] = []
        chunks = self.chunks
        size = 0
        while True:
            if chunks:
                size += self.buffered
                if size > limit:
                    self.cut(
                        UpstreamBadResponse(
                            f"The upstream's answer is over the gateway's limit of {limit} "
                            "bytes (max-answer-bytes)."
                        )
                    )
                    self.close()
                    assert self.error is not None
                    raise self.error
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
                self.pool.put_idle(self)
                return
            if self.headers_done:
                self._start_drain()
                return
        self.close()

    def abort(self) -> None:
        """Nobody wants the rest (the client went away): close the connection now, so
        that the upstream sees it and stops generating; ``release()`` still follows."""
        if self.error is None:
            self.error = UpstreamUnavailable("The client went away.")
        self.close()

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
            self.close()
            return
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def _drain_expired(self) -> None:
        self.drain_timer = None
        self.close()

    def _end_drain(self) -> None:
        self.pool.draining -= 1
        self.draining = False
        timer = self.drain_timer
        if timer is not None:
            self.drain_timer = None
            timer.cancel()

    def close(self) -> None:
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
            self.pool.slot_freed()
