"""The sans-IO stream transcoder: upstream chat-completions SSE in, Responses SSE out.

``sse`` (bytes → data payloads) → ``chunk_template`` / ``wire.chunks`` (payload →
upstream facts) → ``transcoder`` (the state machine) → ``encoder`` (Responses
events as frames); ``toolcalls`` keeps the bookkeeping of streamed tool calls,
``custom_input`` reads a custom tool's ``input`` out of its streamed arguments.
"""
