"""What a row of bench/run.py is, and what it needs of the bench.

A row is built with the bench, prepared once after the bench's setup, run once a
repetition, and closed at the end; its own table, if it has one, is printed after the
main one. The bench reaches the row as an object of the ``Bench`` protocol: the flags,
the processes it starts and stops, the fast upstream, the live targets and their
series, the results. This module imports neither the driver nor a row, so no row needs
the driver to name its bench.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import harness as h
from report import Results

BENCH = Path(__file__).resolve().parents[1]  # bench/: the scripts the rows start
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses"}
HELLO: dict[str, dict[str, Any]] = {
    "chat": {"model": "demo", "messages": [{"role": "user", "content": "Say hello"}]},
    "responses": {"model": "demo", "input": "Say hello"},
}
# What a measurement may raise: the row records it as its series' error and goes on.
FAILURES = (RuntimeError, OSError, ValueError, subprocess.SubprocessError)
Flags = Sequence[str]  # more command-line flags for a gateway
# row -> series -> metric -> median, min, max, spread_pct, values (Results.summary)
Summary = dict[str, Any]


def body(api: str, stream: bool) -> bytes:
    """The small request of ``api`` ("chat" or "responses"), streamed or not."""
    return json.dumps({**HELLO[api], **({"stream": True} if stream else {})}).encode()


class Bench(Protocol):
    """What a row needs of the bench (bench/run.py's ``Session``)."""

    args: argparse.Namespace  # run.py's flags
    log_dir: Path  # process logs, and the files a row writes for them
    res: Results
    pin_proxy: list[str]  # the taskset prefix of the proxy core (--proxy-cpus)
    pin_load: list[str]  # of wrk, the clients and the upstreams (--load-cpus)
    ports: dict[str, int]  # live targets (one worker each) -> port
    live: list[str]  # series whose target answered the sample requests
    events: dict[str, float]  # series -> SSE events per streamed answer
    scripts: dict[tuple[str, bool], Path]  # (api, stream) -> wrk script of body(api, stream)
    fast: str  # the fast upstream's URL, behind every target
    fast_port: int
    fast_pid: int

    def spawn(self, name: str, cmd: list[str]) -> h.Proc:
        """Start ``cmd``, logged as ``name``; stopped with the rest at the end."""
        ...

    def launch(
        self, name: str, cmd: list[str], port: int, headers: dict[str, str] | None = None
    ) -> h.Proc:
        """``spawn``, then wait for a 200 from ``GET /v1/models`` on ``port`` (stopped and
        RuntimeError if none comes)."""
        ...

    def halt(self, proc: h.Proc) -> None:
        """Stop ``proc`` now."""
        ...

    def upstream(self, name: str, delay_ms: float) -> str:
        """A fixed demo upstream on the load core: its URL."""
        ...

    def target(
        self, target: str, upstream: str, workers: int, cpus: str, tag: str, extra: Flags = ()
    ) -> tuple[int, h.Proc]:
        """A new instance of ``target`` ("baseline", "gateway", "aiohttp") in front of
        ``upstream`` (several URLs, space-separated: replicas), pinned to ``cpus``, with
        ``extra`` gateway flags: its port and process."""
        ...

    def pid(self, target: str) -> int:
        """The process of the live one-worker ``target``."""
        ...


class Row:
    """A row: ``name`` keys its results. A solo row starts what it needs itself; it
    runs once, after the load rows, with every process of the bench stopped."""

    name = ""
    solo = False
    start_called = False

    def __init__(self, bench: Bench) -> None:
        self.bench = bench

    def prepare(self) -> None:
        """Once, after the bench's setup, before the first repetition."""

    def start(self) -> None:
        """What the row starts on its first repetition and keeps for the others."""

    def started(self) -> bool:
        """``start``, on the first call only; False when it fails (recorded as the row's
        ``setup`` error), and the row skips that repetition."""
        if self.start_called:
            return True
        self.start_called = True
        try:
            self.start()
        except RuntimeError as exc:
            self.bench.res.fail(self.name, "setup", str(exc))
            return False
        return True

    def run(self, rep: int) -> None:
        raise NotImplementedError

    def table(self, summary: Summary) -> list[str]:
        """Lines of the row's own table, printed after the main one."""
        return []

    def close(self) -> None:
        """Once, at the end, after the bench's processes are stopped."""


def each(bench: Bench, row: str, measure: Callable[[str, int, str], None]) -> None:
    """``measure(series, port, api)`` for every live series; a failure is that series'."""
    for series in bench.live:
        target, api = series.split()
        try:
            measure(series, bench.ports[target], api)
        except FAILURES as exc:
            bench.res.fail(row, series, str(exc))
