"""The ``memory`` row of bench/run.py: resident memory per open stream.

Each series gets a fresh target in front of a slow upstream (``--slow-delay-ms``
between chunks, started once, before the first repetition). After 10 warm-up
requests its idle RSS is read (the process tree's resident pages), then
``bench/hold_streams.py`` opens ``--streams`` streams and waits for each one's first
event, and after 1 s RSS is read again: KiB per stream = (open - idle) / streams open.
"""

from __future__ import annotations

import subprocess
import sys
import time

import harness as h

from rows.base import BENCH, FAILURES, PATHS, Row, body


class Memory(Row):
    name = "memory"
    slow = ""  # the slow upstream's URL (prepare)

    def prepare(self) -> None:
        self.slow = self.bench.upstream("upstream-slow", self.bench.args.slow_delay_ms)

    def run(self, rep: int) -> None:
        b = self.bench
        for series in b.live:
            target, api = series.split()
            proc = None
            try:
                port, proc = b.target(target, self.slow, 1, b.args.proxy_cpus, f"mem-{api}")
                b.res.add(self.name, series, self.hold(proc.pid, port, api))
            except FAILURES as exc:
                b.res.fail(self.name, series, str(exc))
            finally:
                if proc is not None:
                    b.halt(proc)

    def hold(self, pid: int, port: int, api: str) -> dict[str, float]:
        b = self.bench
        for _ in range(10):  # warm up: imports, upstream pool, allocator
            h.request(port, "POST", PATHS[api], body(api, False))
        time.sleep(0.5)
        idle = h.rss_kib(pid)
        n = b.args.streams
        cmd = [*b.pin_load, sys.executable, str(BENCH / "hold_streams.py"), "--port", str(port)]
        cmd += ["--path", PATHS[api], "--body", body(api, True).decode(), "--streams", str(n)]
        with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as p:
            assert p.stdin is not None and p.stdout is not None
            line = p.stdout.readline().split()
            if not line or line[0] != "OPEN":
                raise RuntimeError("hold_streams failed")
            time.sleep(1.0)
            held = h.rss_kib(pid)
            p.stdin.write("\n")
            p.stdin.close()
            p.stdout.read()
        opened = int(line[1])
        if opened < n:
            b.res.notes.append(f"memory: only {opened}/{n} streams opened on port {port}")
        per = (held - idle) / max(1, opened)
        return {
            "kib_per_stream": per,
            "streams_open": opened,
            "idle_mib": idle / 1024,
            "open_mib": held / 1024,
        }
