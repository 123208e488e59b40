"""The Responses side of the transcoder: events as SSE frames, items, ids and indexes.

``EventEncoder`` knows nothing about the upstream; the transcoder tells it what
happens (an item opens, a delta arrives, an item closes, the response ends) and
it writes the events. It owns the three numberings a client checks:

- ``sequence_number``: assigned in ``frame`` and nowhere else;
- ``output_index``: assigned when an item opens (``open_message`` / ``open_call`` /
  ``open_reasoning``, or ``whole_item`` for an item without deltas: a compaction);
- ``content_index``: the number of parts the open message already has (a reasoning
  item has one part, 0).

A reasoning item streams like a message's text part: ``output_item.added``, its
deltas (``reasoning_text.delta``; with ``summary``, ``reasoning_summary_text.delta``
inside a summary part instead, for clients that show only summaries), the
``.done`` of the text, ``output_item.done``. Its done item carries the text as
``content`` (and as ``summary`` with ``summary``) and, when the request asked for
``reasoning.encrypted_content``, the text sealed by ``seal``.

Frames are queued as pieces (prefix, sequence digits, middle, body, end) and
joined once per ``drain``. Text deltas are spliced in as raw JSON string tokens;
``.done`` texts are those tokens joined, carried as ``orjson.Fragment``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

from gateway.core.ids import CUSTOM_TOOL_CALL, FUNCTION_CALL, MESSAGE, REASONING, Ids
from gateway.core.stream.custom_input import CustomInput, whole_input
from gateway.core.stream.toolcalls import ToolCall
from gateway.core.translate.tools import NO_NAMES, ToolNames
from gateway.core.wire import events as ev
from gateway.core.wire import output
from gateway.core.wire.chunks import Usage, join_tokens, valid_utf8


def _decoded(token: bytes) -> str:
    """An upstream JSON string token's text (a custom tool call's arguments)."""
    try:
        return orjson.loads(valid_utf8(token))
    except orjson.JSONDecodeError:  # half a surrogate pair: that character is lost
        return json.loads(token).encode("utf-8", "replace").decode()


Seal = Callable[[bytes], str]  # a JSON string token -> encrypted_content (core.sealing)


class AnswerBuilder:
    """What both ends of an answer share: the response it belongs to (``base``, the
    clock, ids, the request's tool names, sealing), its finished items (``output``)
    and, at its end, the final response (``final``). ``translate.response.answer``
    tells one a whole answer (``whole_reasoning``, ``whole_message``, ``whole_call``,
    ``terminal``): ``EventEncoder`` streams it as events, ``OutputCollector`` only
    collects it."""

    __slots__ = ("base", "now", "ids", "names", "seal", "summary", "output", "final")

    def __init__(
        self,
        base: dict,
        now: Callable[[], float],
        ids: Ids,
        seal: Seal | None = None,
        summary: bool = False,
        names: ToolNames = NO_NAMES,
    ) -> None:
        self.base = base
        self.now = now
        self.ids = ids
        self.names = names  # the request's custom and namespaced tools (translate.tools)
        self.seal = seal  # set: reasoning items carry encrypted_content
        self.summary = summary  # reasoning text also given (and streamed) as the summary
        self.output: list[dict] = []  # finished items, in output_index order
        self.final: dict | None = None  # the completed / incomplete response, once there is one

    def whole_message(self, parts: list[tuple[bool, bytes]], status: str) -> None:
        """A message whose parts ((is refusal, text token), in order) are all known."""
        raise NotImplementedError

    def whole_call(self, call: ToolCall, status: str) -> None:
        """A function or custom tool call whose arguments are all known (``call.pieces``)."""
        raise NotImplementedError

    def whole_reasoning(self, token: bytes, status: str) -> None:
        """A reasoning item whose text (one JSON string token) is all known."""
        raise NotImplementedError

    def whole_item(self, item: dict) -> None:
        """An item that is whole from the start and has no deltas (a compaction item)."""
        raise NotImplementedError

    def terminal(self, finish_reason: str | None, usage: Usage | None) -> None:
        """The end: ``final`` is the completed / incomplete response."""
        raise NotImplementedError

    def _reasoning_item(self, item_id: str, token: bytes, status: str) -> dict:
        text = orjson.Fragment(token)
        summary = [output.summary_text_part(text)] if self.summary else []
        sealed = self.seal(token) if self.seal is not None else None
        return output.reasoning_item(
            item_id, status, [output.reasoning_text_part(text)], summary, sealed
        )

    def final_response(self, finish_reason: str | None, usage: Usage | None) -> dict:
        """The completed / incomplete response object, with every finished item."""
        status, reason = output.finish_status(finish_reason)
        return output.response_final(
            self.base,
            status,
            self.output,
            output.usage_from_chat(usage),
            incomplete_reason=reason,
            completed_at=int(self.now()) if status == "completed" else None,
        )


class EventEncoder(AnswerBuilder):
    __slots__ = (
        "seq", "out", "next_index", "msg_id", "msg_index", "parts", "pieces", "refusal",
        "mid", "head", "tail",
    )  # fmt: skip

    def __init__(
        self,
        base: dict,
        now: Callable[[], float],
        ids: Ids,
        seal: Seal | None = None,
        summary: bool = False,
        names: ToolNames = NO_NAMES,
    ) -> None:
        super().__init__(base, now, ids, seal, summary, names)
        self.seq = 0
        self.out: list[Any] = []  # pieces of the frames not yet drained
        self.next_index = 0
        self.msg_id = ""
        self.msg_index = -1
        self.parts: list[dict] = []  # finished parts of the open message
        self.pieces: list[bytes] = []  # raw string tokens of the open part
        self.refusal = False  # the open part is a refusal part
        self.mid = b""  # the open part's / call's delta frame middle
        self.head = ev.TEXT_DELTA  # the open part's delta frame prefix and end
        self.tail = ev.TEXT_DELTA_END

    # ---- framing -----------------------------------------------------------------------

    def frame(self, prefix: bytes, mid: bytes, body: Any, end: bytes) -> None:
        """Queue one event; with ``texts``, the only place a sequence number is assigned."""
        seq = self.seq
        self.seq = seq + 1
        digits = ev.SEQUENCE[seq] if seq < ev.CACHED_SEQUENCE else b"%d" % seq
        self.out.extend((prefix, digits, mid, body, end))

    def texts(self, tokens: list[bytes]) -> None:
        """A run of deltas for the open text or reasoning part, numbered here like
        ``frame`` does.

        The text hot path: one call per upstream read instead of one per event
        (bench/micro_transcoder.py, text-* and reasoning-* rows).
        """
        self.pieces += tokens
        seq = self.seq
        n = len(tokens)
        end = seq + n
        if n == 1 and seq < ev.CACHED_SEQUENCE:  # one delta per read: a token-by-token stream
            self.out += (self.head, ev.SEQUENCE[seq], self.mid, tokens[0], self.tail)
            self.seq = end
            return
        if end > ev.CACHED_SEQUENCE:
            for token in tokens:
                self.frame(self.head, self.mid, token, self.tail)
            return
        # Five pieces per event, interleaved by slice assignment (no Python loop).
        frames: list[Any] = [self.head] * (5 * n)
        frames[1::5] = ev.SEQUENCE[seq:end]
        frames[2::5] = [self.mid] * n
        frames[3::5] = tokens
        frames[4::5] = [self.tail] * n
        self.out += frames
        self.seq = end

    def emit(self, prefix: bytes, fields: dict) -> None:
        """Queue an event whose fields (after type and sequence_number) are a dict."""
        self.frame(prefix, ev.COMMA, memoryview(orjson.dumps(fields))[1:], ev.FRAME_END)

    def drain(self) -> bytes:
        out = self.out
        if not out:
            return b""
        self.out = []
        return b"".join(out)

    def created(self) -> None:
        body = memoryview(orjson.dumps({"response": self.base}))[1:]
        self.frame(ev.CREATED, ev.COMMA, body, ev.FRAME_END)
        self.frame(ev.IN_PROGRESS, ev.COMMA, body, ev.FRAME_END)

    def _take_index(self) -> int:
        index = self.next_index
        self.next_index = index + 1
        return index

    # ---- message items -------------------------------------------------------------------

    def open_message(self) -> None:
        self.msg_id = self.ids.new(MESSAGE)
        self.msg_index = self._take_index()
        self.parts = []
        item = output.message_item(self.msg_id, "in_progress", [])
        self.emit(ev.ITEM_ADDED, {"output_index": self.msg_index, "item": item})

    def open_part(self, refusal: bool) -> None:
        index = len(self.parts)
        part = output.refusal_part("") if refusal else output.output_text_part("")
        fields = {"item_id": self.msg_id, "output_index": self.msg_index, "content_index": index}
        self.emit(ev.PART_ADDED, {**fields, "part": part})
        self.mid = ev.text_delta_mid(orjson.dumps(self.msg_id), self.msg_index, index)
        self.pieces = []
        self.refusal = refusal
        if refusal:
            self.head, self.tail = ev.REFUSAL_DELTA, ev.OBJECT_END
        else:
            self.head, self.tail = ev.TEXT_DELTA, ev.TEXT_DELTA_END

    def text(self, token: bytes) -> None:
        """A delta for the open part (the text hot path frames its deltas itself)."""
        self.pieces.append(token)
        self.frame(self.head, self.mid, token, self.tail)

    def close_part(self) -> None:
        text = orjson.Fragment(join_tokens(self.pieces))
        fields = {
            "item_id": self.msg_id,
            "output_index": self.msg_index,
            "content_index": len(self.parts),
        }
        if self.refusal:
            self.emit(ev.REFUSAL_DONE, {**fields, "refusal": text})
            part = output.refusal_part(text)
        else:
            self.emit(ev.TEXT_DONE, {**fields, "text": text, "logprobs": []})
            part = output.output_text_part(text)
        self.emit(ev.PART_DONE, {**fields, "part": part})
        self.parts.append(part)

    def close_message(self, status: str) -> None:
        self.close_part()
        item = output.message_item(self.msg_id, status, self.parts)
        self.emit(ev.ITEM_DONE, {"output_index": self.msg_index, "item": item})
        self.output.append(item)

    # ---- reasoning items -----------------------------------------------------------------

    def open_reasoning(self) -> None:
        """Open a reasoning item and its one part; deltas then go through ``text``/``texts``."""
        self.msg_id = self.ids.new(REASONING)
        self.msg_index = index = self._take_index()
        item = output.reasoning_item(self.msg_id, "in_progress", [], [])
        self.emit(ev.ITEM_ADDED, {"output_index": index, "item": item})
        item_id = orjson.dumps(self.msg_id)
        if self.summary:
            part = output.summary_text_part("")
            fields = {"item_id": self.msg_id, "output_index": index, "summary_index": 0}
            self.emit(ev.SUMMARY_PART_ADDED, {**fields, "part": part})
            self.head, self.mid = ev.SUMMARY_DELTA, ev.summary_delta_mid(item_id, index, 0)
        else:
            self.head, self.mid = ev.REASONING_DELTA, ev.text_delta_mid(item_id, index, 0)
        self.tail = ev.OBJECT_END
        self.pieces = []

    def close_reasoning(self, status: str) -> None:
        token = join_tokens(self.pieces)
        text = orjson.Fragment(token)
        fields = {"item_id": self.msg_id, "output_index": self.msg_index}
        if self.summary:
            part = output.summary_text_part(text)
            self.emit(ev.SUMMARY_DONE, {**fields, "summary_index": 0, "text": text})
            self.emit(ev.SUMMARY_PART_DONE, {**fields, "summary_index": 0, "part": part})
        else:
            self.emit(ev.REASONING_DONE, {**fields, "content_index": 0, "text": text})
        item = self._reasoning_item(self.msg_id, token, status)
        self.emit(ev.ITEM_DONE, {"output_index": self.msg_index, "item": item})
        self.output.append(item)

    # ---- function_call and custom_tool_call items -----------------------------------------

    def open_call(self, call: ToolCall) -> None:
        """Open a call's item; arguments buffered so far go out as one delta.

        The upstream's function name says what the call is (``names``): a plain
        function call, a namespace's function call, or a custom tool's call."""
        if not call.call_id:
            call.call_id = self.ids.call()
        ref = call.ref = self.names.ref(call.name) if self.names.by_upstream else None
        if ref is not None and ref.kind == "custom":
            self._open_custom(call)
            return
        call.item_id = self.ids.new(FUNCTION_CALL)
        call.output_index = self._take_index()
        name, namespace = (call.name, None) if ref is None else (ref.name, ref.namespace)
        item = output.function_call_item(
            call.item_id, call.call_id, name, "", "in_progress", namespace
        )
        self.emit(ev.ITEM_ADDED, {"output_index": call.output_index, "item": item})
        self.mid = ev.arguments_delta_mid(orjson.dumps(call.item_id), call.output_index)
        if call.pieces:
            self.frame(ev.ARGS_DELTA, self.mid, join_tokens(call.pieces), ev.OBJECT_END)

    def arguments(self, call: ToolCall, token: bytes) -> None:
        """More arguments for the open call."""
        call.pieces.append(token)
        if call.custom is not None:
            self._custom_delta(call.custom.feed(_decoded(token)))
            return
        self.frame(ev.ARGS_DELTA, self.mid, token, ev.OBJECT_END)

    def close_call(self, call: ToolCall, status: str) -> None:
        if call.custom is not None:
            self._close_custom(call, call.custom)
            return
        arguments = orjson.Fragment(join_tokens(call.pieces))
        fields = {"item_id": call.item_id, "output_index": call.output_index}
        ref = call.ref
        name, namespace = (call.name, None) if ref is None else (ref.name, ref.namespace)
        self.emit(ev.ARGS_DONE, {**fields, "name": name, "arguments": arguments})
        item = output.function_call_item(
            call.item_id, call.call_id, name, arguments, status, namespace
        )
        self.emit(ev.ITEM_DONE, {"output_index": call.output_index, "item": item})
        self.output.append(item)

    def _open_custom(self, call: ToolCall) -> None:
        ref = call.ref
        assert ref is not None
        call.item_id = self.ids.new(CUSTOM_TOOL_CALL)
        call.output_index = self._take_index()
        call.custom = CustomInput()
        item = output.custom_tool_call_item(call.item_id, call.call_id, ref.name, "", ref.namespace)
        self.emit(ev.ITEM_ADDED, {"output_index": call.output_index, "item": item})
        self.mid = ev.arguments_delta_mid(orjson.dumps(call.item_id), call.output_index)
        if call.pieces:
            self._custom_delta(call.custom.feed(_decoded(join_tokens(call.pieces))))

    def _custom_delta(self, text: str) -> None:
        if text:
            self.frame(ev.CUSTOM_DELTA, self.mid, orjson.dumps(text), ev.OBJECT_END)

    def _close_custom(self, call: ToolCall, custom: CustomInput) -> None:
        self._custom_delta(custom.finish())
        ref = call.ref
        assert ref is not None
        text = custom.input
        fields = {"item_id": call.item_id, "output_index": call.output_index}
        self.emit(ev.CUSTOM_DONE, {**fields, "input": text})
        item = output.custom_tool_call_item(
            call.item_id, call.call_id, ref.name, text, ref.namespace
        )
        self.emit(ev.ITEM_DONE, {"output_index": call.output_index, "item": item})
        self.output.append(item)

    # ---- whole items (an answer that was complete before it was streamed) ---------------

    def whole_message(self, parts: list[tuple[bool, bytes]], status: str) -> None:
        """A message whose parts ((is refusal, text token), in order) are all known:
        opened, each part given in one delta, closed, as a stream of it would be."""
        self.open_message()
        for k, (refusal, token) in enumerate(parts):
            if k:
                self.close_part()
            self.open_part(refusal)
            self.text(token)
        self.close_message(status)

    def whole_call(self, call: ToolCall, status: str) -> None:
        """A function call whose arguments are all known (``call.pieces``)."""
        self.open_call(call)
        self.close_call(call, status)

    def whole_reasoning(self, token: bytes, status: str) -> None:
        """A reasoning item whose text (one JSON string token) is all known."""
        self.open_reasoning()
        self.text(token)
        self.close_reasoning(status)

    def whole_item(self, item: dict) -> None:
        """``output_item.added`` and ``output_item.done``, both with the whole item."""
        fields = {"output_index": self._take_index(), "item": item}
        self.emit(ev.ITEM_ADDED, fields)
        self.emit(ev.ITEM_DONE, fields)
        self.output.append(item)

    # ---- the end -------------------------------------------------------------------------

    def terminal(self, finish_reason: str | None, usage: Usage | None) -> None:
        """response.completed / response.incomplete."""
        final = self.final = self.final_response(finish_reason, usage)
        self.emit(ev.TERMINAL[final["status"]], {"response": final})

    def failed(self, message: str, code: str) -> None:
        error = {"code": code, "message": message}
        final = self.final = output.response_final(
            self.base, "failed", self.output, None, error=error
        )
        self.emit(ev.TERMINAL["failed"], {"response": final})


class OutputCollector(AnswerBuilder):
    """The items and the terminal response of a whole answer, without events: what
    ``translate.response`` builds a non-streamed answer with. The items are the
    ones ``EventEncoder``'s ``whole_message`` / ``whole_call`` would stream, built
    directly."""

    __slots__ = ()

    def terminal(self, finish_reason: str | None, usage: Usage | None) -> None:
        self.final = self.final_response(finish_reason, usage)

    def whole_message(self, parts: list[tuple[bool, bytes]], status: str) -> None:
        content = [
            output.refusal_part(orjson.Fragment(token))
            if refusal
            else output.output_text_part(orjson.Fragment(token))
            for refusal, token in parts
        ]
        self.output.append(output.message_item(self.ids.new(MESSAGE), status, content))

    def whole_call(self, call: ToolCall, status: str) -> None:
        if not call.call_id:
            call.call_id = self.ids.call()
        ref = self.names.ref(call.name) if self.names.by_upstream else None
        if ref is not None and ref.kind == "custom":
            text = whole_input(_decoded(join_tokens(call.pieces))) if call.pieces else ""
            item_id = self.ids.new(CUSTOM_TOOL_CALL)
            self.output.append(
                output.custom_tool_call_item(item_id, call.call_id, ref.name, text, ref.namespace)
            )
            return
        arguments = orjson.Fragment(join_tokens(call.pieces))
        item_id = self.ids.new(FUNCTION_CALL)
        name, namespace = (call.name, None) if ref is None else (ref.name, ref.namespace)
        self.output.append(
            output.function_call_item(item_id, call.call_id, name, arguments, status, namespace)
        )

    def whole_reasoning(self, token: bytes, status: str) -> None:
        self.output.append(self._reasoning_item(self.ids.new(REASONING), token, status))

    def whole_item(self, item: dict) -> None:
        self.output.append(item)
