"""The demo upstream's scripted mode (gateway/demo/script.py): alone, and behind the
gateway driving the SDK through a shell call, a patch (a custom tool) and an answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.demo.script import ScriptError, parse_script
from gateway.demo.upstream import DemoOptions, make_handler
from tests.conftest import make_config, sdk

PATCH = "*** Begin Patch\n*** Add File: notes.txt\n+scripted\n*** End Patch\n"
SCRIPT = [
    {"reasoning": "Look around first.", "calls": [{"name": "exec_command", "arguments": {"cmd": "ls"}}]},
    {"text": "Now the edit.", "calls": [{"name": "apply_patch", "input": PATCH}]},
    {"reasoning": "Both worked.", "text": "Created notes.txt."},
]  # fmt: skip
TOOLS: list[Any] = [
    {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
    {"type": "custom", "name": "apply_patch", "description": "Edit files."},
    {
        "type": "namespace",
        "name": "agents",
        "description": "Agents.",
        "tools": [{"type": "function", "name": "spawn_agent"}],
    },
]


@pytest.fixture
async def scripted(aiohttp_raw_server: Any, start_gateway: Any) -> tuple[DemoOptions, Any]:
    options = DemoOptions(models=("demo",), script=parse_script(json.dumps(SCRIPT)))
    server = await aiohttp_raw_server(make_handler(options))
    url = await start_gateway(make_config(str(server.make_url("/v1")), models=("demo",)))
    client = sdk(url)
    yield options, client
    await client.close()


async def ask(client: Any, history: list[Any], stream: bool) -> Any:
    if not stream:
        return await client.responses.create(model="demo", input=history, tools=TOOLS)
    async with client.responses.stream(model="demo", input=history, tools=TOOLS) as s:
        return await s.get_final_response()


@pytest.mark.parametrize("stream", [False, True])
async def test_the_script_walks_an_agent_through_a_task(
    scripted: tuple[DemoOptions, Any], stream: bool
) -> None:
    options, client = scripted
    history: list[Any] = [{"role": "user", "content": "make notes.txt"}]
    first = await ask(client, history, stream)
    calls = [i for i in first.output if i.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("exec_command", {"cmd": "ls"})]
    history += [i.model_dump(exclude_none=True) for i in first.output if i.type != "reasoning"]
    history.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "."})
    second = await ask(client, history, stream)
    (patch,) = [i for i in second.output if i.type == "custom_tool_call"]
    assert (patch.name, patch.input) == ("apply_patch", PATCH)
    assert second.output_text == "Now the edit."
    history += [i.model_dump(exclude_none=True) for i in second.output if i.type != "reasoning"]
    history.append({"type": "custom_tool_call_output", "call_id": patch.call_id, "output": "ok"})
    third = await ask(client, history, stream)
    assert third.output_text == "Created notes.txt."
    assert [i.type for i in third.output][-1] == "message"
    assert [m["role"] for m in options.received[2]["body"]["messages"]] == [
        "user", "assistant", "tool", "assistant", "tool",
    ]  # fmt: skip


async def test_a_call_by_a_namespaced_function_own_name(
    aiohttp_raw_server: Any, start_gateway: Any
) -> None:
    options = DemoOptions(models=("demo",), script=[{"calls": [{"name": "spawn_agent"}]}])
    server = await aiohttp_raw_server(make_handler(options))
    url = await start_gateway(make_config(str(server.make_url("/v1")), models=("demo",)))
    async with sdk(url) as client:
        answer = await client.responses.create(model="demo", input="go", tools=TOOLS)
    (call,) = answer.output
    assert call.type == "function_call"
    assert (call.name, call.namespace) == ("spawn_agent", "agents")


@pytest.mark.parametrize(
    "bad",
    [
        "{}",
        "[]",
        '[{"say": 1}]',
        '[{"calls": [{"arguments": {}}]}]',
        '[{"calls": [{"name": "a", "input": 1}]}]',
    ],
)
def test_bad_scripts(bad: str) -> None:
    with pytest.raises(ScriptError):
        parse_script(bad)
