"""Sans-IO transcoder: upstream chat-completions SSE bytes → Responses API SSE bytes.

The handler calls ``start()`` when the request is accepted, ``feed(chunk)`` for
every upstream read, then ``finish()`` at upstream EOF or ``fail(message)`` when
the upstream connection breaks; ``complete(body)`` replays a non-streaming
``chat.completion`` as the same event sequence. Every call returns the bytes to
write (possibly ``b""``); nothing here awaits, reads a clock other than the
injected ``now``, or knows about sockets.

States and transitions (``State``)::

    NEW        --start/feed/...-->   IDLE        (response.created, response.in_progress)
    IDLE       --text | refusal-->   TEXT | REFUSAL   (message item + content part opened)
    TEXT       --refusal-->          REFUSAL     (text part closed, refusal part opened)
    REFUSAL    --text-->             TEXT        (likewise)
    IDLE|TEXT|REFUSAL --tool call--> CALLS       (message item closed)
    CALLS      --text | refusal-->   TEXT | REFUSAL   (calls closed, a new message opened)
    any open   --finish_reason-->    FINISHING   (open items closed; waits for usage / [DONE])
    IDLE..FINISHING --[DONE] | EOF-> DONE        (response.completed / response.incomplete)
    any        --error or malformed chunk | EOF before finish | fail()--> DONE (response.failed)

Items are strictly sequential: one item is open at a time and ``output_index``
is assigned when an item opens (``_take_index``). A function call opens once its
name is known; deltas of a call that cannot open yet (another call is still
open: the upstream interleaves calls) are buffered and sent as one delta when it
opens. The open call is closed for the next one only once its arguments parse
as JSON; otherwise the queued calls wait for finish_reason.

Zero-copy text: ``content`` / ``refusal`` / ``arguments`` are decoded as
``msgspec.Raw`` (the JSON string token, quotes and escapes included) and spliced
into the delta frames as is; ``.done`` texts are the pieces joined with their
quotes stripped, carried as ``orjson.Fragment``. ``sequence_number`` is assigned
only in ``_frame``.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any

import msgspec
import orjson

from gateway.sse import SseParser
from gateway.toolcalls import ToolCall, ToolCalls
from gateway.wire import chunks as ck
from gateway.wire import events as ev
from gateway.wire import output

__all__ = ["State", "Transcoder"]

DONE_MARKER = b"[DONE]"
COMPLETED = "completed"
INCOMPLETE = "incomplete"


class State(enum.Enum):
    NEW = "new"
    IDLE = "idle"
    TEXT = "text"
    REFUSAL = "refusal"
    CALLS = "calls"
    FINISHING = "finishing"
    DONE = "done"


class Transcoder:
    __slots__ = (
        "_base", "_now", "_new_id", "_new_call_id", "_parser", "_state", "_status",
        "_seq", "_out", "_output", "_next_index", "_finish", "_usage",
        "_msg_id", "_msg_index", "_parts", "_pieces", "_prefix", "_mid", "_tail",
        "_calls",
    )  # fmt: skip

    def __init__(
        self,
        base: dict,
        *,
        now: Callable[[], float] = time.time,
        new_id: Callable[[str], str] = output.new_id,
        new_call_id: Callable[[], str] = output.new_call_id,
    ) -> None:
        self._base = base
        self._now = now
        self._new_id = new_id
        self._new_call_id = new_call_id
        self._parser = SseParser()
        self._state = State.NEW
        self._status: str | None = None
        self._seq = 0
        self._out: list[Any] = []  # pieces of the frames not yet returned
        self._output: list[dict] = []  # finished items, in output_index order
        self._next_index = 0
        self._finish: str | None = None
        self._usage: ck.Usage | None = None
        self._msg_id = ""
        self._msg_index = -1
        self._parts: list[dict] = []  # finished parts of the open message
        self._pieces: list[bytes] = []  # raw string tokens of the open part
        self._prefix = self._mid = self._tail = b""  # the open part's / call's delta frame
        self._calls = ToolCalls()

    # ---- public interface ------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._state is State.DONE

    @property
    def status(self) -> str | None:
        return self._status

    def start(self) -> bytes:
        self._begin()
        return self._drain()

    def feed(self, data: bytes) -> bytes:
        if not self._begin():
            return b""
        for payload in self._parser.feed(data):
            self._on_payload(payload)
            if self._state is State.DONE:
                break
        return self._drain()

    def finish(self) -> bytes:
        if not self._begin():
            return b""
        tail = self._parser.flush()
        if self._state is State.FINISHING:
            self._terminal()
        elif tail is not None:
            self._fail("upstream ended the stream in the middle of an event")
        else:
            self._fail("upstream ended the stream before finishing")
        return self._drain()

    def fail(self, message: str, code: str = "server_error") -> bytes:
        if not self._begin():
            return b""
        self._fail(message, code)
        return self._drain()

    def complete(self, completion: bytes) -> bytes:
        if not self._begin():
            return b""
        try:
            body = ck.COMPLETION_DECODER.decode(completion)
        except msgspec.DecodeError as exc:
            self._fail(f"upstream sent a malformed completion: {exc}")
        else:
            self._on_completion(body)
        return self._drain()

    # ---- framing -----------------------------------------------------------------------

    def _frame(self, prefix: bytes, mid: bytes, body: Any, end: bytes) -> None:
        """Queue one event; the only place a sequence number is assigned."""
        seq = self._seq
        self._seq = seq + 1
        self._out.extend((prefix, b"%d" % seq, mid, body, end))

    def _emit(self, prefix: bytes, fields: dict) -> None:
        """Queue an event whose fields (after type and sequence_number) are a dict."""
        self._frame(prefix, ev.COMMA, memoryview(orjson.dumps(fields))[1:], ev.FRAME_END)

    def _drain(self) -> bytes:
        out = self._out
        if not out:
            return b""
        self._out = []
        return b"".join(out)

    def _begin(self) -> bool:
        """Emit created + in_progress if not done yet; False once a terminal was sent."""
        if self._state is State.NEW:
            self._start()
        return self._state is not State.DONE

    def _start(self) -> None:
        body = memoryview(orjson.dumps({"response": self._base}))[1:]
        self._frame(ev.CREATED, ev.COMMA, body, ev.FRAME_END)
        self._frame(ev.IN_PROGRESS, ev.COMMA, body, ev.FRAME_END)
        self._state = State.IDLE

    def _take_index(self) -> int:
        index = self._next_index
        self._next_index = index + 1
        return index

    # ---- upstream facts ------------------------------------------------------------------

    def _on_payload(self, payload: bytes) -> None:
        """One SSE data payload: a chunk, ``[DONE]``, an error, or garbage."""
        if payload == DONE_MARKER:
            self._on_done_marker()
            return
        try:
            chunk = ck.CHUNK_DECODER.decode(payload)
        except msgspec.DecodeError as exc:
            if payload.strip():
                self._fail(f"upstream sent a malformed chunk: {exc}")
            return
        if (chunk.error or chunk.object == "error") and ck.is_error(chunk):
            self._fail("upstream error: " + ck.error_message(chunk))
            return
        if chunk.usage is not None:
            self._usage = chunk.usage
        choices = chunk.choices
        if not choices:
            return
        choice = choices[0] if choices[0].index == 0 else ck.first_choice(choices)
        if choice is None or self._state is State.FINISHING:
            return
        if choice.delta is not None:
            self._on_delta(choice.delta)
        if choice.finish_reason is not None:
            self._on_finish(choice.finish_reason)

    def _on_delta(self, delta: ck.Delta) -> None:
        content = delta.content
        if len(content) > 2:  # '""' (empty) and absent are skipped; 'null' fails the quote test
            raw = bytes(content)
            if raw[0] == 34:
                self._on_text(raw, State.TEXT)
        refusal = delta.refusal
        if len(refusal) > 2:
            raw = bytes(refusal)
            if raw[0] == 34:
                self._on_text(raw, State.REFUSAL)
        if delta.tool_calls:
            for call in delta.tool_calls:
                self._on_tool_call(call)

    def _on_text(self, raw: bytes, kind: State) -> None:
        """A non-empty text or refusal delta (a JSON string token)."""
        if self._state is not kind:
            self._open_part(kind)
        if not raw.isascii():
            raw = ck.valid_utf8(raw)
        self._pieces.append(raw)
        self._frame(self._prefix, self._mid, raw, self._tail)

    def _on_tool_call(self, delta: ck.ToolCallDelta) -> None:
        calls = self._calls
        call = calls.get(delta)
        if delta.id and not call.call_id:
            call.call_id = delta.id
        piece = None
        function = delta.function
        if function is not None:
            if function.name and not call.item_id:
                call.name = function.name
            piece = ck.string_token(function.arguments)
        if self._state is not State.CALLS:
            self._enter_calls()
        if call is calls.open:
            if piece is not None:
                call.pieces.append(piece)
                self._frame(self._prefix, self._mid, piece, self._tail)
                if calls.queue and (b"}" in piece or b"]" in piece):
                    self._advance()
        elif not call.item_id:  # queued: buffer, then open whatever can open
            if piece is not None:
                call.pieces.append(piece)
            self._advance()
        # else: a late delta for a call already closed (its arguments parsed): dropped

    def _on_completion(self, body: ck.Completion) -> None:
        """A whole non-streaming chat.completion, replayed as facts."""
        if ck.is_error(body):
            self._fail("upstream error: " + ck.error_message(body))
            return
        self._usage = body.usage
        choice = ck.first_choice(body.choices)
        if choice is None:
            self._fail("upstream returned no choices")
            return
        message = choice.message
        if message is not None:
            for position, call in enumerate(message.tool_calls or ()):
                if call.index < 0:
                    call.index = position
            self._on_delta(message)
        self._on_finish(choice.finish_reason)
        self._terminal()

    def _on_finish(self, reason: str | None) -> None:
        self._finish = reason
        status, _ = output.finish_status(reason)
        self._close_open(COMPLETED if status == COMPLETED else INCOMPLETE)
        self._state = State.FINISHING

    def _on_done_marker(self) -> None:
        if self._state is not State.FINISHING:
            self._on_finish(None)
        self._terminal()

    # ---- items -----------------------------------------------------------------------

    def _open_part(self, kind: State) -> None:
        if self._state is State.CALLS:
            self._close_calls(COMPLETED)
        if self._state is State.IDLE:
            self._open_message()
        else:
            self._close_part()
        index = len(self._parts)
        part = output.output_text_part("") if kind is State.TEXT else output.refusal_part("")
        fields = {"item_id": self._msg_id, "output_index": self._msg_index}
        self._emit(ev.PART_ADDED, {**fields, "content_index": index, "part": part})
        self._mid = ev.text_delta_mid(orjson.dumps(self._msg_id), self._msg_index, index)
        if kind is State.TEXT:
            self._prefix, self._tail = ev.TEXT_DELTA, ev.TEXT_DELTA_END
        else:
            self._prefix, self._tail = ev.REFUSAL_DELTA, ev.OBJECT_END
        self._pieces = []
        self._state = kind

    def _open_message(self) -> None:
        self._msg_id = self._new_id("msg_")
        self._msg_index = self._take_index()
        self._parts = []
        item = output.message_item(self._msg_id, "in_progress", [])
        self._emit(ev.ITEM_ADDED, {"output_index": self._msg_index, "item": item})

    def _close_part(self) -> None:
        text = orjson.Fragment(ck.join_tokens(self._pieces))
        fields = {
            "item_id": self._msg_id,
            "output_index": self._msg_index,
            "content_index": len(self._parts),
        }
        if self._state is State.TEXT:
            self._emit(ev.TEXT_DONE, {**fields, "text": text, "logprobs": []})
            part = output.output_text_part(text)
        else:
            self._emit(ev.REFUSAL_DONE, {**fields, "refusal": text})
            part = output.refusal_part(text)
        self._emit(ev.PART_DONE, {**fields, "part": part})
        self._parts.append(part)

    def _close_message(self, status: str) -> None:
        self._close_part()
        item = output.message_item(self._msg_id, status, self._parts)
        self._emit(ev.ITEM_DONE, {"output_index": self._msg_index, "item": item})
        self._output.append(item)
        self._state = State.IDLE

    def _enter_calls(self) -> None:
        if self._state is not State.IDLE:
            self._close_message(COMPLETED)
        self._state = State.CALLS

    def _advance(self) -> None:
        """Open queued calls in order while the open one (if any) can give way."""
        calls = self._calls
        while calls.can_switch():
            if calls.open is not None:
                self._close_call(calls.open, COMPLETED)
            self._open_call(calls.queue.popleft())

    def _open_call(self, call: ToolCall) -> None:
        if not call.call_id:
            call.call_id = self._new_call_id()
        call.item_id = self._new_id("fc_")
        call.output_index = self._take_index()
        item = output.function_call_item(call.item_id, call.call_id, call.name, "", "in_progress")
        self._emit(ev.ITEM_ADDED, {"output_index": call.output_index, "item": item})
        self._calls.open = call
        self._mid = ev.arguments_delta_mid(orjson.dumps(call.item_id), call.output_index)
        self._prefix, self._tail = ev.ARGS_DELTA, ev.OBJECT_END
        if call.pieces:  # buffered while another call was open: one delta
            self._frame(ev.ARGS_DELTA, self._mid, ck.join_tokens(call.pieces), ev.OBJECT_END)

    def _close_call(self, call: ToolCall, status: str) -> None:
        arguments = orjson.Fragment(ck.join_tokens(call.pieces))
        fields = {"item_id": call.item_id, "output_index": call.output_index}
        self._emit(ev.ARGS_DONE, {**fields, "name": call.name, "arguments": arguments})
        item = output.function_call_item(call.item_id, call.call_id, call.name, arguments, status)
        self._emit(ev.ITEM_DONE, {"output_index": call.output_index, "item": item})
        self._output.append(item)
        self._calls.open = None

    def _close_calls(self, status: str) -> None:
        """Close the open call, then open and close every queued one that has data."""
        calls = self._calls
        if calls.open is not None:
            self._close_call(calls.open, status)
        while calls.queue:
            call = calls.queue.popleft()
            if call.name or call.pieces:
                self._open_call(call)
                self._close_call(call, status)
        self._state = State.IDLE

    def _close_open(self, status: str) -> None:
        if self._state is State.TEXT or self._state is State.REFUSAL:
            self._close_message(status)
        elif self._state is State.CALLS:
            self._close_calls(status)

    # ---- terminal events -------------------------------------------------------------

    def _terminal(self) -> None:
        status, reason = output.finish_status(self._finish)
        completed_at = int(self._now()) if status == COMPLETED else None
        usage = output.usage_from_chat(self._usage)
        final = output.response_final(
            self._base,
            status,
            self._output,
            usage,
            incomplete_reason=reason,
            completed_at=completed_at,
        )
        self._end(status, final)

    def _fail(self, message: str, code: str = "server_error") -> None:
        if self._state is not State.FINISHING:
            self._close_open(INCOMPLETE)
        error = {"code": code, "message": message}
        final = output.response_final(self._base, "failed", self._output, None, error=error)
        self._end("failed", final)

    def _end(self, status: str, final: dict) -> None:
        self._emit(ev.TERMINAL[status], {"response": final})
        self._state = State.DONE
        self._status = status
