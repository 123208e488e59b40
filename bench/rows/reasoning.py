"""The ``reasoning`` row of bench/run.py: a streamed reasoning delta's CPU beside a text delta's.

Two gateways on the proxy core, each in front of its own fixed demo upstream with
the same number of deltas per answer (``--reasoning-deltas``, default 256): one
streams them as text (``gateway.demo --fixed``), the other as ``reasoning_content``
then one piece of text (``--fixed --reasoning``). In each repetition both take the
same fixed-rate streamed ``POST /v1/responses`` load (bench/rate_client.py, one after
the other); the row gives each gateway's CPU per answer and per SSE event, and the
ratio reasoning / text of CPU per event. The issue's bar: within 1.1x.

The micro benchmark's reasoning rows (``bench/micro_transcoder.py --streams
reasoning``) give the same comparison without HTTP, per delta.
"""

from __future__ import annotations

import json
import sys

import harness as h
from report import fmt

from rows.base import FAILURES, Bench, Row, Summary

VARIANTS = ("text", "reasoning")
BODY = json.dumps({"model": "demo", "input": "Think, then say hello", "stream": True})
METRICS = [
    ("us_per_answer", "gateway CPU us/answer"),
    ("us_per_event", "gateway CPU us/event"),
    ("events_per_answer", "events/answer"),
]


class Reasoning(Row):
    """Started on the first repetition, kept for the others (the bench stops the processes)."""

    name = "reasoning"

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.ports: dict[str, int] = {}
        self.pids: dict[str, int] = {}

    def start(self) -> None:
        b = self.bench
        deltas = str(b.args.reasoning_deltas)
        for name in VARIANTS:
            port = h.free_port()
            demo = [sys.executable, "-m", "gateway.demo", "--fixed", "--port", str(port)]
            demo += ["--deltas", deltas, *(["--reasoning"] if name == "reasoning" else [])]
            b.launch(f"upstream-{name}", [*b.pin_load, *demo], port)
            upstream = f"http://{h.HOST}:{port}/v1"
            port = h.free_port()
            cmd = [sys.executable, "-m", "gateway", "serve", "--host", h.HOST, "--port", str(port)]
            cmd += ["--upstream", upstream, "--model", "demo"]
            proc = b.launch(f"gateway-{name}", [*b.pin_proxy, *cmd], port)
            self.ports[name], self.pids[name] = port, proc.pid

    def run(self, rep: int) -> None:
        b = self.bench
        if not self.started():
            return
        for name in VARIANTS:
            try:
                b.res.add("reasoning", name, self.measure(name))
            except FAILURES as exc:
                b.res.fail("reasoning", name, str(exc))

    def table(self, summary: Summary) -> list[str]:
        return table(summary)

    def measure(self, name: str) -> dict[str, float]:
        b, a = self.bench, self.bench.args
        port, pid = self.ports[name], self.pids[name]
        cpu, out = h.fixed_rate(
            b.pin_load, pid, port, "/v1/responses", BODY.encode(), a.stream_rate, a.cpu_duration
        )
        if out["failed"] or out["dropped"]:
            b.res.notes.append(f"reasoning {name}: {out}")
        return {
            "us_per_answer": cpu * 1e6 / out["ok"],
            "us_per_event": cpu * 1e6 / max(1, out["events"]),
            "events_per_answer": out["events"] / out["ok"],
        }


def table(summary: dict[str, dict[str, dict[str, dict[str, float]]]]) -> list[str]:
    """The reasoning row's own table: medians, and reasoning / text per event."""
    row = summary.get("reasoning")
    if not row:
        return []
    lines = ["", "reasoning (streamed POST /v1/responses, fixed rate; deltas as text or reasoning)"]
    lines.append(f"{'series':<12}" + "".join(f"{label:>24}" for _, label in METRICS))
    for name in VARIANTS:
        stats = row.get(name)
        if stats:
            cells = [f"{fmt(stats[k]['median']) if k in stats else '-':>24}" for k, _ in METRICS]
            lines.append(f"{name:<12}" + "".join(cells))
    text, reasoning = row.get("text"), row.get("reasoning")
    if text and reasoning:
        ratio = reasoning["us_per_event"]["median"] / text["us_per_event"]["median"]
        lines.append(f"CPU per event, reasoning / text: {ratio:.2f}x (bar: within 1.1x)")
    return lines
