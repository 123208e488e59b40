"""A custom tool's ``input``, read out of the chat call's streamed arguments.

Upstream, a custom tool is a function with one string parameter (``translate.tools``),
so the model streams arguments such as ``{"input": "*** Begin Patch\\n..."}``, cut
anywhere, escapes included. ``CustomInput.feed`` takes the arguments' text as it
comes and returns the part of the ``input`` string decoded so far that was not
returned before: what goes out as ``response.custom_tool_call_input.delta``. An
escape cut in two (``\\`` at the end, half a ``\\u`` sequence, the high half of a
surrogate pair) waits for the rest.

Arguments of another shape (the raw text itself, a JSON string, an object whose
``input`` is not first) are not streamed: ``finish`` reads them whole. Either way
``finish`` returns what is still owed, so the deltas joined are the ``input`` the
``.done`` event and the item carry (``input``), whatever the model sent.
"""

from __future__ import annotations

import json
import re

import orjson

__all__ = ["CustomInput", "whole_input"]

_OPENING = '{"input":"'  # the arguments' start, once whitespace is taken out
_SPACE = re.compile(r"\s+")
_START = re.compile(r'\s*\{\s*"input"\s*:\s*"')
_BODY = re.compile(r'(?:[^"\\]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*')
_HIGH_SURROGATE = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}\Z")
_CONTROL = re.compile(r"[\x00-\x1f]")

_OPENING_STATE, _STRING, _CLOSED, _OTHER = range(4)


def _escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def whole_input(arguments: str) -> str:
    """The ``input`` of a call's whole arguments: the object's ``input`` string, a
    JSON string, or else the text itself (a model that sent the input raw)."""
    try:
        value = json.loads(arguments, strict=False)  # (raw newlines in strings: allowed)
    except ValueError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get("input"), str):
        return value["input"]
    if isinstance(value, str):
        return value
    return arguments


class CustomInput:
    __slots__ = ("text", "state", "pos", "sent")

    def __init__(self) -> None:
        self.text = ""  # the arguments so far
        self.state = _OPENING_STATE
        self.pos = 0  # in STRING: where the input's undecoded text starts
        self.sent: list[str] = []  # what feed / finish returned

    def feed(self, piece: str) -> str:
        """More of the arguments' text; the input text newly decoded (may be "")."""
        self.text += piece
        if self.state == _OPENING_STATE:
            match = _START.match(self.text)
            if match is None:
                squeezed = _SPACE.sub("", self.text)
                if not _OPENING.startswith(squeezed):
                    self.state = _OTHER  # not {"input": "...": read whole at the end
                return ""
            self.state = _STRING
            self.pos = match.end()
        if self.state != _STRING:
            return ""
        return self._decode()

    def _decode(self) -> str:
        text = self.text
        body = _BODY.match(text, self.pos)
        assert body is not None  # (the pattern matches the empty string)
        end = body.end()
        if end == len(text) and _HIGH_SURROGATE.search(text, self.pos, end):
            end -= 6  # the low half may follow in the next piece
        chunk = text[self.pos : end]
        if not chunk:
            if end < len(text) and text[end] == '"':
                self.state = _CLOSED
            return ""
        try:
            decoded = orjson.loads('"' + _CONTROL.sub(_escaped, chunk) + '"')
        except orjson.JSONDecodeError:  # a lone surrogate: not streamable, read at the end
            self.state = _OTHER
            return ""
        self.pos = end
        if end < len(text) and text[end] == '"':
            self.state = _CLOSED
        self.sent.append(decoded)
        return decoded

    @property
    def input(self) -> str:
        """The whole input (once ``finish`` was called)."""
        return "".join(self.sent)

    def finish(self) -> str:
        """The arguments are complete (or cut off): what of the input is still owed."""
        if self.state in (_STRING, _CLOSED):
            return ""  # a string cut off ends where its text ended
        sent = self.input
        whole = whole_input(self.text)
        if not whole.startswith(sent):  # (a lone surrogate mid-string) keep what went out
            whole = sent + whole[len(sent) :]
        rest = whole[len(sent) :]
        if rest:
            self.sent.append(rest)
        return rest
