"""Answers far above the upstream client's high-water mark (2 MiB of content), whole
and streamed, through the real gateway and the official client."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.conftest import (
    FakeUpstream,
    chunk,
    completion,
    make_config,
    read_request,
    sdk,
    text_stream,
)

# 2 MiB of text, not one repeated pattern (a lost or doubled piece shows), in 512 pieces.
PIECES = [f"<{i:04d}>" + ("lorem ipsum dolor sit amet " * 152)[:4089] + "\n" for i in range(512)]
CONTENT = "".join(PIECES)
assert len(CONTENT) == 2 * 1024 * 1024
MESSAGES = [{"role": "user", "content": "Write a lot."}]


@pytest.fixture
async def big_url(upstream: FakeUpstream, start_gateway: Any) -> str:
    # A stall would wait out the read timeout (a 504): keep it short.
    return await start_gateway(make_config(upstream.url, read_timeout=5.0))


async def test_two_mib_answer_whole(upstream: FakeUpstream, big_url: str) -> None:
    upstream.reply = upstream.json_reply(completion(CONTENT))
    async with sdk(big_url) as client:
        resp = await client.responses.create(model="m1", input="Write a lot.")
        assert resp.status == "completed"
        assert resp.output_text == CONTENT
        chat = await client.chat.completions.create(model="m1", messages=MESSAGES)  # type: ignore[arg-type]
        assert chat.choices[0].message.content == CONTENT


async def test_two_mib_answer_streamed(upstream: FakeUpstream, big_url: str) -> None:
    upstream.reply = upstream.sse_reply(text_stream(*PIECES))
    async with sdk(big_url) as client:
        deltas = []
        stream = await client.responses.create(model="m1", input="Write a lot.", stream=True)
        async for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            elif event.type == "response.completed":
                final = event.response
        assert "".join(deltas) == CONTENT
        assert final.status == "completed" and final.output_text == CONTENT
        pieces = []
        chat = await client.chat.completions.create(model="m1", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        async for c in chat:
            if c.choices and c.choices[0].delta.content:
                pieces.append(c.choices[0].delta.content)
        assert "".join(pieces) == CONTENT


async def test_two_mib_in_one_upstream_event(upstream: FakeUpstream, big_url: str) -> None:
    """One chunk carrying the whole answer: a single SSE event of 2 MiB."""
    upstream.reply = upstream.sse_reply(
        [chunk({"role": "assistant", "content": CONTENT}), chunk({}, "stop"), b"data: [DONE]\n\n"]
    )
    async with sdk(big_url) as client:
        async with client.responses.stream(model="m1", input="Write a lot.") as s:
            resp = await s.get_final_response()
        assert resp.output_text == CONTENT


async def flood_upstream(status: int, total: int, sent: list[int]) -> asyncio.Server:
    """A raw upstream that answers ``status`` with a JSON body of ``total`` bytes
    (Content-Length), written 64 KiB at a time; ``sent`` gets what it wrote before the
    gateway closed the connection."""
    piece = b" " * 65536

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{"
            % (status, total)
        )
        done = 1
        try:
            while done < total:
                writer.write(piece)
                await writer.drain()
                done += len(piece)
        except ConnectionError:
            pass
        sent.append(done)
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/responses", 200, "max-answer-bytes"),
        ("/chat/completions", 200, "max-answer-bytes"),
        ("/responses", 400, "error body"),
    ],
)
async def test_an_answer_over_the_cap_is_502_and_its_read_stops(
    start_gateway: Any, path: str, status: int, says: str
) -> None:
    """A non-streamed answer (or an error answer) larger than the gateway reads: a 502
    naming the limit, and the upstream's connection is closed near the cap, not after
    the whole 256 MiB (what the gateway held is bounded by it)."""
    sent: list[int] = []
    raw = await flood_upstream(status, 256 * 1024 * 1024, sent)
    try:
        port = raw.sockets[0].getsockname()[1]
        cfg = make_config(f"http://127.0.0.1:{port}/v1", max_answer_bytes=1024 * 1024)
        url = await start_gateway(cfg)
        if path == "/responses":
            body: dict = {"model": "m1", "input": "x"}
        else:
            body = {"model": "m1", "messages": MESSAGES}
        async with aiohttp.ClientSession() as s:
            async with s.post(url + path, json=body) as r:
                assert r.status == 502
                doc = await r.json()
        assert doc["error"]["type"] == "server_error" and says in doc["error"]["message"]
        for _ in range(100):
            if sent:
                break
            await asyncio.sleep(0.05)
        assert sent and sent[0] < 64 * 1024 * 1024, sent
    finally:
        raw.close()
