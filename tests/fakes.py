"""A fake transport for driving the gateway's asyncio protocols without sockets: the
client-facing ``http.connection.Connection`` and the upstream ``UpstreamConnection`` alike."""

from __future__ import annotations

import asyncio
from typing import Any


class FakeTransport:
    """Records writes, pauses, resumes, the half-close and the close; loses the connection
    as asyncio does (on the next loop iteration)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.writes: list[bytes] = []
        self.paused = False
        self.pauses = 0
        self.resumes = 0
        self.eof = False
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        assert not self.eof, "write after write_eof"
        self.writes.append(data)

    def pause_reading(self) -> None:
        assert not self.paused, "paused twice"
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        assert self.paused, "resumed while not paused"
        self.paused = False
        self.resumes += 1

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.conn.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)
