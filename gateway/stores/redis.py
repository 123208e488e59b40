"""The Redis store: records and counters shared by every process and host behind one
Redis (the ``redis`` package's asyncio client).

Keys (``{scope}`` is ``core.idempotency.scope``: the tenant's short hash and the
BLAKE2b of the Idempotency-Key)::

    gw:idem:{scope}          one record, ``core.idempotency.encode``d (msgpack); its
                             Redis expiry is the record's own (the lock's end while in
                             flight, the retention's end once done)
    gw:rpm:{tenant}:{minute} requests of a tenant in one minute (INCR; expires after two)
    gw:fly:{tenant}          a sorted set of the tenant's requests in flight, scored by
                             when each slot frees itself: the process renews its slots
                             every third of ``limits.SLOT_TTL``, so a crashed one's go

Every record transition is the pure one of ``core.idempotency``, made atomic by a
compare-and-set: the transition runs here on the record as this process believes it
is, and a short script (``CAS``) stores its result only if the key still holds that
record, else answers with what it holds, and the transition runs again on that. The
belief is most often right, so a transition is one round trip: a claim expects the
key absent, and the holder of a key expects the record it wrote last. (redis-py
spends about 100 us of CPU per command; a WATCH / GET / MULTI-EXEC transaction took
three.) A duplicate waits by polling its key
(``limits.IDEMPOTENCY_POLL``); one in the same process is woken at once. Any Redis
failure is ``StoreUnavailable`` (503) for requests with an Idempotency-Key; the
request limits fall back to counting in this process while Redis is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.core import idempotency as idem
from gateway.errors import StoreUnavailable
from gateway.limits import (
    IDEMPOTENCY_LOCK_TTL,
    IDEMPOTENCY_POLL,
    IDEMPOTENCY_RETENTION,
    RATE_WINDOW,
    SLOT_TTL,
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
# Store ARGV[2] (or delete the key if it is empty) with an expiry of ARGV[3] ms, if the
# key holds ARGV[1] ('' for absent): {1}; otherwise change nothing: {0, what it holds}.
CAS = """
local held = redis.call('GET', KEYS[1]) or ''
if held ~= ARGV[1] then return {0, held} end
if ARGV[2] == '' then redis.call('DEL', KEYS[1])
else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return {1}
"""
# Push back the expiry of the slots ARGV[2..] that are still in gw:fly:{tenant} to ARGV[1].
RENEW = """
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i]) end
redis.call('PEXPIREAT', KEYS[1], math.floor(tonumber(ARGV[1]) * 1000))
return 1
"""


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        retention: float = IDEMPOTENCY_RETENTION,
        lock_ttl: float = IDEMPOTENCY_LOCK_TTL,
        slot_ttl: float = SLOT_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.retention = retention
        self.lock_ttl = lock_ttl
        self.slot_ttl = slot_ttl
        self.clock = clock
        self.redis = aioredis.Redis.from_url(
            url,
            socket_timeout=STORE_TIMEOUT,
            socket_connect_timeout=STORE_TIMEOUT,
            retry=Retry(NoBackoff(), 0),  # a failure is answered now, not after backoff
        )
        self._enter = self.redis.register_script(ENTER)
        self._cas = self.redis.register_script(CAS)
        self._renew_slots = self.redis.register_script(RENEW)
        self._local = MemoryStore(clock=clock)  # the counters while Redis is away; wake-ups
        self._down = False
        self._mine: dict[str, bytes] = {}  # scope -> the record this process wrote last
        self._slots: dict[str, set[str]] = {}  # tenant -> this process's slots in Redis
        self._renewer: asyncio.Task[None] | None = None

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
        self,
        scope: str,
        step: Callable[[idem.Record | None, float], tuple[idem.Change, T]],
        believed: bytes | None,
        *,
        remember: bool = False,
    ) -> T:
        """Run ``step`` on the stored record and store what it returns, atomically.
        ``believed``: the record's bytes as this process expects them (b"": absent;
        None: not known, read first). ``remember``: a record stored becomes the belief
        of this scope's next transition."""
        key = "gw:idem:" + scope

        async def run() -> T:
            checked = believed is None
            held = await self._get(key) if believed is None else believed
            while True:
                now = self.clock()
                change, result = step(idem.decode(held or None), now)
                if change is idem.KEEP:
                    if checked:
                        return result
                    held, checked = await self._get(key), True
                    continue
                new, ms = b"", 0
                if isinstance(change, idem.Record):
                    new, ms = idem.encode(change), max(1, int((change.expires - now) * 1000))
                answer: Any = await self._cas(keys=[key], args=[held, new, ms])
                if answer[0] == 1:
                    if remember and new:
                        self._mine[scope] = new
                    return result
                held, checked = answer[1], True

        result = await self._call(run)
        self._local.wake(scope)  # this process's waiters look again at once
        return result

    async def _get(self, key: str) -> bytes:
        raw: Any = await self.redis.get(key)
        return raw or b""

    # ---- records ---------------------------------------------------------------------

    immediate = None  # every transition is a round trip to Redis

    def scope(self, tenant: str, key: str) -> str:
        return idem.scope(tenant, key)  # (hashed: a Redis key of fixed length)

    def fingerprint(self, path: str, body: bytes) -> bytes:
        return idem.fingerprint(path, body)  # (the same in every process that shares it)

    async def claim(self, scope: str, fingerprint: idem.Fingerprint, token: str) -> idem.Decision:
        step = idem.claim_step(fingerprint, token, self.lock_ttl)
        return await self._transition(scope, step, b"", remember=True)

    async def refresh(self, scope: str, token: str) -> None:
        step = idem.refresh_step(token, self.lock_ttl)
        await self._transition(scope, step, self._mine.get(scope), remember=True)

    async def finish(
        self, scope: str, token: str, status: int, body: bytes, content_type: str
    ) -> None:
        step = idem.finish_step(token, status, body, content_type, self.retention)
        await self._transition(scope, step, self._mine.pop(scope, None))

    async def release(self, scope: str, token: str) -> None:
        await self._transition(scope, idem.release_step(token), self._mine.pop(scope, None))

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
            args: list[float | int | str] = [now, now + self.slot_ttl, limit, token]
            taken = int(await self._call(lambda: self._enter(keys=["gw:fly:" + tenant], args=args)))
        except StoreUnavailable:
            return await self._local.enter(tenant, token, limit)
        if taken >= 0:
            self._slots.setdefault(tenant, set()).add(token)
            if self._renewer is None:
                self._renewer = asyncio.create_task(self._renew())
        return taken

    async def leave(self, tenant: str, token: str) -> None:
        await self._local.leave(tenant, token)
        tokens = self._slots.get(tenant)
        if tokens is not None:
            tokens.discard(token)
            if not tokens:
                del self._slots[tenant]
        with contextlib.suppress(StoreUnavailable):
            await self._call(lambda: self.redis.zrem("gw:fly:" + tenant, token))

    async def _renew(self) -> None:
        """Push back the expiry of this process's slots, each third of their time to
        live, while it has any (one round trip per tenant)."""
        try:
            while self._slots:
                await asyncio.sleep(self.slot_ttl / 3)
                until = self.clock() + self.slot_ttl
                for tenant, tokens in list(self._slots.items()):
                    renew = functools.partial(
                        self._renew_slots, keys=["gw:fly:" + tenant], args=[until, *tokens]
                    )
                    with contextlib.suppress(StoreUnavailable):
                        await self._call(renew)
        finally:
            self._renewer = None

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        await self._local.close()
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self.redis.aclose(), STORE_TIMEOUT)


def _where(url: str) -> str:
    """The URL without its password (for the log)."""
    scheme, sep, rest = url.partition("://")
    return scheme + sep + rest.rpartition("@")[2] if sep else url
