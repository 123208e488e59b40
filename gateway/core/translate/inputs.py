"""Pure translation of a Responses ``input`` (and ``instructions``) into chat messages.

Items fold the way chat templates expect: ``function_call`` and
``custom_tool_call`` items join the assistant message before them (parallel
calls: one message with several ``tool_calls``), under the upstream name their
tool has in this request (``translate.tools``: a namespace's function, a custom
tool, whose ``input`` becomes the arguments ``{"input": ...}``);
``function_call_output`` and ``custom_tool_call_output`` become ``tool``
messages (an output given as parts: its text, and its images as image parts
where the deployment takes images); returned ``reasoning`` items go on the
assistant message they precede (``translate.reasoning``); a ``compaction`` item
becomes the user message that holds its summary (``translate.compaction``);
anything that needs server state or a hosted tool is refused with the
parameter's path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from gateway.core.capabilities import Capabilities
from gateway.core.sealing import Sealer
from gateway.core.translate import compaction
from gateway.core.translate.reasoning import ReturnedReasoning
from gateway.core.translate.tools import NO_NAMES, ToolNames
from gateway.core.wire.responses import ContentPart, InputItem, ResponsesRequest
from gateway.errors import InvalidRequest, Unsupported, missing

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_OUTPUTS = ("function_call_output", "custom_tool_call_output")
ITEM_REFERENCE = (
    "Input items of type 'item_reference' point at items of stored responses, which this "
    "stateless gateway does not keep. Send the items themselves instead: the previous "
    "response's output items (with the Vercel AI SDK, set store: false, which makes it "
    "resend them)."
)
IMAGE_OMITTED = "[image omitted: this model does not accept image input]"


def to_messages(
    req: ResponsesRequest,
    caps: Capabilities,
    names: ToolNames = NO_NAMES,
    sealer: Sealer | None = None,
    history: Sequence[dict] = (),
    earlier: Sequence[InputItem] = (),
) -> list[dict]:
    """The chat messages of ``instructions`` and ``input``; a continued conversation
    (``translate.conversation``) puts its ``history`` (the messages translated before)
    and its last response's output items (``earlier``, translated here) before the
    input, which then holds only what is new."""
    messages: list[dict] = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
    if history:
        messages += history
    items = req.input
    if isinstance(items, str):
        if earlier:
            _add_items(messages, earlier, caps, names, ReturnedReasoning(caps, sealer), sealer)
        messages.append({"role": "user", "content": items})
    elif items or earlier:
        returned = ReturnedReasoning(caps, sealer)
        if earlier:
            _add_items(messages, earlier, caps, names, returned, sealer)
        if items:
            _add_items(messages, items, caps, names, returned, sealer)
    if not messages:
        raise missing("input", alternative="instructions")
    return messages


def _add_items(
    messages: list[dict],
    items: Sequence[InputItem],
    caps: Capabilities,
    names: ToolNames,
    returned: ReturnedReasoning,
    sealer: Sealer | None,
) -> None:
    for i, item in enumerate(items):
        if item.type == "reasoning":
            returned.take(item, i)
            continue
        _add_item(messages, item, i, caps, names, sealer)
        returned.settle(messages)


def _add_item(
    messages: list[dict],
    item: InputItem,
    i: int,
    caps: Capabilities,
    names: ToolNames,
    sealer: Sealer | None,
) -> None:
    kind = item.type
    if kind == "message":
        messages.append(_message(item, i, caps))
    elif kind == "function_call":
        if not item.name:
            raise missing(f"input[{i}].name")
        name = names.upstream(item.name, item.namespace)
        _add_call(messages, item, i, name, item.arguments or "{}")
    elif kind == "custom_tool_call":
        if not item.name:
            raise missing(f"input[{i}].name")
        if item.input is None:
            raise missing(f"input[{i}].input")
        name = names.upstream(item.name, item.namespace)
        _add_call(messages, item, i, name, orjson.dumps({"input": item.input}).decode())
    elif kind in _OUTPUTS:
        if not item.call_id:
            raise missing(f"input[{i}].call_id")
        content = _tool_output(item.output, i, caps)
        messages.append({"role": "tool", "tool_call_id": item.call_id, "content": content})
    elif kind == "compaction":
        messages.append(compaction.summary_message(item, i, sealer))
    elif kind == compaction.TRIGGER:
        raise InvalidRequest(
            "A compaction_trigger must be the last input item.", param=f"input[{i}].type"
        )
    elif kind == "item_reference":
        raise Unsupported(ITEM_REFERENCE, param=f"input[{i}]")
    else:
        raise Unsupported(
            f"Input items of type '{kind}' are not supported by this gateway.",
            param=f"input[{i}].type",
        )


def _message(item: InputItem, i: int, caps: Capabilities) -> dict:
    if item.role is None:
        raise missing(f"input[{i}].role")
    role = _ROLES.get(item.role)
    if role is None:
        raise InvalidRequest(
            f"Invalid value: '{item.role}'. Supported values are: "
            "'user', 'assistant', 'system' and 'developer'.",
            param=f"input[{i}].role",
            code="invalid_value",
        )
    content = item.content
    if content is None:
        raise missing(f"input[{i}].content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if role == "user":
        return {"role": role, "content": _user_parts(content, i, caps)}
    return {"role": role, "content": _joined_text(content, i)}


def _user_parts(parts: list[ContentPart], i: int, caps: Capabilities) -> str | list[dict]:
    if len(parts) == 1 and parts[0].type in ("input_text", "output_text"):
        return _part_text(parts[0], i, 0)
    out: list[dict] = []
    for j, part in enumerate(parts):
        if part.type == "input_image":
            out.append(_image(part, f"input[{i}].content[{j}]", caps))
        else:
            out.append({"type": "text", "text": _part_text(part, i, j)})
    return out


def _image(part: ContentPart, where: str, caps: Capabilities) -> dict:
    if part.file_id is not None:
        raise Unsupported(
            "Images given by file_id need the Files API, which this gateway does not offer; "
            "send image_url (a URL or a data: URL) instead.",
            param=f"{where}.file_id",
        )
    if not part.image_url:
        raise missing(f"{where}.image_url")
    if not caps.images:
        raise Unsupported("This model does not accept image input.", param=where)
    image: dict[str, Any] = {"url": part.image_url}
    if part.detail in ("low", "high", "auto"):
        image["detail"] = part.detail
    elif part.detail == "original":
        image["detail"] = "high"
    return {"type": "image_url", "image_url": image}


def _part_text(part: ContentPart, i: int, j: int) -> str:
    kind = part.type
    if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
        if part.text is None:
            raise missing(f"input[{i}].content[{j}].text")
        return part.text
    if kind == "refusal":
        return part.refusal or ""
    raise Unsupported(
        f"Content parts of type '{kind}' are not supported here by this gateway.",
        param=f"input[{i}].content[{j}].type",
    )


def _joined_text(parts: list[ContentPart], i: int) -> str:
    return "".join(_part_text(part, i, j) for j, part in enumerate(parts))


def _tool_output(
    out: str | list[ContentPart] | None, i: int, caps: Capabilities
) -> str | list[dict]:
    """A tool message's content: the text, or text and image parts (Codex's
    ``view_image`` answers with an ``input_image``). Where the deployment takes no
    images, an image becomes a note saying so, not a 400: the call's history stays
    usable on the next turns."""
    if out is None:
        raise missing(f"input[{i}].output")
    if isinstance(out, str):
        return out
    texts: list[str] = []
    parts: list[dict] = []
    for j, part in enumerate(out):
        if part.type != "input_image":
            texts.append(_output_text(part, i, j))
            continue
        where = f"input[{i}].output[{j}]"
        if not caps.images:
            texts.append(IMAGE_OMITTED)
            continue
        if texts:
            parts.append({"type": "text", "text": "".join(texts)})
            texts = []
        parts.append(_image(part, where, caps))
    if not parts:
        return "".join(texts)
    if texts:
        parts.append({"type": "text", "text": "".join(texts)})
    return parts


def _output_text(part: ContentPart, i: int, j: int) -> str:
    if part.type not in ("input_text", "output_text", "text"):
        raise Unsupported(
            f"Parts of type '{part.type}' in a tool call's output are not supported by this "
            "gateway; text and input_image parts are.",
            param=f"input[{i}].output[{j}].type",
        )
    if part.text is None:
        raise missing(f"input[{i}].output[{j}].text")
    return part.text


def _add_call(messages: list[dict], item: InputItem, i: int, name: str, arguments: str) -> None:
    if not item.call_id:
        raise missing(f"input[{i}].call_id")
    call = {
        "id": item.call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
