"""A whole chat completion (a non-streamed upstream answer) → the Responses object.

There is one way a chat answer becomes Responses output: the stream
transcoder's state machine. A non-streamed answer goes through it too, with an
``OutputCollector`` for an encoder (no events are framed), so the JSON answer
and the streamed one always carry the same items, statuses and usage.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.core.ids import IDS, Ids
from gateway.core.stream.transcoder import Transcoder
from gateway.errors import UpstreamBadResponse


def to_response(
    completion: bytes, base: dict, *, now: Callable[[], float] = time.time, ids: Ids = IDS
) -> dict:
    """The response for the upstream's ``chat.completion`` body; ``base`` is the
    in-progress response object (``wire.output.response_base``).

    Raises ``UpstreamBadResponse`` (a 502) when the body is not a chat
    completion, holds an in-band error or has no answer.
    """
    tx = Transcoder(base, now=now, ids=ids, quiet=True)
    tx.complete(completion)
    final = tx.response
    assert final is not None  # complete() always ends the response
    if final["status"] == "failed":
        message = final["error"]["message"]  # the stream's wording, as a sentence
        raise UpstreamBadResponse(message[:1].upper() + message[1:].rstrip(".") + ".")
    return final
