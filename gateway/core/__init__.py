"""The pure core: translation and stream transcoding as plain functions and objects.

Nothing under ``gateway/core/`` imports asyncio, sockets, aiohttp, httptools,
uvloop or redis, nor reads files, the environment or a clock other than one
handed in (``tests/unit/test_layering.py`` checks every module here). It may
import the shared leaves ``gateway.errors`` and ``gateway.limits``, never the
I/O shell (``http``, ``upstream``, ``api``, ``ops``) nor ``gateway.config``.

- ``wire/``: the JSON shapes (msgspec Structs and their decoders, event bytes).
- ``translate/``: a Responses request → a chat request; a chat completion →
  Responses output.
- ``stream/``: upstream chat-completions SSE bytes → Responses SSE bytes.
"""
