"""A Responses request between its translation and its answer (``Gateway.turn``):
the chat body to send, and what the answer is built with; and what a stream of its
events is written to (``Sink``: an SSE answer, or a WebSocket's messages,
``api.websocket``); and which replica it goes to (``affinity``)."""

from __future__ import annotations

from typing import Any, Protocol

from gateway.core.stream.encoder import Seal
from gateway.core.translate.tools import ToolNames
from gateway.http.messages import Incoming
from gateway.upstream.routing import Route


class Sink(Protocol):
    """Where a response's events go, as SSE frames (``StreamResponse`` has this shape)."""

    async def prepare(self, request: Incoming) -> None: ...

    async def write(self, data: bytes) -> None: ...

    async def write_eof(self, data: bytes = b"") -> None: ...


# What Gateway.turn gives: the chat body, the affinity key, the in-progress response, the
# seal of its reasoning (or None), whether reasoning is also its summary, the request's tool
# names, whether the upstream streams, and the chat messages (None unless kept). A tuple:
# it is made for every request, and unpacked at once.
Turn = tuple[bytes, str | None, dict, Seal | None, bool, ToolNames, bool, list[dict] | None]


def affinity(request: Incoming, route: Route, doc: Any) -> str | None:
    """A request's affinity key, when its deployment has several replicas: the body's
    ``prompt_cache_key``, ``user`` or ``safety_identifier``, else the deployment's
    affinity header (None: the least loaded replica)."""
    if not route.replicas.many:
        return None
    key: str | None = doc.prompt_cache_key or doc.user or doc.safety_identifier
    if key:
        return key
    name = route.dep.affinity_header
    return request.headers.get(name) if name else None
