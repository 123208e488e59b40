"""``serve --workers 2`` under the supervisor (metrics summed across workers, a worker
killed with SIGKILL replaced while the port keeps answering) and SIGHUP reloads (an
upstream swapped under a stream in flight, a bad file refused)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import orjson
import pytest

from tests.conftest import FakeUpstream, completion, sdk, text_stream
from tests.integration.ops_support import GatewayProcess, get, scrape, value

M = "gen_ai_request_model"


async def post(port: int, doc: dict, *, timeout: float = 10.0) -> tuple[int, dict]:
    """``POST /v1/responses`` on a connection of its own (so that the kernel may hand
    each to another worker)."""

    async def go() -> tuple[int, dict]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = orjson.dumps(doc)
        writer.write(
            b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        data = await reader.read()
        writer.close()
        head, _, rest = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), orjson.loads(rest)

    return await asyncio.wait_for(go(), timeout)


async def pids(port: int, n: int = 40) -> set[int]:
    """The worker pids that answer ``n`` health checks, each on a new connection."""
    out = set()
    for _ in range(n):
        status, body = await get(port, "/healthz")
        assert status == 200
        out.add(orjson.loads(body)["pid"])
    return out


async def all_up(port: int, n: int = 2, timeout: float = 15.0) -> set[int]:
    """Wait until ``n`` workers answer (each listens once its start is done)."""
    deadline = time.monotonic() + timeout
    seen: set[int] = set()
    while time.monotonic() < deadline:
        seen = await pids(port, 20)
        if len(seen) >= n:
            return seen
        await asyncio.sleep(0.1)
    raise AssertionError(f"only {seen} answer")


def workers(upstream: FakeUpstream, tmp: Any, *more: str) -> GatewayProcess:
    args = ["--upstream", upstream.url, "--model", "m1", "--workers", "2", "--log-format", "json"]
    return GatewayProcess([*args, *more], tmp)


async def test_two_workers_scrape_sums_both(upstream: FakeUpstream, tmp_path: Any) -> None:
    gw = workers(upstream, tmp_path).start()
    try:
        await gw.ready()
        seen = await all_up(gw.port)
        assert len(seen) == 2, seen  # both workers answer on the one port
        before = await scrape(gw.port)
        for _ in range(20):
            status, doc = await post(gw.port, {"model": "m1", "input": "Hi"})
            assert status == 200 and doc["status"] == "completed"
        upstream.reply = upstream.sse_reply(text_stream("a", "b"))
        async with sdk(f"http://127.0.0.1:{gw.port}/v1") as client:
            async with client.responses.stream(model="m1", input="Hi") as stream:
                n = len([ev async for ev in stream])
        # Whichever worker a scrape lands on, it reports both workers' figures (the
        # other worker's within limits.METRICS_FLUSH: it adds its figures up once a second).
        total = "gateway_requests_total"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            after = await scrape(gw.port)
            if value(after, total) - value(before, total) == 21:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.1)
        for _ in range(6):
            after = await scrape(gw.port)
            ok = {"endpoint": "responses", M: "m1", "status": "200"}
            total = "gateway_requests_total"
            assert value(after, total, **ok) - value(before, total, **ok) == 21
            hist = "gateway_request_duration_seconds_count"
            assert value(after, hist) - value(before, hist) == 21
            tok = "gateway_tokens_total"
            assert value(after, tok, type="input") - value(before, tok, type="input") == 20 * 11 + 5
            assert value(after, "gateway_stream_events_total") == n
            assert value(after, "gateway_time_to_first_token_seconds_count") == 1
            assert value(after, "gateway_requests_in_flight") == 0
        gw.signal(signal.SIGTERM)
        assert await gw.wait() == 0
    finally:
        gw.stop()


async def test_a_worker_killed_is_replaced_and_the_port_keeps_answering(
    upstream: FakeUpstream, tmp_path: Any
) -> None:
    gw = workers(upstream, tmp_path).start()
    try:
        await gw.ready()
        seen = await all_up(gw.port)
        for _ in range(10):
            assert (await post(gw.port, {"model": "m1", "input": "Hi"}))[0] == 200
        await asyncio.sleep(1.1)  # (limits.METRICS_FLUSH)
        counted = value(await scrape(gw.port), "gateway_requests_total")
        assert counted == 10
        victim = min(seen)
        os.kill(victim, signal.SIGKILL)
        # Once it is gone (the supervisor saw it exit), every request is answered: by the
        # other worker, then by both. (Connections the kernel had already queued on the
        # dead worker's SO_REUSEPORT socket are reset: that is the kernel's; with a
        # socket passed in by systemd the workers share one queue and lose none.)
        deadline = time.monotonic() + 10
        while "exited (signal 9)" not in gw.text() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        deadline = time.monotonic() + 15
        replaced: set[int] = set()
        answered = 0
        while time.monotonic() < deadline:
            status, doc = await post(gw.port, {"model": "m1", "input": "Hi"})
            assert status == 200 and doc["status"] == "completed"
            answered += 1
            replaced = await pids(gw.port, 4) - seen
            if replaced and answered >= 10:
                break
            await asyncio.sleep(0.05)
        assert replaced, "no new worker"
        assert victim not in await pids(gw.port)
        assert "exited (signal 9)" in gw.text()
        # The dead worker's counts stay in the sum; its in-flight gauge is gone.
        await asyncio.sleep(1.1)  # (limits.METRICS_FLUSH: both workers' figures are in)
        after = await scrape(gw.port)
        assert value(after, "gateway_requests_total") == counted + answered
        gw.signal(signal.SIGTERM)
        assert await gw.wait() == 0
    finally:
        gw.stop()


# ---- SIGHUP ----------------------------------------------------------------------------------


def config(url: str, *, limits: str = "") -> str:
    return (
        f'[ops]\nlog-format = "json"\ndrain-timeout = 5.0\n{limits}'
        f'[[deployment]]\nupstream = "{url}"\nmodels = ["m1"]\n'
    )


@pytest.fixture
async def second_upstream(aiohttp_raw_server: Any) -> FakeUpstream:
    fake = FakeUpstream()
    fake.reply = fake.json_reply(completion("From B"))
    server = await aiohttp_raw_server(fake.handle)
    fake.url = str(server.make_url("/v1"))
    return fake


@pytest.mark.parametrize("n_workers", [1, 2])
async def test_sighup_swaps_the_upstream_without_failing_a_stream(
    upstream: FakeUpstream, second_upstream: FakeUpstream, tmp_path: Any, n_workers: int
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(config(upstream.url))
    gw = GatewayProcess(["--config", str(path), "--workers", str(n_workers)], tmp_path).start()
    try:
        await gw.ready()
        await all_up(gw.port, n_workers)
        streamed = upstream.sse_reply(text_stream(*"abcdefgh"), delay=0.15)
        whole = upstream.json_reply(completion("From A"))

        async def reply(request: Any, body: dict) -> Any:
            return await (streamed if body.get("stream") else whole)(request, body)

        upstream.reply = reply
        async with sdk(f"http://127.0.0.1:{gw.port}/v1") as client:
            async with client.responses.stream(model="m1", input="Hi") as stream:
                events = [await stream.__anext__()]
                path.write_text(config(second_upstream.url))
                gw.signal(signal.SIGHUP)
                # New requests go to B once the reload is in (on every worker).
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    status, doc = await post(gw.port, {"model": "m1", "input": "Hi"})
                    assert status == 200, doc  # no request fails across the swap
                    texts = [c["text"] for o in doc["output"] for c in o["content"]]
                    assert texts in (["From A"], ["From B"])
                    if texts == ["From B"] and len(second_upstream.received) >= 4 * n_workers:
                        break
                    await asyncio.sleep(0.02)
                assert texts == ["From B"]
                async for ev in stream:  # the stream that A serves goes on to its end
                    events.append(ev)
        assert events[-1].type == "response.completed"
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == (
            "abcdefgh"
        )
        # A file that does not load is refused; B goes on serving.
        path.write_text(config(second_upstream.url) + "bogus = 1\n")
        gw.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reload refused" not in gw.text() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert "reload refused" in gw.text()
        before = len(second_upstream.received)
        for _ in range(4):
            status, doc = await post(gw.port, {"model": "m1", "input": "Hi"})
            assert status == 200
        assert len(second_upstream.received) == before + 4
        gw.signal(signal.SIGTERM)
        assert await gw.wait() == 0
    finally:
        gw.stop()


async def test_sighup_changes_limits(upstream: FakeUpstream, tmp_path: Any) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(config(upstream.url))
    gw = GatewayProcess(["--config", str(path)], tmp_path).start()
    try:
        await gw.ready()
        for _ in range(3):
            assert (await post(gw.port, {"model": "m1", "input": "Hi"}))[0] == 200
        path.write_text(config(upstream.url, limits="[limits]\nrequests-per-minute = 2\n"))
        gw.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reloaded" not in gw.text() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        codes = [(await post(gw.port, {"model": "m1", "input": "Hi"}))[0] for _ in range(3)]
        assert codes == [200, 200, 429]
        gw.signal(signal.SIGTERM)
        assert await gw.wait() == 0
    finally:
        gw.stop()


async def test_supervisor_speaks_for_its_workers_and_replaces_a_stuck_one(
    upstream: FakeUpstream, tmp_path: Any
) -> None:
    """Under systemd (a fake NOTIFY_SOCKET, WatchdogSec=1): READY=1 once both workers
    are ready, the supervisor's own WATCHDOG=1, summed STATUS=; a worker whose loop
    cannot turn (SIGSTOP) misses its watchdog, is killed and replaced; STOPPING=1."""
    from tests.process.test_drain_and_notify import FakeNotifySocket

    fake = FakeNotifySocket(str(tmp_path / "notify"))
    gw = workers(upstream, tmp_path)
    gw.env.update({"NOTIFY_SOCKET": fake.path, "WATCHDOG_USEC": "1000000"})
    gw.start()
    try:
        await fake.wait_for("READY=1")
        seen = await pids(gw.port)
        assert len(seen) == 2  # READY=1 came once both listen
        assert any("2 of 2 workers ready" in line for line in fake.lines())
        t0 = time.monotonic()
        await asyncio.sleep(1.2)
        assert fake.lines(t0).count("WATCHDOG=1") >= 2
        stuck = min(seen)
        os.kill(stuck, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while "sent no watchdog" not in gw.text() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert f"worker {stuck} sent no watchdog" in gw.text()
        new = await all_up(gw.port)
        assert stuck not in new and len(new) == 2
        gw.signal(signal.SIGTERM)
        await fake.wait_for("STOPPING=1")
        assert await gw.wait() == 0
    finally:
        gw.stop()
        fake.close()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead and not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def handles_sighup(pid: int) -> bool:
    """Whether the process catches or ignores SIGHUP (its mask in /proc)."""
    with open(f"/proc/{pid}/status") as f:
        masks = dict(line.split(":", 1) for line in f if line.startswith(("SigCgt", "SigIgn")))
    return any(int(v, 16) & 1 for v in masks.values())


async def test_workers_die_with_their_supervisor(upstream: FakeUpstream, tmp_path: Any) -> None:
    """A supervisor killed with SIGKILL (no chance to forward anything) takes its workers
    with it: they drain and exit, instead of serving the port on with the old config."""
    gw = workers(upstream, tmp_path).start()
    try:
        await gw.ready()
        seen = await all_up(gw.port)
        assert gw.proc is not None
        os.kill(gw.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in seen) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not [pid for pid in seen if alive(pid)]
        with pytest.raises(OSError):
            await get(gw.port, "/healthz", timeout=2)
    finally:
        gw.stop()


async def test_a_sighup_while_the_workers_start_kills_none(
    upstream: FakeUpstream, tmp_path: Any
) -> None:
    """Reloads asked for (SIGHUP, forwarded to each worker) while the workers are still
    starting: each worker ignores them until its loop handles reloads, so none dies."""
    cfg = tmp_path / "g.toml"
    cfg.write_text(f'workers = 2\n[[deployment]]\nupstream = "{upstream.url}"\nmodels = ["m1"]\n')
    gw = GatewayProcess(["--config", str(cfg), "--log-format", "json"], tmp_path).start()
    try:
        assert gw.proc is not None
        while not handles_sighup(gw.proc.pid):  # (the interpreter's own start: not ours)
            await asyncio.sleep(0.005)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # from the first moment, all through the start
            gw.signal(signal.SIGHUP)
            await asyncio.sleep(0.02)
        await gw.ready()
        assert len(await all_up(gw.port)) == 2
        exits = [line for line in gw.lines() if "exited" in line.get("msg", "")]
        assert exits == []
        gw.signal(signal.SIGTERM)
        assert await gw.wait() == 0
    finally:
        gw.stop()


async def test_without_a_config_file_a_sighup_reaches_no_worker(
    upstream: FakeUpstream, tmp_path: Any
) -> None:
    """Nothing to reload (no config file): the supervisor keeps a SIGHUP to itself,
    where it forwarded it to workers that have no handler for it (and died of it)."""
    gw = workers(upstream, tmp_path).start()
    try:
        await gw.ready()
        seen = await all_up(gw.port)
        gw.signal(signal.SIGHUP)
        await asyncio.sleep(1.0)
        assert all(alive(pid) for pid in seen)
        assert not [line for line in gw.lines() if "exited" in line.get("msg", "")]
    finally:
        gw.stop()


def test_the_supervisor_speaks_for_systemd_only_while_a_worker_serves(tmp_path: Any) -> None:
    """WATCHDOG=1 while at least one worker is ready with a fresh watchdog of its own;
    none while every worker is starting, stuck or gone (systemd then restarts it all)."""
    from gateway.config import Config, Deployment
    from gateway.ops.supervisor import Slot, Supervisor

    cfg = Config(deployment=(Deployment(upstream="http://127.0.0.1:9/v1"),), workers=2)
    sup = Supervisor(cfg, {}, keys_text=None)
    a, b = Slot(0, str(tmp_path / "a")), Slot(1, str(tmp_path / "b"))
    sup.slots = [a, b]
    try:
        now = 100.0
        assert not sup.serving(now)  # none started
        a.pid, b.pid = 11, 12
        sup.by_pid = {11: a, 12: b}
        assert not sup.serving(now)  # started, not ready
        a.ready, a.beat = True, now
        assert sup.serving(now)
        assert not sup.serving(now + sup.worker_watchdog + 0.1)  # a is stuck, b not ready
        b.ready, b.beat = True, now + sup.worker_watchdog
        assert sup.serving(now + sup.worker_watchdog + 0.1)  # b serves
        del sup.by_pid[12]
        assert not sup.serving(now + sup.worker_watchdog + 0.1)  # b gone, a stuck
    finally:
        a.sock.close()
        b.sock.close()
        sup.notifier.close()


@pytest.fixture(params=["sqlite", "redis"])
def shared(request: pytest.FixtureRequest) -> str:
    """The [idempotency] of a config whose workers share their records: the default
    (memory in one process: the workers' SQLite database), or Redis."""
    if request.param == "sqlite":
        return ""
    url = request.getfixturevalue("redis_url")
    return f'[idempotency]\nstore = "redis"\nredis-url = "{url}"\n'


async def keyed(port: int, key: str, doc: dict, client: str = "sk-a") -> tuple[int, dict]:
    """``POST /v1/responses`` with an Idempotency-Key, on a connection of its own."""
    body = orjson.dumps(doc)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer %s\r\nIdempotency-Key: %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (client.encode(), key.encode(), len(body), body)
    )
    data = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), orjson.loads(rest)


async def test_workers_share_replays_and_per_key_limits(
    upstream: FakeUpstream, tmp_path: Any, shared: str
) -> None:
    """``--workers 2``: the same key sent six times on fresh connections (the kernel
    hands them to both workers) makes one upstream generation, and a client key's
    max-in-flight of 1 holds for the host, not per worker."""
    keys = tmp_path / "keys"
    keys.write_text("sk-a\nsk-b\n")
    cfg = tmp_path / "g.toml"
    cfg.write_text(
        f'workers = 2\n[auth]\nkeys-file = "{keys}"\n[limits]\nmax-in-flight = 1\n{shared}'
        f'[[deployment]]\nupstream = "{upstream.url}"\nmodels = ["m1"]\n'
    )
    gw = GatewayProcess(["--config", str(cfg), "--log-format", "json"], tmp_path).start()
    try:
        await gw.ready()
        await all_up(gw.port)
        upstream.reply = upstream.json_reply(completion("once"))
        answers = [
            await keyed(gw.port, "order-7", {"model": "m1", "input": "Hi"}) for _ in range(6)
        ]
        assert [s for s, _ in answers] == [200] * 6
        assert len({doc["id"] for _, doc in answers}) == 1  # the same answer, replayed
        assert len(upstream.received) == 1
        upstream.reply = slow_json(completion("slow"), 1.0)  # (each held 1 s)
        results = await asyncio.gather(
            *(keyed(gw.port, f"k{i}", {"model": "m1", "input": "Hi"}, "sk-b") for i in range(6))
        )
        statuses = sorted(s for s, _ in results)
        assert statuses == [200] + [429] * 5, statuses
        gw.signal(signal.SIGTERM)
        assert await gw.wait() == 0
    finally:
        gw.stop()


def slow_json(doc: dict, delay: float) -> Any:
    from aiohttp import web

    async def reply(request: Any, body: dict) -> Any:
        await asyncio.sleep(delay)
        return web.json_response(doc)

    return reply
