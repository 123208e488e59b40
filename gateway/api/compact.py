"""Compactions: ``POST /v1/responses/compact``, and an ordinary ``POST /v1/responses``
whose last input item is a ``compaction_trigger`` (``core.translate.compaction``).

Each asks the upstream once, not streamed and without tools, for a summary of the
conversation, and answers with exactly one ``compaction`` item whose ``encrypted_content``
is that summary sealed by the gateway's ``Sealer`` (any process with the key opens it).
The compact endpoint answers the ``response.compaction`` object; a trigger answers a
response, as JSON or, with ``stream: true``, as events: ``created`` and ``in_progress``
go out before the upstream is asked (SSE pings keep the stream open while it thinks), so
a failure of the upstream is the stream's one ``response.failed``, not an HTTP error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol

import orjson

from gateway.api.calls import Call
from gateway.api.pings import SSE_HEADERS, SsePings
from gateway.api.seal import Sealer
from gateway.api.turn import Sink
from gateway.core.ids import IDS, RESPONSE
from gateway.core.stream.transcoder import Transcoder
from gateway.core.translate import compaction
from gateway.core.translate.conversation import Conversation
from gateway.core.translate.request import to_summary_request
from gateway.core.translate.response import to_response
from gateway.core.wire import output
from gateway.core.wire.responses import ResponsesRequest
from gateway.errors import GatewayError
from gateway.http.messages import Incoming, Reply, Response, StreamResponse
from gateway.upstream.response import UpstreamResponse
from gateway.upstream.routing import Route

log = logging.getLogger("gateway")

JSON = "application/json"


def never_streams(req: ResponsesRequest, body: bytes) -> bool:
    """The compact endpoint's answer is never a stream (its ``stream`` is ignored), so an
    Idempotency-Key replays it."""
    return False


class Host(Protocol):
    """What compactions use of the ``api.endpoints.Gateway`` that serves them."""

    pings: SsePings
    sealer: Sealer
    streams: set[UpstreamResponse]  # upstream reads of open streams (cut at a drain's end)


class Compactions:
    __slots__ = ("host",)

    def __init__(self, host: Host) -> None:
        self.host = host

    async def compact(
        self, call: Call, route: Route, req: ResponsesRequest, key: str | None
    ) -> Reply:
        """``POST /v1/responses/compact``: the ``response.compaction`` object."""
        sealer = self.host.sealer
        chat, _ = to_summary_request(req, route.caps, route.upstream_model, sealer)
        data = await self._summary(call, route, orjson.dumps(chat), key)
        doc = compaction.compacted(data, int(time.time()), sealer.seal)
        call.usage = doc["usage"]
        return Response(body=orjson.dumps(doc), content_type=JSON, headers=call.headers)

    async def trigger(
        self, request: Incoming, call: Call, route: Route, req: ResponsesRequest, key: str | None
    ) -> Reply:
        """A ``compaction_trigger`` request: a response whose output is the compaction item."""
        sealer = self.host.sealer
        payload, base = self._summary_request(route, req, None)
        if req.stream:
            out = StreamResponse(headers={**SSE_HEADERS, **call.headers})
            tx = Transcoder(base, seal=sealer.seal)
            await self._stream(
                request, call, tx, partial(self._summary, call, route, payload, key), out
            )
            return out
        data = await self._summary(call, route, payload, key)
        doc = to_response(data, base, seal=sealer.seal, read=compaction.answer)
        call.outcome = doc["status"]
        call.usage = doc["usage"]
        return Response(body=orjson.dumps(doc), content_type=JSON, headers=call.headers)

    async def trigger_events(
        self,
        request: Incoming,
        call: Call,
        route: Route,
        req: ResponsesRequest,
        key: str | None,
        continued: Conversation | None,
        out: Sink,
    ) -> None:
        """A ``compaction_trigger`` on a Responses WebSocket: the response's events to
        ``out``, its conversation ``continued`` (if any) and the request's input."""
        payload, base = self._summary_request(route, req, continued)
        tx = Transcoder(base, seal=self.host.sealer.seal)
        await self._stream(
            request, call, tx, partial(self._summary, call, route, payload, key), out
        )

    def _summary_request(
        self, route: Route, req: ResponsesRequest, continued: Conversation | None
    ) -> tuple[bytes, dict]:
        """The summarisation's chat body, and the response it answers with (in progress)."""
        chat, echo = to_summary_request(
            req, route.caps, route.upstream_model, self.host.sealer, continued
        )
        base = output.response_base(IDS.new(RESPONSE), int(time.time()), req.model, echo)
        return orjson.dumps(chat), base

    async def _summary(self, call: Call, route: Route, payload: bytes, key: str | None) -> bytes:
        """The upstream's whole answer to the summarisation request."""
        upstream = await route.replicas.chat(payload, call.rid, key)
        call.replica = upstream.replica
        streams = self.host.streams
        streams.add(upstream)
        try:
            return await upstream.read()
        finally:
            streams.discard(upstream)
            upstream.release()

    async def _stream(
        self,
        request: Incoming,
        call: Call,
        tx: Transcoder,
        summary: Callable[[], Awaitable[bytes]],
        out: Sink,
    ) -> None:
        await out.prepare(request)
        call.status = 200
        await out.write(tx.start())
        pings = self.host.pings
        watch = pings.watch(out)
        try:
            last = tx.complete(await summary(), compaction.answer)
            call.ttft = time.monotonic() - call.started
        except GatewayError as exc:
            call.error = exc
            last = tx.fail(exc.message, exc.code or "server_error")
        except Exception:
            # A bug of ours, after the 200 went out: still end the stream honestly.
            log.exception("request %s: compaction stream failed unexpectedly", call.rid)
            last = tx.fail("The gateway failed unexpectedly.")
        finally:
            pings.unwatch(watch)
        final = tx.final
        if final is not None:
            call.outcome, call.usage = final["status"], final["usage"]
        call.events = tx.events
        await out.write_eof(last)
