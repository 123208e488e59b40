"""``GET /metrics``: the Prometheus text format, with ``prometheus-client``.

One ``Metrics`` per process owns its registry (never the library's global one,
so that tests can run several gateways in one process). With several workers
(``PROMETHEUS_MULTIPROC_DIR`` set by the supervisor before any worker imports
the library), each worker writes its values to its own files there and a scrape
on any worker reads them all (``MultiProcessCollector``): the figures are the
service's, not one worker's.

Cost: ``finished`` runs once per request (never per chunk) and only appends a
tuple; once a second (and before every scrape) ``flush`` adds them up by label
and moves each value once by the sum: per request a few dict additions instead
of the library's locked increments (bench/run.py, row ``ops``). The in-flight
gauge is set from the gateway's own count at each flush, not moved per request.
Labels are bounded: the endpoint is a route name
(``other`` for any unknown path), the model one the router serves (or
``unknown``), the status an HTTP code, the replica a configured upstream URL;
never a request id, a raw path or a client key.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.api.calls import Call
from gateway.errors import (
    RateLimited,
    UpstreamBadResponse,
    UpstreamBusy,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.limits import METRICS_FLUSH
from gateway.ops.access_log import replica_name

CONTENT_TYPE = CONTENT_TYPE_LATEST
MODEL = "gen_ai_request_model"  # (OpenTelemetry's gen_ai.request.model, Prometheus-spelled)
# Seconds: from a fast cached answer to a long generation.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
UPSTREAM_KINDS: tuple[tuple[type[UpstreamError], str], ...] = (
    (UpstreamBusy, "busy"),  # (before its base class)
    (UpstreamTimeout, "timeout"),
    (UpstreamUnavailable, "unavailable"),
    (UpstreamBadResponse, "bad_response"),
    (UpstreamRejected, "rejected"),
)


def upstream_kind(exc: UpstreamError) -> str:
    for cls, kind in UPSTREAM_KINDS:
        if isinstance(exc, cls):
            return kind
    return "other"


def multiprocess_dir(env: dict[str, str] | Any) -> str | None:
    return env.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The gateway's metrics (``finished`` per request) and their exposition."""

    def __init__(self, multiproc_dir: str | None = None) -> None:
        self.dir = multiproc_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        label = ("endpoint", MODEL)
        self.requests = Counter(
            "gateway_requests",
            "API requests answered, by endpoint, model, HTTP status and outcome.",
            (*label, "status", "outcome"),
            registry=r,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Seconds from a request's head to the end of its answer (a stream's last byte).",
            label,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds",
            "Seconds from a streamed request's head to its first output from upstream.",
            label,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.events = Counter(
            "gateway_stream_events",
            "Responses API events streamed to clients.",
            label,
            registry=r,
        )
        self.tokens = Counter(
            "gateway_tokens",
            "Tokens the upstreams reported in their usage, by type (input, output, reasoning).",
            (*label, "type"),
            registry=r,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors",
            "Requests that an upstream failed, by kind and replica.",
            ("kind", "deployment", "replica"),
            registry=r,
        )
        self.in_flight = Gauge(
            "gateway_requests_in_flight",
            "API requests being answered now (streams until their end).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.sockets = Gauge(
            "gateway_websockets_open",
            "Responses WebSockets open now (each response also counts in flight).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.replica_up = Gauge(
            "gateway_upstream_replica_healthy",
            "1 while a replica counts as healthy, 0 while it does not.",
            ("deployment", "replica"),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.replays = Counter(
            "gateway_idempotent_replays",
            "Answers served again from the idempotency store (Idempotent-Replayed: true).",
            ("endpoint",),
            registry=r,
        )
        self.rate_limited = Counter(
            "gateway_rate_limited_requests",
            "Requests refused with 429 by the per-key limits.",
            ("endpoint",),
            registry=r,
        )
        self.disconnects = Counter(
            "gateway_client_disconnects",
            "Requests whose client went away before the answer's end.",
            ("endpoint",),
            registry=r,
        )
        self._children: dict[tuple[str, ...], Any] = {}
        self.replicas: Callable[[], Iterable[tuple[str, str, bool]]] = tuple
        self.in_flight_now: Callable[[], int] = int  # (the gateway's count; set by ops.health)
        self.sockets_now: Callable[[], int] = int  # (likewise)
        self.tallies: dict[tuple[str, str, int, str], Tally] = {}
        self.rare: list[tuple[Any, ...]] = []  # errors, replays, disconnects: one each
        self._timer: asyncio.TimerHandle | None = None

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def finished(self, call: Call, now: float) -> None:
        """Note one finished request (``now``: monotonic seconds) in the tally of its
        labels: a few additions. The library's values move at the next flush (within
        ``METRICS_FLUSH`` s, and before every scrape), each once by the sum."""
        key = (call.endpoint, call.model or "unknown", call.status, call.outcome)
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = Tally()
        tally.count += 1
        took = now - call.started
        tally.duration[bisect_left(DURATION_BUCKETS, took)] += 1
        tally.duration_sum += took
        ttft = call.ttft
        if ttft is not None:
            tally.ttft[bisect_left(TTFT_BUCKETS, ttft)] += 1
            tally.ttft_sum += ttft
        tally.events += call.events
        usage = call.usage
        if usage is not None:
            tally.input += usage["input_tokens"]
            tally.output += usage["output_tokens"]
            details = usage.get("output_tokens_details")
            if details:
                tally.reasoning += details.get("reasoning_tokens") or 0
        if call.error is not None or call.replayed or call.outcome == "client_gone":
            self.rare.append(
                (call.endpoint, call.outcome, call.error, call.route, call.replica, call.replayed)
            )
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(METRICS_FLUSH, self.flush)

    def flush(self) -> None:
        """Add what the requests since the last flush made to the library's values."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.in_flight.set(self.in_flight_now())
        self.sockets.set(self.sockets_now())
        tallies, self.tallies = self.tallies, {}
        rare, self.rare = self.rare, []
        child = self._child
        for (endpoint, model, status, outcome), t in tallies.items():
            child(self.requests, endpoint, model, str(status), outcome).inc(t.count)
            add_observed(child(self.duration, endpoint, model), t.duration, t.duration_sum)
            if any(t.ttft):
                add_observed(child(self.ttft, endpoint, model), t.ttft, t.ttft_sum)
            if t.events:
                child(self.events, endpoint, model).inc(t.events)
            for kind, amount in (
                ("input", t.input),
                ("output", t.output),
                ("reasoning", t.reasoning),
            ):
                if amount:
                    child(self.tokens, endpoint, model, kind).inc(amount)
        for endpoint, outcome, error, route, served_by, replayed in rare:
            if outcome == "client_gone":
                child(self.disconnects, endpoint).inc()
            if isinstance(error, UpstreamError):
                dep, replica = replica_name(route)
                replica = served_by or replica
                child(self.upstream_errors, upstream_kind(error), dep, replica).inc()
            elif isinstance(error, RateLimited):
                child(self.rate_limited, endpoint).inc()
            if replayed:
                child(self.replays, endpoint).inc()

    def exposition(self) -> bytes:
        """The text format of every metric (of every worker, in multiprocess mode)."""
        self.flush()
        for dep, replica, healthy in self.replicas():
            self._child(self.replica_up, dep, replica).set(1 if healthy else 0)
        if self.dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.dir)
        return generate_latest(registry)

    def close(self) -> None:
        """At the end: what is pending goes in (the files outlive a worker)."""
        if self._timer is not None or self.tallies or self.rare:
            self.flush()


class Tally:
    """What the requests of one label set made since the last flush."""

    __slots__ = (
        "count", "duration", "duration_sum", "ttft", "ttft_sum", "events", "input", "output",
        "reasoning",
    )  # fmt: skip

    def __init__(self) -> None:
        self.count = 0
        self.duration = [0] * (len(DURATION_BUCKETS) + 1)  # per bucket (the last: +Inf)
        self.duration_sum = 0.0
        self.ttft = [0] * (len(TTFT_BUCKETS) + 1)
        self.ttft_sum = 0.0
        self.events = 0
        self.input = 0
        self.output = 0
        self.reasoning = 0


def add_observed(child: Any, per_bucket: list[int], total: float) -> None:
    """As if ``child.observe`` had run for each value counted in ``per_bucket`` (by
    the index of the first bound not below it, +Inf last) summing to ``total``: one
    increment per bucket of the library's own values (``_buckets``, non-cumulative
    as it keeps them, and ``_sum``; the locked version is the one it was built on,
    and the scrape tests check every bucket and sum)."""
    buckets = child._buckets
    if len(buckets) != len(per_bucket):
        raise RuntimeError("prometheus_client's histogram layout is not the one expected")
    for i, n in enumerate(per_bucket):
        if n:
            buckets[i].inc(n)
    child._sum.inc(total)


def worker_gone(pid: int, multiproc_dir: str) -> None:
    """A worker exited: drop its live gauges (in flight, replica health)."""
    multiprocess.mark_process_dead(pid, multiproc_dir)
