"""The ``latency`` row of bench/run.py: p50 and p99 at concurrency 1.

``wrk -c1`` for ``--latency-duration`` s straight to the fake upstream (wrk on the
proxy's core, so that the direct path crosses cores as a client of the proxy does),
then against each live series; *added* is the series' figure less the direct one of
the same repetition.
"""

from __future__ import annotations

import harness as h

from rows.base import PATHS, Row, each


class Latency(Row):
    name = "latency"

    def run(self, rep: int) -> None:
        b, a = self.bench, self.bench.args
        script = b.scripts["chat", False]
        d = h.run_wrk(b.pin_proxy, b.fast_port, PATHS["chat"], script, 1, a.latency_duration)
        b.res.add(self.name, "direct upstream", {"p50_ms": d["p50_ms"], "p99_ms": d["p99_ms"]})

        def one(series: str, port: int, api: str) -> None:
            s = b.scripts[api, False]
            m = h.run_wrk(b.pin_load, port, PATHS[api], s, 1, a.latency_duration)
            b.res.add(
                self.name,
                series,
                {
                    "p50_ms": m["p50_ms"],
                    "p99_ms": m["p99_ms"],
                    "added_p50_ms": m["p50_ms"] - d["p50_ms"],
                    "added_p99_ms": m["p99_ms"] - d["p99_ms"],
                },
            )

        each(b, self.name, one)
