"""A deployment of three replicas, each a real demo upstream process with fault
switches (``gateway.demo.faults``): balancing, cache affinity, ejection and return,
safe retries, phase timeouts, and what a client sees for each fault.

After every test: no request holds a replica or an upstream connection, every
upstream process sees its connections closed once the gateway closes, and no
task of the gateway is left (``no_leftovers``).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import msgspec
import openai
import pytest

from gateway.api.endpoints import Gateway
from gateway.config import Config, Deployment, Listen
from gateway.ops.lifecycle import listen, open_gateway
from gateway.upstream.policy import Balancer, key_hash
from gateway.upstream.replicas import ReplicaSet
from tests.conftest import sdk
from tests.demo_procs import DemoProcess
from tests.integration.test_responses_stream import check_stream, parse_sse, post_stream

MODEL = "demo"


@pytest.fixture(scope="module")
def demos() -> Any:
    procs = [DemoProcess("--delay-ms", "2").start() for _ in range(3)]
    yield procs
    for p in procs:
        p.kill()


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.02)
    return check()


class Running:
    def __init__(self, url: str, gateway: Gateway) -> None:
        self.url = url
        self.gateway = gateway

    @property
    def replicas(self) -> ReplicaSet:
        return self.gateway.router._deployments[0][1]

    def home(self, key: str) -> int:
        """The index of the replica a key's rendezvous order puts first."""
        order = Balancer().order(self.replicas.replicas, key_hash(key))
        return self.replicas.replicas.index(order[0])


@pytest.fixture
async def gateway(demos: list[DemoProcess]) -> AsyncIterator[Callable[..., Any]]:
    for d in demos:
        d.ensure()
    tasks_before = asyncio.all_tasks()
    stack: list[Any] = []
    running: list[Running] = []

    async def start(urls: tuple[str, ...] | None = None, **dep: Any) -> Running:
        dep.setdefault("models", (MODEL,))
        dep.setdefault("eject_after", 2)
        dep.setdefault("probe_interval", 0.1)
        deployment = Deployment(upstream=urls or tuple(d.url for d in demos), **dep)
        cfg = Config(listen=Listen(), deployment=(deployment,))
        cm = open_gateway(cfg)
        gw = await cm.__aenter__()
        stack.append(cm)
        server_cm = listen(gw, "127.0.0.1", 0)
        server = await server_cm.__aenter__()
        stack.append(server_cm)
        port = server.sockets[0].getsockname()[1]
        run = Running(f"http://127.0.0.1:{port}/v1", gw)
        running.append(run)
        return run

    yield start
    # no_leftovers: nothing holds a replica or a connection while the gateway runs ...
    for run in running:
        for r in run.replicas.replicas:
            pool = r.pool
            # (eventually: a background probe may hold a connection for a moment)
            idle = lambda r=r, pool=pool: (  # noqa: E731
                r.in_flight == 0 and not pool.draining and len(pool.conns) == len(pool.idle)
            )
            assert await eventually(idle), f"{r.base}: connections in use"
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)
    # ... and once it is closed, no upstream process keeps a connection, no task is left
    for d in demos:
        if d.alive:
            assert await eventually(lambda d=d: d.open_connections() == 0), d.url
    left = [t for t in asyncio.all_tasks() - tasks_before if not t.done()]
    assert left == [asyncio.current_task()] or not left, left


def chats(demos: list[DemoProcess]) -> list[int]:
    return [d.chats() if d.alive else 0 for d in demos]


def delta(before: list[int], demos: list[DemoProcess]) -> list[int]:
    return [a - b for a, b in zip(chats(demos), before, strict=True)]


async def ask(url: str, **kw: Any) -> Any:
    async with sdk(url) as c:
        return await c.responses.create(model=MODEL, input="hello", **kw)


# ---- balancing and affinity -------------------------------------------------------------


async def test_concurrent_requests_spread_over_the_replicas(gateway: Any, demos: list) -> None:
    run = await gateway()
    before = chats(demos)
    async with sdk(run.url) as c:

        async def one() -> str:
            async with c.responses.stream(model=MODEL, input="spread") as s:
                return (await s.get_final_response()).output_text

        texts = await asyncio.gather(*(one() for _ in range(60)))
    assert all("spread" in t for t in texts)
    spread = delta(before, demos)
    assert sum(spread) == 60
    assert min(spread) >= 8, spread  # least loaded: about 20 each, never one idle


async def test_an_affinity_key_keeps_its_replica(gateway: Any, demos: list) -> None:
    run = await gateway()
    before = chats(demos)
    for _ in range(8):
        await ask(run.url, prompt_cache_key="thread-1")
    got = delta(before, demos)
    assert sorted(got) == [0, 0, 8]
    assert got[run.home("thread-1")] == 8
    # other keys go to their own replicas: 30 keys use all three
    before = chats(demos)
    for i in range(30):
        await ask(run.url, prompt_cache_key=f"thread-{i}", user="ignored: the key comes first")
    assert all(n > 0 for n in delta(before, demos))


async def test_affinity_from_user_and_from_a_header(gateway: Any, demos: list) -> None:
    run = await gateway(affinity_header="x-session-id")
    before = chats(demos)
    for _ in range(4):
        await ask(run.url, safety_identifier="person-7")
    assert delta(before, demos)[run.home("person-7")] == 4
    before = chats(demos)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s:
        for _ in range(4):
            headers = {"x-session-id": "sess-42"}
            async with s.post(run.url + "/chat/completions", json=body, headers=headers) as r:
                assert r.status == 200
    assert delta(before, demos)[run.home("sess-42")] == 4


async def test_a_far_more_loaded_replica_is_skipped_even_for_its_keys(
    gateway: Any, demos: list
) -> None:
    run = await gateway(affinity_load_factor=1.0)
    home = run.home("hot")
    demos[home].fault("stall-chunks", after=1, seconds=0.5)
    # Six streams of one key at once: its replica takes its fair share, the rest move.
    body = {"model": MODEL, "input": "x", "prompt_cache_key": "hot"}
    before = chats(demos)
    results = await asyncio.gather(*(post_stream(run.url, body) for _ in range(6)))
    assert all(status == 200 for status, _ in results)
    got = delta(before, demos)
    assert 1 <= got[home] <= 3 and sum(got) == 6, got


# ---- faults: what the client sees, and the others take the load -------------------------


async def test_a_killed_replica_is_ejected_its_keys_move_and_come_back(
    gateway: Any, demos: list
) -> None:
    run = await gateway()
    key = next(f"k{i}" for i in range(100) if run.home(f"k{i}") == 1)
    victim = demos[1]
    victim.kill()
    before = chats(demos)
    for _ in range(6):  # each: refused by the dead one, then safely sent to another
        assert "hello" in (await ask(run.url, prompt_cache_key=key)).output_text
    assert not run.replicas.replicas[1].healthy  # ejected after 2 connect failures
    assert run.gateway.router.ready()  # two are left
    moved = delta(before, demos)
    assert moved[1] == 0 and sum(moved) == 6 and max(moved) == 6  # the key's next replica
    victim.start()
    assert await eventually(lambda: run.replicas.replicas[1].healthy, 5.0)  # probed back
    before = chats(demos)
    for _ in range(3):
        await ask(run.url, prompt_cache_key=key)
    assert delta(before, demos)[1] == 3  # the key is home again


async def test_the_active_probe_ejects_a_dead_replica_before_any_request(
    gateway: Any, demos: list
) -> None:
    run = await gateway(active_probe_interval=0.05, probe_interval=0.05)
    demos[2].kill()
    assert await eventually(lambda: not run.replicas.replicas[2].healthy, 3.0)
    before = chats(demos)
    for i in range(6):  # no request is lost to it: none even tries it
        assert (await ask(run.url, prompt_cache_key=f"a{i}")).output_text
    assert sum(delta(before, demos)) == 6
    demos[2].start()
    assert await eventually(lambda: run.replicas.replicas[2].healthy, 3.0)
    assert run.gateway.router.ready()


async def test_with_every_replica_dead_each_request_still_tries_and_none_is_black_holed(
    gateway: Any, demos: list
) -> None:
    """Three replicas killed: at most one is ejected (half, rounded down), every request
    is tried (a 502 from a refused connection, never a 503 without trying), and the
    first replica back answers the next request, before any probe brings it back."""
    run = await gateway(probe_interval=30.0)
    for d in demos:
        d.kill()
    async with sdk(run.url) as c:
        for _ in range(6):
            with pytest.raises(openai.InternalServerError) as info:
                await c.responses.create(model=MODEL, input="x")
            assert info.value.status_code == 502 and info.value.code == "server_error"
        assert sum(not r.healthy for r in run.replicas.replicas) == 1
        assert run.gateway.router.ready()  # (two replicas are still in)
        demos[0].start()
        before = chats(demos)
        for _ in range(3):  # the dead ones refuse (retried), the live one answers
            assert (await c.responses.create(model=MODEL, input="x")).output_text
    assert delta(before, demos)[0] == 3


@pytest.mark.parametrize("fault", ["killed", "500", "503", "stall"])
async def test_the_only_replica_is_never_ejected(gateway: Any, demos: list, fault: str) -> None:
    """A deployment of one replica (nginx: never mark the only server down): after many
    failures of every kind, each request still reaches it, and the first request after
    it recovers is answered, with no probe to wait for."""
    demo = demos[0]
    run = await gateway(urls=(demo.url,), probe_interval=30.0, headers_timeout=0.3)
    if fault == "killed":
        demo.kill()
    elif fault == "stall":
        demo.fault("stall-headers", seconds=5)
    else:
        demo.fault("status", status=int(fault), retry_after="1" if fault == "503" else None)
    statuses = []
    async with sdk(run.url) as c:
        for _ in range(6):
            with pytest.raises(openai.APIStatusError) as info:
                await c.responses.create(model=MODEL, input="x")
            statuses.append(info.value.status_code)
        assert run.replicas.replicas[0].healthy
        want = {"killed": 502, "500": 502, "503": 503, "stall": 504}[fault]
        assert statuses == [want] * 6
        demo.ensure()
        before = chats(demos)
        assert (await c.responses.create(model=MODEL, input="x")).output_text
    assert delta(before, demos)[0] == 1


async def test_of_two_replicas_one_may_be_ejected_not_both(gateway: Any, demos: list) -> None:
    run = await gateway(urls=(demos[0].url, demos[1].url), probe_interval=30.0)
    demos[0].kill()
    demos[1].kill()
    async with sdk(run.url) as c:
        for _ in range(5):
            with pytest.raises(openai.InternalServerError) as info:
                await c.responses.create(model=MODEL, input="x")
            assert info.value.status_code == 502
    assert [r.healthy for r in run.replicas.replicas].count(False) == 1
    demos[0].start()
    demos[1].start()
    async with sdk(run.url) as c:
        for _ in range(4):
            assert (await c.responses.create(model=MODEL, input="x")).output_text


async def test_a_503_with_retry_after_never_ejects_and_an_image_a_model_cannot_take_is_400(
    gateway: Any, demos: list
) -> None:
    """Answers from a live server: a 503 that says when to come back is not a failure
    of the server, and llama.cpp's 500 for an image sent to a text-only model judges
    the request (400 naming the input), not the replica."""
    run = await gateway(urls=(demos[0].url, demos[1].url), probe_interval=30.0)
    image = "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj"
    demos[0].fault("status", status=500, message=image, code=500)
    demos[1].fault("status", status=500, message=image, code=500)
    async with sdk(run.url) as c:
        for _ in range(5):
            with pytest.raises(openai.BadRequestError) as bad:
                await c.responses.create(model=MODEL, input="x")
            assert bad.value.code == "unsupported_input" and bad.value.param == "input"
            assert "image input is not supported" in bad.value.message
        assert all(r.healthy for r in run.replicas.replicas)
        for d in demos[:2]:
            d.fault("status", status=503, retry_after="2")
        for _ in range(6):
            with pytest.raises(openai.InternalServerError) as busy:
                await c.responses.create(model=MODEL, input="x")
            assert busy.value.status_code == 503 and busy.value.code == "server_overloaded"
        assert all(r.healthy for r in run.replicas.replicas)


@pytest.mark.parametrize(
    ("status", "code", "retry_after"),
    [(503, "server_overloaded", "7"), (429, "rate_limit_exceeded", "4")],
)
async def test_429_and_503_go_to_another_replica_and_otherwise_keep_retry_after(
    gateway: Any, demos: list, status: int, code: str, retry_after: str
) -> None:
    run = await gateway()
    demos[0].fault("status", status=status, retry_after=retry_after)
    before = chats(demos)
    for _ in range(6):
        assert (await ask(run.url)).output_text  # the others answer
    got = delta(before, demos)
    assert sum(got[1:]) == 6
    for d in demos[1:]:
        d.fault("status", status=status, retry_after=retry_after)
    async with sdk(run.url) as c:
        with pytest.raises(openai.APIStatusError) as info:
            await c.responses.create(model=MODEL, input="x")
    err = info.value
    assert err.status_code == status and err.code == code
    assert err.response.headers["retry-after"] == retry_after


async def test_500_is_not_retried_and_the_replica_is_ejected(gateway: Any, demos: list) -> None:
    """A 500 answer weighs half a refused connection: eject-after 2 takes four of them."""
    run = await gateway(probe_interval=5.0)
    demos[2].fault("status", status=500)
    keys = [f"q{i}" for i in range(300) if run.home(f"q{i}") == 2][:7]  # its own keys
    statuses = []
    async with sdk(run.url) as c:
        for key in keys:
            try:
                await c.responses.create(model=MODEL, input="x", prompt_cache_key=key)
                statuses.append(200)
            except openai.InternalServerError as exc:
                assert exc.code == "server_error" and "HTTP 500" in exc.message
                statuses.append(exc.status_code)
    assert statuses == [502, 502, 502, 502, 200, 200, 200]  # 4 x 0.5: then the others
    assert not run.replicas.replicas[2].healthy


async def test_context_overflow_from_a_replica_is_400(gateway: Any, demos: list) -> None:
    run = await gateway()
    for d in demos:
        message = "This model's maximum context length is 4096 tokens. However, you requested 9000"
        d.fault("status", status=400, message=message)
    async with sdk(run.url) as c:
        with pytest.raises(openai.BadRequestError) as info:
            await c.responses.create(model=MODEL, input="x")
    assert info.value.code == "context_length_exceeded"
    assert all(r.healthy for r in run.replicas.replicas)  # the client's fault, not theirs


async def test_a_replica_dying_mid_stream_fails_that_stream_only(gateway: Any, demos: list) -> None:
    run = await gateway()
    key = next(f"d{i}" for i in range(100) if run.home(f"d{i}") == 0)
    demos[0].fault("die", after=2, exit=True)
    status, raw = await post_stream(
        run.url, {"model": MODEL, "input": "x", "prompt_cache_key": key}
    )
    assert status == 200
    events = parse_sse(raw)
    final = check_stream(events)  # one terminal event, after the text that was sent
    assert events[-1][0] == "response.failed" and final["error"]["code"] == "server_error"
    assert final["output"][0]["content"][0]["text"] == "word0 word1 "
    assert not demos[0].alive or await eventually(lambda: not demos[0].alive)
    for _ in range(3):  # never restarted; the next requests go to the living
        assert "hello" in (await ask(run.url, prompt_cache_key=key)).output_text


@pytest.fixture
def blackhole() -> Any:
    """A loopback port whose connects hang: a listening socket that never accepts,
    its backlog full (Linux drops the next SYNs)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    port = sock.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    yield f"http://127.0.0.1:{port}/v1"
    filler.close()
    sock.close()


async def test_a_connect_that_times_out_is_retried_elsewhere_or_504(
    gateway: Any, demos: list, blackhole: str
) -> None:
    run = await gateway(urls=(blackhole, demos[0].url), connect_timeout=0.2, probe_interval=5.0)
    key = next(f"c{i}" for i in range(100) if run.home(f"c{i}") == 0)  # the blackhole's keys
    for _ in range(3):
        assert "hello" in (await ask(run.url, prompt_cache_key=key)).output_text
    assert not run.replicas.replicas[0].healthy  # ejected after 2 connect timeouts
    alone = await gateway(urls=(blackhole,), connect_timeout=0.2)
    async with sdk(alone.url) as c:
        with pytest.raises(openai.InternalServerError) as info:
            await c.responses.create(model=MODEL, input="x")
    assert info.value.status_code == 504 and info.value.code == "upstream_connect_timeout"


@pytest.mark.parametrize("path", ["/responses", "/chat/completions"])
async def test_a_client_leaving_mid_stream_closes_its_upstream_connection(
    gateway: Any, demos: list, path: str
) -> None:
    run = await gateway()
    for d in demos:
        d.fault("stall-chunks", after=1, seconds=0.3, chunk_delay=0.0)
    cut = sum(d.get("/demo/fault")["cut"] for d in demos)
    body: dict[str, Any] = {"model": MODEL, "stream": True}
    body |= (
        {"input": "x"} if path == "/responses" else {"messages": [{"role": "user", "content": "x"}]}
    )
    async with aiohttp.ClientSession() as s, s.post(run.url + path, json=body) as r:
        assert r.status == 200
        assert await r.content.readline()  # the stream is on; then the client leaves
    # the upstream sees it at its next write: at once, not after a drain
    assert await eventually(lambda: sum(d.get("/demo/fault")["cut"] for d in demos) == cut + 1)


@pytest.mark.parametrize("mode", ["reset", "garbage"])
async def test_a_reset_or_garbage_is_502_and_not_retried(
    gateway: Any, demos: list, mode: str
) -> None:
    run = await gateway()
    for d in demos:
        d.fault(mode)
    before = chats(demos)
    async with sdk(run.url) as c:
        with pytest.raises(openai.InternalServerError) as info:
            await c.responses.create(model=MODEL, input="x")
    assert info.value.status_code == 502
    assert sum(delta(before, demos)) == 1  # the request was sent: never sent again


async def test_stall_before_headers_is_504_naming_the_phase(gateway: Any, demos: list) -> None:
    run = await gateway(headers_timeout=0.3)
    for d in demos:
        d.fault("stall-headers", seconds=3)
    before = chats(demos)
    async with sdk(run.url) as c:
        with pytest.raises(openai.InternalServerError) as info:
            await c.responses.create(model=MODEL, input="x")
    assert info.value.status_code == 504 and info.value.code == "upstream_headers_timeout"
    assert sum(delta(before, demos)) == 1  # it may be generating: not sent again


@pytest.mark.parametrize(
    ("dep", "code"),
    [
        ({"chunk_timeout": 0.3}, "upstream_chunk_timeout"),
        ({"request_timeout": 0.5}, "upstream_request_timeout"),
    ],  # fmt: skip
)
async def test_stall_between_chunks_fails_the_stream_naming_the_phase(
    gateway: Any, demos: list, dep: dict, code: str
) -> None:
    run = await gateway(**dep)
    for d in demos:
        d.fault("stall-chunks", after=2, seconds=3)
    t0 = time.monotonic()
    status, raw = await post_stream(run.url, {"model": MODEL, "input": "x"})
    assert status == 200 and time.monotonic() - t0 < 2.5
    final = check_stream(parse_sse(raw))
    assert final["status"] == "failed" and final["error"]["code"] == code
    async with sdk(run.url) as c:  # not streamed: 504 with the same code
        with pytest.raises(openai.InternalServerError) as info:
            await c.responses.create(model=MODEL, input="x")
    assert info.value.status_code == 504 and info.value.code == code


async def test_upstream_timeout_flag_keeps_its_meaning() -> None:
    from gateway.cli import _parser, build_config

    args = _parser().parse_args(
        ["serve", "--upstream", "http://a:1/v1", "--upstream", "http://b:2/v1"]
        + ["--upstream-timeout", "7"]
    )
    cfg = build_config(args)
    (dep,) = cfg.deployment
    assert dep.urls == ("http://a:1/v1", "http://b:2/v1")
    replicas = ReplicaSet(dep, None)
    pools = [r.pool for r in replicas.replicas]
    assert [(p.headers_timeout, p.chunk_timeout) for p in pools] == [(7.0, 7.0)] * 2
    one = build_config(_parser().parse_args(["serve", "--upstream", "http://a:1/v1"]))
    assert one.deployment[0].upstream == "http://a:1/v1"  # one URL: as before
    assert msgspec.toml.encode  # (the config module's TOML stays the source of truth)
    await replicas.close()
