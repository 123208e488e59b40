"""Who a request is and how it is traced: its request id, and its client's tenant.

A ``Call`` goes with each request through the endpoints: ``rid`` (the client's
``X-Request-Id`` if it is printable ASCII of at most ``limits.MAX_REQUEST_ID``
characters, otherwise one of ours), the headers every answer carries, and the
tenant (the short hash of the client's API key; ``""`` without keys), which
scopes idempotency keys and counts against the request limits.

It also carries what the operations side (``Gateway.observer``: the metrics and
the access log) learns of the request on its way: the endpoint, the model and
its route, the status and outcome, the time to the first streamed token, the
events streamed and the upstream's token counts. Each is set once per request
(never per chunk): the stream loop counts nothing that the encoder does not
count already.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from gateway.core.ids import IDS
from gateway.limits import MAX_REQUEST_ID
from gateway.upstream.routing import Route

REQUEST = "req_"

# Outcomes (the access log's ``outcome``, the metrics' ``outcome`` label).
COMPLETED = "completed"
INCOMPLETE = "incomplete"
FAILED = "failed"
CLIENT_GONE = "client_gone"


class Call:
    __slots__ = (
        "rid", "headers", "tenant", "started", "endpoint", "model", "route", "status",
        "outcome", "ttft", "events", "usage", "error", "replayed", "replica", "run",
    )  # fmt: skip

    def __init__(self, rid: str | None) -> None:
        if not rid or len(rid) > MAX_REQUEST_ID or not (rid.isascii() and rid.isprintable()):
            rid = IDS.new(REQUEST)
        self.rid = rid
        self.headers = {"x-request-id": rid}
        self.tenant = ""
        self.started = time.monotonic()
        self.endpoint = "other"  # the route's short name: bounded, never the raw path
        self.model = ""  # the model id the client asked for, once a deployment serves it
        self.route: Route | None = None  # the route that served it
        self.status = 0  # the HTTP status (200 for a stream, whatever its end)
        self.outcome = COMPLETED
        self.ttft: float | None = None  # seconds to the first streamed output
        self.events = 0  # Responses events streamed
        self.usage: dict | None = None  # the Responses usage object, from upstream usage
        self.error: Exception | None = None  # the error that ended it, if one did
        self.replayed = False  # answered from the idempotency store
        self.replica = ""  # the base URL of the replica that answered or failed it
        # A run that goes on if the client leaves (an Idempotency-Key on a server that
        # cannot detach its handler): its slots and in-flight count are held until it ends.
        self.run: asyncio.Future[Any] | None = None


class Observer(Protocol):
    """Told of every finished API request, once (``gateway.ops``: metrics, access log)."""

    def started(self, call: Call) -> None: ...

    def finished(self, call: Call) -> None: ...
