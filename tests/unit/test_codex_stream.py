"""The stream side of custom and namespace tools: a call of a custom tool streams as a
``custom_tool_call`` (``response.custom_tool_call_input.delta`` / ``.done``), a call of
a namespace's function as a ``function_call`` with its own name and ``namespace``;
fed whole, byte by byte and split at random, validated by the SDK's event types and
its stream accumulator; the non-streamed answer holds the same items."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import orjson
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai._types import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from transcript import CountingIds, base, check

from gateway.core.capabilities import Capabilities
from gateway.core.stream.custom_input import CustomInput
from gateway.core.stream.transcoder import Transcoder
from gateway.core.translate.response import to_response
from gateway.core.translate.tools import ToolNames, to_tool_set
from gateway.core.wire.responses import Tool

EVENT = pydantic.TypeAdapter(ResponseStreamEvent)
TOOLS = msgspec.json.decode(
    orjson.dumps(
        [
            {"type": "function", "name": "exec_command", "parameters": {"type": "object"}},
            {
                "type": "custom",
                "name": "apply_patch",
                "description": "Edit files.",
                "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"},
            },
            {
                "type": "namespace",
                "name": "multi_agent_v1",
                "description": "Agents.",
                "tools": [{"type": "function", "name": "spawn_agent"}],
            },
        ]
    ),
    type=list[Tool],
)
NAMES = to_tool_set(TOOLS, Capabilities()).names
PATCH = '*** Begin Patch\n*** Add File: a.txt\n+h\u00e9llo "q" \\ \U0001f600\ttab\n*** End Patch\n'


def chunk(delta: dict, finish: str | None = None) -> bytes:
    doc = {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def call_stream(name: str, arguments: str, pieces: list[str] | None = None) -> bytes:
    """One tool call whose arguments come in ``pieces`` (default: 7 characters each)."""
    if pieces is None:
        pieces = [arguments[i : i + 7] for i in range(0, len(arguments), 7)]
    assert "".join(pieces) == arguments
    opening = {"index": 0, "id": "call_1", "type": "function", "function": {"name": name}}
    out = [chunk({"role": "assistant", "content": None}), chunk({"tool_calls": [opening]})]
    for piece in pieces:
        out.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    out.append(chunk({}, "tool_calls"))
    return b"".join(out) + b"data: [DONE]\n\n"


def run(pieces: list[bytes], names: ToolNames = NAMES) -> bytes:
    tx = Transcoder(base(), now=lambda: 1.0, ids=CountingIds(), names=names)
    out = [tx.start(), *(tx.feed(p) for p in pieces), tx.finish()]
    assert tx.done
    return b"".join(out)


def validated(out: bytes) -> list[dict]:
    """Our invariants, every event as the SDK's type, and the SDK's accumulator."""
    events = check(out)
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for event in events:
        state.handle_event(EVENT.validate_python(event))
    final = Response.model_validate(events[-1]["response"])
    assert final.status == "completed"
    return events


def custom_events(events: list[dict]) -> tuple[str, str]:
    deltas = "".join(
        e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"
    )
    (done,) = [e for e in events if e["type"] == "response.custom_tool_call_input.done"]
    return deltas, done["input"]


def splits(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(12, len(data) - 1)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


ARGUMENTS = orjson.dumps({"input": PATCH}).decode()


@pytest.mark.parametrize("feed", ["whole", "bytes", "random"])
def test_custom_tool_call_streams_its_input(feed: str) -> None:
    data = call_stream("apply_patch", ARGUMENTS)
    if feed == "whole":
        pieces = [data]
    elif feed == "bytes":
        pieces = [data[i : i + 1] for i in range(len(data))]
    else:
        pieces = splits(data, random.Random(7))
    out = run(pieces)
    assert out == run([data])
    events = validated(out)
    item = events[-1]["response"]["output"][0]
    assert item == {
        "type": "custom_tool_call",
        "id": "ctc_0000",
        "call_id": "call_1",
        "name": "apply_patch",
        "input": PATCH,
    }
    deltas, done = custom_events(events)
    assert deltas == done == PATCH
    assert sum(e["type"] == "response.custom_tool_call_input.delta" for e in events) > 3
    assert not any(e["type"].startswith("response.function_call_arguments") for e in events)


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(1, len(ARGUMENTS) - 1), max_size=30, unique=True))
def test_custom_input_split_anywhere_in_the_arguments(cuts: list[int]) -> None:
    """The upstream cuts the arguments anywhere: inside an escape, a \\u sequence,
    a surrogate pair (here, an ASCII-only arguments text with \\u escapes)."""
    escaped = (
        PATCH.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\t", "\\t")
        .replace("\U0001f600", "\\ud83d\\ude00")
        .replace("\u00e9", "\\u00e9")
    )
    arguments = '{"input": "' + escaped + '"}'
    assert arguments.isascii() and orjson.loads(arguments)["input"] == PATCH
    bounds = [0, *sorted(c for c in cuts if c < len(arguments)), len(arguments)]
    pieces = [arguments[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    events = validated(run([call_stream("apply_patch", arguments, pieces)]))
    deltas, done = custom_events(events)
    assert deltas == done == PATCH
    assert events[-1]["response"]["output"][0]["input"] == PATCH


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{ "input" : "x\\ny" }', "x\ny"),
        ('"just a string"', "just a string"),  # a JSON string
        ("*** Begin Patch\n*** End Patch\n", "*** Begin Patch\n*** End Patch\n"),  # raw text
        ('{"other": 1, "input": "late"}', "late"),  # input not first: read whole
        ('{"input": "line\nraw newline"}', "line\nraw newline"),  # unescaped control char
        ('{"input": "cut off', "cut off"),  # finish_reason before the string ended
    ],
)
def test_custom_input_of_other_shapes(arguments: str, expected: str) -> None:
    pieces = [arguments[i : i + 3] for i in range(0, len(arguments), 3)]
    events = validated(run([call_stream("apply_patch", arguments, pieces)]))
    deltas, done = custom_events(events)
    assert deltas == done == expected


def test_custom_input_machine_alone() -> None:
    reader = CustomInput()
    got = [
        reader.feed(p) for p in ['{"in', 'put": "a\\', "n", "b\\u00", "e9\\ud83d", "\\ude00", '"}']
    ]
    assert got == ["", "a", "\n", "b", "\u00e9", "\U0001f600", ""]
    assert reader.finish() == "" and reader.input == "a\nb\u00e9\U0001f600"


def test_namespace_call_comes_back_with_its_namespace() -> None:
    upstream = NAMES.upstream("spawn_agent", "multi_agent_v1")
    assert upstream == "multi_agent_v1__spawn_agent"
    data = call_stream(upstream, '{"task": "x"}')
    out = run([data])
    assert out == run([data[i : i + 1] for i in range(len(data))])
    events = validated(out)
    item = events[-1]["response"]["output"][0]
    assert item["type"] == "function_call"
    assert (item["name"], item["namespace"], item["arguments"]) == (
        "spawn_agent",
        "multi_agent_v1",
        '{"task": "x"}',
    )
    (done,) = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert done["name"] == "spawn_agent"


def test_plain_function_call_is_unchanged() -> None:
    events = validated(run([call_stream("exec_command", '{"cmd": "ls"}')]))
    item = events[-1]["response"]["output"][0]
    assert item["name"] == "exec_command" and "namespace" not in item


def completion(calls: list[tuple[str, str]]) -> bytes:
    tool_calls = [
        {"id": f"call_{k}", "type": "function", "function": {"name": n, "arguments": a}}
        for k, (n, a) in enumerate(calls)
    ]
    message = {"role": "assistant", "content": None, "tool_calls": tool_calls}
    choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
    return orjson.dumps({"id": "c", "object": "chat.completion", "choices": [choice]})


def test_non_streamed_answer_holds_the_same_items() -> None:
    calls = [
        ("exec_command", '{"cmd": "ls"}'),
        ("apply_patch", ARGUMENTS),
        ("multi_agent_v1__spawn_agent", "{}"),
    ]
    body = completion(calls)
    answer = to_response(body, base(), now=lambda: 1.0, ids=CountingIds(), names=NAMES)
    whole = orjson.loads(orjson.dumps(answer))
    Response.model_validate(whole)
    tx = Transcoder(base(), now=lambda: 1.0, ids=CountingIds(), names=NAMES)
    replayed = validated(tx.start() + tx.complete(body) + tx.finish())
    streamed = replayed[-1]["response"]["output"]
    assert whole["output"] == streamed
    assert [i["type"] for i in streamed] == ["function_call", "custom_tool_call", "function_call"]
    assert streamed[1]["input"] == PATCH
    assert streamed[2]["namespace"] == "multi_agent_v1"
