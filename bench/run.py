"""Load benchmarks: the gateway against a minimal aiohttp pass-through proxy.

Both targets run behind the same fake upstream (``gateway.demo --fixed``) under
the same pinning: the target on ``--proxy-cpus``, wrk, the clients and the
upstream on ``--load-cpus``. Rows (``--only``): nonstream, stream, cpu,
latency, memory, workers, ops, identity, replicas, reasoning, codex, websocket,
micro, instructions (callgrind counts of the identity variants), a module each in
bench/rows/ (bench/rows/base.py: what a row is and what it needs of the bench).
This file is the driver: the flags, the setup (the fast upstream, the targets and
their sample requests), the repetitions of the rows, the report. See
bench/README.md for what each row measures.
Usage: .venv/bin/python bench/run.py [--quick] [--only nonstream,stream]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import harness as h
from report import SERIES, Results, environment, markdown, table, write_json
from rows.base import BENCH, PATHS, Bench, Flags, Row, body
from rows.codex import Codex
from rows.cpu import Cpu
from rows.identity import Identity
from rows.instructions import Instructions
from rows.latency import Latency
from rows.memory import Memory
from rows.micro import Micro
from rows.ops import Ops
from rows.reasoning import Reasoning
from rows.replicas import Replicas
from rows.throughput import Throughput
from rows.websocket import Websocket
from rows.workers import Workers

REPO = BENCH.parent
# --only's names, in the order of the table; each builds its row with the bench.
FACTORIES: dict[str, Callable[[Bench], Row]] = {
    "nonstream": lambda bench: Throughput(bench, stream=False),
    "stream": lambda bench: Throughput(bench, stream=True),
    "cpu": Cpu,
    "latency": Latency,
    "memory": Memory,
    "workers": Workers,
    "ops": Ops,
    "identity": Identity,
    "replicas": Replicas,
    "reasoning": Reasoning,
    "codex": Codex,
    "websocket": Websocket,
    "micro": Micro,
    "instructions": Instructions,
}
ROWS = tuple(FACTORIES)


def target_cmd(target: str, port: int, upstream: str, workers: int, extra: Flags = ()) -> list[str]:
    """``upstream``: one URL, or (the gateway's) several, space-separated: replicas;
    ``extra``: more flags for the gateway."""
    common = ["--host", h.HOST, "--port", str(port)]
    for url in upstream.split():
        common += ["--upstream", url]
    if target == "baseline":
        return [
            sys.executable,
            str(BENCH / "proxy_baseline.py"),
            *common,
            "--workers",
            str(workers),
        ]
    extra = [*extra, *(["--workers", str(workers)] if workers > 1 else [])]
    if target == "aiohttp":  # the gateway on aiohttp's low-level server (serve --http aiohttp)
        extra += ["--http", "aiohttp"]
    return [sys.executable, "-m", "gateway", "serve", *common, "--model", "demo", *extra]


class Session:
    """One run's processes, targets and results: the ``Bench`` that the rows are given."""

    def __init__(self, args: argparse.Namespace, log_dir: Path) -> None:
        self.args, self.log_dir = args, log_dir
        self.res = Results()
        self.procs: list[h.Proc] = []
        self.pin_proxy = ["taskset", "-c", args.proxy_cpus]
        self.pin_load = ["taskset", "-c", args.load_cpus]
        self.ports: dict[str, int] = {}  # live targets (workers=1) -> port
        self.live: list[str] = []  # series whose target answered the sample requests
        self.events: dict[str, float] = {}  # series -> SSE events per streamed answer
        self.scripts = {
            (api, s): h.wrk_script(body(api, s), log_dir) for api in PATHS for s in (False, True)
        }
        self.fast, self.fast_port, self.fast_pid = "", 0, 0

    # -- processes -------------------------------------------------------------

    def spawn(self, name: str, cmd: list[str]) -> h.Proc:
        proc = h.start(name, cmd, self.log_dir)
        self.procs.append(proc)
        return proc

    def launch(
        self, name: str, cmd: list[str], port: int, headers: dict[str, str] | None = None
    ) -> h.Proc:
        proc = self.spawn(name, cmd)
        try:
            h.wait_ready(proc, port, headers=headers)
        except RuntimeError:
            self.halt(proc)
            raise
        return proc

    def halt(self, proc: h.Proc) -> None:
        h.stop(proc)
        if proc in self.procs:
            self.procs.remove(proc)

    def upstream(self, name: str, delay_ms: float) -> str:
        port = h.free_port()
        demo = [sys.executable, "-m", "gateway.demo", "--fixed", "--port", str(port)]
        demo += ["--deltas", str(self.args.deltas), "--delay-ms", str(delay_ms)]
        self.launch(name, [*self.pin_load, *demo], port)
        return f"http://{h.HOST}:{port}/v1"

    def target(
        self, target: str, upstream: str, workers: int, cpus: str, tag: str, extra: Flags = ()
    ) -> tuple[int, h.Proc]:
        port = h.free_port()
        cmd = ["taskset", "-c", cpus, *target_cmd(target, port, upstream, workers, extra)]
        return port, self.launch(f"{target}-{tag}", cmd, port)

    def pid(self, target: str) -> int:
        return next(p.pid for p in self.procs if p.name == f"{target}-w1")

    # -- setup -----------------------------------------------------------------

    def setup(self) -> None:
        self.fast = self.upstream("upstream-fast", 0)
        self.fast_port = int(self.fast.rsplit(":", 1)[1].split("/")[0])
        self.fast_pid = self.procs[-1].pid
        for target in self.args.targets:
            try:
                port, _ = self.target(target, self.fast, 1, self.args.proxy_cpus, "w1")
                self.ports[target] = port
            except RuntimeError as exc:
                for series in SERIES:
                    if series.startswith(target):
                        self.res.fail("setup", series, str(exc))
        for series in SERIES:
            target, api = series.split()
            if target in self.ports:
                self.check(series, self.ports[target], api)

    def check(self, series: str, port: int, api: str) -> None:
        """A sample request of each kind (also a warm-up); a series that fails is skipped."""
        try:
            status, _, raw = h.request(port, "POST", PATHS[api], body(api, False))
            if status != 200:
                raise RuntimeError(f"non-streaming {PATHS[api]} -> {status}: {raw[:200]!r}")
            status, ctype, raw = h.request(port, "POST", PATHS[api], body(api, True))
            if status != 200 or not ctype.startswith("text/event-stream"):
                raise RuntimeError(f"streaming {PATHS[api]} -> {status} {ctype}: {raw[:200]!r}")
            self.events[series] = h.count_events(raw)
            h.run_wrk(self.pin_load, port, PATHS[api], self.scripts[api, False], 16, 1)
            self.live.append(series)
        except (RuntimeError, OSError) as exc:
            self.res.fail("setup", series, str(exc))

    def stop(self) -> None:
        for proc in list(self.procs):
            self.halt(proc)


def run(session: Session, rows: dict[str, Row]) -> None:
    """The load rows in --only's order, once a repetition, after the setup; then, with
    every process stopped, the solo rows."""
    args = session.args
    load = [name for name in args.only if not rows[name].solo]
    if load:
        session.setup()
    for name in dict.fromkeys(load):
        rows[name].prepare()
    for rep in range(args.reps):
        for name in load:
            print(f"[rep {rep + 1}/{args.reps}] {name}", flush=True)
            rows[name].run(rep)
    session.stop()
    for row in rows.values():
        if row.solo:
            row.run(0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 repetition, short durations")
    p.add_argument("--only", default=",".join(ROWS), help=f"comma list of rows: {','.join(ROWS)}")
    p.add_argument(
        "--targets",
        default="baseline,gateway,aiohttp",
        help="comma list: baseline, gateway (the lean server), aiohttp (--http aiohttp)",
    )
    p.add_argument("--reps", type=int, help="repetitions (default 3; --quick 1)")
    p.add_argument("--duration", type=float, help="seconds per throughput run (default 8)")
    p.add_argument("--latency-duration", type=float, help="seconds per latency run (default 5)")
    p.add_argument("--cpu-duration", type=float, help="seconds per fixed-rate run (default 6)")
    p.add_argument("--rate", type=float, default=1000, help="fixed rate, non-streaming req/s")
    p.add_argument("--stream-rate", type=float, default=100, help="fixed rate, streamed answers/s")
    p.add_argument("--codex-rate", type=float, default=200, help="codex row, req/s")
    p.add_argument("--codex-stream-rate", type=float, default=50, help="codex row, answers/s")
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--deltas", type=int, default=64, help="content deltas per streamed answer")
    p.add_argument(
        "--reasoning-deltas", type=int, default=256, help="deltas per answer, reasoning row"
    )
    p.add_argument("--streams", type=int, help="open streams for the memory row (default 1000)")
    p.add_argument("--slow-delay-ms", type=float, default=1000.0, help="memory-row upstream delay")
    p.add_argument("--proxy-cpus", default="0")
    p.add_argument("--load-cpus", default="1")
    p.add_argument("--micro-timeout", type=float, default=300.0)
    p.add_argument("--output", type=Path, default=BENCH / "results" / "latest.json")
    args = p.parse_args(argv)
    q = args.quick
    defaults = {"reps": (3, 1), "duration": (8, 3), "latency_duration": (5, 2)}
    defaults |= {"cpu_duration": (6, 3), "streams": (1000, 1000)}
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if q else full)
    args.only = [r.strip() for r in args.only.split(",") if r.strip()]
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if bad := [r for r in args.only if r not in ROWS]:
        p.error(f"unknown rows {bad}; choose from {ROWS}")
    if not 1 <= args.reps <= 10 or not 0 < args.duration <= 60 or not 0 < args.streams <= 5000:
        p.error("bounds: 1 <= reps <= 10, 0 < duration <= 60, 0 < streams <= 5000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # inherited by every child
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 65536)), hard))
    h.ensure_wrk()
    log_dir = BENCH / "results" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    session = Session(args, log_dir)
    rows = {name: make(session) for name, make in FACTORIES.items() if name in args.only}
    try:
        run(session, rows)
    finally:
        session.stop()
        for script in session.scripts.values():
            script.unlink(missing_ok=True)
        for row in rows.values():
            row.close()
    meta = {"machine": {**h.machine(), **environment(REPO)}, "args": vars(args)}
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    print("\n" + table(session.res), flush=True)
    summary = session.res.summary()
    extra = "\n".join(line for row in rows.values() for line in row.table(summary))
    print(extra, flush=True)
    write_json(args.output, session.res, meta)
    args.output.with_suffix(".md").write_text(markdown(session.res) + extra)
    print(f"\nwrote {args.output} in {meta['elapsed_s']}s; logs in {log_dir}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
