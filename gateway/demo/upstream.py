"""The bundled demo upstream: a FAKE OpenAI-compatible chat-completions server.

There is no model here. Answers are deterministic strings built from the
request (their rules and bytes are in ``gateway.demo.answers``), so the gateway
can be run (``make run``), tested and benchmarked without a GPU. This module is
the server around them: its routes, its modes and its command line.

* ``GET /v1/models`` lists the configured model ids (``owned_by: "demo"``).
* ``POST /v1/chat/completions``, streaming or not, shaped like vLLM's output:
  a role chunk, N content deltas, a finish chunk, an optional usage chunk
  (``stream_options.include_usage``), then ``data: [DONE]``.
* ``GET /demo/stats`` (demo only, for the benchmarks): ``{"connections_accepted": N,
  "connections_open": N, "streams_cut": N}``, the TCP connections accepted since
  start and open now, when served by ``make_server`` (``python -m gateway.demo``;
  0 under ``make_handler``, which cannot see them), and the streams whose client
  went away before their end; with ``--faults`` also ``streams``, how each stream
  ended by its ``X-Request-Id`` (``gateway.demo.faults``).
* ``--faults``: fault switches at ``/demo/fault`` (``gateway.demo.faults``).

``script`` mode (``gateway/demo/script.py``; ``--script FILE``) answers from a
script of turns (reasoning, text, tool calls), chosen by how many tool results
the request holds: an agent such as Codex CLI can be driven through a task. A
compaction's request (the gateway's default prompt last) is answered with the
demo's summary in every mode but ``fixed`` (``answers.compaction_summary``).

``reasoning`` mode (``--reasoning [reasoning_content|reasoning]``, what ``make run``
serves): each answer streams a fake reasoning text first (``demo/reasoning.py``).

``fixed`` mode (benchmarks) ignores the prompt, tools and limits, and serves
bytes prebuilt at start-up, so this process is never the bottleneck; its
answer is padded to ``text_words`` (default: ``deltas``) words, so it streams
exactly ``deltas`` content chunks (with ``reasoning``: ``deltas`` reasoning chunks,
then one content chunk).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from gateway.demo import reasoning as thinking
from gateway.demo import script
from gateway.demo.answers import (
    FIXED_PROMPT_TOKENS,
    FIXED_TEXT,
    BadRequest,
    DemoAnswer,
    Json,
    asks_compaction,
    completion_body,
    content_text,
    pad_words,
    plan_answer,
    split_pieces,
    stream_frames,
)
from gateway.demo.faults import Faults

JSON_HEADERS = {"Content-Type": "application/json"}
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class DemoOptions:
    """The demo's knobs; ``received`` records ``{"body", "headers"}`` per chat request."""

    models: tuple[str, ...] = ("demo",)
    deltas: int = 16  # content chunks per answer, at most
    text_words: int = 0  # pad / cut the answer to this many words (0: natural length)
    delay_ms: float = 0.0  # pause between streamed chunks
    fixed: bool = False  # prompt-independent prebuilt answer (benchmarks)
    reasoning: str = ""  # "": none; else the field reasoning streams in (demo/reasoning.py)
    record: bool = True  # append each decoded chat request to ``received``
    faults: bool = False  # serve the fault switches of ``gateway.demo.faults``
    script: list[dict[str, Any]] | None = None  # scripted turns (``script.py``), or None
    received: list[dict[str, Any]] = field(default_factory=list)


def error_response(status: int, message: str, param: str | None, code: str | None) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    err = {"message": message, "type": kind, "param": param, "code": code}
    return web.Response(status=status, body=orjson.dumps({"error": err}), headers=JSON_HEADERS)


# -- the handler -------------------------------------------------------------


class _Demo:
    """Request dispatch plus the bytes that never change (models list, fixed answers)."""

    __slots__ = (
        *("opts", "models_body", "fixed", "count", "delay"),
        *("accepted", "lost", "cut", "faults"),
    )

    def __init__(self, opts: DemoOptions) -> None:
        self.opts = opts
        self.count = 0
        self.accepted = 0  # connections (counted by ``_CountingServer``)
        self.lost = 0  # and those closed since
        self.cut = 0  # streams whose client went away
        self.faults: Faults | None = Faults() if opts.faults else None
        self.delay = opts.delay_ms / 1000.0
        created = int(time.time())
        data = [
            {"id": m, "object": "model", "created": created, "owned_by": "demo"}
            for m in opts.models
        ]
        self.models_body = orjson.dumps({"object": "list", "data": data})
        # model -> (non-streaming body, frames without usage, frames with usage)
        self.fixed: dict[str, tuple[bytes, list[bytes], list[bytes]]] = {}
        if opts.fixed:
            text = pad_words(FIXED_TEXT, opts.text_words or opts.deltas)
            pieces = split_pieces(text, opts.deltas)
            answer = DemoAnswer(pieces, "stop", FIXED_PROMPT_TOKENS)
            if opts.reasoning:  # the deltas are reasoning, then one piece of text
                answer.reasoning, answer.pieces = pieces, ["Done."]
                answer.reasoning_field = opts.reasoning
            cid = "chatcmpl-demofixed"
            for m in opts.models:
                plain, counted = (stream_frames(answer, cid, created, m, u) for u in (False, True))
                if self.delay <= 0:  # one prebuilt write per answer (see ``stream``)
                    plain, counted = [b"".join(plain)], [b"".join(counted)]
                self.fixed[m] = (completion_body(answer, cid, created, m), plain, counted)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if self.faults is not None and (reply := await self.faults.intercept(request)):
            return reply
        path = request.path
        if path == "/v1/chat/completions":
            if request.method != "POST":
                return error_response(405, "Use POST for /v1/chat/completions", None, None)
            try:
                return await self.chat(request)
            except BadRequest as err:
                return error_response(err.status, str(err), err.param, err.code)
        if path == "/v1/models" and request.method == "GET":
            return web.Response(body=self.models_body, headers=JSON_HEADERS)
        if path == "/demo/stats" and request.method == "GET":
            stats: Json = {
                "connections_accepted": self.accepted,
                "connections_open": self.accepted - self.lost,
                "streams_cut": self.cut,
            }
            if self.faults is not None:
                stats["streams"] = self.faults.streams
            return web.Response(body=orjson.dumps(stats), headers=JSON_HEADERS)
        return error_response(404, f"No route for {request.method} {path}", None, None)

    async def chat(self, request: web.BaseRequest) -> web.StreamResponse:
        body = self.decode(await request.read(), request)
        model = body.get("model")
        if not isinstance(model, str):
            message = "Missing required parameter: 'model'."
            raise BadRequest(400, message, "model", "missing_required_parameter")
        if model not in self.opts.models:
            message = f"The model '{model}' does not exist or you do not have access to it."
            raise BadRequest(404, message, "model", "model_not_found")
        messages = body.get("messages")
        if not (isinstance(messages, list) and messages and all(type(m) is dict for m in messages)):
            message = "'messages' must be a non-empty list of objects"
            raise BadRequest(400, message, "messages", "invalid_type")
        stream = body.get("stream") is True
        options = body.get("stream_options")
        with_usage = isinstance(options, dict) and options.get("include_usage") is True
        if self.opts.script is not None and not asks_compaction(messages):  # demo/script.py
            self.count += 1
            cid, created, turns = f"chatcmpl-demo{self.count}", int(time.time()), self.opts.script
            if not stream:
                whole_body = script.completion_body(turns, body, cid, created)
                return web.Response(body=whole_body, headers=JSON_HEADERS)
            return await self.stream(request, script.stream_frames(turns, body, cid, created))
        if self.opts.fixed:
            whole, plain, counted = self.fixed[model]
            if not stream:
                return web.Response(body=whole, headers=JSON_HEADERS)
            return await self.stream(request, counted if with_usage else plain)
        self.count += 1
        answer = plan_answer(body, messages, self.opts.deltas, self.opts.text_words, self.count)
        if self.opts.reasoning and not thinking.thinking_off(body):
            said = content_text(messages[-1].get("content"))[0]
            text = thinking.thought(messages, said)
            answer.reasoning = split_pieces(text, self.opts.deltas)
            answer.reasoning_field = self.opts.reasoning
        cid, created = f"chatcmpl-demo{self.count}", int(time.time())
        if not stream:
            return web.Response(
                body=completion_body(answer, cid, created, model), headers=JSON_HEADERS
            )
        return await self.stream(request, stream_frames(answer, cid, created, model, with_usage))

    def decode(self, raw: bytes, request: web.BaseRequest) -> Json:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            message = f"We could not parse the JSON body of your request: {exc}"
            raise BadRequest(400, message, None, None) from exc
        if not isinstance(body, dict):
            raise BadRequest(400, "The request body must be a JSON object", None, None)
        if self.opts.record:
            headers = {k.lower(): v for k, v in request.headers.items()}
            self.opts.received.append({"body": body, "headers": headers})
        return body

    async def stream(self, request: web.BaseRequest, frames: list[bytes]) -> web.StreamResponse:
        resp = web.StreamResponse(headers=SSE_HEADERS)
        rid = self.faults.began(request) if self.faults is not None else None
        try:
            await resp.prepare(request)
            if self.delay <= 0:
                await resp.write(b"".join(frames))
            else:
                await resp.write(frames[0])
                for frame in frames[1:]:
                    await asyncio.sleep(self.delay)
                    await resp.write(frame)
            await resp.write_eof()
        except ConnectionError:
            self.cut += 1  # the client went away; nothing left to do
            if self.faults is not None:
                self.faults.ended(rid, "cut")
        except asyncio.CancelledError:
            if self.faults is not None:
                self.faults.ended(rid, "cut")
            raise
        else:
            if self.faults is not None:
                self.faults.ended(rid, "completed")
        return resp


def make_handler(options: DemoOptions) -> Handler:
    """The low-level handler, for ``web.Server`` or pytest-aiohttp's ``aiohttp_raw_server``."""
    return _Demo(options).handle


class _CountingServer(web.Server):
    """aiohttp's low-level server, counting the connections it accepts."""

    def __init__(self, demo: _Demo, **kwargs: Any) -> None:
        super().__init__(demo.handle, **kwargs)
        self.demo = demo

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.demo.accepted += 1

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self.demo.lost += 1


def make_server(options: DemoOptions) -> web.Server:
    """The demo as an aiohttp low-level server (a protocol factory), with the
    connection count of ``GET /demo/stats``; needs a running event loop."""
    return _CountingServer(_Demo(options), access_log=None)


# -- CLI ---------------------------------------------------------------------


async def serve(options: DemoOptions, host: str, port: int) -> None:
    server = make_server(options)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = runner.addresses[0][1] if runner.addresses else port
    print(
        f"demo upstream (FAKE chat-completions server, not a model) on http://{host}:{bound}/v1"
        f" models={','.join(options.models)} deltas={options.deltas} fixed={options.fixed}"
        f" reasoning={options.reasoning or 'off'}",
        file=sys.stderr,
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gateway.demo", description="FAKE chat-completions server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", action="append", help="model id to serve (repeatable; default: demo)")
    p.add_argument("--deltas", type=int, default=16, help="content chunks per streamed answer")
    p.add_argument("--text-words", type=int, default=0, help="answer length in words (0: natural)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="delay between streamed chunks")
    p.add_argument("--fixed", action="store_true", help="prompt-independent prebuilt answer")
    p.add_argument("--faults", action="store_true", help="fault switches at /demo/fault")
    p.add_argument("--script", metavar="FILE", help="answer from a JSON script of turns")
    p.add_argument(
        "--reasoning",
        nargs="?",
        const="reasoning_content",
        default="",
        choices=thinking.FIELDS,
        help="stream a reasoning text first, in this field (default reasoning_content)",
    )
    args = p.parse_args(argv)
    if args.deltas < 1 or args.text_words < 0 or args.delay_ms < 0:
        p.error("--deltas must be >= 1; --text-words and --delay-ms must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    import uvloop

    args = parse_args(argv)
    turns = None
    if args.script:
        try:
            with open(args.script, "rb") as f:
                turns = script.parse_script(f.read())
        except (OSError, ValueError) as exc:
            print(f"gateway.demo: --script {args.script}: {exc}", file=sys.stderr)
            return 2
    options = DemoOptions(
        models=tuple(args.model or ["demo"]),
        deltas=args.deltas,
        text_words=args.text_words,
        delay_ms=args.delay_ms,
        fixed=args.fixed,
        faults=args.faults,
        reasoning=args.reasoning,
        record=False,  # a long-running server must not grow without bound
        script=turns,
    )
    uvloop.run(serve(options, args.host, args.port))
    return 0
