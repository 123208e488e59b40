"""Chat-completions view Structs: only the fields the gateway reads.

``PassThrough`` is what the chat endpoint looks at in a client's body (the rest
is forwarded untouched). ``ChatCompletion`` is a non-streaming upstream answer;
its ``content`` stays ``Raw`` so the text is copied into the Responses output
without being decoded and encoded again.
"""

from __future__ import annotations

import msgspec
from msgspec import Raw

EMPTY = Raw(b"")


class PassThrough(msgspec.Struct):
    model: str
    stream: bool | None = None


class ChatFunctionCall(msgspec.Struct):
    name: str = ""
    arguments: str = ""


class ChatToolCall(msgspec.Struct):
    function: ChatFunctionCall
    id: str | None = None
    type: str = "function"


class ChatMessage(msgspec.Struct):
    content: Raw = EMPTY
    refusal: Raw = EMPTY
    tool_calls: list[ChatToolCall] | None = None


class ChatChoice(msgspec.Struct):
    message: ChatMessage
    index: int = 0
    finish_reason: str | None = None


class PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class ChatUsage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: PromptDetails | None = None
    completion_tokens_details: CompletionDetails | None = None


class ChatCompletion(msgspec.Struct):
    choices: list[ChatChoice]
    usage: ChatUsage | None = None


PASS_THROUGH_DECODER = msgspec.json.Decoder(PassThrough)
COMPLETION_DECODER = msgspec.json.Decoder(ChatCompletion)
