"""A whole chat completion (a non-streamed upstream answer) → Responses output.

``answer`` is the one reading of a completion: it tells an ``AnswerBuilder`` the
answer's reasoning (``reasoning_content`` or ``reasoning``), message, function
calls and end. With an ``OutputCollector`` that builds the JSON answer (``to_response``);
with the stream's ``EventEncoder`` it replays the answer as events
(``Transcoder.complete``, for a stream served by an upstream that does not
stream). Either way the items come from the same builders (``wire.output``), in
the same order, with the same statuses.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.core.ids import IDS, Ids
from gateway.core.stream.encoder import AnswerBuilder, OutputCollector, Seal
from gateway.core.stream.toolcalls import ToolCall
from gateway.core.translate.tools import NO_NAMES, ToolNames
from gateway.core.wire import chunks as ck
from gateway.core.wire import output
from gateway.errors import UpstreamBadResponse


def decode_completion(data: bytes) -> ck.Completion:
    """The upstream's ``chat.completion`` body as its view Struct, or a 502."""
    try:
        return ck.COMPLETION_DECODER.decode(data)
    except ValueError as exc:  # msgspec's errors, or UnicodeDecodeError in a str field
        raise UpstreamBadResponse(f"upstream sent a malformed completion: {exc}") from exc


# How a whole completion is told to an AnswerBuilder: ``answer``, or the compaction's
# (``translate.compaction.answer``).
Read = Callable[[ck.Completion, AnswerBuilder], None]


def answer(completion: ck.Completion, enc: AnswerBuilder) -> None:
    """Tell ``enc`` the whole answer; ``UpstreamBadResponse`` (before anything is
    told) when it holds an in-band error or no answer."""
    if ck.is_error(completion):
        raise UpstreamBadResponse("upstream error: " + ck.error_message(completion))
    choice = ck.first_choice(completion.choices)
    if choice is None:
        raise UpstreamBadResponse("upstream returned no choices")
    message = choice.message
    if message is None:
        raise UpstreamBadResponse("upstream returned a choice without a message")
    status, _ = output.finish_status(choice.finish_reason)
    item_status = "completed" if status == "completed" else "incomplete"
    _, reasoning = message.reasoning_token()
    if reasoning is not None:
        enc.whole_reasoning(reasoning, item_status)
    parts: list[tuple[bool, bytes]] = []
    text = ck.string_token(message.content)
    if text is not None:
        parts.append((False, text))
    refusal = ck.string_token(message.refusal)
    if refusal is not None:
        parts.append((True, refusal))
    if parts:
        enc.whole_message(parts, item_status)
    for position, delta in enumerate(message.tool_calls or ()):
        call = ToolCall(position)
        call.call_id = delta.id or ""
        function = delta.function
        if function is not None:
            call.name = function.name or ""
            arguments = ck.string_token(function.arguments)
            if arguments is not None:
                call.pieces.append(arguments)
        enc.whole_call(call, item_status)
    enc.terminal(choice.finish_reason, completion.usage)


def to_response(
    completion: bytes,
    base: dict,
    *,
    now: Callable[[], float] = time.time,
    ids: Ids = IDS,
    names: ToolNames = NO_NAMES,
    seal: Seal | None = None,
    summary: bool = False,
    read: Read = answer,
) -> dict:
    """The response for the upstream's ``chat.completion`` body; ``base`` is the
    in-progress response object (``wire.output.response_base``); ``seal`` and
    ``summary`` as for ``EventEncoder``; ``read`` tells the answer (a compaction's:
    ``translate.compaction.answer``).

    Raises ``UpstreamBadResponse`` (a 502) when the body is not a chat
    completion, holds an in-band error or has no answer.
    """
    enc = OutputCollector(base, now, ids, seal, summary, names)
    read(decode_completion(completion), enc)
    assert enc.final is not None  # answer() ends with the terminal response
    return enc.final
