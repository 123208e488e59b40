"""The demo upstream's reasoning mode (``--reasoning``): reasoning streamed before the
answer in the field asked for, on the message when not streamed, off on request."""

from __future__ import annotations

from typing import Any

import pytest
from test_demo import HELLO, WEATHER_TOOL, post, stream

from gateway.demo.upstream import DemoOptions, make_handler, parse_args


async def demo(aiohttp_raw_server: Any, aiohttp_client: Any, **kw: Any) -> Any:
    server = await aiohttp_raw_server(make_handler(DemoOptions(**kw)))
    return await aiohttp_client(server)


def deltas(events: list[Any]) -> list[dict]:
    return [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_streams_before_the_text(
    aiohttp_raw_server: Any, aiohttp_client: Any, field: str
) -> None:
    client = await demo(aiohttp_raw_server, aiohttp_client, reasoning=field, deltas=4)
    events = await stream(client, {**HELLO, "stream_options": {"include_usage": True}})
    kinds = [next(iter(k for k in d if k != "role"), None) for d in deltas(events)]
    assert kinds[1:5] == [field] * 4  # (0: the role chunk)
    assert set(kinds[5:-1]) == {"content"} and kinds[-1] is None  # (-1: the finish chunk)
    thought = "".join(d[field] for d in deltas(events) if field in d)
    assert "Say hello" in thought
    status, body = await post(client, HELLO)
    message = body["choices"][0]["message"]
    assert status == 200 and message[field] == thought
    assert "You said: Say hello" in message["content"]
    usage = body["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert events[-2]["usage"] == usage


async def test_reasoning_before_a_tool_call(aiohttp_raw_server: Any, aiohttp_client: Any) -> None:
    client = await demo(aiohttp_raw_server, aiohttp_client, reasoning="reasoning_content")
    body = {**HELLO, "tools": [WEATHER_TOOL]}
    kinds = [next(iter(d), None) for d in deltas(await stream(client, body))[1:]]
    assert kinds[0] == "reasoning_content" and "tool_calls" in kinds
    assert kinds.index("tool_calls") > max(
        i for i, k in enumerate(kinds) if k == "reasoning_content"
    )


@pytest.mark.parametrize(
    "off",
    [{"reasoning_effort": "none"}, {"chat_template_kwargs": {"enable_thinking": False}}],
)
async def test_thinking_turned_off(aiohttp_raw_server: Any, aiohttp_client: Any, off: dict) -> None:
    client = await demo(aiohttp_raw_server, aiohttp_client, reasoning="reasoning_content")
    assert not any("reasoning_content" in d for d in deltas(await stream(client, {**HELLO, **off})))
    _, body = await post(client, {**HELLO, **off})
    assert "reasoning_content" not in body["choices"][0]["message"]
    assert "completion_tokens_details" not in body["usage"]


async def test_fixed_mode_reasoning_streams_exactly_deltas(
    aiohttp_raw_server: Any, aiohttp_client: Any
) -> None:
    client = await demo(
        aiohttp_raw_server,
        aiohttp_client,
        deltas=64,
        fixed=True,
        record=False,
        reasoning="reasoning",
    )
    events = await stream(client, HELLO)
    got = deltas(events)
    assert [list(d) for d in got[1:65]] == [["reasoning"]] * 64
    assert got[65] == {"content": "Done."}


def test_cli_flag() -> None:
    assert parse_args([]).reasoning == ""
    assert parse_args(["--reasoning"]).reasoning == "reasoning_content"
    assert parse_args(["--reasoning", "reasoning"]).reasoning == "reasoning"
