"""The ``workers`` row of bench/run.py: each target with ``--workers 2``.

A second instance of each live target with two workers, pinned to both cores
(``--proxy-cpus,--load-cpus``), under ``wrk -c64`` non-streaming: req/s, and the
scaling over the same repetition's one-worker ``nonstream`` figure (when that row is
in the run).
"""

from __future__ import annotations

import harness as h

from rows.base import PATHS, Row


class Workers(Row):
    name = "workers"

    def run(self, rep: int) -> None:
        b, a = self.bench, self.bench.args
        cpus = f"{a.proxy_cpus},{a.load_cpus}"
        for target in b.ports:
            try:
                port, proc = b.target(target, b.fast, 2, cpus, "w2")
            except RuntimeError as exc:
                for series in (s for s in b.live if s.startswith(target)):
                    b.res.fail(self.name, series, f"--workers 2 did not start: {exc}")
                continue
            for series in (s for s in b.live if s.startswith(target)):
                api = series.split()[1]
                s = b.scripts[api, False]
                try:
                    m = h.run_wrk(b.pin_load, port, PATHS[api], s, a.conns, a.duration)
                except RuntimeError as exc:
                    b.res.fail(self.name, series, str(exc))
                    continue
                if m["errors"]:
                    b.res.notes.append(f"workers {series}: {m['errors']:.0f} wrk errors/non-2xx")
                one = b.res.rep_value("nonstream", series, "rps", rep)
                if one is None and rep == 0:
                    b.res.notes.append("workers: scaling needs the nonstream row in the run")
                scaling = {"scaling": m["rps"] / one} if one else {}
                b.res.add(self.name, series, {"rps_w2": m["rps"], **scaling})
            b.halt(proc)
