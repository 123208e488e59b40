"""Idempotency-Key through the official ``openai`` client, against the in-memory store
and a real redis-server: a retry replays without a second upstream call, duplicates in
flight make one call, a changed body is 422, failures are retried for real, keys never
cross client API keys, streams are never replayed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import openai
import pytest
from aiohttp import web

from gateway.config import Auth, Config, Idempotency
from tests.conftest import FakeUpstream, completion, make_config, sdk, text_stream

KEY = {"Idempotency-Key": "order-42"}


@pytest.fixture(params=["memory", "redis", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Idempotency:
    """Each test runs on every store (SQLite: the one the workers of a host share)."""
    if request.param == "memory":
        return Idempotency()
    if request.param == "sqlite":
        return Idempotency(store="sqlite", sqlite_path=str(tmp_path / "store.db"))
    url = request.getfixturevalue("redis_url")
    return Idempotency(store="redis", redis_url=url)


def with_store(cfg: Config, store: Idempotency, **more: Any) -> Config:
    return msgspec.structs.replace(cfg, idempotency=store, **more)


@pytest.fixture
async def gw(upstream: FakeUpstream, start_gateway: Any, store: Idempotency) -> Any:
    url = await start_gateway(with_store(make_config(upstream.url), store))
    c = sdk(url)
    yield c
    await c.close()


def slow(doc: dict, delay: float, status: int = 200) -> Any:
    async def reply(request: web.BaseRequest, body: dict) -> web.StreamResponse:
        await asyncio.sleep(delay)
        return web.json_response(doc, status=status)

    return reply


async def create(client: openai.AsyncOpenAI, headers: dict | None = None, **body: Any) -> Any:
    body.setdefault("model", "m1")
    body.setdefault("input", "Hi")
    return await client.responses.with_raw_response.create(extra_headers=headers or KEY, **body)


async def test_a_retry_after_success_replays_without_a_second_upstream_call(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    first = await create(gw)
    again = await create(gw)
    assert len(upstream.received) == 1
    assert again.http_response.status_code == first.http_response.status_code == 200
    assert again.http_response.content == first.http_response.content  # byte for byte
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["content-type"] == "application/json"
    assert again.parse().output_text == "Hello!"
    # Each answer has its own request id; the replay is not the first request.
    assert again.headers["x-request-id"] != first.headers["x-request-id"]


async def test_without_a_key_every_request_runs(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    await gw.responses.create(model="m1", input="Hi")
    await gw.responses.create(model="m1", input="Hi")
    assert len(upstream.received) == 2


async def test_concurrent_duplicates_make_one_upstream_call(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.reply = slow(completion("once"), 0.3)
    answers = await asyncio.gather(*[create(gw) for _ in range(5)])
    assert len(upstream.received) == 1
    bodies = {a.http_response.content for a in answers}
    assert (
        len(bodies) == 1 and json.loads(bodies.pop())["output"][0]["content"][0]["text"] == "once"
    )
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 4


async def test_a_run_longer_than_the_lock_keeps_its_key(
    upstream: FakeUpstream, start_gateway: Any, store: Idempotency
) -> None:
    # A 0.3 s lock renewed every 0.1 s: a duplicate sent after 0.6 s still finds the
    # first run holding the key (without renewal it would run a second time).
    store = msgspec.structs.replace(store, lock_ttl=0.3)
    url = await start_gateway(with_store(make_config(upstream.url), store))
    upstream.reply = slow(completion("long"), 1.0)
    async with sdk(url) as client:
        first = asyncio.ensure_future(create(client))
        await asyncio.sleep(0.6)
        second = await create(client)
        assert (await first).http_response.content == second.http_response.content
    assert second.headers["idempotent-replayed"] == "true"
    assert len(upstream.received) == 1


async def test_a_client_that_gives_up_leaves_its_run_going_and_its_retry_replays(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.reply = slow(completion("finished anyway"), 0.5)
    impatient = gw.with_options(timeout=0.1, max_retries=0)
    with pytest.raises(openai.APITimeoutError):  # the client hangs up mid-run
        await create(impatient)
    await asyncio.sleep(0.7)  # the run went on to its end without a client
    again = await create(gw)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.parse().output_text == "finished anyway"
    assert len(upstream.received) == 1


async def test_the_same_key_with_another_body_is_422(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    await create(gw)
    with pytest.raises(openai.UnprocessableEntityError) as info:
        await create(gw, input="Something else")
    assert info.value.code == "idempotency_key_reused"
    assert info.value.body["param"] == "Idempotency-Key"  # type: ignore[index]
    assert len(upstream.received) == 1


async def test_megabyte_bodies_both_ways_replay_and_a_changed_byte_is_422(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    """At vision sizes: a 1.5 MB image in the request and a 1 MB answer. The retry is
    replayed byte for byte; the same request with one byte of the image changed, at
    its very end, is another request (422), for both stores' fingerprints."""
    image = "data:image/png;base64," + "A" * 1_500_000
    upstream.reply = slow(completion("x" * 1_000_000), 0.0)

    def message(url: str) -> list[dict]:
        parts = [{"type": "input_text", "text": "What is this?"}]
        return [{"role": "user", "content": [*parts, {"type": "input_image", "image_url": url}]}]

    first = await create(gw, input=message(image))
    again = await create(gw, input=message(image))
    assert len(upstream.received) == 1
    assert len(first.http_response.content) > 1_000_000
    assert again.http_response.content == first.http_response.content
    assert again.headers["idempotent-replayed"] == "true"
    with pytest.raises(openai.UnprocessableEntityError) as info:
        await create(gw, input=message(image[:-1] + "B"))
    assert info.value.code == "idempotency_key_reused"
    assert len(upstream.received) == 1


async def test_a_duplicate_in_flight_with_another_body_is_422(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.reply = slow(completion(), 0.3)
    first = asyncio.ensure_future(create(gw))
    await asyncio.sleep(0.1)
    with pytest.raises(openai.UnprocessableEntityError):
        await create(gw, input="Something else")
    assert (await first).http_response.status_code == 200


async def test_a_failed_attempt_is_retried_for_real(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.reply = upstream.json_reply({"error": {"message": "boom"}}, status=500)
    with pytest.raises(openai.APIStatusError) as info:
        await create(gw)
    assert info.value.status_code == 502
    upstream.reply = upstream.json_reply(completion("second try"))
    ok = await create(gw)
    assert ok.parse().output_text == "second try" and "idempotent-replayed" not in ok.headers
    assert (await create(gw)).headers["idempotent-replayed"] == "true"
    assert len(upstream.received) == 2


async def test_an_unreachable_upstream_is_not_stored(
    upstream: FakeUpstream, start_gateway: Any, store: Idempotency
) -> None:
    url = await start_gateway(with_store(make_config("http://127.0.0.1:9/v1"), store))
    c = sdk(url)
    for _ in range(2):  # both run (and fail): nothing was kept
        with pytest.raises(openai.APIStatusError) as info:
            await c.responses.create(model="m1", input="Hi", extra_headers=KEY)
        assert info.value.status_code == 502
        assert info.value.response.headers.get("idempotent-replayed") is None
    await c.close()


async def test_a_4xx_answer_is_stored(gw: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    upstream.reply = upstream.json_reply(
        {"error": {"message": "context too long", "code": "too_long"}}, status=400
    )
    errors = []
    for _ in range(2):
        with pytest.raises(openai.BadRequestError) as info:
            await create(gw)
        errors.append(info.value.response)
    assert len(upstream.received) == 1
    assert errors[1].headers["idempotent-replayed"] == "true"
    assert errors[0].content == errors[1].content


@pytest.mark.parametrize(
    ("status", "retry_after"), [(429, "7"), (409, None), (408, None), (401, None), (403, None)]
)
async def test_an_answer_a_retry_may_not_get_is_not_stored(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream, status: int, retry_after: str | None
) -> None:
    """A rate limit, a conflict or a timeout may pass on the next try, and an upstream's
    401/403 is about the deployment's key: each retry reaches the upstream again."""
    headers = {"Retry-After": retry_after} if retry_after else None
    doc = {"error": {"message": f"upstream said {status}", "type": "x"}}

    async def reply(request: web.BaseRequest, body: dict) -> web.StreamResponse:
        return web.json_response(doc, status=status, headers=headers)

    upstream.reply = reply
    for _ in range(2):
        with pytest.raises(openai.APIStatusError) as info:
            await create(gw)
        assert info.value.response.headers.get("idempotent-replayed") is None
        if retry_after:
            assert info.value.response.headers["retry-after"] == retry_after
    assert len(upstream.received) == 2
    upstream.reply = upstream.json_reply(completion("now it works"))
    ok = await create(gw)
    assert ok.parse().output_text == "now it works" and "idempotent-replayed" not in ok.headers
    assert len(upstream.received) == 3


async def test_a_stream_with_a_key_is_never_replayed(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    upstream.reply = upstream.sse_reply(text_stream("Hel", "lo"))
    for _ in range(2):
        stream = await gw.responses.create(model="m1", input="Hi", stream=True, extra_headers=KEY)
        kinds = [event.type async for event in stream]
        assert kinds[-1] == "response.completed"
        assert stream.response.headers.get("idempotent-replayed") is None
    assert len(upstream.received) == 2
    # The key is still free for a non-streaming request, which then runs.
    upstream.reply = upstream.json_reply(completion())
    await create(gw)
    assert len(upstream.received) == 3


async def test_chat_completions_replay(gw: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    answers = [
        await gw.chat.completions.with_raw_response.create(
            model="m1", messages=[{"role": "user", "content": "Hi"}], extra_headers=KEY
        )
        for _ in range(2)
    ]
    assert len(upstream.received) == 1
    assert answers[0].http_response.content == answers[1].http_response.content
    assert answers[1].headers["idempotent-replayed"] == "true"
    assert answers[1].parse().choices[0].message.content == "Hello!"
    # The same key on the other route is another request: 422, not a replay.
    with pytest.raises(openai.UnprocessableEntityError):
        await create(gw)


async def test_a_key_over_255_characters_is_400(
    gw: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await create(gw, headers={"Idempotency-Key": "k" * 256})
    assert info.value.code == "invalid_idempotency_key"
    assert upstream.received == []
    await create(gw, headers={"Idempotency-Key": "k" * 255})
    assert len(upstream.received) == 1


async def test_keys_never_cross_client_api_keys(
    upstream: FakeUpstream, start_gateway: Any, store: Idempotency
) -> None:
    cfg = with_store(make_config(upstream.url), store, auth=Auth(keys_env="KEYS"))
    url = await start_gateway(cfg, {"KEYS": "sk-alice,sk-bob"})
    alice, bob = sdk(url, "sk-alice"), sdk(url, "sk-bob")
    upstream.reply = upstream.json_reply(completion("for alice"))
    assert (await create(alice)).parse().output_text == "for alice"
    upstream.reply = upstream.json_reply(completion("for bob"))
    answer = await create(bob)
    assert answer.parse().output_text == "for bob" and "idempotent-replayed" not in answer.headers
    assert (await create(alice)).parse().output_text == "for alice"  # alice's own replay
    assert len(upstream.received) == 2
    await alice.close()
    await bob.close()


async def test_turned_off_the_header_is_ignored(upstream: FakeUpstream, start_gateway: Any) -> None:
    cfg = with_store(make_config(upstream.url), Idempotency(enabled=False))
    c = sdk(await start_gateway(cfg))
    await create(c)
    answer = await create(c, input="another body, same key")
    assert "idempotent-replayed" not in answer.headers
    assert len(upstream.received) == 2
    await c.close()
