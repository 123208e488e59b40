"""The Redis store across processes: two ``python -m gateway serve`` processes share one
redis-server (a retry sent to the second replays the first's answer; a duplicate waits
across processes), and Redis going away mid-test (503 for requests with a key, the
others served)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import openai
import pytest
from aiohttp import web

from gateway.config import Idempotency, Limits
from gateway.core import idempotency as idem
from gateway.errors import IdempotencyKeyReused
from gateway.stores.redis import RedisStore
from tests.conftest import FakeUpstream, RedisServer, completion, make_config, sdk

KEY = {"Idempotency-Key": "retry-me"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def answers(port: int) -> bool:
    """Whether a gateway listens on ``port`` and answers HTTP."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.write(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    try:
        return (await reader.read()).startswith(b"HTTP/1.1 ")
    except OSError:
        return False
    finally:
        writer.close()


SHARED_SEAL_KEY = "c2VhbC1rZXktb2YtdGhlLWRlcGxveW1lbnQtMzItYnk="  # (32 bytes)


@asynccontextmanager
async def gateway_process(*args: str) -> AsyncIterator[str]:
    """A real gateway process: ``python -m gateway serve ARGS --port P``; its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += [*args, "--log-level", "WARNING"]
    # The processes of one deployment hold one seal key (README): the tenant names its
    # client keys get, which scope records and limits in Redis, are keyed with it.
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "GATEWAY_SEAL_KEY": SHARED_SEAL_KEY}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "exited")
            if await answers(port):
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("the gateway process did not start")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def serving(upstream: FakeUpstream, redis_url: str) -> list[str]:
    return ["--upstream", upstream.url, "--model", "m1", "--redis", redis_url]


async def test_a_retry_on_another_process_replays(upstream: FakeUpstream, redis_url: str) -> None:
    upstream.reply = upstream.json_reply(completion("made once"))
    async with (
        gateway_process(*serving(upstream, redis_url)) as one,
        gateway_process(*serving(upstream, redis_url)) as two,
    ):
        first, second = sdk(one), sdk(two)
        a = await first.responses.with_raw_response.create(
            model="m1", input="Hi", extra_headers=KEY
        )
        b = await second.responses.with_raw_response.create(
            model="m1", input="Hi", extra_headers=KEY
        )
        assert a.parse().output_text == "made once"
        assert b.http_response.content == a.http_response.content
        assert b.headers["idempotent-replayed"] == "true"
        assert len(upstream.received) == 1
        with pytest.raises(openai.UnprocessableEntityError):
            await second.responses.create(model="m1", input="Other", extra_headers=KEY)
        await first.close()
        await second.close()


async def test_a_duplicate_waits_for_a_holder_in_another_process(
    upstream: FakeUpstream, redis_url: str
) -> None:
    async def slow(request: web.BaseRequest, body: dict) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        return web.json_response(completion("slow once"))

    upstream.reply = slow
    async with (
        gateway_process(*serving(upstream, redis_url)) as one,
        gateway_process(*serving(upstream, redis_url)) as two,
    ):
        clients = [sdk(one), sdk(two)]
        calls = [
            clients[i % 2].responses.with_raw_response.create(
                model="m1", input="Hi", extra_headers=KEY
            )
            for i in range(4)
        ]
        answers = await asyncio.gather(*calls)
        assert len(upstream.received) == 1
        assert len({a.http_response.content for a in answers}) == 1
        for c in clients:
            await c.close()


async def test_limits_count_across_processes(
    upstream: FakeUpstream, redis_url: str, tmp_path: Any
) -> None:
    conf = tmp_path / "gw.toml"
    conf.write_text(
        f'[[deployment]]\nmodels = ["m1"]\nupstream = "{upstream.url}"\n'
        "[limits]\nrequests-per-minute = 2\n"
    )
    keys = tmp_path / "keys"
    keys.write_text("sk-one\n")
    args = ["--config", str(conf), "--redis", redis_url, "--api-keys-file", str(keys)]
    async with gateway_process(*args) as one, gateway_process(*args) as two:
        a, b = sdk(one, "sk-one"), sdk(two, "sk-one")
        stranger = sdk(one, "sk-two")
        with pytest.raises(openai.AuthenticationError):
            await stranger.models.list()
        await stranger.close()
        await a.models.list()
        await b.models.list()
        with pytest.raises(openai.RateLimitError):  # the 3rd of the key: across both
            await a.models.list()
        await a.close()
        await b.close()


async def test_redis_going_away(
    upstream: FakeUpstream, start_gateway: Any, own_redis: RedisServer
) -> None:
    cfg = msgspec.structs.replace(
        make_config(upstream.url),
        idempotency=Idempotency(store="redis", redis_url=own_redis.url),
        limits=Limits(requests_per_minute=1000),
    )
    c = sdk(await start_gateway(cfg))
    await c.responses.create(model="m1", input="Hi", extra_headers=KEY)
    own_redis.stop()
    with pytest.raises(openai.APIStatusError) as info:
        await c.responses.create(model="m1", input="Hi", extra_headers={"Idempotency-Key": "new"})
    assert info.value.status_code == 503
    assert info.value.code == "idempotency_store_unavailable"
    assert "Redis" in info.value.message
    # Without a key: served (the limits count in the process meanwhile).
    assert (await c.responses.create(model="m1", input="Hi")).output_text == "Hello!"
    chat = await c.chat.completions.create(model="m1", messages=[{"role": "user", "content": "x"}])
    assert chat.choices[0].message.content == "Hello!"
    own_redis.start()  # back (empty: no persistence): keys work again
    for _ in range(50):
        try:
            await c.responses.create(
                model="m1", input="Hi", extra_headers={"Idempotency-Key": "new"}
            )
            break
        except openai.APIStatusError:
            await asyncio.sleep(0.1)
    else:
        pytest.fail("the gateway did not use Redis again")
    await c.close()


# ---- the store itself, two instances on one redis-server (two processes' view) -------------


async def test_a_holder_whose_lock_expired_cannot_overwrite_the_new_holder(redis_url: str) -> None:
    a = RedisStore(redis_url, lock_ttl=0.2)
    b = RedisStore(redis_url, lock_ttl=30.0)
    fp = idem.fingerprint("/v1/responses", b"{}")
    try:
        assert isinstance(await a.claim("t:k", fp, "a"), idem.Run)
        assert isinstance(await b.claim("t:k", fp, "b"), idem.Wait)
        await asyncio.sleep(0.3)  # a's lock is over (a stalled): b takes the key
        assert isinstance(await b.claim("t:k", fp, "b"), idem.Run)
        # a still believes its record is there: its answer must not replace b's lock...
        await a.finish("t:k", "a", 200, b"from a", "application/json")
        assert isinstance(await a.claim("t:k", fp, "c"), idem.Wait)
        await a.release("t:k", "a")  # ...nor may it free b's key
        assert isinstance(await a.claim("t:k", fp, "c"), idem.Wait)
        await b.refresh("t:k", "b")
        await b.finish("t:k", "b", 200, b"from b", "application/json")
        replay = await a.claim("t:k", fp, "c")
        assert isinstance(replay, idem.Replay) and replay.record.body == b"from b"
        other = idem.fingerprint("/v1/responses", b"[]")
        with pytest.raises(IdempotencyKeyReused):
            await a.claim("t:k", other, "d")
    finally:
        await a.close()
        await b.close()


async def test_in_flight_slots_are_renewed_and_a_dead_process_s_free_themselves(
    redis_url: str,
) -> None:
    a = RedisStore(redis_url, slot_ttl=0.3)
    b = RedisStore(redis_url, slot_ttl=0.3)
    try:
        assert await a.enter("tenant", "a1", 1) == 1
        await asyncio.sleep(0.7)  # over twice the slot's time to live: a renewed it
        assert await b.enter("tenant", "b1", 1) == -1
        await a.close()  # a "dies": its slot is neither given back nor renewed
        await asyncio.sleep(0.5)
        assert await b.enter("tenant", "b1", 1) == 1
        await b.leave("tenant", "b1")
        assert await b.enter("tenant", "b2", 1) == 1
    finally:
        await a.close()
        await b.close()
