"""The in-memory idempotency store on its own, with an injected clock: its bounds by
entries and bytes, expiry, in-flight records never dropped for room, a full store of
in-flight keys refused, waiters woken when the holder ends."""

from __future__ import annotations

import asyncio

import pytest

from gateway.core import idempotency as idem
from gateway.errors import Overloaded
from gateway.stores.memory import MemoryStore

FP = idem.fingerprint("/v1/responses", b"{}")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def done(store: MemoryStore, scope: str, body: bytes = b"answer") -> None:
    assert isinstance(await store.claim(scope, FP, "t-" + scope), idem.Run)
    await store.finish(scope, "t-" + scope, 200, body, "application/json")


async def test_the_oldest_done_records_go_first_when_entries_run_out() -> None:
    store = MemoryStore(max_entries=3, clock=Clock())
    for scope in ("a", "b", "c"):
        await done(store, scope)
    await store.claim("a", FP, "x")  # a replay does not count as a write: "a" stays oldest
    await done(store, "d")
    assert list(store.records) == ["b", "c", "d"]
    assert isinstance(await store.claim("b", FP, "x"), idem.Replay)


async def test_bytes_are_bounded_and_counted_exactly() -> None:
    store = MemoryStore(max_bytes=100, clock=Clock())
    await done(store, "a", b"x" * 40)
    await done(store, "b", b"y" * 40)
    assert store.bytes == 80
    await done(store, "c", b"z" * 40)  # 120 > 100: "a" goes
    assert list(store.records) == ["b", "c"] and store.bytes == 80
    await done(store, "huge", b"h" * 101)  # larger than the store: not kept at all
    assert "huge" not in store.records and store.bytes == 80
    await store.release("b", "t-b")  # (not the holder any more: a done record stays)
    assert store.bytes == 80


async def test_in_flight_records_are_never_dropped_for_room() -> None:
    store = MemoryStore(max_entries=2, clock=Clock())
    assert isinstance(await store.claim("a", FP, "ta"), idem.Run)
    assert isinstance(await store.claim("b", FP, "tb"), idem.Run)
    with pytest.raises(Overloaded):
        await store.claim("c", FP, "tc")
    await store.finish("a", "ta", 200, b"ok", "application/json")
    assert isinstance(await store.claim("c", FP, "tc"), idem.Run)  # the done "a" made room
    assert set(store.records) == {"b", "c"}


async def test_expired_records_are_not_replayed_and_are_dropped() -> None:
    clock = Clock()
    store = MemoryStore(retention=60.0, lock_ttl=5.0, clock=clock)
    await done(store, "old", b"o" * 10)
    clock.now += 30
    await done(store, "new", b"n" * 10)
    clock.now += 31  # "old" is over its retention, "new" is not
    assert isinstance(await store.claim("old", FP, "again"), idem.Run)  # runs afresh
    await store.finish("old", "again", 200, b"fresh", "application/json")
    assert isinstance(await store.claim("new", FP, "x"), idem.Replay)
    clock.now += 61
    await done(store, "later")  # a write a second on sweeps the expired front away
    assert list(store.records) == ["later"] and store.bytes == len(b"answer")


async def test_an_in_flight_lock_ends_at_its_ttl() -> None:
    clock = Clock()
    store = MemoryStore(lock_ttl=5.0, clock=clock)
    assert isinstance(await store.claim("k", FP, "first"), idem.Run)
    assert isinstance(await store.claim("k", FP, "second"), idem.Wait)
    clock.now += 6  # the holder is silent: its lock is over
    assert isinstance(await store.claim("k", FP, "second"), idem.Run)


async def test_a_waiter_wakes_when_the_holder_finishes() -> None:
    store = MemoryStore()
    assert isinstance(await store.claim("k", FP, "holder"), idem.Run)
    waiter = asyncio.ensure_future(store.wait("k", store.clock() + 30))
    await asyncio.sleep(0)
    assert not waiter.done()
    await store.finish("k", "holder", 200, b"ok", "application/json")
    await asyncio.wait_for(waiter, 1.0)  # at once, not at the lock's end
