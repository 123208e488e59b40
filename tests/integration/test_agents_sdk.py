"""The OpenAI Agents SDK (openai-agents) as a client of the gateway, with a reasoning
deployment: the scripted demo upstream reasons before each answer; a run calls a
function tool and answers; a second run on the first's items (reasoning sealed with
``encrypted_content`` and replayed) answers again."""

from __future__ import annotations

from typing import Any

import agents
import pytest
from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool
from openai.types.shared import Reasoning

from gateway.demo.upstream import DemoOptions, make_handler
from tests.conftest import make_config, sdk

SCRIPT = [
    {"reasoning": "The user wants the weather: ask the tool.",
     "calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
    {"reasoning": "The tool answered.", "text": "It is sunny in Paris."},
]  # fmt: skip
CALLED: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    CALLED.append(city)
    return f"sunny in {city}"


@pytest.fixture(autouse=True)
def no_tracing() -> Any:
    agents.set_tracing_disabled(True)  # traces would go to OpenAI's servers
    yield
    CALLED.clear()


async def test_agent_run_with_a_function_tool_and_reasoning(
    aiohttp_raw_server: Any, start_gateway: Any
) -> None:
    options = DemoOptions(models=("demo",), script=SCRIPT)
    server = await aiohttp_raw_server(make_handler(options))
    url = await start_gateway(make_config(str(server.make_url("/v1")), models=("demo",)))
    async with sdk(url) as client:
        agent = Agent(
            name="weather",
            instructions="Answer with the weather.",
            model=OpenAIResponsesModel(model="demo", openai_client=client),
            model_settings=ModelSettings(
                reasoning=Reasoning(effort="low"),
                store=False,
                response_include=["reasoning.encrypted_content"],
            ),
            tools=[get_weather],
        )
        first = await Runner.run(agent, "What is the weather in Paris?", max_turns=4)
        assert first.final_output == "It is sunny in Paris."
        assert CALLED == ["Paris"]
        kinds = [item.type for item in first.new_items]
        assert kinds == [
            "reasoning_item",
            "tool_call_item",
            "tool_call_output_item",
            "reasoning_item",
            "message_output_item",
        ]
        history = first.to_input_list() + [{"role": "user", "content": "And tomorrow?"}]
        second = await Runner.run(agent, history, max_turns=4)
    assert second.final_output == "It is sunny in Paris."  # the script's last turn
    bodies = [r["body"] for r in options.received]
    assert len(bodies) == 3
    assert all(b["reasoning_effort"] == "low" for b in bodies)
    replayed = bodies[2]["messages"]
    thoughts = [m.get("reasoning_content") for m in replayed if m["role"] == "assistant"]
    assert thoughts == ["The user wants the weather: ask the tool.", "The tool answered."]
    assert replayed[-1] == {"role": "user", "content": "And tomorrow?"}
