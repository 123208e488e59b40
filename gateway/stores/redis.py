"""The Redis store: records and counters shared by every process and host behind one
Redis (the ``redis`` package's asyncio client).

Keys (``{scope}`` is ``core.idempotency.scope``: the tenant's short hash and the
SHA-256 of the Idempotency-Key)::

    gw:idem:{scope}          one record, ``core.idempotency.encode``d (msgpack); its
                             Redis expiry is the record's own (the lock's end while in
                             flight, the retention's end once done)
    gw:rpm:{tenant}:{minute} requests of a tenant in one minute (INCR; expires after two)
    gw:fly:{tenant}          a sorted set of the tenant's requests in flight, scored by
                             when each slot frees itself (a crashed holder's slot goes)

Every record transition is the pure one of ``core.idempotency``, made atomic by an
optimistic transaction: WATCH the key, GET it, run the transition, then MULTI
SET/DEL EXEC; if another process wrote the key in between, EXEC fails and the
transition runs again on what is there now. A duplicate waits by polling its key
(``limits.IDEMPOTENCY_POLL``); one in the same process is woken at once. Any Redis
failure is ``StoreUnavailable`` (503) for requests with an Idempotency-Key; the
request limits fall back to counting in this process while Redis is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, WatchError

from gateway.core import idempotency as idem
from gateway.errors import StoreUnavailable
from gateway.limits import (
    IDEMPOTENCY_LOCK_TTL,
    IDEMPOTENCY_POLL,
    IDEMPOTENCY_RETENTION,
    RATE_WINDOW,
    STORE_TIMEOUT,
)
from gateway.stores.memory import MemoryStore

log = logging.getLogger("gateway")

T = TypeVar("T")
DOWN = (
    "The gateway's idempotency store (Redis) cannot be reached, so a request with an "
    "Idempotency-Key cannot be run safely; retry later, or send it without the key."
)
# Take a slot in gw:fly:{tenant} unless ARGV[3] are taken: drop expired slots first.
ENTER = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIREAT', KEYS[1], math.floor(tonumber(ARGV[2]) * 1000))
return redis.call('ZCARD', KEYS[1])
"""
# Seconds a request's in-flight slot lasts if its process dies without giving it back.
SLOT_TTL = 900.0


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        retention: float = IDEMPOTENCY_RETENTION,
        lock_ttl: float = IDEMPOTENCY_LOCK_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.retention = retention
        self.lock_ttl = lock_ttl
        self.clock = clock
        self.redis = aioredis.Redis.from_url(
            url,
            socket_timeout=STORE_TIMEOUT,
            socket_connect_timeout=STORE_TIMEOUT,
            retry=Retry(NoBackoff(), 0),  # a failure is answered now, not after backoff
        )
        self._enter = self.redis.register_script(ENTER)
        self._local = MemoryStore(clock=clock)  # the counters while Redis is away; wake-ups
        self._down = False

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        try:
            result = await op()
        except (RedisError, OSError) as exc:
            if not self._down:
                self._down = True
                log.warning("redis store %s unreachable: %s", _where(self.url), type(exc).__name__)
            raise StoreUnavailable(DOWN) from exc
        if self._down:
            self._down = False
            log.info("redis store %s reachable again", _where(self.url))
        return result

    async def _transition(
        self, scope: str, step: Callable[[idem.Record | None, float], tuple[idem.Change, T]]
    ) -> T:
        """Run ``step`` on the stored record and store what it returns, atomically."""
        key = "gw:idem:" + scope

        async def run() -> T:
            async with self.redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key)
                        now = self.clock()
                        raw: Any = await pipe.get(key)
                        change, result = step(idem.decode(raw), now)
                        if change is idem.KEEP:
                            await pipe.unwatch()
                            return result
                        pipe.multi()
                        if isinstance(change, idem.Record):
                            ms = max(1, int((change.expires - now) * 1000))
                            pipe.set(key, idem.encode(change), px=ms)
                        else:
                            pipe.delete(key)
                        await pipe.execute()
                        return result
                    except WatchError:
                        continue

        result = await self._call(run)
        self._local.wake(scope)  # this process's waiters look again at once
        return result

    # ---- records ---------------------------------------------------------------------

    async def claim(self, scope: str, fingerprint: bytes, token: str) -> idem.Decision:
        def step(record: idem.Record | None, now: float) -> tuple[idem.Change, idem.Decision]:
            decision = idem.claim(record, fingerprint, token, now, self.lock_ttl)
            return (decision.record if isinstance(decision, idem.Run) else idem.KEEP), decision

        return await self._transition(scope, step)

    async def refresh(self, scope: str, token: str) -> None:
        await self._transition(
            scope, lambda r, now: (idem.refresh(r, token, now, self.lock_ttl), None)
        )

    async def finish(
        self, scope: str, token: str, status: int, body: bytes, content_type: str
    ) -> None:
        def step(record: idem.Record | None, now: float) -> tuple[idem.Change, None]:
            return idem.finish(record, token, status, body, content_type, now, self.retention), None

        await self._transition(scope, step)

    async def release(self, scope: str, token: str) -> None:
        await self._transition(scope, lambda r, now: (idem.release(r, token, now), None))

    async def wait(self, scope: str, until: float) -> None:
        """Until woken by this process, or one poll interval (another process may hold it)."""
        await self._local.wait(scope, min(until, self.clock() + IDEMPOTENCY_POLL))

    # ---- counters --------------------------------------------------------------------

    async def hit(self, tenant: str) -> tuple[int, float]:
        now = self.clock()
        minute = int(now // RATE_WINDOW)
        key = f"gw:rpm:{tenant}:{minute}"

        async def run() -> Any:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, int(2 * RATE_WINDOW))
                return (await pipe.execute())[0]

        try:
            count = int(await self._call(run))
        except StoreUnavailable:
            return await self._local.hit(tenant)
        return count, (minute + 1) * RATE_WINDOW - now

    async def enter(self, tenant: str, token: str, limit: int) -> int:
        now = self.clock()
        try:
            args: list[float | int | str] = [now, now + SLOT_TTL, limit, token]
            return int(await self._call(lambda: self._enter(keys=["gw:fly:" + tenant], args=args)))
        except StoreUnavailable:
            return await self._local.enter(tenant, token, limit)

    async def leave(self, tenant: str, token: str) -> None:
        await self._local.leave(tenant, token)
        with contextlib.suppress(StoreUnavailable):
            await self._call(lambda: self.redis.zrem("gw:fly:" + tenant, token))

    async def close(self) -> None:
        await self._local.close()
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self.redis.aclose(), STORE_TIMEOUT)


def _where(url: str) -> str:
    """The URL without its password (for the log)."""
    scheme, sep, rest = url.partition("://")
    return scheme + sep + rest.rpartition("@")[2] if sep else url
