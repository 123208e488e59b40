"""``/v1/chat/completions`` goes upstream untouched (but for the model alias)."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import orjson

from tests.conftest import DONE, FakeUpstream, chunk, completion, make_config, sdk, usage_chunk


async def test_body_and_answer_unchanged(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    answer = completion("passed through")
    answer["vendor_extra"] = {"x": 1}
    upstream.reply = upstream.json_reply(answer)
    raw = await client.chat.completions.with_raw_response.create(
        model="m1",
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.3,
        extra_body={"top_k": 5, "chat_template_kwargs": {"x": True}},
    )
    assert orjson.loads(raw.http_response.content) == answer
    assert upstream.received[-1] == {
        "model": "m1",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.3,
        "top_k": 5,
        "chat_template_kwargs": {"x": True},
    }


async def test_alias_rewritten(upstream: FakeUpstream, start_gateway: Any) -> None:
    url = await start_gateway(make_config(upstream.url, models=("alias",), upstream_model="real"))
    async with sdk(url) as c:
        resp = await c.chat.completions.create(
            model="alias", messages=[{"role": "user", "content": "x"}]
        )
    assert resp.choices[0].message.content == "Hello!"
    assert upstream.received[-1]["model"] == "real"


async def test_stream_bytes_forwarded(gateway_url: str, upstream: FakeUpstream) -> None:
    events = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "a"}),
        b": a comment the client should see too\n\n",
        chunk({"content": "b\u00e9"}),
        chunk({}, "stop"),
        usage_chunk(),
        DONE,
    ]
    upstream.reply = upstream.sse_reply(events, delay=0.01)
    body = {"model": "m1", "messages": [{"role": "user", "content": "x"}], "stream": True}
    async with aiohttp.ClientSession() as s:
        async with s.post(gateway_url + "/chat/completions", json=body) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/event-stream")
            got = await r.read()
    assert got == b"".join(events)


async def test_stream_through_sdk(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    events = [chunk({"content": "x"}), chunk({"content": "y"}), chunk({}, "stop"), DONE]
    upstream.reply = upstream.sse_reply(events)
    stream = await client.chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "x"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "xy"


async def test_upstream_error_normalised(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.reply = upstream.json_reply(
        {"error": {"message": "bad", "type": "x", "code": None}}, 400
    )
    try:
        await client.chat.completions.create(
            model="m1", messages=[{"role": "user", "content": "x"}]
        )
    except openai.BadRequestError as exc:
        assert exc.message.endswith("bad")
    else:
        raise AssertionError("expected a 400")


async def test_upstream_drop_mid_stream_is_not_a_clean_end(
    gateway_url: str, upstream: FakeUpstream
) -> None:
    upstream.reply = upstream.sse_reply([chunk({"content": "a"})], then="drop")
    body = {"model": "m1", "messages": [{"role": "user", "content": "x"}], "stream": True}
    async with aiohttp.ClientSession() as s:
        async with s.post(gateway_url + "/chat/completions", json=body) as r:
            assert r.status == 200
            try:
                await r.read()
            except aiohttp.ClientPayloadError:
                return
    raise AssertionError("a broken upstream stream must not end cleanly")
