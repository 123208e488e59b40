"""Fault switches for the demo upstream (``python -m gateway.demo --faults``): tests
and the soak make a real upstream process misbehave on demand, at the network
boundary, without a line of the gateway knowing.

``POST /demo/fault`` with a JSON object sets the fault of the next chat requests;
``DELETE /demo/fault`` clears it; ``GET /demo/fault`` reports what was served::

    {"mode": "status", "status": 503, "retry_after": "2"}   answer with this status
    {"mode": "reset"}            close the connection before any answer byte
    {"mode": "garbage"}          answer bytes that are not HTTP, then close
    {"mode": "stall-headers", "seconds": 5}   wait before the answer begins
    {"mode": "stall-chunks", "after": 2, "seconds": 5}   stream ``after`` chunks,
                                 wait, then go on
    {"mode": "die", "after": 2}  stream ``after`` chunks, then close the connection
    {"mode": "die", "after": 2, "exit": true}   ... then the whole process exits
    "times": N                   (any mode) only the next N chat requests; default all

A mid-stream fault streams its own answer (a role chunk, then one word per
chunk, ``chunk_delay`` seconds apart), so the demo's answer rules stay as they are.
Stats: ``chat`` (chat requests seen), ``faulted`` (those a fault took), ``cut``
(faulted streams whose client went away before their end).

The demo's own streams are also recorded by their ``X-Request-Id`` (``GET /demo/stats``
shows them under ``streams``): ``[how, when]``, how being ``"open"`` (still being
written), ``"completed"`` (its last byte written) or ``"cut"`` (the peer went away
before), when the wall-clock time (``time.time()``) it got so. At most
``MAX_RECORDED`` ids are kept, the oldest go first; the soak (``bench/soak.py``)
finds there how the stream of each client that left ended upstream.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import orjson
from aiohttp import web

MODES = ("status", "reset", "garbage", "stall-headers", "stall-chunks", "die")
JSON_HEADERS = {"Content-Type": "application/json"}
GARBAGE = b"\x00\xffthis is not HTTP\r\n\r\n"
MAX_RECORDED = 100_000  # stream endings kept by request id (a few MB at most)


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    doc = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 0}
    return b"data: " + orjson.dumps({**doc, "model": "demo", "choices": [choice]}) + b"\n\n"


class Faults:
    """The fault of the next chat requests, and what was served."""

    __slots__ = ("fault", "left", "chat", "faulted", "cut", "streams")

    def __init__(self) -> None:
        self.fault: dict[str, Any] | None = None
        self.left = -1  # requests the fault still takes (-1: every one)
        self.chat = 0
        self.faulted = 0
        self.cut = 0
        self.streams: dict[str, list[Any]] = {}  # request id -> [how, when]

    def began(self, request: web.BaseRequest) -> str | None:
        """Record a demo stream as open under its request id (returned), if it has one."""
        rid = request.headers.get("X-Request-Id")
        if not rid:
            return None
        self.streams.pop(rid, None)  # a reused id counts as the newest
        self.streams[rid] = ["open", time.time()]
        if len(self.streams) > MAX_RECORDED:
            del self.streams[next(iter(self.streams))]
        return rid

    def ended(self, rid: str | None, how: str) -> None:
        """``how`` the stream of ``rid`` ended: ``"completed"`` or ``"cut"``."""
        if rid is not None and rid in self.streams:
            self.streams[rid] = [how, time.time()]

    async def intercept(self, request: web.BaseRequest) -> web.StreamResponse | None:
        """The answer of a faulted request, or None: the demo answers as usual."""
        if request.path == "/demo/fault":
            return await self._control(request)
        if request.path != "/v1/chat/completions":
            return None
        self.chat += 1
        fault = self.fault
        if fault is None:
            return None
        if self.left == 0:
            return None
        if self.left > 0:
            self.left -= 1
        self.faulted += 1
        return await self._apply(request, fault)

    async def _control(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "POST":
            fault = orjson.loads(await request.read())
            if not isinstance(fault, dict) or fault.get("mode") not in MODES:
                body = {"error": {"message": f"mode: one of {', '.join(MODES)}"}}
                return web.Response(status=400, body=orjson.dumps(body), headers=JSON_HEADERS)
            self.fault = fault
            self.left = int(fault.get("times", -1))
        elif request.method == "DELETE":
            self.fault = None
            self.left = -1
        stats = {"fault": self.fault, "chat": self.chat, "faulted": self.faulted, "cut": self.cut}
        return web.Response(body=orjson.dumps(stats), headers=JSON_HEADERS)

    async def _apply(self, request: web.BaseRequest, fault: dict[str, Any]) -> Any:
        mode = fault["mode"]
        await request.read()
        transport = request.transport
        if mode == "status":
            status = int(fault.get("status", 500))
            headers = dict(JSON_HEADERS)
            if fault.get("retry_after") is not None:
                headers["Retry-After"] = str(fault["retry_after"])
            message = fault.get("message", f"demo fault: HTTP {status}")
            kind = "server_error" if status >= 500 else "invalid_request_error"
            err = {"message": message, "type": kind, "param": None, "code": fault.get("code")}
            return web.Response(status=status, body=orjson.dumps({"error": err}), headers=headers)
        if mode == "stall-headers":
            await asyncio.sleep(float(fault.get("seconds", 30)))
            return None  # then the usual answer
        if mode in ("reset", "garbage"):
            if transport is not None:
                if mode == "garbage":
                    transport.write(GARBAGE)
                transport.close()
            raise asyncio.CancelledError  # (aiohttp drops the request quietly)
        try:
            return await self._stream(request, fault)
        except ConnectionError:
            self.cut += 1
            raise asyncio.CancelledError from None

    async def _stream(self, request: web.BaseRequest, fault: dict[str, Any]) -> Any:
        after = int(fault.get("after", 2))
        delay = float(fault.get("chunk_delay", 0.01))
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        await out.write(_chunk({"role": "assistant", "content": ""}))
        for i in range(after):
            await asyncio.sleep(delay)
            await out.write(_chunk({"content": f"word{i} "}))
        if fault["mode"] == "die":
            if fault.get("exit"):
                os._exit(3)
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError
        await asyncio.sleep(float(fault.get("seconds", 30)))
        await out.write(_chunk({"content": "late"}))
        await out.write(_chunk({}, "stop") + b"data: [DONE]\n\n")
        await out.write_eof()
        return out
