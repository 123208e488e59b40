"""Compressed request bodies (Content-Encoding: zstd, gzip, deflate), through raw HTTP on
both servers: a Codex-sized history and a 5 MB image reach the fake upstream whole and
decoded, the chat pass-through forwards the decoded JSON, a decompression bomb is 413
with nothing sent upstream, a malformed body is 400, an unknown coding 415, and an
Idempotency-Key retry of the same body compressed another way is replayed.

The body is decoded once, by the gateway: unless told not to (``auto_decompress``),
aiohttp's server inflates gzip and deflate request bodies itself and refuses zstd ones
(it decodes zstd only with ``backports.zstd``); then all but 3 tests here fail on it."""

from __future__ import annotations

import base64
import functools
import gzip
import io
import random
import zlib
from typing import Any

import aiohttp
import orjson
import pytest
import zstandard

from tests.conftest import FakeUpstream, make_config

MiB = 1024 * 1024


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


def deflate(data: bytes) -> bytes:
    return zlib.compress(data)  # zlib-wrapped: HTTP's deflate


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


COMPRESS = {"zstd": zstd, "gzip": gzip.compress, "deflate": deflate}
CODINGS = list(COMPRESS)


def codex_history(turns: int, seed: int) -> list[dict]:
    """A Codex-shaped conversation: user turns, assistant messages, and shell calls with
    their outputs (each a few KiB, as a real session's command output is)."""
    rnd = random.Random(seed)
    words = ["fn", "let", "mut", "impl", "return", "self", "cargo", "test", "src/main.rs", "ok"]
    items: list[dict] = []
    for n in range(turns):
        items.append(
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": f"Step {n}: fix the next test."}],
            }
        )
        call_id = f"call_{n}"
        items.append(
            {
                "type": "function_call",
                "call_id": call_id,
                "name": "shell",
                "arguments": orjson.dumps({"command": ["cargo", "test", f"t{n}"]}).decode(),
            }
        )
        output = "\n".join(" ".join(rnd.choices(words, k=12)) for _ in range(60))
        items.append({"type": "function_call_output", "call_id": call_id, "output": output})
        items.append(
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": f"Test t{n} passes now."}],
            }
        )
    items.append(
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Now commit it, please."}],
        }
    )
    return items


async def post(url: str, body: bytes, coding: str | None, **headers: str) -> tuple[int, Any]:
    if coding is not None:
        headers["Content-Encoding"] = coding
    headers["Content-Type"] = "application/json"
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.post(url, data=io.BytesIO(body), headers=headers) as resp:
            return resp.status, orjson.loads(await resp.read())


@pytest.fixture
async def gw(upstream: FakeUpstream, start_gateway: Any) -> str:
    return str(await start_gateway(make_config(upstream.url, supports={"images": True})))


@pytest.mark.parametrize("coding", CODINGS)
async def test_a_codex_sized_history_reaches_the_upstream_whole(
    gw: str, upstream: FakeUpstream, coding: str
) -> None:
    items = codex_history(260, seed=1)
    raw = orjson.dumps({"model": "m1", "input": items, "stream": False})
    assert len(raw) > MiB  # the size of a long Codex session
    status, doc = await post(f"{gw}/responses", COMPRESS[coding](raw), coding)
    assert status == 200 and doc["status"] == "completed"
    sent = upstream.received[-1]["messages"]
    # Each user and assistant message, each call (one assistant message with its
    # tool call) and each output (a tool message): all of them, in order.
    assert len(sent) == len(items)
    assert sent[-1] == {"role": "user", "content": "Now commit it, please."}
    assert sent[-2] == {"role": "assistant", "content": "Test t259 passes now."}
    assert sent[-3]["role"] == "tool" and sent[-3]["content"] == items[-3]["output"]
    assert sent[-4]["tool_calls"][0]["id"] == "call_259"


@pytest.mark.parametrize("coding", CODINGS)
async def test_a_5_mb_image_reaches_the_upstream_unchanged(
    gw: str, upstream: FakeUpstream, coding: str
) -> None:
    image = random.Random(5).randbytes(5 * MiB * 3 // 4)
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    parts = [
        {"type": "input_text", "text": "What is in this photo?"},
        {"type": "input_image", "image_url": url, "detail": "high"},
    ]
    raw = orjson.dumps({"model": "m1", "input": [{"role": "user", "content": parts}]})
    status, _ = await post(f"{gw}/responses", COMPRESS[coding](raw), coding)
    assert status == 200
    content = upstream.received[-1]["messages"][-1]["content"]
    assert [p["image_url"]["url"] for p in content if p["type"] == "image_url"] == [url]


async def test_raw_deflate_is_taken_as_deflate(gw: str, upstream: FakeUpstream) -> None:
    raw = orjson.dumps({"model": "m1", "input": "Hi there"})
    status, _ = await post(f"{gw}/responses", raw_deflate(raw), "deflate")
    assert status == 200
    assert upstream.received[-1]["messages"] == [{"role": "user", "content": "Hi there"}]


async def test_a_list_of_codings_is_undone_last_first(gw: str, upstream: FakeUpstream) -> None:
    raw = orjson.dumps({"model": "m1", "input": "Layered"})
    status, _ = await post(f"{gw}/responses", zstd(gzip.compress(raw)), "gzip, zstd")
    assert status == 200
    assert upstream.received[-1]["messages"] == [{"role": "user", "content": "Layered"}]


@pytest.mark.parametrize("coding", ["zstd", "gzip"])
async def test_the_chat_pass_through_forwards_the_decoded_body(
    gw: str, upstream: FakeUpstream, coding: str
) -> None:
    doc = {"model": "m1", "messages": [{"role": "user", "content": "x" * 300_000}]}
    raw = orjson.dumps(doc)
    status, answer = await post(f"{gw}/chat/completions", COMPRESS[coding](raw), coding)
    assert status == 200 and answer["choices"][0]["message"]["content"] == "Hello!"
    assert upstream.raw[-1] == raw  # the client's JSON, byte for byte
    assert "content-encoding" not in {k.lower() for k in upstream.headers[-1]}


@functools.cache
def bomb(coding: str) -> bytes:
    """100 MiB of JSON (whitespace inside a valid request, were it decoded) compressed."""
    inner = b" " * (100 * MiB)
    return COMPRESS[coding](b'{"model": "m1", "input": "Hi"' + inner + b"}")


@pytest.mark.parametrize("coding", ["zstd", "gzip"])
async def test_a_decompression_bomb_is_413_and_nothing_goes_upstream(
    upstream: FakeUpstream, start_gateway: Any, coding: str
) -> None:
    url = await start_gateway(make_config(upstream.url, max_body_bytes=1 * MiB))
    body = bomb(coding)
    assert len(body) < MiB  # under the limit as sent
    status, doc = await post(f"{url}/responses", body, coding)
    assert status == 413
    assert doc["error"]["code"] == "request_too_large"
    assert doc["error"]["type"] == "invalid_request_error"
    assert upstream.received == []


async def test_a_decoded_body_over_its_deployments_limit_is_413(
    upstream: FakeUpstream, start_gateway: Any
) -> None:
    """The deployment's own limit applies to the decoded body (the server bounds the
    decoding by the largest limit of all deployments)."""
    cfg = make_config(upstream.url, max_body_bytes=1 * MiB)
    url = await start_gateway(cfg)
    raw = orjson.dumps({"model": "m1", "input": "y" * (2 * MiB)})
    status, doc = await post(f"{url}/responses", zstd(raw), "zstd")
    assert status == 413 and doc["error"]["code"] == "request_too_large"
    assert upstream.received == []


@pytest.mark.parametrize("coding", CODINGS)
async def test_a_malformed_body_is_400(gw: str, upstream: FakeUpstream, coding: str) -> None:
    status, doc = await post(f"{gw}/responses", b"this is not compressed at all", coding)
    assert status == 400
    assert doc["error"]["message"] == f"The request body is not valid {coding} data."
    assert doc["error"]["type"] == "invalid_request_error"
    assert upstream.received == []


@pytest.mark.parametrize("coding", CODINGS)
async def test_a_truncated_body_is_400(gw: str, upstream: FakeUpstream, coding: str) -> None:
    raw = orjson.dumps({"model": "m1", "input": "z" * 10_000})
    body = COMPRESS[coding](raw)[:-6]
    status, doc = await post(f"{gw}/responses", body, coding)
    assert status == 400
    assert doc["error"]["message"] == f"The request body ends before the end of its {coding} data."
    assert upstream.received == []


async def test_an_unknown_coding_is_415(gw: str, upstream: FakeUpstream) -> None:
    raw = orjson.dumps({"model": "m1", "input": "Hi"})
    status, doc = await post(f"{gw}/responses", raw, "br")
    assert status == 415
    assert doc["error"]["code"] == "unsupported_content_encoding"
    assert doc["error"]["type"] == "invalid_request_error"
    assert "'br'" in doc["error"]["message"]
    assert upstream.received == []


async def test_identity_is_the_body_as_is(gw: str, upstream: FakeUpstream) -> None:
    raw = orjson.dumps({"model": "m1", "input": "Plain"})
    status, _ = await post(f"{gw}/responses", raw, "identity")
    assert status == 200
    assert upstream.received[-1]["messages"] == [{"role": "user", "content": "Plain"}]


async def test_a_retry_compressed_another_way_is_replayed(gw: str, upstream: FakeUpstream) -> None:
    """The Idempotency-Key's fingerprint is of the decoded body: the same request sent
    again in another coding is the same request, replayed without a second call."""
    raw = orjson.dumps({"model": "m1", "input": "Once only"})
    key = {"Idempotency-Key": "compressed-1"}
    first = await post(f"{gw}/responses", zstd(raw), "zstd", **key)
    again = await post(f"{gw}/responses", gzip.compress(raw), "gzip", **key)
    plain = await post(f"{gw}/responses", raw, None, **key)
    assert first[0] == again[0] == plain[0] == 200
    assert first[1] == again[1] == plain[1]
    assert len(upstream.received) == 1
    other = orjson.dumps({"model": "m1", "input": "Something else"})
    status, doc = await post(f"{gw}/responses", zstd(other), "zstd", **key)
    assert status == 422 and doc["error"]["code"] == "idempotency_key_reused"
