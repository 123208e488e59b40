"""Sans-IO transcoder: upstream chat-completions SSE bytes → Responses API SSE bytes.

The handler calls ``start()`` when the request is accepted, ``feed(chunk)`` for
every upstream read, then ``finish()`` at upstream EOF or ``fail(message)`` when
the upstream connection breaks; ``complete(body)`` replays a non-streaming
``chat.completion`` as the same event sequence. Every call returns the bytes to
write (possibly ``b""``); nothing here awaits, reads a clock other than the
injected ``now``, or knows about sockets.

Layers: ``sse.SseParser`` (bytes → data payloads) → ``wire.chunks`` (payload →
view Structs) → this state machine (upstream facts → what happens to the output)
→ ``encoder.EventEncoder`` (Responses events, ids, indexes, sequence numbers).
``complete`` hands a whole completion to ``translate.response.answer``, the one
reading of a completion (the JSON answer is built from it too).

States and transitions (``State``)::

    NEW        --start/feed/...-->   IDLE        (response.created, response.in_progress)
    IDLE       --text | refusal-->   TEXT | REFUSAL   (message item + content part opened)
    TEXT       --refusal-->          REFUSAL     (text part closed, refusal part opened)
    REFUSAL    --text-->             TEXT        (likewise)
    IDLE|TEXT|REFUSAL --tool call--> CALLS       (message item closed)
    CALLS      --text | refusal-->   TEXT | REFUSAL   (calls closed, a new message opened)
    IDLE|TEXT|REFUSAL|CALLS --reasoning--> REASONING  (what was open closed; reasoning item
                                                        opened)
    REASONING  --text | refusal-->   TEXT | REFUSAL   (reasoning item closed, message opened)
    REASONING  --tool call-->        CALLS       (reasoning item closed)
    any open   --finish_reason-->    FINISHING   (open items closed; waits for usage / [DONE])
    FINISHING  --[DONE] | EOF-->     DONE        (response.completed / response.incomplete)
    any        --error or malformed chunk | [DONE] or EOF before finish_reason | fail()-->
               DONE (response.failed)

Only choice index 0 is read. Reasoning deltas (``reasoning_content``, or newer
vLLM's ``reasoning``) become a reasoning item before what they precede: reasoning
between two tool calls gives two reasoning items, in order. In one delta,
reasoning comes before text and tool calls. Function calls follow ``toolcalls``
(items strictly one after another; interleaved calls are buffered); a call of a
custom tool or of a namespace's function (``names``, from ``translate.tools``)
becomes its own item in the encoder. Text and
reasoning travel as raw JSON string tokens (``msgspec.Raw``) from the upstream
bytes into the output frames, never as str, on the same hot path: a plain chunk of
the open part's kind (``chunks.PLAIN_DECODERS``) is matched by that kind's chunk
template or decoded as its plain view.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from gateway.core.ids import IDS, Ids
from gateway.core.stream.chunk_template import ChunkTemplate
from gateway.core.stream.encoder import EventEncoder, Seal
from gateway.core.stream.sse import SseParser, SseTooLarge
from gateway.core.stream.toolcalls import ToolCalls
from gateway.core.translate.response import Read, answer, decode_completion
from gateway.core.translate.tools import NO_NAMES, ToolNames
from gateway.core.wire import chunks as ck
from gateway.core.wire import output
from gateway.errors import CONTEXT_LENGTH_EXCEEDED, UpstreamBadResponse, is_context_overflow

__all__ = ["State", "Transcoder"]

DONE_MARKER = b"[DONE]"
COMPLETED = "completed"
INCOMPLETE = "incomplete"
UNFINISHED = "upstream ended the stream before finishing"
LEARNS = 4  # template (re)learning attempts per stream and plain kind: chunk_template.py
RUNS_PER_READ = 3  # ChunkTemplate.run tries per upstream read (each O(read)); none after a miss


class State(enum.Enum):
    NEW = "new"
    IDLE = "idle"
    TEXT = "text"
    REFUSAL = "refusal"
    CALLS = "calls"
    REASONING = "reasoning"
    FINISHING = "finishing"
    DONE = "done"


_NEW, _TEXT, _CALLS, _DONE = State.NEW, State.TEXT, State.CALLS, State.DONE  # for the hot loop
_REASONING = State.REASONING
_decode = ck.CHUNK_DECODER.decode
_PLAIN = ck.PLAIN_DECODERS
_PLAIN_DECODE = tuple(decoder.decode for decoder in _PLAIN)


class Transcoder:
    __slots__ = (
        "_enc", "_parser", "_state", "_finish", "_usage", "_calls", "_templates", "_learns",
        "_kind",
    )  # fmt: skip

    def __init__(
        self,
        base: dict,
        *,
        now: Callable[[], float] = time.time,
        ids: Ids = IDS,
        seal: Seal | None = None,
        summary: bool = False,
        names: ToolNames = NO_NAMES,
    ) -> None:
        self._enc = EventEncoder(base, now, ids, seal, summary, names)
        self._parser = SseParser()
        self._state = State.NEW
        self._finish: str | None = None  # the upstream's finish_reason
        self._usage: ck.Usage | None = None  # the upstream's latest usage
        self._calls = ToolCalls()
        # Per plain kind (ck.TEXT, ck.REASONING_CONTENT, ck.REASONING): this stream's chunk
        # template, and the attempts left to learn (or learn again) one.
        self._templates: list[ChunkTemplate | None] = [None, None, None]
        self._learns = [LEARNS, LEARNS, LEARNS]
        self._kind = ck.TEXT  # the plain kind of the open reasoning item's deltas

    @property
    def done(self) -> bool:
        return self._state is State.DONE

    @property
    def events(self) -> int:
        """Events made so far (the next sequence number)."""
        return self._enc.seq

    @property
    def final(self) -> dict | None:
        """The terminal response object (its ``status`` and ``usage``), once sent."""
        return self._enc.final

    def start(self) -> bytes:
        self._begin()
        return self._enc.drain()

    def feed(self, data: bytes) -> bytes:
        if self._state is _DONE:
            return b""
        if self._state is _NEW:
            self._start()
        enc = self._enc
        # The hot loop, measured by bench/micro_transcoder.py (text-*, reasoning-* and
        # tool-* rows): a chunk that only brings more text for the open text part or
        # more reasoning for the open reasoning item (matched by the stream's chunk
        # template of that kind, a whole run of them at once, or else decoded as that
        # kind's plain view), or more arguments for the open function call, is taken
        # right here; anything else (or odd) goes to _on_undecodable / _on_chunk.
        try:
            payloads = self._parser.feed(data)
        except SseTooLarge as exc:
            self._fail(str(exc))
            return enc.drain()
        texts: list[bytes] = []  # a run of text (or reasoning) deltas, framed together
        state = self._state
        if state is _REASONING:
            plain, kind = True, self._kind
        else:
            plain, kind = state is _TEXT, ck.TEXT
        template = self._templates[kind]
        decode_plain = _PLAIN_DECODE[kind]
        runs = RUNS_PER_READ if self._parser.lf_free else 0
        count = len(payloads)
        i = 0
        while i < count:
            payload = payloads[i]
            i += 1
            if plain:  # a text / reasoning part is open: most chunks only bring more of it
                if template is not None:  # no decoding while the chunks fit the template
                    if runs and i < count:
                        runs -= 1
                        matched, tokens = template.run(payloads, i - 1)
                        if matched:
                            texts += tokens
                            i += matched - 1
                            continue
                        runs = 0  # an odd chunk in this read: payload by payload from here
                    token = template.token(payload)
                    if token is not None:
                        if len(token) > 2:
                            texts.append(token)
                        continue
                try:
                    view = decode_plain(payload)
                except ValueError:
                    pass  # not a plain chunk of this kind (or not JSON): the general path decides
                else:
                    if view.usage is not None:
                        self._usage = view.usage
                    content = view.choices[0].delta.content
                    if len(content) > 2:  # '""': no text; 'null' fails the quote test
                        token = bytes(content)
                        if token[0] == 34:
                            texts.append(token if token.isascii() else ck.valid_utf8(token))
                            learns = self._learns
                            if learns[kind] and view.usage is None:
                                learns[kind] -= 1
                                template = ChunkTemplate.learn(payload, token, _PLAIN[kind])
                                self._templates[kind] = template
                    continue
            if texts:  # not a plain chunk: the text before it goes out first
                enc.texts(texts)
                texts = []
            if payload == DONE_MARKER:  # (checked first: a failed decode raises, which costs)
                self._on_done()
                break
            try:
                chunk = _decode(payload)
            except ValueError as exc:  # msgspec's errors, or UnicodeDecodeError in a str field
                self._on_undecodable(payload, exc)
                if self._state is _DONE:
                    break
            else:
                choices = chunk.choices
                if state is _CALLS and choices and not chunk.error and chunk.message is None:
                    # More arguments for the open call, and nothing else?
                    choice = choices[0]
                    delta = choice.delta
                    if (
                        delta is not None
                        and (calls := delta.tool_calls)
                        and len(calls) == 1
                        and choice.finish_reason is None
                        and choice.index == 0
                        and not delta.refusal
                        and not delta.content
                        and not delta.reasoning_content
                        and not delta.reasoning
                    ):
                        call = calls[0]
                        current = self._calls.open
                        function = call.function
                        if (
                            current is not None
                            and call.index == current.key
                            and call.id is None
                            and function is not None
                            and function.name is None
                            and not self._calls.queue
                        ):
                            if chunk.usage is not None:  # vLLM's continuous_usage_stats
                                self._usage = chunk.usage
                            piece = ck.string_token(function.arguments)
                            if piece is not None:
                                enc.arguments(current, piece)
                            continue
                self._on_chunk(chunk)
                if self._state is _DONE:
                    break
            if self._state is not state:
                state = self._state
                if state is _REASONING:
                    plain, kind = True, self._kind
                else:
                    plain, kind = state is _TEXT, ck.TEXT
                template = self._templates[kind]
                decode_plain = _PLAIN_DECODE[kind]
        if texts:
            enc.texts(texts)
        return enc.drain()

    def finish(self) -> bytes:
        if not self._begin():
            return b""
        tail = self._parser.flush()
        if self._state is State.FINISHING:
            self._terminal()
        elif tail is not None:
            self._fail("upstream ended the stream in the middle of an event")
        else:
            self._fail(UNFINISHED)
        return self._enc.drain()

    def fail(self, message: str, code: str = "server_error") -> bytes:
        if not self._begin():
            return b""
        self._fail(message, code)
        return self._enc.drain()

    def complete(self, completion: bytes, read: Read = answer) -> bytes:
        """A whole ``chat.completion`` as events; ``read`` tells it (``answer``, or the
        compaction's)."""
        if not self._begin():
            return b""
        try:
            read(decode_completion(completion), self._enc)
        except UpstreamBadResponse as exc:
            self._fail(exc.message)
        else:
            self._end()
        return self._enc.drain()

    def empty(self) -> bytes:
        """A response that asks nothing of the model (a WebSocket warm-up, ``generate:
        false``): created, in progress and completed at once, without output."""
        if not self._begin():
            return b""
        self._finish = "stop"
        self._terminal()
        return self._enc.drain()

    def _begin(self) -> bool:
        """Emit created + in_progress if not done yet; False once a terminal was sent."""
        if self._state is State.NEW:
            self._start()
        return self._state is not State.DONE

    def _start(self) -> None:
        self._enc.created()
        self._state = State.IDLE

    # ---- upstream facts ------------------------------------------------------------------

    def _on_done(self) -> None:
        """``[DONE]``: the end; without a finish_reason, a broken one."""
        if self._state is State.FINISHING:
            self._terminal()
        else:
            self._fail(UNFINISHED)

    def _on_undecodable(self, payload: bytes, exc: ValueError) -> None:
        """A payload that is not a JSON chunk (nor ``[DONE]``): blank, or garbage."""
        if payload.strip():
            self._fail(f"upstream sent a malformed chunk: {exc}")

    def _on_chunk(self, chunk: ck.Chunk) -> None:
        """One decoded chunk: an error, usage, and the first choice's delta and finish."""
        if ck.is_error(chunk):
            message = ck.error_message(chunk)
            overflow = is_context_overflow(message)
            self._fail(
                "upstream error: " + message,
                CONTEXT_LENGTH_EXCEEDED if overflow else "server_error",
            )
            return
        if chunk.usage is not None:
            self._usage = chunk.usage
        choice = ck.first_choice(chunk.choices)
        if choice is None or self._state is State.FINISHING:
            return
        if choice.delta is not None:
            self._on_delta(choice.delta)
        if choice.finish_reason is not None:
            self._on_finish(choice.finish_reason)

    def _on_delta(self, delta: ck.Delta) -> None:
        if delta.reasoning_content or delta.reasoning:  # (a Raw is falsy when absent)
            kind, reasoning = delta.reasoning_token()
            if reasoning is not None:
                self._on_reasoning(reasoning, kind)
        content = delta.content
        if len(content) > 2:
            token = bytes(content)
            if token[0] == 34:
                self._on_text(token, State.TEXT)
        refusal = delta.refusal
        if len(refusal) > 2:
            token = bytes(refusal)
            if token[0] == 34:
                self._on_text(token, State.REFUSAL)
        for call in delta.tool_calls or ():
            self._on_tool_call(call)

    def _on_text(self, token: bytes, kind: State) -> None:
        """A non-empty text or refusal delta (a JSON string token)."""
        if self._state is not kind:
            self._open_part(kind)
        self._enc.text(token if token.isascii() else ck.valid_utf8(token))

    def _on_reasoning(self, token: bytes, kind: int) -> None:
        """A non-empty reasoning delta (a JSON string token), in the field ``kind`` names."""
        if self._state is not State.REASONING:
            self._close_open(COMPLETED)
            self._enc.open_reasoning()
            self._state = State.REASONING
        self._kind = kind
        self._enc.text(token)

    def _on_tool_call(self, delta: ck.ToolCallDelta) -> None:
        calls = self._calls
        call = calls.get(delta)
        if delta.id and not call.call_id:
            call.call_id = delta.id
        token = None
        function = delta.function
        if function is not None:
            if function.name and not call.item_id:
                call.name = function.name
            token = ck.string_token(function.arguments)
        if self._state is not State.CALLS:
            self._enter_calls()
        if call is calls.open:
            if token is not None:
                self._enc.arguments(call, token)
                if calls.queue and (125 in token or 93 in token):  # "}" or "]"
                    self._advance()
        elif not call.item_id:  # queued: buffer, then open whatever can open
            if token is not None:
                call.pieces.append(token)
            self._advance()
        # else: a late delta for a call already closed (its arguments parsed): dropped

    def _on_finish(self, reason: str | None) -> None:
        self._finish = reason
        status, _ = output.finish_status(reason)
        self._close_open(COMPLETED if status == COMPLETED else INCOMPLETE)
        self._state = State.FINISHING

    # ---- items -----------------------------------------------------------------------

    def _open_part(self, kind: State) -> None:
        if self._state is State.CALLS:
            self._close_calls(COMPLETED)
        elif self._state is State.REASONING:
            self._close_reasoning(COMPLETED)
        if self._state is State.IDLE:
            self._enc.open_message()
        else:
            self._enc.close_part()
        self._enc.open_part(refusal=kind is State.REFUSAL)
        self._state = kind

    def _enter_calls(self) -> None:
        if self._state is State.REASONING:
            self._close_reasoning(COMPLETED)
        elif self._state is not State.IDLE:
            self._enc.close_message(COMPLETED)
        self._state = State.CALLS

    def _close_reasoning(self, status: str) -> None:
        self._enc.close_reasoning(status)
        self._state = State.IDLE

    def _advance(self) -> None:
        """Open queued calls in order while the open one (if any) can give way."""
        calls = self._calls
        while calls.can_switch():
            if calls.open is not None:
                self._enc.close_call(calls.open, COMPLETED)
            calls.open = calls.queue.popleft()
            self._enc.open_call(calls.open)

    def _close_calls(self, status: str) -> None:
        """Close the open call, then open and close every queued one that has data."""
        calls = self._calls
        if calls.open is not None:
            self._enc.close_call(calls.open, status)
            calls.open = None
        while calls.queue:
            call = calls.queue.popleft()
            if call.name or call.pieces:
                self._enc.open_call(call)
                self._enc.close_call(call, status)
        self._state = State.IDLE

    def _close_open(self, status: str) -> None:
        if self._state is State.TEXT or self._state is State.REFUSAL:
            self._enc.close_message(status)
            self._state = State.IDLE
        elif self._state is State.CALLS:
            self._close_calls(status)
        elif self._state is State.REASONING:
            self._close_reasoning(status)

    # ---- terminal events -------------------------------------------------------------

    def _terminal(self) -> None:
        self._enc.terminal(self._finish, self._usage)
        self._end()

    def _fail(self, message: str, code: str = "server_error") -> None:
        if self._state is not State.FINISHING:
            self._close_open(INCOMPLETE)
        self._enc.failed(message, code)
        self._end()

    def _end(self) -> None:
        self._state = State.DONE
