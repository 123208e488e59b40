"""What the chat pass-through reads of a client's body: the model (to route and
alias it) and the fields that name a conversation for cache affinity
(``prompt_cache_key``, ``user``, ``safety_identifier``); the rest is forwarded
untouched.

Upstream answers (chunks and whole completions) are read through the view
Structs in ``wire/chunks.py``.
"""

from __future__ import annotations

import msgspec


class PassThrough(msgspec.Struct):
    model: str
    prompt_cache_key: str | None = None
    user: str | None = None
    safety_identifier: str | None = None


PASS_THROUGH_DECODER = msgspec.json.Decoder(PassThrough)
