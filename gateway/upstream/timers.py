"""Time in the upstream client: a request's deadline, the clock and timers a pool
runs on, and what each kind of timeout says.

A deadline is a loop time by which the whole request must end (``NO_DEADLINE``:
none). A pool's own timers (drain, idle, the wait for a connection) run on its
``Timers``: the event loop's, or a test's fake clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from gateway.errors import CHUNK_TIMEOUT, CONNECT_TIMEOUT, HEADERS_TIMEOUT, REQUEST_TIMEOUT

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
