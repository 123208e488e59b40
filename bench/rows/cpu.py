"""The ``cpu`` row of bench/run.py: the proxy's CPU per request at a fixed rate.

``bench/rate_client.py`` sends ``--rate`` non-streaming requests/s, then
``--stream-rate`` streamed answers/s, for ``--cpu-duration`` s each, to every live
series; the proxy's CPU time (its process tree, from ``/proc``) between the client's
``START`` and ``END`` over the successful requests, and over the SSE events received.
``fixed_rate`` is also the ops row's.
"""

from __future__ import annotations

import harness as h

from rows.base import PATHS, Bench, Row, body, each


class Cpu(Row):
    name = "cpu"

    def run(self, rep: int) -> None:
        each(self.bench, self.name, self.measure)

    def measure(self, series: str, port: int, api: str) -> None:
        pid = self.bench.pid(series.split()[0])
        metrics: dict[str, float] = {}
        for stream in (False, True):
            metrics |= fixed_rate(self.bench, series, pid, port, api, stream)
        self.bench.res.add(self.name, series, metrics)


def fixed_rate(
    bench: Bench, series: str, pid: int, port: int, api: str, stream: bool
) -> dict[str, float]:
    """The target's CPU per request (per answer and per event when streamed) at a
    fixed rate (rate_client.py), so that each costs the same work on each target."""
    a = bench.args
    metrics: dict[str, float] = {}
    rate = a.stream_rate if stream else a.rate
    payload = body(api, stream)
    cpu, out = h.fixed_rate(bench.pin_load, pid, port, PATHS[api], payload, rate, a.cpu_duration)
    if out["failed"] or out["dropped"]:
        bench.res.notes.append(f"cpu {series} stream={stream}: {out}")
    if stream:
        metrics["us_per_answer"] = cpu * 1e6 / out["ok"]
        metrics["us_per_event"] = cpu * 1e6 / max(1, out["events"])
    else:
        metrics["us_per_req"] = cpu * 1e6 / out["ok"]
    return metrics
