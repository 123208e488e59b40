"""The transcoder against the official SDK types and accumulator, the naive baseline,
and the non-streaming replay (``complete``)."""

from __future__ import annotations

import copy
import pathlib
import sys
from typing import Any

import orjson
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai._types import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from transcript import STREAMS, check, golden, make, run

sys.path.insert(0, str(pathlib.Path(__file__).parents[2]))
from bench.naive_transcoder import NaiveTranscoder  # noqa: E402

EVENT = pydantic.TypeAdapter(ResponseStreamEvent)
NAMES = sorted(p.stem for p in STREAMS.glob("*.sse"))


def normalised(events: list[dict]) -> list[dict]:
    """Decoder error texts differ between msgspec and orjson: keep only the prefix."""
    events = copy.deepcopy(events)
    error = events[-1]["response"]["error"]
    if error and error["message"].startswith("upstream sent a malformed"):
        error["message"] = error["message"].split(":")[0]
    return events


@pytest.mark.parametrize("name", NAMES)
def test_naive_baseline_is_equivalent(name: str) -> None:
    data = golden(name)
    chosen = check(run([data]))
    naive = check(run([data], impl=NaiveTranscoder))
    assert normalised(chosen) == normalised(naive)
    assert check(run([data[i : i + 3] for i in range(0, len(data), 3)], NaiveTranscoder)) == naive


@pytest.mark.parametrize("name", NAMES)
def test_events_validate_against_sdk_types(name: str) -> None:
    events = check(run([golden(name)]))
    for event in events:
        parsed = EVENT.validate_python(event)
        assert parsed.type == event["type"]
    for event in (events[0], events[1], events[-1]):
        Response.model_validate(event["response"])


@pytest.mark.parametrize("name", NAMES)
def test_sdk_stream_accumulator_accepts_the_stream(name: str) -> None:
    events = check(run([golden(name)]))
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for event in events:
        state.handle_event(EVENT.validate_python(event))
    final = events[-1]["response"]
    if final["status"] == "completed":
        response = state._completed_response
        assert response is not None
        dumped = response.model_dump(mode="json", exclude_unset=True)["output"]
        assert without_parsed(dumped) == final["output"]
        messages = [i for i in final["output"] if i["type"] == "message"]
        texts = [p.get("text", "") for i in messages for p in i["content"]]
        assert response.output_text == "".join(texts)


def without_parsed(value: Any) -> Any:
    """The SDK's parsed views add ``parsed`` / ``parsed_arguments`` keys: drop them."""
    if isinstance(value, list):
        return [without_parsed(v) for v in value]
    if isinstance(value, dict):
        return {k: without_parsed(v) for k, v in value.items() if not k.startswith("parsed")}
    return value


# ---- complete(): a non-streaming chat.completion replayed as the same stream ------------


def completion(message: dict, finish: str = "stop", usage: bool = True) -> bytes:
    doc: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
    }
    if usage:
        doc["usage"] = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    return orjson.dumps(doc)


def stream_of(delta: dict, finish: str = "stop", usage: bool = True) -> bytes:
    chunks = [{"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}]
    if usage:
        chunks.append(
            {
                "choices": [],
                "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
            }
        )
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


CALLS = [
    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
    {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
]
MESSAGES = {
    "text": ({"role": "assistant", "content": 'Hello "there" \u00e9\U0001f600'}, "stop"),
    "text_and_calls": (
        {"role": "assistant", "content": "Checking.", "tool_calls": CALLS},
        "tool_calls",
    ),
    "calls_only": ({"role": "assistant", "content": None, "tool_calls": CALLS}, "tool_calls"),
    "refusal": ({"role": "assistant", "content": None, "refusal": "No."}, "stop"),
    "length": ({"role": "assistant", "content": "cut"}, "length"),
    "empty": ({"role": "assistant", "content": ""}, "stop"),
    "reasoning_text": (
        {"role": "assistant", "content": "4", "reasoning_content": "2+2 \u00e9"},
        "stop",
    ),
    "reasoning_calls": (
        {"role": "assistant", "content": None, "reasoning": "plan", "tool_calls": CALLS},
        "tool_calls",
    ),
}


def replay(body: bytes, impl: Any = None) -> bytes:
    tx = make(impl) if impl else make()
    return tx.start() + tx.complete(body) + tx.finish()


@pytest.mark.parametrize("name", sorted(MESSAGES))
@pytest.mark.parametrize("usage", [True, False])
def test_complete_replays_the_streamed_sequence(name: str, usage: bool) -> None:
    message, finish = MESSAGES[name]
    replayed = check(replay(completion(message, finish, usage)))
    delta = {k: v for k, v in message.items() if k != "role"}
    for position, call in enumerate(delta.get("tool_calls", [])):
        call["index"] = position
    assert replayed == check(run([stream_of(delta, finish, usage)]))
    assert replayed == check(replay(completion(message, finish, usage), NaiveTranscoder))
    for event in replayed:
        EVENT.validate_python(event)


def test_complete_arguments_as_object() -> None:
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": {"a": [1, 2]}}}]
    events = check(replay(completion({"content": None, "tool_calls": calls}, "tool_calls")))
    assert events[-1]["response"]["output"][0]["arguments"] == '{"a":[1,2]}'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"choices": [', "upstream sent a malformed completion"),
        (b'{"choices": []}', "upstream returned no choices"),
        (b'{"error": {"message": "bad things"}}', "upstream error: bad things"),
        (b'{"error": "plain"}', "upstream error: plain"),
    ],
)
def test_complete_failures(body: bytes, message: str) -> None:
    events = check(replay(body))
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["message"].startswith(message)
    Response.model_validate(events[-1]["response"])


# ---- random upstreams: invariants, SDK types and the baseline agree ----------------------

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=6)
FACT = st.one_of(
    st.tuples(st.just("content"), TEXT),
    st.tuples(st.just("content"), st.none()),
    st.tuples(st.just("refusal"), TEXT),
    st.tuples(st.just("reasoning_content"), TEXT),
    st.tuples(st.just("reasoning"), TEXT),
    st.tuples(
        st.just("tool"),
        st.integers(0, 2),
        st.sampled_from([None, "call_a", "call_b"]),
        st.sampled_from([None, "f", "g"]),
        st.sampled_from([None, "", "{", '"k": 1', "}", "[1]", "{}", 'x"\\u00e9']),
    ),
    st.tuples(
        st.just("finish"), st.sampled_from(["stop", "length", "tool_calls", "content_filter"])
    ),
    st.tuples(st.just("usage")),
    st.tuples(st.just("done")),
)


def upstream_bytes(facts: list[tuple]) -> bytes:
    out = []
    for fact in facts:
        kind = fact[0]
        if kind == "tool":
            _, index, call_id, name, args = fact
            function = {k: v for k, v in (("name", name), ("arguments", args)) if v is not None}
            call: dict[str, Any] = {"index": index, "function": function}
            if call_id:
                call["id"] = call_id
            doc: dict[str, Any] = {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}
        elif kind == "finish":
            doc = {"choices": [{"index": 0, "delta": {}, "finish_reason": fact[1]}]}
        elif kind == "usage":
            doc = {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
        elif kind == "done":
            out.append(b"data: [DONE]\n\n")
            continue
        else:
            doc = {"choices": [{"index": 0, "delta": {kind: fact[1]}, "finish_reason": None}]}
        out.append(b"data: " + orjson.dumps(doc) + b"\n\n")
    return b"".join(out)


@settings(max_examples=150, deadline=None)
@given(facts=st.lists(FACT, max_size=14), cut=st.integers(0, 10_000))
def test_random_upstreams(facts: list[tuple], cut: int) -> None:
    data = upstream_bytes(facts)
    out = run([data])
    events = check(out)
    cut %= len(data) + 1
    assert run([data[:cut], data[cut:]]) == out
    assert normalised(events) == normalised(check(run([data], impl=NaiveTranscoder)))
    for event in events:
        EVENT.validate_python(event)
    Response.model_validate(events[-1]["response"])
