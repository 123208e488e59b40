"""``Idempotency-Key`` on non-streaming ``POST /v1/responses`` and ``/v1/chat/completions``.

The first request with a key runs; a duplicate that arrives meanwhile waits for
it and gets its answer; a later one gets the stored answer (status and body,
byte for byte) with ``Idempotent-Replayed: true``. Only answers the same request
would get again are kept (``core.idempotency.STORABLE``: 2xx, 400, 404, 413, 422);
any other (5xx, 408, 409, 425, 429, an upstream's 401/403) and requests that end
without an answer free the key, so a retry runs for real. The lifecycle is
``core.idempotency``'s; the store (``gateway.stores``) makes it atomic, in this
process or across processes. Streaming requests never come here: part of a
stream may already have reached the client, so a stream is sent once and is
never replayed (the header is ignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from gateway.api.calls import Call
from gateway.core import idempotency as idem
from gateway.core.ids import IDS
from gateway.errors import GatewayError, StoreUnavailable
from gateway.http.messages import Incoming, Reply, Response
from gateway.stores.base import Store

log = logging.getLogger("gateway")

REPLAYED = "Idempotent-Replayed"


class _Streamed(msgspec.Struct):
    stream: Any = None


_STREAMED = msgspec.json.Decoder(_Streamed)


def streamed(body: bytes) -> bool:
    """Whether a (pass-through chat) body asks for a stream (a bad body: not)."""
    try:
        return _STREAMED.decode(body).stream is True
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False


def error_reply(exc: GatewayError, call: Call) -> Response:
    """The OpenAI-shaped error answer for ``exc``, with the call's headers."""
    headers = call.headers if exc.headers is None else {**exc.headers, **call.headers}
    return Response(
        status=exc.status, body=exc.body(), content_type="application/json", headers=headers
    )


class Replays:
    """Runs requests that carry an Idempotency-Key; ``close`` at shutdown.

    While a run holds its key, its lock is renewed every third of the lock's time to
    live, so a long request keeps it and a crashed process's keys free themselves. One
    task renews every key this process holds (a task per request would cost more than
    the bookkeeping of the whole replay)."""

    def __init__(self, store: Store, lock_ttl: float) -> None:
        self.store = store
        # The in-process store's transitions are plain calls (no coroutine each).
        self.local = store.immediate
        self.beat = lock_ttl / 3
        # A run's token names its holder: unique among the store's processes (a random
        # prefix per process: this object is made in each worker) and cheaper than an id.
        self._prefix = IDS.new("idem_")[:21] + "."
        self._count = itertools.count()
        self._running: set[asyncio.Future[Reply]] = set()
        self._held: dict[str, str] = {}  # scope -> token: the keys this process runs
        self._renewer: asyncio.Task[None] | None = None

    async def run(
        self,
        call: Call,
        key: str,
        request: Incoming,
        body: bytes,
        answer: Callable[[Incoming, Call, list[Any]], Awaitable[Reply]],
        held: list[Any],
        *,
        shielded: bool = False,
    ) -> Reply:
        """``answer(request, call, held)`` at most once per key and body (among the
        store's processes); ``held``: what the answer needs of the request, which it
        takes out of the list (so that a long answer lets go of it).

        The run goes on if the client goes away (a timeout): its retry waits for it and
        gets its answer, instead of finding the key free and generating again. The lean
        server lets the handler run on (``detach``); on aiohttp's, this runs again as a
        task of its own (``shielded``)."""
        if not shielded and not request.detach():
            task = asyncio.ensure_future(
                self.run(call, key, request, body, answer, held, shielded=True)
            )
            self._running.add(task)
            task.add_done_callback(self._ended)
            call.run = task
            return await asyncio.shield(task)
        store, local = self.store, self.local
        scope = store.scope(call.tenant, idem.check_key(key))
        fp = store.fingerprint(request.path, body)
        token = self._prefix + str(next(self._count))
        while True:
            if local is not None:
                decision: idem.Decision | None = local.claim_now(scope, fp, token)
                if decision is None:
                    break  # (held: the local store makes no Run for it)
            else:
                decision = await store.claim(scope, fp, token)
            if isinstance(decision, idem.Run):
                break
            if isinstance(decision, idem.Replay):
                rec = decision.record
                headers = {**call.headers, REPLAYED: "true"}
                ctype = rec.content_type or None
                return Response(
                    status=rec.status, body=rec.body, content_type=ctype, headers=headers
                )
            await store.wait(scope, decision.until)
        # Held: run the request, then keep its answer, or free the key.
        holding = self._held
        holding[scope] = token
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew())
        try:
            try:
                reply = await answer(request, call, held)
            except GatewayError as exc:
                reply = error_reply(exc, call)
        except BaseException:
            holding.pop(scope, None)
            with contextlib.suppress(StoreUnavailable):
                await store.release(scope, token)
            raise
        holding.pop(scope, None)
        if type(reply) is Response and local is not None:
            local.finish_now(scope, token, reply.status, reply.body, reply.content_type or "")
            return reply
        try:
            if isinstance(reply, Response):
                await store.finish(scope, token, reply.status, reply.body, reply.content_type or "")
            else:
                await store.release(scope, token)  # a stream after all: never replayed
        except StoreUnavailable:
            # The answer is here: send it. Its key frees itself when the lock expires.
            log.warning("request %s: its answer could not be stored for replay", call.rid)
        return reply

    def _ended(self, task: asyncio.Future[Reply]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            task.exception()  # (retrieved: its client may be gone, nobody else will)

    async def _renew(self) -> None:
        """Renew the lock of every key still held, each beat; end when none is."""
        try:
            while self._held:
                await asyncio.sleep(self.beat)
                for scope, token in list(self._held.items()):
                    if self._held.get(scope) == token:  # (not ended during an await)
                        with contextlib.suppress(StoreUnavailable):
                            await self.store.refresh(scope, token)
        finally:
            self._renewer = None

    async def close(self) -> None:
        """Stop renewing (the store closes after this)."""
        renewer = self._renewer
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
