"""A lean HTTP/1.1 client for the upstream: asyncio protocols and httptools' C parser.

aiohttp's ClientSession does much per request that a gateway talking to one
known server does not need (cookie jars, redirects, tracing signals, header
multidicts, a task per timeout). Here a request is one ``transport.write`` of
prebuilt header bytes plus the body, and the response is parsed by
``httptools`` (llhttp) straight into a byte queue. See bench/README.md for the
measured difference.

Connections are pooled per ``Pool`` (one per upstream), LIFO, and dropped
after ``limits.UPSTREAM_IDLE`` seconds unused, below the 5 s keep-alive of
uvicorn-based servers (vLLM, SGLang) so that a pooled connection is rarely
closed under us;
a request that finds its reused connection closed before any response byte is
sent again once on a new one. A response left before its end (client gone,
error) closes its connection instead of returning it to the pool.

Back-pressure: once ``limits.UPSTREAM_BODY_HIGH_WATER`` bytes are buffered
unread, the socket stops being read until the reader takes them (``read_some``
and ``read`` both take what has arrived each time they wake).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from urllib.parse import urlsplit

import httptools

from gateway.errors import UpstreamBadResponse, UpstreamTimeout, UpstreamUnavailable
from gateway.limits import UPSTREAM_BODY_HIGH_WATER, UPSTREAM_IDLE


class UpstreamConnection(asyncio.Protocol):
    """One connection and the response currently being read from it."""

    __slots__ = (
        "pool",
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
    )

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.idle_since = 0.0
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

    # ---- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamBadResponse(f"The upstream sent malformed HTTP: {exc}"))
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
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

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
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
        timer = loop.call_later(self.pool.read_timeout, self._timed_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None

    def _timed_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            self.error = UpstreamTimeout("The upstream server timed out.")
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
        """Return the connection to the pool if the response was read to its end."""
        transport = self.transport
        if transport is None:
            return
        if self.complete and self.keep_alive and not transport.is_closing():
            if self.paused:
                transport.resume_reading()
                self.paused = False
            self._reset()
            self.idle_since = time.monotonic()
            self.pool.idle.append(self)
        else:
            transport.close()


class Pool:
    """Keep-alive connections to one upstream origin."""

    def __init__(self, base_url: str, *, connect_timeout: float, read_timeout: float) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
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
        self.idle: deque[UpstreamConnection] = deque()

    def head(self, method: str, path: str, headers: dict[str, str]) -> bytes:
        """The constant part of a request's head, built once per route."""
        lines = [f"{method} {self.path}{path} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")

    async def _connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                ),
                self.connect_timeout,
            )
        except TimeoutError as exc:
            raise UpstreamTimeout("Connecting to the upstream server timed out.") from exc
        except OSError as exc:
            raise UpstreamUnavailable(
                f"Cannot connect to the upstream server at {self.host}:{self.port}: "
                f"{exc.strerror or exc}"
            ) from exc
        return proto

    def _take_idle(self) -> UpstreamConnection | None:
        now = time.monotonic()
        idle = self.idle
        while idle:
            conn = idle.pop()
            transport = conn.transport
            if transport is not None and not transport.is_closing():
                if now - conn.idle_since < UPSTREAM_IDLE:
                    return conn
                transport.close()
        return None

    async def request(self, head: bytes, body: bytes) -> UpstreamConnection:
        """Send a request; return once the response headers are in."""
        message = b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
        conn = self._take_idle()
        if conn is not None:
            try:
                return await self._send(conn, message)
            except UpstreamUnavailable:
                if conn.received:
                    raise
                # The pooled connection was closed under us: try a fresh one once.
        return await self._send(await self._connect(), message)

    @staticmethod
    async def _send(conn: UpstreamConnection, message: bytes) -> UpstreamConnection:
        assert conn.transport is not None
        conn.error = None
        conn.transport.write(message)
        try:
            await conn.read_headers()
        except BaseException:
            if conn.transport is not None:
                conn.transport.close()
            raise
        return conn

    def close(self) -> None:
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None:
                conn.transport.close()
