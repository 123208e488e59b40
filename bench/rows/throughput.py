"""The ``nonstream`` and ``stream`` rows of bench/run.py: throughput at 64 connections.

``wrk -c64`` for ``--duration`` s against each live series: requests/s (answers/s and
SSE events/s when streamed), p50 and p99, the proxy's CPU over the run and the CPU of
wrk plus the upstream (the load core). Streamed, also the connections the fake
upstream accepted during the run per 1,000 answers (its demo-only ``GET /demo/stats``).
"""

from __future__ import annotations

import json

import harness as h

from rows.base import PATHS, Bench, Row, each


class Throughput(Row):
    def __init__(self, bench: Bench, stream: bool) -> None:
        super().__init__(bench)
        self.stream = stream
        self.name = "stream" if stream else "nonstream"

    def run(self, rep: int) -> None:
        each(self.bench, self.name, self.measure)

    def measure(self, series: str, port: int, api: str) -> None:
        b, a, stream = self.bench, self.bench.args, self.stream
        pid = b.pid(series.split()[0])
        conns0 = accepted(b) if stream else 0
        cpu0, load0 = h.cpu_seconds(pid), h.cpu_seconds(b.fast_pid) + h.reaped_cpu_seconds()
        script = b.scripts[api, stream]
        m = h.run_wrk(b.pin_load, port, PATHS[api], script, a.conns, a.duration)
        cpu = h.cpu_seconds(pid) - cpu0
        load = h.cpu_seconds(b.fast_pid) + h.reaped_cpu_seconds() - load0
        # (less the stats request's own connection)
        opened = accepted(b) - conns0 - 1 if stream else 0
        if m["errors"]:
            b.res.notes.append(f"{self.name} {series}: {m['errors']:.0f} wrk errors/non-2xx")
        if stream:
            ev = b.events[series]
            metrics = {"answers_s": m["rps"], "events_s": m["rps"] * ev, "events_per_answer": ev}
            metrics["upstream_conns_per_1k"] = opened * 1000 / max(1.0, m["requests"])
        else:
            metrics = {"rps": m["rps"]}
        metrics |= {"p50_ms": m["p50_ms"], "p99_ms": m["p99_ms"]}
        metrics |= {"proxy_cpu_pct": cpu / m["seconds"] * 100}
        metrics |= {"load_cpu_pct": load / m["seconds"] * 100}
        b.res.add(self.name, series, metrics)


def accepted(bench: Bench) -> int:
    """Connections the fake upstream accepted so far (its demo-only stats path)."""
    status, _, raw = h.request(bench.fast_port, "GET", "/demo/stats", None)
    if status != 200:
        raise RuntimeError(f"GET /demo/stats -> {status}: {raw[:200]!r}")
    return int(json.loads(raw)["connections_accepted"])
