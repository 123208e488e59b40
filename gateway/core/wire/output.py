"""Builders for the Responses output side: the response object, items, parts, usage.

Output is built as plain dicts (orjson serialises dicts natively, not Structs).
Any value may be an ``orjson.Fragment`` holding JSON that is already encoded
(upstream text copied without decoding, echoed JSON schemas). Both the
non-streaming path (``translate.response``) and the stream encoder use
these, so the two always agree on shapes.
"""

from __future__ import annotations

from typing import Any

from gateway.core.wire.chunks import Usage

# chat finish_reason -> (response status, incomplete_details.reason)
_FINISH: dict[str | None, tuple[str, str | None]] = {
    "stop": ("completed", None),
    "tool_calls": ("completed", None),
    "function_call": ("completed", None),
    "length": ("incomplete", "max_output_tokens"),
    "content_filter": ("incomplete", "content_filter"),
}
_COMPLETED: tuple[str, str | None] = ("completed", None)


def finish_status(finish_reason: str | None) -> tuple[str, str | None]:
    """Map a chat ``finish_reason`` to (status, incomplete reason); unknown → completed."""
    return _FINISH.get(finish_reason, _COMPLETED)


def response_base(response_id: str, created_at: int, model: str, echo: dict[str, Any]) -> dict:
    """The in-progress response object: every field the spec lists, with echoed parameters."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": False,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [],
        "usage": None,
        **echo,
    }


def response_final(
    base: dict,
    status: str,
    output: list,
    usage: dict | None,
    *,
    incomplete_reason: str | None = None,
    error: dict | None = None,
    completed_at: int | None = None,
) -> dict:
    """A terminal response object (completed, incomplete or failed) from ``base``."""
    final = dict(base)
    final["status"] = status
    final["output"] = output
    final["usage"] = usage
    if status == "completed":
        final["completed_at"] = completed_at
    if incomplete_reason is not None:
        final["incomplete_details"] = {"reason": incomplete_reason}
    if error is not None:
        final["error"] = error
    return final


def output_text_part(text: Any) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def refusal_part(text: Any) -> dict:
    return {"type": "refusal", "refusal": text}


def message_item(item_id: str, status: str, content: list) -> dict:
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def function_call_item(
    item_id: str, call_id: str, name: Any, arguments: Any, status: str, namespace: str | None = None
) -> dict:
    item = {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }
    if namespace is not None:
        item["namespace"] = namespace
    return item


def custom_tool_call_item(
    item_id: str, call_id: str, name: str, text: str, namespace: str | None
) -> dict:
    """A ``custom_tool_call`` (it has no ``status`` in the Responses types)."""
    item = {"type": "custom_tool_call", "id": item_id, "call_id": call_id, "name": name}
    item["input"] = text
    if namespace is not None:
        item["namespace"] = namespace
    return item


def reasoning_text_part(text: Any) -> dict:
    return {"type": "reasoning_text", "text": text}


def summary_text_part(text: Any) -> dict:
    return {"type": "summary_text", "text": text}


def reasoning_item(
    item_id: str, status: str, content: list, summary: list, encrypted: str | None = None
) -> dict:
    """A reasoning item; ``encrypted_content`` only when the client asked for it."""
    item = {
        "type": "reasoning",
        "id": item_id,
        "status": status,
        "summary": summary,
        "content": content,
    }
    if encrypted is not None:
        item["encrypted_content"] = encrypted
    return item


def compaction_item(item_id: str, encrypted: str) -> dict:
    """A ``compaction`` item: the conversation's summary, sealed (``translate.compaction``)."""
    return {"type": "compaction", "id": item_id, "encrypted_content": encrypted}


def compacted_response(response_id: str, created_at: int, items: list, usage: dict | None) -> dict:
    """The answer of ``POST /v1/responses/compact`` (``object: "response.compaction"``):
    ``items`` are the client's new history. Its ``usage`` is required by the type: zeros
    when the upstream reported none."""
    return {
        "id": response_id,
        "object": "response.compaction",
        "created_at": created_at,
        "output": items,
        "usage": usage if usage is not None else usage_from_chat(Usage()),
    }


def usage_from_chat(usage: Usage | None) -> dict | None:
    """Chat ``usage`` (its view Struct, fields already type-checked) → Responses ``usage``.

    No usage from the upstream gives ``None``, not zeros that look real.
    """
    if usage is None:
        return None
    prompt = usage.prompt_tokens or 0
    completion = usage.completion_tokens or 0
    total = usage.total_tokens
    pdet = usage.prompt_tokens_details
    cdet = usage.completion_tokens_details
    return {
        "input_tokens": prompt,
        # cache_write_tokens: required by the newest SDK types; chat upstreams don't report it.
        "input_tokens_details": {
            "cached_tokens": (pdet.cached_tokens or 0) if pdet is not None else 0,
            "cache_write_tokens": 0,
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": (cdet.reasoning_tokens or 0) if cdet is not None else 0
        },
        "total_tokens": prompt + completion if total is None else total,
    }
