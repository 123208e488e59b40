"""What the endpoints read of an upstream's answer: ``UpstreamResponse``.

``ReplicaSet.chat`` hands back the pooled connection the answer is being read
from (``connection.UpstreamConnection``), and its reader sees it only as this:
the status and content type, which replica answers, the body as it arrives, and
the ways to be done with it. A protocol, so that the name costs nothing at run
time: the connection has these members and is no subclass of it.
"""

from __future__ import annotations

from typing import Protocol


class UpstreamResponse(Protocol):
    """An upstream's answer from its headers on. The reader calls ``release()``
    once, however the reading ended; ``abort()`` or ``cut()`` end it early."""

    @property
    def status(self) -> int:
        """The answer's HTTP status code."""

    @property
    def content_type(self) -> bytes:
        """The Content-Type header's value; b"" when the answer had none."""

    @property
    def replica(self) -> str:
        """The base URL of the replica that answers."""

    def ready(self) -> bool:
        """``read_some`` would return at once (bytes, or the end; never an error)."""

    async def read_some(self) -> bytes:
        """The body bytes that came since the last read; b"" at the end."""

    async def read(self, limit: int | None = None) -> bytes:
        """The rest of the body, at its end: at most ``limit`` bytes (the deployment's
        ``max-answer-bytes`` if None), else ``UpstreamBadResponse``."""

    def release(self) -> None:
        """Done with the answer: its connection goes back to the pool if it can."""

    def abort(self) -> None:
        """Nobody wants the rest: the upstream sees its connection close now."""

    def cut(self, exc: Exception) -> None:
        """End the answer now with ``exc``: the read waiting raises it, and so does
        every later read that would wait for more."""
