"""The process a gateway is served in, as ``gateway.ops`` keeps it.

``ops.lifecycle.open_gateway`` builds one ``ProcessState`` per gateway, with the
idempotency and limits store and the ``[overload]`` gate (a reload keeps both);
``ops.lifecycle.listen`` counts its listeners and HTTP servers in it and marks the
drain; ``/readyz`` (``ops.health``) reads it; a reload sets each server's body
limit through it.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from gateway.http.messages import Handler
from gateway.stores.base import Store
from gateway.upstream.admission import Gate


class HttpServer(Protocol):
    """What the process changes of a serving HTTP server (either one): its body limit."""

    max_body: int


class ProcessState:
    __slots__ = (
        "store", "overload", "listening", "draining", "drain_started", "servers", "metrics_only",
    )  # fmt: skip

    def __init__(self, store: Store, overload: Gate | None = None) -> None:
        self.store = store  # idempotency records and request counters (a reload keeps it)
        self.overload = overload  # the gateway-wide bound of upstream requests, if any
        self.listening = 0  # listeners open
        self.draining = False
        self.drain_started = (
            asyncio.Event()
        )  # set with draining (WebSockets close between responses)
        self.servers: list[HttpServer] = []  # the HTTP servers serving the gateway
        # The handler of a listener of /metrics alone ([ops] metrics-listen), if any.
        self.metrics_only: Handler | None = None

    def drain(self) -> None:
        """The drain begins: ``draining`` turns True and ``drain_started`` is set."""
        self.draining = True
        self.drain_started.set()
