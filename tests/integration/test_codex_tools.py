"""Custom, namespace and hosted tools through a real gateway, with the official SDK:
what reaches the upstream, the calls that come back (streamed and not), their replay,
and the hosted tools' refusal or drop (logged once per request)."""

from __future__ import annotations

import logging
from typing import Any

import openai
import orjson
import pytest

from tests.conftest import DONE, FakeUpstream, chunk, completion, make_config, sdk, usage_chunk

PATCH = '*** Begin Patch\n*** Add File: hello.txt\n+hi "there"\n*** End Patch\n'
TOOLS: list[Any] = [
    {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
    {
        "type": "custom",
        "name": "apply_patch",
        "description": "Edit files.",
        "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/s"},
    },
    {
        "type": "namespace",
        "name": "multi_agent_v1",
        "description": "Agents.",
        "tools": [{"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}}],
    },
]


def call_chunks(name: str, arguments: str) -> list[bytes]:
    opening = {"index": 0, "id": "call_9", "type": "function", "function": {"name": name}}
    out = [chunk({"role": "assistant", "content": None}), chunk({"tool_calls": [opening]})]
    for k in range(0, len(arguments), 5):
        piece = {"index": 0, "function": {"arguments": arguments[k : k + 5]}}
        out.append(chunk({"tool_calls": [piece]}))
    return out + [chunk({}, "tool_calls"), usage_chunk(), DONE]


async def test_custom_tool_call_streamed_to_the_sdk(
    upstream: FakeUpstream, start_gateway: Any
) -> None:
    url = await start_gateway(make_config(upstream.url))
    arguments = orjson.dumps({"input": PATCH}).decode()
    upstream.reply = upstream.sse_reply(call_chunks("apply_patch", arguments))
    async with sdk(url) as client:
        async with client.responses.stream(model="m1", input="patch it", tools=TOOLS) as stream:
            deltas = []
            async for event in stream:
                if event.type == "response.custom_tool_call_input.delta":
                    deltas.append(event.delta)
            final = await stream.get_final_response()
    (item,) = final.output
    assert item.type == "custom_tool_call"
    assert (item.name, item.call_id, item.input) == ("apply_patch", "call_9", PATCH)
    assert "".join(deltas) == PATCH and len(deltas) > 3
    sent = upstream.received[0]["tools"]
    assert [t["function"]["name"] for t in sent] == [
        "exec_command",
        "apply_patch",
        "multi_agent_v1__spawn_agent",
    ]
    assert sent[1]["function"]["parameters"]["required"] == ["input"]


async def test_namespace_call_and_its_replay(upstream: FakeUpstream, start_gateway: Any) -> None:
    url = await start_gateway(make_config(upstream.url))
    call = {
        "id": "call_5",
        "type": "function",
        "function": {"name": "multi_agent_v1__spawn_agent", "arguments": '{"task": "t"}'},
    }
    upstream.reply = upstream.json_reply(completion(None, finish="tool_calls", tool_calls=[call]))
    async with sdk(url) as client:
        first = await client.responses.create(model="m1", input="go", tools=TOOLS)
        (item,) = first.output
        assert item.type == "function_call"
        assert (item.name, item.namespace, item.arguments) == (
            "spawn_agent",
            "multi_agent_v1",
            '{"task": "t"}',
        )
        upstream.reply = upstream.json_reply(completion("Spawned."))
        history: list[Any] = [{"role": "user", "content": "go"}]
        history += [i.model_dump(exclude_none=True) for i in first.output]
        history.append({"type": "function_call_output", "call_id": "call_5", "output": "ok"})
        second = await client.responses.create(model="m1", input=history, tools=TOOLS)
    assert second.output_text == "Spawned."
    replayed = upstream.received[1]["messages"]
    assert replayed[1]["tool_calls"][0]["function"] == call["function"]
    assert replayed[2] == {"role": "tool", "tool_call_id": "call_5", "content": "ok"}


async def test_custom_call_replayed_with_its_output(
    upstream: FakeUpstream, start_gateway: Any
) -> None:
    url = await start_gateway(make_config(upstream.url))
    arguments = orjson.dumps({"input": PATCH}).decode()
    call = {
        "id": "call_7",
        "type": "function",
        "function": {"name": "apply_patch", "arguments": arguments},
    }
    upstream.reply = upstream.json_reply(completion(None, finish="tool_calls", tool_calls=[call]))
    async with sdk(url) as client:
        first = await client.responses.create(model="m1", input="patch", tools=TOOLS)
        (item,) = first.output
        assert item.type == "custom_tool_call" and item.input == PATCH
        upstream.reply = upstream.json_reply(completion("Patched."))
        history: list[Any] = [
            {"role": "user", "content": "patch"},
            item.model_dump(exclude_none=True),
        ]
        history.append({"type": "custom_tool_call_output", "call_id": "call_7", "output": "Done!"})
        second = await client.responses.create(model="m1", input=history, tools=TOOLS)
    assert second.output_text == "Patched."
    replayed = upstream.received[1]["messages"]
    assert orjson.loads(replayed[1]["tool_calls"][0]["function"]["arguments"]) == {"input": PATCH}
    assert replayed[2] == {"role": "tool", "tool_call_id": "call_7", "content": "Done!"}


async def test_hosted_tool_refused_with_the_way_out(
    upstream: FakeUpstream, start_gateway: Any
) -> None:
    url = await start_gateway(make_config(upstream.url))
    async with sdk(url) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.responses.create(
                model="m1", input="hi", tools=[*TOOLS, {"type": "web_search"}]
            )
    error = info.value.body
    assert isinstance(error, dict) and error["param"] == "tools[3].type"
    assert 'web_search="disabled"' in error["message"]
    assert upstream.received == []


async def test_hosted_tools_dropped_and_logged_once(
    upstream: FakeUpstream, start_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = await start_gateway(make_config(upstream.url, hosted_tools="drop"))
    tools = [{"type": "web_search"}, *TOOLS, {"type": "tool_search"}]
    with caplog.at_level(logging.INFO, logger="gateway"):
        async with sdk(url) as client:
            answer = await client.responses.create(model="m1", input="hi", tools=tools)
    assert answer.output_text == "Hello!"
    assert len(upstream.received[0]["tools"]) == 3
    lines = [r.getMessage() for r in caplog.records if "hosted tool" in r.getMessage()]
    assert len(lines) == 1 and "2 hosted tool(s) dropped (web_search, tool_search)" in lines[0]
