"""The ``ops`` row of bench/run.py: what metrics and the access log cost.

Each gateway target as it serves (metrics and access log on) beside a second
instance with ``--no-metrics --no-access-log`` on the same core, on the Responses
series (the translated path, where the observer does the most), measured back to back
with the order swapped every repetition: req/s under ``wrk -c64``, and the CPU per
request and per streamed event at the cpu row's fixed rates.
"""

from __future__ import annotations

import harness as h

from rows.base import FAILURES, PATHS, Row
from rows.cpu import fixed_rate

OFF = ["--no-metrics", "--no-access-log"]  # the second instance's flags


class Ops(Row):
    name = "ops"

    def run(self, rep: int) -> None:
        """Metrics and access log on (the targets as they run) beside off (a second
        instance of each gateway target with --no-metrics --no-access-log, on the same
        core), measured back to back, the order swapped every repetition."""
        b = self.bench
        for target in [t for t in b.ports if t != "baseline"]:
            try:
                off, proc = b.target(target, b.fast, 1, b.args.proxy_cpus, "ops-off", OFF)
            except RuntimeError as exc:
                for series in (s for s in b.live if s.startswith(target)):
                    b.res.fail(self.name, series, f"--no-metrics did not start: {exc}")
                continue
            on = (b.pid(target), b.ports[target])
            # The Responses series: the translated path, where the observer does the most.
            for series in [s for s in b.live if s == f"{target} responses"]:
                api = series.split()[1]
                try:
                    h.run_wrk(b.pin_load, off, PATHS[api], b.scripts[api, False], 16, 1)
                    b.res.add(self.name, series, self.on_off(series, api, on, (proc.pid, off), rep))
                except FAILURES as exc:
                    b.res.fail(self.name, series, str(exc))
            b.halt(proc)

    def on_off(
        self, series: str, api: str, on: tuple[int, int], off: tuple[int, int], rep: int
    ) -> dict[str, float]:
        b, a = self.bench, self.bench.args
        got: dict[str, dict[str, float]] = {"on": {}, "off": {}}
        order = [("on", on), ("off", off)]
        for name, (pid, port) in order if rep % 2 == 0 else order[::-1]:
            m = h.run_wrk(b.pin_load, port, PATHS[api], b.scripts[api, False], a.conns, a.duration)
            if m["errors"]:
                b.res.notes.append(f"ops {series} {name}: {m['errors']:.0f} wrk errors/non-2xx")
            got[name]["rps"] = m["rps"]
            got[name] |= fixed_rate(b, series, pid, port, api, False)
            got[name] |= fixed_rate(b, series, pid, port, api, True)
        on_, off_ = got["on"], got["off"]
        return {
            "rps_on": on_["rps"],
            "rps_off": off_["rps"],
            "rps_ratio": on_["rps"] / off_["rps"],
            "us_req_on": on_["us_per_req"],
            "us_req_off": off_["us_per_req"],
            "req_cpu_ratio": off_["us_per_req"] / on_["us_per_req"],
            "us_event_on": on_["us_per_event"],
            "us_event_off": off_["us_per_event"],
            # CPU per event, off over on: like req/s, above 0.9x is within 10 %.
            "event_ratio": off_["us_per_event"] / on_["us_per_event"],
        }
