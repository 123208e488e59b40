"""systemd's notify protocol and socket activation, without a library.

The protocol: datagrams of ``KEY=value`` lines to the unix socket named by
``NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace). The gateway
sends ``READY=1`` once it listens, ``STATUS=...`` (requests in flight) when it
changes, ``STOPPING=1`` when it starts to drain, and, when systemd asks for a
watchdog (``WATCHDOG_USEC``, for this pid if ``WATCHDOG_PID`` says which),
``WATCHDOG=1`` every half interval from a timer of the event loop: a loop that
is stuck (a blocking call, a busy loop) runs no timer and so sends nothing, and
systemd restarts the service.

Socket activation: ``LISTEN_PID`` (this pid) and ``LISTEN_FDS`` (how many)
name listening sockets passed from fd 3 (``SD_LISTEN_FDS_START``) on; the
gateway serves the first instead of binding its own, so systemd holds the port
across restarts and no connection is refused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger("gateway")

LISTEN_FDS_START = 3
STATUS_EVERY = 5.0  # seconds between two looks at the in-flight count


def notify_address(env: Mapping[str, str]) -> str | None:
    address = env.get("NOTIFY_SOCKET") or None
    if address is not None and address.startswith("@"):
        address = "\0" + address[1:]
    return address


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds systemd allows between two ``WATCHDOG=1``, if it watches this pid."""
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner and owner != str(pid):
        return None
    try:
        seconds = int(usec) / 1e6
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def listen_fds(env: Mapping[str, str], pid: int) -> list[int]:
    """The listening sockets systemd passed to this pid (socket activation)."""
    if env.get("LISTEN_PID") != str(pid):
        return []
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    return list(range(LISTEN_FDS_START, LISTEN_FDS_START + max(count, 0)))


def activated_socket(fd: int) -> socket.socket:
    """The passed-in listening socket ``fd`` as a socket object (non-blocking)."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


class Notifier:
    """Sends notify datagrams; does nothing without ``NOTIFY_SOCKET``."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.sock: socket.socket | None = None
        if address is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._timer: asyncio.TimerHandle | None = None
        self._status = ""

    def send(self, *lines: str) -> bool:
        if self.sock is None or self.address is None:
            return False
        try:
            self.sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            log.warning("cannot notify the service manager: %s", exc.strerror)
            return False
        return True

    def ready(self, status: str) -> None:
        self._status = status
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        if status != self._status:
            self._status = status
            self.send(f"STATUS={status}")

    def stopping(self, status: str = "draining") -> None:
        self._status = status
        self.send("STOPPING=1", f"STATUS={status}")

    def start(self, watchdog: float | None, status: Callable[[], str]) -> None:
        """Tick on the running loop: ``WATCHDOG=1`` every ``watchdog / 2`` s (if
        watched) and ``STATUS=`` when ``status()`` changes."""
        if self.sock is None:
            return
        every = min(watchdog / 2, STATUS_EVERY) if watchdog else STATUS_EVERY
        loop = asyncio.get_running_loop()

        def tick() -> None:
            if watchdog:
                self.send("WATCHDOG=1")
            self.status(status())
            self._timer = loop.call_later(every, tick)

        tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self.stop()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
