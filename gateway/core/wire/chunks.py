"""Minimal "view" Structs for what upstream chat-completions servers send back.

Only the fields the transcoder reads are declared; everything else in a chunk
(``id``, ``model``, ``logprobs``, ...) is skipped by the decoder. Text fields that
are copied into the output (``content``, ``refusal``, ``reasoning_content`` /
``reasoning``, ``arguments``) are ``msgspec.Raw``: the exact JSON bytes of the upstream value,
escapes included, so they can be spliced into outgoing events without a
decode/encode round trip. An absent field is an empty Raw (length 0) and an
explicit ``null`` is the bytes ``null``; both mean "no text". A Raw default is
used rather than ``Raw | None``, which msgspec does not support.

Shapes (``stream: true``):

    {"choices": [{"index": 0, "delta": {"role"?, "content"?, "refusal"?,
                  "reasoning_content"? | "reasoning"?,    (newer vLLM: "reasoning")
                  "tool_calls"?: [{"index", "id"?, "function": {"name"?, "arguments"?}}]},
                  "finish_reason": null | "stop" | ...}],
     "usage"?: {...}}
    {"choices": [], "usage": {...}}                  (the include_usage chunk)
    {"error": {"message", ...}}  or  {"object": "error", "message", ...}   (in-band errors)

and the whole non-streaming ``chat.completion`` body, whose choices carry a
``message`` instead of a ``delta``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import orjson
from msgspec import Raw, Struct

EMPTY_RAW = Raw()


class Details(Struct, gc=False):
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


class Usage(Struct, gc=False):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: Details | None = None
    completion_tokens_details: Details | None = None


class FunctionDelta(Struct, gc=False):
    name: str | None = None
    arguments: Raw = EMPTY_RAW


class ToolCallDelta(Struct, gc=False):
    index: int = -1  # -1: the upstream sent no index (resolved by id / position)
    id: str | None = None
    function: FunctionDelta | None = None


class Delta(Struct, gc=False):
    content: Raw = EMPTY_RAW
    refusal: Raw = EMPTY_RAW
    reasoning_content: Raw = EMPTY_RAW
    reasoning: Raw = EMPTY_RAW  # the name newer vLLM uses
    tool_calls: list[ToolCallDelta] | None = None

    def reasoning_token(self) -> tuple[int, bytes | None]:
        """(the plain kind of the field it came in, its text token) of the reasoning delta;
        ``(0, None)`` when there is none. ``reasoning_content`` wins when a server sends both."""
        token = string_token(self.reasoning_content)
        if token is not None:
            return REASONING_CONTENT, token
        token = string_token(self.reasoning)
        if token is not None:
            return REASONING, token
        return TEXT, None


class Choice(Struct, gc=False):
    index: int = 0
    delta: Delta | None = None
    finish_reason: str | None = None


class Answer(Struct, gc=False):
    """What a chunk and a whole completion share: usage and the in-band error shapes."""

    usage: Usage | None = None
    error: Raw = EMPTY_RAW
    message: str | None = None  # the old vLLM error shape: {"object": "error", "message", ...}


class Chunk(Answer, gc=False):
    choices: list[Choice] | None = None


class CompletionChoice(Struct, gc=False):
    index: int = 0
    message: Delta | None = None
    finish_reason: str | None = None


class Completion(Answer, gc=False):
    choices: list[CompletionChoice] | None = None


NoText = Literal[""] | None  # a text field of a plain chunk that is not its kind's


class PlainDelta(Struct, gc=False):
    content: Raw
    refusal: None = None
    tool_calls: None = None
    reasoning_content: NoText = None
    reasoning: NoText = None


class PlainChoice(Struct, gc=False):
    delta: PlainDelta
    index: Literal[0] = 0
    finish_reason: None = None


class PlainChunk(Struct, gc=False):
    """A chunk that only brings text: what most chunks of a stream are.

    Decoding into it succeeds only for one choice, index 0, a ``content`` and no
    refusal, tool calls, finish_reason or error: the type checks that the
    transcoder's hot loop would otherwise make in Python, done by msgspec.
    """

    choices: tuple[PlainChoice]
    usage: Usage | None = None
    error: None = None
    message: None = None


class PlainReasoningContentDelta(Struct, gc=False):
    """A delta that only brings reasoning, as ``reasoning_content``; read as ``content``
    so that the transcoder's hot loop and ``ChunkTemplate`` treat it like text."""

    content: Raw = msgspec.field(name="reasoning_content")
    text: NoText = msgspec.field(default=None, name="content")
    refusal: None = None
    tool_calls: None = None
    reasoning: NoText = None


class PlainReasoningDelta(Struct, gc=False):
    """The same, as ``reasoning`` (newer vLLM)."""

    content: Raw = msgspec.field(name="reasoning")
    text: NoText = msgspec.field(default=None, name="content")
    refusal: None = None
    tool_calls: None = None
    reasoning_content: NoText = None


class PlainReasoningContentChoice(Struct, gc=False):
    delta: PlainReasoningContentDelta
    index: Literal[0] = 0
    finish_reason: None = None


class PlainReasoningChoice(Struct, gc=False):
    delta: PlainReasoningDelta
    index: Literal[0] = 0
    finish_reason: None = None


class PlainReasoningContentChunk(Struct, gc=False):
    choices: tuple[PlainReasoningContentChoice]
    usage: Usage | None = None
    error: None = None
    message: None = None


class PlainReasoningChunk(Struct, gc=False):
    choices: tuple[PlainReasoningChoice]
    usage: Usage | None = None
    error: None = None
    message: None = None


CHUNK_DECODER = msgspec.json.Decoder(Chunk)
PLAIN_DECODER = msgspec.json.Decoder(PlainChunk)
COMPLETION_DECODER = msgspec.json.Decoder(Completion)

# The plain kinds of chunk: one text-like field and nothing else. Their decoders all give
# ``view.choices[0].delta.content`` (the text) and ``view.usage``.
TEXT, REASONING_CONTENT, REASONING = 0, 1, 2
PLAIN_DECODERS = (
    PLAIN_DECODER,
    msgspec.json.Decoder(PlainReasoningContentChunk),
    msgspec.json.Decoder(PlainReasoningChunk),
)


# ---- reading the views -----------------------------------------------------------------

_NULL = b"null"
NULL_RAW = Raw(_NULL)
_QUOTE = b'"'
_QUOTES = b'""'


def join_tokens(pieces: list[bytes]) -> bytes:
    """JSON string tokens → one token; escapes never cross a token boundary.

    Inside a token a quote is escaped (backslash, quote), so two adjacent quotes
    only occur where the tokens meet: a closing quote and the next opening one,
    possibly right after an escaped quote (then the run has three quotes, and
    dropping any adjacent pair of it leaves the same bytes). With the last
    closing quote held back, one ``replace`` drops every meeting.
    """
    if len(pieces) == 1:
        return pieces[0]
    if not pieces:
        return _QUOTES
    return b"".join(pieces)[:-1].replace(_QUOTES, b"") + _QUOTE


def string_token(raw: Raw) -> bytes | None:
    """A non-empty JSON string token from a text Raw, else None (absent, null, ``""``).

    A value that is neither a string nor null (``arguments`` sent as an object
    by some servers) is turned into the JSON string of its text.
    """
    if len(raw) <= 2:
        return None
    token = bytes(raw)
    if token[0] == 34:
        return token if token.isascii() else valid_utf8(token)
    if token == _NULL:
        return None
    return orjson.dumps(token.decode("utf-8", "replace"))


def valid_utf8(token: bytes) -> bytes:
    """``token`` when it is valid UTF-8, else a copy with U+FFFD replacements.

    A ``Raw`` is not UTF-8-checked by msgspec (a ``str`` field would be).
    """
    try:
        token.decode()
    except UnicodeDecodeError:
        return token.decode("utf-8", "replace").encode()
    return token


def first_choice(choices: list[Any] | None) -> Any:
    """The choice with index 0 (the only one that matters: ``n`` is always 1)."""
    for choice in choices or ():
        if choice.index == 0:
            return choice
    return None


def is_error(doc: Answer) -> bool:
    """An in-band error: a non-null ``error`` or (old vLLM) a top-level ``message``."""
    return doc.message is not None or (len(doc.error) > 0 and doc.error != NULL_RAW)


def error_message(doc: Answer) -> str:
    """The message of an in-band error (``{"error": {...}}``, ``{"error": "..."}``, old vLLM)."""
    if doc.message:
        return doc.message
    try:
        error = orjson.loads(bytes(doc.error))
    except orjson.JSONDecodeError:
        return "unknown error"
    if isinstance(error, dict):
        error = error.get("message")
    return error if isinstance(error, str) and error else "unknown error"
