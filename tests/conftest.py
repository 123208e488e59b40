"""Shared fixtures: a scripted fake upstream at the network boundary, and a real
gateway (``open_gateway`` + the gateway's own HTTP server) on a loopback port.
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import openai
import orjson
import pytest
from aiohttp import web

from gateway.config import Config, Deployment, Listen, Stream, Supports
from gateway.ops.lifecycle import listen, open_gateway


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request off a raw upstream's socket (a head, then a Content-Length body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def chunk(delta: dict | None = None, finish: str | None = None, **extra: Any) -> bytes:
    """One vLLM-shaped ``chat.completion.chunk`` SSE event."""
    doc: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
    }
    doc.update(extra)
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def usage_chunk(prompt: int = 5, completion: int = 7) -> bytes:
    doc = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
    return b"data: " + orjson.dumps(doc) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def text_stream(*pieces: str, finish: str = "stop") -> list[bytes]:
    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": p}) for p in pieces]
    return out + [chunk({}, finish), usage_chunk(), DONE]


def completion(
    content: str | None = "Hello!",
    *,
    finish: str = "stop",
    tool_calls: list | None = None,
    usage: dict | None = None,
) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage
        if usage is not None
        else {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }


Reply = Callable[[web.BaseRequest, dict], Awaitable[web.StreamResponse]]


class FakeUpstream:
    """A chat-completions server whose every answer the test scripts.

    ``received`` holds each decoded request body, ``raw`` its bytes; ``headers`` their
    headers.
    ``disconnects`` is set when a client of a streamed answer went away.
    """

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.raw: list[bytes] = []  # each request body exactly as it arrived
        self.headers: list[dict] = []
        self.models = ["m1"]
        self.reply: Reply = self.json_reply(completion())
        self.disconnected = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path.endswith("/models"):
            data = [{"id": m, "object": "model"} for m in self.models]
            return web.json_response({"object": "list", "data": data})
        raw = await request.content.read()  # (not request.read(): no 1 MiB cap here)
        self.raw.append(raw)
        body = orjson.loads(raw)
        self.received.append(body)
        self.headers.append(dict(request.headers))
        return await self.reply(request, body)

    @staticmethod
    def json_reply(doc: Any, status: int = 200) -> Reply:
        async def reply(request: web.BaseRequest, body: dict) -> web.StreamResponse:
            return web.Response(
                status=status, body=orjson.dumps(doc), content_type="application/json"
            )

        return reply

    @staticmethod
    def raw_reply(data: bytes, status: int, content_type: str = "text/plain") -> Reply:
        async def reply(request: web.BaseRequest, body: dict) -> web.StreamResponse:
            return web.Response(status=status, body=data, content_type=content_type)

        return reply

    def sse_reply(self, events: list[bytes], *, delay: float = 0.0, then: str = "end") -> Reply:
        """Stream ``events`` (one write each); ``then``: end | drop | hang."""

        async def reply(request: web.BaseRequest, body: dict) -> web.StreamResponse:
            out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await out.prepare(request)
            try:
                for ev in events:
                    await out.write(ev)
                    if delay:
                        await asyncio.sleep(delay)
                if then == "drop":
                    assert request.transport is not None
                    request.transport.close()
                    return out
                if then == "hang":
                    while True:
                        await asyncio.sleep(0.01)
                        if request.transport is None or request.transport.is_closing():
                            raise ConnectionResetError
            except (ConnectionError, asyncio.CancelledError):
                self.disconnected.set()
                raise
            await out.write_eof()
            return out

        return reply


@pytest.fixture
async def upstream(aiohttp_raw_server: Any) -> FakeUpstream:
    fake = FakeUpstream()
    server = await aiohttp_raw_server(fake.handle)
    fake.url = str(server.make_url("/v1"))
    return fake


def make_config(url: str, **dep: Any) -> Config:
    supports = dep.pop("supports", {})
    keepalive = dep.pop("keepalive", 15.0)
    dep.setdefault("models", ("m1",))
    return Config(
        listen=Listen(),
        deployment=(Deployment(upstream=url, supports=Supports(**supports), **dep),),
        stream=Stream(keepalive_interval=keepalive),
    )


GatewayFactory = Callable[..., Awaitable[str]]


@pytest.fixture(params=["lean", "aiohttp"])
def http_server(request: pytest.FixtureRequest) -> str:
    """Every test that starts a gateway runs on both HTTP servers."""
    return str(request.param)


@pytest.fixture
async def start_gateway(http_server: str) -> Any:
    """``await start_gateway(config, env)`` → the gateway's base URL (``.../v1``), on the
    HTTP server of ``http_server``; ``env`` stands for the environment the command line
    hands down."""
    stack: list[Any] = []

    async def start(
        cfg: Config,
        env: dict[str, str] | None = None,
        *,
        keys_text: str | None = None,
        access_out: Any = None,
    ) -> str:
        cm = open_gateway(cfg, env or {}, keys_text=keys_text, access_out=access_out)
        gateway = await cm.__aenter__()
        stack.append(cm)
        http = msgspec.structs.replace(cfg.http, server=http_server)
        server_cm = listen(gateway, "127.0.0.1", 0, http=http)
        server = await server_cm.__aenter__()
        stack.append(server_cm)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    yield start
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


@pytest.fixture
async def gateway_url(upstream: FakeUpstream, start_gateway: Any) -> str:
    return await start_gateway(make_config(upstream.url))


def sdk(url: str, api_key: str = "sk-test") -> openai.AsyncOpenAI:
    """The official async client for a gateway at ``url``, without retries; a stall
    fails the test in 60 s instead of the client's default 600 s."""
    return openai.AsyncOpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=60.0)


@pytest.fixture
async def client(gateway_url: str) -> Any:
    c = sdk(gateway_url)
    yield c
    await c.close()


# A function tool as clients declare it (flat Responses form).
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


# ---- Redis: a real redis-server on loopback (the Debian package) ------------------------

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """A ``redis-server`` on 127.0.0.1 and a free port, without persistence."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        cmd = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--save", "", "--appendonly", "no", "--protected-mode", "yes"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"FLUSHALL\r\n")
            assert s.recv(16).startswith(b"+OK")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def need_redis() -> None:
    """Skip (with the reason) without redis-server; under CI, fail instead."""
    if os.path.exists(REDIS_SERVER):
        return
    reason = "redis-server is not installed (apt-get install redis-server)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the Redis tests (.ci/run installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_redis() -> Any:
    need_redis()
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(shared_redis: RedisServer) -> str:
    """The URL of the session's redis-server, emptied for this test."""
    shared_redis.flush()
    return shared_redis.url


@pytest.fixture
def own_redis() -> Any:
    """A redis-server of this test's own (it may stop it)."""
    need_redis()
    server = RedisServer().start()
    yield server
    server.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The tests that passed in each folder (``make test`` runs three: each shows)."""
    counts: collections.Counter[str] = collections.Counter()
    for report in terminalreporter.stats.get("passed", []):
        parts = report.nodeid.split("/")
        if len(parts) > 2 and parts[0] == "tests":
            counts[parts[1]] += 1
    if counts:
        terminalreporter.write_line(
            "passed by folder: " + ", ".join(f"tests/{k} {n}" for k, n in sorted(counts.items()))
        )
