"""End to end with the bundled demo upstream: in-process, and as real processes
started the way users and scripts start them (``python -m gateway serve ...``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import openai
import pydantic
import pytest

from gateway.demo.upstream import DemoOptions, make_handler
from tests.conftest import WEATHER, make_config, sdk


class Forecast(pydantic.BaseModel):
    city: str
    celsius: int
    sunny: bool


@pytest.fixture
async def demo(
    aiohttp_raw_server: Any, start_gateway: Any
) -> tuple[DemoOptions, openai.AsyncOpenAI]:
    options = DemoOptions(models=("demo",))
    server = await aiohttp_raw_server(make_handler(options))
    url = await start_gateway(make_config(str(server.make_url("/v1")), models=()))
    client = sdk(url)
    yield options, client
    await client.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_round_trip_with_demo(demo: tuple[DemoOptions, Any], stream: bool) -> None:
    options, client = demo

    async def ask(**kw: Any) -> Any:
        if not stream:
            return await client.responses.create(model="default", **kw)
        async with client.responses.stream(model="default", **kw) as s:
            return await s.get_final_response()

    first = await ask(input="What is the weather in Paris?", tools=[{**WEATHER, "strict": True}])
    (call,) = [o for o in first.output if o.type == "function_call"]
    assert call.name == "get_weather" and "city" in json.loads(call.arguments)
    sent = options.received[-1]["body"]
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tools"][0]["function"]["strict"] is True
    assert sent.get("stream", False) is stream

    second = await ask(
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "24C and sunny"},
        ],  # fmt: skip
        tools=[{**WEATHER, "strict": True}],
    )
    assert "24C and sunny" in second.output_text
    msgs = options.received[-1]["body"]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool"]


@pytest.mark.parametrize("stream", [False, True])
async def test_parse_with_demo(demo: tuple[DemoOptions, Any], stream: bool) -> None:
    _, client = demo
    if stream:
        async with client.responses.stream(model="demo", input="x", text_format=Forecast) as s:
            resp = await s.get_final_response()
    else:
        resp = await client.responses.parse(model="demo", input="x", text_format=Forecast)
    assert isinstance(resp.output_parsed, Forecast)


async def test_text_stream_matches_json(demo: tuple[DemoOptions, Any]) -> None:
    _, client = demo
    plain = await client.responses.create(model="demo", input="Say hello")
    async with client.responses.stream(model="demo", input="Say hello") as s:
        deltas = [e.delta async for e in s if e.type == "response.output_text.delta"]
        streamed = await s.get_final_response()
    assert len(deltas) > 1
    assert streamed.output_text == plain.output_text == "".join(deltas)
    assert "Say hello" in plain.output_text
    assert streamed.usage == plain.usage


# ---- real processes ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    client = openai.OpenAI(base_url=url, api_key="k", max_retries=0, timeout=2)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the gateway exited during start-up"
        try:
            client.models.list()
            return
        except openai.APIConnectionError:
            time.sleep(0.1)
    raise AssertionError("the gateway did not start")


@pytest.fixture
def run_gateway() -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        cmd = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1",
               "--port", str(port), *args]  # fmt: skip
        proc = subprocess.Popen(cmd, start_new_session=True)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}/v1"
        wait_ready(url, proc)
        return url, proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_serve_without_upstream_runs_the_demo(run_gateway: Any) -> None:
    url, proc = run_gateway()
    client = openai.OpenAI(base_url=url, api_key="k", max_retries=0)
    assert [m.id for m in client.models.list()] == ["demo", "default"]
    assert "demo upstream" in client.responses.create(model="default", input="hi").output_text
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_serve_contract_and_workers(run_gateway: Any) -> None:
    demo_url, _ = run_gateway()  # a gateway in front of the demo: itself an upstream
    url, proc = run_gateway(
        "--upstream", demo_url, "--model", "demo", "--upstream-timeout", "30", "--workers", "2"
    )
    client = openai.OpenAI(base_url=url, api_key="k", max_retries=0)
    for _ in range(6):
        text = client.responses.create(model="demo", input="hi").output_text
        assert "You said: hi" in text
    with client.responses.stream(model="demo", input="hi") as s:
        assert s.get_final_response().output_text == text
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
