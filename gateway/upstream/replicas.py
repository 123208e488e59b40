"""A deployment's replicas: balancing, health, retries and load shedding, run.

``ReplicaSet.chat`` is where a request goes upstream: through the deployment's
and the gateway's ``admission.Gate`` (if bounded), to the replica the
``policy.Balancer`` picks, and on to another one when ``policy.Retries`` says
it is safe (the request never reached a model). Each attempt's outcome feeds the
replica's ``policy.ReplicaHealth``; an ejected replica is probed in the background
(one task per ejected replica, ended when it is back or the set closes); an
optional active probe checks every replica every few seconds. At most half of the
replicas are ejected at once (``policy.may_eject``: never the only one), and with
none healthy the balancer tries them all (``policy.Balancer.pick``): a deployment
never refuses a request without trying a replica.

The load a replica carries (``in_flight``) and the gates' slots are given back
when the endpoint releases the answer (``done``, called by its ``release()``).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from functools import partial

from gateway.config import Deployment
from gateway.errors import GatewayError
from gateway.upstream.admission import Gate
from gateway.upstream.policy import Balancer, Retries, failure_weight, key_hash, may_eject
from gateway.upstream.replica import Replica
from gateway.upstream.response import UpstreamResponse
from gateway.upstream.timers import NO_DEADLINE

log = logging.getLogger("gateway")


class ReplicaSet:
    def __init__(self, dep: Deployment, key: str | None, overload: Gate | None = None) -> None:
        self.dep = dep
        weights = dep.weights or (1.0,) * len(dep.urls)
        self.replicas = [
            Replica(dep, key, url, w) for url, w in zip(dep.urls, weights, strict=True)
        ]
        self.many = len(self.replicas) > 1  # affinity keys matter only then
        self.balancer = Balancer(dep.affinity_load_factor)
        self.retries = Retries(dep.max_attempts)
        gate = None
        if dep.max_in_flight:
            gate = Gate("deployment", dep.max_in_flight, dep.max_queued, dep.queue_timeout)
        self.gates = tuple(g for g in (overload, gate) if g is not None)
        self.probes: dict[Replica, asyncio.Task[None]] = {}
        self.active: asyncio.Task[None] | None = None
        self.closed = False

    @property
    def healthy(self) -> bool:
        """At least one replica is in (``/readyz``)."""
        return any(r.healthy for r in self.replicas)

    def start(self) -> None:
        """Start the active probe, if configured (needs the running loop)."""
        if self.dep.active_probe_interval and self.active is None and not self.closed:
            self.active = asyncio.get_running_loop().create_task(self._probe_all())

    # ---- a request ---------------------------------------------------------------------

    async def chat(
        self, body: bytes, request_id: str | None = None, key: str | None = None
    ) -> UpstreamResponse:
        """Send a chat request to a replica; its answer once the status is 2xx.

        ``key``: the request's affinity key (None: least loaded). The caller must
        ``release()`` the result, which gives the replica's load and the slots back.
        """
        gates = self.gates
        entered = 0
        try:
            for gate in gates:
                await gate.enter()
                entered += 1
            return await self._attempts(body, request_id, key)
        except BaseException:
            for gate in gates[:entered]:
                gate.leave()
            raise

    async def _attempts(
        self, body: bytes, request_id: str | None, key: str | None
    ) -> UpstreamResponse:
        loop = asyncio.get_running_loop()
        now = loop.time()
        dep = self.dep
        deadline = now + dep.request_timeout if dep.request_timeout else NO_DEADLINE
        budget = min(deadline, now + dep.retry_budget)
        khash = key_hash(key) if key and self.many else None
        tried: list[Replica] = []
        last: GatewayError | None = None
        while True:
            replica = self.balancer.pick(self.replicas, khash, tried)
            if replica is None:  # (every replica tried: the balancer never picks none else)
                assert last is not None
                raise last
            replica.in_flight += 1
            try:
                resp = await replica.chat(
                    body, request_id, deadline, partial(self._release, replica)
                )
            except GatewayError as exc:
                replica.in_flight -= 1
                exc.replica = replica.base  # (which replica failed: logs and metrics)
                now = loop.time()
                self._outcome(replica, exc, now)
                tried.append(replica)
                if not self.retries.again(exc, len(tried), now, budget):
                    raise
                log.info(
                    "request %s: %s failed (%s), trying another replica",
                    request_id,
                    replica.base,
                    exc.message,
                )
                last = exc
                continue
            except BaseException:
                replica.in_flight -= 1
                raise
            if replica.health.failures:
                replica.succeeded()
            return resp

    def _release(self, replica: Replica) -> None:
        replica.in_flight -= 1
        for gate in self.gates:
            gate.leave()

    # ---- health ------------------------------------------------------------------------

    def _outcome(self, replica: Replica, exc: GatewayError, now: float) -> None:
        weight = failure_weight(exc)
        if not weight:
            replica.succeeded()  # it answered: alive
            return
        if replica.failed(now, weight, self._may_eject()):
            log.warning(
                "upstream %s ejected after %d consecutive failures (last: %s)",
                replica.base,
                replica.health.failures,
                exc.message,
            )
            self._watch(replica)

    def _may_eject(self) -> bool:
        return may_eject([r.health for r in self.replicas])

    def _watch(self, replica: Replica) -> None:
        if not self.closed and replica not in self.probes:
            task = asyncio.get_running_loop().create_task(self._probe_until_back(replica))
            self.probes[replica] = task

    async def _probe_until_back(self, replica: Replica) -> None:
        loop = asyncio.get_running_loop()
        health = replica.health
        try:
            while not self.closed:
                await asyncio.sleep(health.probe_in(loop.time()))
                if await replica.probe():
                    replica.succeeded()
                    log.warning("upstream %s is back", replica.base)
                    return
                replica.failed(loop.time())  # (out already: only the next probe's time)
        finally:
            self.probes.pop(replica, None)

    async def _probe_all(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.dep.active_probe_interval
        while not self.closed:
            await asyncio.sleep(interval)
            for replica in self.replicas:
                if not replica.healthy:
                    continue  # its own probe watches it
                if await replica.probe():
                    replica.succeeded()
                elif replica.failed(loop.time(), may_eject=self._may_eject()):
                    log.warning("upstream %s ejected: its health probe failed", replica.base)
                    self._watch(replica)

    # ---- the rest ----------------------------------------------------------------------

    async def models(self) -> list[str]:
        """The model ids of the first replica that lists them."""
        error: GatewayError | None = None
        for replica in self.replicas:
            try:
                return await replica.models()
            except GatewayError as exc:
                error = exc
        assert error is not None
        raise error

    async def close(self) -> None:
        """Stop the probes and close every replica's connections."""
        self.closed = True
        tasks = list(self.probes.values())
        if self.active is not None:
            tasks.append(self.active)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        self.probes.clear()
        self.active = None
        for replica in self.replicas:
            replica.close()
