"""Responses SSE framing: constant byte pieces built once at import.

Every frame is ``event: <type>\\ndata: <one-line JSON>\\n\\n`` and every JSON
object starts with ``{"type":"<type>","sequence_number":`` — so a frame is the
event's prefix, the sequence number's digits, the rest of the object, and an
end. orjson never writes a raw newline, so a payload always fits on one line.
"""

from __future__ import annotations


def prefix(event_type: str) -> bytes:
    """``event: T\\ndata: {"type":"T","sequence_number":`` for an event type T."""
    name = event_type.encode()
    return b"event: " + name + b'\ndata: {"type":"' + name + b'","sequence_number":'


CREATED = prefix("response.created")
IN_PROGRESS = prefix("response.in_progress")
ITEM_ADDED = prefix("response.output_item.added")
ITEM_DONE = prefix("response.output_item.done")
PART_ADDED = prefix("response.content_part.added")
PART_DONE = prefix("response.content_part.done")
TEXT_DELTA = prefix("response.output_text.delta")
TEXT_DONE = prefix("response.output_text.done")
REFUSAL_DELTA = prefix("response.refusal.delta")
REFUSAL_DONE = prefix("response.refusal.done")
REASONING_DELTA = prefix("response.reasoning_text.delta")
REASONING_DONE = prefix("response.reasoning_text.done")
SUMMARY_PART_ADDED = prefix("response.reasoning_summary_part.added")
SUMMARY_PART_DONE = prefix("response.reasoning_summary_part.done")
SUMMARY_DELTA = prefix("response.reasoning_summary_text.delta")
SUMMARY_DONE = prefix("response.reasoning_summary_text.done")
ARGS_DELTA = prefix("response.function_call_arguments.delta")
ARGS_DONE = prefix("response.function_call_arguments.done")
CUSTOM_DELTA = prefix("response.custom_tool_call_input.delta")
CUSTOM_DONE = prefix("response.custom_tool_call_input.done")
TERMINAL = {
    "completed": prefix("response.completed"),
    "incomplete": prefix("response.incomplete"),
    "failed": prefix("response.failed"),
}

# sequence_number digits, precomputed for the first events of a stream (formatting
# an int costs more than the rest of a text delta's framing).
CACHED_SEQUENCE = 8192
SEQUENCE = tuple(b"%d" % i for i in range(CACHED_SEQUENCE))

COMMA = b","  # joins the sequence number to the rest of a dict payload
FRAME_END = b"\n\n"  # after an orjson dict payload (which ends with its own "}")
OBJECT_END = b"}\n\n"  # after a hand-built payload's last value
TEXT_DELTA_END = b',"logprobs":[]}\n\n'  # output_text.delta's last field


def payloads(frames: bytes) -> list[bytes]:
    """The JSON of each whole frame in ``frames`` (what follows ``data: ``), in order;
    comments (``: keepalive``) are skipped. A payload is one line, so each frame ends at
    the first blank line after it."""
    out = []
    for frame in frames.split(b"\n\n"):
        start = frame.find(b"\ndata: ")
        if start >= 0:
            out.append(frame[start + 7 :])
    return out


def text_delta_mid(item_id: bytes, output_index: int, content_index: int) -> bytes:
    """The fixed middle of an output_text / refusal / reasoning_text delta: between seq
    and the delta value.

    ``item_id`` is the id already encoded as a JSON string.
    """
    return b',"item_id":%b,"output_index":%d,"content_index":%d,"delta":' % (
        item_id,
        output_index,
        content_index,
    )


def arguments_delta_mid(item_id: bytes, output_index: int) -> bytes:
    """The fixed middle of a function_call_arguments.delta, or of a
    custom_tool_call_input.delta (no content_index)."""
    return b',"item_id":%b,"output_index":%d,"delta":' % (item_id, output_index)


def summary_delta_mid(item_id: bytes, output_index: int, summary_index: int) -> bytes:
    """The fixed middle of a reasoning_summary_text.delta."""
    return b',"item_id":%b,"output_index":%d,"summary_index":%d,"delta":' % (
        item_id,
        output_index,
        summary_index,
    )
