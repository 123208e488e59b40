"""The Responses WebSocket: ``GET /v1/responses`` upgraded, one session per connection.

Each client message is a JSON object. ``response.create`` carries an ordinary
create body (``stream`` and ``background`` mean nothing here: it always streams);
its events go out as the SSE answer's would, one text message each, holding the
JSON after ``data: `` (``Gateway.stream`` writes them to ``Events``, which splits
the frames: nothing is decoded again). ``generate: false`` is a warm-up, answered
here without asking the model. ``response.processed`` is an acknowledgement: no
answer. Anything else, and every error before a response starts, is an error
message (``{"type": "error", "status": ..., "error": {...}}``); the socket stays
usable. One response at a time: the next message is read once the response ends.

The session remembers its last response (``translate.conversation``), in memory
only, so that a ``previous_response_id`` naming it continues it with only the new
items; any other id, or one a failed continuation gave up, is
``previous_response_not_found``. A ``response.create`` whose last input item is a
``compaction_trigger`` is a compaction (``api.compact``), of the remembered conversation
when it continues it; a compaction is not remembered.

Each response is a ``Call`` of its own (endpoint ``responses_ws``) for the
observer, and counts in ``in_flight`` while it runs: an idle socket holds no
drain. Between responses the session closes for the drain (1001), an idle
timeout (1000; ``[http] websocket-idle-timeout``) or its age cap (an error
``websocket_connection_limit_reached``, then 1000; ``limits.WEBSOCKET_MAX_AGE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

import msgspec
import orjson

from gateway import limits
from gateway.api.body import decode, decode_error
from gateway.api.calls import CLIENT_GONE, FAILED, Call, Observer
from gateway.api.compact import Compactions
from gateway.api.guard import Guard, within_limits
from gateway.api.process import ProcessState
from gateway.api.turn import Sink, Turn, affinity
from gateway.core.stream.transcoder import Transcoder
from gateway.core.translate import compaction
from gateway.core.translate.conversation import (
    Conversation,
    check_outputs,
    not_found,
    remember,
)
from gateway.core.wire.events import payloads
from gateway.core.wire.responses import EMPTY, REQUEST_DECODER
from gateway.errors import GatewayError, InternalError, InvalidRequest, UpgradeRequired
from gateway.http.messages import UPGRADED, Incoming, Reply, WebSocket
from gateway.upstream.response import UpstreamResponse
from gateway.upstream.routing import Route

log = logging.getLogger("gateway")

ENDPOINT = "responses_ws"
CREATE = "response.create"
PROCESSED = "response.processed"
NOT_A_SOCKET = (
    "GET /v1/responses opens the Responses WebSocket; send the upgrade (Upgrade: "
    "websocket), or POST to /v1/responses to create a response."
)
NOT_AN_OBJECT = "A WebSocket message must be a JSON object with a 'type' (response.create)."
LIMIT_REACHED = "websocket_connection_limit_reached"
GOING_AWAY = 1001


# Gateway.route (call, body, model), Gateway.turn (request, call, route, decoded, stream,
# continued, keep) and Gateway.stream (request, call, upstream, transcoder, pump, out),
# called positionally.
ToRoute = Callable[[Call, bytes, str], Awaitable[Route]]
MakeTurn = Callable[[Incoming, Call, Route, Any, bool, Conversation | None, bool], Turn]
Stream = Callable[[Incoming, Call, UpstreamResponse, Transcoder, bool, Sink], Awaitable[None]]


class Host(Protocol):
    """What a session uses of its gateway (``endpoints.Gateway``)."""

    max_body: int
    guard: Guard | None
    observer: Observer | None
    process: ProcessState
    in_flight: int
    sockets: int
    websocket_idle: float
    compactions: Compactions

    def left(self) -> None: ...

    @property
    def route(self) -> ToRoute: ...

    @property
    def turn(self) -> MakeTurn: ...

    @property
    def stream(self) -> Stream: ...


class Frame(msgspec.Struct):
    """What the session reads of a message before its body: its type, and the fields
    that are the session's own (``input`` only measured)."""

    type: str = ""
    generate: bool | None = None
    previous_response_id: str | None = None
    input: msgspec.Raw = EMPTY


FRAME_DECODER = msgspec.json.Decoder(Frame)


async def session(host: Host, request: Incoming, call: Call) -> Reply:
    """``GET /v1/responses``: accept the upgrade (the client key was checked before),
    then serve the session until it ends."""
    if not request.wants_websocket():
        raise UpgradeRequired(NOT_A_SOCKET)
    socket = await request.accept_websocket(call.headers)
    call.status = 101  # (what Gateway.handle tells the upgrade's end by, if it is cut)
    try:
        await Session(host, request, socket, call.tenant).run()
    except Exception:  # a bug of ours: the socket still ends with a close, not an HTTP answer
        log.exception("request %s: the Responses WebSocket failed unexpectedly", call.rid)
        with contextlib.suppress(ConnectionError):
            await socket.close(1011, "internal error")
    return UPGRADED


class Events:
    """``Sink`` for a response's SSE frames: each frame's JSON, one message each
    (pings, SSE comments, are dropped: the transport keeps the socket alive)."""

    __slots__ = ("socket",)

    def __init__(self, socket: WebSocket) -> None:
        self.socket = socket

    async def prepare(self, request: Incoming) -> None:
        pass

    async def write(self, data: bytes) -> None:
        for payload in payloads(data):
            await self.socket.send(payload)

    async def write_eof(self, data: bytes = b"") -> None:
        await self.write(data)


class Session:
    def __init__(self, host: Host, request: Incoming, socket: WebSocket, tenant: str) -> None:
        self.host = host
        self.request = request
        self.socket = socket
        self.tenant = tenant
        self.memory: Conversation | None = None  # the last response, if it may be continued
        # A receive begun while a response ran (to see the client close meanwhile): the
        # next message, when it comes, is the next turn's.
        self.early: asyncio.Future[bytes | None] | None = None
        self.deadline = asyncio.get_running_loop().time() + limits.WEBSOCKET_MAX_AGE

    async def run(self) -> None:
        host = self.host
        host.left()  # (counted by Gateway.handle: from here on, only its responses count)
        host.sockets += 1
        drain = asyncio.ensure_future(host.process.drain_started.wait())
        try:
            while (data := await self._next(drain)) is not None:
                await self._message(data)
        except ConnectionError:
            pass  # the client is gone (a response in progress was cut: Gateway.stream)
        finally:
            drain.cancel()
            if self.early is not None:
                self.early.cancel()
            host.sockets -= 1
            host.in_flight += 1  # (Gateway.handle counts the upgrade's end)

    async def _next(self, drain: asyncio.Future[Any]) -> bytes | None:
        """The next message; None once the session is over (closed here, or by the client)."""
        socket = self.socket
        loop = asyncio.get_running_loop()
        while True:
            if drain.done():
                await socket.close(GOING_AWAY, "the gateway is shutting down")
                return None
            left = self.deadline - loop.time()
            if left <= 0:
                await self._error(
                    InvalidRequest(
                        "This WebSocket reached its time limit; open a new one to go on.",
                        code=LIMIT_REACHED,
                    )
                )
                await socket.close(1000, "connection time limit reached")
                return None
            idle = self.host.websocket_idle
            receive = self.early or asyncio.ensure_future(socket.receive())
            self.early = None
            try:
                done, _ = await asyncio.wait(
                    (receive, drain), timeout=min(idle, left), return_when=asyncio.FIRST_COMPLETED
                )
                if receive in done:
                    return receive.result()
            finally:
                if not receive.done():
                    receive.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await receive
            if not drain.done() and left > idle:
                await socket.close(1000, "idle timeout")
                return None

    async def _message(self, data: bytes) -> None:
        try:
            head = FRAME_DECODER.decode(data)
        except ValueError as exc:  # msgspec's errors
            bad = isinstance(exc, msgspec.ValidationError)
            await self._error(decode_error(exc, data) if bad else InvalidRequest(NOT_AN_OBJECT))
            return
        if head.type == CREATE:
            await self._create(data, head)
        elif head.type != PROCESSED:
            what = f"'{head.type}'" if head.type else "missing"
            await self._error(
                InvalidRequest(
                    f"Message type {what} is not one this server takes: "
                    "response.create or response.processed.",
                    param="type",
                    code="invalid_value",
                )
            )

    async def _create(self, data: bytes, head: Frame) -> None:
        """One response, a ``Call`` of its own for the observer, in flight while it runs."""
        host = self.host
        call = Call(None)
        call.endpoint = ENDPOINT
        call.tenant = self.tenant
        observer = host.observer
        if observer is not None:
            observer.started(call)
        host.in_flight += 1
        try:
            guard = host.guard
            if guard is not None and guard.limited:  # (each response counts once)
                work = within_limits(guard, self.tenant, partial(self._respond, call, data, head))
            else:
                work = self._respond(call, data, head)
            await self._watched(work)
        except GatewayError as exc:
            call.error = exc
            call.status = exc.status
            call.outcome = FAILED
            call.replica = call.replica or exc.replica
            await self._error(exc)
        except (ConnectionError, asyncio.CancelledError):
            call.outcome = CLIENT_GONE
            call.status = call.status or 499
            raise
        except Exception:
            log.exception("request %s: unexpected error on the Responses WebSocket", call.rid)
            failure = InternalError("The gateway failed unexpectedly.")
            call.error = failure
            call.status = failure.status
            call.outcome = FAILED
            await self._error(failure)
        finally:
            host.left()
            if observer is not None:
                observer.finished(call)

    async def _watched(self, work: Awaitable[None]) -> None:
        """``work`` (a response), cut if the client closes the socket meanwhile (a server
        that reads frames only when asked, as aiohttp's, would not see it until then); a
        message that comes meanwhile is kept for the next turn (``early``)."""
        job = asyncio.ensure_future(work)
        receive = self.early or asyncio.ensure_future(self.socket.receive())
        self.early = None
        try:
            await asyncio.wait((job, receive), return_when=asyncio.FIRST_COMPLETED)
            if not job.done() and receive.done() and receive.result() is None:
                job.cancel()  # the client is gone: the upstream stream is cut
                with contextlib.suppress(asyncio.CancelledError):
                    await job
                raise ConnectionResetError("The client closed the WebSocket.")
            await job
        finally:
            if not job.done():
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job
            self.early = receive  # (done or not: the next turn's message, or its end)

    async def _respond(self, call: Call, data: bytes, head: Frame) -> None:
        host = self.host
        req = decode(REQUEST_DECODER, data)
        req.previous_response_id = None  # (the session's own: read in the head)
        req.background = None
        continued = None
        previous = head.previous_response_id
        if previous is not None:
            continued = self.memory
            if continued is None or continued.response_id != previous:
                raise not_found(previous)
            self.memory = None  # given to this turn: if it fails, nothing is left to continue
            check_outputs(continued, req.input)
        route = await host.route(call, data, req.model)
        if compaction.triggered(req):  # a compaction: not remembered, so not continued
            key = affinity(self.request, route, req)
            out = Events(self.socket)
            await host.compactions.trigger_events(
                self.request, call, route, req, key, continued, out
            )
            return
        payload, key, base, seal, summary, names, pump, messages = host.turn(
            self.request, call, route, req, True, continued, True
        )
        tx = Transcoder(base, seal=seal, summary=summary, names=names)
        out = Events(self.socket)
        if head.generate is False:  # a warm-up: an empty response, without the model
            call.status = 200
            await out.write_eof(tx.empty())
            call.events = tx.events
        else:
            upstream = await route.replicas.chat(payload, call.rid, key)
            call.replica = upstream.replica
            del payload
            try:
                await host.stream(self.request, call, upstream, tx, pump, out)
            finally:
                upstream.release()
        final = tx.final
        if final is None or final["status"] == "failed" or messages is None:
            return
        self.memory = remember(
            continued,
            final["id"],
            messages,
            bool(req.instructions),
            req.input,
            len(head.input),
            orjson.dumps(final["output"]),
            host.max_body,
        )

    async def _error(self, exc: GatewayError) -> None:
        doc = {"type": "error", "status": exc.status, **exc.to_dict()}
        await self.socket.send(orjson.dumps(doc))
