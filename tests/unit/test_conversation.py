"""A WebSocket continuation (``translate.conversation``): the chat request of a
continued conversation is the one of the whole conversation sent at once, with the
previous response's output as the client would have sent it back; the frames of a
stream split into the JSON of each event; a warm-up's empty response."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest

from gateway.core.capabilities import Capabilities
from gateway.core.stream.transcoder import Transcoder
from gateway.core.translate.conversation import (
    NOT_FOUND,
    Conversation,
    check_outputs,
    not_found,
    remember,
)
from gateway.core.translate.request import to_chat_request
from gateway.core.wire import events
from gateway.core.wire.responses import REQUEST_DECODER
from gateway.errors import InvalidRequest

CAPS = Capabilities()
LIMIT = 1 << 20
APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files.",
    "format": {"type": "text"},
}
EXEC = {
    "type": "function",
    "name": "exec_command",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
}
TOOLS = [EXEC, APPLY_PATCH]


def sse(doc: dict) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def delta(**d: Any) -> bytes:
    return sse({"choices": [{"index": 0, "delta": d, "finish_reason": None}]})


def finish(reason: str) -> bytes:
    return sse({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})


def call(i: int, call_id: str, name: str, arguments: str) -> bytes:
    fn = {"name": name, "arguments": arguments}
    return delta(tool_calls=[{"index": i, "id": call_id, "type": "function", "function": fn}])


ANSWERS = {
    "text": [delta(content="Hello"), delta(content=" there"), finish("stop")],
    "calls": [
        delta(reasoning_content="let me look"),
        delta(content="Looking."),
        call(0, "call_a", "exec_command", '{"cmd":"ls"}'),
        call(1, "call_b", "apply_patch", '{"input":"*** Begin Patch"}'),
        finish("tool_calls"),
    ],
}


def request(**body: Any) -> Any:
    return REQUEST_DECODER.decode(orjson.dumps({"model": "m", "tools": TOOLS, **body}))


def answered(req: Any, chunks: list[bytes], continued: Conversation | None = None) -> Any:
    """Run one turn: its chat body, then the transcoder on ``chunks``; the conversation after."""
    chat, echo, tools = to_chat_request(req, CAPS, "up", stream=True, continued=continued)
    tx = Transcoder({"id": "resp_1", "output": []}, names=tools.names)
    tx.start()
    tx.feed(b"".join(chunks) + b"data: [DONE]\n\n")
    assert tx.final is not None and tx.final["status"] == "completed"
    raw_input = msgspec.json.encode(req.input)
    out = orjson.dumps(tx.final["output"])
    conv = remember(
        continued,
        "resp_1",
        chat["messages"],
        bool(req.instructions),
        req.input,
        len(raw_input),
        out,
        LIMIT,
    )
    return chat, orjson.loads(out), conv


def plain(doc: Any) -> Any:
    return orjson.loads(orjson.dumps(doc))


@pytest.mark.parametrize("answer", sorted(ANSWERS))
def test_a_continuation_is_the_whole_conversation(answer: str) -> None:
    first = [{"role": "user", "content": "fix it"}]
    _, output, conv = answered(request(input=first, instructions="sys"), ANSWERS[answer])
    if answer == "calls":
        new: list[dict] = [
            {"type": "function_call_output", "call_id": "call_a", "output": "a.py"},
            {"type": "custom_tool_call_output", "call_id": "call_b", "output": "done"},
        ]
    else:
        new = [{"role": "user", "content": "and then?"}]
    continued, _, _ = to_chat_request(
        request(input=new, instructions="sys v2"), CAPS, "up", stream=True, continued=conv
    )
    whole, _, _ = to_chat_request(
        request(input=first + output + new, instructions="sys v2"), CAPS, "up", stream=True
    )
    assert plain(continued) == plain(whole)
    assert plain(continued)["messages"][0] == {"role": "system", "content": "sys v2"}
    if answer == "calls":
        assistant = plain(continued)["messages"][2]
        assert assistant["reasoning_content"] == "let me look"
        assert [c["id"] for c in assistant["tool_calls"]] == ["call_a", "call_b"]


def test_three_turns_and_a_string_input() -> None:
    turn1 = [{"role": "user", "content": "one"}]
    _, out1, conv = answered(request(input=turn1), ANSWERS["calls"])
    turn2 = [{"type": "function_call_output", "call_id": "call_a", "output": "x"}]
    _, out2, conv = answered(request(input=turn2), ANSWERS["text"], conv)
    assert conv is not None
    continued, echo, _ = to_chat_request(
        request(input="three"), CAPS, "up", stream=False, continued=conv
    )
    whole, _, _ = to_chat_request(
        request(input=turn1 + out1 + turn2 + out2 + [{"role": "user", "content": "three"}]),
        CAPS,
        "up",
        stream=False,
    )
    assert plain(continued) == plain(whole)
    assert echo["previous_response_id"] == "resp_1"
    # the remembered messages hold no instructions, whatever the turns brought
    assert all(m["role"] != "system" for m in conv.messages)


def test_outputs_must_answer_a_known_call() -> None:
    _, _, conv = answered(request(input="go"), ANSWERS["calls"])
    check_outputs(conv, None)
    check_outputs(conv, "a string")
    ok = request(input=[{"type": "function_call_output", "call_id": "call_b", "output": "x"}])
    check_outputs(conv, ok.input)
    new_call = request(
        input=[
            {
                "type": "function_call",
                "call_id": "call_n",
                "name": "exec_command",
                "arguments": "{}",
            },
            {"type": "function_call_output", "call_id": "call_n", "output": "x"},
        ]
    )
    check_outputs(conv, new_call.input)
    bad = request(
        input=[
            {"type": "function_call_output", "call_id": "call_a", "output": "x"},
            {"type": "custom_tool_call_output", "call_id": "call_zz", "output": "x"},
        ]
    )
    with pytest.raises(InvalidRequest) as info:
        check_outputs(conv, bad.input)
    assert info.value.status == 400 and info.value.param == "input[1].call_id"
    # calls of earlier turns are known too
    out_b = [{"type": "function_call_output", "call_id": "call_b", "output": "x"}]
    _, _, later = answered(request(input=out_b), ANSWERS["text"], conv)
    check_outputs(later, bad.input[:1])


def test_the_conversation_is_bounded() -> None:
    req = request(input="x" * 100)
    chat, _, _ = to_chat_request(req, CAPS, "up", stream=True)
    conv = remember(None, "resp_1", chat["messages"], False, req.input, 500, b"[]", 1000)
    assert conv is not None and conv.size == 502
    assert remember(conv, "resp_2", chat["messages"], False, req.input, 500, b"[]", 1000) is None


def test_not_found_is_exact() -> None:
    exc = not_found("resp_x")
    assert (exc.status, exc.code, exc.param) == (400, NOT_FOUND, "previous_response_id")
    assert NOT_FOUND == "previous_response_not_found"


def test_frames_split_into_their_json() -> None:
    tx = Transcoder({"id": "resp_1", "output": []})
    data = tx.start() + tx.feed(b"".join(ANSWERS["calls"]) + b"data: [DONE]\n\n")
    payloads = events.payloads(data + b": keepalive\n\n")
    assert len(payloads) == data.count(b"\n\n") == tx.events
    assert [orjson.loads(p)["sequence_number"] for p in payloads] == list(range(tx.events))
    assert b"".join(payloads) == b"".join(
        f.partition(b"data: ")[2] for f in data.split(b"\n\n") if f
    )
    assert events.payloads(b"") == []


def test_an_empty_response() -> None:
    tx = Transcoder({"id": "resp_1", "output": []})
    kinds = [orjson.loads(p)["type"] for p in events.payloads(tx.empty())]
    assert kinds == ["response.created", "response.in_progress", "response.completed"]
    assert tx.final is not None and tx.final["output"] == [] and tx.final["status"] == "completed"
    assert tx.empty() == b"" and tx.done
