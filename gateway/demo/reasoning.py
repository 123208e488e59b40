"""The demo upstream's reasoning mode: a fake "thinking" text before each answer.

With ``--reasoning`` (field ``reasoning_content``, as vLLM, SGLang and llama.cpp
send it) or ``--reasoning reasoning`` (newer vLLM's name), every answer first
streams its reasoning in that field, then its text or tool call; a
non-streamed answer carries it on the message. A request that turns thinking
off (``reasoning_effort: "none"``, or ``chat_template_kwargs.enable_thinking:
false`` as Qwen3's template takes it) gets none. Reasoning pieces count as
completion tokens and as ``completion_tokens_details.reasoning_tokens``.
"""

from __future__ import annotations

from typing import Any

FIELDS = ("reasoning_content", "reasoning")


def thinking_off(body: dict[str, Any]) -> bool:
    if body.get("reasoning_effort") == "none":
        return True
    kwargs = body.get("chat_template_kwargs")
    return isinstance(kwargs, dict) and kwargs.get("enable_thinking") is False


def thought(messages: list[dict[str, Any]], said: str) -> str:
    """The demo's reasoning for an answer to ``said`` (the last user or tool text)."""
    last = messages[-1].get("role") if messages else None
    source = "the tool's result" if last == "tool" else "the user's message"
    return f"Reading {source}: '{said[:80]}'. The demo answers it with a fixed rule."


def usage_with(usage: dict[str, Any], pieces: int) -> dict[str, Any]:
    """``usage`` with ``pieces`` reasoning tokens added."""
    if not pieces:
        return usage
    completion = usage["completion_tokens"] + pieces
    return {
        **usage,
        "completion_tokens": completion,
        "total_tokens": usage["prompt_tokens"] + completion,
        "completion_tokens_details": {"reasoning_tokens": pieces},
    }
