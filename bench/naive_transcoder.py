"""The straightforward transcoder, kept as the micro-benchmark's baseline.

Same interface and same event sequence as ``gateway.core.stream.transcoder.Transcoder``, but
written the obvious way: every upstream chunk is decoded with ``orjson.loads``
into dicts and ``str``; every event is a dict (type and sequence_number
included) serialised with ``orjson.dumps`` and framed by concatenation.
``tests/unit/test_transcoder.py`` checks that both produce the same events;
``bench/micro_transcoder.py`` compares their speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from msgspec import convert

from gateway.core.ids import IDS, Ids
from gateway.core.stream.sse import SseParser
from gateway.core.wire import output
from gateway.core.wire.chunks import Usage


class _Call:
    def __init__(self, key: int) -> None:
        self.key = key
        self.call_id = ""
        self.name = ""
        self.item_id = ""
        self.output_index = -1
        self.arguments = ""
        self.checked = -1

    def ready(self) -> bool:
        return bool(self.name) and (bool(self.call_id) or bool(self.arguments))

    def arguments_parse(self) -> bool:
        if len(self.arguments) == self.checked:
            return False
        self.checked = len(self.arguments)
        try:
            orjson.loads(self.arguments)
        except orjson.JSONDecodeError:
            return False
        return True


class NaiveTranscoder:
    def __init__(
        self,
        base: dict,
        *,
        now: Callable[[], float] = time.time,
        ids: Ids = IDS,
    ) -> None:
        self.base = base
        self.now = now
        self.ids = ids
        self.parser = SseParser()
        self.state = "new"  # new idle text refusal calls reasoning finishing done
        self.status: str | None = None
        self.seq = 0
        self.out: list[bytes] = []
        self.output: list[dict] = []
        self.next_index = 0
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.msg_id = ""
        self.msg_index = -1
        self.parts: list[dict] = []
        self.text = ""
        self.calls: dict[int, _Call] = {}
        self.queue: list[_Call] = []
        self.open: _Call | None = None

    @property
    def done(self) -> bool:
        return self.state == "done"

    # ---- interface -----------------------------------------------------------------

    def begin(self) -> bool:
        if self.state == "new":
            self.emit({"type": "response.created", "response": self.base})
            self.emit({"type": "response.in_progress", "response": self.base})
            self.state = "idle"
        return self.state != "done"

    def drain(self) -> bytes:
        out, self.out = self.out, []
        return b"".join(out)

    def start(self) -> bytes:
        self.begin()
        return self.drain()

    def feed(self, data: bytes) -> bytes:
        if not self.begin():
            return b""
        for payload in self.parser.feed(data):
            self.on_payload(payload)
            if self.state == "done":
                break
        return self.drain()

    def finish(self) -> bytes:
        if not self.begin():
            return b""
        tail = self.parser.flush()
        if self.state == "finishing":
            self.terminal()
        elif tail is not None:
            self.failed("upstream ended the stream in the middle of an event")
        else:
            self.failed("upstream ended the stream before finishing")
        return self.drain()

    def fail(self, message: str, code: str = "server_error") -> bytes:
        if not self.begin():
            return b""
        self.failed(message, code)
        return self.drain()

    def complete(self, completion: bytes) -> bytes:
        if not self.begin():
            return b""
        body = self.loads(completion, "completion")
        if body is None:
            return self.drain()
        if self.error_in(body):
            return self.drain()
        self.usage = body.get("usage")
        choice = next((c for c in body.get("choices") or [] if c.get("index", 0) == 0), None)
        if choice is None:
            self.failed("upstream returned no choices")
            return self.drain()
        message = choice.get("message") or {}
        for position, call in enumerate(message.get("tool_calls") or []):
            call.setdefault("index", position)
        self.on_delta(message)
        self.on_finish(choice.get("finish_reason"))
        self.terminal()
        return self.drain()

    # ---- upstream ------------------------------------------------------------------

    def emit(self, event: dict) -> None:
        event = {"type": event["type"], "sequence_number": self.seq, **event}
        self.seq += 1
        name = event["type"].encode()
        self.out.append(b"event: " + name + b"\ndata: " + orjson.dumps(event) + b"\n\n")

    def loads(self, payload: bytes, what: str) -> Any:
        try:
            try:
                doc = orjson.loads(payload)
            except orjson.JSONDecodeError:
                doc = orjson.loads(payload.decode("utf-8", "replace"))
        except orjson.JSONDecodeError as exc:
            self.failed(f"upstream sent a malformed {what}: {exc}")
            return None
        if not isinstance(doc, dict):
            self.failed(f"upstream sent a malformed {what}: not an object")
            return None
        return doc

    def error_in(self, doc: dict) -> bool:
        error = doc.get("error")
        if error is None and doc.get("message") is None:
            return False
        message = doc.get("message")
        if not message:
            message = error.get("message") if isinstance(error, dict) else error
        if not isinstance(message, str) or not message:
            message = "unknown error"
        self.failed("upstream error: " + message)
        return True

    def on_payload(self, payload: bytes) -> None:
        if payload == b"[DONE]":
            if self.state == "finishing":
                self.terminal()
            else:
                self.failed("upstream ended the stream before finishing")
            return
        if not payload.strip():
            return
        chunk = self.loads(payload, "chunk")
        if chunk is None or self.error_in(chunk):
            return
        if chunk.get("usage") is not None:
            self.usage = chunk["usage"]
        choice = next((c for c in chunk.get("choices") or [] if c.get("index", 0) == 0), None)
        if choice is None or self.state == "finishing":
            return
        if choice.get("delta") is not None:
            self.on_delta(choice["delta"])
        if choice.get("finish_reason") is not None:
            self.on_finish(choice["finish_reason"])

    def on_delta(self, delta: dict) -> None:
        reasoning = delta.get("reasoning_content")
        if not (isinstance(reasoning, str) and reasoning):
            reasoning = delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self.on_reasoning(reasoning)
        if isinstance(delta.get("content"), str) and delta["content"]:
            self.on_text(delta["content"], "text")
        if isinstance(delta.get("refusal"), str) and delta["refusal"]:
            self.on_text(delta["refusal"], "refusal")
        for call in delta.get("tool_calls") or []:
            self.on_tool_call(call)

    def on_text(self, text: str, kind: str) -> None:
        if self.state != kind:
            self.open_part(kind)
        self.text += text
        event_type = "response.output_text.delta" if kind == "text" else "response.refusal.delta"
        event = {
            "type": event_type,
            "item_id": self.msg_id,
            "output_index": self.msg_index,
            "content_index": len(self.parts),
            "delta": text,
        }
        if kind == "text":
            event["logprobs"] = []
        self.emit(event)

    def on_reasoning(self, text: str) -> None:
        if self.state != "reasoning":
            self.close_open("completed")
            self.msg_id = self.ids.new("rs_")
            self.msg_index = self.next_index
            self.next_index += 1
            item = output.reasoning_item(self.msg_id, "in_progress", [], [])
            self.emit(
                {"type": "response.output_item.added", "output_index": self.msg_index, "item": item}
            )
            self.text = ""
            self.state = "reasoning"
        self.text += text
        self.emit(
            {
                "type": "response.reasoning_text.delta",
                "item_id": self.msg_id,
                "output_index": self.msg_index,
                "content_index": 0,
                "delta": text,
            }
        )

    def close_reasoning(self, status: str) -> None:
        self.emit(
            {
                "type": "response.reasoning_text.done",
                "item_id": self.msg_id,
                "output_index": self.msg_index,
                "content_index": 0,
                "text": self.text,
            }
        )
        content = [output.reasoning_text_part(self.text)]
        item = output.reasoning_item(self.msg_id, status, content, [])
        self.emit(
            {"type": "response.output_item.done", "output_index": self.msg_index, "item": item}
        )
        self.output.append(item)
        self.state = "idle"

    def on_tool_call(self, delta: dict) -> None:
        call = self.call_for(delta)
        if delta.get("id") and not call.call_id:
            call.call_id = delta["id"]
        function = delta.get("function") or {}
        if function.get("name") and not call.item_id:
            call.name = function["name"]
        piece = function.get("arguments")
        if isinstance(piece, (dict, list)):
            piece = orjson.dumps(piece).decode()
        if self.state != "calls":
            if self.state == "reasoning":
                self.close_reasoning("completed")
            elif self.state != "idle":
                self.close_message("completed")
            self.state = "calls"
        if call is self.open:
            if isinstance(piece, str) and piece:
                call.arguments += piece
                self.emit_arguments(call, piece)
                if self.queue and ("}" in piece or "]" in piece):
                    self.advance()
        elif not call.item_id:
            if isinstance(piece, str):
                call.arguments += piece
            self.advance()

    def call_for(self, delta: dict) -> _Call:
        key = delta.get("index", -1)
        if key < 0:
            ids = [c.key for c in self.calls.values() if c.call_id == delta.get("id")]
            key = ids[0] if ids else -1
            if key < 0:
                key = len(self.calls) if delta.get("id") or not self.calls else max(self.calls)
        if key not in self.calls:
            self.calls[key] = _Call(key)
            self.queue.append(self.calls[key])
        return self.calls[key]

    def on_finish(self, reason: str | None) -> None:
        self.finish_reason = reason
        status, _ = output.finish_status(reason)
        self.close_open("completed" if status == "completed" else "incomplete")
        self.state = "finishing"

    # ---- items ---------------------------------------------------------------------

    def open_part(self, kind: str) -> None:
        if self.state == "calls":
            self.close_calls("completed")
        elif self.state == "reasoning":
            self.close_reasoning("completed")
        if self.state == "idle":
            self.msg_id = self.ids.new("msg_")
            self.msg_index = self.next_index
            self.next_index += 1
            self.parts = []
            item = output.message_item(self.msg_id, "in_progress", [])
            self.emit(
                {"type": "response.output_item.added", "output_index": self.msg_index, "item": item}
            )
        else:
            self.close_part()
        part = output.output_text_part("") if kind == "text" else output.refusal_part("")
        self.emit({"type": "response.content_part.added", **self.where(), "part": part})
        self.text = ""
        self.state = kind

    def where(self) -> dict:
        return {
            "item_id": self.msg_id,
            "output_index": self.msg_index,
            "content_index": len(self.parts),
        }

    def close_part(self) -> None:
        if self.state == "text":
            self.emit(
                {
                    "type": "response.output_text.done",
                    **self.where(),
                    "text": self.text,
                    "logprobs": [],
                }
            )
            part = output.output_text_part(self.text)
        else:
            self.emit({"type": "response.refusal.done", **self.where(), "refusal": self.text})
            part = output.refusal_part(self.text)
        self.emit({"type": "response.content_part.done", **self.where(), "part": part})
        self.parts.append(part)

    def close_message(self, status: str) -> None:
        self.close_part()
        item = output.message_item(self.msg_id, status, self.parts)
        self.emit(
            {"type": "response.output_item.done", "output_index": self.msg_index, "item": item}
        )
        self.output.append(item)
        self.state = "idle"

    def advance(self) -> None:
        while self.queue and self.queue[0].ready():
            if self.open is not None:
                if not self.open.arguments_parse():
                    return
                self.close_call(self.open, "completed")
            self.open_call(self.queue.pop(0))

    def open_call(self, call: _Call) -> None:
        call.call_id = call.call_id or self.ids.call()
        call.item_id = self.ids.new("fc_")
        call.output_index = self.next_index
        self.next_index += 1
        item = output.function_call_item(call.item_id, call.call_id, call.name, "", "in_progress")
        self.emit(
            {"type": "response.output_item.added", "output_index": call.output_index, "item": item}
        )
        self.open = call
        if call.arguments:
            self.emit_arguments(call, call.arguments)

    def emit_arguments(self, call: _Call, delta: str) -> None:
        self.emit(
            {
                "type": "response.function_call_arguments.delta",
                "item_id": call.item_id,
                "output_index": call.output_index,
                "delta": delta,
            }
        )

    def close_call(self, call: _Call, status: str) -> None:
        self.emit(
            {
                "type": "response.function_call_arguments.done",
                "item_id": call.item_id,
                "output_index": call.output_index,
                "name": call.name,
                "arguments": call.arguments,
            }
        )
        item = output.function_call_item(
            call.item_id, call.call_id, call.name, call.arguments, status
        )
        self.emit(
            {"type": "response.output_item.done", "output_index": call.output_index, "item": item}
        )
        self.output.append(item)
        self.open = None

    def close_calls(self, status: str) -> None:
        if self.open is not None:
            self.close_call(self.open, status)
        while self.queue:
            call = self.queue.pop(0)
            if call.name or call.arguments:
                self.open_call(call)
                self.close_call(call, status)
        self.state = "idle"

    def close_open(self, status: str) -> None:
        if self.state in ("text", "refusal"):
            self.close_message(status)
        elif self.state == "calls":
            self.close_calls(status)
        elif self.state == "reasoning":
            self.close_reasoning(status)

    # ---- terminal ------------------------------------------------------------------

    def terminal(self) -> None:
        status, reason = output.finish_status(self.finish_reason)
        final = output.response_final(
            self.base,
            status,
            self.output,
            output.usage_from_chat(None if self.usage is None else convert(self.usage, Usage)),
            incomplete_reason=reason,
            completed_at=int(self.now()) if status == "completed" else None,
        )
        self.end(status, final)

    def failed(self, message: str, code: str = "server_error") -> None:
        if self.state != "finishing":
            self.close_open("incomplete")
        error = {"code": code, "message": message}
        self.end(
            "failed", output.response_final(self.base, "failed", self.output, None, error=error)
        )

    def end(self, status: str, final: dict) -> None:
        self.emit({"type": "response." + status, "response": final})
        self.state = "done"
        self.status = status
