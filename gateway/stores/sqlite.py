"""The embedded store: records and counters shared by the worker processes of one host,
in one SQLite database (the standard library's ``sqlite3``), in WAL mode.

``serve --workers N`` without Redis uses it: the supervisor names a database file in
its runtime directory, every worker opens it, and so a retry that lands on another
worker replays instead of generating again, and the per-key limits count once for
the host, not once per worker. (A single process keeps the in-memory store: nothing
to share.) The file lives as long as the supervisor; records are not meant to
outlive it, so nothing is synced to disk (``synchronous = OFF``: a crash of the host
loses them, as it loses the memory store's).

Tables::

    records(scope PRIMARY KEY, record, expires, done, size, written)
                     ``core.idempotency.encode``d records, by ``idem.scope``
    minutes(tenant, minute, count)   requests of a tenant in one minute
    slots(tenant, token, expires)    requests in flight; a worker renews its own every
                                     third of ``limits.SLOT_TTL``, so a crashed one's go

Every record transition is ``core.idempotency``'s, run inside ``BEGIN IMMEDIATE``
(one writer at a time across the processes; a transition holds the lock for a few
microseconds). The calls are made on the event loop, without a thread: each is a
local transaction far cheaper than a hand-off to a thread and back; a lock held
longer than ``limits.STORE_TIMEOUT`` fails the request with ``StoreUnavailable``
(503), as an unreachable Redis does. A duplicate waits by polling its key
(``limits.IDEMPOTENCY_POLL``); one in the same process is woken at once. The bounds
are the memory store's: expired records go first, then the oldest done ones, checked
at most once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from gateway.core import idempotency as idem
from gateway.errors import Overloaded, StoreUnavailable
from gateway.limits import (
    IDEMPOTENCY_LOCK_TTL,
    IDEMPOTENCY_MAX_BYTES,
    IDEMPOTENCY_MAX_ENTRIES,
    IDEMPOTENCY_POLL,
    IDEMPOTENCY_RETENTION,
    RATE_WINDOW,
    SLOT_TTL,
    STORE_TIMEOUT,
)
from gateway.stores.memory import FULL, SWEEP_EVERY, MemoryStore

log = logging.getLogger("gateway")

T = TypeVar("T")
DOWN = (
    "The gateway's idempotency store (the workers' shared database) is busy or broken, so "
    "a request with an Idempotency-Key cannot be run safely; retry later."
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    scope TEXT PRIMARY KEY, record BLOB NOT NULL, expires REAL NOT NULL,
    done INTEGER NOT NULL, size INTEGER NOT NULL, written REAL NOT NULL);
CREATE INDEX IF NOT EXISTS records_written ON records (written);
CREATE TABLE IF NOT EXISTS minutes (
    tenant TEXT NOT NULL, minute INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (tenant, minute));
CREATE TABLE IF NOT EXISTS slots (
    tenant TEXT NOT NULL, token TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (tenant, token));
"""


class SqliteStore:
    immediate = None  # every transition is a transaction in the shared database

    def __init__(
        self,
        path: str,
        *,
        retention: float = IDEMPOTENCY_RETENTION,
        lock_ttl: float = IDEMPOTENCY_LOCK_TTL,
        max_entries: int = IDEMPOTENCY_MAX_ENTRIES,
        max_bytes: int = IDEMPOTENCY_MAX_BYTES,
        slot_ttl: float = SLOT_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.retention = retention
        self.lock_ttl = lock_ttl
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.slot_ttl = slot_ttl
        self.clock = clock
        self.db = sqlite3.connect(path, timeout=STORE_TIMEOUT, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = OFF")
        with self._transaction() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
        self._local = MemoryStore(clock=clock)  # this process's wake-ups
        self._sweep_at = 0.0
        self._slots: dict[str, set[str]] = {}  # tenant -> this process's slots
        self._renewer: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def _transaction(self) -> Any:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on an error); a database
        that is locked too long or broken is ``StoreUnavailable``."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            log.warning("shared store %s: %s", self.path, exc)
            raise StoreUnavailable(DOWN) from exc

    # ---- records ---------------------------------------------------------------------

    def scope(self, tenant: str, key: str) -> str:
        return idem.scope(tenant, key)

    def fingerprint(self, path: str, body: bytes) -> bytes:
        return idem.fingerprint(path, body)  # (the same in every process that shares it)

    def _transition(
        self, scope: str, step: Callable[[idem.Record | None, float], tuple[idem.Change, T]]
    ) -> T:
        """Run ``step`` on the stored record and store what it returns, atomically."""
        with self._transaction() as db:
            now = self.clock()
            row = db.execute("SELECT record FROM records WHERE scope = ?", (scope,)).fetchone()
            change, result = step(idem.decode(row[0]) if row else None, now)
            if isinstance(change, idem.Record):
                if row is None:
                    self._make_room(db, now)
                db.execute(
                    "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        scope,
                        idem.encode(change),
                        change.expires,
                        change.done,
                        len(change.body),
                        now,
                    ),
                )
            elif change is None:
                db.execute("DELETE FROM records WHERE scope = ?", (scope,))
        self._local.wake(scope)  # this process's waiters look again at once
        return result

    def _make_room(self, db: sqlite3.Connection, now: float) -> None:
        """At most once a second (or when full): drop the expired records, then the oldest
        done ones while over a bound, down to a hundredth below it. A full store of
        records in flight refuses the new one (``Overloaded``)."""
        if now < self._sweep_at:
            return
        self._sweep_at = now + SWEEP_EVERY
        db.execute("DELETE FROM records WHERE expires <= ?", (now,))
        entries, size = db.execute("SELECT count(*), total(size) FROM records").fetchone()
        if entries < self.max_entries and size <= self.max_bytes:
            return
        over_entries = max(0, entries - self.max_entries + 1 + self.max_entries // 100)
        over_bytes = max(0.0, size - self.max_bytes + self.max_bytes // 100)
        dropped, freed = 0, 0
        oldest = "SELECT scope, size FROM records WHERE done = 1 ORDER BY written"
        for scope, n in db.execute(oldest).fetchall():
            if dropped >= over_entries and freed >= over_bytes:
                break
            db.execute("DELETE FROM records WHERE scope = ?", (scope,))
            dropped, freed = dropped + 1, freed + n
        if entries - dropped >= self.max_entries:
            self._sweep_at = 0.0  # (full of records in flight: look again next time)
            raise Overloaded(FULL)

    async def claim(self, scope: str, fingerprint: idem.Fingerprint, token: str) -> idem.Decision:
        return self._transition(scope, idem.claim_step(fingerprint, token, self.lock_ttl))

    async def refresh(self, scope: str, token: str) -> None:
        self._transition(scope, idem.refresh_step(token, self.lock_ttl))

    async def finish(
        self, scope: str, token: str, status: int, body: bytes, content_type: str
    ) -> None:
        if len(body) > self.max_bytes:  # larger than the whole store: not kept
            self._transition(scope, idem.release_step(token))
            return
        self._transition(scope, idem.finish_step(token, status, body, content_type, self.retention))

    async def release(self, scope: str, token: str) -> None:
        self._transition(scope, idem.release_step(token))

    async def wait(self, scope: str, until: float) -> None:
        """Until woken by this process, or one poll interval (another may hold it)."""
        await self._local.wait(scope, min(until, self.clock() + IDEMPOTENCY_POLL))

    # ---- counters --------------------------------------------------------------------

    async def hit(self, tenant: str) -> tuple[int, float]:
        now = self.clock()
        minute = int(now // RATE_WINDOW)
        with self._transaction() as db:
            db.execute("DELETE FROM minutes WHERE tenant = ? AND minute < ?", (tenant, minute))
            (count,) = db.execute(
                "INSERT INTO minutes VALUES (?, ?, 1) ON CONFLICT (tenant, minute) "
                "DO UPDATE SET count = count + 1 RETURNING count",
                (tenant, minute),
            ).fetchone()
        return int(count), (minute + 1) * RATE_WINDOW - now

    async def enter(self, tenant: str, token: str, limit: int) -> int:
        now = self.clock()
        with self._transaction() as db:
            db.execute("DELETE FROM slots WHERE tenant = ? AND expires <= ?", (tenant, now))
            (taken,) = db.execute(
                "SELECT count(*) FROM slots WHERE tenant = ?", (tenant,)
            ).fetchone()
            if taken >= limit:
                return -1
            db.execute(
                "INSERT OR REPLACE INTO slots VALUES (?, ?, ?)",
                (tenant, token, now + self.slot_ttl),
            )
        self._slots.setdefault(tenant, set()).add(token)
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew())
        return int(taken) + 1

    async def leave(self, tenant: str, token: str) -> None:
        tokens = self._slots.get(tenant)
        if tokens is not None:
            tokens.discard(token)
            if not tokens:
                del self._slots[tenant]
        with contextlib.suppress(StoreUnavailable), self._transaction() as db:
            db.execute("DELETE FROM slots WHERE tenant = ? AND token = ?", (tenant, token))

    async def _renew(self) -> None:
        """Push back the expiry of this process's slots, each third of their time to live,
        while it has any (a crashed worker's then free themselves)."""
        try:
            while self._slots:
                await asyncio.sleep(self.slot_ttl / 3)
                until = self.clock() + self.slot_ttl
                rows = [(until, t, k) for t, tokens in self._slots.items() for k in tokens]
                with contextlib.suppress(StoreUnavailable), self._transaction() as db:
                    db.executemany(
                        "UPDATE slots SET expires = ? WHERE tenant = ? AND token = ?", rows
                    )
        finally:
            self._renewer = None

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        await self._local.close()
        self.db.close()
