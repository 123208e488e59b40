"""What the endpoints see of a store (``memory.MemoryStore``, ``redis.RedisStore``)."""

from __future__ import annotations

from typing import Protocol

from gateway.core.idempotency import Decision, Fingerprint, Replay, Wait


class ImmediateStore(Protocol):
    """``claim`` and ``finish`` as plain calls, for a store whose transitions need no
    I/O (in this process): no coroutine each."""

    def claim_now(self, scope: str, fingerprint: Fingerprint, token: str) -> Wait | Replay | None:
        """``claim``; ``None`` for ``Run``: the caller holds the key."""
        ...

    def finish_now(
        self, scope: str, token: str, status: int, body: bytes, content_type: str
    ) -> None:
        """``finish``."""
        ...


class Store(Protocol):
    """Idempotency records by scope (``scope``), and per-tenant counters for the
    request limits. Every coroutine may raise ``StoreUnavailable``, except ``leave``
    and ``close``. ``immediate`` is the store's plain-call side, if it has one (the
    in-process store), else None."""

    @property
    def immediate(self) -> ImmediateStore | None: ...

    def scope(self, tenant: str, key: str) -> str:
        """Where the records of ``tenant``'s Idempotency-Key ``key`` are kept."""
        ...

    def fingerprint(self, path: str, body: bytes) -> Fingerprint:
        """What makes two requests with one key "the same" here: the route and the
        body's bytes."""
        ...

    async def claim(self, scope: str, fingerprint: Fingerprint, token: str) -> Decision:
        """``Run`` (the caller holds the key), ``Wait`` or ``Replay``; raises
        ``IdempotencyKeyReused`` for another body under the same key."""
        ...

    async def refresh(self, scope: str, token: str) -> None:
        """The holder is still running: renew its lock."""
        ...

    async def finish(
        self, scope: str, token: str, status: int, body: bytes, content_type: str
    ) -> None:
        """The holder's answer: kept if it is storable, otherwise the key is freed."""
        ...

    async def release(self, scope: str, token: str) -> None:
        """The holder ends without an answer to keep: the key is free again."""
        ...

    async def wait(self, scope: str, until: float) -> None:
        """Return when the record of ``scope`` may have changed, or at ``until``
        (wall-clock seconds) at the latest."""
        ...

    async def hit(self, tenant: str) -> tuple[int, float]:
        """Count one request of ``tenant`` in the current minute: (requests in it so
        far, this one included; seconds until the minute ends)."""
        ...

    async def enter(self, tenant: str, token: str, limit: int) -> int:
        """Take one of ``tenant``'s ``limit`` in-flight slots for ``token``: the slots
        in use after it, or -1 (taking none) when all are taken."""
        ...

    async def leave(self, tenant: str, token: str) -> None:
        """Give ``token``'s slot back (never raises)."""
        ...

    async def close(self) -> None: ...
