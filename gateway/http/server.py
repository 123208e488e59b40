"""A lean HTTP/1.1 server: asyncio protocols and httptools' C request parser.

The gateway's handlers need little from an HTTP server: the method, the path,
the headers, the body, and two kinds of answer (``gateway.http.messages``).
This server serves exactly that, without aiohttp's per-request machinery
(request objects with header multidicts, URL objects, access-log hooks, payload
writers). See bench/README.md for the measured difference; aiohttp's own
low-level server runs the same handler in ``gateway.http.aiohttp_server``.

This module holds ``Server``: the protocol factory and the set of open
connections, one timer that sweeps them for heads that arrive too slowly, and
the drain and shutdown. Each socket is a ``connection.Connection`` (parsing,
bounds, keep-alive, running the handler); what the handler gets there is in
``request``.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.config import Http
from gateway.http.connection import Connection
from gateway.http.messages import Handler
from gateway.http.refusals import RefusalLog
from gateway.limits import MAX_HEADER_NAME, MAX_QUEUED_REQUESTS

log = logging.getLogger("gateway")


class Server:
    """The protocol factory for ``loop.create_server``, and the set of open connections."""

    def __init__(self, handler: Handler, *, max_body: int, limits: Http | None = None) -> None:
        self.handler = handler
        self.max_body = max_body
        self.limits = limits = limits or Http()
        self.keepalive_timeout = limits.keepalive_timeout
        self.body_timeout = limits.body_timeout
        self.loop = asyncio.get_running_loop()
        self.connections: set[Connection] = set()
        self.refusals = RefusalLog()
        self.closing = False
        self._all_closed: asyncio.Future[None] | None = None
        # One timer for every connection's head deadline (not one per request).
        self.sweep_every = min(1.0, limits.head_timeout / 4)
        # Read per header and URL piece: plain attributes.
        self.max_line = limits.max_request_line
        self.max_field = limits.max_header_line - 2  # name + value (": " and CRLF aside)
        self.max_queued = max(limits.max_pipelined, MAX_QUEUED_REQUESTS)
        self.max_name = min(MAX_HEADER_NAME, self.max_field)  # (a line within it passes)
        self._sweeper: asyncio.TimerHandle | None = None
        self.detached: set[asyncio.Task[None]] = set()  # handlers whose client went away

    def __call__(self) -> Connection:
        return Connection(self)

    def watch(self) -> None:
        """Sweep for slow heads while there are connections."""
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.sweep_every, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        if not self.connections:
            return
        deadline = self.loop.time() - self.limits.head_timeout
        for conn in list(self.connections):
            if conn.in_head and conn.head_since <= deadline and not conn.stopped:
                conn.head_timed_out()
        self.watch()

    def run_on(self, task: asyncio.Task[None]) -> None:
        """Keep a detached handler whose client went away until it ends."""
        self.detached.add(task)
        task.add_done_callback(self.detached.discard)

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        done = self._all_closed
        if not self.connections and done is not None and not done.done():
            done.set_result(None)

    def begin_drain(self) -> None:
        """Serve no new request: close idle connections now, busy ones after their answer."""
        self.closing = True
        for conn in list(self.connections):
            conn.close_when_idle()

    async def shutdown(self, timeout: float) -> None:
        """Close idle connections; give busy ones ``timeout`` s to finish, then abort them.

        Stop the listening socket first (``asyncio.Server.close``).
        """
        self.closing = True
        deadline = self.loop.time() + timeout
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
        if self.detached:  # (their clients are gone: they get what is left of the time)
            left = max(0.0, deadline - self.loop.time())
            _, late = await asyncio.wait(set(self.detached), timeout=left)
            for task in late:
                task.cancel()
