"""What a deployment's upstream can do: all the translation needs to know of it.

The shell builds one per deployment from its config (``upstream.routing``), so
that replica lists, timeouts and keys never reach the core.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class Capabilities(msgspec.Struct, frozen=True, kw_only=True):
    streaming: bool = True
    # Ask for usage on the last streamed chunk (stream_options.include_usage).
    stream_usage: bool = True
    tools: bool = True
    structured_output: bool = True
    images: bool = True
    # The chat field that carries max_output_tokens.
    token_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    # Hosted tools (web_search, ...) in a request: dropped rather than refused.
    drop_hosted_tools: bool = False
