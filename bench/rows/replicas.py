"""The ``replicas`` row of bench/run.py: the gateway in front of three replicas.

A second gateway process in front of three fast upstreams (the first one and two more
like it, started on the first repetition) beside the one-upstream gateway, one after
the other (which goes first alternates), ``wrk -c64`` non-streaming for each api:
req/s and CPU us per request over the same run, and their ratios.
"""

from __future__ import annotations

import harness as h

from rows.base import FAILURES, PATHS, Row


class Replicas(Row):
    name = "replicas"
    urls: list[str] | None = None  # the three upstreams, from the first repetition on

    def run(self, rep: int) -> None:
        """The gateway in front of 3 replicas (fast upstreams like the first) beside the
        same gateway in front of one, measured here one after the other, each api: req/s
        at 64 connections and CPU us per request (over the same wrk run)."""
        b = self.bench
        if "gateway" not in b.ports:
            b.res.notes.append("replicas: needs the gateway target")
            return
        if self.urls is None:
            self.urls = [b.fast] + [b.upstream(f"upstream-r{i}", 0) for i in (2, 3)]
        try:
            port, proc = b.target("gateway", " ".join(self.urls), 1, b.args.proxy_cpus, "r3")
        except RuntimeError as exc:
            b.res.fail(self.name, "gateway chat", f"3 replicas did not start: {exc}")
            return
        try:
            for series in (s for s in b.live if s.startswith("gateway ")):
                api = series.split()[1]
                runs = [(b.pid("gateway"), b.ports["gateway"]), (proc.pid, port)]
                if rep % 2:  # which one goes first alternates: no order bias
                    runs.reverse()
                measured = {p: self.cpu_wrk(pid, p, api) for pid, p in runs}
                one, three = measured[b.ports["gateway"]], measured[port]
                b.res.add(
                    self.name,
                    series,
                    {
                        "rps_1": one[0],
                        "rps_3": three[0],
                        "rps_ratio": three[0] / one[0],
                        "us_1": one[1],
                        "us_3": three[1],
                        "cpu_ratio": one[1] / three[1],
                    },
                )
        except FAILURES as exc:
            b.res.fail(self.name, "gateway chat", str(exc))
        finally:
            b.halt(proc)

    def cpu_wrk(self, pid: int, port: int, api: str) -> tuple[float, float]:
        """(req/s, CPU us per request of ``pid``) over one non-streaming wrk run."""
        b, a = self.bench, self.bench.args
        cpu0 = h.cpu_seconds(pid)
        m = h.run_wrk(b.pin_load, port, PATHS[api], b.scripts[api, False], a.conns, a.duration)
        cpu = h.cpu_seconds(pid) - cpu0
        if m["errors"]:
            b.res.notes.append(f"replicas port {port}: {m['errors']:.0f} wrk errors/non-2xx")
        return m["rps"], cpu * 1e6 / max(1.0, m["requests"])
