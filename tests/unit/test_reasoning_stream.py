"""Reasoning through the transcoder: both field names, next to text and tool calls, on the
hot path (fed whole, per event, byte by byte, split at random), the summary form and
sealed content; every event checked against the official SDK's types and accumulator."""

from __future__ import annotations

import pathlib
import random
import sys
from typing import Any

import orjson
import pydantic
import pytest
from openai._types import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from test_transcoder_sdk import without_parsed
from transcript import ECHO, NOW, CountingIds, check, expand, golden, make, run, summary

from gateway.core.stream.transcoder import Transcoder
from gateway.core.translate.response import to_response
from gateway.core.wire import output

sys.path.insert(0, str(pathlib.Path(__file__).parents[2]))
from bench.naive_transcoder import NaiveTranscoder  # noqa: E402

EVENT = pydantic.TypeAdapter(ResponseStreamEvent)
HEAD = {"id": "chatcmpl-r", "object": "chat.completion.chunk", "created": 5, "model": "q"}


def chunk(delta: dict, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return b"data: " + orjson.dumps({**HEAD, "choices": [choice]}) + b"\n\n"


def tail(reasoning_tokens: int | None = None, finish: str = "stop") -> bytes:
    usage: dict[str, Any] = {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}
    if reasoning_tokens is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    doc = {**HEAD, "choices": [], "usage": usage}
    return chunk({}, finish) + b"data: " + orjson.dumps(doc) + b"\n\ndata: [DONE]\n\n"


def sdk_checked(out: bytes) -> list[dict]:
    """The invariants, every event as the SDK's type, and the SDK's accumulator."""
    events = check(out)
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for event in events:
        state.handle_event(EVENT.validate_python(event))
    final = events[-1]["response"]
    Response.model_validate(final)
    if final["status"] == "completed":
        response = state._completed_response
        assert response is not None
        dumped = response.model_dump(mode="json", exclude_unset=True)["output"]
        assert without_parsed(dumped) == final["output"]
    return events


def feeds(data: bytes, seed: int) -> list[list[bytes]]:
    """The same bytes: whole, per event, byte by byte, split at random."""
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), min(40, len(data) - 1)))
    bounds = [0, *cuts, len(data)]
    return [
        [data],
        [e + b"\n\n" for e in data.split(b"\n\n") if e],
        [data[i : i + 1] for i in range(len(data))],
        [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)],
    ]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_long_reasoning_then_text_on_the_hot_path(field: str) -> None:
    """A hundred and fifty vLLM-shaped reasoning deltas (template and plain paths) then text:
    the same output however the bytes arrive, and the naive baseline's events."""
    words = [
        f" w{i}" + ("\u00e9" if i % 7 == 0 else "") + ('"' if i % 11 == 0 else "")
        for i in range(150)
    ]
    data = chunk({"role": "assistant", "content": ""})
    data += b"".join(chunk({field: w}) for w in words)
    data += b"".join(chunk({"content": t}) for t in ["Done", " now."])
    data += tail(150)
    whole = run([data])
    for pieces in feeds(data, 1)[1:]:
        assert run(pieces) == whole
    events = sdk_checked(whole)
    assert events == check(run([data], impl=NaiveTranscoder))
    status, _, items, usage = summary(events)
    assert items == [
        ("reasoning", "completed", "".join(words)),
        ("message", "completed", "Done now."),
    ]
    assert events[-1]["response"]["usage"]["output_tokens_details"] == {"reasoning_tokens": 150}
    types = [e["type"] for e in events]
    assert types.count("response.reasoning_text.delta") == 150


@pytest.mark.parametrize(
    "name", ["reasoning", "reasoning_field", "reasoning_tool_call", "reasoning_between_calls"]
)
def test_golden_reasoning_streams_however_fed(name: str) -> None:
    data = golden(name)
    whole = run([data])
    for pieces in feeds(data, len(data)):
        assert run(pieces) == whole
    sdk_checked(whole)


def test_reasoning_delta_frame_is_exact() -> None:
    out = run([golden("reasoning")])
    assert out.split(b"\n\n")[3] == (
        b"event: response.reasoning_text.delta\n"
        b'data: {"type":"response.reasoning_text.delta","sequence_number":3,'
        b'"item_id":"rs_0000","output_index":0,"content_index":0,"delta":"Let me think."}'
    )


def test_escapes_in_reasoning_travel_verbatim() -> None:
    data = chunk({"reasoning_content": 'say "hi"\n\u00e9'}) + chunk({"content": "hi"}) + tail()
    raw = orjson.dumps('say "hi"\n\u00e9')
    assert raw in data
    assert b'"delta":' + raw + b"}" in run([data])


def test_one_delta_with_reasoning_and_text_gives_reasoning_first() -> None:
    data = chunk({"reasoning_content": "think", "content": "say"}) + tail()
    events = sdk_checked(run([data]))
    assert summary(events)[2] == [
        ("reasoning", "completed", "think"),
        ("message", "completed", "say"),
    ]


def test_both_field_names_in_one_delta_count_once() -> None:
    """Servers in transition send the same text under both names."""
    data = chunk({"reasoning_content": "a", "reasoning": "a"}) * 2 + tail()
    events = sdk_checked(run([data]))
    assert summary(events)[2] == [("reasoning", "completed", "aa")]


def test_empty_and_null_reasoning_fields_leave_text_alone() -> None:
    data = b"".join(
        chunk({"content": t, "reasoning_content": r, "reasoning": None})
        for t, r in [("a", None), ("b", ""), ("c", None)]
    )
    events = sdk_checked(run([data + tail()]))
    assert summary(events)[2] == [("message", "completed", "abc")]


def test_text_then_reasoning_then_text_gives_three_items() -> None:
    data = chunk({"content": "a"}) + chunk({"reasoning": "r"}) + chunk({"content": "b"}) + tail()
    types = expand(
        "created in_progress item+ part+ text text. part. item. item+ reason reason. item."
        " item+ part+ text text. part. item. completed"
    )
    events = sdk_checked(run([data]))
    assert [e["type"] for e in events] == types
    assert [i["type"] for i in events[-1]["response"]["output"]] == [
        "message",
        "reasoning",
        "message",
    ]


def test_reasoning_cut_by_the_upstream_is_incomplete() -> None:
    data = chunk({"reasoning_content": "half a tho"})  # then EOF
    events = sdk_checked(run([data]))
    final = events[-1]["response"]
    assert final["status"] == "failed"
    assert final["output"][0]["type"] == "reasoning"
    assert final["output"][0]["status"] == "incomplete"


def test_reasoning_then_length_is_incomplete() -> None:
    data = chunk({"reasoning_content": "long"}) + tail(finish="length")
    events = sdk_checked(run([data]))
    assert summary(events)[:3] == (
        "incomplete",
        "max_output_tokens",
        [("reasoning", "incomplete", "long")],
    )


# ---- sealed content and the summary form -----------------------------------------------


def fake_seal(token: bytes) -> str:
    """A stand-in for api.seal: shows exactly which bytes were handed over."""
    return "sealed:" + token.decode()


def transcoder(**kw: Any) -> Transcoder:
    base = output.response_base("resp_x", 1700000000, "demo", ECHO)
    return Transcoder(base, now=lambda: NOW, ids=CountingIds(), **kw)


def test_sealed_content_on_done_items_only() -> None:
    tx = transcoder(seal=fake_seal)
    out = tx.start() + tx.feed(golden("reasoning_between_calls")) + tx.finish()
    events = sdk_checked(out)
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert all("encrypted_content" not in i for i in added)
    sealed = [i["encrypted_content"] for i in done if i["type"] == "reasoning"]
    # the JSON string token of the text, escapes as the upstream wrote them
    assert sealed == ['sealed:"First look up the order."', 'sealed:"Then check the stock \\u00e9."']
    assert [i for i in events[-1]["response"]["output"]] == done


def test_summary_form_streams_summary_events() -> None:
    tx = transcoder(summary=True)
    out = tx.start() + tx.feed(golden("reasoning")) + tx.finish()
    events = sdk_checked(out)
    assert [e["type"] for e in events] == expand(
        "created in_progress item+ sum+ sum*2 sum. sump. item. item+ part+ text*2 text. part."
        " item. completed"
    )
    item = events[-1]["response"]["output"][0]
    text = "Let me think. 2+2 is 4."
    assert item["summary"] == [{"type": "summary_text", "text": text}]
    assert item["content"] == [{"type": "reasoning_text", "text": text}]
    assert events[3]["summary_index"] == 0 and events[3]["item_id"] == item["id"]


# ---- non-streaming ----------------------------------------------------------------------


@pytest.mark.parametrize("summary_text", [False, True])
@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_completion_with_reasoning(field: str, summary_text: bool) -> None:
    message = {"role": "assistant", "content": "4", field: "2+2 \u00e9", "tool_calls": None}
    body = {
        **HEAD,
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 1,
            "completion_tokens": 5,
            "completion_tokens_details": {"reasoning_tokens": 4},
        },
    }
    base = output.response_base("resp_x", 1700000000, "demo", ECHO)
    answer = to_response(
        orjson.dumps(body), base, ids=CountingIds(), seal=fake_seal, summary=summary_text
    )
    response = orjson.loads(orjson.dumps(answer))
    Response.model_validate(response)
    first, second = response["output"]
    assert first == {
        "type": "reasoning",
        "id": "rs_0000",
        "status": "completed",
        "summary": [{"type": "summary_text", "text": "2+2 \u00e9"}] if summary_text else [],
        "content": [{"type": "reasoning_text", "text": "2+2 \u00e9"}],
        "encrypted_content": 'sealed:"2+2 \u00e9"',
    }
    assert second["type"] == "message" and second["content"][0]["text"] == "4"
    assert response["usage"]["output_tokens_details"] == {"reasoning_tokens": 4}
    # the stream replay of the same completion gives the same items
    tx = make()
    events = sdk_checked(tx.start() + tx.complete(orjson.dumps(body)) + tx.finish())
    assert summary(events)[2] == [
        ("reasoning", "completed", "2+2 \u00e9"),
        ("message", "completed", "4"),
    ]


def test_a_run_of_reasoning_chunks_stops_before_the_text_that_ends_alike() -> None:
    """Text chunks end like reasoning chunks (only the field name differs): the run of
    reasoning chunks before them is still taken as one run."""
    from gateway.core.stream.chunk_template import ChunkTemplate
    from gateway.core.wire.chunks import PLAIN_DECODERS, REASONING_CONTENT

    def payload(delta: dict) -> bytes:
        return chunk(delta)[6:-2]

    first = payload({"reasoning_content": "a"})
    template = ChunkTemplate.learn(first, b'"a"', PLAIN_DECODERS[REASONING_CONTENT])
    assert template is not None
    reads = [payload({"reasoning_content": t}) for t in ("b", "c", "d")]
    reads += [payload({"content": "text"}), payload({"content": "more"}), b"[DONE]"]
    assert template.run(reads, 0) == (3, [b'"b"', b'"c"', b'"d"'])
    assert template.token(reads[3]) is None
