"""Reasoning on the request side: ``reasoning``, ``include`` and returned reasoning items.

- ``effort_fields``: ``reasoning.effort`` → what goes in the chat body, as the
  deployment says (``Capabilities``: the field, a map for values the server does
  not know, the fields that stand for ``none``); a deployment whose model does not
  reason refuses an effort other than ``none``.
- ``wants_encrypted``: the ``include`` values this gateway serves (only
  ``reasoning.encrypted_content``; the rest stay refused, naming ``include``).
- ``ReturnedReasoning``: reasoning items the client sends back → the text on the
  assistant message they preceded (``Capabilities.replay_field``), opened from
  ``encrypted_content`` with the gateway's sealer, or taken from ``content`` when
  there is no blob; a blob that does not open is a 400 naming it, and nothing
  goes upstream. (Not ``core.idempotency.Replay``, an answer served again.)
"""

from __future__ import annotations

from typing import Any

from gateway.core.capabilities import Capabilities
from gateway.core.sealing import Sealer, opened
from gateway.core.wire.responses import InputItem, ReasoningConfig
from gateway.errors import Unsupported

ENCRYPTED = "reasoning.encrypted_content"
RESEND = "Send the reasoning item as it was returned, or leave it out."
NO_SUMMARY = (None, "none")


def effort_fields(reasoning: ReasoningConfig | None, caps: Capabilities) -> dict[str, Any]:
    """The chat body's fields for ``reasoning.effort`` (empty: nothing to send)."""
    effort = reasoning.effort if reasoning is not None else None
    if effort is None:
        return {}
    if not caps.reasoning:
        if effort != "none":
            raise Unsupported(
                f"This model does not reason: reasoning.effort '{effort}' cannot be served "
                "(leave it out, or send 'none').",
                param="reasoning.effort",
            )
        return dict(caps.effort_none)
    value = caps.effort_map.get(effort, effort)
    if value == "none" and caps.effort_none:
        return dict(caps.effort_none)
    return {caps.effort_field: value} if caps.effort_field else {}


def summary_asked(reasoning: ReasoningConfig | None) -> bool:
    if reasoning is None:
        return False
    summary = reasoning.summary if reasoning.summary is not None else reasoning.generate_summary
    return summary not in NO_SUMMARY


def echo(reasoning: ReasoningConfig | None) -> dict[str, Any]:
    """The response's ``reasoning``: what the request asked for."""
    if reasoning is None:
        return {"effort": None, "summary": None}
    summary = reasoning.summary if reasoning.summary is not None else reasoning.generate_summary
    return {"effort": reasoning.effort, "summary": summary}


def wants_encrypted(include: list[str] | None) -> bool:
    """Does ``include`` ask for sealed reasoning? Values not served are a 400."""
    if not include:
        return False
    for k, value in enumerate(include):
        if value != ENCRYPTED:
            raise Unsupported(
                f"include value '{value}' is not supported by this gateway; only '{ENCRYPTED}' is.",
                param="include" if len(include) == 1 else f"include[{k}]",
            )
    return True


class ReturnedReasoning:
    """Reasoning items the client sends back (earlier turns' output), on their way to
    the assistant message each preceded.

    ``take`` a reasoning item (at ``input[i]``); after each other item has become
    messages, ``settle``: the pending text goes on the last message if that is an
    assistant's (a message, or the calls of function_call items), else is dropped
    (reasoning before a user turn has no message to go on).
    """

    __slots__ = ("field", "sealer", "pending")

    def __init__(self, caps: Capabilities, sealer: Sealer | None) -> None:
        self.field = caps.replay_field
        self.sealer = sealer
        self.pending: list[str] = []

    def take(self, item: InputItem, i: int) -> None:
        text = self._text(item, i)
        if text:
            self.pending.append(text)

    def settle(self, messages: list[dict]) -> None:
        if not self.pending:
            return
        text = "\n".join(self.pending)
        self.pending = []
        if not self.field or not messages or messages[-1].get("role") != "assistant":
            return
        last = messages[-1]
        before = last.get(self.field)
        last[self.field] = f"{before}\n{text}" if before else text

    def _text(self, item: InputItem, i: int) -> str:
        blob = item.encrypted_content
        if blob is not None:
            return opened(self.sealer, blob, i, RESEND)
        parts = item.content
        if isinstance(parts, str):
            return parts
        return "".join(p.text or "" for p in parts or () if p.type == "reasoning_text")
