"""``GET /metrics``: the Prometheus text format, with ``prometheus-client``.

One ``Metrics`` per process owns its registry (never the library's global one,
so that tests can run several gateways in one process). With several workers
(``PROMETHEUS_MULTIPROC_DIR`` set by the supervisor before any worker imports
the library), each worker writes its values to its own files there and a scrape
on any worker reads them all (``MultiProcessCollector``): the figures are the
service's, not one worker's.

Cost: ``finished`` runs once per request (never per chunk): a handful of
increments and two histogram observations on label children that are looked up
once and cached. Labels are bounded: the endpoint is a route name
(``other`` for any unknown path), the model one the router serves (or
``unknown``), the status an HTTP code, the replica a configured upstream URL;
never a request id, a raw path or a client key.
"""

from __future__ import annotations

import os
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

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def started(self) -> None:
        self.in_flight.inc()

    def finished(self, call: Call, now: float) -> None:
        """Count one finished request (``now``: monotonic seconds)."""
        self.in_flight.dec()
        endpoint = call.endpoint
        model = call.model or "unknown"
        child = self._child
        child(self.requests, endpoint, model, str(call.status), call.outcome).inc()
        child(self.duration, endpoint, model).observe(now - call.started)
        if call.ttft is not None:
            child(self.ttft, endpoint, model).observe(call.ttft)
        if call.events:
            child(self.events, endpoint, model).inc(call.events)
        usage = call.usage
        if usage is not None:
            child(self.tokens, endpoint, model, "input").inc(usage["input_tokens"])
            child(self.tokens, endpoint, model, "output").inc(usage["output_tokens"])
            details = usage.get("output_tokens_details") or {}
            reasoning = details.get("reasoning_tokens") or 0
            if reasoning:
                child(self.tokens, endpoint, model, "reasoning").inc(reasoning)
        outcome = call.outcome
        if outcome == "client_gone":
            child(self.disconnects, endpoint).inc()
        error = call.error
        if error is not None:
            if isinstance(error, UpstreamError):
                dep, replica = replica_name(call.route)
                child(self.upstream_errors, upstream_kind(error), dep, replica).inc()
            elif isinstance(error, RateLimited):
                child(self.rate_limited, endpoint).inc()
        if call.replayed:
            child(self.replays, endpoint).inc()

    def exposition(self) -> bytes:
        """The text format of every metric (of every worker, in multiprocess mode)."""
        for dep, replica, healthy in self.replicas():
            self._child(self.replica_up, dep, replica).set(1 if healthy else 0)
        if self.dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.dir)
        return generate_latest(registry)


def worker_gone(pid: int, multiproc_dir: str) -> None:
    """A worker exited: drop its live gauges (in flight, replica health)."""
    multiprocess.mark_process_dead(pid, multiproc_dir)


def clear_dir(multiproc_dir: str) -> None:
    """Empty the multiprocess directory at the supervisor's start (old workers' files)."""
    for name in os.listdir(multiproc_dir):
        if name.endswith(".db"):
            os.unlink(os.path.join(multiproc_dir, name))
