"""The in-memory idempotency store on its own, with an injected clock: its bounds by
entries and bytes, expiry, in-flight records never dropped for room, a full store of
in-flight keys refused, waiters woken when the holder ends."""

from __future__ import annotations

import asyncio
import random
import tracemalloc

import orjson
import pytest

from gateway.core import idempotency as idem
from gateway.errors import IdempotencyKeyReused, Overloaded
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


# ---- the store against a model -------------------------------------------------------
# The store's common transitions skip its general write path (``_put``) when they can:
# a claim of a new key with room, an answer that fits. A random run of claims, answers,
# releases and clock steps, on small bounds, checks every step against a model of the
# rules: what is replayed, what is in flight, what was dropped for room, in which order.


class Model:
    """The rules, spelled out: records in the order last written, each (token, status,
    body, expires); a full store drops the expired ones at its front, then the oldest
    that are done or expired; never a live one in flight."""

    def __init__(self, max_entries: int, max_bytes: int, retention: float, ttl: float) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.retention, self.ttl = retention, ttl
        self.records: dict[str, tuple[str, int, bytes, float]] = {}
        self.trims: list[int] = []  # records dropped for room, at each time

    def live(self, scope: str, now: float) -> tuple[str, int, bytes, float] | None:
        rec = self.records.get(scope)
        return rec if rec is not None and rec[3] > now else None

    def _fit(self, now: float, room: int = 0) -> None:
        most = self.max_entries - room
        if len(self.records) <= most and self.size() <= self.max_bytes:
            return
        for scope, rec in list(self.records.items()):  # the expired front goes first
            if rec[3] > now:
                break
            del self.records[scope]
        entries, size = len(self.records), self.size()
        if entries <= most and size <= self.max_bytes:
            return
        # Then the oldest done or expired, down to a hundredth of each bound below it.
        most = most - self.max_entries // 100 if entries > most else entries
        least = self.max_bytes - self.max_bytes // 100 if size > self.max_bytes else size
        for scope, rec in list(self.records.items()):
            if len(self.records) <= most and size <= least:
                break
            if rec[1] or rec[3] <= now:
                del self.records[scope]
                size -= len(rec[2])
        self.trims.append(entries - len(self.records))

    def size(self) -> int:
        return sum(len(r[2]) for r in self.records.values())

    def claim(self, scope: str, token: str, now: float) -> str:
        rec = self.live(scope, now)
        if rec is not None:
            return "replay" if rec[1] else "wait"
        if scope not in self.records and len(self.records) >= self.max_entries:
            self._fit(now, room=1)
            if len(self.records) >= self.max_entries:
                return "full"
        self.records.pop(scope, None)
        self.records[scope] = (token, 0, b"", now + self.ttl)
        return "run"

    def finish(self, scope: str, token: str, body: bytes, now: float) -> None:
        rec = self.live(scope, now)
        if rec is None or rec[1] or rec[0] != token:
            return
        del self.records[scope]
        if len(body) <= self.max_bytes:
            self.records[scope] = (token, 200, body, now + self.retention)
            self._fit(now)

    def release(self, scope: str, token: str, now: float) -> None:
        rec = self.live(scope, now)
        if rec is not None and not rec[1] and rec[0] == token:
            del self.records[scope]


async def check_against_model(
    seed: int, entries: int, size: int, keys: int, retention: float = 8.0, ttl: float = 3.0
) -> Model:
    rng = random.Random(seed)
    clock = Clock()
    store = MemoryStore(
        max_entries=entries, max_bytes=size, retention=retention, lock_ttl=ttl, clock=clock
    )
    model = Model(entries, size, retention, ttl)
    holders: dict[str, str] = {}  # scope -> the token that holds it (as far as we know)
    for step in range(300 if keys < 100 else 8000):
        op = rng.random()
        scope = f"k{rng.randrange(keys)}"
        if op < 0.45:
            token = f"t{step}"
            try:
                got = await store.claim(scope, FP, token)
                kind = {idem.Run: "run", idem.Wait: "wait", idem.Replay: "replay"}[type(got)]
            except Overloaded:
                kind = "full"
            assert kind == model.claim(scope, token, clock.now), (seed, step, scope)
            if kind == "run":
                holders[scope] = token
        elif op < 0.75 and scope in holders:
            body = bytes(rng.randrange(256) for _ in range(rng.choice((0, 5, 20, 70))))
            await store.finish(scope, holders[scope], 200, body, "application/json")
            model.finish(scope, holders.pop(scope), body, clock.now)
        elif op < 0.85 and scope in holders:
            await store.release(scope, holders[scope])
            model.release(scope, holders.pop(scope), clock.now)
        else:
            clock.now += rng.choice((0.2, 0.5, 1.1, 2.5))
        # What is live agrees, record by record, in the order last written.
        live = [
            (s, r.token, r.status, r.body)
            for s, r in store.records.items()
            if r.expires > clock.now
        ]
        want = [(s, r[0], r[1], r[2]) for s, r in model.records.items() if r[3] > clock.now]
        assert live == want, (seed, step)
        assert store.bytes == sum(len(r.body) for r in store.records.values())
        assert store.bytes <= size
    return model


@pytest.mark.parametrize("seed", range(40))
async def test_the_store_follows_the_model(seed: int) -> None:
    await check_against_model(seed, entries=6, size=60, keys=10)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    ("entries", "size"), [(5_000, 3_000), (200, 10**6)], ids=["bytes-bound", "entries-bound"]
)
async def test_a_full_store_drops_a_hundredth_at_a_time(seed: int, entries: int, size: int) -> None:
    model = await check_against_model(seed, entries, size, keys=2_000, retention=1e6, ttl=1e6)
    assert model.trims and max(model.trims) > 1  # (it filled, and dropped several at once)


async def test_a_kept_answer_holds_only_its_own_bytes() -> None:
    """orjson's output keeps the buffer it grew (4 KB for a few hundred bytes); a store
    that keeps answers for hours keeps a copy of their size."""
    store = MemoryStore(clock=Clock())
    doc = {"id": "resp_1", "output": [{"type": "output_text", "text": "word " * 60}]}
    size = len(orjson.dumps(doc))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(200):
            await store.claim(f"k{i}", FP, f"t{i}")
            await store.finish(f"k{i}", f"t{i}", 200, orjson.dumps(doc), "application/json")
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert store.bytes == 200 * size
    assert grown / 200 < size + 400, (grown / 200, size)  # the bytes, the record, its keys


async def test_its_own_fingerprint_tells_requests_apart_by_route_and_body() -> None:
    """The in-process store's digest (Python's keyed hash): the same route and bytes
    give the same one, another body or route another; a retry with a changed body is
    refused as with the shared stores' BLAKE2b."""
    store = MemoryStore(clock=Clock())
    body = b'{"model":"m1","input":"Hi"}'
    fp = store.fingerprint("/v1/responses", body)
    assert fp == store.fingerprint("/v1/responses", bytes(bytearray(body)))  # (equal bytes)
    others = {
        store.fingerprint("/v1/responses", b'{"model":"m1","input":"Ho"}'),
        store.fingerprint("/v1/chat/completions", body),
        store.fingerprint("/v1/responses", body + b" "),
    }
    assert fp not in others and len(others) == 3
    assert store.claim_now("s", fp, "t") is None  # (held: no Run made for it)
    store.finish_now("s", "t", 200, b"answer", "application/json")
    replay = store.claim_now("s", store.fingerprint("/v1/responses", body), "u")
    assert isinstance(replay, idem.Replay) and replay.record.body == b"answer"
    with pytest.raises(IdempotencyKeyReused):
        store.claim_now("s", store.fingerprint("/v1/chat/completions", body), "u")
