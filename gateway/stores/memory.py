"""The in-process store: a dict of records, bounded by entries and bytes, with expiry.

One event loop runs every transition to its end without an ``await`` inside, so
each is atomic. Records are kept in the order they were last written; expired ones
are dropped from the front at most once a second (a replay never sees one: a
transition checks the record's expiry); a full store drops the oldest written
first, done or expired (the expired ones at the front before any other), a hundredth
of its bounds at a time, and a live in-flight record is never dropped for room (a
full store of in-flight keys refuses the new one as ``Overloaded``).
Waiters for a key are woken at once when its holder ends.

A kept answer is a copy of its bytes: the bytes an answer is made of may sit in a
larger buffer (orjson's output keeps the capacity it grew to: 4 KB for a 500-byte
answer), and this store keeps them for hours, bounded by their length.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from gateway.core import idempotency as idem
from gateway.errors import Overloaded
from gateway.limits import (
    IDEMPOTENCY_LOCK_TTL,
    IDEMPOTENCY_MAX_BYTES,
    IDEMPOTENCY_MAX_ENTRIES,
    IDEMPOTENCY_RETENTION,
    RATE_WINDOW,
)

SWEEP_EVERY = 1.0  # seconds: expired records go at most this late (or when room is needed)
# ``body.join(_EDGES)``: a copy of ``body`` of its own size (b"" + body + b""), in one
# C call: half the cost of ``memoryview(body).tobytes()`` (``bytes(body)`` copies nothing).
_EDGES = (b"", b"")
FULL = "The gateway holds as many requests with an Idempotency-Key in flight as it can."


class MemoryStore:
    def __init__(
        self,
        *,
        retention: float = IDEMPOTENCY_RETENTION,
        lock_ttl: float = IDEMPOTENCY_LOCK_TTL,
        max_entries: int = IDEMPOTENCY_MAX_ENTRIES,
        max_bytes: int = IDEMPOTENCY_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.retention = retention
        self.lock_ttl = lock_ttl
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        self.records: dict[str, idem.Record] = {}  # in the order last written
        self.bytes = 0
        self._sweep_at = 0.0  # when to drop expired records next (at most once a second)
        self._waiters: dict[str, asyncio.Event] = {}
        self._minutes: dict[str, tuple[int, int]] = {}  # tenant -> (minute, count)
        self._flying: dict[str, set[str]] = {}  # tenant -> tokens in flight

    # ---- records ---------------------------------------------------------------------

    def _put(self, scope: str, change: idem.Change, now: float) -> None:
        if change is idem.KEEP:
            return
        records = self.records
        if self._waiters:
            self.wake(scope)
        old = records.pop(scope, None)
        if old is not None:
            self.bytes -= len(old.body)
        if isinstance(change, idem.Record):
            records[scope] = change
            self.bytes += len(change.body)
            if now >= self._sweep_at:
                self._sweep_at = now + SWEEP_EVERY
                self._drop_expired(now)
            if len(records) > self.max_entries or self.bytes > self.max_bytes:
                self._evict()

    def wake(self, scope: str) -> None:
        """Wake whoever waits for ``scope`` (its record changed)."""
        event = self._waiters.pop(scope, None)
        if event is not None:
            event.set()

    def _drop_expired(self, now: float) -> None:
        """Drop the expired records at the front (the least recently written)."""
        records = self.records
        while records:
            scope, first = next(iter(records.items()))
            if idem.live(first, now) is not None:
                break
            del records[scope]
            self.bytes -= len(first.body)

    def _evict(self, room: int = 0) -> None:
        """Drop expired records from the front, then the oldest that are done or expired
        (an in-flight record whose lock ran out: its holder is gone) while over a bound
        (or without ``room`` entries free), down to a hundredth of each bound below it.
        A live record in flight is never dropped.

        (A hundredth at a time: a dict whose oldest entries are deleted one by one is
        slow to reach its front, since its deleted slots stay until it is resized. One
        record an eviction cost 8.6 us a new key in a full store of 100,000, against
        1.8 us in an empty one; an OrderedDict costs 0.7 us more on every write.)"""
        records = self.records
        now = self.clock()
        self._drop_expired(now)
        most = self.max_entries - room
        entries, size = len(records), self.bytes
        if entries <= most and size <= self.max_bytes:
            return
        most = most - self.max_entries // 100 if entries > most else entries
        least = self.max_bytes - self.max_bytes // 100 if size > self.max_bytes else size
        victims = []
        for scope, record in records.items():
            if entries <= most and size <= least:
                break
            if record.done or record.expires <= now:
                victims.append(scope)
                entries -= 1
                size -= len(record.body)
        for scope in victims:
            self.bytes -= len(records.pop(scope).body)

    # The transitions that every request with a key makes (``claim_now`` and
    # ``finish_now``) are also plain methods: ``api.replay`` calls them without a
    # coroutine each, which cost more than the transitions themselves.

    @property
    def immediate(self) -> MemoryStore:
        """Every transition here is a plain call (``claim_now``, ``finish_now``)."""
        return self

    def scope(self, tenant: str, key: str) -> str:
        """The record key of ``key`` for ``tenant``. The key itself, not its hash: this
        memory is the process's own, and a key is at most ``idempotency.MAX_KEY``
        characters (a tenant is ``""`` or 12 hex digits, so the prefix is unambiguous)."""
        return tenant + ":" + key

    def fingerprint(self, path: str, body: bytes) -> int:
        """The request's digest for this process's records: Python's own hash of the
        route and the body (SipHash, keyed at random per process: a body made to
        collide with another can't be computed from outside, and the odds of two
        requests colliding by chance are 2^-64; a collision could only ever mix up
        one tenant's own requests, since records are kept per tenant). About a
        quarter of the cost of ``idem.fingerprint``'s BLAKE2b, which a store
        shared between processes needs (their hashes are keyed apart)."""
        return hash((path, body))

    def claim_now(
        self, scope: str, fingerprint: idem.Fingerprint, token: str
    ) -> idem.Wait | idem.Replay | None:
        """``claim`` as a plain call; ``None`` for ``Run``: the caller holds the key
        (its record in flight is stored), without a ``Run`` made for it."""
        records, now = self.records, self.clock()
        held = records.get(scope)
        fresh = held is None and now < self._sweep_at and not self._waiters
        if fresh and len(records) < self.max_entries:
            # (most claims: a new key, room, no sweep due, nobody waiting; a record in
            # flight holds no bytes): idem.claim's first case and what _put does then,
            # without their checks
            records[scope] = idem.Record(fingerprint, token, now + self.lock_ttl)
            return None
        decision = idem.claim(held, fingerprint, token, now, self.lock_ttl)
        if not isinstance(decision, idem.Run):
            return decision
        if len(records) >= self.max_entries and scope not in records:
            self._evict(room=1)
            if len(records) >= self.max_entries:
                raise Overloaded(FULL)
        self._put(scope, decision.record, now)
        return None

    async def claim(self, scope: str, fingerprint: idem.Fingerprint, token: str) -> idem.Decision:
        decision = self.claim_now(scope, fingerprint, token)
        return idem.Run(self.records[scope]) if decision is None else decision

    async def refresh(self, scope: str, token: str) -> None:
        record = self.records.get(scope)
        change = idem.refresh(record, token, self.clock(), self.lock_ttl)
        if isinstance(change, idem.Record):
            self.records[scope] = change  # (same size; kept in place)

    def finish_now(
        self, scope: str, token: str, status: int, body: bytes, content_type: str
    ) -> None:
        records, now = self.records, self.clock()
        held = records.get(scope)
        size = self.bytes + len(body)
        if (
            held is not None
            and held.token == token
            and not held.status
            and held.expires > now
            and status in idem.STORABLE
            and size <= self.max_bytes
            and now < self._sweep_at
            and not self._waiters
        ):
            # (most answers: the holder's live record in flight, which holds no bytes,
            # a storable status, room, no sweep due, nobody waiting): idem.finish's
            # Record and what _put does then, without their calls. The answer goes
            # last, as the newest write; it is a copy of its own size (see above).
            del records[scope]
            records[scope] = idem.Record(
                held.fingerprint,
                token,
                now + self.retention,
                status,
                body.join(_EDGES),
                content_type,
            )
            self.bytes = size
            return
        if len(body) <= self.max_bytes:
            body = body.join(_EDGES)
        change = idem.finish(held, token, status, body, content_type, now, self.retention)
        if len(body) > self.max_bytes and isinstance(change, idem.Record):
            change = None  # larger than the whole store: not kept
        self._put(scope, change, now)

    async def finish(
        self, scope: str, token: str, status: int, body: bytes, content_type: str
    ) -> None:
        self.finish_now(scope, token, status, body, content_type)

    async def release(self, scope: str, token: str) -> None:
        now = self.clock()
        self._put(scope, idem.release(self.records.get(scope), token, now), now)

    async def wait(self, scope: str, until: float) -> None:
        event = self._waiters.get(scope)
        if event is None:
            event = self._waiters[scope] = asyncio.Event()
        timeout = max(0.0, until - self.clock())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    # ---- counters --------------------------------------------------------------------

    async def hit(self, tenant: str) -> tuple[int, float]:
        now = self.clock()
        minute = int(now // RATE_WINDOW)
        seen, count = self._minutes.get(tenant, (minute, 0))
        count = count + 1 if seen == minute else 1
        self._minutes[tenant] = (minute, count)
        return count, (minute + 1) * RATE_WINDOW - now

    async def enter(self, tenant: str, token: str, limit: int) -> int:
        tokens = self._flying.setdefault(tenant, set())
        if len(tokens) >= limit:
            return -1
        tokens.add(token)
        return len(tokens)

    async def leave(self, tenant: str, token: str) -> None:
        tokens = self._flying.get(tenant)
        if tokens is not None:
            tokens.discard(token)
            if not tokens:
                del self._flying[tenant]

    async def close(self) -> None:
        for event in self._waiters.values():
            event.set()
        self._waiters.clear()
