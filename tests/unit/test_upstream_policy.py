"""The pure decisions of a replicated deployment (``gateway.upstream.policy``), on
their own: no sockets, a seeded random source and a hand-moved clock."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from gateway.errors import (
    CHUNK_TIMEOUT,
    CONNECT_TIMEOUT,
    HEADERS_TIMEOUT,
    ContextLengthExceeded,
    InvalidRequest,
    UpstreamBadResponse,
    UpstreamBusy,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    UpstreamUnreachable,
    upstream_error_from_body,
)
from gateway.upstream.policy import (
    Balancer,
    ReplicaHealth,
    Retries,
    failure_weight,
    key_hash,
    may_eject,
    replica_seed,
)


@dataclass(eq=False)
class R:
    name: str
    in_flight: int = 0
    weight: float = 1.0
    healthy: bool = True

    @property
    def seed(self) -> int:
        return replica_seed(self.name)


def three(**kw: float) -> list[R]:
    return [R(f"http://10.0.0.{i}:8000/v1", **kw) for i in range(3)]


# ---- least loaded -------------------------------------------------------------------------


def test_least_loaded_wins() -> None:
    a, b, c = three()
    a.in_flight, b.in_flight, c.in_flight = 5, 2, 7
    assert Balancer(rng=random.Random(1)).pick([a, b, c]) is b


def test_ties_are_broken_at_random_evenly() -> None:
    reps = three()
    reps[2].in_flight = 1
    bal = Balancer(rng=random.Random(7))
    got = Counter(bal.pick(reps).name for _ in range(3000))
    assert set(got) == {reps[0].name, reps[1].name}
    assert 1300 <= got[reps[0].name] <= 1700, got


def test_weights_scale_the_load() -> None:
    a, b = R("a", in_flight=3, weight=1.0), R("b", in_flight=5, weight=2.0)
    assert Balancer().pick([a, b]) is b  # 2.5 per unit of weight against 3


def test_under_load_the_spread_follows_the_weights() -> None:
    reps = [R("a"), R("b"), R("c", weight=2.0)]
    bal = Balancer(rng=random.Random(3))
    for _ in range(400):  # requests that stay in flight
        bal.pick(reps).in_flight += 1  # type: ignore[union-attr]
    assert [r.in_flight for r in reps] == [100, 100, 200]


def test_unhealthy_and_excluded_replicas_are_never_picked_while_a_healthy_one_is_left() -> None:
    a, b, c = three()
    b.healthy = False
    bal = Balancer(rng=random.Random(2))
    assert {bal.pick([a, b, c], exclude=[a]).name for _ in range(50)} == {c.name}  # type: ignore[union-attr]
    c.healthy = False
    assert bal.pick([a, b, c]) is a
    assert bal.pick([a, b, c], exclude=[a, b, c]) is None
    assert bal.pick([]) is None


def test_with_no_healthy_replica_every_one_is_tried_not_none() -> None:
    """Panic: a deployment whose replicas are all out still sends each request to one
    (never a refusal without trying), and a retry to one not tried yet."""
    a, b, c = three()
    for r in (a, b, c):
        r.healthy = False
    bal = Balancer(rng=random.Random(3))
    assert {bal.pick([a, b, c]).name for _ in range(60)} == {a.name, b.name, c.name}  # type: ignore[union-attr]
    assert {bal.pick([a, b, c], exclude=[a]).name for _ in range(60)} == {b.name, c.name}  # type: ignore[union-attr]
    assert bal.pick([a, b, c], key_hash("k"), exclude=[a, b]) is c
    b.healthy = True  # one is back: only it
    assert {bal.pick([a, b, c]).name for _ in range(30)} == {b.name}  # type: ignore[union-attr]


# ---- rendezvous affinity ------------------------------------------------------------------


def homes(bal: Balancer, reps: list[R], keys: list[str]) -> dict[str, str]:
    return {k: bal.pick(reps, key_hash(k)).name for k in keys}  # type: ignore[union-attr]


KEYS = [f"thread-{i}" for i in range(3000)]


def test_a_key_keeps_its_replica_and_keys_spread_evenly() -> None:
    reps = three()
    bal = Balancer(rng=random.Random(0))
    first = homes(bal, reps, KEYS)
    assert homes(Balancer(rng=random.Random(99)), reps, KEYS) == first  # no randomness
    shares = Counter(first.values())
    assert all(900 <= n <= 1100 for n in shares.values()), shares
    # replicas listed in another order: the same homes (the seed is the URL)
    assert homes(bal, reps[::-1], KEYS) == first


def test_an_ejected_replicas_keys_spread_and_come_back_and_no_other_key_moves() -> None:
    reps = three()
    bal = Balancer()
    before = homes(bal, reps, KEYS)
    reps[1].healthy = False
    during = homes(bal, reps, KEYS)
    moved = [k for k in KEYS if before[k] != during[k]]
    assert all(before[k] == reps[1].name for k in moved)  # only the ejected one's keys
    assert len(moved) == sum(1 for k in KEYS if before[k] == reps[1].name)
    spread = Counter(during[k] for k in moved)
    assert len(spread) == 2 and min(spread.values()) > len(moved) / 3  # over both others
    reps[1].healthy = True
    assert homes(bal, reps, KEYS) == before


def test_weighted_rendezvous_gives_a_heavier_replica_more_keys() -> None:
    reps = [R("a"), R("b"), R("c", weight=2.0)]
    shares = Counter(homes(Balancer(), reps, KEYS).values())
    assert 0.45 <= shares["c"] / len(KEYS) <= 0.55, shares


def test_a_far_more_loaded_home_is_skipped_for_the_next_in_the_keys_order() -> None:
    reps = three()
    bal = Balancer(load_factor=2.0)
    kh = key_hash("hot")
    order = bal.order(reps, kh)
    home, second = order[0], order[1]
    home.in_flight = 3  # (3 + 1) <= 2.0 * 4 / 3 ? no: skipped
    assert bal.pick(reps, kh) is second
    home.in_flight = 1  # (1 + 1) <= 2.0 * 2 / 3 = 1.33? no; but a single one is always allowed
    second.in_flight = 1
    order[2].in_flight = 1  # (1 + 1) <= 2.0 * 4 / 3 = 2.67: yes
    assert bal.pick(reps, kh) is home
    home.in_flight, second.in_flight, order[2].in_flight = 40, 10, 9
    assert bal.pick(reps, kh) is second  # the key's next, not the least loaded
    tight = Balancer(load_factor=1.0, rng=random.Random(5))
    home.in_flight, second.in_flight, order[2].in_flight = 2, 2, 1
    assert tight.pick(reps, kh) is order[2]  # none within 1.0 x the mean: least loaded


def test_every_replica_is_first_for_some_key_and_the_order_is_a_permutation() -> None:
    reps = three()
    bal = Balancer()
    firsts = set()
    for k in KEYS[:200]:
        order = bal.order(reps, key_hash(k))
        assert sorted(r.name for r in order) == sorted(r.name for r in reps)
        firsts.add(order[0].name)
    assert len(firsts) == 3


# ---- health -------------------------------------------------------------------------------


def test_ejected_after_n_consecutive_failures_only() -> None:
    h = ReplicaHealth(eject_after=3, probe_interval=2.0)
    assert not h.failure(10.0) and not h.failure(10.1)
    h.success()  # not consecutive: the count starts over
    assert not h.failure(11.0) and not h.failure(11.1) and h.healthy
    assert h.failure(11.2)  # the third in a row
    assert not h.healthy and h.ejected_at == 11.2
    assert not h.failure(11.3)  # already out: no second ejection


def test_probe_schedule_follows_the_clock() -> None:
    h = ReplicaHealth(eject_after=1, probe_interval=2.0)
    assert h.failure(100.0)
    assert h.probe_in(100.0) == 2.0 and h.probe_in(101.5) == 0.5 and h.probe_in(103.0) == 0.0
    h.failure(102.0)  # a failed probe: the next one interval later
    assert h.probe_in(102.0) == 2.0


def test_failures_are_weighed_and_count_on_while_ejection_is_not_allowed() -> None:
    h = ReplicaHealth(eject_after=3, probe_interval=1.0)
    for t in range(5):  # five half failures: 2.5
        assert not h.failure(float(t), 0.5)
    assert h.failure(5.0, 0.5) and not h.healthy  # the sixth: 3
    h = ReplicaHealth(eject_after=2, probe_interval=1.0)
    for t in range(5):
        assert not h.failure(float(t), 1.0, may_eject=False) and h.healthy
    assert h.failure(6.0, 1.0, may_eject=True)  # allowed again: out at once


def test_at_most_half_of_the_replicas_are_ejected_never_the_only_one() -> None:
    def healths(n: int, out: int) -> list[ReplicaHealth]:
        hs = [ReplicaHealth(eject_after=1) for _ in range(n)]
        for h in hs[:out]:
            h.failure(0.0)
        return hs

    assert not may_eject(healths(1, 0))
    assert may_eject(healths(2, 0)) and not may_eject(healths(2, 1))
    assert may_eject(healths(3, 0)) and not may_eject(healths(3, 1))
    assert may_eject(healths(4, 1)) and not may_eject(healths(4, 2))
    assert may_eject(healths(10, 4)) and not may_eject(healths(10, 5))


def test_back_on_probation_then_cleared() -> None:
    h = ReplicaHealth(eject_after=3, probe_interval=1.0)
    for t in range(3):
        h.failure(float(t))
    assert h.success() and h.healthy  # back
    assert h.failure(5.0) and not h.healthy  # one failure on probation ejects again
    assert h.success()
    assert not h.success() and h.failures == 0  # an answer clears the probation
    assert not h.failure(6.0) and h.healthy


# ---- retries ------------------------------------------------------------------------------

SAFE = [
    UpstreamUnreachable("refused"),
    UpstreamTimeout("connect", code=CONNECT_TIMEOUT),
    UpstreamRateLimited("slow down", 2.0),
    UpstreamBusy("full"),
    UpstreamBusy("503", answered=True),
]
UNSAFE = [
    UpstreamUnavailable("closed after the request was sent"),
    UpstreamUnavailable("The upstream server failed (HTTP 500)"),
    UpstreamTimeout("no headers", code=HEADERS_TIMEOUT),
    UpstreamTimeout("stalled", code=CHUNK_TIMEOUT),
    UpstreamBadResponse("garbage"),
    UpstreamRejected(400, "bad"),
    ContextLengthExceeded("too long"),
]


@pytest.mark.parametrize("exc", SAFE, ids=lambda e: type(e).__name__)
def test_safe_errors_are_retried_within_attempts_and_deadline(exc: Exception) -> None:
    r = Retries(max_attempts=3)
    assert r.again(exc, 1, now=5.0, deadline=10.0)  # type: ignore[arg-type]
    assert r.again(exc, 2, now=9.9, deadline=10.0)  # type: ignore[arg-type]
    assert not r.again(exc, 3, now=5.0, deadline=10.0)  # type: ignore[arg-type]
    assert not r.again(exc, 1, now=10.0, deadline=10.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("exc", UNSAFE, ids=lambda e: f"{type(e).__name__}-{e.code}")
def test_anything_that_may_have_reached_a_model_is_never_retried(exc: Exception) -> None:
    assert not Retries(max_attempts=10).again(exc, 1, now=0.0, deadline=100.0)  # type: ignore[arg-type]


def test_what_counts_against_a_replicas_health_and_how_much() -> None:
    """No answer weighs a whole failure; an answer from a live server half, or nothing."""
    assert failure_weight(UpstreamUnreachable("refused")) == 1.0
    assert failure_weight(UpstreamTimeout("connect", code=CONNECT_TIMEOUT)) == 1.0
    assert failure_weight(UpstreamTimeout("stall", code=HEADERS_TIMEOUT)) == 1.0
    assert failure_weight(UpstreamBadResponse("garbage")) == 1.0
    assert failure_weight(UpstreamUnavailable("The upstream server closed the connection.")) == 1.0
    assert failure_weight(upstream_error_from_body(500, b'{"error": "boom"}')) == 0.5
    assert failure_weight(UpstreamBusy("503", answered=True)) == 0.5  # no Retry-After
    assert failure_weight(upstream_error_from_body(503, b"full", b"7")) == 0.0
    assert failure_weight(UpstreamBusy("the gateway's own connection cap")) == 0.0
    assert failure_weight(UpstreamRateLimited("slow down", None)) == 0.0
    assert failure_weight(ContextLengthExceeded("too long")) == 0.0
    assert failure_weight(InvalidRequest("bad")) == 0.0
    image = b'{"error": {"code": 500, "message": "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj", "type": "server_error"}}'
    assert failure_weight(upstream_error_from_body(500, image)) == 0.0
