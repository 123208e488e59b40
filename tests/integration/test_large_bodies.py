"""Megabyte request bodies end to end, through the official client and both HTTP
servers: vision requests with 1 MiB and 6 MiB image data URLs (streamed and not) reach
the fake upstream byte for byte, and a chat pass-through body of several MiB too."""

from __future__ import annotations

import base64
import random

import openai
import orjson
import pytest

from tests.conftest import FakeUpstream, chunk, make_config, sdk, text_stream

MiB = 1024 * 1024


def data_url(size: int, seed: int) -> str:
    """A data URL of ``size`` bytes of base64 text (an image the size of a photo)."""
    raw = random.Random(seed).randbytes(size * 3 // 4)
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def vision_input(url: str) -> list:
    return [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is in this photo?"},
                {"type": "input_image", "image_url": url, "detail": "high"},
            ],
        }
    ]


def sent_image(upstream: FakeUpstream) -> str:
    parts = upstream.received[-1]["messages"][-1]["content"]
    images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(images) == 1
    return str(images[0])


@pytest.mark.parametrize("size", [1 * MiB, 6 * MiB])
async def test_image_request_non_streaming(
    client: openai.AsyncOpenAI, upstream: FakeUpstream, size: int
) -> None:
    url = data_url(size, size)
    resp = await client.responses.create(model="m1", input=vision_input(url))  # type: ignore[arg-type]
    assert resp.status == "completed" and resp.output_text == "Hello!"
    assert sent_image(upstream) == url
    assert url.encode() in upstream.raw[-1]  # the bytes themselves, not only their value
    assert len(upstream.raw[-1]) > size


@pytest.mark.parametrize("size", [1 * MiB, 6 * MiB])
async def test_image_request_streaming(
    client: openai.AsyncOpenAI, upstream: FakeUpstream, size: int
) -> None:
    upstream.reply = upstream.sse_reply(text_stream("A ", "cat."))
    url = data_url(size, size + 1)
    stream = await client.responses.create(model="m1", input=vision_input(url), stream=True)  # type: ignore[arg-type]
    events = [e async for e in stream]
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "A cat."
    assert sent_image(upstream) == url and upstream.received[-1]["stream"] is True


async def test_a_body_over_the_limit_is_413_in_the_envelope(
    upstream: FakeUpstream, start_gateway: object
) -> None:
    url = await start_gateway(make_config(upstream.url, max_body_bytes=2 * MiB))  # type: ignore[operator]
    async with sdk(url) as c:
        with pytest.raises(openai.APIStatusError) as info:
            await c.responses.create(model="m1", input=vision_input(data_url(3 * MiB, 3)))  # type: ignore[arg-type]
    assert info.value.status_code == 413
    assert info.value.body["code"] == "request_too_large"  # type: ignore[index]
    assert upstream.received == []


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_pass_through_of_a_large_body(
    client: openai.AsyncOpenAI, upstream: FakeUpstream, stream: bool
) -> None:
    """The client's bytes go upstream untouched, several MiB of them."""
    if stream:
        upstream.reply = upstream.sse_reply([chunk({"content": "ok"}, "stop"), b"data: [DONE]\n\n"])
    url = data_url(5 * MiB, 7)
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
    if stream:
        out = await client.chat.completions.create(model="m1", messages=messages, stream=True)  # type: ignore[arg-type]
        pieces = [c.choices[0].delta.content async for c in out if c.choices]
        assert "".join(p or "" for p in pieces) == "ok"
    else:
        done = await client.chat.completions.create(model="m1", messages=messages)  # type: ignore[arg-type]
        assert done.choices[0].message.content == "Hello!"
    sent = orjson.loads(upstream.raw[-1])
    assert sent["messages"] == messages and len(upstream.raw[-1]) > 5 * MiB
