"""Which deployment answers which model id.

Deployments list their model ids in the config; one that lists none serves
whatever its upstream's ``GET /models`` reports, read at start and again
(at most every ``REFRESH_SECONDS``) when a client asks for an unknown id.
The id ``default`` always means the first deployment.
"""

from __future__ import annotations

import logging
import time

from gateway.config import Deployment
from gateway.errors import GatewayError, ModelNotFound
from gateway.upstream import Upstream

log = logging.getLogger("gateway")

REFRESH_SECONDS = 5.0


class Route:
    __slots__ = ("dep", "upstream", "upstream_model")

    def __init__(self, dep: Deployment, upstream: Upstream, upstream_model: str) -> None:
        self.dep = dep
        self.upstream = upstream
        self.upstream_model = upstream_model


class Router:
    def __init__(self, deployments: list[tuple[Deployment, Upstream]]) -> None:
        self._deployments = deployments
        self._routes: dict[str, Route] = {}
        self._pending = [d for d in deployments if not d[0].models]
        self._last_refresh = float("-inf")
        for dep, upstream in deployments:
            for model in dep.models:
                self._add(model, dep, upstream)

    def _add(self, model: str, dep: Deployment, upstream: Upstream) -> None:
        if model not in self._routes:
            self._routes[model] = Route(dep, upstream, dep.upstream_model or model)

    async def discover(self) -> None:
        """Ask every deployment without configured ids for its upstream's models."""
        self._last_refresh = time.monotonic()
        still = []
        for dep, upstream in self._pending:
            try:
                models = await upstream.models()
            except GatewayError as exc:
                log.warning("cannot list models of %s: %s", dep.upstream, exc.message)
                still.append((dep, upstream))
                continue
            for model in models:
                self._add(model, dep, upstream)
        self._pending = still

    def model_ids(self) -> list[str]:
        return list(self._routes)

    def _default(self) -> Route | None:
        dep, upstream = self._deployments[0]
        for route in self._routes.values():
            if route.dep is dep:
                return Route(dep, upstream, route.upstream_model)
        if dep.upstream_model:
            return Route(dep, upstream, dep.upstream_model)
        return None

    async def resolve(self, model: str) -> Route:
        route = self._routes.get(model)
        if route is not None:
            return route
        if self._pending and time.monotonic() - self._last_refresh >= REFRESH_SECONDS:
            await self.discover()
            route = self._routes.get(model)
            if route is not None:
                return route
        if model == "default":
            route = self._default()
            if route is not None:
                self._routes["default"] = route
                return route
        raise ModelNotFound(
            f"The model '{model}' does not exist or you do not have access to it.",
            param="model",
        )
