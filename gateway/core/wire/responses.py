"""Decode-side Structs for ``POST /v1/responses`` bodies.

Unknown fields are ignored everywhere (msgspec's default): SDKs add fields
often, and the Agents SDK replays items with extra null fields.

Input items are decoded as ONE flat Struct (``InputItem``) whose ``type``
defaults to ``"message"``, not as a tagged union: a tagged union rejects the
most common client shape, ``{"role": "user", "content": "hi"}``, which has no
``type``. ``translate`` validates the fields each type needs. Content parts
likewise (``ContentPart``).

Fields whose exact JSON we echo or forward (tool ``parameters``, the ``text``
config, ``tool_choice``) are kept as ``msgspec.Raw``: an empty Raw means the
field was absent, the bytes ``null`` mean an explicit null.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, Raw, UnsetType

EMPTY = Raw(b"")
NULL = b"null"


def is_absent(raw: Raw) -> bool:
    """True when a Raw field was missing or explicitly null."""
    return not raw or bytes(raw) == NULL


class ContentPart(msgspec.Struct):
    type: str
    text: str | None = None
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None
    refusal: str | None = None


class InputItem(msgspec.Struct):
    type: str = "message"
    # message
    role: str | None = None
    content: str | list[ContentPart] | None = None
    # function_call (and the item id of any replayed item)
    id: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    # function_call_output, custom_tool_call_output
    output: str | list[ContentPart] | None = None
    # custom_tool_call
    input: str | None = None
    # function_call / custom_tool_call of a namespace's tool
    namespace: str | None = None
    # reasoning (its text in ``content``, as reasoning_text parts)
    summary: list[ContentPart] | None = None
    encrypted_content: str | None = None


class ChatFunction(msgspec.Struct):
    """The nested chat-completions form of a function tool, accepted as given."""

    name: str
    description: str | None = None
    parameters: Raw = EMPTY
    strict: bool | None | UnsetType = UNSET


class CustomFormat(msgspec.Struct):
    """A custom tool's input format: ``text`` (free text) or a ``grammar``."""

    type: str
    syntax: str | None = None  # grammar: "lark" or "regex"
    definition: str | None = None


class Tool(msgspec.Struct):
    type: str
    name: str | None = None
    description: str | None = None
    parameters: Raw = EMPTY
    strict: bool | None | UnsetType = UNSET
    function: ChatFunction | None = None
    format: CustomFormat | None = None  # custom
    tools: list[Tool] | None = None  # namespace: its functions and custom tools


class NamedTool(msgspec.Struct):
    type: str = "function"
    name: str | None = None


class FunctionName(msgspec.Struct):
    name: str


class ToolChoice(msgspec.Struct):
    type: str
    name: str | None = None
    function: FunctionName | None = None  # the chat form, accepted as given
    mode: str | None = None  # allowed_tools
    tools: list[NamedTool] | None = None  # allowed_tools


class TextFormat(msgspec.Struct):
    type: str
    name: str | None = None
    schema: Raw = EMPTY
    strict: bool | None | UnsetType = UNSET
    description: str | None = None


class TextConfig(msgspec.Struct):
    format: TextFormat | None = None
    verbosity: str | None = None


class ReasoningConfig(msgspec.Struct):
    """``reasoning``: the effort goes upstream (``translate.reasoning``); the summary
    choice is accepted (and echoed)."""

    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None  # the deprecated name of ``summary``


Temperature = Annotated[float, Meta(ge=0, le=2)]
TopP = Annotated[float, Meta(ge=0, le=1)]
PositiveInt = Annotated[int, Meta(ge=1)]


class ResponsesRequest(msgspec.Struct):
    model: str
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    stream: bool | None = None
    max_output_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    tools: list[Tool] | None = None
    tool_choice: Raw = EMPTY
    text: Raw = EMPTY
    parallel_tool_calls: bool | None = None
    user: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    truncation: str | None = None
    service_tier: str | None = None
    top_logprobs: int | None = None
    max_tool_calls: int | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    stream_options: dict[str, Any] | None = None
    reasoning: ReasoningConfig | None = None
    include: list[str] | None = None
    # Sampling extras that chat-completions servers understand: passed through.
    seed: int | None = None
    stop: str | list[str] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    # Not offered by a stateless gateway: refused unless null/false/[]/{}.
    previous_response_id: Any = None
    background: Any = None
    conversation: Any = None
    prompt: Any = None
    context_management: Any = None
    background_options: Any = None
    access_programs: Any = None
    moderation: Any = None


NOT_OFFERED = (
    "previous_response_id",
    "background",
    "conversation",
    "prompt",
    "context_management",
    "background_options",
    "access_programs",
    "moderation",
)

REQUEST_DECODER = msgspec.json.Decoder(ResponsesRequest)
TOOL_CHOICE_DECODER = msgspec.json.Decoder(str | ToolChoice)
TEXT_DECODER = msgspec.json.Decoder(TextConfig)
