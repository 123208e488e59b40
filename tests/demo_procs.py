"""Demo upstreams as real processes (``python -m gateway.demo --faults``) on loopback,
with their fault switches (``gateway.demo.faults``): killed, restarted, faulted."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import orjson


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DemoProcess:
    """One demo upstream process on 127.0.0.1 and a fixed port (kept across restarts)."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.args = args
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DemoProcess:
        cmd = [sys.executable, "-m", "gateway.demo", "--port", str(self.port), "--faults"]
        self.proc = subprocess.Popen([*cmd, *self.args], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.get("/v1/models")
                return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the demo upstream did not start on port {self.port}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the port refuses connections from now on."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def ensure(self) -> None:
        """Running, without a fault (restarted if a test killed it)."""
        if not self.alive:
            self.kill()
            self.start()
        else:
            self.call("DELETE", "/demo/fault")

    def call(self, method: str, path: str, doc: Any = None) -> Any:
        data = None if doc is None else orjson.dumps(doc)
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data, method=method)
        with urllib.request.urlopen(req, timeout=5) as r:
            return orjson.loads(r.read())

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def fault(self, mode: str, **kw: Any) -> None:
        self.call("POST", "/demo/fault", {"mode": mode, **kw})

    def chats(self) -> int:
        """Chat requests this process has seen since it started."""
        return int(self.get("/demo/fault")["chat"])

    def open_connections(self) -> int:
        """Connections open to the process, other than the one that asks."""
        return int(self.get("/demo/stats")["connections_open"]) - 1


def wait_until(check: Any, timeout: float = 5.0, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(every)
    return bool(check())
