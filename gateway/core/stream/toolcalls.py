"""Bookkeeping for the upstream's tool calls while they stream (no output here).

Chat upstreams stream ``tool_calls`` deltas keyed by ``index``; the Responses
stream wants one function_call item at a time. ``ToolCalls`` holds every call
seen, the one whose item is open, and the calls seen but not opened yet (in
arrival order). The policy that keeps items sequential without losing data:

- a call can open once its ``name`` is known and either its id is known or its
  arguments have started (an id never sent is generated when it opens);
- the open call gives way to the next ready call only when its arguments so far
  parse as a JSON value: more pieces for it could then not make valid JSON, so
  closing it loses nothing. Upstreams that stream calls one after another
  (vLLM, OpenAI) switch as soon as the next call starts; upstreams that
  interleave calls, or send every name first, keep the open call open and the
  later ones buffered until this holds or until finish_reason;
- a delta for a call that was already closed is dropped.
"""

from __future__ import annotations

from collections import deque

import orjson

from gateway.core.stream.custom_input import CustomInput
from gateway.core.translate.tools import ToolRef
from gateway.core.wire.chunks import ToolCallDelta, join_tokens


class ToolCall:
    """One upstream tool call: queued (``item_id`` empty), open, or closed."""

    __slots__ = (
        "key", "call_id", "name", "item_id", "output_index", "pieces", "checked", "ref", "custom",
    )  # fmt: skip

    def __init__(self, key: int) -> None:
        self.key = key
        self.call_id = ""  # "" until known
        self.name = ""  # "" until known
        self.item_id = ""  # set when its item opens
        self.output_index = -1
        self.pieces: list[bytes] = []  # raw JSON string tokens of the arguments
        self.checked = 0  # len(pieces) when the arguments were last tried as JSON
        # When its item opens: what the upstream name stands for (None: a plain function),
        # and for a custom tool's call, its input as it is read out of the arguments.
        self.ref: ToolRef | None = None
        self.custom: CustomInput | None = None

    def ready(self) -> bool:
        return bool(self.name) and (bool(self.call_id) or bool(self.pieces))

    def arguments_parse(self) -> bool:
        """Do the arguments so far form one JSON value? (tried once per new piece)"""
        if len(self.pieces) == self.checked:
            return False
        self.checked = len(self.pieces)
        try:
            orjson.loads(orjson.loads(join_tokens(self.pieces)))
        except orjson.JSONDecodeError:
            return False
        return True


class ToolCalls:
    __slots__ = ("by_key", "queue", "open")

    def __init__(self) -> None:
        self.by_key: dict[int, ToolCall] = {}
        self.queue: deque[ToolCall] = deque()  # seen, not opened yet, in arrival order
        self.open: ToolCall | None = None

    def get(self, delta: ToolCallDelta) -> ToolCall:
        """The call a delta belongs to (a new one is queued)."""
        key = delta.index
        by_key = self.by_key
        if key < 0:  # no index from the upstream: match by id, else the latest call
            key = next((c.key for c in by_key.values() if c.call_id == delta.id), -1)
            if key < 0:
                key = len(by_key) if delta.id or not by_key else max(by_key)
        call = by_key.get(key)
        if call is None:
            call = by_key[key] = ToolCall(key)
            self.queue.append(call)
        return call

    def can_switch(self) -> bool:
        """May the next queued call open now (after closing the open one, if any)?"""
        if not self.queue or not self.queue[0].ready():
            return False
        return self.open is None or self.open.arguments_parse()
