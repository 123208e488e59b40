"""The process's own routes and its view of each request: ``GET /healthz``,
``GET /readyz``, ``GET /metrics``, and the observer that feeds the metrics and
the access log.

These routes sit in ``Gateway.ops``: answered before client keys and limits,
never counted as API traffic (no metrics, no access-log line). ``/healthz`` is
200 while the process runs its loop; ``/readyz`` is 200 while it listens, is not
draining and its router says every deployment has a healthy replica (a
``ready()`` the router may offer; without one, ready), else 503 with the
reasons. Plain JSON.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from gateway.api.calls import Call
from gateway.api.endpoints import Gateway
from gateway.errors import GatewayError, NotFound
from gateway.http.messages import Incoming, Reply, Response
from gateway.ops.access_log import AccessLog, deployment_name
from gateway.ops.metrics import CONTENT_TYPE, Metrics
from gateway.upstream.routing import Router

JSON = "application/json"
NO_STORE = {"Cache-Control": "no-store"}


def router_replicas(router: Router) -> list[tuple[str, str, bool]]:
    """(deployment, replica, healthy) for each replica the router knows."""
    return [(deployment_name(dep), one.base, one.healthy) for dep, one in router.replicas()]


class Observer:
    """``Gateway.observer``: each finished request to the metrics and the access log."""

    def __init__(self, metrics: Metrics | None, access: AccessLog | None) -> None:
        self.metrics = metrics
        self.access = access

    def started(self, call: Call) -> None:
        pass  # (the in-flight gauge reads the gateway's count)

    def finished(self, call: Call) -> None:
        now = time.monotonic()
        if self.metrics is not None:
            self.metrics.finished(call, now)
        if self.access is not None:
            self.access.write(call, now)


class OpsRoutes:
    """The process's three routes, on ``gateway.ops``; ``close`` at the gateway's end.

    ``/metrics`` is on the API's port unless ``ops.metrics_listen`` puts it on a
    listener of its own (``metrics_only`` is that listener's handler; the API's port
    then answers it 404), and there it needs a client API key with ``metrics_auth``."""

    def __init__(
        self, gateway: Gateway, metrics: Metrics | None, *, apart: bool = False, auth: bool = False
    ) -> None:
        self.gateway = gateway
        self.metrics = metrics
        self.auth = auth
        gateway.ops[("GET", "/healthz")] = self.healthz
        gateway.ops[("GET", "/readyz")] = self.readyz
        if metrics is not None:
            if not apart:
                gateway.ops[("GET", "/metrics")] = self.scrape
            metrics.replicas = lambda: router_replicas(self.gateway.router)
            metrics.in_flight_now = lambda: self.gateway.in_flight
            metrics.sockets_now = lambda: self.gateway.sockets

    def close(self) -> None:
        """At the gateway's end: what the metrics and the access log hold goes out."""
        if self.metrics is not None:
            self.metrics.close()
        observer = self.gateway.observer
        if isinstance(observer, Observer) and observer.access is not None:
            observer.access.flush()

    def reasons(self) -> list[str]:
        why = []
        process = self.gateway.process
        if not process.listening:
            why.append("not listening")
        if process.draining:
            why.append("draining")
        if not self.gateway.router.ready():
            why.append("a deployment has no healthy replica")
        return why

    async def healthz(self, request: Incoming) -> Reply:
        doc = {"status": "ok", "pid": os.getpid(), "in_flight": self.gateway.in_flight}
        return Response(body=orjson.dumps(doc), content_type=JSON, headers=NO_STORE)

    async def readyz(self, request: Incoming) -> Reply:
        why = self.reasons()
        if why:
            doc: dict[str, Any] = {"status": "not ready", "reasons": why}
            return Response(status=503, body=orjson.dumps(doc), content_type=JSON, headers=NO_STORE)
        return Response(body=b'{"status":"ready"}', content_type=JSON, headers=NO_STORE)

    async def metrics_only(self, request: Incoming) -> Reply:
        """The handler of the metrics listener: ``GET /metrics``, and 404 for the rest."""
        if (request.method, request.path) == ("GET", "/metrics"):
            return await self.scrape(request)
        return Response.error(NotFound(f"Unknown path: {request.method} {request.path}."))

    async def scrape(self, request: Incoming) -> Reply:
        assert self.metrics is not None
        guard = self.gateway.guard
        if self.auth and guard is not None:
            try:
                guard.tenant(request)
            except GatewayError as exc:
                return Response.error(exc)
        body = self.metrics.exposition()
        return Response(body=body, content_type=CONTENT_TYPE, headers=NO_STORE)
