"""Client API keys and the per-key request limits (``[auth]``, ``[limits]``).

Keys are compared in constant time: the SHA-256 of the presented key against
that of every configured key with ``hmac.compare_digest``, without stopping at a
match. A key is never logged nor kept in clear once hashed; the tenant it stands
for is the first 12 hex digits of its HMAC-SHA256 under the deployment's secret
(``secret``: what logs and stores see), so that a weak key cannot be found again
from the logs by trying keys: without the secret, a name says nothing of its key.

An Authorization value that held a right key is remembered (a few per key), so a
client's later requests skip the hashing. That lookup leaks nothing either: a dict
compares two strings only when their hashes (SipHash, keyed at random per process)
are equal, which a guess that is not the value itself reaches with odds of 2^-64, so
how long a miss takes does not depend on how much of a key the guess shares.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from gateway.api.calls import Call
from gateway.core.ids import IDS
from gateway.errors import RateLimited, Unauthorized
from gateway.http.messages import Incoming
from gateway.stores.base import Store

NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
WRONG_KEY = "Incorrect API key provided."


T = TypeVar("T")


def tenant_of(key: str, secret: bytes) -> str:
    """The short name of a client key: 12 hex digits of its HMAC-SHA256 under ``secret``."""
    return hmac.new(secret, key.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:12]


class Guard:
    """Admits a request: its key (if keys are configured), then its limits (if any)."""

    def __init__(
        self,
        keys: Sequence[str],
        store: Store,
        *,
        secret: bytes,
        per_minute: int = 0,
        in_flight: int = 0,
    ) -> None:
        self.keys = [(hashlib.sha256(k.encode()).digest(), tenant_of(k, secret)) for k in keys]
        self.store = store
        self.per_minute = per_minute
        self.in_flight = in_flight
        self.limited = bool(per_minute or in_flight)
        self._known: dict[str, str] = {}  # Authorization values of right keys -> tenant
        self._most_known = 8 * len(self.keys)  # (spellings: "Bearer" / "bearer", spaces)
        self._leaving: set[asyncio.Task[None]] = set()  # slots given back from callbacks

    def tenant(self, request: Incoming) -> str:
        """The tenant of the request's key; ``Unauthorized`` without a right one."""
        if not self.keys:
            return ""
        auth = request.headers.get("authorization")
        if auth is not None and (seen := self._known.get(auth)) is not None:
            return seen
        if auth is None or auth[:7].lower() != "bearer " or not auth[7:].strip():
            raise Unauthorized(NO_KEY)
        digest = hashlib.sha256(auth[7:].strip().encode("latin-1")).digest()
        found = ""
        for known, tenant in self.keys:  # (every key compared: no early exit)
            if hmac.compare_digest(digest, known):
                found = tenant
        if not found:
            raise Unauthorized(WRONG_KEY)
        if len(self._known) < self._most_known:
            self._known[auth] = found
        return found

    async def admit(self, tenant: str, token: str) -> bool:
        """Count the request against ``tenant``'s limits; ``RateLimited`` over one.
        True: it holds an in-flight slot (give it back with ``leave``)."""
        if self.per_minute:
            count, reset = await self.store.hit(tenant)
            if count > self.per_minute:
                raise RateLimited(
                    f"Rate limit reached: {self.per_minute} requests per minute for this "
                    f"API key. Retry after {max(1, int(reset + 0.999))} s.",
                    limit=self.per_minute,
                    remaining=0,
                    reset=reset,
                )
        if not self.in_flight:
            return False
        if await self.store.enter(tenant, token, self.in_flight) < 0:
            raise RateLimited(
                f"Rate limit reached: {self.in_flight} requests in flight for this API key. "
                "Retry when one has finished.",
                limit=self.in_flight,
                remaining=0,
                reset=1.0,
            )
        return True

    async def leave(self, tenant: str, token: str) -> None:
        await self.store.leave(tenant, token)

    def leave_later(self, tenant: str, token: str) -> None:
        """``leave``, from a callback (the task is kept until it ends)."""
        task = asyncio.ensure_future(self.leave(tenant, token))
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)


async def within_limits(
    guard: Guard, tenant: str, run: Callable[[], Awaitable[T]], call: Call | None = None
) -> T:
    """``run()`` counted against ``tenant``'s limits: its in-flight slot held while it
    runs, or, when ``call.run`` goes on after it (a keyed run whose client left, on a
    server that cannot detach its handler), until that run ends."""
    token = IDS.new("slot_")
    if not await guard.admit(tenant, token):
        return await run()
    try:
        return await run()
    finally:
        later = call.run if call is not None else None
        if later is None or later.done():
            await guard.leave(tenant, token)
        else:
            later.add_done_callback(lambda _: guard.leave_later(tenant, token))
