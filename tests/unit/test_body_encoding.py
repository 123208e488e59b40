"""Content-Encoding of request bodies (``api.body``): zstd, gzip and deflate round-trip at
real sizes; bombs stop at the limit with memory well below what they would expand to;
malformed, cut short and trailing bytes are 400; an unknown coding is 415; a list of
codings is undone from the last to the first."""

from __future__ import annotations

import functools
import gzip
import random
import tracemalloc
import zlib
from collections.abc import Callable

import orjson
import pytest
import zstandard

from gateway.api.body import content_codings, decode_content, read_body
from gateway.errors import InvalidRequest, RequestTooLarge, UnsupportedMediaType
from gateway.http.messages import Headers
from gateway.limits import MAX_ZSTD_WINDOW

MiB = 1024 * 1024
LIMIT = 8 * MiB


def zstd(data: bytes, level: int = 3) -> bytes:
    return zstandard.ZstdCompressor(level=level).compress(data)


def zstd_unsized(data: bytes, level: int = 3) -> bytes:
    """A streamed zstd frame: no content size in its header (as a streaming client sends)."""
    packer = zstandard.ZstdCompressor(level=level, write_content_size=False).compressobj()
    return packer.compress(data) + packer.flush()


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "zstd": zstd,
    "zstd-unsized": zstd_unsized,
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "raw-deflate": raw_deflate,
}
CODING = {"zstd-unsized": "zstd", "raw-deflate": "deflate"}


@functools.cache
def codex_body(size: int, seed: int) -> bytes:
    """A JSON request of about ``size`` bytes, of text as varied as a coding session's."""
    rnd = random.Random(seed)
    words = ["def", "return", "self", "import", "tests/", "assert", "None", "ok", "42", "fn"]
    items = []
    while sum(len(i["output"]) for i in items) < size:
        text = " ".join(rnd.choices(words, k=400))
        items.append({"type": "function_call_output", "call_id": f"c{len(items)}", "output": text})
    return orjson.dumps({"model": "m1", "input": items})


def decode(body: bytes, coding: str, limit: int = LIMIT) -> bytes:
    return decode_content(body, [CODING.get(coding, coding)], limit)


@pytest.mark.parametrize("encoder", list(ENCODERS))
@pytest.mark.parametrize("size", [0, 1, 100_000, 1 * MiB, 6 * MiB])
def test_each_coding_round_trips_at_real_sizes(encoder: str, size: int) -> None:
    data = codex_body(size, seed=size)[:size]
    assert decode(ENCODERS[encoder](data), encoder) == data


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_random_bytes_round_trip(encoder: str) -> None:
    """Incompressible data (a base64 image is nearly so) expands nothing and loses nothing."""
    data = random.Random(3).randbytes(3 * MiB)
    assert decode(ENCODERS[encoder](data), encoder) == data


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_a_body_of_exactly_the_limit_passes_and_one_byte_more_is_413(encoder: str) -> None:
    data = codex_body(MiB, seed=9)[:MiB]
    assert decode(ENCODERS[encoder](data), encoder, limit=MiB) == data
    with pytest.raises(RequestTooLarge):
        decode(ENCODERS[encoder](data + b" "), encoder, limit=MiB)


def test_several_gzip_members_and_zstd_frames_are_one_body() -> None:
    """A gzip body may be a series of members (RFC 1952), a zstd one a series of frames
    (RFC 8878), skippable frames among them."""
    a, b = b'{"a": 1, ' * 5000, b'"b": 2}' * 7000
    assert decode(gzip.compress(a) + gzip.compress(b), "gzip") == a + b
    skippable = b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"notes"
    assert decode(zstd(a) + skippable + zstd_unsized(b), "zstd") == a + b
    assert decode(skippable + zstd(a), "zstd") == a


@pytest.mark.parametrize("coding", ["zstd", "gzip"])
@pytest.mark.parametrize("declared", [True, False])
def test_a_bomb_is_413_with_memory_far_below_its_expansion(coding: str, declared: bool) -> None:
    """A few KB that expand to 100 times the limit: refused, and the decoder never holds
    more than a few times the limit (a frame that declares its huge size is refused from
    its header; one that does not, while decoding)."""
    limit = 1 * MiB
    expanded = b"\0" * (100 * limit)
    if coding == "zstd":
        body = zstd(expanded, 19) if declared else zstd_unsized(expanded, 19)
    else:
        body = gzip.compress(expanded, 9)
        if not declared:
            body = gzip.compress(body, 9)  # gzip of gzip: a few KB
            coding = "gzip, gzip"
    assert len(body) < 120_000
    codings = content_codings(Headers([(b"content-encoding", coding.encode())]))
    tracemalloc.start()
    try:
        with pytest.raises(RequestTooLarge) as info:
            decode_content(body, codings, limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.status == 413 and info.value.code == "request_too_large"
    assert peak < 3 * limit < len(expanded) // 30


def test_a_zstd_frame_declaring_a_huge_size_is_refused_from_its_header() -> None:
    """The content size in the header is over the limit: 413 before any output."""
    body = zstd(b"x" * (20 * MiB))
    assert zstandard.get_frame_parameters(body).content_size == 20 * MiB
    with pytest.raises(RequestTooLarge) as info:
        decode(body, "zstd")
    assert (
        info.value.message == f"The request body is {20 * MiB} bytes; the limit is {LIMIT} bytes."
    )


def test_a_zstd_window_over_the_bound_is_refused() -> None:
    params = zstandard.ZstdCompressionParameters.from_level(
        3, window_log=27, write_content_size=False
    )
    packer = zstandard.ZstdCompressor(compression_params=params).compressobj()
    body = packer.compress(b"small") + packer.flush()
    assert zstandard.get_frame_parameters(body).window_size > MAX_ZSTD_WINDOW
    with pytest.raises(InvalidRequest) as info:
        decode(body, "zstd")
    assert info.value.message == (
        f"The request body's zstd data asks for a window of {2**27} bytes; "
        f"at most {MAX_ZSTD_WINDOW} are decoded."
    )


DATA = codex_body(200_000, seed=4)


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_malformed_truncated_and_trailing_bytes_are_400(encoder: str) -> None:
    coding = CODING.get(encoder, encoder)
    body = ENCODERS[encoder](DATA)
    cases = {
        b"not compressed at all, just text": f"The request body is not valid {coding} data.",
        body[: len(body) // 2]: f"The request body ends before the end of its {coding} data.",
        body[:-1]: f"The request body ends before the end of its {coding} data.",
        body + b"\0garbage": f"The request body has bytes after the end of its {coding} data.",
    }
    for bad, message in cases.items():
        with pytest.raises(InvalidRequest) as info:
            decode(bad, encoder)
        assert info.value.status == 400 and info.value.message == message


CHECKED: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,  # a CRC-32 of the data
    "deflate": zlib.compress,  # an Adler-32
    "zstd": lambda data: zstandard.ZstdCompressor(write_checksum=True).compress(data),
}


@pytest.mark.parametrize("coding", list(CHECKED))
def test_a_corrupted_stream_is_400(coding: str) -> None:
    """A byte flipped in the middle, caught by the coding's checksum or its format."""
    body = bytearray(CHECKED[coding](DATA))
    body[len(body) // 2] ^= 0xFF
    with pytest.raises(InvalidRequest) as info:
        decode(bytes(body), coding)
    assert info.value.message == f"The request body is not valid {coding} data."


def headers(*values: str) -> Headers:
    return Headers([(b"content-encoding", v.encode()) for v in values])


def test_the_list_of_codings() -> None:
    assert content_codings(headers("zstd")) == ["zstd"]
    assert content_codings(headers("GZip")) == ["gzip"]
    assert content_codings(headers("x-gzip")) == ["gzip"]
    assert content_codings(headers("identity")) == []
    assert content_codings(headers("")) == []
    assert content_codings(headers("gzip, zstd")) == ["gzip", "zstd"]
    assert content_codings(headers("gzip", "identity, deflate")) == ["gzip", "deflate"]


@pytest.mark.parametrize("value", ["br", "compress", "gzip, br", "zstd;q=1"])
def test_an_unknown_coding_is_415(value: str) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        content_codings(headers(value))
    err = info.value
    assert (err.status, err.type, err.code) == (
        415,
        "invalid_request_error",
        "unsupported_content_encoding",
    )
    assert err.to_dict()["error"]["code"] == "unsupported_content_encoding"


def test_more_codings_than_the_bound_are_415() -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        content_codings(headers("gzip, gzip, gzip"))
    assert info.value.message == "The request body has 3 content codings; at most 2 are decoded."


def test_a_list_is_undone_from_the_last_coding_to_the_first() -> None:
    """``gzip, zstd``: gzip was applied first, then zstd; zstd is undone first."""
    body = zstd(gzip.compress(DATA))
    assert decode_content(body, ["gzip", "zstd"], LIMIT) == DATA
    with pytest.raises(InvalidRequest) as info:
        decode_content(body, ["zstd", "gzip"], LIMIT)
    assert info.value.message == "The request body is not valid gzip data."


def test_each_step_of_a_list_is_bounded() -> None:
    """The outer step's output is bounded too, before the inner one reads it: a gzip of
    incompressible data, in zstd, is over the limit as soon as the zstd step is."""
    inner = gzip.compress(random.Random(1).randbytes(2 * MiB), 1)
    with pytest.raises(RequestTooLarge):
        decode_content(zstd(inner), ["gzip", "zstd"], MiB)


class _Content:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads = 0

    async def read(self, limit: int) -> bytes:
        self.reads += 1
        return self.data[: limit + 1]


class _Request:
    def __init__(self, data: bytes, *head: tuple[bytes, bytes]) -> None:
        self.method = "POST"
        self.path = "/v1/responses"
        self.content_length = len(data)
        self.headers = Headers(list(head))
        self.content = _Content(data)


async def test_read_body_without_the_header_is_the_body_as_read() -> None:
    data = b'{"model": "m1"}'
    request = _Request(data)
    body = await read_body(request, LIMIT)  # type: ignore[arg-type]
    assert body is request.content.data  # not copied


async def test_read_body_decodes_and_refuses_an_unknown_coding_before_reading() -> None:
    request = _Request(zstd(DATA), (b"content-encoding", b"zstd"))
    assert (await read_body(request, LIMIT)) == DATA  # type: ignore[arg-type]
    refused = _Request(DATA, (b"content-encoding", b"br"))
    with pytest.raises(UnsupportedMediaType):
        await read_body(refused, LIMIT)  # type: ignore[arg-type]
    assert refused.content.reads == 0
