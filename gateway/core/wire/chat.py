"""What the chat pass-through reads of a client's body: the model (to route and
alias it) and nothing else; the rest is forwarded untouched.

Upstream answers (chunks and whole completions) are read through the view
Structs in ``wire/chunks.py``.
"""

from __future__ import annotations

import msgspec


class PassThrough(msgspec.Struct):
    model: str


PASS_THROUGH_DECODER = msgspec.json.Decoder(PassThrough)
