"""The idempotency record's lifecycle (``gateway.core.idempotency``), on its own: every
transition from every state, expiry by the clock handed in, and whole runs of
random transitions checked against a small model of what a key may do."""

from __future__ import annotations

import random

import pytest

from gateway.core import idempotency as idem
from gateway.errors import IdempotencyKeyReused, InvalidRequest

FP = idem.fingerprint("/v1/responses", b'{"model":"m1","input":"Hi"}')
OTHER = idem.fingerprint("/v1/responses", b'{"model":"m1","input":"Ho"}')
TTL, KEEP_FOR = 30.0, 3600.0


def running(token: str = "a", now: float = 0.0) -> idem.Record:
    decision = idem.claim(None, FP, token, now, TTL)
    assert isinstance(decision, idem.Run)
    return decision.record


def done(status: int = 200, now: float = 1.0) -> idem.Record:
    change = idem.finish(running(), "a", status, b"{}", "application/json", now, KEEP_FOR)
    assert isinstance(change, idem.Record)
    return change


def test_absent_runs_and_locks_until_the_ttl() -> None:
    rec = running(now=100.0)
    assert not rec.done and rec.token == "a" and rec.expires == 130.0 and rec.fingerprint == FP


def test_in_flight_same_body_waits_until_the_lock_ends() -> None:
    assert idem.claim(running(), FP, "b", 10.0, TTL) == idem.Wait(30.0)


def test_in_flight_other_body_conflicts() -> None:
    with pytest.raises(IdempotencyKeyReused) as info:
        idem.claim(running(), OTHER, "b", 10.0, TTL)
    assert info.value.status == 422 and info.value.code == "idempotency_key_reused"


def test_an_abandoned_lock_expires_and_the_next_request_runs() -> None:
    decision = idem.claim(running(), FP, "b", TTL, TTL)  # exactly at the lock's end
    assert isinstance(decision, idem.Run) and decision.record.token == "b"
    # ... and the first holder's late answer no longer counts.
    assert idem.finish(decision.record, "a", 200, b"x", "", 31.0, KEEP_FOR) is idem.KEEP
    assert idem.release(decision.record, "a", 31.0) is idem.KEEP


def test_refresh_extends_the_holders_lock_only() -> None:
    rec = running()
    renewed = idem.refresh(rec, "a", 20.0, TTL)
    assert isinstance(renewed, idem.Record) and renewed.expires == 50.0
    assert idem.claim(renewed, FP, "b", 40.0, TTL) == idem.Wait(50.0)
    assert idem.refresh(rec, "b", 20.0, TTL) is idem.KEEP
    assert idem.refresh(rec, "a", 31.0, TTL) is idem.KEEP  # too late: the lock is gone
    assert idem.refresh(None, "a", 1.0, TTL) is idem.KEEP


@pytest.mark.parametrize("status", [200, 201, 204, 299, 400, 404, 413, 422])
def test_finish_of_an_answer_the_request_would_get_again_is_kept(status: int) -> None:
    rec = idem.finish(running(), "a", status, b"body", "application/json", 5.0, KEEP_FOR)
    assert isinstance(rec, idem.Record) and rec.done
    assert (rec.status, rec.body, rec.content_type, rec.expires) == (
        status,
        b"body",
        "application/json",
        5.0 + KEEP_FOR,
    )
    assert idem.claim(rec, FP, "b", 6.0, TTL) == idem.Replay(rec)


@pytest.mark.parametrize(
    "status", [100, 301, 401, 403, 405, 408, 409, 415, 425, 429, 431, 500, 502, 503, 504]
)
def test_finish_of_an_answer_a_retry_may_not_get_frees_the_key(status: int) -> None:
    assert idem.finish(running(), "a", status, b"x", "", 5.0, KEEP_FOR) is None


def test_release_frees_the_key_for_the_holder_only() -> None:
    assert idem.release(running(), "a", 1.0) is None
    assert idem.release(running(), "b", 1.0) is idem.KEEP
    assert idem.release(None, "a", 1.0) is idem.KEEP


def test_done_other_body_conflicts_and_done_cannot_be_finished_again() -> None:
    rec = done()
    with pytest.raises(IdempotencyKeyReused):
        idem.claim(rec, OTHER, "b", 2.0, TTL)
    assert idem.finish(rec, "a", 200, b"again", "", 2.0, KEEP_FOR) is idem.KEEP
    assert idem.release(rec, "a", 2.0) is idem.KEEP
    assert idem.refresh(rec, "a", 2.0, TTL) is idem.KEEP


def test_done_expires_after_the_retention() -> None:
    rec = done(now=1.0)
    assert isinstance(idem.claim(rec, FP, "b", 1.0 + KEEP_FOR - 0.001, TTL), idem.Replay)
    assert isinstance(idem.claim(rec, FP, "b", 1.0 + KEEP_FOR, TTL), idem.Run)
    assert isinstance(idem.claim(rec, OTHER, "b", 1.0 + KEEP_FOR, TTL), idem.Run)


def test_keys_scopes_and_fingerprints() -> None:
    assert idem.check_key("k" * 255) == "k" * 255
    for bad in ("", "k" * 256):
        with pytest.raises(InvalidRequest) as info:
            idem.check_key(bad)
        assert info.value.status == 400 and info.value.param == "Idempotency-Key"
    assert idem.scope("t1", "k") != idem.scope("t2", "k")
    assert idem.scope("t1", "k") == idem.scope("t1", "k")
    assert len(idem.scope("t1", "x" * 255)) == len(idem.scope("t1", "y"))
    assert idem.fingerprint("/v1/responses", b"{}") != idem.fingerprint(
        "/v1/chat/completions", b"{}"
    )


def test_records_round_trip_as_bytes() -> None:
    for rec in (running(), done(404)):
        assert idem.decode(idem.encode(rec)) == rec
    assert idem.decode(None) is None
    assert idem.decode(b"\xc1 not msgpack") is None


def test_random_runs_keep_the_promise() -> None:
    """Many holders, a clock, random transitions: at most one holder at a time, a
    done record never changes until it expires, and every Replay is the answer
    that was kept."""
    rng = random.Random(10)
    for _ in range(300):
        record: idem.Record | None = None
        now = 0.0
        kept: idem.Record | None = None
        for step in range(40):
            now += rng.choice([0.0, 1.0, 10.0, TTL, KEEP_FOR / 2])
            token = f"t{rng.randrange(4)}"
            fp = FP if rng.random() < 0.9 else OTHER
            op = rng.choice(["claim", "claim", "finish", "release", "refresh"])
            if kept is not None and kept.expires <= now:
                kept = None
            before = idem.live(record, now)
            if op == "claim":
                try:
                    decision = idem.claim(record, fp, token, now, TTL)
                except IdempotencyKeyReused:
                    assert before is not None and before.fingerprint != fp
                    continue
                if isinstance(decision, idem.Run):
                    assert before is None
                    record = decision.record
                elif isinstance(decision, idem.Replay):
                    assert decision.record == kept
                else:
                    assert before is not None and not before.done
                continue
            if op == "finish":
                status = rng.choice([200, 400, 500])
                change = idem.finish(record, token, status, b"%d" % step, "", now, KEEP_FOR)
            elif op == "release":
                change = idem.release(record, token, now)
            else:
                change = idem.refresh(record, token, now, TTL)
            if change is idem.KEEP:
                continue
            assert before is not None and not before.done and before.token == token
            record = change
            if isinstance(change, idem.Record) and change.done:
                kept = change
