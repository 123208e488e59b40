"""The demo upstream, served in-process with pytest-aiohttp's raw server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.config import COMPACTION_PROMPT
from gateway.demo.answers import COMPACTION_REQUEST, sample_json, split_pieces
from gateway.demo.upstream import DemoOptions, make_handler

CHAT = "/v1/chat/completions"
HELLO = {"model": "demo", "messages": [{"role": "user", "content": "Say hello"}]}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "days"],
        },
    },
}


@pytest.fixture
def options() -> DemoOptions:
    return DemoOptions(models=("demo", "other"))


@pytest.fixture
async def client(aiohttp_raw_server: Any, aiohttp_client: Any, options: DemoOptions) -> Any:
    server = await aiohttp_raw_server(make_handler(options))
    return await aiohttp_client(server)


def parse_sse(raw: bytes) -> list[Any]:
    """The data of every event; ``[DONE]`` kept as the string."""
    assert raw.endswith(b"\n\n")
    out: list[Any] = []
    for block in raw.decode().split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        data = block[len("data: ") :]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def post(client: Any, body: dict[str, Any]) -> tuple[int, Any]:
    resp = await client.post(CHAT, json=body)
    return resp.status, await resp.json()


async def stream(client: Any, body: dict[str, Any]) -> list[Any]:
    resp = await client.post(CHAT, json={**body, "stream": True})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    return parse_sse(await resp.read())


async def test_models_list(client: Any) -> None:
    resp = await client.get("/v1/models")
    assert resp.status == 200
    body = await resp.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["demo", "other"]
    assert {m["owned_by"] for m in body["data"]} == {"demo"}


async def test_non_streaming_text(client: Any) -> None:
    status, body = await post(client, {**HELLO, "model": "other"})
    assert status == 200
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "other"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == (
        "Hello from the demo upstream (a fake model). You said: Say hello"
    )
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 12, "total_tokens": 14}


async def test_streaming_frames_match_non_streaming(client: Any) -> None:
    _, whole = await post(client, HELLO)
    events = await stream(client, HELLO)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert len(deltas) == 12  # one word each: fewer words than the 16 allowed deltas
    assert "".join(deltas) == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert all("usage" not in c for c in chunks)


async def test_streaming_usage_chunk_only_when_asked(client: Any) -> None:
    events = await stream(client, {**HELLO, "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 2, "completion_tokens": 12, "total_tokens": 14}
    assert events[-3]["choices"][0]["finish_reason"] == "stop"


async def test_deltas_caps_the_piece_count(aiohttp_raw_server: Any, aiohttp_client: Any) -> None:
    server = await aiohttp_raw_server(make_handler(DemoOptions(deltas=4)))
    client = await aiohttp_client(server)
    events = await stream(client, HELLO)
    deltas = [e["choices"][0]["delta"]["content"] for e in events[1:-2]]
    assert len(deltas) == 4
    assert "".join(deltas).endswith("You said: Say hello")


async def test_tool_call_non_streaming(client: Any) -> None:
    status, body = await post(client, {**HELLO, "tools": [WEATHER_TOOL]})
    assert status == 200
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_demo_")
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    args = json.loads(call["function"]["arguments"])
    assert args == {"city": "demo", "days": 1, "unit": "celsius"}


async def test_tool_call_streaming(client: Any) -> None:
    events = await stream(client, {**HELLO, "tools": [WEATHER_TOOL]})
    chunks = events[:-1]
    first = chunks[1]["choices"][0]["delta"]["tool_calls"][0]
    assert first["index"] == 0
    assert first["id"].startswith("call_demo_")
    assert first["type"] == "function"
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    pieces = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[2:-1]]
    assert len(pieces) > 1
    assert all(p["index"] == 0 and set(p) == {"index", "function"} for p in pieces)
    args = json.loads("".join(p["function"]["arguments"] for p in pieces))
    assert set(args) >= {"city", "days"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_tool_choice_none_answers_with_text(client: Any) -> None:
    _, body = await post(client, {**HELLO, "tools": [WEATHER_TOOL], "tool_choice": "none"})
    assert body["choices"][0]["finish_reason"] == "stop"
    assert "You said: Say hello" in body["choices"][0]["message"]["content"]


async def test_tool_result_answer(client: Any) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "64F and sunny"},
    ]
    _, body = await post(client, {"model": "demo", "messages": messages, "tools": [WEATHER_TOOL]})
    assert body["choices"][0]["message"]["content"] == "The tool said: 64F and sunny"
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_json_schema_answer(client: Any) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "score": {"type": "number"},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "pet": {"$ref": "#/$defs/Pet"},
            "color": {"enum": ["red", "green"]},
        },
        "required": ["name", "age", "score", "ok", "tags", "pet", "color"],
        "$defs": {"Pet": {"type": "object", "properties": {"kind": {"type": "string"}}}},
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
    _, body = await post(client, {**HELLO, "response_format": fmt})
    doc = json.loads(body["choices"][0]["message"]["content"])
    assert doc == {
        "name": "demo",
        "age": 1,
        "score": 1.5,
        "ok": True,
        "tags": ["demo"],
        "pet": {"kind": "demo"},
        "color": "red",
    }
    events = await stream(client, {**HELLO, "response_format": fmt})
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[1:-1])
    assert json.loads(text) == doc


async def test_json_object_answer(client: Any) -> None:
    _, body = await post(client, {**HELLO, "response_format": {"type": "json_object"}})
    assert json.loads(body["choices"][0]["message"]["content"]) == {"answer": "demo"}


async def test_images_are_counted(client: Any) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    content = [{"type": "text", "text": "what is this"}, image, image]
    _, body = await post(
        client, {"model": "demo", "messages": [{"role": "user", "content": content}]}
    )
    assert "I see 2 images." in body["choices"][0]["message"]["content"]
    assert body["choices"][0]["message"]["content"].endswith("You said: what is this")


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
async def test_length_truncation(client: Any, key: str) -> None:
    _, body = await post(client, {**HELLO, key: 3})
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == "Hello from the "
    assert body["usage"]["completion_tokens"] == 3
    events = await stream(client, {**HELLO, key: 3})
    assert len(events) == 1 + 3 + 1 + 1
    assert events[-2]["choices"][0]["finish_reason"] == "length"


async def test_unknown_model_404(client: Any) -> None:
    status, body = await post(client, {**HELLO, "model": "gpt-nope"})
    assert status == 404
    err = body["error"]
    assert err["code"] == "model_not_found"
    assert err["type"] == "invalid_request_error"
    assert "gpt-nope" in err["message"]
    assert set(err) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[1, 2]", b'{"model": "demo"}', b'{"model": "demo", "messages": [1]}'],
)
async def test_bad_bodies_400(client: Any, raw: bytes) -> None:
    resp = await client.post(CHAT, data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert err["type"] == "invalid_request_error"
    assert err["message"]


async def test_wrong_method_and_path(client: Any) -> None:
    assert (await client.get(CHAT)).status == 405
    resp = await client.post("/v1/responses", json=HELLO)
    assert resp.status == 404
    assert "error" in await resp.json()


async def test_received_records_body_and_headers(client: Any, options: DemoOptions) -> None:
    await client.post(CHAT, json={**HELLO, "temperature": 0.5}, headers={"X-Request-Id": "abc"})
    await client.post(CHAT, json={**HELLO, "stream": True})
    assert len(options.received) == 2
    first = options.received[0]
    assert first["body"] == {**HELLO, "temperature": 0.5}
    assert first["headers"]["x-request-id"] == "abc"
    assert first["headers"]["content-type"] == "application/json"
    assert options.received[1]["body"]["stream"] is True


async def test_fixed_mode_streams_exactly_deltas(
    aiohttp_raw_server: Any, aiohttp_client: Any
) -> None:
    opts = DemoOptions(deltas=64, fixed=True, record=False)
    client = await aiohttp_client(await aiohttp_raw_server(make_handler(opts)))
    events = await stream(client, {**HELLO, "stream_options": {"include_usage": True}})
    assert len(events) == 1 + 64 + 1 + 1 + 1
    text = "".join(e["choices"][0]["delta"]["content"] for e in events[1:65])
    status, body = await post(
        client, {"model": "demo", "messages": [{"role": "user", "content": "x"}]}
    )
    assert status == 200
    assert body["choices"][0]["message"]["content"] == text
    assert len(text.split()) == 64
    assert events[-2]["usage"]["completion_tokens"] == 64
    assert opts.received == []


async def test_delayed_stream_is_complete(aiohttp_raw_server: Any, aiohttp_client: Any) -> None:
    opts = DemoOptions(deltas=3, delay_ms=1)
    client = await aiohttp_client(await aiohttp_raw_server(make_handler(opts)))
    events = await stream(client, HELLO)
    assert len(events) == 1 + 3 + 1 + 1
    assert events[-1] == "[DONE]"


def test_split_pieces_keeps_text() -> None:
    text = "  one two  three four five"
    for n in range(1, 8):
        pieces = split_pieces(text, n)
        assert "".join(pieces) == text
        assert len(pieces) == min(n, 5)
        assert all(pieces)
    assert split_pieces('{"a":1}', 3, words=False) == ['{"', 'a"', ":1}"]


def test_sample_json_edge_cases() -> None:
    assert sample_json({"type": ["null", "integer"]}, None) == 1
    assert sample_json({"anyOf": [{"type": "null"}, {"type": "boolean"}]}, None) is True
    assert sample_json({"const": "x"}, None) == "x"
    assert sample_json({"type": "object", "required": ["a"]}, None) == {"a": "demo"}
    recursive = {"$ref": "#"}
    assert sample_json(recursive, recursive) == "demo"  # depth-bounded, no recursion error


async def test_faults_record_how_each_stream_ended_by_request_id(
    aiohttp_raw_server: Any, aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import time

    from gateway.demo import faults

    opts = DemoOptions(deltas=20, delay_ms=20, faults=True)
    client = await aiohttp_client(await aiohttp_raw_server(make_handler(opts)))
    body = {**HELLO, "stream": True}
    before = time.time()
    whole = await client.post(CHAT, json=body, headers={"X-Request-Id": "whole"})
    assert parse_sse(await whole.read())[-1] == "[DONE]"
    left = await client.post(CHAT, json=body, headers={"X-Request-Id": "left"})
    await left.content.readuntil(b"\n\n")
    streams = (await (await client.get("/demo/stats")).json())["streams"]
    assert streams["left"][0] == "open"
    left.close()  # the peer goes away mid-stream
    for _ in range(100):
        streams = (await (await client.get("/demo/stats")).json())["streams"]
        if streams["left"][0] != "open":
            break
        await asyncio.sleep(0.02)
    anonymous = await client.post(CHAT, json=body)
    await anonymous.read()
    streams = (await (await client.get("/demo/stats")).json())["streams"]
    assert set(streams) == {"whole", "left"}  # a stream without an id is not recorded
    assert streams["whole"][0] == "completed" and streams["left"][0] == "cut"
    assert before < streams["whole"][1] < streams["left"][1] <= time.time()

    monkeypatch.setattr(faults, "MAX_RECORDED", 2)  # bounded: the oldest id goes first
    again = await client.post(CHAT, json=body, headers={"X-Request-Id": "third"})
    await again.read()
    streams = (await (await client.get("/demo/stats")).json())["streams"]
    assert list(streams) == ["left", "third"] and streams["third"][0] == "completed"


async def test_stats_without_faults_record_no_streams(client: Any) -> None:
    await stream(client, HELLO)
    stats = await (await client.get("/demo/stats")).json()
    assert "streams" not in stats and stats["streams_cut"] == 0


# ---- compaction: the gateway's default prompt gets a summary ----------------------------

SUMMARISE = {"role": "user", "content": COMPACTION_PROMPT}
CONVERSATION = [
    {"role": "system", "content": "You are Codex."},
    {"role": "user", "content": "Write fizzbuzz."},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "shell", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    {"role": "user", "content": "Now tests."},
]  # fmt: skip
SUMMARY = (
    "Summary of the conversation so far (demo): 5 messages.\n"
    "The user first asked: Write fizzbuzz.\n"
    "The user last said: Now tests.\n"
    "Tools called: 1 (shell)."
)


def test_the_demo_knows_the_gateways_default_prompt() -> None:
    assert COMPACTION_PROMPT.startswith(COMPACTION_REQUEST)


@pytest.mark.parametrize(
    "options",
    [DemoOptions(), DemoOptions(reasoning="reasoning_content")],
    ids=["plain", "reasoning"],
)
async def test_a_compaction_prompt_is_answered_with_a_summary(client: Any) -> None:
    body = {"model": "demo", "messages": [*CONVERSATION, SUMMARISE], "tools": [WEATHER_TOOL]}
    status, doc = await post(client, body)
    assert status == 200
    message = doc["choices"][0]["message"]
    assert message["content"] == SUMMARY and "tool_calls" not in message
    assert doc["choices"][0]["finish_reason"] == "stop"
    events = await stream(client, body)
    text = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]
    )
    assert text == SUMMARY


async def test_script_mode_answers_a_compaction_too(
    aiohttp_raw_server: Any, aiohttp_client: Any
) -> None:
    script = [{"text": "scripted"}]
    server = await aiohttp_raw_server(make_handler(DemoOptions(script=script)))
    demo = await aiohttp_client(server)
    status, doc = await post(demo, {"model": "demo", "messages": [*CONVERSATION[:2], SUMMARISE]})
    assert status == 200
    assert doc["choices"][0]["message"]["content"].startswith("Summary of the conversation")
