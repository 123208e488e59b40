"""HTTP glue: one handler (for ``gateway.http.server``) for every route.

This is the one place where a ``GatewayError`` becomes an HTTP error response
(before any byte of a stream was sent); after a Responses stream started,
failures become the transcoder's ``response.failed`` event instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import orjson

from gateway.api.body import decode, read_body
from gateway.api.calls import Call
from gateway.api.guard import Guard
from gateway.api.pings import SsePings
from gateway.api.replay import Replays, error_reply, streamed
from gateway.api.seal import Sealer
from gateway.core.ids import IDS, RESPONSE
from gateway.core.stream.transcoder import Transcoder
from gateway.core.translate import reasoning
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
    body_too_large,
)
from gateway.http.messages import Incoming, Reply, Response, StreamResponse
from gateway.limits import STREAM_WRITE_AHEAD
from gateway.upstream.replica import UpstreamConnection
from gateway.upstream.routing import Route, Router

log = logging.getLogger("gateway")

JSON = "application/json"
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
Route_ = Callable[[Incoming, Call], Awaitable[Any]]
NO_STORED = (
    "Stored responses are not offered: this gateway is stateless, so responses cannot be "
    "retrieved, deleted or cancelled after they were returned."
)


class Gateway:
    """Serves ``/v1/responses``, ``/v1/chat/completions`` and ``/v1/models``."""

    def __init__(
        self,
        router: Router,
        pings: SsePings,
        max_body: int,
        *,
        guard: Guard | None = None,
        replays: Replays | None = None,
        sealer: Sealer | None = None,
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
        self._routes: dict[tuple[str, str], Route_] = {
            ("POST", "/v1/responses"): self.responses,
            ("POST", "/v1/chat/completions"): self.chat,
            ("GET", "/v1/models"): self.models,
        }

    async def handle(self, request: Incoming) -> Reply:
        call = Call(request.headers.get("x-request-id"))
        try:
            if self.guard is not None:
                return await self._guarded(request, call, self.guard)
            route = self._routes.get((request.method, request.path))
            if route is None:
                route = self._not_routed(request)
            return await route(request, call)
        except GatewayError as exc:
            return error_reply(exc, call)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception(
                "request %s: unexpected error on %s %s", call.rid, request.method, request.path
            )
            return error_reply(InternalError("The gateway failed unexpectedly."), call)

    async def _guarded(self, request: Incoming, call: Call, guard: Guard) -> Reply:
        """The route behind the client's key and its limits."""
        call.tenant = guard.tenant(request)
        route = self._routes.get((request.method, request.path))
        if route is None:
            route = self._not_routed(request)
        if not guard.limited:
            return await route(request, call)
        token = IDS.new("slot_")
        if not await guard.admit(call.tenant, token):
            return await route(request, call)
        try:
            return await route(request, call)
        finally:
            await guard.leave(call.tenant, token)

    def _not_routed(self, request: Incoming) -> Route_:
        path = request.path
        if path.startswith("/v1/responses/"):
            raise NotFound(NO_STORED)
        if path in ("/v1/responses", "/v1/chat/completions", "/v1/models"):
            raise MethodNotAllowed(f"Method {request.method} is not allowed on {path}.")
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

    async def _route(self, body: bytes, model: str) -> Route:
        """The deployment of ``model``, which must take a body of this size."""
        route = await self.router.resolve(model)
        limit = route.dep.max_body_bytes
        if len(body) > limit:
            raise body_too_large(limit, len(body))
        return route

    @staticmethod
    def _affinity_header(request: Incoming, route: Route) -> str | None:
        """The deployment's affinity header, for a request whose body names no key."""
        name = route.dep.affinity_header
        return request.headers.get(name) if name else None

    def _key(self, request: Incoming) -> str | None:
        """The request's Idempotency-Key, if the gateway replays."""
        return None if self.replays is None else request.headers.get("idempotency-key")

    # ---- /v1/chat/completions: pass-through -------------------------------------------

    async def chat(self, request: Incoming, call: Call) -> Reply:
        body = await read_body(request, self.max_body)
        view = decode(PASS_THROUGH_DECODER, body)
        key = self._key(request)
        if key is not None and self.replays is not None and not streamed(body):
            return await self.replays.run(
                call, key, request, body, partial(self._chat, request, call, [body, view])
            )
        held = [body, view]
        del body, view  # (only the list holds them: _chat lets go while the answer streams)
        return await self._chat(request, call, held)

    async def _chat(self, request: Incoming, call: Call, held: list[Any]) -> Reply:
        body, view = held
        held.clear()
        route = await self._route(body, view.model)
        if route.upstream_model != view.model:
            doc = orjson.loads(body)
            doc["model"] = route.upstream_model
            body = orjson.dumps(doc)
        key = None
        if route.replicas.many:
            key = view.prompt_cache_key or view.user or view.safety_identifier
            key = key or self._affinity_header(request, route)
        resp = await route.replicas.chat(body, call.rid, key)
        del body  # not needed while the answer streams
        try:
            ctype = resp.content_type.decode("latin-1") or JSON
            if not ctype.startswith("text/event-stream"):
                return Response(body=await resp.read(), content_type=ctype, headers=call.headers)
            out = StreamResponse(headers={**SSE_HEADERS, **call.headers})
            await out.prepare(request)
            try:
                while data := await resp.read_some():
                    await out.write(data)
            except ConnectionError:
                resp.abort()  # the client left: the upstream should see it and stop
                raise
            except GatewayError as exc:
                # Bytes already went out: cut the connection, so that the client
                # sees a broken stream rather than one that looks complete.
                log.warning(
                    "request %s: chat stream from upstream broke: %s", call.rid, exc.message
                )
                request.abort()
                return out
        finally:
            resp.release()
        await out.write_eof()
        return out

    # ---- /v1/responses ----------------------------------------------------------------

    async def responses(self, request: Incoming, call: Call) -> Reply:
        body = await read_body(request, self.max_body)
        req = decode(REQUEST_DECODER, body)
        key = self._key(request)
        if key is not None and self.replays is not None and not req.stream:
            return await self.replays.run(
                call, key, request, body, partial(self._responses, request, call, [body, req])
            )
        held = [body, req]
        del body, req  # (only the list holds them: _responses lets go while a stream runs)
        return await self._responses(request, call, held)

    async def _responses(self, request: Incoming, call: Call, held: list[Any]) -> Reply:
        body, req = held
        held.clear()
        route = await self._route(body, req.model)
        stream = bool(req.stream)
        pump = stream and route.caps.streaming
        caps = route.caps
        chat, echo, tools = to_chat_request(
            req, caps, route.upstream_model, stream=pump, sealer=self.sealer
        )
        if tools.dropped:
            log.info(
                "request %s: %d hosted tool(s) dropped (%s)",
                call.rid,
                len(tools.dropped),
                ", ".join(tools.dropped),
            )
        names = tools.names
        key = None
        if route.replicas.many:
            key = req.prompt_cache_key or req.user or req.safety_identifier
            key = key or self._affinity_header(request, route)
        base = output.response_base(IDS.new(RESPONSE), int(time.time()), req.model, echo)
        seal = self.sealer.seal if reasoning.wants_encrypted(req.include) else None
        summary = caps.summary_text and reasoning.summary_asked(req.reasoning)
        payload = orjson.dumps(chat)
        # This frame lives as long as the stream: keep only what the stream needs.
        del body, req, chat, echo, tools
        upstream = await route.replicas.chat(payload, call.rid, key)
        del payload
        try:
            if stream:
                tx = Transcoder(base, seal=seal, summary=summary, names=names)
                return await self._stream(request, call, upstream, tx, pump)
            data = await upstream.read()
        finally:
            upstream.release()
        body = orjson.dumps(to_response(data, base, seal=seal, summary=summary, names=names))
        return Response(body=body, content_type=JSON, headers=call.headers)

    async def _stream(
        self,
        request: Incoming,
        call: Call,
        upstream: UpstreamConnection,
        tx: Transcoder,
        pump: bool,
    ) -> StreamResponse:
        out = StreamResponse(headers={**SSE_HEADERS, **call.headers})
        await out.prepare(request)
        frames = tx.start()
        try:
            if pump:
                last = await self._pump(out, tx, upstream, frames)
            else:
                await out.write(frames)
                last = tx.complete(await upstream.read())
        except GatewayError as exc:
            last = tx.fail(exc.message, exc.code or "server_error")
        except ConnectionError:
            upstream.abort()  # the client left: the upstream should see it and stop
            raise  # nothing can be written any more
        except Exception:
            # A bug of ours, after the 200 went out: still end the stream honestly.
            log.exception("request %s: stream failed unexpectedly", call.rid)
            last = tx.fail("The gateway failed unexpectedly.")
        await out.write_eof(last)  # the terminal event and the end of the body: one write
        return out

    async def _pump(
        self, out: StreamResponse, tx: Transcoder, upstream: UpstreamConnection, frames: bytes
    ) -> bytes:
        """Upstream bytes → transcoder → client.

        Frames go out whenever the next upstream read would have to wait, so the
        client never waits for bytes the gateway holds (``frames`` starts with
        ``created`` and ``in_progress``), and what arrived together leaves
        together (a whole answer in one read: one write). Frames are only held
        across a read that returns at once (``ready``: bytes or the end, never an
        error), and written before a failure propagates, so no event is lost
        before the ``response.failed`` that follows it. Returns the frames that
        end the stream, for the caller's final write.
        """
        watch = self.pings.watch(out)
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
                if tx.done:
                    return frames
        finally:
            self.pings.unwatch(watch)
