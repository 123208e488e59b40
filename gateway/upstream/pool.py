"""The keep-alive connections to one upstream origin (``Pool``): its slots, the
requests waiting for one, its idle connections, and connecting.

Connections are pooled per ``Pool`` (one per upstream), LIFO, at most
``limits.UPSTREAM_MAX_CONNECTIONS`` open (a request waits at most
``UPSTREAM_POOL_TIMEOUT`` seconds for one, then gets ``UpstreamBusy``: 503), and
closed by the pool's one idle timer after ``limits.UPSTREAM_IDLE`` seconds
unused, below the 5 s keep-alive of uvicorn-based servers (vLLM, SGLang) so
that a pooled connection is rarely closed under us; a request that finds its
reused connection closed before any response byte is sent again on another.

A connection (``connection.UpstreamConnection``) reads its response and drains
it; it comes back through ``put_idle`` when it can take the next request, and
gives its slot back through ``slot_freed`` when it closes.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from contextlib import suppress
from urllib.parse import urlsplit

from gateway.errors import (
    CONNECT_TIMEOUT,
    REQUEST_TIMEOUT,
    UpstreamBusy,
    UpstreamTimeout,
    UpstreamUnavailable,
    UpstreamUnreachable,
)
from gateway.limits import (
    UPSTREAM_DRAIN_BYTES,
    UPSTREAM_DRAIN_TIMEOUT,
    UPSTREAM_DRAIN_WAIT,
    UPSTREAM_IDLE,
    UPSTREAM_MAX_ANSWER,
    UPSTREAM_MAX_CONNECTIONS,
    UPSTREAM_POOL_TIMEOUT,
)
from gateway.upstream.connection import UpstreamConnection
from gateway.upstream.timers import NO_DEADLINE, TIMED_OUT, TIMER_SLACK, Cancellable, Timers
from gateway.upstream.waiters import hand_to_first


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
        max_answer: int = UPSTREAM_MAX_ANSWER,
        timers: Timers | None = None,
    ) -> None:
        """``read_timeout``: the default of ``headers_timeout`` (the wait for the
        response headers) and ``chunk_timeout`` (each gap between two body chunks).
        ``max_answer``: the most of an answer ``read`` takes (``UpstreamBadResponse``
        past it). ``timers``: the clock of the pool's own timers (drain, idle, the wait for
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
        self.max_answer = max_answer
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
                    conn = await self._connect(deadline)
                    await conn.send(message, deadline)
                    return conn
            try:
                await conn.send(message, deadline)
                return conn
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
            self.slot_freed()
        else:
            self.put_idle(conn)

    def slot_freed(self) -> None:
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
                made[0].close()
            else:
                self.slot_freed()
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(TIMED_OUT[phase], code=phase) from exc
            if isinstance(exc, OSError):
                raise UpstreamUnreachable(
                    f"Cannot connect to the upstream server at {self.host}:{self.port}: "
                    f"{exc.strerror or exc}"
                ) from exc
            raise
        return proto

    # ---- idle connections --------------------------------------------------------------

    def put_idle(self, conn: UpstreamConnection) -> None:
        """A connection ready for its next request: to the first waiter, or pooled."""
        if conn.transport is None:
            return  # lost meanwhile (its slot went with it)
        if hand_to_first(self.waiters, conn):
            return
        if self.closed:
            conn.close()
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
                conn.close()
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
            conn.close()
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
            conn.close()
