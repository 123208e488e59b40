"""What a deployment's upstream can do: all the translation needs to know of it.

The shell builds one per deployment from its config (``upstream.routing``), so
that replica lists, timeouts and keys never reach the core.
"""

from __future__ import annotations

from typing import Any, Literal

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
    # Reasoning (config [deployment.reasoning]). Off: the model does not reason, and a
    # request for an effort other than "none" is refused.
    reasoning: bool = True
    # The chat field that carries reasoning.effort ("": the effort is not sent).
    effort_field: str = "reasoning_effort"
    # Effort values the server does not know -> the value sent instead.
    effort_map: dict[str, str] = msgspec.field(default_factory=dict)
    # Fields sent instead of an effort for "none" (e.g. a chat-template switch:
    # {"chat_template_kwargs": {"enable_thinking": False}}); empty: "none" is sent as it is.
    effort_none: dict[str, Any] = msgspec.field(default_factory=dict)
    # Where replayed reasoning goes on the assistant message ("": dropped).
    replay_field: str = "reasoning_content"
    # Also give the reasoning text as the summary (summary_text) when one is asked for.
    summary_text: bool = False
    # The last message of a compaction's summarisation request (config: compaction-prompt,
    # whose default is config.COMPACTION_PROMPT; translate.compaction).
    compaction_prompt: str = ""
