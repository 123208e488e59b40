"""A stateless OpenAI Responses API gateway in front of chat-completions servers."""

__version__ = "0.1.0"
