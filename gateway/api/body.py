"""Reading a request's body (bounded), undoing its Content-Encoding, and decoding it
into a Struct.

Foreign errors stop here: a body over the limit becomes ``RequestTooLarge``, an
unreadable one and every msgspec error become ``InvalidRequest`` naming the
field path (``temperature``, ``input[0].role``); zlib's and zstandard's errors
become ``InvalidRequest`` naming the coding, and a coding the gateway does not
decode ``UnsupportedMediaType`` (415).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import msgspec
import zstandard

from gateway.errors import (
    InvalidRequest,
    UnsupportedMediaType,
    body_too_large,
    missing,
)
from gateway.http.messages import Headers, Incoming
from gateway.http.refusals import RefusalLog
from gateway.limits import MAX_CONTENT_CODINGS, MAX_ZSTD_WINDOW

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
    Content-Length says it is larger), decoded when it has a Content-Encoding:
    the decoded body is at most ``limit`` bytes too (``decode_content``). The
    server's errors are the gateway's own. A body without Content-Encoding costs
    one header lookup and is returned as read."""
    size = request.content_length
    if size is not None and size > limit:
        raise body_too_large(limit, size)
    if request.headers.get("content-encoding") is None:
        if size == 0:
            return b""
        return await request.content.read(limit)
    codings = content_codings(request.headers)  # (refused before the body is read)
    body = b"" if size == 0 else await request.content.read(limit)
    return decode_content(body, codings, limit) if codings else body


# ---- Content-Encoding -------------------------------------------------------------------

DECODED = "zstd, gzip or deflate"


def content_codings(headers: Headers) -> list[str]:
    """The codings of a request's Content-Encoding, in the order they were applied
    (lower-cased; ``identity`` and empty items left out; ``x-gzip`` is ``gzip``).

    Several header lines count as one list. A coding the gateway does not decode,
    or more than ``MAX_CONTENT_CODINGS`` of them, is a 415 before the body is read.
    """
    codings = []
    for value in headers.getall("content-encoding"):
        for item in value.split(","):
            coding = item.strip().lower()
            if not coding or coding == "identity":
                continue
            coding = "gzip" if coding == "x-gzip" else coding
            if coding not in DECODERS:
                raise UnsupportedMediaType(
                    f"The Content-Encoding '{item.strip()}' is not supported: a request "
                    f"body may be {DECODED}, or identity (as is)."
                )
            codings.append(coding)
    if len(codings) > MAX_CONTENT_CODINGS:
        raise UnsupportedMediaType(
            f"The request body has {len(codings)} content codings; at most "
            f"{MAX_CONTENT_CODINGS} are decoded."
        )
    return codings


def decode_content(body: bytes, codings: list[str], limit: int) -> bytes:
    """``body`` with its ``codings`` undone, at most ``limit`` bytes.

    The codings of a list were applied in the order listed (RFC 9110, 8.4), so they
    are undone from the last to the first; each step's output is bounded by ``limit``
    on its own, before the next step reads it. A decoder stops once its output passes
    the limit (``RequestTooLarge``), so a small body that would expand to gigabytes
    costs at most the limit in memory. A stream that is malformed, cut short, or
    followed by more bytes is ``InvalidRequest`` naming the coding.
    """
    for coding in reversed(codings):
        body = DECODERS[coding](body, limit)
    return body


def _malformed(coding: str) -> InvalidRequest:
    return InvalidRequest(f"The request body is not valid {coding} data.")


def _truncated(coding: str) -> InvalidRequest:
    return InvalidRequest(f"The request body ends before the end of its {coding} data.")


def _trailing(coding: str) -> InvalidRequest:
    return InvalidRequest(f"The request body has bytes after the end of its {coding} data.")


GZIP = 16 + zlib.MAX_WBITS  # a gzip header and trailer
ZLIB = zlib.MAX_WBITS  # a zlib header and trailer (RFC 1950): HTTP's "deflate"
RAW_DEFLATE = -zlib.MAX_WBITS  # no header: what many clients send as "deflate"


def _inflate(data: bytes, wbits: int, coding: str, limit: int, members: bool) -> bytes:
    """One zlib-family stream (``members``: gzip's series of members, RFC 1952),
    its output bounded by ``limit`` through zlib's ``max_length``."""
    parts: list[bytes] = []
    size = 0
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(data, limit - size + 1)
        except zlib.error as exc:
            raise (_trailing(coding) if parts else _malformed(coding)) from exc
        size += len(out)
        if size > limit:
            raise body_too_large(limit)
        parts.append(out)
        if not inflater.eof:  # (below max_length: the whole input was taken)
            raise _truncated(coding)
        data = inflater.unused_data
        if not data:
            return parts[0] if len(parts) == 1 else b"".join(parts)
        if not members:
            raise _trailing(coding)


def _gunzip(data: bytes, limit: int) -> bytes:
    return _inflate(data, GZIP, "gzip", limit, members=True)


def _deflate(data: bytes, limit: int) -> bytes:
    """HTTP's deflate is zlib-wrapped (RFC 9110, 8.4.1.2); many clients send raw
    deflate under that name. Both are taken: a body that starts with a zlib header
    is read as zlib, and as raw deflate if that fails (a raw stream can begin with
    those two bytes by chance); any other body as raw deflate."""
    if len(data) < 2 or data[0] & 0x0F != 8 or (data[0] << 8 | data[1]) % 31:
        return _inflate(data, RAW_DEFLATE, "deflate", limit, members=False)
    try:
        return _inflate(data, ZLIB, "deflate", limit, members=False)
    except InvalidRequest as exc:
        try:
            return _inflate(data, RAW_DEFLATE, "deflate", limit, members=False)
        except InvalidRequest:
            raise exc from exc.__cause__


# zstd has no ``max_length``: the input is fed in slices small enough that one
# slice cannot yield more than what is left below the limit. A block is at most
# 128 KiB of output and at least 4 bytes of input (an RLE block), so a byte yields at
# most ZSTD_MAX_RATIO bytes (plus the one block a slice may complete). Slices are at
# least ZSTD_MIN_SLICE bytes, so a decode stops at most ~640 KiB past the limit.
ZSTD_MAX_RATIO = 32 * 1024
ZSTD_MIN_SLICE = 16


def _unzstd(data: bytes, limit: int) -> bytes:
    """A zstd stream: one or more frames (RFC 8878), skippable ones included.

    A frame whose header declares a content size above the limit is refused before
    decoding, and one asking for a window above ``MAX_ZSTD_WINDOW`` is refused (the
    window is memory the decoder holds outside Python's heap)."""
    try:
        params = zstandard.get_frame_parameters(data)
    except zstandard.ZstdError as exc:
        raise _malformed("zstd") from exc
    declared = params.content_size
    if declared != zstandard.CONTENTSIZE_UNKNOWN and declared > limit:
        raise body_too_large(limit, declared)
    if params.window_size > MAX_ZSTD_WINDOW:
        raise InvalidRequest(
            f"The request body's zstd data asks for a window of {params.window_size} "
            f"bytes; at most {MAX_ZSTD_WINDOW} are decoded."
        )
    dctx = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW)
    frame = dctx.decompressobj()
    view = memoryview(data)
    end = len(data)
    parts: list[bytes] = []
    size = pos = frames = 0
    while pos < end:
        step = max(ZSTD_MIN_SLICE, (limit - size) // ZSTD_MAX_RATIO)
        fed = view[pos : pos + step]
        try:
            out = frame.decompress(fed)
        except zstandard.ZstdError as exc:
            raise (_trailing("zstd") if frames else _malformed("zstd")) from exc
        pos += len(fed)
        if out:
            size += len(out)
            if size > limit:
                raise body_too_large(limit)
            parts.append(out)
        if frame.eof:  # a frame ended: what it left of the slice starts the next one
            frames += 1
            pos -= len(frame.unused_data)
            if pos < end:
                frame = dctx.decompressobj()
    if not frame.eof:
        raise _truncated("zstd")
    return b"".join(parts)


DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "zstd": _unzstd,
    "gzip": _gunzip,
    "deflate": _deflate,
}


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
