"""The bundled demo upstream: a FAKE OpenAI-compatible chat-completions server.

There is no model here. Answers are deterministic strings built from the
request, so the gateway can be run (``make run``), tested and benchmarked
without a GPU:

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

Answer rules, first match wins:

1. ``tools`` present, last message from the user, ``tool_choice`` not
   ``"none"``: call the chosen (or first) tool with arguments generated from
   its JSON schema; ``finish_reason: "tool_calls"``.
2. ``response_format`` ``json_schema``: a JSON document generated from the
   schema; ``json_object``: ``{"answer": "demo"}``.
3. Last message from a tool: ``"The tool said: <content>"``.
4. Otherwise a greeting that echoes the last user text and counts its images.

Prose is cut into at most ``deltas`` pieces on word boundaries; JSON answers
and tool arguments by characters. ``max_tokens`` / ``max_completion_tokens``
below the piece count truncate the answer with ``finish_reason: "length"``.
Usage: prompt tokens are whitespace words in all messages, completion tokens are pieces.

``script`` mode (``gateway/demo/script.py``; ``--script FILE``) answers from a
script of turns (reasoning, text, tool calls), chosen by how many tool results
the request holds: an agent such as Codex CLI can be driven through a task.

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
import re
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
from gateway.demo.faults import Faults

BASE_TEXT = "Hello from the demo upstream (a fake model)."
FIXED_TEXT = BASE_TEXT + " This is the fixed benchmark answer."
FIXED_PROMPT_TOKENS = 8
ECHO_LIMIT = 200  # characters of user / tool text echoed back
FILLER = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")
JSON_HEADERS = {"Content-Type": "application/json"}
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
DONE_FRAME = b"data: [DONE]\n\n"
_TOKEN = re.compile(r"\s*\S+\s*|\s+")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
Json = dict[str, Any]


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


@dataclass(slots=True)
class DemoAnswer:
    pieces: list[str]
    finish_reason: str
    prompt_tokens: int
    tool: tuple[str, str] | None = None  # (call id, function name)
    reasoning: list[str] = field(default_factory=list)  # pieces, streamed before the answer
    reasoning_field: str = "reasoning_content"


class BadRequest(Exception):
    def __init__(self, status: int, message: str, param: str | None, code: str | None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


def error_response(status: int, message: str, param: str | None, code: str | None) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    err = {"message": message, "type": kind, "param": param, "code": code}
    return web.Response(status=status, body=orjson.dumps({"error": err}), headers=JSON_HEADERS)


# -- text generation ---------------------------------------------------------


def pad_words(text: str, words: int) -> str:
    if words <= 0:
        return text
    have = text.split()
    extra = [FILLER[i % len(FILLER)] for i in range(max(0, words - len(have)))]
    return " ".join((have + extra)[:words])


def split_pieces(text: str, n: int, words: bool = True) -> list[str]:
    """Cut ``text`` into at most ``n`` contiguous pieces, on word boundaries or by characters."""
    tokens: list[str] = _TOKEN.findall(text) if words else list(text)
    n = min(n, len(tokens))
    size = len(tokens)
    return ["".join(tokens[i * size // n : (i + 1) * size // n]) for i in range(n)]


def content_text(content: Any) -> tuple[str, int]:
    """(joined text, image count) of a chat message ``content``."""
    if isinstance(content, str):
        return content, 0
    texts: list[str] = []
    images = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "image_url":
                images += 1
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
    return " ".join(texts), images


def sample_json(schema: Any, root: Any, depth: int = 0) -> Any:
    """A value that satisfies the common parts of a JSON schema."""
    if not isinstance(schema, dict) or depth > 16:
        return "demo"
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return sample_json(resolve_ref(root, ref), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            real = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return sample_json((real or options)[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties")
        out = {}
        if isinstance(props, dict):
            out = {name: sample_json(sub, root, depth + 1) for name, sub in props.items()}
        for name in schema.get("required") or ():
            out.setdefault(name, "demo")
        return out
    if kind == "array":
        return [sample_json(schema.get("items", {}), root, depth + 1)]
    scalars = {"string": "demo", "integer": 1, "number": 1.5, "boolean": True, "null": None}
    return scalars.get(kind, "demo")


def resolve_ref(root: Any, ref: str) -> Any:
    node = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not isinstance(node, dict):
            return {}
        node = node.get(part.replace("~1", "/").replace("~0", "~"), {})
    return node


def pick_tool(tools: Any, choice: Any) -> Json | None:
    if not isinstance(tools, list) or choice == "none":
        return None
    wanted = None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        wanted = choice["function"].get("name")
    for tool in tools:
        func = tool.get("function") if isinstance(tool, dict) else None
        name = func.get("name") if isinstance(func, dict) else None
        if isinstance(name, str) and wanted in (None, name):
            return func
    return None


def answer_text(body: Json, messages: list[Json], words: int) -> tuple[str, bool]:
    """The answer, and whether it is prose (split by words) rather than JSON (by characters)."""
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return orjson.dumps(sample_json(schema or {}, schema)).decode(), False
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return '{"answer": "demo"}', False
    last = messages[-1]
    if last.get("role") == "tool":
        return "The tool said: " + content_text(last.get("content"))[0][:ECHO_LIMIT], True
    user: Json = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    said, images = content_text(user.get("content"))
    text = BASE_TEXT
    if images:
        text += f" I see {images} image{'' if images == 1 else 's'}."
    return pad_words(f"{text} You said: {said[:ECHO_LIMIT]}", words), True


def token_limit(body: Json) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BadRequest(400, f"'{key}' must be a positive integer", key, "invalid_value")
        return value
    return None


def plan_answer(body: Json, messages: list[Json], opts: DemoOptions, n: int) -> DemoAnswer:
    prompt = sum(len(content_text(m.get("content"))[0].split()) for m in messages)
    limit = token_limit(body)
    func = pick_tool(body.get("tools"), body.get("tool_choice", "auto"))
    if func is not None and messages[-1].get("role") == "user":
        params = func.get("parameters") or {"type": "object", "properties": {}}
        args = orjson.dumps(sample_json(params, params)).decode()
        tool = (f"call_demo_{n}", func["name"])
        return DemoAnswer(split_pieces(args, opts.deltas, False), "tool_calls", prompt, tool)
    text, prose = answer_text(body, messages, opts.text_words)
    pieces = split_pieces(text, opts.deltas, prose)
    if limit is not None and limit < len(pieces):
        return DemoAnswer(pieces[:limit], "length", prompt)
    return DemoAnswer(pieces, "stop", prompt)


# -- wire encoding -----------------------------------------------------------


def usage(answer: DemoAnswer) -> dict[str, int]:
    done = len(answer.pieces)
    total = answer.prompt_tokens + done
    counts = {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": done,
        "total_tokens": total,
    }
    return thinking.usage_with(counts, len(answer.reasoning))


def completion_body(answer: DemoAnswer, cid: str, created: int, model: str) -> bytes:
    text = "".join(answer.pieces)
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if answer.tool is not None:
        function = {"name": answer.tool[1], "arguments": text}
        call = {"id": answer.tool[0], "type": "function", "function": function}
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
    if answer.reasoning:
        message[answer.reasoning_field] = "".join(answer.reasoning)
    finish = answer.finish_reason
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    head = {"id": cid, "object": "chat.completion", "created": created, "model": model}
    return orjson.dumps({**head, "choices": [choice], "usage": usage(answer)})


def stream_frames(
    answer: DemoAnswer, cid: str, created: int, model: str, usage_: bool
) -> list[bytes]:
    """Every SSE frame of one streamed answer, ``data: [DONE]`` included."""
    head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}

    def frame(delta: Json, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"

    frames = [frame({"role": "assistant", "content": ""})]
    frames.extend(frame({answer.reasoning_field: piece}) for piece in answer.reasoning)
    if answer.tool is not None:
        function = {"name": answer.tool[1], "arguments": ""}
        opening = {"index": 0, "id": answer.tool[0], "type": "function", "function": function}
        frames.append(frame({"tool_calls": [opening]}))
        for piece in answer.pieces:
            frames.append(frame({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    else:
        frames.extend(frame({"content": piece}) for piece in answer.pieces)
    frames.append(frame({}, answer.finish_reason))
    if usage_:
        tail = {**head, "choices": [], "usage": usage(answer)}
        frames.append(b"data: " + orjson.dumps(tail) + b"\n\n")
    frames.append(DONE_FRAME)
    return frames


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
        if self.opts.script is not None:  # scripted mode: gateway/demo/script.py
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
        answer = plan_answer(body, messages, self.opts, self.count)
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
