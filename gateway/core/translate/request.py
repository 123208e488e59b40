"""A decoded ``ResponsesRequest`` → the chat-completions request body.

``to_chat_request`` gives the chat body (a dict, values may be
``orjson.Fragment``) plus the fields the response echoes; its messages come
from ``inputs.to_messages``, tools, ``tool_choice`` and ``text.format`` from
here. ``to_summary_request`` gives a compaction's body: the same messages and
the summarisation prompt, nothing else. What the upstream can do comes in as
``Capabilities``. Unsupported features raise ``errors.InvalidRequest``/``Unsupported``
naming the parameter.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from gateway.core.capabilities import Capabilities
from gateway.core.sealing import Sealer
from gateway.core.translate import compaction, reasoning
from gateway.core.translate.conversation import Conversation
from gateway.core.translate.inputs import to_messages
from gateway.core.translate.tools import NO_NAMES, ToolSet, to_tool_set
from gateway.core.wire.responses import (
    NOT_OFFERED,
    TEXT_DECODER,
    TOOL_CHOICE_DECODER,
    ResponsesRequest,
    TextConfig,
    ToolChoice,
    is_absent,
)
from gateway.errors import InvalidRequest, Unsupported, missing

_CHOICE_STRINGS = ("none", "auto", "required")
_TEXT_DEFAULT = {"format": {"type": "text"}}
_PASS_EXTRAS = (
    "seed",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "top_k",
    "min_p",
    "repetition_penalty",
    "user",
)


NO_TOOLS = ToolSet([], [], NO_NAMES, [])


def _fragment(raw: msgspec.Raw) -> orjson.Fragment:
    return orjson.Fragment(bytes(raw))


def _is_empty(value: Any) -> bool:
    if value is None or value is False or value == [] or value == {}:
        return True
    # {"id": null, ...} asks for nothing either.
    return isinstance(value, dict) and all(v is None for v in value.values())


def check_not_offered(req: ResponsesRequest) -> None:
    for name in NOT_OFFERED:
        if not _is_empty(getattr(req, name)):
            raise Unsupported(
                f"Unsupported parameter: '{name}' is not supported by this gateway "
                "(it is stateless and serves chat-completions models).",
                param=name,
            )


# ---- tool_choice, text.format (the tools themselves: translate.tools) --------------


def to_chat_tool_choice(raw: msgspec.Raw, chat_tools: list[dict]) -> tuple[Any, Any, list[dict]]:
    """(chat tool_choice or None, echo, possibly filtered chat tools)."""
    if is_absent(raw):
        return None, "auto", chat_tools
    try:
        choice = TOOL_CHOICE_DECODER.decode(raw)
    except ValueError as exc:  # msgspec errors, or UnicodeDecodeError (Raw is not UTF-8-checked)
        raise InvalidRequest(
            f"Invalid 'tool_choice': {exc}", param="tool_choice", code="invalid_type"
        ) from exc
    if isinstance(choice, str):
        if choice not in _CHOICE_STRINGS:
            raise InvalidRequest(
                f"Invalid value: '{choice}'. Supported values are: 'none', 'auto' and 'required'.",
                param="tool_choice",
                code="invalid_value",
            )
        return choice, choice, chat_tools
    echo = orjson.Fragment(bytes(raw))
    if choice.type == "function":
        name = choice.name or (choice.function.name if choice.function else None)
        if not name:
            raise missing("tool_choice.name")
        return {"type": "function", "function": {"name": name}}, echo, chat_tools
    if choice.type == "custom":
        if not choice.name:
            raise missing("tool_choice.name")
        return {"type": "function", "function": {"name": choice.name}}, echo, chat_tools
    if choice.type == "allowed_tools":
        mode, kept = _allowed_tools(choice, chat_tools)
        return mode, echo, kept
    raise Unsupported(
        f"tool_choice of type '{choice.type}' is not supported by this gateway; "
        "only 'none', 'auto', 'required', function, custom and allowed_tools choices are.",
        param="tool_choice",
    )


def _allowed_tools(choice: ToolChoice, chat_tools: list[dict]) -> tuple[str, list[dict]]:
    mode = choice.mode or "auto"
    if mode not in ("auto", "required"):
        raise InvalidRequest(
            f"Invalid value: '{mode}'. Supported values are: 'auto' and 'required'.",
            param="tool_choice.mode",
            code="invalid_value",
        )
    names = set()
    for k, t in enumerate(choice.tools or ()):
        if t.type not in ("function", "custom") or not t.name:
            raise Unsupported(
                "Only function and custom tools may be listed in allowed_tools.",
                param=f"tool_choice.tools[{k}]",
            )
        names.add(t.name)
    kept = [t for t in chat_tools if t["function"]["name"] in names]
    if not kept:
        raise InvalidRequest(
            "tool_choice.tools names none of the function tools in 'tools'.",
            param="tool_choice.tools",
            code="invalid_value",
        )
    return mode, kept


def to_response_format(raw: msgspec.Raw, caps: Capabilities) -> tuple[dict | None, Any]:
    """(chat response_format or None, echoed text config)."""
    if is_absent(raw):
        return None, _TEXT_DEFAULT
    try:
        text: TextConfig = TEXT_DECODER.decode(raw)
    except ValueError as exc:  # msgspec errors, or UnicodeDecodeError (Raw is not UTF-8-checked)
        raise InvalidRequest(f"Invalid 'text': {exc}", param="text", code="invalid_type") from exc
    echo = orjson.loads(bytes(raw))
    if echo.get("format") is None:
        echo["format"] = {"type": "text"}
    fmt = text.format
    if fmt is None or fmt.type == "text":
        return None, echo
    if not caps.structured_output:
        raise Unsupported("This model does not support structured output.", param="text.format")
    if fmt.type == "json_object":
        return {"type": "json_object"}, echo
    if fmt.type != "json_schema":
        raise InvalidRequest(
            f"Invalid value: '{fmt.type}'. Supported values are: "
            "'text', 'json_object' and 'json_schema'.",
            param="text.format.type",
            code="invalid_value",
        )
    if not fmt.name:
        raise missing("text.format.name")
    if is_absent(fmt.schema):
        raise missing("text.format.schema")
    schema: dict[str, Any] = {"name": fmt.name, "schema": _fragment(fmt.schema)}
    if fmt.strict is not msgspec.UNSET and fmt.strict is not None:
        schema["strict"] = fmt.strict
    if fmt.description is not None:
        schema["description"] = fmt.description
    return {"type": "json_schema", "json_schema": schema}, echo


# ---- the whole request ------------------------------------------------------------


def to_chat_request(
    req: ResponsesRequest,
    caps: Capabilities,
    upstream_model: str,
    *,
    stream: bool,
    sealer: Sealer | None = None,
    continued: Conversation | None = None,
) -> tuple[dict, dict, ToolSet]:
    """(chat body, echo fields for the response object, the request's tools: their
    names for the answer's calls, and the hosted tools dropped); ``sealer`` opens
    replayed reasoning (``encrypted_content``); ``continued``: the conversation the
    request continues (its input holds only the new items)."""
    check_not_offered(req)
    reasoning.wants_encrypted(req.include)
    effort = reasoning.effort_fields(req.reasoning, caps)
    tools = NO_TOOLS
    if req.tools:
        if not caps.tools:
            raise Unsupported("This model does not support tools.", param="tools")
        tools = to_tool_set(req.tools, caps)
    if continued is None:
        messages = to_messages(req, caps, tools.names, sealer)
    else:
        messages = to_messages(req, caps, tools.names, sealer, continued.messages, continued.output)
    body: dict[str, Any] = {"model": upstream_model, "messages": messages}
    body.update(effort)
    tool_choice_echo: Any = "auto"
    if tools.chat:
        choice, tool_choice_echo, chat_tools = to_chat_tool_choice(req.tool_choice, tools.chat)
        body["tools"] = chat_tools
        if choice is not None:
            body["tool_choice"] = choice
        if req.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = req.parallel_tool_calls
    elif not is_absent(req.tool_choice):
        _, tool_choice_echo, _ = to_chat_tool_choice(req.tool_choice, [])
    response_format, text_echo = to_response_format(req.text, caps)
    if response_format is not None:
        body["response_format"] = response_format
    if req.max_output_tokens is not None:
        body[caps.token_field] = req.max_output_tokens
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    for name in _PASS_EXTRAS:
        value = getattr(req, name)
        if value is not None:
            body[name] = value
    if stream:
        body["stream"] = True
        if caps.stream_usage:
            body["stream_options"] = {"include_usage": True}
    echo = _echo(req, tools.echo, tool_choice_echo, text_echo)
    if continued is not None:
        echo["previous_response_id"] = continued.response_id
    return body, echo, tools


def to_summary_request(
    req: ResponsesRequest,
    caps: Capabilities,
    upstream_model: str,
    sealer: Sealer | None = None,
    continued: Conversation | None = None,
) -> tuple[dict, dict]:
    """(chat body, echo fields) of a compaction (``translate.compaction``): the request's
    messages as ``to_chat_request`` makes them (after the conversation ``continued``, if
    any), without the ``compaction_trigger`` that ends them, then the deployment's prompt
    as a user message. No tools, nor anything else of the request, go upstream (they are
    not checked either): the answer is the summary as plain text, not streamed."""
    check_not_offered(req)
    if compaction.triggered(req):
        assert isinstance(req.input, list)
        req = msgspec.structs.replace(req, input=req.input[:-1])
    if continued is None:
        messages = to_messages(req, caps, NO_NAMES, sealer)
    else:
        messages = to_messages(req, caps, NO_NAMES, sealer, continued.messages, continued.output)
    messages.append({"role": "user", "content": caps.compaction_prompt})
    body = {"model": upstream_model, "messages": messages}
    echo = _echo(req, [], "auto", _TEXT_DEFAULT)
    if continued is not None:
        echo["previous_response_id"] = continued.response_id
    return body, echo


def _echo(req: ResponsesRequest, tools: list[dict], tool_choice: Any, text: Any) -> dict:
    return {
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": req.max_tool_calls,
        "parallel_tool_calls": True if req.parallel_tool_calls is None else req.parallel_tool_calls,
        "previous_response_id": None,
        "prompt_cache_key": req.prompt_cache_key,
        "reasoning": reasoning.echo(req.reasoning),
        "safety_identifier": req.safety_identifier,
        "service_tier": req.service_tier or "default",
        "store": False,
        "temperature": 1.0 if req.temperature is None else req.temperature,
        "text": text,
        "tool_choice": tool_choice,
        "tools": tools,
        "top_logprobs": req.top_logprobs or 0,
        "top_p": 1.0 if req.top_p is None else req.top_p,
        "presence_penalty": req.presence_penalty or 0.0,
        "frequency_penalty": req.frequency_penalty or 0.0,
        "truncation": req.truncation or "disabled",
        "user": req.user,
        "metadata": req.metadata or {},
    }
