"""Reasoning through a real gateway with the official SDK: reasoning items, the effort
upstream, sealed encrypted_content replayed onto the assistant message, a tampered
blob refused before the upstream, and a second gateway process opening the first's
blob with the same key."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
import orjson
import pytest

from tests.conftest import DONE, WEATHER, FakeUpstream, chunk, completion, make_config, sdk

KEY = base64.b64encode(bytes(range(7, 39))).decode()
OTHER_KEY = base64.b64encode(bytes(range(100, 132))).decode()
ENV = {"GATEWAY_SEAL_KEY": KEY}
INCLUDE = ["reasoning.encrypted_content"]
THOUGHT = 'The user wants Paris weather; "get_weather" fits.\n\u00e9'


USAGE = {
    "prompt_tokens": 20,
    "completion_tokens": 30,
    "total_tokens": 50,
    "completion_tokens_details": {"reasoning_tokens": 21},
}


def reasoning_usage() -> bytes:
    doc = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": USAGE}
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def thinking_call_stream(field: str = "reasoning_content") -> list[bytes]:
    """Reasoning, then a get_weather call, as vLLM streams it."""
    pieces = [THOUGHT[:20], THOUGHT[20:]]
    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({field: p}) for p in pieces]
    opening = {"index": 0, "id": "call_w1", "type": "function"}
    out.append(chunk({"tool_calls": [{**opening, "function": {"name": "get_weather"}}]}))
    args = {"index": 0, "function": {"arguments": '{"city": "Paris"}'}}
    out.append(chunk({"tool_calls": [args]}))
    return out + [chunk({}, "tool_calls"), reasoning_usage(), DONE]


def thinking_call_completion(field: str = "reasoning_content") -> dict:
    calls = [
        {
            "id": "call_w1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    doc = completion(None, finish="tool_calls", tool_calls=calls, usage=USAGE)
    doc["choices"][0]["message"][field] = THOUGHT
    return doc


async def ask(client: openai.AsyncOpenAI, stream: bool, **kw: Any) -> Any:
    if not stream:
        return await client.responses.create(model="m1", **kw)
    async with client.responses.stream(model="m1", **kw) as s:
        return await s.get_final_response()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_item_sealed_and_replayed_onto_the_assistant_message(
    upstream: FakeUpstream, start_gateway: Any, stream: bool, field: str
) -> None:
    url = await start_gateway(make_config(upstream.url), ENV)
    if stream:
        upstream.reply = upstream.sse_reply(thinking_call_stream(field))
    else:
        upstream.reply = upstream.json_reply(thinking_call_completion(field))
    client = sdk(url)
    question = [{"role": "user", "content": "Weather in Paris?"}]
    first = await ask(
        client,
        stream,
        input=question,
        tools=[WEATHER],
        reasoning={"effort": "high", "summary": "auto"},
        include=INCLUDE,
    )
    assert upstream.received[0]["reasoning_effort"] == "high"
    assert first.reasoning.effort == "high" and first.reasoning.summary == "auto"
    rs, fc = first.output
    assert rs.type == "reasoning" and rs.id.startswith("rs_")
    assert [c.text for c in rs.content or []] == [THOUGHT] and rs.summary == []
    assert rs.encrypted_content and THOUGHT not in rs.encrypted_content
    assert fc.type == "function_call" and fc.call_id == "call_w1"
    assert first.usage is not None and first.usage.output_tokens_details.reasoning_tokens == 21

    # Codex-style replay: the output as it came (blob only, no content), then the result
    replayed = [{**rs.model_dump(exclude_none=True), "content": None}, fc.model_dump()]
    upstream.reply = upstream.json_reply(completion("Sunny, 24C."))
    second = await client.responses.create(
        model="m1",
        input=[
            *question,
            *replayed,
            {"type": "function_call_output", "call_id": fc.call_id, "output": "24C"},
        ],
        tools=[WEATHER],
        include=INCLUDE,
    )
    assert second.output_text == "Sunny, 24C."
    messages = upstream.received[1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["reasoning_content"] == THOUGHT
    assert messages[1]["tool_calls"][0]["id"] == "call_w1"
    await client.close()


async def test_tampered_blob_is_400_and_nothing_reaches_the_upstream(
    upstream: FakeUpstream, start_gateway: Any
) -> None:
    url = await start_gateway(make_config(upstream.url), ENV)
    upstream.reply = upstream.json_reply(thinking_call_completion())
    client = sdk(url)
    first = await client.responses.create(
        model="m1", input="Weather?", tools=[WEATHER], include=INCLUDE
    )
    rs, fc = first.output
    blob = rs.encrypted_content
    assert blob is not None
    flipped = blob[:-2] + ("A" if blob[-2] != "A" else "B") + blob[-1]
    before = len(upstream.received)
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(
            model="m1",
            input=[
                {"role": "user", "content": "Weather?"},
                {"type": "reasoning", "id": rs.id, "summary": [], "encrypted_content": flipped},
                fc.model_dump(),
                {"type": "function_call_output", "call_id": fc.call_id, "output": "24C"},
            ],
            tools=[WEATHER],
        )
    err = info.value
    assert (err.status_code, err.code, err.param) == (
        400,
        "invalid_encrypted_content",
        "input[1].encrypted_content",
    )
    assert len(upstream.received) == before
    await client.close()


async def test_reasoning_off_refuses_an_effort(upstream: FakeUpstream, start_gateway: Any) -> None:
    from gateway.config import Reasoning

    cfg = make_config(upstream.url, reasoning=Reasoning(enabled=False))
    client = sdk(await start_gateway(cfg, ENV))
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model="m1", input="x", reasoning={"effort": "low"})
    assert info.value.param == "reasoning.effort" and info.value.code == "unsupported_parameter"
    assert upstream.received == []
    response = await client.responses.create(model="m1", input="x", reasoning={"effort": "none"})
    assert response.output_text == "Hello!"
    assert "reasoning_effort" not in upstream.received[0]
    await client.close()


# ---- two gateway processes, one key ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def gateway_process(
    upstream: str, env: dict[str, str]
) -> AsyncIterator[tuple[str, list[str]]]:
    """``python -m gateway serve --upstream URL`` with ``env``: (its base URL, a list that
    holds its stderr once it stopped)."""
    port = free_port()
    cmd = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--upstream", upstream, "--model", "m1"]
    base = {k: v for k, v in os.environ.items() if k != "GATEWAY_SEAL_KEY"}
    full_env = {**base, "PYTHONPATH": os.getcwd(), **env}
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/v1"
    logs: list[str] = []
    try:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError("the gateway process exited")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            break
        else:
            raise RuntimeError("the gateway process did not start")
        yield url, logs
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        logs.append(proc.stderr.read().decode())
        proc.stderr.close()


async def replay_through(url: str, rs: Any, fc: Any) -> Any:
    client = sdk(url)
    try:
        return await client.responses.create(
            model="m1",
            input=[
                {"role": "user", "content": "Weather?"},
                rs.model_dump(exclude_none=True),
                fc.model_dump(),
                {"type": "function_call_output", "call_id": fc.call_id, "output": "24C"},
            ],
        )
    finally:
        await client.close()


async def test_a_second_process_with_the_key_opens_the_first_ones_blob(
    upstream: FakeUpstream,
) -> None:
    upstream.reply = upstream.json_reply(thinking_call_completion())
    async with (
        gateway_process(upstream.url, ENV) as (one, _),
        gateway_process(upstream.url, {"GATEWAY_SEAL_KEY": f"{OTHER_KEY},{KEY}"}) as (two, _),
        gateway_process(upstream.url, {"GATEWAY_SEAL_KEY": OTHER_KEY}) as (three, _),
    ):
        client = sdk(one)
        first = await client.responses.create(
            model="m1", input="Weather?", tools=[WEATHER], include=INCLUDE
        )
        await client.close()
        rs, fc = first.output
        rs.content = None  # only the blob travels
        upstream.reply = upstream.json_reply(completion("Sunny."))
        assert (await replay_through(two, rs, fc)).output_text == "Sunny."
        assert upstream.received[-1]["messages"][1]["reasoning_content"] == THOUGHT
        count = len(upstream.received)
        with pytest.raises(openai.BadRequestError) as info:
            await replay_through(three, rs, fc)  # a process without the key
        assert info.value.code == "invalid_encrypted_content"
        assert len(upstream.received) == count


async def test_without_a_key_a_process_warns_and_seals_with_its_own(
    upstream: FakeUpstream,
) -> None:
    upstream.reply = upstream.json_reply(thinking_call_completion())
    async with (
        gateway_process(upstream.url, {}) as (one, logs),
        gateway_process(upstream.url, {}) as (two, _),
    ):
        client = sdk(one)
        first = await client.responses.create(
            model="m1", input="Weather?", tools=[WEATHER], include=INCLUDE
        )
        await client.close()
        rs, fc = first.output
        upstream.reply = upstream.json_reply(completion("Sunny."))
        assert (await replay_through(one, rs, fc)).output_text == "Sunny."
        with pytest.raises(openai.BadRequestError):
            await replay_through(two, rs, fc)
    (stderr,) = logs
    assert "GATEWAY_SEAL_KEY is not set" in stderr
    assert THOUGHT not in stderr


def test_make_run_shows_reasoning() -> None:
    """``serve`` without an upstream (``make run``) fronts the demo in reasoning mode."""
    port = free_port()
    cmd = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "GATEWAY_SEAL_KEY": KEY}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0, timeout=5
        )
        for _ in range(200):
            assert proc.poll() is None, "the gateway exited during start-up"
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                time.sleep(0.1)
        response = client.responses.create(model="default", input="hi", include=INCLUDE)
        rs, message = response.output
        assert rs.type == "reasoning" and "hi" in (rs.content or [])[0].text
        assert rs.encrypted_content and message.type == "message"
        with client.responses.stream(model="default", input="hi") as s:
            kinds = [e.type for e in s]
        assert "response.reasoning_text.delta" in kinds
        assert kinds.index("response.reasoning_text.done") < kinds.index(
            "response.output_text.delta"
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


async def test_summary_text_deployment_gives_the_text_as_summary(
    upstream: FakeUpstream, start_gateway: Any
) -> None:
    from gateway.config import Reasoning

    cfg = make_config(upstream.url, reasoning=Reasoning(summary_text=True))
    client = sdk(await start_gateway(cfg, ENV))
    upstream.reply = upstream.sse_reply(thinking_call_stream())
    async with client.responses.stream(
        model="m1", input="Weather?", tools=[WEATHER], reasoning={"summary": "auto"}
    ) as s:
        kinds = [e.type async for e in s]
        final = await s.get_final_response()
    assert "response.reasoning_summary_text.delta" in kinds
    assert "response.reasoning_text.delta" not in kinds
    rs = final.output[0]
    assert [p.text for p in rs.summary] == [THOUGHT] == [c.text for c in rs.content or []]
    # no summary asked for: none given
    upstream.reply = upstream.sse_reply(thinking_call_stream())
    async with client.responses.stream(model="m1", input="Weather?", tools=[WEATHER]) as s:
        final = await s.get_final_response()
    assert final.output[0].summary == []
    await client.close()
