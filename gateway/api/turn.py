"""A Responses request between its translation and its answer (``Gateway.turn``):
the chat body to send, and what the answer is built with; and what a stream of its
events is written to (``Sink``: an SSE answer, or a WebSocket's messages,
``api.websocket``)."""

from __future__ import annotations

from typing import Protocol

from gateway.core.stream.encoder import Seal
from gateway.core.translate.tools import ToolNames
from gateway.http.messages import Incoming


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
