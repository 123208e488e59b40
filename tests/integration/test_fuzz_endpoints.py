"""Property: whatever a client sends to ``/v1/responses`` and ``/v1/chat/completions``
(any JSON value, objects shaped almost like a request, any bytes), the answer is never
a 5xx, every error is the OpenAI envelope, and the server stays up.

The gateway (both HTTP servers) and its upstream (the demo in ``fixed`` mode: a valid
answer to anything it accepts) run on a loop in a thread of their own; hypothesis
drives them through one keep-alive ``http.client`` connection. Bounded: a few hundred
examples, a few seconds.
"""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Iterator
from typing import Any

import msgspec
import orjson
import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import Config, Deployment, Listen
from gateway.demo.upstream import DemoOptions, make_server
from gateway.ops.lifecycle import listen, open_gateway

PATHS = ["/v1/responses", "/v1/chat/completions"]


class Background:
    """The demo upstream and a gateway in front of it, on a uvloop in a thread."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.port = 0
        self.ready = threading.Event()
        self.loop = uvloop.new_event_loop()
        self.stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # (reported by the test)
            self.error = exc
            self.ready.set()
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self.stop = asyncio.Event()
        demo = make_server(DemoOptions(fixed=True, record=False))
        up = await asyncio.get_running_loop().create_server(demo, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{up.sockets[0].getsockname()[1]}/v1"
        dep = Deployment(upstream=url, models=("demo",), read_timeout=5.0)
        cfg = Config(listen=Listen(), deployment=(dep,))
        http = msgspec.structs.replace(cfg.http, server=self.server)
        try:
            async with open_gateway(cfg) as gw, listen(gw, "127.0.0.1", 0, http=http) as srv:
                self.port = srv.sockets[0].getsockname()[1]
                self.ready.set()
                await self.stop.wait()
        finally:
            up.close()
            await demo.shutdown(1.0)

    def __enter__(self) -> Background:
        self.thread.start()
        assert self.ready.wait(20) and self.error is None, self.error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(20)
        assert not self.thread.is_alive()


@pytest.fixture(scope="module", params=["lean", "aiohttp"])
def running(request: pytest.FixtureRequest) -> Iterator[Background]:
    with Background(str(request.param)) as bg:
        yield bg


class Client:
    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)

    def post(self, path: str, body: bytes) -> tuple[int, bytes, str]:
        headers = {"Content-Type": "application/json"}
        for attempt in range(2):  # a connection the server closed (after an error): anew
            try:
                self.conn.request("POST", path, body, headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read(), resp.getheader("Content-Type") or ""
            except (http.client.RemoteDisconnected, ConnectionError, BrokenPipeError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
                if attempt:
                    raise
        raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def client(running: Background) -> Iterator[Client]:
    c = Client(running.port)
    yield c
    c.conn.close()


def check(status: int, body: bytes, ctype: str) -> None:
    assert status < 500, (status, body[:300])
    if status >= 400:
        assert ctype.startswith("application/json")
        err = orjson.loads(body)["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert isinstance(err["message"], str) and err["message"]
        assert isinstance(err["type"], str)


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=16,
)
FIELDS = [
    "input", "instructions", "stream", "tools", "tool_choice", "text", "max_output_tokens",
    "temperature", "top_p", "reasoning", "include", "metadata", "parallel_tool_calls",
    "previous_response_id", "store", "truncation", "prompt_cache_key", "user",
    "messages", "max_tokens", "stream_options", "response_format", "n",
]  # fmt: skip
# Objects nearly a request: the right model and any of the fields, with any values
# (known shapes too: an input list of message-like items).
ITEM = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "developer", "tool", "x"])},
    optional={"content": JSON, "type": st.sampled_from(["message", "function_call", "x"])},
)
NEARLY = st.fixed_dictionaries(
    {"model": st.sampled_from(["demo", "default", "nope"])},
    optional={
        **{f: JSON for f in FIELDS},
        "input": st.text(max_size=30) | st.lists(ITEM, max_size=3) | JSON,
        "messages": st.lists(ITEM, min_size=1, max_size=3) | JSON,
    },
)
BODIES = (
    JSON.map(orjson.dumps)
    | NEARLY.map(orjson.dumps)
    | st.binary(max_size=300)
    | NEARLY.map(lambda d: orjson.dumps(d)[:-1])  # cut short
)
SETTINGS = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(path=st.sampled_from(PATHS), body=BODIES)
def test_any_body_gets_an_answer_never_a_5xx(client: Client, path: str, body: bytes) -> None:
    check(*client.post(path, body))


@SETTINGS
@given(path=st.sampled_from(PATHS), doc=NEARLY)
def test_nearly_requests_with_stream(client: Client, path: str, doc: dict[str, Any]) -> None:
    doc["stream"] = True
    check(*client.post(path, orjson.dumps(doc)))


def test_the_server_stays_up_and_answers_properly(running: Background, client: Client) -> None:
    status, body, _ = client.post("/v1/responses", b'{"model": "demo", "input": "hi"}')
    assert status == 200 and orjson.loads(body)["status"] == "completed"
    assert running.thread.is_alive()
