"""SSE pings: comments for streams whose upstream has gone quiet (a long prefill).

(Not HTTP keep-alive, which is ``limits.HTTP_KEEPALIVE_IDLE`` in the server.)
One timer serves every open stream: each stream has a ``Watch`` whose
``fresh`` flag the pump sets on every upstream read (one attribute store, the
only per-chunk cost). Every ``interval / TICKS`` seconds the timer looks at
all watches; a stream with no upstream data for ``TICKS`` ticks in a row gets
the comment ``: keepalive`` (the name proxies and SSE libraries know), so that
proxies with idle timeouts keep the connection open.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

COMMENT = b": keepalive\n\n"
TICKS = 3
# The head of every Responses event stream (X-Accel-Buffering: proxies pass events on at once).
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


class Out(Protocol):
    """Where a stream's pings go (a ``StreamResponse``, or a WebSocket's events)."""

    async def write(self, data: bytes) -> None: ...


class Watch:
    __slots__ = ("out", "fresh", "idle")

    def __init__(self, out: Out) -> None:
        self.out = out
        self.fresh = True
        self.idle = 0


class SsePings:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._watches: set[Watch] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._pings: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self.interval > 0:
            self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def watch(self, out: Out) -> Watch:
        w = Watch(out)
        self._watches.add(w)
        return w

    def unwatch(self, w: Watch) -> None:
        self._watches.discard(w)

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(self.interval / TICKS, self._tick)

    def _tick(self) -> None:
        for w in self._watches:
            if w.fresh:
                w.fresh = False
                w.idle = 0
                continue
            w.idle += 1
            if w.idle >= TICKS:
                w.idle = 0
                task = asyncio.ensure_future(self._ping(w.out))
                self._pings.add(task)
                task.add_done_callback(self._pings.discard)
        self._schedule()

    @staticmethod
    async def _ping(out: Out) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await out.write(COMMENT)
