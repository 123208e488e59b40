"""The hand-over shared by the upstream pool's connection slots and idle connections
and by the admission gates: a queue of futures, served first come, first served."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TypeVar

T = TypeVar("T")


def hand_to_first(waiters: deque[asyncio.Future[T]], value: T) -> bool:
    """Give ``value`` to the first waiter still waiting (one whose wait ended, by a
    timeout or a cancellation, is dropped); False when none is."""
    while waiters:
        fut = waiters.popleft()
        if not fut.done():
            fut.set_result(value)
            return True
    return False
