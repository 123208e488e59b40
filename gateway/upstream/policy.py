"""The decisions of a replicated deployment, as pure objects: which replica takes a
request (``Balancer``), when a replica is out and when it is probed (``ReplicaHealth``),
and whether a failed attempt may go to another replica (``Retries``).

No I/O, no clock of their own: the caller hands in ``now`` (seconds, any monotonic
origin) and the random source, so each decision is tested on its own
(``tests/unit/test_upstream_policy.py``). ``replicas.ReplicaSet`` runs them.

Balancing: the healthy replica with the fewest requests in flight per unit of
weight, ties broken at random. With an affinity key (a conversation's
``prompt_cache_key``, ...) the replicas are ranked by weighted rendezvous hashing
of the key, and the first of that order whose load stays within
``load_factor`` times the mean takes it (bounded-load hashing): the same key
goes to the same replica while it is healthy and not far more loaded than the
rest; when it is ejected its keys spread over the others (each key to its own
next in order) and come back when it returns, and no other key moves.

No black holes (the rules nginx and Envoy follow): an answer from a live server
weighs less against it than a refused or timed-out connection (``failure_weight``);
at most ``MAX_EJECTED_SHARE`` of a deployment's replicas are ejected at once, so the
only replica of a deployment never is (``may_eject``); and should none be healthy,
the balancer routes to all of them rather than to none (panic).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from hashlib import blake2b
from typing import Protocol, TypeVar

from gateway.errors import (
    CONNECT_TIMEOUT,
    ClientError,
    GatewayError,
    UpstreamBusy,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from gateway.limits import MAX_EJECTED_SHARE

MASK = (1 << 64) - 1


class Member(Protocol):
    """What the balancer reads of a replica."""

    @property
    def in_flight(self) -> int: ...
    @property
    def weight(self) -> float: ...
    @property
    def seed(self) -> int: ...
    @property
    def healthy(self) -> bool: ...


M = TypeVar("M", bound=Member)


def key_hash(key: str) -> int:
    """A 64-bit hash of an affinity key (stable across processes and restarts)."""
    return int.from_bytes(blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest())


def replica_seed(name: str) -> int:
    """A replica's rendezvous seed, from its base URL: stable across restarts, so a
    key keeps its replica when the gateway restarts or another process serves it."""
    return key_hash(name)


def _mix(x: int) -> int:
    """A 64-bit finaliser (splitmix64's): a uniform hash of key and seed together."""
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def rendezvous_score(khash: int, seed: int, weight: float) -> float:
    """Weighted rendezvous score: the highest wins (-w / ln u, u uniform in (0, 1))."""
    u = (_mix(khash ^ seed) + 1) / (MASK + 2)
    return -weight / math.log(u)


class Balancer:
    """Picks a replica: least loaded (per weight, ties at random), or by affinity key."""

    __slots__ = ("load_factor", "rng")

    def __init__(self, load_factor: float = 2.0, rng: random.Random | None = None) -> None:
        self.load_factor = load_factor
        self.rng = rng or random.Random()

    def pick(
        self, replicas: Sequence[M], khash: int | None = None, exclude: Sequence[M] = ()
    ) -> M | None:
        """The replica for the next request (None: every one is in ``exclude``). With no
        healthy replica outside ``exclude``, every one outside it is a candidate (panic:
        a request that tries is better than one refused without trying)."""
        if exclude:
            cands = [r for r in replicas if r.healthy and r not in exclude]
            if not cands:
                cands = [r for r in replicas if r not in exclude]
        else:
            cands = [r for r in replicas if r.healthy]
            if not cands:
                cands = list(replicas)
        if len(cands) <= 1:
            return cands[0] if cands else None
        if khash is not None:
            chosen = self._by_key(cands, khash)
            if chosen is not None:
                return chosen
        return self.least_loaded(cands)

    def least_loaded(self, cands: Sequence[M]) -> M:
        best = cands[0]
        low = best.in_flight / best.weight
        ties = 1
        for i in range(1, len(cands)):
            r = cands[i]
            load = r.in_flight / r.weight
            if load < low:
                best, low, ties = r, load, 1
            elif load == low:
                ties += 1  # reservoir sampling: each of the tied wins with 1 / ties
                if self.rng.random() * ties < 1:
                    best = r
        return best

    def order(self, cands: Sequence[M], khash: int) -> list[M]:
        """The replicas in the key's rendezvous order (its own replica first)."""
        return sorted(cands, key=lambda r: rendezvous_score(khash, r.seed, r.weight), reverse=True)

    def _by_key(self, cands: Sequence[M], khash: int) -> M | None:
        """The first replica of the key's order that stays within the load bound: its
        share of the requests in flight (this one included) at most ``load_factor``
        times its weighted fair share."""
        total = sum(r.in_flight for r in cands) + 1
        weights = sum(r.weight for r in cands)
        bound = self.load_factor * total / weights
        for r in self.order(cands, khash):
            if r.in_flight + 1 <= max(1.0, bound * r.weight):
                return r
        return None


class ReplicaHealth:
    """One replica's health: ejected after ``eject_after`` consecutive failures,
    probed every ``probe_interval`` seconds while out, back on its first success."""

    __slots__ = ("eject_after", "probe_interval", "failures", "healthy", "ejected_at", "next_probe")

    def __init__(self, eject_after: int = 3, probe_interval: float = 2.0) -> None:
        self.eject_after = eject_after
        self.probe_interval = probe_interval
        self.failures = 0.0  # consecutive, weighed (failure_weight)
        self.healthy = True
        self.ejected_at = 0.0
        self.next_probe = 0.0

    def success(self) -> bool:
        """An answer (or a probe's 2xx); True when this brings the replica back. A
        replica back from ejection is on probation: its next failure ejects it
        again, its first answered request clears it."""
        if self.healthy:
            self.failures = 0.0
            return False
        self.healthy = True
        self.failures = self.eject_after - 1.0
        return True

    def failure(self, now: float, weight: float = 1.0, may_eject: bool = True) -> bool:
        """A failure of ``weight`` (``failure_weight``); True when this ejects the
        replica, which it does not while ``may_eject`` is False (its failures go on
        counting: the next failure when it may ejects it)."""
        self.failures += weight
        if not self.healthy or self.failures < self.eject_after or not may_eject:
            if not self.healthy:
                self.next_probe = now + self.probe_interval
            return False
        self.healthy = False
        self.ejected_at = now
        self.next_probe = now + self.probe_interval
        return True

    def probe_in(self, now: float) -> float:
        """Seconds until the next probe of an ejected replica is due (0: now)."""
        return max(0.0, self.next_probe - now)


ANSWERED_FAILURE = 0.5  # a 5xx answer: half a refused connection


def failure_weight(exc: GatewayError) -> float:
    """How much an attempt's error counts against the replica's health (``eject-after``
    counts in these units). No answer at all (refused, a connect or header timeout, a
    stall, garbage, a cut connection): 1. A 5xx answer: ``ANSWERED_FAILURE``, since the
    server is alive and may have failed only this request. Nothing for the client's
    errors (4xx, including what its model cannot take), a rate limit, a 503 that says
    when to come back (Retry-After: the server is busy, not gone), or the gateway's own
    cap on connections to it (``UpstreamBusy`` that the replica did not answer)."""
    if isinstance(exc, (UpstreamRejected, ClientError)):
        return 0.0
    if isinstance(exc, UpstreamBusy) and (not exc.answered or exc.wait is not None):
        return 0.0
    answered = isinstance(exc, UpstreamError) and exc.answered
    return ANSWERED_FAILURE if answered else 1.0


def may_eject(healths: Sequence[ReplicaHealth]) -> bool:
    """Whether one more of these replicas may be ejected: at most ``MAX_EJECTED_SHARE``
    of them are out at once (rounded down: never the only one, nor both of two)."""
    out = sum(not h.healthy for h in healths)
    return out + 1 <= int(len(healths) * MAX_EJECTED_SHARE)


class Retries:
    """Whether a failed attempt goes to another replica: only when the request never
    reached a model (a connect failure, or an answer of 429 / 503 before any output),
    at most ``max_attempts`` tries, and never once ``deadline`` has passed."""

    __slots__ = ("max_attempts",)

    def __init__(self, max_attempts: int = 3) -> None:
        self.max_attempts = max_attempts

    @staticmethod
    def safe(exc: GatewayError) -> bool:
        """Nothing of the request can have been generated: safe to send elsewhere."""
        if isinstance(exc, UpstreamUnreachable):
            return True
        if isinstance(exc, UpstreamTimeout):
            return exc.code == CONNECT_TIMEOUT
        return isinstance(exc, (UpstreamRateLimited, UpstreamBusy))

    def again(self, exc: GatewayError, attempts: int, now: float, deadline: float) -> bool:
        """After ``attempts`` tries, the last of which failed with ``exc``."""
        return attempts < self.max_attempts and now < deadline and self.safe(exc)
