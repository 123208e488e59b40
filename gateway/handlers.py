"""HTTP glue: one handler (for ``gateway.http_server``) for every route.

This is the one place where a ``GatewayError`` becomes an HTTP error response
(before any byte of a stream was sent); after a Responses stream started,
failures become the transcoder's ``response.failed`` event instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import orjson

from gateway import http_messages as http
from gateway.errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RequestTooLarge,
    UpstreamBadResponse,
)
from gateway.keepalive import KeepAlive
from gateway.routing import Route, Router
from gateway.transcoder import Transcoder
from gateway.translate import to_chat_request, to_response
from gateway.upstream import Response
from gateway.wire import output
from gateway.wire.chat import PASS_THROUGH_DECODER
from gateway.wire.chunks import COMPLETION_DECODER
from gateway.wire.responses import REQUEST_DECODER

log = logging.getLogger("gateway")

JSON = "application/json"
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
# Frames held back while more upstream bytes are already in: at most this much.
WRITE_AHEAD = 64 * 1024
BAD_JSON = (
    "We could not parse the JSON body of your request. The body must be a JSON object "
    "(and the Content-Type application/json)."
)
BAD_UTF8 = "The JSON body of your request is not valid UTF-8."
NO_STORED = (
    "Stored responses are not offered: this gateway is stateless, so responses cannot be "
    "retrieved, deleted or cancelled after they were returned."
)


def error_response(exc: GatewayError) -> http.Response:
    return http.Response(status=exc.status, body=exc.body(), content_type=JSON)


def decode_error(exc: ValueError, body: bytes) -> InvalidRequest:
    """A msgspec error → a 400 naming the field path (``temperature``, ``input[0].role``).

    A string that is not UTF-8 is told apart by checking the body itself, not
    by the library's error (msgspec 0.19 raised ``UnicodeDecodeError``, 0.23 its
    own ``DecodeError``); this is the error path only.
    """
    if not isinstance(exc, msgspec.ValidationError):
        if not _is_utf8(body):
            return InvalidRequest(BAD_UTF8, code="invalid_value")
        return InvalidRequest(BAD_JSON)
    text = str(exc)
    path = ""
    if " - at `$" in text:
        text, _, at = text.rpartition(" - at `$")
        path = at.rstrip("`").lstrip(".")
    if text.startswith("Object missing required field `"):
        field = text.split("`")[1]
        param = f"{path}.{field}" if path else field
        return InvalidRequest(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    code = "invalid_type" if text.startswith("Expected `") and " got `" in text else "invalid_value"
    if not path:
        return InvalidRequest(f"Invalid request body: {text}.", code=code)
    return InvalidRequest(f"Invalid '{path}': {text}.", param=path, code=code)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


async def read_body(request: http.Request, limit: int) -> bytes:
    size = request.content_length
    if size is not None and size > limit:
        raise RequestTooLarge(f"The request body is {size} bytes; the limit is {limit} bytes.")
    content = request.content
    try:
        if size is not None:
            return await content.readexactly(size) if size else b""
        chunks = []
        total = 0
        while data := await content.readany():
            total += len(data)
            if total > limit:
                raise RequestTooLarge(f"The request body is over the limit of {limit} bytes.")
            chunks.append(data)
    except http.BodyTooLarge as exc:
        raise RequestTooLarge(f"The request body is over the limit of {limit} bytes.") from exc
    except http.BadRequest as exc:
        raise InvalidRequest(f"The request body could not be read: {exc}") from exc
    return b"".join(chunks)


class Gateway:
    """Serves ``/v1/responses``, ``/v1/chat/completions`` and ``/v1/models``."""

    def __init__(self, router: Router, keepalive: KeepAlive, max_body: int) -> None:
        self.router = router
        self.keepalive = keepalive
        self.max_body = max_body
        self.created = int(time.time())
        self._routes: dict[tuple[str, str], Callable[[http.Request], Awaitable[Any]]] = {
            ("POST", "/v1/responses"): self.responses,
            ("POST", "/v1/chat/completions"): self.chat,
            ("GET", "/v1/models"): self.models,
        }

    async def handle(self, request: http.Request) -> http.Reply:
        try:
            route = self._routes.get((request.method, request.path))
            if route is None:
                route = self._not_routed(request)
            return await route(request)
        except GatewayError as exc:
            return error_response(exc)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            return error_response(InternalError("The gateway failed unexpectedly."))

    def _not_routed(self, request: http.Request) -> Callable[[http.Request], Awaitable[Any]]:
        path = request.path
        if path.startswith("/v1/responses/"):
            raise NotFound(NO_STORED)
        if path in ("/v1/responses", "/v1/chat/completions", "/v1/models"):
            raise MethodNotAllowed(f"Method {request.method} is not allowed on {path}.")
        raise NotFound(f"Unknown path: {request.method} {path}.")

    async def models(self, request: http.Request) -> http.Response:
        ids = self.router.model_ids()
        if "default" not in ids:
            ids.append("default")
        data = [
            {"id": m, "object": "model", "created": self.created, "owned_by": "gateway"}
            for m in ids
        ]
        return http.Response(body=orjson.dumps({"object": "list", "data": data}), content_type=JSON)

    # ---- /v1/chat/completions: pass-through -------------------------------------------

    async def _read(self, request: http.Request, decoder: Any) -> tuple[bytes, Any, Route]:
        """The body, decoded, and the deployment of the model it names."""
        body = await read_body(request, self.max_body)
        try:
            doc = decoder.decode(body)
        except ValueError as exc:  # msgspec's errors and UnicodeDecodeError
            raise decode_error(exc, body) from exc
        route = await self.router.resolve(doc.model)
        limit = route.dep.max_body_bytes
        if len(body) > limit:
            raise RequestTooLarge(
                f"The request body is {len(body)} bytes; the limit is {limit} bytes."
            )
        return body, doc, route

    async def chat(self, request: http.Request) -> http.Reply:
        body, view, route = await self._read(request, PASS_THROUGH_DECODER)
        if route.upstream_model != view.model:
            doc = orjson.loads(body)
            doc["model"] = route.upstream_model
            body = orjson.dumps(doc)
        resp = await route.upstream.chat(body)
        del body  # not needed while the answer streams
        try:
            ctype = resp.content_type.decode("latin-1") or JSON
            if not ctype.startswith("text/event-stream"):
                return http.Response(body=await resp.read(), content_type=ctype)
            out = http.StreamResponse(headers=SSE_HEADERS)
            await out.prepare(request)
            try:
                while data := await resp.read_some():
                    await out.write(data)
            except GatewayError as exc:
                # Bytes already went out: cut the connection, so that the client
                # sees a broken stream rather than one that looks complete.
                log.warning("chat stream from upstream broke: %s", exc.message)
                if request.transport is not None:
                    request.transport.close()
                return out
        finally:
            resp.release()
        await out.write_eof()
        return out

    # ---- /v1/responses ----------------------------------------------------------------

    async def responses(self, request: http.Request) -> http.Reply:
        body, req, route = await self._read(request, REQUEST_DECODER)
        stream = bool(req.stream)
        pump = stream and route.dep.supports.streaming
        chat, echo = to_chat_request(req, route.dep, route.upstream_model, stream=pump)
        base = output.response_base(output.new_id("resp_"), int(time.time()), req.model, echo)
        payload = orjson.dumps(chat)
        # This frame lives as long as the stream: keep only what the stream needs.
        del body, req, chat, echo
        upstream = await route.upstream.chat(payload)
        del payload
        try:
            if stream:
                return await self._stream(request, upstream, Transcoder(base), pump)
            data = await upstream.read()
        finally:
            upstream.release()
        try:
            completion = COMPLETION_DECODER.decode(data)
        except ValueError as exc:  # msgspec's errors and UnicodeDecodeError
            raise UpstreamBadResponse(
                f"The upstream's answer is not a chat completion: {exc}"
            ) from exc
        result = to_response(completion, base, now=time.time)
        return http.Response(body=orjson.dumps(result), content_type=JSON)

    async def _stream(
        self, request: http.Request, upstream: Response, tx: Transcoder, pump: bool
    ) -> http.StreamResponse:
        out = http.StreamResponse(headers=SSE_HEADERS)
        await out.prepare(request)
        frames = tx.start()
        try:
            if pump:
                last = await self._pump(out, tx, upstream, frames)
            else:
                await out.write(frames)
                last = tx.complete(await upstream.read())
        except GatewayError as exc:
            last = tx.fail(exc.message)
        except ConnectionError:
            raise  # the client is gone: nothing can be written any more
        except Exception:
            # A bug of ours, after the 200 went out: still end the stream honestly.
            log.exception("stream failed unexpectedly")
            last = tx.fail("The gateway failed unexpectedly.")
        await out.write_eof(last)  # the terminal event and the end of the body: one write
        return out

    async def _pump(
        self, out: http.StreamResponse, tx: Transcoder, upstream: Response, frames: bytes
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
        watch = self.keepalive.watch(out)
        try:
            while True:
                if frames and (not upstream.ready() or len(frames) > WRITE_AHEAD):
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
            self.keepalive.unwatch(watch)
