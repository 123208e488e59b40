"""Compaction: a conversation summarised by the upstream model, sealed into one item.

A client whose context fills asks for it in one of two ways: ``POST
/v1/responses/compact``, or an ordinary ``POST /v1/responses`` whose last input item is a
``compaction_trigger`` (``triggered``). Either way the upstream is asked once, without
tools, to summarise the conversation (``request.to_summary_request``: the conversation's
messages, then the deployment's prompt, ``Capabilities.compaction_prompt``). ``answer``
reads its completion: the text, sealed like reasoning (``core.sealing``), is the
``encrypted_content`` of exactly one ``compaction`` item, and the response is completed.
The compact endpoint's answer (``compacted``) is that item alone, as the client's new
history: the user messages the spec would keep verbatim do not fit the output item types
of the ``openai`` package, so the prompt asks for the user's requests in the summary.

When a later request carries the item in its input, ``summary_message`` opens it and
gives the upstream a user message in its place: ``SUMMARY_HEADING``, a fixed line saying
that what follows summarises the earlier conversation, then the summary. A user message,
because the summary stands for what the model was told, and every chat template takes one
anywhere; a blob that does not open is a 400 naming the item, before anything goes upstream.
"""

from __future__ import annotations

import time

from gateway.core.ids import COMPACTION, IDS, Ids
from gateway.core.sealing import Sealer, opened
from gateway.core.stream.encoder import AnswerBuilder, OutputCollector, Seal
from gateway.core.stream.toolcalls import ToolCall
from gateway.core.translate import response
from gateway.core.translate.response import decode_completion
from gateway.core.wire import chunks as ck
from gateway.core.wire import output
from gateway.core.wire.responses import InputItem, ResponsesRequest
from gateway.errors import UpstreamBadResponse, missing

TRIGGER = "compaction_trigger"
RESEND = "Send the compaction item as it was returned, or the conversation it stands for."
SUMMARY_HEADING = (
    "The earlier part of this conversation was compacted; this is its summary, which "
    "stands for it:\n\n"
)


def triggered(req: ResponsesRequest) -> bool:
    """Does the request's last input item ask for a compaction?"""
    items = req.input
    return type(items) is list and bool(items) and items[-1].type == TRIGGER


def answer(completion: ck.Completion, enc: AnswerBuilder) -> None:
    """Tell ``enc`` (which must seal) the completion's text as one compaction item, and the
    end; ``UpstreamBadResponse`` (before anything is told) when it holds no text. The
    completion is read by ``response.answer``, the one reading of a completion."""
    response.answer(completion, _Summary(enc))


class _Summary(AnswerBuilder):
    """What ``response.answer`` tells of a summarisation, turned into the compaction item:
    the message's text is the summary; reasoning and calls (none were offered) are left
    out; the end is completed whatever the finish reason (a summary cut by a length limit
    is still one)."""

    __slots__ = ("enc", "token")

    def __init__(self, enc: AnswerBuilder) -> None:  # (only ``enc`` of AnswerBuilder's slots)
        self.enc = enc
        self.token: bytes | None = None

    def whole_message(self, parts: list[tuple[bool, bytes]], status: str) -> None:
        texts = [token for refusal, token in parts if not refusal]
        if texts:
            self.token = ck.join_tokens(texts)

    def whole_call(self, call: ToolCall, status: str) -> None:
        pass

    def whole_reasoning(self, token: bytes, status: str) -> None:
        pass

    def terminal(self, finish_reason: str | None, usage: ck.Usage | None) -> None:
        enc, token = self.enc, self.token
        if token is None:
            raise UpstreamBadResponse("upstream returned no summary for the compaction")
        assert enc.seal is not None, "a compaction's answer is sealed"
        enc.whole_item(output.compaction_item(enc.ids.new(COMPACTION), enc.seal(token)))
        enc.terminal("stop", usage)


def compacted(completion: bytes, created_at: int, seal: Seal, *, ids: Ids = IDS) -> dict:
    """The ``response.compaction`` object of ``POST /v1/responses/compact`` for the
    upstream's summary (``completion``): its output is the one compaction item."""
    enc = OutputCollector({}, time.time, ids, seal)
    answer(decode_completion(completion), enc)
    assert enc.final is not None
    usage = enc.final["usage"]
    return output.compacted_response(ids.new(COMPACTION), created_at, enc.output, usage)


def summary_message(item: InputItem, i: int, sealer: Sealer | None) -> dict:
    """The message that stands for the compaction item ``input[i]``: its summary, opened."""
    blob = item.encrypted_content
    if not blob:
        raise missing(f"input[{i}].encrypted_content")
    summary = opened(sealer, blob, i, RESEND)
    return {"role": "user", "content": SUMMARY_HEADING + summary}
