"""Compaction through a real gateway: ``POST /v1/responses/compact`` with the official
client, a ``compaction_trigger`` over JSON and SSE (parsed strictly), the compaction item
sent back (the upstream sees the summary in its place), a tampered blob refused before
the upstream, a Codex-sized history, an upstream failure, and two gateway processes that
share one seal key."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web
from openai.types.responses.compacted_response import CompactedResponse

from gateway.config import COMPACTION_PROMPT
from gateway.core.translate.compaction import SUMMARY_HEADING
from gateway.demo.upstream import DemoOptions, make_handler
from tests.conftest import WEATHER, FakeUpstream, completion, make_config, sdk
from tests.integration.ops_support import GatewayProcess
from tests.integration.test_responses_stream import check_stream, parse_sse, post_stream

KEY = base64.b64encode(bytes(range(50, 82))).decode()
OTHER_KEY = base64.b64encode(bytes(range(90, 122))).decode()
ENV = {"GATEWAY_SEAL_KEY": KEY}
SUMMARY = 'Asked for "fizzbuzz" in Rust; src/main.rs written, cargo test passes.\n\u00e9'
TRIGGER = {"type": "compaction_trigger"}
REFUSED = (400, "invalid_encrypted_content", "input[1].encrypted_content")
HISTORY: list[dict] = [
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": "Write fizzbuzz in Rust."},
    {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Ok."}]},
]


@pytest.fixture
async def gw(upstream: FakeUpstream, start_gateway: Any) -> Any:
    upstream.reply = upstream.json_reply(completion(SUMMARY))
    client = sdk(await start_gateway(make_config(upstream.url), ENV))
    yield client
    await client.close()


def asked_for_a_summary(body: dict) -> list[dict]:
    """The summarisation request's messages, checked: no tools, not streamed, the prompt last."""
    assert "tools" not in body and "tool_choice" not in body and "stream" not in body
    assert body["messages"][-1] == {"role": "user", "content": COMPACTION_PROMPT}
    return list(body["messages"][:-1])


def base(client: openai.AsyncOpenAI) -> str:
    return str(client.base_url).rstrip("/")


async def post(url: str, path: str, body: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/{path}", json=body) as r:
            return r.status, orjson.loads(await r.read())


# ---- POST /v1/responses/compact ---------------------------------------------------------


async def test_compact_endpoint_answers_the_compaction_object(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    result = await gw.responses.compact(
        model="m1",
        input=HISTORY,
        instructions="You are Codex.",
        extra_body={
            "tools": [WEATHER],
            "parallel_tool_calls": True,
            "reasoning": {"effort": "high"},
        },
    )
    assert result.object == "response.compaction" and result.id.startswith("cmp_")
    (item,) = result.output
    assert item.type == "compaction" and item.id.startswith("cmp_") and item.encrypted_content
    assert SUMMARY not in item.encrypted_content
    assert result.usage.input_tokens == 11 and result.usage.total_tokens == 14
    (body,) = upstream.received
    messages = asked_for_a_summary(body)
    assert messages[0] == {"role": "system", "content": "You are Codex."}
    assert messages[2] == {"role": "user", "content": "Write fizzbuzz in Rust."}
    assert messages[3]["tool_calls"][0]["id"] == "c1" and messages[4]["role"] == "tool"
    # the raw bytes validate as the openai type, not only the lenient client parse
    status, doc = await post(base(gw), "responses/compact", {"model": "m1", "input": "hi"})
    assert status == 200
    assert CompactedResponse.model_validate(doc).output[0].type == "compaction"


async def test_compact_endpoint_needs_a_model(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    status, doc = await post(base(gw), "responses/compact", {"input": HISTORY})
    assert status == 400
    assert doc["error"]["param"] == "model" and "model" in doc["error"]["message"]
    assert upstream.received == []
    async with aiohttp.ClientSession() as s:
        async with s.get(base(gw) + "/responses/compact") as r:
            assert r.status == 405  # a route of its own, not a stored response's id


# ---- compaction_trigger -----------------------------------------------------------------


async def test_trigger_over_json_answers_one_compaction_item(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    response = await gw.responses.create(
        model="m1",
        input=[*HISTORY, TRIGGER],
        tools=[WEATHER],
        include=["reasoning.encrypted_content"],
    )
    assert response.status == "completed"
    assert [o.type for o in response.output] == ["compaction"]
    assert response.output[0].encrypted_content  # type: ignore[union-attr]
    (body,) = upstream.received
    assert len(asked_for_a_summary(body)) == 5  # system, user, call, tool, assistant


async def test_trigger_over_sse_streams_the_item_then_completed(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    body = {"model": "m1", "input": [*HISTORY, TRIGGER], "tools": [WEATHER]}
    status, raw = await post_stream(base(gw), body)
    assert status == 200
    events = parse_sse(raw)
    final = check_stream(events)
    assert [n for n, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
        "response.completed",
    ]
    item = events[3][1]["item"]
    assert item["type"] == "compaction" and events[2][1]["item"] == item
    assert final["status"] == "completed" and final["output"] == [item]
    asked_for_a_summary(upstream.received[0])
    # the SDK's stream helper agrees
    async with gw.responses.stream(model="m1", input=[*HISTORY, TRIGGER]) as s:
        done = await s.get_final_response()
    assert [o.type for o in done.output] == ["compaction"]


# ---- the compaction item sent back ------------------------------------------------------


async def compacted_item(client: openai.AsyncOpenAI) -> dict:
    result = await client.responses.compact(model="m1", input=HISTORY)
    return result.output[0].model_dump(exclude_none=True)


async def test_the_item_sent_back_gives_the_upstream_the_summary_in_its_place(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    item = await compacted_item(gw)
    upstream.reply = upstream.json_reply(completion("Tests added."))
    later = [
        {"role": "developer", "content": "Be brief."},
        item,
        {"role": "user", "content": "Now add tests."},
        {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c2", "output": "rain"},
    ]
    response = await gw.responses.create(model="m1", input=later, tools=[WEATHER])
    assert response.output_text == "Tests added."
    messages = upstream.received[-1]["messages"]
    assert messages[:3] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": SUMMARY_HEADING + SUMMARY},
        {"role": "user", "content": "Now add tests."},
    ]
    assert messages[3]["tool_calls"][0]["id"] == "c2" and messages[4]["tool_call_id"] == "c2"


async def test_a_tampered_blob_is_refused_before_the_upstream(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    item = await compacted_item(gw)
    blob = item["encrypted_content"]
    item["encrypted_content"] = blob[:-2] + ("A" if blob[-2] != "A" else "B") + blob[-1]
    before = len(upstream.received)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as info:
            await gw.responses.create(
                model="m1", input=[{"role": "user", "content": "hi"}, item], stream=stream
            )
        err = info.value
        assert (err.status_code, err.code, err.param) == REFUSED
    assert len(upstream.received) == before


# ---- size and failure -------------------------------------------------------------------


def codex_sized() -> tuple[list[dict], list[dict]]:
    """About 80 KB of history (calls with long outputs) and 40 tools with schemas."""
    tools = []
    for n in range(40):
        props = {f"arg{k}": {"type": "string", "description": "x" * 80} for k in range(6)}
        tools.append(
            {
                "type": "function",
                "name": f"tool_{n}",
                "description": f"Tool number {n}. " * 10,
                "parameters": {"type": "object", "properties": props},
            }
        )
    tools.append({"type": "custom", "name": "apply_patch", "description": "Edit files."})
    tools.append({"type": "web_search"})  # hosted: refused on a normal turn, ignored here
    history: list[dict] = [{"role": "user", "content": "Refactor the parser."}]
    for n in range(60):
        history.append(
            {
                "type": "function_call",
                "call_id": f"c{n}",
                "name": f"tool_{n % 40}",
                "arguments": "{}",
            }
        )
        history.append({"type": "function_call_output", "call_id": f"c{n}", "output": "y" * 1300})
    return history, tools


@pytest.mark.parametrize("stream", [False, True])
async def test_a_codex_sized_history_compacts_without_its_tools(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream, stream: bool
) -> None:
    history, tools = codex_sized()
    body = {"model": "m1", "input": [*history, TRIGGER], "tools": tools, "stream": stream}
    assert len(orjson.dumps(body)) > 80_000
    if stream:
        status, raw = await post_stream(base(gw), body)
        final = check_stream(parse_sse(raw))
    else:
        status, final = await post(base(gw), "responses", body)
    assert status == 200 and final["status"] == "completed"
    assert [o["type"] for o in final["output"]] == ["compaction"]
    messages = asked_for_a_summary(upstream.received[0])
    assert len(messages) == 1 + 2 * 60
    assert len(orjson.dumps(upstream.received[0])) < len(orjson.dumps(body)) - 40 * 600


async def test_an_upstream_failure_is_an_error_or_one_failed_event(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.reply = upstream.raw_reply(b'{"error": {"message": "boom"}}', 500, JSON)
    with pytest.raises(openai.APIStatusError) as info:
        await gw.responses.compact(model="m1", input=HISTORY)
    assert info.value.status_code == 502
    with pytest.raises(openai.APIStatusError) as info:
        await gw.responses.create(model="m1", input=[*HISTORY, TRIGGER])
    assert info.value.status_code == 502
    status, raw = await post_stream(base(gw), {"model": "m1", "input": [*HISTORY, TRIGGER]})
    assert status == 200
    events = parse_sse(raw)
    final = check_stream(events)
    assert [n for n, _ in events][2:] == ["response.failed"]
    assert final["status"] == "failed" and final["error"]["code"] == "server_error"
    assert final["output"] == []


JSON = "application/json"


async def test_a_slow_summary_gets_pings_then_the_item(
    upstream: FakeUpstream, start_gateway: Any
) -> None:
    async def slow(request: web.BaseRequest, body: dict) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        return web.json_response(completion(SUMMARY))

    upstream.reply = slow
    url = await start_gateway(make_config(upstream.url, keepalive=0.06), ENV)
    status, raw = await post_stream(url, {"model": "m1", "input": [*HISTORY, TRIGGER]})
    assert status == 200
    opening, _, rest = raw.partition(b"event: response.output_item.added")
    assert b": keepalive\n\n" in opening.split(b"event: response.in_progress")[1]
    assert [n for n, _ in parse_sse(raw)][2:] == [
        "response.output_item.added",
        "response.output_item.done",
        "response.completed",
    ]


async def test_an_idempotency_key_replays_a_compaction(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    headers = {"Idempotency-Key": "compact-1"}
    first = await gw.responses.compact(model="m1", input=HISTORY, extra_headers=headers)
    again = await gw.responses.compact(model="m1", input=HISTORY, extra_headers=headers)
    assert again.id == first.id and again.output[0] == first.output[0]
    assert len(upstream.received) == 1


# ---- the demo upstream (make run) --------------------------------------------------------


async def test_the_demo_upstream_answers_a_compaction(
    aiohttp_raw_server: Any, start_gateway: Any
) -> None:
    demo = DemoOptions(models=("m1",), reasoning="reasoning_content")
    server = await aiohttp_raw_server(make_handler(demo))
    client = sdk(await start_gateway(make_config(str(server.make_url("/v1"))), ENV))
    try:
        response = await client.responses.create(model="m1", input=[*HISTORY, TRIGGER])
        (item,) = response.output
        later = [item.model_dump(exclude_none=True), {"role": "user", "content": "Go on."}]
        answer = await client.responses.create(model="m1", input=later)
        assert "You said: Go on." in answer.output_text
        summary = demo.received[-1]["body"]["messages"][0]["content"]
        assert summary.startswith(SUMMARY_HEADING + "Summary of the conversation so far (demo)")
        assert "Write fizzbuzz in Rust." in summary and "get_weather" in summary
    finally:
        await client.close()


# ---- two processes, one key -------------------------------------------------------------


async def test_a_second_process_with_the_key_opens_the_first_ones_item(
    upstream: FakeUpstream, tmp_path: Any
) -> None:
    upstream.reply = upstream.json_reply(completion(SUMMARY))
    args = ["--upstream", upstream.url, "--model", "m1"]
    one = GatewayProcess(args, tmp_path, env=ENV).start()
    two = GatewayProcess(args, tmp_path, env={"GATEWAY_SEAL_KEY": f"{OTHER_KEY},{KEY}"}).start()
    three = GatewayProcess(args, tmp_path, env={"GATEWAY_SEAL_KEY": OTHER_KEY}).start()
    clients = []
    try:
        for gw in (one, two, three):
            await gw.ready()
            clients.append(sdk(f"http://127.0.0.1:{gw.port}/v1"))
        response = await clients[0].responses.create(model="m1", input=[*HISTORY, TRIGGER])
        item = response.output[0].model_dump(exclude_none=True)
        upstream.reply = upstream.json_reply(completion("Done."))
        later = [item, {"role": "user", "content": "Go on."}]
        assert (await clients[1].responses.create(model="m1", input=later)).output_text == "Done."
        assert upstream.received[-1]["messages"][0]["content"] == SUMMARY_HEADING + SUMMARY
        count = len(upstream.received)
        with pytest.raises(openai.BadRequestError) as info:
            await clients[2].responses.create(model="m1", input=later)
        assert info.value.code == "invalid_encrypted_content"
        assert len(upstream.received) == count
    finally:
        for c in clients:
            await c.close()
        for gw in (one, two, three):
            gw.stop()
