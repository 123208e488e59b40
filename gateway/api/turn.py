"""A Responses request between its translation and its answer (``Gateway.turn``):
the chat body to send and where, and what the answer is built with; and what a
stream of its events is written to (``Sink``: an SSE answer, or a WebSocket's
messages, ``api.websocket``)."""

from __future__ import annotations

from typing import Protocol

from gateway.core.stream.encoder import Seal
from gateway.core.stream.transcoder import Transcoder
from gateway.core.translate.tools import ToolNames
from gateway.http.messages import Incoming
from gateway.upstream.routing import Route


class Sink(Protocol):
    """Where a response's events go, as SSE frames (``StreamResponse`` has this shape)."""

    async def prepare(self, request: Incoming) -> None: ...

    async def write(self, data: bytes) -> None: ...

    async def write_eof(self, data: bytes = b"") -> None: ...


class Turn:
    __slots__ = ("route", "payload", "key", "base", "seal", "summary", "names", "pump", "messages")

    def __init__(
        self,
        route: Route,
        payload: bytes,
        key: str | None,
        base: dict,
        seal: Seal | None,
        summary: bool,
        names: ToolNames,
        pump: bool,
        messages: list[dict] | None,
    ) -> None:
        self.route = route
        self.payload = payload  # the chat body (emptied once sent)
        self.key = key  # the affinity key
        self.base = base  # the in-progress response object
        self.seal = seal
        self.summary = summary
        self.names = names
        self.pump = pump  # streamed as it comes (else a whole answer, replayed as events)
        self.messages = messages  # the chat messages, when the caller keeps them

    def transcoder(self) -> Transcoder:
        return Transcoder(self.base, seal=self.seal, summary=self.summary, names=self.names)
