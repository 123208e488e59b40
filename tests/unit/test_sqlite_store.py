"""The workers' shared store (``stores.sqlite``) on its own: two handles on one database
file stand for two workers; its bounds; a full store of records in flight."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core import idempotency as idem
from gateway.errors import Overloaded
from gateway.stores.sqlite import SqliteStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_two_handles_on_one_file_share_records_and_counters(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    a, b = SqliteStore(path), SqliteStore(path)
    try:
        scope, fp = a.scope("t1", "key"), a.fingerprint("/v1/responses", b"{}")
        assert scope == b.scope("t1", "key") and fp == b.fingerprint("/v1/responses", b"{}")
        assert isinstance(await a.claim(scope, fp, "tok-a"), idem.Run)
        assert isinstance(await b.claim(scope, fp, "tok-b"), idem.Wait)  # held by a
        await a.finish(scope, "tok-a", 200, b"answer", "application/json")
        replay = await b.claim(scope, fp, "tok-b")
        assert isinstance(replay, idem.Replay) and replay.record.body == b"answer"
        assert (await a.hit("t1"))[0] == 1 and (await b.hit("t1"))[0] == 2
        assert await a.enter("t1", "s1", 1) == 1
        assert await b.enter("t1", "s2", 1) == -1  # the one slot is a's
        await a.leave("t1", "s1")
        assert await b.enter("t1", "s2", 1) == 1
        await b.leave("t1", "s2")
    finally:
        await a.close()
        await b.close()


async def test_bounded_oldest_done_first_and_full_of_flight_refuses(tmp_path: Path) -> None:
    clock = Clock()
    store = SqliteStore(str(tmp_path / "s.db"), max_entries=10, clock=clock)
    try:
        fp = store.fingerprint("/p", b"x")
        for i in range(30):
            clock.now += 1.5  # (past the once-a-second sweep each time)
            scope = store.scope("t", f"k{i}")
            await store.claim(scope, fp, f"t{i}")
            await store.finish(scope, f"t{i}", 200, b"y" * 10, "")
        (count,) = store.db.execute("SELECT count(*) FROM records").fetchone()
        assert count <= 10
        newest = await store.claim(store.scope("t", "k29"), fp, "again")
        assert isinstance(newest, idem.Replay)  # the newest stayed
        oldest = await store.claim(store.scope("t", "k0"), fp, "again")
        assert isinstance(oldest, idem.Run)  # the oldest went
        with pytest.raises(Overloaded):
            for i in range(20):  # records in flight are never dropped for room
                clock.now += 1.5
                await store.claim(store.scope("t", f"f{i}"), fp, f"f{i}")
    finally:
        await store.close()
