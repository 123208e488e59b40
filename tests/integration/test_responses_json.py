"""Non-streaming ``/v1/responses`` through the official ``openai`` client."""

from __future__ import annotations

import json
from typing import Any

import openai
import pydantic
import pytest
from openai.types.responses import Response

from tests.conftest import WEATHER, FakeUpstream, completion, make_config, sdk

# Spec §2.2: the fields an Open Responses validator requires on every response.
REQUIRED_FIELDS = {
    "id": str,
    "object": str,
    "created_at": int,
    "status": str,
    "completed_at": (int, type(None)),
    "error": (dict, type(None)),
    "incomplete_details": (dict, type(None)),
    "instructions": (str, type(None)),
    "model": str,
    "output": list,
    "parallel_tool_calls": bool,
    "tool_choice": (str, dict),
    "tools": list,
    "temperature": float,
    "top_p": float,
    "presence_penalty": float,
    "frequency_penalty": float,
    "top_logprobs": int,
    "truncation": str,
    "text": dict,
    "reasoning": (dict, type(None)),
    "usage": (dict, type(None)),
    "max_output_tokens": (int, type(None)),
    "max_tool_calls": (int, type(None)),
    "previous_response_id": type(None),
    "store": bool,
    "background": bool,
    "service_tier": str,
    "metadata": dict,
    "safety_identifier": (str, type(None)),
    "prompt_cache_key": (str, type(None)),
}


def check_response_shape(doc: dict) -> None:
    for name, kind in REQUIRED_FIELDS.items():
        assert name in doc, f"missing {name}"
        assert isinstance(doc[name], kind), f"{name} is {doc[name]!r}"
    assert doc["object"] == "response"
    assert doc["id"].startswith("resp_")
    assert doc["store"] is False
    if doc["usage"] is not None:
        u = doc["usage"]
        assert set(u) == {
            "input_tokens",
            "input_tokens_details",
            "output_tokens",
            "output_tokens_details",
            "total_tokens",
        }
    for item in doc["output"]:
        assert item["status"] in ("completed", "incomplete")
        if item["type"] == "message":
            assert item["id"].startswith("msg_") and item["role"] == "assistant"
        else:
            assert item["type"] == "function_call"
            assert item["id"].startswith("fc_") and isinstance(item["arguments"], str)
    # The SDK's own types, validated strictly (not just constructed).
    Response.model_validate(doc)


async def raw_create(client: openai.AsyncOpenAI, **body: Any) -> dict:
    resp = await client.responses.with_raw_response.create(**body)
    return json.loads(resp.http_response.content)


async def test_text_answer(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    upstream.reply = upstream.json_reply(completion("Hello there!"))
    resp = await client.responses.create(model="m1", input="Hi", instructions="Be brief.")
    assert resp.output_text == "Hello there!"
    assert resp.status == "completed"
    assert resp.model == "m1"
    assert resp.usage is not None and resp.usage.input_tokens == 11
    assert resp.usage.output_tokens == 3 and resp.usage.total_tokens == 14
    sent = upstream.received[-1]
    assert sent["model"] == "m1"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert "stream" not in sent


async def test_full_field_set(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    doc = await raw_create(
        client,
        model="m1",
        input="Hi",
        temperature=0.5,
        top_p=0.9,
        max_output_tokens=50,
        metadata={"k": "v"},
        store=True,
        user="u1",
    )
    check_response_shape(doc)
    assert doc["temperature"] == 0.5 and doc["top_p"] == 0.9
    assert doc["max_output_tokens"] == 50 and doc["metadata"] == {"k": "v"}
    assert doc["completed_at"] >= doc["created_at"]
    assert doc["tools"] == [] and doc["tool_choice"] == "auto"
    assert doc["text"] == {"format": {"type": "text"}}
    sent = upstream.received[-1]
    assert sent["max_tokens"] == 50
    assert sent["temperature"] == 0.5 and sent["top_p"] == 0.9 and sent["user"] == "u1"
    assert "metadata" not in sent and "store" not in sent


async def test_item_array_input_mapping(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    await client.responses.create(
        model="m1",
        input=[
            {"role": "system", "content": "sys"},
            {"role": "developer", "content": [{"type": "input_text", "text": "dev"}]},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
            ]},
            {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "I see", "annotations": []},
                         {"type": "output_text", "text": " it.", "annotations": []}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"role": "user", "content": "thanks", "caller": None, "namespace": None},
        ],
    )  # fmt: skip
    assert upstream.received[-1]["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "system", "content": "dev"},
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
        ]},
        {"role": "assistant", "content": "I see it."},
        {"role": "user", "content": "thanks"},
    ]  # fmt: skip


async def test_function_tool_round_trip(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    call = {
        "id": "call_abc",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    upstream.reply = upstream.json_reply(completion(None, finish="tool_calls", tool_calls=[call]))
    first = await client.responses.create(
        model="m1", input="Weather in Paris?", tools=[WEATHER], tool_choice="required"
    )
    assert first.output_text == ""
    (item,) = first.output
    assert item.type == "function_call"
    assert item.call_id == "call_abc" and item.name == "get_weather"
    assert json.loads(item.arguments) == {"city": "Paris"}
    assert item.id is not None and item.id.startswith("fc_")
    sent = upstream.received[-1]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER["parameters"],
            },
        }
    ]
    assert sent["tool_choice"] == "required"
    assert first.tools[0].strict is True  # Responses default, echoed

    upstream.reply = upstream.json_reply(completion("It is sunny in Paris."))
    second = await client.responses.create(
        model="m1",
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            *[o.model_dump(exclude_none=True) for o in first.output],
            {"type": "function_call_output", "call_id": "call_abc", "output": "sunny, 24C"},
        ],
        tools=[WEATHER],
    )
    assert second.output_text == "It is sunny in Paris."
    assert upstream.received[-1]["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_abc", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "sunny, 24C"},
    ]  # fmt: skip


async def test_parallel_calls_fold_into_one_assistant_message(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    await client.responses.create(
        model="m1",
        input=[
            {"role": "user", "content": "two cities"},
            {"type": "message", "role": "assistant", "content": "Checking both."},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "a"},
            {"type": "function_call_output", "call_id": "c2",
             "output": [{"type": "input_text", "text": "b"}]},
        ],
        tools=[{"type": "function", "function": {"name": "get_weather"}}],  # chat form
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
    )  # fmt: skip
    sent = upstream.received[-1]
    msgs = sent["messages"]
    assert msgs[1]["role"] == "assistant" and msgs[1]["content"] == "Checking both."
    assert [c["id"] for c in msgs[1]["tool_calls"]] == ["c1", "c2"]
    assert msgs[2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "a"},
        {"role": "tool", "tool_call_id": "c2", "content": "b"},
    ]
    assert sent["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False


class Weather(pydantic.BaseModel):
    city: str
    celsius: int


async def test_structured_output_parse(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    upstream.reply = upstream.json_reply(completion('{"city": "Paris", "celsius": 24}'))
    parsed = await client.responses.parse(model="m1", input="Paris?", text_format=Weather)
    assert parsed.output_parsed == Weather(city="Paris", celsius=24)
    fmt = upstream.received[-1]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Weather"
    assert fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["required"] == ["city", "celsius"]
    assert parsed.text is not None and parsed.text.format is not None
    assert parsed.text.format.type == "json_schema"


async def test_json_object_format(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    await client.responses.create(model="m1", input="x", text={"format": {"type": "json_object"}})
    assert upstream.received[-1]["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
async def test_incomplete(
    client: openai.AsyncOpenAI, upstream: FakeUpstream, finish: str, reason: str
) -> None:
    upstream.reply = upstream.json_reply(completion("cut sho", finish=finish))
    doc = await raw_create(client, model="m1", input="long please", max_output_tokens=3)
    check_response_shape(doc)
    assert doc["status"] == "incomplete"
    assert doc["incomplete_details"] == {"reason": reason}
    assert doc["completed_at"] is None
    assert doc["output"][0]["status"] == "incomplete"
    assert doc["output"][0]["content"][0]["text"] == "cut sho"


async def test_refusal_and_escapes(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    doc = completion('He said "hi"\n\\ é 🙂')
    doc["choices"][0]["message"]["refusal"] = "No."
    upstream.reply = upstream.json_reply(doc)
    resp = await client.responses.create(model="m1", input="x")
    assert resp.output_text == 'He said "hi"\n\\ é 🙂'
    parts = resp.output[0].content  # type: ignore[union-attr]
    assert parts[1].type == "refusal" and parts[1].refusal == "No."


async def test_usage_absent_is_null(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    doc = completion("x")
    del doc["usage"]
    upstream.reply = upstream.json_reply(doc)
    raw = await raw_create(client, model="m1", input="x")
    assert raw["usage"] is None


async def test_models_list(client: openai.AsyncOpenAI) -> None:
    ids = [m.id async for m in client.models.list()]
    assert ids == ["m1", "default"]


async def test_default_model_and_discovery(upstream: FakeUpstream, start_gateway: Any) -> None:
    upstream.models = ["up-a", "up-b"]
    url = await start_gateway(make_config(upstream.url, models=()))
    async with sdk(url) as c:
        ids = [m.id async for m in c.models.list()]
        assert ids == ["up-a", "up-b", "default"]
        resp = await c.responses.create(model="default", input="x")
        assert resp.model == "default"
        assert upstream.received[-1]["model"] == "up-a"
        await c.responses.create(model="up-b", input="x")
        assert upstream.received[-1]["model"] == "up-b"


async def test_alias_and_token_field(upstream: FakeUpstream, start_gateway: Any) -> None:
    cfg = make_config(
        upstream.url,
        models=("alias",),
        upstream_model="real/name",
        token_field="max_completion_tokens",
        api_key_env="GATEWAY_TEST_KEY",
    )
    url = await start_gateway(cfg, {"GATEWAY_TEST_KEY": "sk-upstream"})
    async with sdk(url, "client-key") as c:
        resp = await c.responses.create(model="alias", input="x", max_output_tokens=20)
    assert resp.model == "alias"
    sent = upstream.received[-1]
    assert sent["model"] == "real/name"
    assert sent["max_completion_tokens"] == 20 and "max_tokens" not in sent
    assert upstream.headers[-1]["Authorization"] == "Bearer sk-upstream"


async def test_lenient_fields(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    resp = await client.responses.create(
        model="m1",
        input=[{"role": "user", "content": "x", "extra_field": 1}],
        include=[],
        reasoning={"effort": None, "summary": None},
        previous_response_id=None,
        background=False,
        store=True,
        extra_body={"some_future_field": {"a": 1}, "conversation": None, "prompt": {}},
    )
    assert resp.store is False
    assert resp.output_text == "Hello!"
