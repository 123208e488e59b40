"""The same handler on aiohttp's low-level server (``serve --http aiohttp``).

aiohttp's ``web.Server`` is the battle-tested reference the lean server
(``gateway.http.server``) is compared with: an operator who distrusts our HTTP
code picks this one. It gets the same bounds where aiohttp has them (request
line, header line and count, keep-alive), and this module adds the ones it
lacks: the connection cap (503), Host (400), Transfer-Encoding (400) and
Expect (417) checks, a body that stalls (408), all answered in the OpenAI
envelope. aiohttp answers its own parse errors (400, text; logged once per
burst, as the lean server's refusals); it has no timeout for a slow request head.

``AiohttpRequest`` gives a handler what ``messages.Incoming`` lists; answers go
back as aiohttp's ``web.Response`` / ``web.StreamResponse``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.config import Http
from gateway.errors import (
    ExpectationFailed,
    GatewayError,
    InvalidRequest,
    Overloaded,
    RequestTimeout,
    body_too_large,
)
from gateway.http.messages import (
    CONTINUE,
    UPGRADED,
    Handler,
    Headers,
    Response,
    StreamResponse,
    Upgraded,
    WebSocket,
    handshake_key,
    unreadable,
    wants_websocket,
)
from gateway.http.refusals import RefusalLog
from gateway.limits import UNREAD_BODY_LINGER, WEBSOCKET_CLOSE_WAIT

log = logging.getLogger("gateway")


class _ServerLog(logging.LoggerAdapter):
    """aiohttp's server logger, but a request aiohttp could not parse is noted in the
    refusal log (one line per burst, as on the lean server), not logged with a
    traceback each time: a flood of junk must not become a flood of log lines."""

    def __init__(self, refusals: RefusalLog) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self.refusals = refusals

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            what = (exc.message.splitlines() or ["?"])[0].rstrip(" :")
            self.refusals.note("aiohttp", f"Malformed HTTP request: {what}.")
            return
        super().exception(msg, *args, exc_info=exc_info, **kw)


class AiohttpBody:
    """``request.content`` over aiohttp's StreamReader, with the lean body's contract."""

    __slots__ = ("_request", "_timeout", "_expect")

    def __init__(self, request: web.BaseRequest, timeout: float, expect: bool) -> None:
        self._request = request
        self._timeout = timeout
        self._expect = expect

    async def read(self, limit: int) -> bytes:
        request = self._request
        if self._expect:
            self._expect = False
            await request.writer.write(CONTINUE)
        content = request.content
        parts: list[bytes] = []
        total = 0
        try:
            while True:
                data = await asyncio.wait_for(content.readany(), self._timeout)
                if not data:
                    return b"".join(parts)
                total += len(data)
                if total > limit:
                    raise body_too_large(limit)
                parts.append(data)
        except TimeoutError as exc:
            raise RequestTimeout("The request body stopped arriving before its end.") from exc
        except HttpProcessingError as exc:
            raise unreadable("the HTTP framing is malformed") from exc


class AiohttpStream:
    """A prepared ``web.StreamResponse``: the server's side of a ``StreamResponse``."""

    __slots__ = ("response",)

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response

    async def write(self, data: bytes) -> None:
        await self.response.write(data)

    async def write_eof(self, data: bytes) -> None:
        await self.response.write_eof(data)


class AiohttpWebSocket:
    """A prepared ``web.WebSocketResponse``: the server's side of a ``messages.WebSocket``.
    aiohttp answers pings itself (autoping); the client's close is answered here."""

    __slots__ = ("response", "protocol", "done")

    def __init__(self, response: web.WebSocketResponse, protocol: object) -> None:
        self.response = response
        self.protocol = protocol  # aiohttp's connection (its RequestHandler)
        self.done = False  # receive returned None (aiohttp raises after a few more reads)

    async def receive(self) -> bytes | None:
        while not self.done:
            message = await self.response.receive()
            kind = message.type
            if kind is WSMsgType.TEXT:
                return message.data.encode()
            if kind is WSMsgType.BINARY:
                return message.data
            if kind is WSMsgType.CLOSE:  # answered with its own code, as the lean server does
                code = message.data if 1000 <= message.data < 5000 else 1000
                await self.response.close(code=1000 if code == 1005 else code, drain=False)
                self.done = True
            elif kind in _WS_DONE:
                self.done = True
            # (pings and pongs: answered and noted by aiohttp)
        return None

    async def send(self, data: bytes) -> None:
        response = self.response
        if response.closed:
            raise ConnectionResetError("The WebSocket is closed.")
        await response.send_str(data.decode())

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.response.close(code=code, message=reason.encode())

    async def ended(self, reply: object) -> web.WebSocketResponse:
        """The handler is done: close the socket if it is open (1011 when the handler
        failed or returned anything but ``UPGRADED``)."""
        if reply is not UPGRADED:
            if reply is not None:
                log.error("a WebSocket accepted, then %s returned", type(reply).__name__)
            await self.close(1011)
        else:
            await self.close()
        return self.response


SOCKETS_POLL = 0.01  # how often the shutdown looks whether the WebSockets have ended

_WS_DONE = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


class AiohttpRequest:
    """An aiohttp request as a handler sees it (``messages.Incoming``)."""

    __slots__ = (
        "method", "path", "content_length", "headers", "content", "_request", "stream", "socket",
        "_server", "close",
    )  # fmt: skip

    def __init__(self, request: web.BaseRequest, server: AiohttpServer) -> None:
        self._request = request
        self._server = server
        body_timeout = server.limits.body_timeout
        self.socket: AiohttpWebSocket | None = None
        self.method = request.method
        self.path = request.path
        self.content_length = request.content_length
        self.headers = Headers([(k.lower(), v) for k, v in request.raw_headers])
        expect = self.headers.get("expect")
        continue_ = expect is not None and request.version >= (1, 1)
        self.content = AiohttpBody(request, body_timeout, continue_)
        self.stream: AiohttpStream | None = None
        # RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing:
        # answered, then the connection closes (aiohttp would keep it alive).
        self.close = request.version < (1, 1) and "transfer-encoding" in self.headers

    async def open_stream(self, status: int, headers: dict[str, str] | None) -> AiohttpStream:
        response = web.StreamResponse(status=status, headers=headers)
        if self.close:
            response.force_close()
        await response.prepare(self._request)
        self.stream = AiohttpStream(response)
        return self.stream

    def abort(self) -> None:
        transport = self._request.transport
        if transport is not None:
            transport.close()

    def detach(self) -> bool:
        return False  # aiohttp cancels the handler of a client that went away

    def wants_websocket(self) -> bool:
        return wants_websocket(self.method, self.headers)

    async def accept_websocket(self, headers: dict[str, str] | None = None) -> WebSocket:
        request = self._request
        handshake_key(self.method, request.version < (1, 1), self.headers)
        server = self._server
        limits = server.limits
        response = web.WebSocketResponse(
            timeout=WEBSOCKET_CLOSE_WAIT,  # (for the client's close frame)
            heartbeat=limits.websocket_ping_interval,
            compress=True,
            max_msg_size=server.max_body,
            autoclose=False,
        )
        # aiohttp waits half the heartbeat for a pong, and has no setting for it.
        response._pong_heartbeat = limits.websocket_ping_timeout
        if headers:
            response.headers.update(headers)
        await response.prepare(request)
        self.socket = AiohttpWebSocket(response, request.protocol)
        server.sockets.add(self.socket)
        return self.socket


def _refusal(request: web.BaseRequest, headers: Headers) -> GatewayError | None:
    """What the lean server refuses at the head and aiohttp does not."""
    hosts = len(headers.getall("host"))
    if hosts != 1 and (hosts or request.version >= (1, 1)):
        return InvalidRequest("An HTTP/1.1 request needs exactly one Host header.")
    expect = headers.get("expect")
    if expect is not None and expect.lower() != "100-continue":
        return ExpectationFailed("Only 'Expect: 100-continue' is understood.")
    codings = headers.getall("transfer-encoding")
    if codings and (len(codings) > 1 or codings[0].lower() != "chunked"):
        # aiohttp reads ``gzip, chunked`` as chunked and an empty one as no body.
        return InvalidRequest("Only 'Transfer-Encoding: chunked' is understood.")
    return None


def _as_aiohttp(resp: Response) -> web.Response:
    headers = dict(resp.headers or {})
    if resp.content_type:
        headers["Content-Type"] = resp.content_type
    return web.Response(status=resp.status, body=resp.body, headers=headers)


class AiohttpServer:
    """The protocol factory for ``loop.create_server`` and ``shutdown``, like
    ``gateway.http.server.Server``, over aiohttp's ``web.Server``."""

    def __init__(self, handler: Handler, *, max_body: int, limits: Http | None = None) -> None:
        self.handler = handler
        self.max_body = max_body
        self.limits = limits = limits or Http()
        self.refusals = RefusalLog()
        self.sockets: set[AiohttpWebSocket] = set()  # accepted, their handlers running
        self.web = web.Server(
            self._handle,
            handler_cancellation=True,  # a client that goes away cancels its handler
            max_line_size=limits.max_request_line,
            max_field_size=limits.max_header_line,
            max_headers=limits.max_headers,
            keepalive_timeout=limits.keepalive_timeout,
            lingering_time=UNREAD_BODY_LINGER,  # (aiohttp's 10 s holds a refused client)
            # A compressed body reaches the handler as sent (api.body decodes it, bounded,
            # on both servers); aiohttp would inflate gzip and deflate bodies itself, and
            # refuse zstd ones without backports.zstd.
            auto_decompress=False,
            access_log=None,
            logger=_ServerLog(self.refusals),
        )

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self.web.connections) >= self.limits.max_connections:
            return _Refuse(self)
        return self.web()

    def begin_drain(self) -> None:
        """Serve no new request: close idle connections now, busy ones after their answer.
        WebSockets are left to their handlers (aiohttp would stop reading them)."""
        upgraded = {socket.protocol for socket in self.sockets}
        for conn in list(self.web.connections):
            if conn not in upgraded:
                conn.close()

    async def shutdown(self, timeout: float) -> None:
        """As aiohttp's, but the WebSockets first: a connection aiohttp shuts down reads
        nothing more, so the client's answer to a close would never be seen (each close
        would wait out ``WEBSOCKET_CLOSE_WAIT``). Their handlers close them for the drain;
        those still open when ``timeout`` is up are closed with 1001 (aiohttp would cut
        them), so that their handlers end. Then aiohttp's, for what is left of it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.sockets and loop.time() < deadline:
            await asyncio.sleep(SOCKETS_POLL)
        await asyncio.gather(*(socket.close(1001) for socket in list(self.sockets)))
        await self.web.shutdown(max(deadline - loop.time(), SOCKETS_POLL))

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        req = AiohttpRequest(request, self)
        refusal = _refusal(request, req.headers)
        if refusal is not None:
            self.refusals.note(type(refusal).__name__, refusal.message)
            answer = _as_aiohttp(Response.error(refusal))
            answer.force_close()
            return answer
        try:
            try:
                reply = await self.handler(req)
            except Exception:
                if req.socket is None:
                    raise
                log.exception("unhandled error on %s %s", req.method, req.path)
                return await req.socket.ended(None)
            finally:
                if req.socket is not None:
                    self.sockets.discard(req.socket)
            if req.socket is not None:
                return await req.socket.ended(reply)
            if isinstance(reply, StreamResponse):
                if not reply.prepared:
                    await reply.prepare(req)
                await reply.write_eof()
                assert req.stream is not None
                return req.stream.response
        except GatewayError as exc:  # (a handler normally answers its own errors)
            answer = _as_aiohttp(Response.error(exc))
            answer.force_close()
            return answer
        except ConnectionError:
            # The client is gone: end as aiohttp's own handler cancellation does. Raised
            # on, aiohttp would log "Error handling request" and make a 500 for it.
            raise asyncio.CancelledError from None
        if isinstance(reply, Upgraded):
            raise RuntimeError("a handler returned UPGRADED without a WebSocket")
        answer = _as_aiohttp(reply)
        if req.close:
            answer.force_close()
        return answer


class _Refuse(asyncio.Protocol):
    """A connection beyond the cap: 503 and close."""

    def __init__(self, server: AiohttpServer) -> None:
        self.server = server

    def connection_made(self, transport: Any) -> None:
        exc = Overloaded("The gateway holds as many connections as it may; try again.")
        self.server.refusals.note("connections", exc.message)
        transport.write(Response.error(exc).encode(False, False, False))
        transport.close()
