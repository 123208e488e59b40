"""Answers far above the upstream client's high-water mark (2 MiB of content), whole
and streamed, through the real gateway and the official client."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import FakeUpstream, chunk, completion, make_config, sdk, text_stream

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
