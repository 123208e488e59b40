"""Which deployment answers which model id.

Deployments list their model ids in the config; one that lists none serves
whatever its upstream's ``GET /models`` reports, read at start and again
(at most every ``limits.MODELS_REFRESH`` seconds) when a client asks for an unknown id.
The id ``default`` always means the first deployment.

A ``Router`` is one object with everything requests need (its deployments'
``ReplicaSet``s): a reload builds a new one and swaps it in, and requests in
flight keep the routes they resolved. ``ready()`` says whether every deployment
has a healthy replica (``/readyz``), ``replicas()`` lists each replica with its
deployment (health and metrics), and ``in_use()`` says whether a request still
holds one of them (a reload closes the old router once none does).
"""

from __future__ import annotations

import logging
import time

from gateway.config import Deployment
from gateway.core.capabilities import Capabilities
from gateway.errors import GatewayError, ModelNotFound
from gateway.limits import MODELS_REFRESH
from gateway.upstream.replica import Replica
from gateway.upstream.replicas import ReplicaSet

log = logging.getLogger("gateway")


def capabilities(dep: Deployment) -> Capabilities:
    """What the core may know of a deployment: what its upstream can do."""
    s = dep.supports
    r = dep.reasoning
    return Capabilities(
        streaming=s.streaming,
        stream_usage=s.stream_usage,
        tools=s.tools,
        structured_output=s.structured_output,
        images=s.images,
        token_field=dep.token_field,
        drop_hosted_tools=dep.hosted_tools == "drop",
        reasoning=r.enabled,
        effort_field=r.effort_field,
        effort_map=dict(r.effort_map),
        effort_none=dict(r.none_fields),
        replay_field="" if r.replay_field == "drop" else r.replay_field,
        summary_text=r.summary_text,
        compaction_prompt=dep.compaction_prompt,
    )


class Route:
    """A model id's deployment, its replicas, the model name sent upstream, and
    what the upstream can do."""

    __slots__ = ("dep", "replicas", "upstream_model", "caps")

    def __init__(
        self, dep: Deployment, replicas: ReplicaSet, upstream_model: str, caps: Capabilities
    ) -> None:
        self.dep = dep
        self.replicas = replicas
        self.upstream_model = upstream_model
        self.caps = caps


class Router:
    def __init__(self, deployments: list[tuple[Deployment, ReplicaSet]]) -> None:
        self._deployments = deployments
        self._routes: dict[str, Route] = {}
        self._pending = [d for d in deployments if not d[0].models]
        self._last_refresh = float("-inf")
        for dep, replica in deployments:
            for model in dep.models:
                self._add(model, dep, replica)

    def _route(self, dep: Deployment, replica: ReplicaSet, upstream_model: str) -> Route:
        return Route(dep, replica, upstream_model, capabilities(dep))

    def _add(self, model: str, dep: Deployment, replica: ReplicaSet) -> None:
        if model not in self._routes:
            self._routes[model] = self._route(dep, replica, dep.upstream_model or model)

    async def discover(self) -> None:
        """Ask every deployment without configured ids for its upstream's models."""
        self._last_refresh = time.monotonic()
        still = []
        for dep, replica in self._pending:
            try:
                models = await replica.models()
            except GatewayError as exc:
                log.warning("cannot list models of %s: %s", " ".join(dep.urls), exc.message)
                still.append((dep, replica))
                continue
            for model in models:
                self._add(model, dep, replica)
        self._pending = still

    def start(self) -> None:
        """Start the deployments' background work (active probes); needs the loop."""
        for _, replicas in self._deployments:
            replicas.start()

    def ready(self) -> bool:
        """Every deployment has at least one healthy replica."""
        return all(replicas.healthy for _, replicas in self._deployments)

    def replicas(self) -> list[tuple[Deployment, Replica]]:
        """Every replica of every deployment, with its deployment, in config order."""
        return [(dep, one) for dep, replicas in self._deployments for one in replicas.replicas]

    def in_use(self) -> bool:
        """Whether a request still holds one of the replicas (sent, not yet released)."""
        return any(one.in_flight for _, replicas in self._deployments for one in replicas.replicas)

    async def close(self) -> None:
        """Stop the probes and close every upstream connection (in use ones too)."""
        for _, replicas in self._deployments:
            await replicas.close()

    def model_ids(self) -> list[str]:
        return list(self._routes)

    def _default(self) -> Route | None:
        dep, replica = self._deployments[0]
        for route in self._routes.values():
            if route.dep is dep:
                return self._route(dep, replica, route.upstream_model)
        if dep.upstream_model:
            return self._route(dep, replica, dep.upstream_model)
        return None

    async def resolve(self, model: str) -> Route:
        route = self._routes.get(model)
        if route is not None:
            return route
        if self._pending and time.monotonic() - self._last_refresh >= MODELS_REFRESH:
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
