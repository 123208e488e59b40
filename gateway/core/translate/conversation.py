"""What a Responses WebSocket connection remembers of its last response, so that the
next ``response.create`` may continue it (``previous_response_id``) with only the
new items.

A ``Conversation`` holds the conversation in the form a continuation needs: the
chat messages its input already became (without the instructions, which each
request brings again), and its response's output as input items, translated with
the next request's input (under that request's tool names, as if the client had
sent them back). So a continuation translates only what is new: the last output
and the new input. ``size`` counts the bytes of every input and output the
conversation took in; past the body limit it is forgotten (``remember`` gives
None). ``calls`` are the call ids of its tool calls: a tool output must answer one.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from gateway.core.wire.responses import InputItem
from gateway.errors import InvalidRequest

OUTPUT_DECODER = msgspec.json.Decoder(list[InputItem])
CALLS = ("function_call", "custom_tool_call")
OUTPUTS = ("function_call_output", "custom_tool_call_output")
NOT_FOUND = "previous_response_not_found"


class Conversation:
    __slots__ = ("response_id", "messages", "output", "calls", "size")

    def __init__(
        self,
        response_id: str,
        messages: list[dict],
        output: list[InputItem],
        calls: set[str],
        size: int,
    ) -> None:
        self.response_id = response_id
        self.messages = messages  # chat messages of the input so far, without instructions
        self.output = output  # the response's output items, not translated yet
        self.calls = calls  # call ids of every tool call in messages and output
        self.size = size  # bytes of the inputs and outputs taken in


def not_found(response_id: str) -> InvalidRequest:
    """The 400 for a ``previous_response_id`` the connection does not remember."""
    return InvalidRequest(
        f"Previous response with id '{response_id}' not found. This gateway remembers only "
        "the last response of the same WebSocket connection; send the whole conversation "
        "instead.",
        param="previous_response_id",
        code=NOT_FOUND,
    )


def _items(items: str | list[InputItem] | None) -> Sequence[InputItem]:
    return () if isinstance(items, str) or items is None else items


def check_outputs(continued: Conversation, items: str | list[InputItem] | None) -> None:
    """Every tool output in ``items`` answers a call of the conversation or of ``items``."""
    new = _items(items)
    known: set[str] | None = None
    for i, item in enumerate(new):
        if item.type not in OUTPUTS or not item.call_id or item.call_id in continued.calls:
            continue
        if known is None:
            known = {c.call_id for c in new if c.type in CALLS and c.call_id}
            known.update(c.call_id for c in continued.output if c.type in CALLS and c.call_id)
        if item.call_id not in known:
            raise InvalidRequest(
                f"No tool call found for the output with call_id '{item.call_id}': it answers "
                "no call of the conversation.",
                param=f"input[{i}].call_id",
                code="invalid_value",
            )


def remember(
    continued: Conversation | None,
    response_id: str,
    messages: list[dict],
    instructions: bool,
    items: str | list[InputItem] | None,
    input_size: int,
    output: bytes,
    limit: int,
) -> Conversation | None:
    """The conversation after a response: ``messages`` are the chat messages its request
    was sent with (the instructions first, when ``instructions``), ``items`` its new
    input (``input_size`` bytes of JSON) and ``output`` its output items as JSON. None
    when it grew past ``limit`` bytes."""
    size = len(output) + input_size + (continued.size if continued is not None else 0)
    if size > limit:
        return None
    calls: set[str] = set()
    if continued is not None:  # (given up for this one: extended in place)
        calls = continued.calls
        calls.update(c.call_id for c in continued.output if c.type in CALLS and c.call_id)
    calls.update(c.call_id for c in _items(items) if c.type in CALLS and c.call_id)
    later = OUTPUT_DECODER.decode(output)
    return Conversation(response_id, messages[1:] if instructions else messages, later, calls, size)
