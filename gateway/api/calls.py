"""Who a request is and how it is traced: its request id, and its client's tenant.

A ``Call`` goes with each request through the endpoints: ``rid`` (the client's
``X-Request-Id`` if it is printable ASCII of at most ``limits.MAX_REQUEST_ID``
characters, otherwise one of ours), the headers every answer carries, and the
tenant (the short hash of the client's API key; ``""`` without keys), which
scopes idempotency keys and counts against the request limits.
"""

from __future__ import annotations

from gateway.core.ids import IDS
from gateway.limits import MAX_REQUEST_ID

REQUEST = "req_"


class Call:
    __slots__ = ("rid", "headers", "tenant")

    def __init__(self, rid: str | None) -> None:
        if not rid or len(rid) > MAX_REQUEST_ID or not (rid.isascii() and rid.isprintable()):
            rid = IDS.new(REQUEST)
        self.rid = rid
        self.headers = {"x-request-id": rid}
        self.tenant = ""
