"""Load shedding: at most ``limit`` requests in flight, a bounded FIFO queue in front.

A request past the bound waits, in order, for at most ``timeout`` seconds; one
that finds ``max_queued`` already waiting, or waits out its time, gets
``Overloaded`` (503 with Retry-After, code ``server_overloaded``). Memory is
bounded whatever the load: the queue holds one future per waiter and no more.
A slot coming free goes straight to the first waiter (no thundering herd).
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import suppress

from gateway.errors import Overloaded
from gateway.upstream.waiters import hand_to_first


class Gate:
    __slots__ = ("name", "limit", "max_queued", "timeout", "active", "waiters")

    def __init__(self, name: str, limit: int, max_queued: int, timeout: float) -> None:
        self.name = name
        self.limit = limit
        self.max_queued = max_queued
        self.timeout = timeout
        self.active = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def enter(self) -> None:
        """Take a slot, waiting for one in the queue if need be."""
        if self.active < self.limit:
            self.active += 1
            return
        if len(self.waiters) >= self.max_queued or self.timeout <= 0:
            raise Overloaded(
                f"The {self.name} has {self.limit} requests in flight and "
                f"{len(self.waiters)} waiting: try again shortly."
            )
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self.waiters.append(fut)
        timer = loop.call_later(self.timeout, self._expire, fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.leave()  # handed a slot, but cancelled meanwhile: pass it on
            raise
        finally:
            timer.cancel()
            with suppress(ValueError):
                self.waiters.remove(fut)  # still there unless handed a slot

    def _expire(self, fut: asyncio.Future[None]) -> None:
        if not fut.done():
            fut.set_exception(
                Overloaded(
                    f"The {self.name} has {self.limit} requests in flight; none ended "
                    f"within {self.timeout:g} s: try again shortly."
                )
            )

    def leave(self) -> None:
        """A slot's holder is done: the slot goes to the first waiter, or is free."""
        if not hand_to_first(self.waiters, None):
            self.active -= 1
