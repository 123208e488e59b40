"""The pure translations, without a network."""

from __future__ import annotations

import msgspec
import orjson
import pytest

from gateway.config import COMPACTION_PROMPT, Deployment, Supports
from gateway.core.capabilities import Capabilities
from gateway.core.ids import Ids
from gateway.core.translate.request import to_chat_request
from gateway.core.translate.response import to_response
from gateway.core.wire import output
from gateway.core.wire.responses import REQUEST_DECODER
from gateway.errors import InvalidRequest, Unsupported, UpstreamBadResponse
from gateway.upstream.routing import capabilities

CAPS = Capabilities()


def chat_for(body: dict, caps: Capabilities = CAPS, stream: bool = False) -> tuple[dict, dict]:
    req = REQUEST_DECODER.decode(orjson.dumps(body))
    chat, echo, _ = to_chat_request(req, caps, "up", stream=stream)
    return orjson.loads(orjson.dumps(chat)), orjson.loads(orjson.dumps(echo))


def test_string_input_and_instructions() -> None:
    chat, echo = chat_for({"model": "m", "input": "hi", "instructions": "sys"})
    assert chat == {
        "model": "up",
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
    }
    assert echo["instructions"] == "sys" and echo["store"] is False


def test_stream_asks_for_usage_only_where_supported() -> None:
    chat, _ = chat_for({"model": "m", "input": "hi"}, stream=True)
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    chat, _ = chat_for({"model": "m", "input": "hi"}, Capabilities(stream_usage=False), stream=True)
    assert "stream_options" not in chat


def test_tool_schema_bytes_forwarded_exactly() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string", "enum": ["a", "é"]}}}
    body = {
        "model": "m",
        "input": "x",
        "tools": [{"type": "function", "name": "f", "parameters": schema, "strict": False}],
        "tool_choice": {"type": "allowed_tools", "mode": "required",
                        "tools": [{"type": "function", "name": "f"}]},
    }  # fmt: skip
    chat, echo = chat_for(body)
    assert chat["tools"][0]["function"] == {"name": "f", "parameters": schema, "strict": False}
    assert chat["tool_choice"] == "required"
    assert echo["tools"] == [
        {
            "type": "function",
            "name": "f",
            "description": None,
            "parameters": schema,
            "strict": False,
        }
    ]
    assert echo["tool_choice"] == body["tool_choice"]


def test_allowed_tools_filters() -> None:
    body = {
        "model": "m",
        "input": "x",
        "tools": [{"type": "function", "name": "a"}, {"type": "function", "name": "b"}],
        "tool_choice": {"type": "allowed_tools", "mode": "auto",
                        "tools": [{"type": "function", "name": "b"}]},
    }  # fmt: skip
    chat, _ = chat_for(body)
    assert [t["function"]["name"] for t in chat["tools"]] == ["b"]
    assert chat["tool_choice"] == "auto"


def test_text_format_json_schema() -> None:
    fmt = {"type": "json_schema", "name": "W", "schema": {"type": "object"}, "strict": True}
    chat, echo = chat_for({"model": "m", "input": "x", "text": {"format": fmt, "verbosity": "low"}})
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "W", "schema": {"type": "object"}, "strict": True},
    }
    assert echo["text"] == {"format": fmt, "verbosity": "low"}


@pytest.mark.parametrize(
    ("body", "param", "exc"),
    [
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role", InvalidRequest),
        ({"input": [{"content": "x"}]}, "input[0].role", InvalidRequest),
        ({"input": [{"role": "user"}]}, "input[0].content", InvalidRequest),
        ({"input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type", InvalidRequest),
        ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}},
         "text.format.schema", InvalidRequest),
        ({"input": "x", "tool_choice": "sometimes"}, "tool_choice", InvalidRequest),
        ({"input": "x", "tools": [{"type": "mcp"}]}, "tools[0].type", Unsupported),
        ({"input": [{"type": "function_call", "call_id": "c"}]}, "input[0].name", InvalidRequest),
        ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
         "input[0].content[0].type", Unsupported),
        ({"input": [{"type": "function_call_output", "call_id": "c",
                     "output": [{"type": "input_image", "file_id": "f"}]}]},
         "input[0].output[0].file_id", Unsupported),
        ({"input": [], "instructions": None}, "input", InvalidRequest),
    ],
)  # fmt: skip
def test_rejections_name_the_parameter(body: dict, param: str, exc: type) -> None:
    with pytest.raises(exc) as info:
        chat_for({"model": "m", **body})
    assert info.value.param == param
    assert info.value.status == 400


def test_to_response_tool_calls_and_ids() -> None:
    completion = orjson.dumps(
        {
            "choices": [
                {
                    "message": {
                        "content": "",
                        "tool_calls": [
                            {"id": "call_1", "function": {"name": "a", "arguments": "{}"}},
                            {"function": {"name": "b", "arguments": '{"x":1}'}},
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 2, "completion_tokens": 3},
        }
    )

    class Listed(Ids):
        names = iter(["fc_1", "fc_2"])

        def new(self, prefix: str) -> str:
            return next(self.names)

        def call(self) -> str:
            return "call_g"

    base = output.response_base("resp_1", 10, "m", {})
    doc = to_response(completion, base, now=lambda: 12.5, ids=Listed())
    doc = orjson.loads(orjson.dumps(doc))
    assert doc["status"] == "completed" and doc["completed_at"] == 12
    assert doc["output"] == [
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "a",
         "arguments": "{}", "status": "completed"},
        {"type": "function_call", "id": "fc_2", "call_id": "call_g", "name": "b",
         "arguments": '{"x":1}', "status": "completed"},
    ]  # fmt: skip
    assert doc["usage"]["total_tokens"] == 5
    assert base["output"] == [] and base["status"] == "in_progress"  # base untouched


def test_request_decoder_ignores_unknown_fields() -> None:
    req = REQUEST_DECODER.decode(
        b'{"model":"m","input":[{"role":"user","content":"x","zz":1}],"q":2}'
    )
    assert req.input is not None and not isinstance(req.input, str)
    assert req.input[0].type == "message"
    with pytest.raises(msgspec.ValidationError):
        REQUEST_DECODER.decode(b'{"model":"m","temperature":"x"}')


def test_capabilities_come_from_the_deployment_and_nothing_else() -> None:
    dep = Deployment(
        upstream="http://u/v1",
        token_field="max_completion_tokens",
        api_key_env="SECRET",
        supports=Supports(images=False, stream_usage=False),
    )
    caps = capabilities(dep)
    assert caps == Capabilities(
        images=False,
        stream_usage=False,
        token_field="max_completion_tokens",
        compaction_prompt=COMPACTION_PROMPT,
    )
    chat, _ = chat_for({"model": "m", "input": "hi", "max_output_tokens": 5}, caps)
    assert chat["max_completion_tokens"] == 5 and "max_tokens" not in chat
    with pytest.raises(Unsupported):
        chat_for(
            {"model": "m", "input": [{"role": "user", "content": [
                {"type": "input_image", "image_url": "data:image/png;base64,AA=="}]}]},
            caps,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"choices": [', "upstream sent a malformed completion"),
        (b'{"choices": []}', "upstream returned no choices"),
        (b'{"choices": [{"index": 0, "finish_reason": "stop"}]}', "without a message"),
        (b'{"error": {"message": "bad things"}}', "upstream error: bad things"),
    ],
)
def test_to_response_refuses_what_is_not_an_answer(body: bytes, says: str) -> None:
    """The same failures a streamed replay reports in-band are a 502 here."""
    with pytest.raises(UpstreamBadResponse) as info:
        to_response(body, output.response_base("resp_1", 10, "m", {}))
    assert says in info.value.message and info.value.status == 502
