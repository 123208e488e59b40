"""Reading a request's body (bounded) and decoding it into a Struct.

Foreign errors stop here: a body over the limit becomes ``RequestTooLarge``, an
unreadable one and every msgspec error become ``InvalidRequest`` naming the
field path (``temperature``, ``input[0].role``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import InvalidRequest, body_too_large, missing
from gateway.http.messages import Incoming
from gateway.http.refusals import RefusalLog

BAD_JSON = (
    "We could not parse the JSON body of your request. The body must be a JSON object "
    "(and the Content-Type application/json)."
)
BAD_UTF8 = "The JSON body of your request is not valid UTF-8."
TOO_DEEP = "The JSON body of your request is nested too deeply."
# Logged once per burst (a flood of such bodies is one line, with a count).
REFUSALS = RefusalLog()


async def read_body(request: Incoming, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes (refused before reading when
    Content-Length says it is larger). The server's errors are the gateway's own."""
    size = request.content_length
    if size is not None and size > limit:
        raise body_too_large(limit, size)
    if size == 0:
        return b""
    return await request.content.read(limit)


def decode(decoder: Any, body: bytes) -> Any:
    """``body`` decoded by a msgspec ``decoder``; a 400 naming the field if it does not fit,
    or saying it is nested too deeply (msgspec raises ``RecursionError`` for a deep
    array or object where it skips or keeps raw JSON: a 2 KB body can hold one)."""
    try:
        return decoder.decode(body)
    except ValueError as exc:  # msgspec's errors (older msgspec: UnicodeDecodeError)
        raise decode_error(exc, body) from exc
    except RecursionError:
        REFUSALS.note("too_deep", TOO_DEEP)
        raise InvalidRequest(TOO_DEEP, code="invalid_value") from None


def decode_error(exc: ValueError, body: bytes) -> InvalidRequest:
    """A msgspec error → a 400 naming the field path.

    A string that is not UTF-8 is told apart by checking the body itself, not
    by the library's error (older msgspec raised ``UnicodeDecodeError``, 0.23 its
    own ``DecodeError``); this is the error path only.
    """
    if not isinstance(exc, msgspec.ValidationError):
        if not _is_utf8(body):
            return InvalidRequest(BAD_UTF8, code="invalid_value")
        return InvalidRequest(BAD_JSON)
    text = str(exc)
    path = ""
    if " - at `$" in text:
        text, _, at = text.rpartition(" - at `$")
        path = at.rstrip("`").lstrip(".")
    if text.startswith("Object missing required field `"):
        field = text.split("`")[1]
        return missing(f"{path}.{field}" if path else field)
    code = "invalid_type" if text.startswith("Expected `") and " got `" in text else "invalid_value"
    if not path:
        return InvalidRequest(f"Invalid request body: {text}.", code=code)
    return InvalidRequest(f"Invalid '{path}': {text}.", param=path, code=code)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True
