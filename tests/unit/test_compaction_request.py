"""Compaction without a network: the summarisation request (the conversation's messages,
no tools, the prompt last), the compaction item opened into the summary message, its
refusals, and the answer read into exactly one sealed compaction item (JSON, events and
the compact endpoint's object)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.responses import Response
from openai.types.responses.compacted_response import CompactedResponse

from gateway.api.seal import Sealer
from gateway.config import COMPACTION_PROMPT
from gateway.core.capabilities import Capabilities
from gateway.core.stream.transcoder import Transcoder
from gateway.core.translate import compaction
from gateway.core.translate.request import to_chat_request, to_summary_request
from gateway.core.translate.response import to_response
from gateway.core.wire import output
from gateway.core.wire.responses import REQUEST_DECODER, ResponsesRequest
from gateway.errors import InvalidRequest, UpstreamBadResponse

SEALER = Sealer([bytes(range(32))])
OTHER = Sealer([bytes(range(1, 33))])
PROMPT = "Summarise the conversation."
CAPS = Capabilities(compaction_prompt=PROMPT)
TRIGGER = {"type": "compaction_trigger"}
SUMMARY = 'The user wants "fizzbuzz" in Rust; main.rs is written.\n\u00e9'
TOOLS = [
    {"type": "function", "name": "shell", "parameters": {"type": "object", "properties": {}}},
    {"type": "custom", "name": "apply_patch"},
    {"type": "web_search"},  # a hosted tool: refused by to_chat_request, ignored here
]
HISTORY = [
    {"role": "developer", "content": "Be brief."},
    {"role": "user", "content": "Write fizzbuzz in Rust."},
    {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": '{"cmd":"ls"}'},
    {"type": "function_call_output", "call_id": "c1", "output": "main.rs"},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Ok."}]},
]


def request(body: dict) -> ResponsesRequest:
    return REQUEST_DECODER.decode(orjson.dumps({"model": "m", **body}))


def summary_for(body: dict, sealer: Sealer | None = SEALER) -> tuple[dict, dict]:
    chat, echo = to_summary_request(request(body), CAPS, "up", sealer)
    return orjson.loads(orjson.dumps(chat)), orjson.loads(orjson.dumps(echo))


def completion(content: Any = SUMMARY, finish: str = "stop", usage: bool = True) -> bytes:
    message = {"role": "assistant", "content": content, "reasoning_content": "thinking"}
    doc: dict[str, Any] = {
        "id": "c",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if usage:
        doc["usage"] = {"prompt_tokens": 900, "completion_tokens": 40, "total_tokens": 940}
    return orjson.dumps(doc)


def sealed_item(summary: str = SUMMARY) -> dict:
    return {
        "type": "compaction",
        "id": "cmp_1",
        "encrypted_content": SEALER.seal(orjson.dumps(summary)),
    }


# ---- which requests are compactions -----------------------------------------------------


def test_only_a_trigger_as_the_last_item_asks_for_a_compaction() -> None:
    assert compaction.triggered(request({"input": [*HISTORY, TRIGGER]}))
    assert not compaction.triggered(request({"input": HISTORY}))
    assert not compaction.triggered(request({"input": "compaction_trigger"}))
    assert not compaction.triggered(request({"input": []}))
    assert not compaction.triggered(request({}))


def test_a_trigger_before_the_end_is_refused_naming_it() -> None:
    with pytest.raises(InvalidRequest) as info:
        to_chat_request(request({"input": [TRIGGER, *HISTORY]}), CAPS, "up", stream=False)
    assert info.value.param == "input[0].type" and "last input item" in info.value.message


# ---- the summarisation request ------------------------------------------------------------


def test_the_summary_request_is_the_conversation_without_tools_then_the_prompt() -> None:
    body = {"instructions": "You are Codex.", "input": [*HISTORY, TRIGGER], "tools": TOOLS[:2]}
    chat, echo = summary_for({**body, "stream": True, "reasoning": {"effort": "high"}})
    normal, _, _ = to_chat_request(
        request({**body, "input": HISTORY}), CAPS, "up", stream=False, sealer=SEALER
    )
    assert chat == {
        "model": "up",
        "messages": [
            *orjson.loads(orjson.dumps(normal["messages"])),
            {"role": "user", "content": PROMPT},
        ],
    }
    assert echo["tools"] == [] and echo["instructions"] == "You are Codex."
    assert echo["reasoning"] == {"effort": "high", "summary": None}
    # tools are dropped unread: a hosted tool is no reason to refuse a compaction
    chat, _ = summary_for({"input": [*HISTORY, TRIGGER], "tools": TOOLS})
    assert "tools" not in chat and chat["messages"][-1] == {"role": "user", "content": PROMPT}


def test_the_compact_endpoint_body_has_no_trigger_to_drop() -> None:
    chat, _ = summary_for({"input": "Write fizzbuzz."})
    assert chat["messages"] == [
        {"role": "user", "content": "Write fizzbuzz."},
        {"role": "user", "content": PROMPT},
    ]
    with pytest.raises(InvalidRequest) as info:
        summary_for({"input": [TRIGGER]})  # nothing to summarise
    assert info.value.param == "input"


def test_not_offered_parameters_stay_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        summary_for({"input": [TRIGGER], "previous_response_id": "resp_1"})
    assert info.value.param == "previous_response_id"


# ---- the compaction item in a later request ----------------------------------------------


def test_a_compaction_item_becomes_the_summary_message_in_its_place() -> None:
    body = {"input": [HISTORY[0], sealed_item(), {"role": "user", "content": "Now tests."}]}
    chat, _, _ = to_chat_request(request(body), CAPS, "up", stream=False, sealer=SEALER)
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": compaction.SUMMARY_HEADING + SUMMARY},
        {"role": "user", "content": "Now tests."},
    ]
    # and a second compaction summarises the first one's summary with the rest
    chat, _ = summary_for({"input": [sealed_item(), {"role": "user", "content": "More."}, TRIGGER]})
    assert chat["messages"][0]["content"].endswith(SUMMARY)


@pytest.mark.parametrize(
    "item",
    [
        {"type": "compaction", "encrypted_content": OTHER.seal(b'"foreign"')},
        {
            "type": "compaction",
            "encrypted_content": sealed_item()["encrypted_content"][:-3] + "AAA",
        },
        {"type": "compaction", "encrypted_content": "not a blob"},
    ],
)
def test_a_blob_that_does_not_open_is_refused_naming_the_item(item: dict) -> None:
    body = {"input": [{"role": "user", "content": "hi"}, item]}
    with pytest.raises(InvalidRequest) as info:
        to_chat_request(request(body), CAPS, "up", stream=False, sealer=SEALER)
    err = info.value
    assert (err.param, err.code) == ("input[1].encrypted_content", "invalid_encrypted_content")
    assert "input[1]" in err.message


def test_a_compaction_item_without_its_blob_or_without_a_sealer() -> None:
    with pytest.raises(InvalidRequest) as info:
        to_chat_request(request({"input": [{"type": "compaction"}]}), CAPS, "up", stream=False)
    assert info.value.param == "input[0].encrypted_content"
    assert info.value.code == "missing_required_parameter"
    with pytest.raises(InvalidRequest) as info:
        to_chat_request(request({"input": [sealed_item()]}), CAPS, "up", stream=False)
    assert info.value.code == "invalid_encrypted_content"


# ---- the answer: exactly one sealed compaction item ---------------------------------------


def base() -> dict:
    _, echo = summary_for({"input": [*HISTORY, TRIGGER]})
    return output.response_base("resp_1", 1, "m", echo)


@pytest.mark.parametrize("finish", ["stop", "length"])
def test_the_json_answer_is_one_compaction_item_completed(finish: str) -> None:
    doc = to_response(completion(finish=finish), base(), seal=SEALER.seal, read=compaction.answer)
    assert doc["status"] == "completed" and doc["usage"]["input_tokens"] == 900
    (item,) = doc["output"]
    assert item["type"] == "compaction" and item["id"].startswith("cmp_")
    assert SEALER.open(item["encrypted_content"]) == SUMMARY
    parsed = Response.model_validate(orjson.loads(orjson.dumps(doc)))
    assert [o.type for o in parsed.output] == ["compaction"]


@pytest.mark.parametrize("content", [None, ""])
def test_no_summary_is_an_upstream_error(content: Any) -> None:
    with pytest.raises(UpstreamBadResponse):
        to_response(completion(content), base(), seal=SEALER.seal, read=compaction.answer)


def frames(raw: bytes) -> list[dict]:
    out = []
    for block in raw.split(b"\n\n")[:-1]:
        head, data = block.split(b"\n")
        event = orjson.loads(data[6:])
        assert head == b"event: " + event["type"].encode()
        out.append(event)
    return out


def test_the_events_are_the_item_added_and_done_then_completed() -> None:
    tx = Transcoder(base(), seal=SEALER.seal)
    events = frames(tx.start() + tx.complete(completion(), compaction.answer))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(5))
    added, done, completed = events[2], events[3], events[4]
    assert added["item"] == done["item"] and added["output_index"] == done["output_index"] == 0
    assert completed["response"]["output"] == [done["item"]]
    assert SEALER.open(done["item"]["encrypted_content"]) == SUMMARY
    assert tx.final is not None and tx.final["status"] == "completed"


def test_an_upstream_without_a_summary_fails_the_stream_once() -> None:
    tx = Transcoder(base(), seal=SEALER.seal)
    events = frames(tx.start() + tx.complete(completion(None), compaction.answer))
    assert [e["type"] for e in events][2:] == ["response.failed"]


@pytest.mark.parametrize("usage", [True, False])
def test_the_compacted_object_validates_as_the_openai_type(usage: bool) -> None:
    doc = compaction.compacted(completion(usage=usage), 7, SEALER.seal)
    parsed = CompactedResponse.model_validate(orjson.loads(orjson.dumps(doc)))
    assert parsed.object == "response.compaction" and parsed.created_at == 7
    (item,) = parsed.output
    assert item.type == "compaction" and SEALER.open(item.encrypted_content) == SUMMARY
    assert parsed.usage.total_tokens == (940 if usage else 0)


def test_the_default_prompt_is_the_deployments() -> None:
    from gateway.config import Deployment
    from gateway.upstream.routing import capabilities

    caps = capabilities(Deployment(upstream="http://u/v1"))
    assert caps.compaction_prompt == COMPACTION_PROMPT
    caps = capabilities(Deployment(upstream="http://u/v1", compaction_prompt="Sum up."))
    chat, _ = to_summary_request(request({"input": "hi"}), caps, "up")
    assert chat["messages"][-1] == {"role": "user", "content": "Sum up."}


def test_the_prompt_is_a_deployment_setting() -> None:
    from gateway.config import ConfigError, parse

    toml = '[[deployment]]\nupstream = "http://h/v1"\ncompaction-prompt = "Sum it up."\n'
    assert parse(toml.encode(), "t.toml").deployment[0].compaction_prompt == "Sum it up."
    default = parse(b'[[deployment]]\nupstream = "http://h/v1"\n', "t.toml")
    assert default.deployment[0].compaction_prompt == COMPACTION_PROMPT
    with pytest.raises(ConfigError, match="compaction-prompt"):
        parse(b'[[deployment]]\nupstream = "http://h/v1"\ncompaction-prompt = " "\n', "t.toml")
