"""Load benchmarks: the gateway against a minimal aiohttp pass-through proxy.

Both targets run behind the same fake upstream (``gateway.demo --fixed``) under
the same pinning: the target on ``--proxy-cpus``, wrk, the clients and the
upstream on ``--load-cpus``. Rows (``--only``): nonstream, stream, cpu,
latency, memory, workers, identity (bench/identity.py), replicas, reasoning
(bench/reasoning.py), codex (bench/codex.py), micro, instructions
(bench/instructions.py: callgrind counts of the identity variants). See
bench/README.md for what each measures.
Usage: .venv/bin/python bench/run.py [--quick] [--only nonstream,stream]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import harness as h
from codex import CodexRow
from codex import table as codex_table
from identity import IdentityRow
from identity import table as identity_table
from reasoning import ReasoningRow
from reasoning import table as reasoning_table
from report import SERIES, Results, environment, markdown, table, write_json

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
ROWS = (
    *("nonstream", "stream", "cpu", "latency", "memory", "workers", "ops"),
    *("identity", "replicas", "reasoning", "codex", "micro", "instructions"),
)
SOLO = ("micro", "instructions")  # rows that start what they need themselves
# The ops row's second instance of each gateway target: metrics and access log off.
OPS_OFF = ["--no-metrics", "--no-access-log"]
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses"}
HELLO = {
    "chat": {"model": "demo", "messages": [{"role": "user", "content": "Say hello"}]},
    "responses": {"model": "demo", "input": "Say hello"},
}


def body(api: str, stream: bool) -> bytes:
    return json.dumps({**HELLO[api], **({"stream": True} if stream else {})}).encode()


def target_cmd(
    target: str, port: int, upstream: str, workers: int, extra: list[str] | None = None
) -> list[str]:
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
    extra = [*(extra or []), *(["--workers", str(workers)] if workers > 1 else [])]
    if target == "aiohttp":  # the gateway on aiohttp's low-level server (serve --http aiohttp)
        extra += ["--http", "aiohttp"]
    return [sys.executable, "-m", "gateway", "serve", *common, "--model", "demo", *extra]


class Bench:
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
        self.identity = IdentityRow(self, body("responses", False), PATHS)
        self.reasoning = ReasoningRow(self)
        small = {s: body("responses", s) for s in (False, True)}
        self.codex = CodexRow(self, small, PATHS["responses"])

    # -- processes -------------------------------------------------------------

    def launch(
        self, name: str, cmd: list[str], port: int, headers: dict[str, str] | None = None
    ) -> h.Proc:
        proc = h.start(name, cmd, self.log_dir)
        self.procs.append(proc)
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
        self,
        target: str,
        upstream: str,
        workers: int,
        cpus: str,
        tag: str,
        extra: list[str] | None = None,
    ) -> int:
        port = h.free_port()
        cmd = ["taskset", "-c", cpus, *target_cmd(target, port, upstream, workers, extra)]
        self.launch(f"{target}-{tag}", cmd, port)
        return port

    # -- setup -----------------------------------------------------------------

    def setup(self) -> None:
        self.fast = self.upstream("upstream-fast", 0)
        self.fast_port = int(self.fast.rsplit(":", 1)[1].split("/")[0])
        self.fast_pid = self.procs[-1].pid
        for target in self.args.targets:
            try:
                self.ports[target] = self.target(target, self.fast, 1, self.args.proxy_cpus, "w1")
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

    # -- rows ------------------------------------------------------------------

    def each(self, row: str, fn: Callable[..., None], *args: object) -> None:
        for series in self.live:
            target, api = series.split()
            try:
                fn(row, series, self.ports[target], api, *args)
            except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
                self.res.fail(row, series, str(exc))

    def accepted(self) -> int:
        """Connections the fake upstream accepted so far (its demo-only stats path)."""
        status, _, raw = h.request(self.fast_port, "GET", "/demo/stats", None)
        if status != 200:
            raise RuntimeError(f"GET /demo/stats -> {status}: {raw[:200]!r}")
        return int(json.loads(raw)["connections_accepted"])

    def wrk_row(self, row: str, series: str, port: int, api: str, stream: bool) -> None:
        a, pid = self.args, self.pid(series.split()[0])
        conns0 = self.accepted() if stream else 0
        cpu0, load0 = h.cpu_seconds(pid), h.cpu_seconds(self.fast_pid) + h.reaped_cpu_seconds()
        script = self.scripts[api, stream]
        m = h.run_wrk(self.pin_load, port, PATHS[api], script, a.conns, a.duration)
        cpu = h.cpu_seconds(pid) - cpu0
        load = h.cpu_seconds(self.fast_pid) + h.reaped_cpu_seconds() - load0
        # (less the stats request's own connection)
        opened = self.accepted() - conns0 - 1 if stream else 0
        if m["errors"]:
            self.res.notes.append(f"{row} {series}: {m['errors']:.0f} wrk errors/non-2xx")
        if stream:
            ev = self.events[series]
            metrics = {"answers_s": m["rps"], "events_s": m["rps"] * ev, "events_per_answer": ev}
            metrics["upstream_conns_per_1k"] = opened * 1000 / max(1.0, m["requests"])
        else:
            metrics = {"rps": m["rps"]}
        metrics |= {"p50_ms": m["p50_ms"], "p99_ms": m["p99_ms"]}
        metrics |= {"proxy_cpu_pct": cpu / m["seconds"] * 100}
        metrics |= {"load_cpu_pct": load / m["seconds"] * 100}
        self.res.add(row, series, metrics)

    def pid(self, target: str) -> int:
        return next(p.pid for p in self.procs if p.name == f"{target}-w1")

    def cpu_row(self, row: str, series: str, port: int, api: str) -> None:
        pid = self.pid(series.split()[0])
        metrics: dict[str, float] = {}
        for stream in (False, True):
            metrics |= self.fixed_rate(series, pid, port, api, stream)
        self.res.add(row, series, metrics)

    def fixed_rate(
        self, series: str, pid: int, port: int, api: str, stream: bool
    ) -> dict[str, float]:
        """The target's CPU per request (per answer and per event when streamed) at a
        fixed rate (rate_client.py), so that each costs the same work on each target."""
        metrics: dict[str, float] = {}
        rate = self.args.stream_rate if stream else self.args.rate
        payload = body(api, stream)
        cpu, out = h.fixed_rate(
            self.pin_load, pid, port, PATHS[api], payload, rate, self.args.cpu_duration
        )
        if out["failed"] or out["dropped"]:
            self.res.notes.append(f"cpu {series} stream={stream}: {out}")
        if stream:
            metrics["us_per_answer"] = cpu * 1e6 / out["ok"]
            metrics["us_per_event"] = cpu * 1e6 / max(1, out["events"])
        else:
            metrics["us_per_req"] = cpu * 1e6 / out["ok"]
        return metrics

    def ops_row(self, rep: int) -> None:
        """Metrics and access log on (the targets as they run) beside off (a second
        instance of each gateway target with --no-metrics --no-access-log, on the same
        core), measured back to back, the order swapped every repetition."""
        for target in [t for t in self.ports if t != "baseline"]:
            try:
                off = self.target(target, self.fast, 1, self.args.proxy_cpus, "ops-off", OPS_OFF)
            except RuntimeError as exc:
                for series in (s for s in self.live if s.startswith(target)):
                    self.res.fail("ops", series, f"--no-metrics did not start: {exc}")
                continue
            proc = self.procs[-1]
            on = (self.pid(target), self.ports[target])
            # The Responses series: the translated path, where the observer does the most.
            for series in [s for s in self.live if s == f"{target} responses"]:
                api = series.split()[1]
                try:
                    h.run_wrk(self.pin_load, off, PATHS[api], self.scripts[api, False], 16, 1)
                    self.res.add("ops", series, self.on_off(series, api, on, (proc.pid, off), rep))
                except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
                    self.res.fail("ops", series, str(exc))
            self.halt(proc)

    def on_off(
        self, series: str, api: str, on: tuple[int, int], off: tuple[int, int], rep: int
    ) -> dict[str, float]:
        a = self.args
        got: dict[str, dict[str, float]] = {"on": {}, "off": {}}
        order = [("on", on), ("off", off)]
        for name, (pid, port) in order if rep % 2 == 0 else order[::-1]:
            m = h.run_wrk(
                self.pin_load, port, PATHS[api], self.scripts[api, False], a.conns, a.duration
            )
            if m["errors"]:
                self.res.notes.append(f"ops {series} {name}: {m['errors']:.0f} wrk errors/non-2xx")
            got[name]["rps"] = m["rps"]
            got[name] |= self.fixed_rate(series, pid, port, api, False)
            got[name] |= self.fixed_rate(series, pid, port, api, True)
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

    def latency_row(self, rep: int) -> None:
        a = self.args
        script = self.scripts["chat", False]
        # direct: wrk on the proxy's core, so it crosses cores as a client of the proxy does
        d = h.run_wrk(self.pin_proxy, self.fast_port, PATHS["chat"], script, 1, a.latency_duration)
        self.res.add("latency", "direct upstream", {"p50_ms": d["p50_ms"], "p99_ms": d["p99_ms"]})

        def one(row: str, series: str, port: int, api: str) -> None:
            s = self.scripts[api, False]
            m = h.run_wrk(self.pin_load, port, PATHS[api], s, 1, a.latency_duration)
            self.res.add(
                row,
                series,
                {
                    "p50_ms": m["p50_ms"],
                    "p99_ms": m["p99_ms"],
                    "added_p50_ms": m["p50_ms"] - d["p50_ms"],
                    "added_p99_ms": m["p99_ms"] - d["p99_ms"],
                },
            )

        self.each("latency", one)

    def memory_row(self, rep: int) -> None:
        for series in self.live:
            target, api = series.split()
            port, proc = 0, None
            try:
                port = self.target(target, self.slow, 1, self.args.proxy_cpus, f"mem-{api}")
                proc = self.procs[-1]
                self.res.add("memory", series, self.hold(proc.pid, port, api))
            except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
                self.res.fail("memory", series, str(exc))
            finally:
                if proc is not None:
                    self.halt(proc)

    def hold(self, pid: int, port: int, api: str) -> dict[str, float]:
        for _ in range(10):  # warm up: imports, upstream pool, allocator
            h.request(port, "POST", PATHS[api], body(api, False))
        time.sleep(0.5)
        idle = h.rss_kib(pid)
        n = self.args.streams
        cmd = [*self.pin_load, sys.executable, str(BENCH / "hold_streams.py"), "--port", str(port)]
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
            self.res.notes.append(f"memory: only {opened}/{n} streams opened on port {port}")
        per = (held - idle) / max(1, opened)
        return {
            "kib_per_stream": per,
            "streams_open": opened,
            "idle_mib": idle / 1024,
            "open_mib": held / 1024,
        }

    def workers_row(self, rep: int) -> None:
        cpus = f"{self.args.proxy_cpus},{self.args.load_cpus}"
        for target in self.ports:
            try:
                port = self.target(target, self.fast, 2, cpus, "w2")
            except RuntimeError as exc:
                for series in (s for s in self.live if s.startswith(target)):
                    self.res.fail("workers", series, f"--workers 2 did not start: {exc}")
                continue
            proc = self.procs[-1]
            for series in (s for s in self.live if s.startswith(target)):
                api = series.split()[1]
                s = self.scripts[api, False]
                a = self.args
                try:
                    m = h.run_wrk(self.pin_load, port, PATHS[api], s, a.conns, a.duration)
                except RuntimeError as exc:
                    self.res.fail("workers", series, str(exc))
                    continue
                if m["errors"]:
                    self.res.notes.append(f"workers {series}: {m['errors']:.0f} wrk errors/non-2xx")
                one = self.res.rep_value("nonstream", series, "rps", rep)
                if one is None and rep == 0:
                    self.res.notes.append("workers: scaling needs the nonstream row in the run")
                scaling = {"scaling": m["rps"] / one} if one else {}
                self.res.add("workers", series, {"rps_w2": m["rps"], **scaling})
            self.halt(proc)

    def replicas_row(self, rep: int) -> None:
        """The gateway in front of 3 replicas (fast upstreams like the first) beside the
        same gateway in front of one, measured here one after the other, each api: req/s
        at 64 connections and CPU us per request (over the same wrk run)."""
        if "gateway" not in self.ports:
            self.res.notes.append("replicas: needs the gateway target")
            return
        if not hasattr(self, "replica_urls"):
            self.replica_urls = [self.fast] + [self.upstream(f"upstream-r{i}", 0) for i in (2, 3)]
        try:
            port = self.target(
                "gateway", " ".join(self.replica_urls), 1, self.args.proxy_cpus, "r3"
            )
        except RuntimeError as exc:
            self.res.fail("replicas", "gateway chat", f"3 replicas did not start: {exc}")
            return
        proc = self.procs[-1]
        try:
            for series in (s for s in self.live if s.startswith("gateway ")):
                api = series.split()[1]
                runs = [(self.pid("gateway"), self.ports["gateway"]), (proc.pid, port)]
                if rep % 2:  # which one goes first alternates: no order bias
                    runs.reverse()
                measured = {p: self.cpu_wrk(pid, p, api) for pid, p in runs}
                one, three = measured[self.ports["gateway"]], measured[port]
                self.res.add(
                    "replicas",
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
        except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
            self.res.fail("replicas", "gateway chat", str(exc))
        finally:
            self.halt(proc)

    def cpu_wrk(self, pid: int, port: int, api: str) -> tuple[float, float]:
        """(req/s, CPU us per request of ``pid``) over one non-streaming wrk run."""
        a = self.args
        cpu0 = h.cpu_seconds(pid)
        m = h.run_wrk(
            self.pin_load, port, PATHS[api], self.scripts[api, False], a.conns, a.duration
        )
        cpu = h.cpu_seconds(pid) - cpu0
        if m["errors"]:
            self.res.notes.append(f"replicas port {port}: {m['errors']:.0f} wrk errors/non-2xx")
        return m["rps"], cpu * 1e6 / max(1.0, m["requests"])

    def run_micro(self) -> None:
        script = BENCH / "micro_transcoder.py"
        if not script.exists():
            self.res.notes.append("micro: bench/micro_transcoder.py not present, skipped")
            return
        cmd = [sys.executable, str(script)]
        helptext = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60)
        if self.args.quick and "--quick" in helptext.stdout:
            cmd.append("--quick")
        try:
            out = subprocess.run(
                cmd, capture_output=True, text=True, timeout=self.args.micro_timeout
            )
        except subprocess.TimeoutExpired:
            self.res.notes.append(f"micro: timed out after {self.args.micro_timeout}s")
            return
        print("\n== micro_transcoder ==\n" + out.stdout + out.stderr[-2000:], flush=True)
        self.res.extra["micro"] = {"returncode": out.returncode, "output": out.stdout[-20000:]}

    def run_instructions(self) -> None:
        cmd = [sys.executable, str(BENCH / "instructions.py")]
        if self.args.quick:
            cmd += ["--requests", "100"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            self.res.notes.append("instructions: timed out after 900s")
            return
        print("\n== instructions ==\n" + out.stdout + out.stderr[-2000:], flush=True)
        self.res.extra["instructions"] = {"returncode": out.returncode, "output": out.stdout}

    # -- the run ---------------------------------------------------------------

    def run(self) -> None:
        rows = self.args.only
        load_rows = [r for r in rows if r not in SOLO]
        if load_rows:
            self.setup()
        if "memory" in rows:
            self.slow = self.upstream("upstream-slow", self.args.slow_delay_ms)
        for rep in range(self.args.reps):
            for row in load_rows:
                print(f"[rep {rep + 1}/{self.args.reps}] {row}", flush=True)
                if row in ("nonstream", "stream"):
                    self.each(row, self.wrk_row, row == "stream")
                elif row == "cpu":
                    self.each(row, self.cpu_row)
                elif row == "ops":
                    self.ops_row(rep)
                elif row == "identity":
                    self.identity.run(rep)
                elif row == "reasoning":
                    self.reasoning.run(rep)
                elif row == "codex":
                    self.codex.run(rep)
                else:
                    getattr(self, f"{row}_row")(rep)
        for proc in list(self.procs):
            self.halt(proc)
        if "micro" in rows:
            self.run_micro()
        if "instructions" in rows:
            self.run_instructions()


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
    bench = Bench(args, log_dir)
    try:
        bench.run()
    finally:
        for proc in list(bench.procs):
            bench.halt(proc)
        for script in bench.scripts.values():
            script.unlink(missing_ok=True)
        bench.identity.close()
    meta = {"machine": {**h.machine(), **environment(REPO)}, "args": vars(args)}
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    print("\n" + table(bench.res), flush=True)
    summary = bench.res.summary()
    extra = "\n".join(identity_table(summary) + reasoning_table(summary) + codex_table(summary))
    print(extra, flush=True)
    write_json(args.output, bench.res, meta)
    args.output.with_suffix(".md").write_text(markdown(bench.res) + extra)
    print(f"\nwrote {args.output} in {meta['elapsed_s']}s; logs in {log_dir}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
