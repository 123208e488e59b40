"""The ``websocket`` row of bench/run.py: gateway CPU over the Responses WebSocket.

Two comparisons, each in the same run against the same gateway process, with
``ws_client.py`` on the load core (closed loop, ``LANES`` connections at a time):

* the small streamed request of the ``cpu`` row, over SSE (``POST /v1/responses``) and
  as ``response.create`` messages on a socket (with permessage-deflate, as Codex
  offers it, and without), for ``--cpu-duration`` seconds each: CPU per response and
  per event, and the socket's per event against SSE's;
* a Codex-sized conversation (``codex.codex_request``: about 60 KB of history, 30
  tools) sent once, then ``TURNS`` turns of one new user message: on the socket each
  turn a continuation (``previous_response_id``, only the new item), over HTTP each turn
  the whole conversation so far (and, to set the transport aside, the same whole sends
  on a socket). CPU per turn, and the continuation's against each whole.

The gateway's CPU is read from ``/proc`` between the client's ``START`` and ``END``;
the first request of each connection (and the conversation's first send) is before.
"""

from __future__ import annotations

import json
import sys

import harness as h

from rows.base import BENCH, FAILURES, Bench, Row, body
from rows.codex import codex_request

LANES = 4  # connections at a time (each one request after another)
TURN_LANES = 2
TURNS = 60  # continuations per connection after the conversation's first send
RAW = ("--no-deflate",)  # the socket without permessage-deflate
TARGETS = ("gateway", "aiohttp")  # (the baseline proxy has no WebSocket)


class Websocket(Row):
    name = "websocket"

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.small = body("responses", True).decode()
        self.codex = json.dumps(codex_request(True))

    def run(self, rep: int) -> None:
        b = self.bench
        for series in b.live:
            target, api = series.split()
            if api != "responses" or target not in TARGETS:
                continue
            try:
                b.res.add(self.name, series, self.measure(b.pid(target), b.ports[target]))
            except FAILURES as exc:
                b.res.fail(self.name, series, str(exc))

    def measure(self, pid: int, port: int) -> dict[str, float]:
        seconds = str(self.bench.args.cpu_duration)
        out: dict[str, float] = {}
        for mode, key, more in (("sse", "sse", ()), ("ws", "ws", ()), ("ws", "raw", RAW)):
            cpu, counts = self.client(pid, port, mode, self.small, "--duration", seconds, *more)
            out[f"us_resp_{key}"] = cpu * 1e6 / counts["responses"]
            out[f"us_event_{key}"] = cpu * 1e6 / counts["events"]
        out["event_ratio"] = out["us_event_ws"] / out["us_event_sse"]
        out["event_ratio_raw"] = out["us_event_raw"] / out["us_event_sse"]
        for mode, key in (("http-turns", "http"), ("ws-whole", "whole"), ("ws-turns", "ws")):
            cpu, counts = self.client(pid, port, mode, self.codex, "--turns", str(TURNS))
            out[f"us_turn_{key}"] = cpu * 1e6 / counts["responses"]
        out["turn_ratio"] = out["us_turn_ws"] / out["us_turn_http"]
        out["turn_ratio_ws"] = out["us_turn_ws"] / out["us_turn_whole"]
        return out

    def client(
        self, pid: int, port: int, mode: str, doc: str, *more: str
    ) -> tuple[float, dict[str, int]]:
        """One run of ws_client.py: the gateway's CPU seconds, and the client's counts."""
        lanes = TURN_LANES if mode.endswith("turns") else LANES
        cmd = [*self.bench.pin_load, sys.executable, str(BENCH / "ws_client.py")]
        cmd += ["--port", str(port), "--mode", mode, "--body", doc, "--lanes", str(lanes)]
        cpu, counts = h.cpu_around(pid, [*cmd, *more])
        if counts.get("failed") or not counts.get("responses"):
            raise RuntimeError(f"websocket row, {mode}: {counts}")
        return cpu, counts
