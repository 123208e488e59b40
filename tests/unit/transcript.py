"""Helpers for the transcoder tests: deterministic runs and the stream invariants."""

from __future__ import annotations

import itertools
import pathlib
from collections.abc import Iterable
from typing import Any

import orjson

from gateway.core.ids import Ids
from gateway.core.stream.transcoder import Transcoder
from gateway.core.wire import output

STREAMS = pathlib.Path(__file__).parent.parent / "data" / "streams"
RESPONSE_ID = "resp_x"
NOW = 1700000001.75

# The echoed request fields of spec §2.1.
ECHO: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "prompt_cache_key": None,
    "reasoning": {"effort": None, "summary": None},
    "safety_identifier": None,
    "service_tier": "default",
    "store": False,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_logprobs": 0,
    "top_p": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "truncation": "disabled",
    "user": None,
    "metadata": {},
}

TERMINAL = ("response.completed", "response.incomplete", "response.failed")
SHORT = {
    "created": "response.created",
    "in_progress": "response.in_progress",
    "item+": "response.output_item.added",
    "item.": "response.output_item.done",
    "part+": "response.content_part.added",
    "part.": "response.content_part.done",
    "text": "response.output_text.delta",
    "text.": "response.output_text.done",
    "refusal": "response.refusal.delta",
    "refusal.": "response.refusal.done",
    "reason": "response.reasoning_text.delta",
    "reason.": "response.reasoning_text.done",
    "sum+": "response.reasoning_summary_part.added",
    "sum": "response.reasoning_summary_text.delta",
    "sum.": "response.reasoning_summary_text.done",
    "sump.": "response.reasoning_summary_part.done",
    "args": "response.function_call_arguments.delta",
    "args.": "response.function_call_arguments.done",
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
}


def expand(spec: str) -> list[str]:
    """``"created in_progress text*3 completed"`` → the full event type list."""
    types: list[str] = []
    for word in spec.split():
        name, _, count = word.partition("*")
        types += [SHORT[name]] * int(count or 1)
    return types


def base() -> dict:
    return output.response_base(RESPONSE_ID, 1700000000, "demo", ECHO)


class CountingIds(Ids):
    """Ids numbered in the order they are made: ``msg_0000``, ``fc_0001``, ``call_gen0000``."""

    def __init__(self) -> None:
        self.items = itertools.count()
        self.calls = itertools.count()

    def new(self, prefix: str) -> str:
        return f"{prefix}{next(self.items):04d}"

    def call(self) -> str:
        return f"call_gen{next(self.calls):04d}"


def make(impl: Any = Transcoder) -> Any:
    return impl(base(), now=lambda: NOW, ids=CountingIds())


def run(pieces: Iterable[bytes], impl: Any = Transcoder) -> bytes:
    """start(), feed every piece, finish(): everything written to the client."""
    tx = make(impl)
    out = [tx.start()]
    out += [tx.feed(piece) for piece in pieces]
    out.append(tx.finish())
    assert tx.done
    return b"".join(out)


def golden(name: str) -> bytes:
    return (STREAMS / f"{name}.sse").read_bytes()


def frames(out: bytes) -> list[dict]:
    """Parse our SSE output strictly: ``event:`` line, one-line ``data:`` JSON, blank line."""
    assert out.endswith(b"\n\n")
    events = []
    for frame in out[:-2].split(b"\n\n"):
        event_line, data_line = frame.split(b"\n")
        assert event_line.startswith(b"event: ") and data_line.startswith(b"data: ")
        event = orjson.loads(data_line[6:])
        assert event["type"] == event_line[7:].decode()
        events.append(event)
    return events


def check(out: bytes) -> list[dict]:
    """Every invariant a client relies on; returns the parsed events."""
    events = frames(out)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert sum(t in TERMINAL for t in types) == 1 and types[-1] in TERMINAL
    lifecycle = [events[0], events[1], events[-1]]
    assert {e["response"]["id"] for e in lifecycle} == {RESPONSE_ID}
    _check_items(events)
    return events


def _check_items(events: list[dict]) -> None:
    added: dict[int, dict] = {}
    finished: list[dict] = []
    parts: dict[tuple[int, int], dict] = {}  # (output_index, content_index) -> state
    for event in events[2:-1]:
        kind = event["type"]
        if kind == "response.output_item.added":
            assert event["output_index"] == len(added)  # dense, in added order
            assert not any(a.get("open") for a in added.values())  # strictly sequential
            slot = {"item": event["item"], "open": True, "args": "", "reasoning": None}
            added[event["output_index"]] = slot
            if event["item"]["type"] == "function_call":
                assert event["item"]["arguments"] == ""
            if event["item"]["type"] == "custom_tool_call":
                assert event["item"]["input"] == ""
            if event["item"]["type"] == "reasoning":
                assert event["item"]["content"] == event["item"]["summary"] == []
                assert "encrypted_content" not in event["item"]
            continue
        slot = added[event["output_index"]]
        assert slot["open"]
        if "item_id" in event:
            assert event["item_id"] == slot["item"]["id"]
        if kind == "response.output_item.done":
            assert (event["item"]["id"], event["item"]["type"]) == (
                slot["item"]["id"],
                slot["item"]["type"],
            )
            if event["item"]["type"] == "function_call":
                assert event["item"]["call_id"] == slot["item"]["call_id"]
                assert event["item"]["arguments"] == slot["args"]
            if event["item"]["type"] == "reasoning":
                _check_reasoning_done(slot, event["item"])
            if event["item"]["type"] == "custom_tool_call":
                assert event["item"]["call_id"] == slot["item"]["call_id"]
                assert event["item"]["input"] == slot["args"]
            slot["open"] = False
            finished.append(event["item"])
        elif kind.startswith(("response.reasoning_text.", "response.reasoning_summary_")):
            _check_reasoning_event(slot, event)
        elif kind.startswith("response.custom_tool_call_input"):
            assert slot["item"]["type"] == "custom_tool_call"
            if kind.endswith(".delta"):
                assert event["delta"]
                slot["args"] += event["delta"]
            else:
                assert event["input"] == slot["args"]
        elif kind.startswith("response.function_call_arguments"):
            if kind.endswith(".delta"):
                slot["args"] += event["delta"]
            else:
                assert event["arguments"] == slot["args"]
                assert event["name"] == slot["item"]["name"]
        else:
            _check_part_event(parts, event)
    assert not any(a["open"] for a in added.values())  # every added item was done
    assert all(p["closed"] for p in parts.values())
    assert events[-1]["response"]["output"] == finished


def _check_reasoning_event(slot: dict, event: dict) -> None:
    """A reasoning item's events: one part (content_index / summary_index 0), deltas that
    are not empty, a ``.done`` with their text; a summary part opens before its deltas."""
    assert slot["item"]["type"] == "reasoning"
    kind = event["type"]
    assert event.get("content_index", event.get("summary_index")) == 0
    if kind == "response.reasoning_summary_part.added":
        assert slot["reasoning"] is None and event["part"] == {"type": "summary_text", "text": ""}
        slot["reasoning"], slot["summary"] = "", True
        return
    if slot["reasoning"] is None:
        assert kind == "response.reasoning_text.delta"
        slot["reasoning"], slot["summary"] = "", False
    assert kind.startswith("response.reasoning_summary_") == slot["summary"]
    if kind.endswith(".delta"):
        assert event["delta"]
        slot["reasoning"] += event["delta"]
    elif kind == "response.reasoning_summary_part.done":
        assert event["part"] == {"type": "summary_text", "text": slot["reasoning"]}
        slot["part_done"] = True
    else:
        assert event["text"] == slot["reasoning"]
        slot["text_done"] = True


def _check_reasoning_done(slot: dict, item: dict) -> None:
    text = slot["reasoning"]
    assert text and slot["text_done"] and slot.get("part_done", True) is True
    assert item["content"] == [{"type": "reasoning_text", "text": text}]
    summary = [{"type": "summary_text", "text": text}] if slot["summary"] else []
    assert item["summary"] == summary
    assert slot.get("part_done", False) == slot["summary"]


def _check_part_event(parts: dict[tuple[int, int], dict], event: dict) -> None:
    key = (event["output_index"], event["content_index"])
    kind = event["type"]
    if kind == "response.content_part.added":
        assert key not in parts
        assert key[1] == sum(k[0] == key[0] for k in parts)  # content_index dense
        parts[key] = {"text": "", "closed": False, "type": event["part"]["type"]}
        return
    part = parts[key]  # content_part.added came first
    assert not part["closed"]
    if kind in ("response.output_text.delta", "response.refusal.delta"):
        assert event["delta"]
        part["text"] += event["delta"]
    elif kind == "response.output_text.done":
        assert event["text"] == part["text"]
    elif kind == "response.refusal.done":
        assert event["refusal"] == part["text"]
    elif kind == "response.content_part.done":
        assert event["part"][event["part"]["type"].replace("output_", "")] == part["text"]
        part["closed"] = True


def summary(events: list[dict]) -> tuple[Any, ...]:
    """(status, reason, output summary, usage) of the terminal response."""
    response = events[-1]["response"]
    items = []
    for item in response["output"]:
        if item["type"] == "message":
            texts = [p.get("text", p.get("refusal")) for p in item["content"]]
            items.append(("message", item["status"], *texts))
        elif item["type"] == "reasoning":
            items.append(("reasoning", item["status"], item["content"][0]["text"]))
        else:
            items.append((item["name"], item["status"], item["call_id"], _json(item["arguments"])))
    reason = (response["incomplete_details"] or {}).get("reason")
    usage = response["usage"] and (
        response["usage"]["input_tokens"],
        response["usage"]["output_tokens"],
    )
    return response["status"], reason, items, usage


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
