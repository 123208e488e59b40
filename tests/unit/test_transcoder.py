"""gateway.core.stream.transcoder: golden upstream streams, fed at every split, checked event by event."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transcript import STREAMS, check, expand, frames, golden, make, run, summary

from gateway.core.stream.transcoder import State, Transcoder
from gateway.core.wire import output

TEXT = "created in_progress item+ part+"
CLOSE_TEXT = "text. part. item."
CALL_GET_WEATHER = "chatcmpl-tool-5d1e9a0b7c3f4e2a"

# name -> (event types, (status, incomplete reason, output summary, (input, output) tokens))
GOLDEN: dict[str, tuple[str, tuple]] = {
    "text": (
        f"{TEXT} text*9 {CLOSE_TEXT} completed",
        (
            "completed",
            None,
            [("message", "completed", "Hello! How can I help you today?")],
            (36, 10),
        ),
    ),
    "function_call": (
        "created in_progress item+ args*5 args. item. completed",
        (
            "completed",
            None,
            [
                (
                    "get_weather",
                    "completed",
                    CALL_GET_WEATHER,
                    {"location": "Paris, France", "unit": "celsius"},
                )
            ],
            (120, 24),
        ),
    ),
    "text_parallel_tools": (
        f"{TEXT} text*5 {CLOSE_TEXT} item+ args*3 args. item. item+ args args. item."
        " item+ args*2 args. item. completed",
        (
            "completed",
            None,
            [
                ("message", "completed", "Let me check both cities."),
                ("get_weather", "completed", "call_A1b2C3d4E5f6G7h8I9j0K1l2", {"city": "Paris"}),
                (
                    "get_weather",
                    "completed",
                    "call_B9y8X7w6V5u4T3s2R1q0P9o8",
                    {"city": "Tokyo", "unit": "c"},
                ),
                ("get_time", "completed", "call_C5d6E7f8G9h0I1j2K3l4M5n6", {"tz": "Asia/Tokyo"}),
            ],
            (210, 61),
        ),
    ),
    "interleaved_tools": (
        "created in_progress item+ args*3 args. item. item+ args*3 args. item. completed",
        (
            "completed",
            None,
            [
                ("lookup", "completed", "call_first000000000000000000", {"id": 42}),
                (
                    "search",
                    "completed",
                    "call_second00000000000000000",
                    {"q": "cheap flights", "max": 3},
                ),
            ],
            (80, 30),
        ),
    ),
    "refusal": (
        f"{TEXT} refusal*4 refusal. part. item. completed",
        (
            "completed",
            None,
            [("message", "completed", "I'm sorry, but I can't help with that.")],
            (15, 9),
        ),
    ),
    "refusal_after_text": (
        f"{TEXT} text*2 text. part. part+ refusal*2 refusal. part. item. completed",
        (
            "completed",
            None,
            [("message", "completed", "Sure, here", "Actually, I can't.")],
            (15, 6),
        ),
    ),
    "length": (
        f"{TEXT} text*5 {CLOSE_TEXT} incomplete",
        (
            "incomplete",
            "max_output_tokens",
            [("message", "incomplete", "The history of Rome begins in 753")],
            (20, 5),
        ),
    ),
    "content_filter": (
        f"{TEXT} text*2 {CLOSE_TEXT} incomplete",
        ("incomplete", "content_filter", [("message", "incomplete", "Here is some")], (20, 2)),
    ),
    "eof_after_finish": (
        f"{TEXT} text*2 {CLOSE_TEXT} completed",
        ("completed", None, [("message", "completed", "Short answer.")], None),
    ),
    "eof_no_finish": (
        f"{TEXT} text*3 {CLOSE_TEXT} failed",
        ("failed", None, [("message", "incomplete", "This answer is cut off")], None),
    ),
    "eof_mid_event": (
        f"{TEXT} text*2 {CLOSE_TEXT} failed",
        ("failed", None, [("message", "incomplete", "Partial answer")], None),
    ),
    "error_chunk": (
        f"{TEXT} text*2 {CLOSE_TEXT} failed",
        ("failed", None, [("message", "incomplete", "Working on it")], None),
    ),
    "malformed": (
        f"{TEXT} text*2 {CLOSE_TEXT} failed",
        ("failed", None, [("message", "incomplete", "Fine so far")], None),
    ),
    "unicode": (
        f"{TEXT} text*7 {CLOSE_TEXT} completed",
        (
            "completed",
            None,
            [
                (
                    "message",
                    "completed",
                    "Na\u00efve caf\u00e9 \u4f60\u597d\uff0c\u4e16\u754c \U0001f600\U0001f680"
                    ' \u00bd \u2014 endCaf\u00e9 "quoted" and a back\\slashline one\nline two'
                    "\ttabbed / slashsmile \U0001f600 via escapes",
                )
            ],
            (12, 40),
        ),
    ),
    "keepalive_crlf": (
        f"{TEXT} text*3 {CLOSE_TEXT} completed",
        ("completed", None, [("message", "completed", "Over CRLF lines.")], None),
    ),
    "reasoning": (
        f"created in_progress item+ reason*2 reason. item. item+ part+ text*2 {CLOSE_TEXT}"
        " completed",
        (
            "completed",
            None,
            [
                ("reasoning", "completed", "Let me think. 2+2 is 4."),
                ("message", "completed", "The answer is 4."),
            ],
            (10, 20),
        ),
    ),
    "reasoning_field": (
        "created in_progress item+ reason*5 reason. item. item+ part+ text*4"
        f" {CLOSE_TEXT} completed",
        (
            "completed",
            None,
            [
                (
                    "reasoning",
                    "completed",
                    'The user greets me in French; answer "bonjour" politely.',
                ),
                ("message", "completed", "Bonjour ! Comment puis-je vous aider ?"),
            ],
            (14, 40),
        ),
    ),
    "reasoning_tool_call": (
        "created in_progress item+ reason*4 reason. item. item+ args*3 args. item. completed",
        (
            "completed",
            None,
            [
                ("reasoning", "completed", "I need the weather in Paris; call get_weather."),
                ("get_weather", "completed", "chatcmpl-tool-9a8b7c6d5e4f3a2b", {"city": "Paris"}),
            ],
            (120, 30),
        ),
    ),
    "reasoning_between_calls": (
        "created in_progress item+ reason*3 reason. item. item+ args*2 args. item."
        " item+ reason*3 reason. item. item+ args*2 args. item. completed",
        (
            "completed",
            None,
            [
                ("reasoning", "completed", "First look up the order."),
                ("lookup", "completed", "call_order00000000000000001", {"id": 42}),
                ("reasoning", "completed", "Then check the stock \u00e9."),
                ("stock", "completed", "call_stock00000000000000002", {"sku": "A-1"}),
            ],
            (200, 50),
        ),
    ),
    "tool_no_id": (
        "created in_progress item+ args args. item. completed",
        ("completed", None, [("get_time", "completed", "call_gen0000", {"tz": "UTC"})], None),
    ),
}

ERRORS = {
    "eof_no_finish": "upstream ended the stream before finishing",
    "eof_mid_event": "upstream ended the stream in the middle of an event",
    "error_chunk": "upstream error: The engine died unexpectedly (EngineDeadError).",
    "malformed": "upstream sent a malformed chunk: ",
}


def test_every_golden_stream_is_listed() -> None:
    assert sorted(p.stem for p in STREAMS.glob("*.sse")) == sorted(GOLDEN)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_stream(name: str) -> None:
    types, expected = GOLDEN[name]
    events = check(run([golden(name)]))
    assert [e["type"] for e in events] == expand(types)
    assert summary(events) == expected
    final = events[-1]["response"]
    assert final["completed_at"] == (1700000001 if final["status"] == "completed" else None)
    if final["status"] == "failed":
        assert final["error"]["code"] == "server_error"
        assert final["error"]["message"].startswith(ERRORS[name])
        assert final["usage"] is None
    else:
        assert final["error"] is None


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_stream_at_every_split(name: str) -> None:
    data = golden(name)
    whole = run([data])
    assert run(data[i : i + 1] for i in range(len(data))) == whole
    step = 1 if len(data) < 1800 else 5
    for cut in range(1, len(data), step):
        assert run([data[:cut], data[cut:]]) == whole, cut


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(GOLDEN)), data=st.data())
def test_golden_stream_random_chunking(name: str, data: st.DataObject) -> None:
    raw = golden(name)
    cuts = data.draw(st.lists(st.integers(1, len(raw) - 1), max_size=40))
    bounds = [0, *sorted(set(cuts)), len(raw)]
    pieces = [raw[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    out = run(pieces)
    assert out == run([raw])
    check(out)


def test_ids_and_hot_frames_are_exact() -> None:
    out = run([golden("text")])
    lines = out.split(b"\n\n")
    assert lines[4] == (
        b"event: response.output_text.delta\n"
        b'data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_0000",'
        b'"output_index":0,"content_index":0,"delta":"Hello","logprobs":[]}'
    )
    out = run([golden("function_call")])
    assert out.split(b"\n\n")[3] == (
        b"event: response.function_call_arguments.delta\n"
        b'data: {"type":"response.function_call_arguments.delta","sequence_number":3,'
        b'"item_id":"fc_0000","output_index":0,"delta":"{\\"location\\": \\""}'
    )


def test_escapes_travel_verbatim() -> None:
    out = run([golden("unicode")])
    assert rb'"delta":"Caf\u00e9 \"quoted\" and a back\\slash"' in out
    assert rb'"delta":"smile \ud83d\ude00 via escapes"' in out
    assert "\u4f60\u597d".encode() in out


# ---- behaviour beyond the golden files ------------------------------------------------


def chunk(delta: dict | None = None, finish: str | None = None, **extra: object) -> bytes:
    doc = {"choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}], **extra}
    return b"data: " + orjson.dumps(doc) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def types_of(out: bytes) -> str:
    inverse = {
        "response.output_item.added": "item+",
        "response.output_item.done": "item.",
        "response.content_part.added": "part+",
        "response.content_part.done": "part.",
        "response.output_text.delta": "text",
        "response.output_text.done": "text.",
        "response.function_call_arguments.delta": "args",
        "response.function_call_arguments.done": "args.",
    }
    return " ".join(inverse.get(e["type"], e["type"].split(".")[-1]) for e in check(out))


def test_empty_and_null_content_open_nothing() -> None:
    out = run(
        [chunk({"content": ""}), chunk({"content": None}), chunk({}), chunk(None, "stop"), DONE]
    )
    assert types_of(out) == "created in_progress completed"
    assert check(out)[-1]["response"]["output"] == []


def test_text_after_tool_calls_opens_a_new_message() -> None:
    call = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}}
    out = run(
        [chunk({"content": "a"}), chunk({"tool_calls": [call]}), chunk({"content": "b"}, "stop")]
    )
    assert types_of(out) == (
        "created in_progress item+ part+ text text. part. item. item+ args args. item."
        " item+ part+ text text. part. item. completed"
    )


def test_tool_calls_without_index_are_told_apart_by_id() -> None:
    calls = [
        {"id": "c1", "function": {"name": "f", "arguments": '{"a": 1}'}},
        {"id": "c2", "function": {"name": "g", "arguments": '{"b": 2}'}},
    ]
    events = check(run([chunk({"tool_calls": calls}, "tool_calls"), DONE]))
    assert [(i["call_id"], i["arguments"]) for i in events[-1]["response"]["output"]] == [
        ("c1", '{"a": 1}'),
        ("c2", '{"b": 2}'),
    ]


def test_round_robin_calls_wait_for_finish() -> None:
    """Arguments that never parse while interleaved: the second call opens at the end."""

    def part(index: int, args: str, **fn: str) -> bytes:
        return chunk({"tool_calls": [{"index": index, "function": {"arguments": args, **fn}}]})

    out = run(
        [
            part(0, '{"x": ', name="f"),
            part(1, '{"y": ', name="g"),
            part(0, "[1, "),
            part(1, "2}"),
            part(0, "3]}"),
            chunk(None, "tool_calls"),
            DONE,
        ]
    )
    assert types_of(out) == (
        "created in_progress item+ args args args args. item. item+ args args. item. completed"
    )
    args = [i["arguments"] for i in check(out)[-1]["response"]["output"]]
    assert args == ['{"x": [1, 3]}', '{"y": 2}']


def test_late_delta_for_a_closed_call_is_dropped() -> None:
    def part(index: int, args: str, **fn: str) -> bytes:
        return chunk(
            {
                "tool_calls": [
                    {"index": index, "id": f"c{index}", "function": {"arguments": args, **fn}}
                ]
            }
        )

    out = run(
        [part(0, "{}", name="f"), part(1, "{}", name="g"), part(0, " "), chunk(None, "stop"), DONE]
    )
    assert [i["arguments"] for i in check(out)[-1]["response"]["output"]] == ["{}", "{}"]


def test_length_marks_an_open_call_incomplete() -> None:
    call = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a": "unfinish'}}
    events = check(run([chunk({"tool_calls": [call]}), chunk(None, "length"), DONE]))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["output"][0]["status"] == "incomplete"


def test_usage_from_any_chunk_last_wins() -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    later = {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
    events = check(
        run([chunk({"content": "x"}, usage=usage), chunk(None, "stop", usage=later), DONE])
    )
    assert events[-1]["response"]["usage"]["total_tokens"] == 9
    # on a plain text delta (the hot path), as vLLM's continuous_usage_stats sends it
    pieces = [
        chunk({"content": "x"}),
        chunk({"content": "y"}, usage=usage),
        chunk({}, "stop"),
        DONE,
    ]
    events = check(run(pieces))
    assert events[-1]["response"]["usage"]["total_tokens"] == 3
    assert "".join(e.get("delta", "") for e in events) == "xy"


def test_other_choices_are_ignored() -> None:
    doc = {
        "choices": [
            {"index": 1, "delta": {"content": "other"}},
            {"index": 0, "delta": {"content": "mine"}, "finish_reason": "stop"},
        ]
    }
    events = check(run([b"data: " + orjson.dumps(doc) + b"\n\n", DONE]))
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "mine"


def test_done_without_finish_reason_fails() -> None:
    events = check(run([chunk({"content": "x"}), DONE]))
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["output"][0]["status"] == "incomplete"
    assert (
        events[-1]["response"]["error"]["message"] == "upstream ended the stream before finishing"
    )


def test_old_vllm_error_shape_fails() -> None:
    error = b'data: {"object":"error","message":"boom","type":"x","param":null,"code":500}\n\n'
    events = check(run([chunk({"content": "x"}), error]))
    assert events[-1]["response"]["error"]["message"] == "upstream error: boom"


def test_error_null_is_not_an_error() -> None:
    assert check(run([chunk({"content": "x"}, "stop", error=None), DONE]))[-1]["type"] == (
        "response.completed"
    )


def test_invalid_utf8_is_replaced() -> None:
    data = (
        b'data: {"choices":[{"index":0,"delta":{"content":"a\xffb"},"finish_reason":"stop"}]}\n\n'
    )
    events = check(run([data, DONE]))
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "a\ufffdb"


def test_lifecycle_and_idempotent_terminal() -> None:
    tx = make()
    assert not tx.done
    first = tx.start()
    assert tx.start() == b""
    assert tx.feed(chunk({"content": "hi"}, "stop")) != b""
    assert tx.feed(DONE).startswith(b"event: response.completed\n")
    assert tx.done
    assert tx.feed(chunk({"content": "more"})) == b""
    assert tx.finish() == b"" and tx.fail("late") == b"" and tx.complete(b"{}") == b""
    assert first.count(b"\n\n") == 2


def test_feed_before_start_starts() -> None:
    tx = make()
    out = tx.feed(chunk({"content": "hi"}))
    assert out.startswith(b"event: response.created\n")
    assert tx.start() == b""


def test_fail_closes_open_items_as_incomplete() -> None:
    tx = make()
    out = tx.start() + tx.feed(chunk({"content": "partial"})) + tx.fail("idle timeout")
    events = check(out)
    assert tx.done and events[-1]["type"] == "response.failed"
    final = events[-1]["response"]
    assert final["status"] == "failed"
    assert final["error"] == {"code": "server_error", "message": "idle timeout"}
    assert final["output"][0]["status"] == "incomplete"
    assert final["usage"] is None


def test_fail_after_finish_reason_keeps_items() -> None:
    tx = make()
    out = (
        tx.start()
        + tx.feed(chunk({"content": "done"}, "stop"))
        + tx.fail("dropped", "rate_limit_exceeded")
    )
    events = check(out)
    assert events[-1]["response"]["output"][0]["status"] == "completed"
    assert events[-1]["response"]["error"]["code"] == "rate_limit_exceeded"


def test_finish_before_anything() -> None:
    tx = make()
    events = check(tx.finish())
    assert (
        events[-1]["response"]["error"]["message"] == "upstream ended the stream before finishing"
    )


def test_state_enum_is_explicit() -> None:
    tx = make()
    assert {s.name for s in State} >= {"NEW", "IDLE", "TEXT", "CALLS", "FINISHING", "DONE"}
    assert isinstance(tx, Transcoder) and not hasattr(tx, "__dict__")


def test_runaway_upstream_event_fails_the_stream() -> None:
    from gateway.limits import MAX_UPSTREAM_EVENT

    tx = Transcoder(output.response_base("resp_x", 1, "m", {}))
    tx.start()
    out = b""
    piece = b'data: {"choices":[{"delta":{"content":"' + b"z" * (1024 * 1024)
    for _ in range(MAX_UPSTREAM_EVENT // len(piece) + 2):
        out += tx.feed(piece)
        if tx.done:
            break
    assert tx.done and out.count(b"event: response.failed\n") == 1 and b"over" in out


def _text_chunk(content: str | bytes, **extra: object) -> bytes:
    token = content if isinstance(content, bytes) else orjson.dumps(content)
    head = b'{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":'
    tail = b'},"logprobs":null,"finish_reason":null}]'
    if extra:
        tail += b"," + orjson.dumps(extra)[1:-1]
    return b"data: " + head + token + tail + b"}\n\n"


def test_text_chunks_of_every_shape() -> None:
    """Plain text chunks, and ones with usage, quotes, escapes or odd tokens."""
    pieces = [
        _text_chunk("Hello"),
        _text_chunk(" world"),  # learns the template
        _text_chunk(" again"),  # template
        _text_chunk('say "hi"'),  # quotes inside: decoded
        _text_chunk("back\\slash\\"),  # ends with an escaped backslash: decoded
        _text_chunk("tab\tand é 🙂"),
        _text_chunk("u", usage={"prompt_tokens": 1, "completion_tokens": 2}),
        _text_chunk(b"null"),  # no text
        _text_chunk(b'""'),  # no text
        _text_chunk(b"7"),  # not a string: ignored
        b'data: {"choices":[{"index":0,"delta":{"content":"N","refusal":null,"tool_calls":null}}]}\n\n',
        b'data: {"choices":[{"index":1,"delta":{"content":"(other choice)"}}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"content":"A"}},{"index":1,"delta":{"content":"B"}}]}\n\n',
        _text_chunk("end"),
        b'data: {"choices":[{"index":0,"delta":{"content":"!"},"finish_reason":"stop"}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    want = 'Hello world againsay "hi"back\\slash\\tab\tand é 🙂uNAend!'
    out = run(pieces)
    events = check(out)
    assert events[-1]["type"] == "response.completed"
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == want
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == want
    assert events[-1]["response"]["usage"]["output_tokens"] == 2
    from bench.naive_transcoder import NaiveTranscoder

    assert frames(run(pieces, NaiveTranscoder)) == frames(out)


def test_a_raw_control_byte_in_text_is_malformed() -> None:
    pieces = [_text_chunk("a"), _text_chunk("b"), _text_chunk(b'"bad\x01byte"')]
    events = check(run([*pieces, b"data: [DONE]\n\n"]))
    assert events[-1]["type"] == "response.failed"
    assert "malformed" in events[-1]["response"]["error"]["message"]


def test_a_chunk_that_is_not_utf8_fails_the_stream_and_keeps_what_came_before() -> None:
    """Bad UTF-8 in a str field (msgspec raises UnicodeDecodeError or DecodeError, by version)."""
    pieces = [
        _text_chunk("a")
        + _text_chunk("b")
        + _text_chunk("c")
        + b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"st\xffp"}]}\n\n'
    ]
    events = check(run(pieces))
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == list("abc")
    assert events[-1]["type"] == "response.failed"
    assert "malformed" in events[-1]["response"]["error"]["message"]
    tx = make()
    out = tx.start() + tx.complete(b'{"choices":[{"index":0,"finish_reason":"\xff"}]}')
    events = check(out + tx.finish())
    assert events[-1]["type"] == "response.failed"
