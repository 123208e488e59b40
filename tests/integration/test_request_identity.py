"""Request ids, client API keys and per-key limits, through the official ``openai``
client and raw HTTP, on both HTTP servers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import msgspec
import openai
import orjson
import pytest
from aiohttp import web

from gateway.config import Auth, Config, Idempotency, Limits
from tests.conftest import FakeUpstream, completion, make_config, sdk, text_stream

ALICE, BOB = "sk-alice-0123456789", "sk-bob-9876543210"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


async def raw(url: str, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request as exact bytes; (status, headers lower-cased, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
    writer.write(head + b"Host: x\r\nConnection: close\r\n\r\n" + body)
    data = await reader.read()
    writer.close()
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, rest


def sent(upstream: FakeUpstream) -> dict[str, str]:
    """The headers of the last request the upstream received, names lower-cased."""
    return {k.lower(): v for k, v in upstream.headers[-1].items()}


def keyed(cfg: Config, **more: Any) -> Config:
    return msgspec.structs.replace(cfg, auth=Auth(keys_env="GW_KEYS"), **more)


ENV = {"GW_KEYS": f"{ALICE}, {BOB}"}


# ---- request ids -------------------------------------------------------------------------


async def test_every_answer_has_a_request_id_which_goes_upstream(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    resp = await client.responses.create(model="m1", input="Hi")
    rid = resp._request_id
    assert rid and rid.startswith("req_")
    assert sent(upstream)["x-request-id"] == rid
    again = await client.responses.create(model="m1", input="Hi")
    assert again._request_id != rid
    models = await client.models.with_raw_response.list()
    assert models.headers["x-request-id"].startswith("req_")


async def test_a_clients_request_id_is_kept(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    rid = "trace-" + "x" * 122  # 128 characters
    resp = await client.responses.create(
        model="m1", input="Hi", extra_headers={"X-Request-Id": rid}
    )
    assert resp._request_id == rid and sent(upstream)["x-request-id"] == rid
    chat = await client.chat.completions.with_raw_response.create(
        model="m1",
        messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"X-Request-Id": rid},
    )
    assert chat.headers["x-request-id"] == rid and sent(upstream)["x-request-id"] == rid


@pytest.mark.parametrize(
    "bad", [b"x" * 129, b"caf\xe9", b"a\tb", b""], ids=["long", "latin1", "tab", "empty"]
)
async def test_a_bad_request_id_is_replaced(
    gateway_url: str, upstream: FakeUpstream, bad: bytes
) -> None:
    body = b'{"model":"m1","input":"Hi"}'
    head = b"POST /v1/responses HTTP/1.1\r\nContent-Type: application/json\r\n"
    head += b"Content-Length: %d\r\nX-Request-Id: %s\r\n" % (len(body), bad)
    status, headers, _ = await raw(gateway_url, head, body)
    assert status == 200
    rid = headers["x-request-id"]
    assert rid.startswith("req_") and rid.encode() != bad
    assert sent(upstream)["x-request-id"] == rid


async def test_errors_and_streams_carry_the_request_id(
    client: openai.AsyncOpenAI, upstream: FakeUpstream
) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await client.responses.create(
            model="nope", input="Hi", extra_headers={"X-Request-Id": "r1"}
        )
    assert info.value.request_id == "r1"
    upstream.reply = upstream.json_reply({"error": {"message": "boom"}}, status=500)
    with pytest.raises(openai.APIStatusError) as info2:
        await client.responses.create(model="m1", input="Hi", extra_headers={"X-Request-Id": "r2"})
    assert info2.value.request_id == "r2"
    upstream.reply = upstream.sse_reply(text_stream("a", "b"))
    stream = await client.responses.create(
        model="m1", input="Hi", stream=True, extra_headers={"X-Request-Id": "r3"}
    )
    assert stream.response.headers["x-request-id"] == "r3"
    assert [e.type async for e in stream][-1] == "response.completed"
    assert sent(upstream)["x-request-id"] == "r3"


async def test_the_request_id_is_in_the_log_line(
    client: openai.AsyncOpenAI, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.reply = upstream.sse_reply([b'data: {"id":"x"}\n\n'], then="drop")
    with caplog.at_level(logging.WARNING, logger="gateway"):
        with pytest.raises(openai.APIError):
            stream = await client.chat.completions.create(
                model="m1",
                messages=[{"role": "user", "content": "Hi"}],
                stream=True,
                extra_headers={"X-Request-Id": "trace-77"},
            )
            async for _ in stream:
                pass
        for _ in range(50):
            if caplog.records:
                break
            await asyncio.sleep(0.02)
    assert any("trace-77" in r.getMessage() for r in caplog.records), caplog.records


# ---- client API keys ---------------------------------------------------------------------


async def test_keys_are_required_when_configured(
    upstream: FakeUpstream, start_gateway: Any
) -> None:
    url = await start_gateway(keyed(make_config(upstream.url)), ENV)
    for key in (ALICE, BOB):
        c = sdk(url, key)
        assert (await c.responses.create(model="m1", input="Hi")).output_text == "Hello!"
        await c.close()
    wrong = sdk(url, "sk-mallory")
    for call in (
        wrong.responses.create(model="m1", input="Hi"),
        wrong.models.list(),
        wrong.chat.completions.create(model="m1", messages=[{"role": "user", "content": "x"}]),
    ):
        with pytest.raises(openai.AuthenticationError) as info:
            await call
        assert info.value.code == "invalid_api_key" and info.value.request_id
    await wrong.close()
    status, headers, body = await raw(url, b"GET /v1/models HTTP/1.1\r\n")
    assert status == 401 and headers["x-request-id"]
    assert orjson.loads(body)["error"]["code"] == "invalid_api_key"
    status, _, _ = await raw(url, b"GET /v1/models HTTP/1.1\r\nAuthorization: Basic eDp5\r\n")
    assert status == 401
    assert len(upstream.received) == 2  # refused requests never reach the upstream


async def test_keys_from_a_keys_file(upstream: FakeUpstream, start_gateway: Any) -> None:
    cfg = msgspec.structs.replace(make_config(upstream.url), auth=Auth(keys_file="keys"))
    url = await start_gateway(cfg, keys_text="# team A\nsk-file-1\n\n  sk-file-2  # ops\n")
    for key in ("sk-file-1", "sk-file-2"):
        c = sdk(url, key)
        await c.models.list()
        await c.close()
    c = sdk(url, "# team A")
    with pytest.raises(openai.AuthenticationError):
        await c.models.list()
    await c.close()


async def test_the_clients_authorization_never_goes_upstream(
    upstream: FakeUpstream, start_gateway: Any
) -> None:
    cfg = keyed(make_config(upstream.url, api_key_env="UPSTREAM_KEY"))
    url = await start_gateway(cfg, {**ENV, "UPSTREAM_KEY": "sk-upstream"})
    c = sdk(url, ALICE)
    await c.responses.create(model="m1", input="Hi")
    await c.chat.completions.create(model="m1", messages=[{"role": "user", "content": "Hi"}])
    await c.close()
    for sent in upstream.headers:
        assert sent["Authorization"] == "Bearer sk-upstream"
        assert ALICE not in str(sent)


async def test_no_key_is_ever_logged(
    upstream: FakeUpstream, start_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = keyed(make_config(upstream.url), limits=Limits(requests_per_minute=2))
    with caplog.at_level(logging.DEBUG):
        url = await start_gateway(cfg, ENV)
        c = sdk(url, ALICE)
        await c.responses.create(model="m1", input="Hi", extra_headers={"Idempotency-Key": "k"})
        upstream.reply = upstream.sse_reply([b'data: {"id":"x"}\n\n'], then="drop")
        with pytest.raises(openai.APIError):
            async for _ in await c.chat.completions.create(
                model="m1", messages=[{"role": "user", "content": "Hi"}], stream=True
            ):
                pass
        for _ in range(3):
            with pytest.raises(openai.RateLimitError):
                await c.models.list()
        bad = sdk(url, ALICE[:-1])
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()
        await bad.close()
        await c.close()
        await asyncio.sleep(0.1)
    logged = "\n".join(r.getMessage() + repr(r.args) for r in caplog.records)
    assert caplog.records and "broke" in logged  # something was logged: the check can fail
    for secret in (ALICE, BOB, ALICE[:-1], "sk-alice", "sk-bob"):
        assert secret not in logged


# ---- limits ------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis", "sqlite"])
def counters(request: pytest.FixtureRequest, tmp_path: Any) -> Idempotency:
    if request.param == "memory":
        return Idempotency()
    if request.param == "sqlite":
        return Idempotency(store="sqlite", sqlite_path=str(tmp_path / "store.db"))
    return Idempotency(store="redis", redis_url=request.getfixturevalue("redis_url"))


async def test_requests_per_minute_per_key(
    upstream: FakeUpstream, start_gateway: Any, counters: Idempotency
) -> None:
    cfg = keyed(
        make_config(upstream.url), limits=Limits(requests_per_minute=2), idempotency=counters
    )
    url = await start_gateway(cfg, ENV)
    alice, bob = sdk(url, ALICE), sdk(url, BOB)
    await alice.models.list()
    await alice.models.list()
    with pytest.raises(openai.RateLimitError) as info:
        await alice.responses.create(model="m1", input="Hi")
    err = info.value
    assert err.code == "rate_limit_exceeded" and err.request_id
    h = err.response.headers
    assert 1 <= int(h["retry-after"]) <= 60
    assert h["x-ratelimit-limit-requests"] == "2" and h["x-ratelimit-remaining-requests"] == "0"
    assert h["x-ratelimit-reset-requests"].endswith("s")
    await bob.models.list()  # another key has its own count
    assert upstream.received == []
    await alice.close()
    await bob.close()


async def test_requests_in_flight_per_key(
    upstream: FakeUpstream, start_gateway: Any, counters: Idempotency
) -> None:
    async def slow(request: web.BaseRequest, body: dict) -> web.StreamResponse:
        await asyncio.sleep(0.4)
        return web.json_response(completion())

    upstream.reply = slow
    cfg = keyed(make_config(upstream.url), limits=Limits(max_in_flight=1), idempotency=counters)
    url = await start_gateway(cfg, ENV)
    alice, bob = sdk(url, ALICE), sdk(url, BOB)
    first = asyncio.ensure_future(alice.responses.create(model="m1", input="Hi"))
    await asyncio.sleep(0.15)
    with pytest.raises(openai.RateLimitError) as info:
        await alice.responses.create(model="m1", input="Hi")
    assert info.value.response.headers["retry-after"] == "1"
    await bob.responses.create(model="m1", input="Hi")  # bob's slot is his own
    await first
    await alice.responses.create(model="m1", input="Hi")  # the slot came back
    await alice.close()
    await bob.close()


async def test_a_keyed_run_whose_client_left_holds_its_slots_until_it_ends(
    upstream: FakeUpstream, start_gateway: Any
) -> None:
    """A client with an Idempotency-Key hangs up mid-run: the run goes on (its retry will
    replay it), and so it keeps its per-key slot and counts as in flight (the drain waits
    for it) until the upstream work ends, on both servers. On aiohttp's server the slot
    and the count went back at once while the shielded run went on."""

    async def slow(request: web.BaseRequest, body: dict) -> web.StreamResponse:
        await asyncio.sleep(1.0)
        return web.json_response(completion("done"))

    upstream.reply = slow
    cfg = keyed(make_config(upstream.url), limits=Limits(max_in_flight=1))
    url = await start_gateway(cfg, ENV)
    alice = sdk(url, ALICE)
    impatient = alice.with_options(timeout=0.2, max_retries=0)
    with pytest.raises(openai.APITimeoutError):
        await impatient.responses.create(
            model="m1", input="Hi", extra_headers={"Idempotency-Key": "k-1"}
        )
    await asyncio.sleep(0.1)
    with pytest.raises(openai.RateLimitError):  # the run still holds alice's one slot
        await alice.responses.create(model="m1", input="Hi")
    async with aiohttp.ClientSession() as s:
        async with s.get(url.removesuffix("/v1") + "/healthz") as r:
            assert (await r.json())["in_flight"] == 1  # (what the drain waits for)
    await asyncio.sleep(1.0)  # the run ends
    async with aiohttp.ClientSession() as s:
        async with s.get(url.removesuffix("/v1") + "/healthz") as r:
            assert (await r.json())["in_flight"] == 0
    again = await alice.responses.with_raw_response.create(
        model="m1", input="Hi", extra_headers={"Idempotency-Key": "k-1"}
    )
    assert again.headers["idempotent-replayed"] == "true"
    assert (await alice.responses.create(model="m1", input="Hi")).output_text == "done"
    await alice.close()


async def test_limits_without_keys_count_everyone_together(
    upstream: FakeUpstream, start_gateway: Any
) -> None:
    cfg = msgspec.structs.replace(make_config(upstream.url), limits=Limits(requests_per_minute=1))
    c = sdk(await start_gateway(cfg))
    await c.models.list()
    with pytest.raises(openai.RateLimitError):
        await c.models.list()
    await c.close()
