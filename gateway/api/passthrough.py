"""``POST /v1/chat/completions``, passed through: the body goes upstream as it came
(re-encoded only when the model name is aliased), a whole answer comes back as it is,
and a stream is forwarded byte for byte as it arrives. The usage of a whole answer
is read for the metrics and the access log; nothing else is decoded."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

import msgspec
import orjson

from gateway.api.calls import FAILED, Call
from gateway.api.pings import SSE_HEADERS
from gateway.api.replay import streamed
from gateway.api.turn import affinity
from gateway.core.wire import chunks as ck
from gateway.core.wire import output
from gateway.errors import GatewayError
from gateway.http.messages import Incoming, Reply, Response, StreamResponse
from gateway.upstream.response import UpstreamResponse
from gateway.upstream.routing import Route

log = logging.getLogger("gateway")

JSON = "application/json"


class Host(Protocol):
    """What the pass-through needs of the gateway (``endpoints.Gateway``)."""

    @property
    def observer(self) -> object | None: ...

    @property
    def streams(self) -> set[UpstreamResponse]: ...

    async def route(self, call: Call, body: bytes, model: str) -> Route: ...


class _WithUsage(msgspec.Struct):
    usage: ck.Usage | None = None


_USAGE = msgspec.json.Decoder(_WithUsage)


def chat_usage(body: bytes) -> dict | None:
    """The Responses-shaped usage of a passed-through chat completion (for the
    metrics and the access log); None when it has none or is not JSON."""
    try:
        return output.usage_from_chat(_USAGE.decode(body).usage)
    except ValueError:  # (msgspec's errors)
        return None


def chat_streams(view: Any, body: bytes) -> bool:
    """Whether a pass-through chat body asks for a stream (read only for a request
    with an Idempotency-Key: the view decodes no more than routing needs)."""
    return streamed(body)


async def chat(host: Host, request: Incoming, call: Call, held: list[Any]) -> Reply:
    """The answer to a decoded pass-through request (``held``: [body, view], emptied)."""
    body, view = held
    held.clear()
    route = await host.route(call, body, view.model)
    if route.upstream_model != view.model:
        doc = orjson.loads(body)
        doc["model"] = route.upstream_model
        body = orjson.dumps(doc)
    key = affinity(request, route, view)
    resp = await route.replicas.chat(body, call.rid, key)
    call.replica = resp.replica
    del body  # not needed while the answer streams
    try:
        ctype = resp.content_type.decode("latin-1") or JSON
        if not ctype.startswith("text/event-stream"):
            data = await resp.read()
            if host.observer is not None:
                call.usage = chat_usage(data)
            return Response(body=data, content_type=ctype, headers=call.headers)
        out = StreamResponse(headers={**SSE_HEADERS, **call.headers})
        await out.prepare(request)
        call.status = 200
        host.streams.add(resp)
        try:
            data = await resp.read_some()
            call.ttft = time.monotonic() - call.started
            while data:
                await out.write(data)
                data = await resp.read_some()
        except ConnectionError:
            resp.abort()  # the client left: the upstream should see it and stop
            raise
        except GatewayError as exc:
            # Bytes already went out: cut the connection, so that the client sees a
            # broken stream rather than one that looks complete.
            log.warning("request %s: chat stream from upstream broke: %s", call.rid, exc.message)
            call.error = exc
            call.outcome = FAILED
            request.abort()
            return out
    finally:
        host.streams.discard(resp)
        resp.release()
    await out.write_eof()
    return out
