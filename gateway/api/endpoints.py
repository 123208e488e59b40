"""HTTP glue: one handler (for ``gateway.http.server``) for every route.

This is the one place where a ``GatewayError`` becomes an HTTP error response
(before any byte of a stream was sent); after a Responses stream started,
failures become the transcoder's ``response.failed`` event instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson

from gateway.api import passthrough, websocket
from gateway.api.body import decode, read_body
from gateway.api.calls import CLIENT_GONE, FAILED, Call, Observer
from gateway.api.compact import Compactions, never_streams
from gateway.api.guard import Guard, within_limits
from gateway.api.passthrough import chat_streams
from gateway.api.pings import SSE_HEADERS, SsePings
from gateway.api.process import ProcessState
from gateway.api.replay import REPLAYED, Replays, error_reply
from gateway.api.seal import Sealer
from gateway.api.turn import Sink, Turn, affinity
from gateway.core.ids import IDS, RESPONSE
from gateway.core.stream.transcoder import Transcoder
from gateway.core.translate import compaction, reasoning
from gateway.core.translate.conversation import Conversation
from gateway.core.translate.request import to_chat_request
from gateway.core.translate.response import to_response
from gateway.core.wire import output
from gateway.core.wire.chat import PASS_THROUGH_DECODER
from gateway.core.wire.responses import REQUEST_DECODER
from gateway.errors import (
    GatewayError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    ShuttingDown,
    body_too_large,
)
from gateway.http.messages import UPGRADED, Incoming, Reply, Response, StreamResponse
from gateway.limits import STREAM_WRITE_AHEAD, WEBSOCKET_IDLE_TIMEOUT
from gateway.upstream.response import UpstreamResponse
from gateway.upstream.routing import Route, Router

log = logging.getLogger("gateway")


JSON = "application/json"
ApiRoute = Callable[[Incoming, Call], Awaitable[Reply]]
# An endpoint's answer to a request whose body was read and decoded: ``held`` is
# [body, decoded], which it empties (so that a long answer lets go of them).
Answer = Callable[[Incoming, Call, list[Any]], Awaitable[Reply]]
OpsRoute = Callable[[Incoming], Awaitable[Reply]]
# The endpoint label of a path (metrics, access log): bounded, never the raw path.
ENDPOINTS = {
    "/v1/responses": "responses",
    "/v1/responses/compact": "responses_compact",
    "/v1/chat/completions": "chat_completions",
    "/v1/models": "models",
}
OPENING_EVENTS = 2  # response.created, response.in_progress
NO_STORED = (
    "Stored responses are not offered: this gateway is stateless, so responses cannot be "
    "retrieved, deleted or cancelled after they were returned."
)


def _asks_stream(req: Any, body: bytes) -> bool:
    """Whether a decoded Responses request asks for a stream."""
    return bool(req.stream)


class Gateway:
    """Serves ``/v1/responses`` (its compactions: ``api.compact``; its WebSocket:
    ``api.websocket``), ``/v1/chat/completions`` and ``/v1/models``.

    The process side (``gateway.ops``) plugs in here: ``ops`` routes (health,
    readiness, metrics: answered before auth and not counted as API traffic), an
    ``observer`` told of each finished request, ``in_flight`` and ``idle()`` for a
    drain, ``cut_streams()`` at the drain's deadline; a reload assigns ``router``,
    ``guard`` and ``max_body`` (a request keeps the objects it already took).
    """

    def __init__(
        self,
        router: Router,
        pings: SsePings,
        max_body: int,
        *,
        guard: Guard | None = None,
        replays: Replays | None = None,
        sealer: Sealer | None = None,
        process: ProcessState,
    ) -> None:
        self.router = router
        self.pings = pings
        self.max_body = max_body
        # None when there are neither client keys nor limits: no per-request cost.
        self.guard = guard
        self.replays = replays  # None: Idempotency-Key is ignored
        # Seals reasoning for include=["reasoning.encrypted_content"] and opens it when
        # replayed; without one, a key of this object's own.
        self.sealer = sealer if sealer is not None else Sealer.random()
        self.created = int(time.time())
        self.ops: dict[tuple[str, str], OpsRoute] = {}
        self.observer: Observer | None = None
        self.process = process  # the process it is served in (gateway.ops keeps it)
        self.in_flight = 0  # API requests being answered (streams until their end)
        self.streams: set[UpstreamResponse] = set()  # upstream reads of open streams
        self._idle: asyncio.Future[None] | None = None
        self.compactions = Compactions(self)
        self.sockets = 0  # Responses WebSockets open (each response counts in flight)
        self.websocket_idle = WEBSOCKET_IDLE_TIMEOUT  # [http] websocket-idle-timeout
        self._socket: ApiRoute = partial(websocket.session, self)  # (limits: per response)
        self._routes: dict[tuple[str, str], ApiRoute] = {
            ("POST", "/v1/responses"): partial(
                self._decoded, REQUEST_DECODER, _asks_stream, self.responses
            ),
            ("POST", "/v1/responses/compact"): partial(
                self._decoded, REQUEST_DECODER, never_streams, self.compact
            ),
            ("POST", "/v1/chat/completions"): partial(
                self._decoded, PASS_THROUGH_DECODER, chat_streams, partial(passthrough.chat, self)
            ),
            ("GET", "/v1/models"): self.models,
            ("GET", "/v1/responses"): self._socket,
        }

    async def handle(self, request: Incoming) -> Reply:
        ops = self.ops.get((request.method, request.path))
        if ops is not None:
            return await ops(request)
        call = Call(request.headers.get("x-request-id"))
        call.endpoint = ENDPOINTS.get(request.path, "other")
        self.in_flight += 1
        if self.observer is not None:
            self.observer.started(call)
        reply: Reply | None = None
        try:
            reply = await self._answer(request, call)
            return reply
        finally:
            run = call.run
            if run is None or run.done():
                self._ended()
            else:  # a run that goes on without its client: in flight until it ends
                run.add_done_callback(self._ended)
            if self.observer is not None and reply is not UPGRADED:  # (reported per response)
                self._finished(call, reply, self.observer)  # type: ignore[arg-type]

    def _ended(self, _run: object = None) -> None:
        self.in_flight -= 1
        if not self.in_flight and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def left(self) -> None:
        """One API request (or WebSocket response) fewer in flight."""
        self.in_flight -= 1
        if not self.in_flight and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def _finished(
        self, call: Call, reply: Response | StreamResponse | None, observer: Observer
    ) -> None:
        if reply is None:  # the client went away (the task was cancelled, or a write failed)
            if call.status == 101:  # a WebSocket cut: its responses were told of, each
                return
            call.outcome = CLIENT_GONE
            call.status = call.status or 499
        else:
            call.status = reply.status
            if reply.status >= 400:
                call.outcome = FAILED
            elif isinstance(reply, Response) and reply.headers and REPLAYED in reply.headers:
                call.replayed = True
        observer.finished(call)

    async def idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for no API request to be in flight; whether none is."""
        if self.in_flight:
            self._idle = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._idle), timeout)
            self._idle = None
        return not self.in_flight

    def cut_streams(self) -> None:
        """End every open stream now: a Responses stream with ``response.failed``
        (code ``server_shutting_down``), a chat pass-through by closing it."""
        exc = ShuttingDown("The gateway is shutting down; retry the request.")
        for upstream in list(self.streams):
            upstream.cut(exc)

    async def _answer(self, request: Incoming, call: Call) -> Reply:
        try:
            guard = self.guard
            if guard is not None:
                call.tenant = guard.tenant(request)  # (the key first, even on a wrong path)
            route = self._routes.get((request.method, request.path))
            if route is None:
                route = self._not_routed(request)
            if guard is not None and guard.limited and route is not self._socket:
                return await self._limited(route, request, call, guard)
            return await route(request, call)
        except GatewayError as exc:
            call.error = exc
            call.replica = call.replica or exc.replica
            return error_reply(exc, call)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception(
                "request %s: unexpected error on %s %s", call.rid, request.method, request.path
            )
            return error_reply(InternalError("The gateway failed unexpectedly."), call)

    async def _limited(self, route: ApiRoute, request: Incoming, call: Call, guard: Guard) -> Reply:
        """The route within the client key's limits."""
        return await within_limits(guard, call.tenant, partial(route, request, call), call)

    def _not_routed(self, request: Incoming) -> ApiRoute:
        path = request.path
        if path in ENDPOINTS:
            raise MethodNotAllowed(f"Method {request.method} is not allowed on {path}.")
        if path.startswith("/v1/responses/"):
            raise NotFound(NO_STORED)
        raise NotFound(f"Unknown path: {request.method} {path}.")

    async def models(self, request: Incoming, call: Call) -> Response:
        ids = self.router.model_ids()
        if "default" not in ids:
            ids.append("default")
        data = [
            {"id": m, "object": "model", "created": self.created, "owned_by": "gateway"}
            for m in ids
        ]
        body = orjson.dumps({"object": "list", "data": data})
        return Response(body=body, content_type=JSON, headers=call.headers)

    async def route(self, call: Call, body: bytes, model: str) -> Route:
        """The deployment of ``model``, which must take a body of this size."""
        route = await self.router.resolve(model)
        limit = route.dep.max_body_bytes
        if len(body) > limit:
            raise body_too_large(limit, len(body))
        call.model = model
        call.route = route
        return route

    async def _decoded(
        self,
        decoder: Any,
        streams: Callable[[Any, bytes], bool],
        answer: Answer,
        request: Incoming,
        call: Call,
    ) -> Reply:
        """Read and decode the body, then ``answer`` it: once per Idempotency-Key
        (``replays``) unless it asks for a stream (a stream is never replayed)."""
        body = await read_body(request, self.max_body)
        doc = decode(decoder, body)
        replays = self.replays  # (None: Idempotency-Key is ignored)
        key = None if replays is None else request.headers.get("idempotency-key")
        if key is not None and replays is not None and not streams(doc, body):
            return await replays.run(call, key, request, body, answer, [body, doc])
        held = [body, doc]
        del body, doc  # (only the list holds them: the answer lets go while it streams)
        return await answer(request, call, held)

    # ---- /v1/responses ----------------------------------------------------------------

    async def compact(self, request: Incoming, call: Call, held: list[Any]) -> Reply:
        body, req = held
        held.clear()
        route = await self.route(call, body, req.model)
        key = affinity(request, route, req)
        return await self.compactions.compact(call, route, req, key)

    async def responses(self, request: Incoming, call: Call, held: list[Any]) -> Reply:
        body, req = held
        held.clear()
        route = await self.route(call, body, req.model)
        items = req.input  # a compaction_trigger last: compaction.triggered, without a call
        if type(items) is list and items and items[-1].type == compaction.TRIGGER:
            key = affinity(request, route, req)
            return await self.compactions.trigger(request, call, route, req, key)
        stream = bool(req.stream)
        payload, key, base, seal, summary, names, pump, _ = self.turn(
            request, call, route, req, stream
        )
        # This frame lives as long as the stream: keep only what the stream needs.
        del body, req
        upstream = await route.replicas.chat(payload, call.rid, key)
        call.replica = upstream.replica
        del payload
        try:
            if stream:
                out = StreamResponse(headers={**SSE_HEADERS, **call.headers})
                tx = Transcoder(base, seal=seal, summary=summary, names=names)
                await self.stream(request, call, upstream, tx, pump, out)
                return out
            data = await upstream.read()
        finally:
            upstream.release()
        doc = to_response(data, base, seal=seal, summary=summary, names=names)
        call.outcome = doc["status"]
        call.usage = doc["usage"]
        return Response(body=orjson.dumps(doc), content_type=JSON, headers=call.headers)

    def turn(
        self,
        request: Incoming,
        call: Call,
        route: Route,
        req: Any,
        stream: bool,
        continued: Conversation | None = None,
        keep: bool = False,
    ) -> Turn:
        """A Responses request translated for its route (``api.turn.Turn``; the chat
        messages only if ``keep``), continuing the conversation ``continued``."""
        caps = route.caps
        pump = stream and caps.streaming
        chat, echo, tools = to_chat_request(
            req, caps, route.upstream_model, stream=pump, sealer=self.sealer, continued=continued
        )
        if tools.dropped:
            log.info(
                "request %s: %d hosted tool(s) dropped (%s)",
                call.rid,
                len(tools.dropped),
                ", ".join(tools.dropped),
            )
        base = output.response_base(IDS.new(RESPONSE), int(time.time()), req.model, echo)
        seal = self.sealer.seal if reasoning.wants_encrypted(req.include) else None
        summary = caps.summary_text and reasoning.summary_asked(req.reasoning)
        messages = chat["messages"] if keep else None
        key = affinity(request, route, req)
        return orjson.dumps(chat), key, base, seal, summary, tools.names, pump, messages

    async def stream(
        self,
        request: Incoming,
        call: Call,
        upstream: UpstreamResponse,
        tx: Transcoder,
        pump: bool,
        out: Sink,
    ) -> None:
        """A response's events from ``upstream`` to ``out`` (``pump``: as they come)."""
        await out.prepare(request)
        call.status = 200
        frames = tx.start()
        self.streams.add(upstream)
        try:
            if pump:
                last = await self._pump(out, tx, upstream, frames, call)
            else:
                await out.write(frames)
                last = tx.complete(await upstream.read())
                call.ttft = time.monotonic() - call.started
        except GatewayError as exc:
            call.error = exc
            last = tx.fail(exc.message, exc.code or "server_error")
        except ConnectionError:
            upstream.abort()  # the client left: the upstream should see it and stop
            raise  # nothing can be written any more
        except Exception:
            # A bug of ours, after the 200 went out: still end the stream honestly.
            log.exception("request %s: stream failed unexpectedly", call.rid)
            last = tx.fail("The gateway failed unexpectedly.")
        finally:
            self.streams.discard(upstream)
            final = tx.final
            if final is not None:
                call.outcome = final["status"]
                call.usage = final["usage"]
            call.events = tx.events
        await out.write_eof(last)  # the terminal event and the end of the body: one write

    async def _pump(
        self,
        out: Sink,
        tx: Transcoder,
        upstream: UpstreamResponse,
        frames: bytes,
        call: Call,
    ) -> bytes:
        """Upstream bytes → transcoder → client.

        Frames go out whenever the next upstream read would have to wait, so the
        client never waits for bytes the gateway holds (``frames`` starts with
        ``created`` and ``in_progress``), and what arrived together leaves
        together (a whole answer in one read: one write). Frames are only held
        across a read that returns at once (``ready``: bytes or the end, never an
        error), and written before a failure propagates, so no event is lost
        before the ``response.failed`` that follows it. Returns the frames that
        end the stream, for the caller's final write. The first read that makes
        events past the two opening ones sets the call's time to first token
        (until then one local test per read; after it, none).
        """
        watch = self.pings.watch(out)
        first = True
        try:
            while True:
                if frames and (not upstream.ready() or len(frames) > STREAM_WRITE_AHEAD):
                    await out.write(frames)
                    frames = b""
                data = await upstream.read_some()
                if not data:
                    return frames + tx.finish()
                watch.fresh = True
                try:
                    frames += tx.feed(data)
                except Exception:
                    await out.write(frames)  # owed to the client before the failure event
                    raise
                if first and tx.events > OPENING_EVENTS:
                    first = False
                    call.ttft = time.monotonic() - call.started
                if tx.done:
                    return frames
        finally:
            self.pings.unwatch(watch)
