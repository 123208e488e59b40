"""The gateway as its own process (``python -m gateway serve``): the drain on SIGTERM,
systemd's notify protocol against a fake ``NOTIFY_SOCKET``, and socket activation.

The fake upstream runs in the test's loop; the gateway is a child process on
loopback. Each test bounds its waits (seconds, not minutes).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from typing import Any

import pytest

from tests.conftest import FakeUpstream, chunk, sdk, text_stream
from tests.integration.ops_support import GatewayProcess, get


def gateway(
    upstream: FakeUpstream, tmp: Any, *more: str, env: dict | None = None
) -> GatewayProcess:
    args = ["--upstream", upstream.url, "--model", "m1", "--log-format", "json", *more]
    return GatewayProcess(args, tmp, env=env)


async def refused(port: int, within: float = 3.0) -> bool:
    """Whether a new connection to ``port`` is refused (soon)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return True
        writer.close()
        await asyncio.sleep(0.02)
    return False


@pytest.mark.parametrize("http", ["lean", "aiohttp"])
async def test_sigterm_drains_streams_refuses_new_connections_and_exits_0(
    upstream: FakeUpstream, tmp_path: Any, http: str
) -> None:
    upstream.reply = upstream.sse_reply(text_stream(*"abcdefghij"), delay=0.15)
    gw = gateway(upstream, tmp_path, "--http", http, "--drain-timeout", "10").start()
    try:
        await gw.ready()
        async with sdk(f"http://127.0.0.1:{gw.port}/v1") as client:
            async with client.responses.stream(model="m1", input="Hi") as stream:
                events = [await stream.__anext__()]
                gw.signal(signal.SIGTERM)
                assert await refused(gw.port)  # the listener closed at once...
                async for ev in stream:  # ...and the stream in flight goes on to its end
                    events.append(ev)
        assert events[-1].type == "response.completed"
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == (
            "abcdefghij"
        )
        assert await gw.wait() == 0
        msgs = [line["msg"] for line in gw.lines()]
        assert any(m.startswith("drain: stopping") for m in msgs)
        assert not any("still in flight" in m for m in msgs)
    finally:
        gw.stop()


@pytest.mark.parametrize("http", ["lean", "aiohttp"])
async def test_streams_open_at_the_drain_deadline_end_with_response_failed(
    upstream: FakeUpstream, tmp_path: Any, http: str
) -> None:
    upstream.reply = upstream.sse_reply([chunk({"role": "assistant", "content": "a"})], then="hang")
    gw = gateway(upstream, tmp_path, "--http", http, "--drain-timeout", "0.5").start()
    try:
        await gw.ready()
        async with sdk(f"http://127.0.0.1:{gw.port}/v1") as client:
            async with client.responses.stream(model="m1", input="Hi") as stream:
                events = [await stream.__anext__()]
                started = time.monotonic()
                gw.signal(signal.SIGTERM)
                async for ev in stream:
                    events.append(ev)
        waited = time.monotonic() - started
        last = events[-1]
        assert last.type == "response.failed"
        assert last.response.error is not None
        assert last.response.error.code == "server_shutting_down"
        assert [e.type for e in events].count("response.failed") == 1
        assert waited >= 0.5  # not before the deadline
        assert await gw.wait() == 0
        await asyncio.wait_for(upstream.disconnected.wait(), 5)  # its upstream connection closed
    finally:
        gw.stop()


# ---- sd_notify ---------------------------------------------------------------------------


class FakeNotifySocket:
    """A unix datagram socket standing for systemd's: every message with its time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            self.messages.append((time.monotonic(), data.decode()))

    def lines(self, since: float = 0.0) -> list[str]:
        return [line for t, m in self.messages if t >= since for line in m.split("\n")]

    async def wait_for(self, line: str, timeout: float = 15.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, m in self.messages:
                if line in m.split("\n"):
                    return t
            await asyncio.sleep(0.01)
        raise AssertionError(f"no {line!r} in {self.messages}")

    def close(self) -> None:
        self.task.cancel()
        self.sock.close()


async def test_ready_status_watchdog_and_stopping(upstream: FakeUpstream, tmp_path: Any) -> None:
    fake = FakeNotifySocket(str(tmp_path / "notify"))
    env = {"NOTIFY_SOCKET": fake.path, "WATCHDOG_USEC": "300000"}  # WATCHDOG=1 every 0.15 s
    gw = gateway(upstream, tmp_path, env=env).start()
    try:
        await fake.wait_for("READY=1")
        assert (await get(gw.port, "/healthz"))[0] == 200  # it listens by then
        assert any(s.startswith("STATUS=") and "in flight" in s for s in fake.lines())
        t0 = time.monotonic()
        await asyncio.sleep(0.8)
        assert fake.lines(t0).count("WATCHDOG=1") >= 3
        # A process that does not run (its loop cannot turn) sends no watchdog.
        gw.signal(signal.SIGSTOP)
        await asyncio.sleep(0.1)
        stopped = time.monotonic()
        await asyncio.sleep(0.6)
        assert fake.lines(stopped).count("WATCHDOG=1") == 0
        gw.signal(signal.SIGCONT)
        resumed = time.monotonic()
        await asyncio.sleep(0.5)
        assert fake.lines(resumed).count("WATCHDOG=1") >= 2
        gw.signal(signal.SIGTERM)
        await fake.wait_for("STOPPING=1")
        assert await gw.wait() == 0
    finally:
        gw.stop()
        fake.close()


async def test_no_watchdog_while_the_event_loop_is_blocked(tmp_path: Any) -> None:
    """In process: the notifier's timer is the loop's, so a blocking call in the loop
    (here time.sleep) stops WATCHDOG=1 until the loop turns again."""
    from gateway.ops.notify import Notifier

    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0)
    notifier = Notifier(path)

    def drain() -> list[str]:
        out = []
        while True:
            try:
                out += sock.recv(4096).decode().split("\n")
            except BlockingIOError:
                return out

    try:
        notifier.start(0.1, lambda: "0 requests in flight")  # every 0.05 s
        await asyncio.sleep(0.3)
        assert drain().count("WATCHDOG=1") >= 4
        time.sleep(0.5)  # the loop is blocked: no timer runs
        assert drain() == []
        await asyncio.sleep(0.3)
        assert drain().count("WATCHDOG=1") >= 4
        notifier.stop()
        await asyncio.sleep(0.15)
        drain()
        await asyncio.sleep(0.15)
        assert drain() == []
    finally:
        notifier.close()
        sock.close()


def test_abstract_notify_address_and_watchdog_pid() -> None:
    from gateway.ops.notify import listen_fds, notify_address, watchdog_interval

    assert notify_address({"NOTIFY_SOCKET": "@sd"}) == "\0sd"
    assert notify_address({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "2000000"}, 7) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "8"}, 7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "x"}, 7) is None
    assert listen_fds({"LISTEN_PID": "7", "LISTEN_FDS": "2"}, 7) == [3, 4]
    assert listen_fds({"LISTEN_PID": "8", "LISTEN_FDS": "2"}, 7) == []


# ---- socket activation ---------------------------------------------------------------------

# Starts the gateway as systemd would: the listening socket on fd 3, LISTEN_PID its pid.
ACTIVATE = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.set_inheritable(3, True); "
    "os.environ['LISTEN_PID'] = str(os.getpid()); os.environ['LISTEN_FDS'] = '1'; "
    "os.execv(sys.executable, [sys.executable, '-m', 'gateway', *sys.argv[2:]])"
)


async def test_socket_activation_serves_the_passed_socket_across_a_restart(
    upstream: FakeUpstream, tmp_path: Any
) -> None:
    """The test holds the listening socket, as systemd does: the gateway serves it
    without binding its own, and a connection made while no gateway runs waits in
    the queue and is answered by the next one instead of being refused."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    port = listener.getsockname()[1]
    fd = listener.fileno()

    def start() -> GatewayProcess:
        gw = gateway(upstream, tmp_path)  # (its own --port is not used)
        cmd = [sys.executable, "-c", ACTIVATE, str(fd), *gw.args]
        gw.port = port
        return gw.start(cmd, pass_fds=(fd,))

    first = start()
    try:
        await first.ready()
        async with sdk(f"http://127.0.0.1:{port}/v1") as client:
            assert (await client.responses.create(model="m1", input="Hi")).output_text == "Hello!"
        first.signal(signal.SIGTERM)
        assert await first.wait() == 0
        assert "socket from the service manager" in first.text()
        # Nobody serves the port now; this connection waits in the socket's queue.
        waiting = asyncio.ensure_future(get(port, "/healthz", timeout=30))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        second = start()
        try:
            status, _ = await waiting
            assert status == 200
        finally:
            second.signal(signal.SIGTERM)
            assert await second.wait() == 0
            second.stop()
    finally:
        first.stop()
        listener.close()


async def test_metrics_on_a_listener_of_their_own(upstream: FakeUpstream, tmp_path: Any) -> None:
    """[ops] metrics-listen: /metrics answers there only; the API's port says 404."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        mport = s.getsockname()[1]
    cfg = tmp_path / "g.toml"
    cfg.write_text(
        f'[ops]\nmetrics-listen = "127.0.0.1:{mport}"\n'
        f'[[deployment]]\nupstream = "{upstream.url}"\nmodels = ["m1"]\n'
    )
    gw = GatewayProcess(["--config", str(cfg), "--log-format", "json"], tmp_path).start()
    try:
        await gw.ready()
        assert (await get(gw.port, "/metrics"))[0] == 404
        status, body = await get(mport, "/metrics")
        assert status == 200 and b"# TYPE gateway_requests_total counter" in body
        assert (await get(mport, "/v1/models"))[0] == 404  # nothing else there
        gw.signal(signal.SIGTERM)
        assert await gw.wait() == 0
    finally:
        gw.stop()
