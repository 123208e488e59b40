"""Helpers of the operations tests: raw HTTP on loopback, reading a scrape, and a
gateway run as its own process (``python -m gateway serve``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def get(port: int, path: str, *, timeout: float = 10.0) -> tuple[int, bytes]:
    """``GET path`` on a connection of its own; (status, body)."""

    async def go() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" in head.lower():
            body = dechunk(body)
        return int(head.split()[1]), body

    return await asyncio.wait_for(go(), timeout)


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out += rest[:n]
        data = rest[n + 2 :]
    return out


def parse(text: bytes) -> Samples:
    """Every sample of a scrape: (name, labels) → value."""
    out: Samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def scrape(port: int) -> Samples:
    status, body = await get(port, "/metrics")
    assert status == 200
    return parse(body)


class GatewayProcess:
    """``python -m gateway serve ARGS`` on 127.0.0.1:``port``; stderr kept in a file."""

    def __init__(self, args: list[str], tmp: Any, *, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log = tmp / f"gateway-{self.port}.log"
        self.args = ["serve", "--host", "127.0.0.1", "--port", str(self.port), *args]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, cmd: list[str] | None = None, **popen: Any) -> GatewayProcess:
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                cmd or [sys.executable, "-m", "gateway", *self.args],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # (its workers too: stop() ends the group)
                **popen,
            )
        return self

    async def ready(self, timeout: float = 20.0) -> None:
        """Wait until ``/readyz`` answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited {self.proc.returncode}: {self.text()}")
            try:
                if (await get(self.port, "/readyz", timeout=2))[0] == 200:
                    return
            except (TimeoutError, OSError):
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"gateway not ready: {self.text()}")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"gateway did not exit: {self.text()}")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def lines(self) -> list[dict]:
        """The JSON log lines so far."""
        out = []
        for line in self.text().splitlines():
            if line.startswith("{"):
                out.append(orjson.loads(line))
        return out

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
