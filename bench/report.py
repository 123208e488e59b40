"""Results of bench/run.py: collection, medians and spread, the table, the JSON file."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

# "gateway": the lean HTTP server (the default); "aiohttp": serve --http aiohttp.
SERIES = ("baseline chat", "gateway chat", "gateway responses", "aiohttp chat", "aiohttp responses")
RATIOS = ("gw chat / base", "gw resp / base", "aio chat / base", "aio resp / base")

# row -> [(metric key, label)]; the order of the printed table
METRICS: dict[str, list[tuple[str, str]]] = {
    "nonstream": [
        ("rps", "req/s (64 conns)"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("proxy_cpu_pct", "proxy core busy %"),
        ("load_cpu_pct", "load core busy % (wrk+upstream)"),
    ],
    "stream": [
        ("answers_s", "answers/s (64 conns)"),
        ("events_s", "events/s"),
        ("events_per_answer", "events/answer"),
        ("upstream_conns_per_1k", "upstream conns opened per 1k answers"),
        ("p50_ms", "p50 ms (whole answer)"),
        ("p99_ms", "p99 ms (whole answer)"),
        ("proxy_cpu_pct", "proxy core busy %"),
        ("load_cpu_pct", "load core busy % (wrk+upstream)"),
    ],
    "cpu": [
        ("us_per_req", "CPU us/request (non-stream)"),
        ("us_per_answer", "CPU us/answer (stream)"),
        ("us_per_event", "CPU us/event (stream)"),
    ],
    "latency": [
        ("p50_ms", "p50 ms (conc. 1)"),
        ("p99_ms", "p99 ms (conc. 1)"),
        ("added_p50_ms", "added p50 ms vs direct"),
        ("added_p99_ms", "added p99 ms vs direct"),
    ],
    "memory": [
        ("kib_per_stream", "KiB per open stream"),
        ("streams_open", "streams open"),
        ("idle_mib", "idle RSS MiB"),
        ("open_mib", "RSS MiB with streams open"),
    ],
    # the Responses WebSocket beside SSE (small answers), and a Codex-sized conversation
    # continued on it beside the same turns sent whole over HTTP
    "websocket": [
        ("us_resp_sse", "CPU us/response, SSE"),
        ("us_resp_ws", "CPU us/response, WebSocket"),
        ("us_event_sse", "CPU us/event, SSE"),
        ("us_event_ws", "CPU us/event, WebSocket"),
        ("event_ratio", "WebSocket / SSE, per event"),
        ("us_resp_raw", "CPU us/response, WebSocket, no deflate"),
        ("us_event_raw", "CPU us/event, WebSocket, no deflate"),
        ("event_ratio_raw", "WebSocket no deflate / SSE, per event"),
        ("us_turn_http", "CPU us/turn, Codex-sized, whole over HTTP"),
        ("us_turn_ws", "CPU us/turn, Codex-sized, continuation"),
        ("us_turn_whole", "CPU us/turn, Codex-sized, whole on a socket"),
        ("turn_ratio", "continuation / whole over HTTP, per turn"),
        ("turn_ratio_ws", "continuation / whole on a socket, per turn"),
    ],
    "workers": [("rps_w2", "req/s, --workers 2"), ("scaling", "scaling vs 1 worker")],
    # metrics and access log on (as served) beside off (--no-metrics --no-access-log)
    "ops": [
        ("rps_on", "req/s, metrics+logs on"),
        ("rps_off", "req/s, metrics+logs off"),
        ("rps_ratio", "req/s on / off"),
        ("us_req_on", "CPU us/request (non-stream), on"),
        ("us_req_off", "CPU us/request (non-stream), off"),
        ("req_cpu_ratio", "us/request off / on"),
        ("us_event_on", "CPU us/event (stream), on"),
        ("us_event_off", "CPU us/event (stream), off"),
        ("event_ratio", "us/event off / on"),
    ],
    "replicas": [
        ("rps_1", "req/s, 1 upstream (64 conns)"),
        ("rps_3", "req/s, 3 replicas"),
        ("rps_ratio", "req/s 3 replicas / 1 upstream"),
        ("us_1", "CPU us/request, 1 upstream"),
        ("us_3", "CPU us/request, 3 replicas"),
        ("cpu_ratio", "CPU/request 1 upstream / 3 replicas"),
    ],
}


NO_RATIO = (
    "rps_ratio",
    "event_ratio",
    "req_cpu_ratio",
    "streams_open",
    "scaling",
    "proxy_cpu_pct",
    "load_cpu_pct",
    "added_p99_ms",
    "upstream_conns_per_1k",
    "rps_ratio",
    "cpu_ratio",
)


class Results:
    def __init__(self) -> None:
        self.values: dict[str, dict[str, dict[str, list[float]]]] = {}
        self.errors: dict[str, dict[str, str]] = {}
        self.notes: list[str] = []
        self.extra: dict[str, Any] = {}

    def add(self, row: str, series: str, metrics: dict[str, float]) -> None:
        cell = self.values.setdefault(row, {}).setdefault(series, {})
        for key, value in metrics.items():
            cell.setdefault(key, []).append(float(value))

    def fail(self, row: str, series: str, message: str) -> None:
        self.errors.setdefault(row, {})[series] = message.strip()[:400]

    def rep_value(self, row: str, series: str, key: str, rep: int) -> float | None:
        vals = self.values.get(row, {}).get(series, {}).get(key, [])
        return vals[rep] if rep < len(vals) else None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for row, by_series in self.values.items():
            for series, metrics in by_series.items():
                for key, vals in metrics.items():
                    med = statistics.median(vals)
                    spread = (max(vals) - min(vals)) / 2 / abs(med) * 100 if med else 0.0
                    out.setdefault(row, {}).setdefault(series, {})[key] = {
                        "median": med,
                        "min": min(vals),
                        "max": max(vals),
                        "spread_pct": spread,
                        "values": vals,
                    }
        return out


def fmt(v: float) -> str:
    if v != v:  # NaN
        return "n/a"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def grid(results: Results) -> list[list[str]]:
    """Header plus one line per (row, metric): medians ± half the range, and ratios."""
    summary = results.summary()
    lines = [["row", "metric", *SERIES, *RATIOS]]
    for row, metrics in METRICS.items():
        if row not in summary and row not in results.errors:
            continue
        for key, label in metrics:
            cells = [row, label]
            medians: dict[str, float] = {}
            for series in SERIES:
                stat = summary.get(row, {}).get(series, {}).get(key)
                if stat is not None:
                    medians[series] = stat["median"]
                    pct = stat["spread_pct"]
                    spread = f" ±{pct:.0f}%" if pct < 100 else " ±>99%"
                    spread = spread if len(stat["values"]) > 1 else ""
                    cells.append(fmt(stat["median"]) + spread)
                elif series in results.errors.get(row, {}):
                    cells.append("error")
                else:
                    cells.append("-")
            base = medians.get("baseline chat")
            for series in SERIES[1:]:
                ok = base and series in medians and key not in NO_RATIO
                cells.append(f"{medians[series] / base:.2f}x" if ok and base else "-")
            lines.append(cells)
    return lines


def markdown(results: Results) -> str:
    lines = grid(results)
    out = ["| " + " | ".join(r) + " |" for r in lines]
    out.insert(1, "|" + "---|" * len(lines[0]))
    return "\n".join(out) + "\n"


def table(results: Results) -> str:
    lines = grid(results)
    summary = results.summary()
    widths = [max(len(r[i]) for r in lines) for i in range(len(lines[0]))]
    text = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    direct = summary.get("latency", {}).get("direct upstream")
    if direct:
        p50, p99 = direct["p50_ms"]["median"], direct["p99_ms"]["median"]
        text.append(f"latency, direct to the fake upstream: p50 {fmt(p50)} ms, p99 {fmt(p99)} ms")
    for row, errs in results.errors.items():
        for series, message in errs.items():
            text.append(f"error [{row} / {series}]: {message}")
    text.extend(f"note: {n}" for n in results.notes)
    return "\n".join(text)


def environment(repo: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
        return out.stdout.strip()

    import aiohttp
    import uvloop

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {
        "python": platform.python_version(),
        "loop": f"uvloop {uvloop.__version__}",
        "aiohttp": aiohttp.__version__,
        "commit": git("rev-parse", "--short", "HEAD") + ("-dirty" if dirty else ""),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def write_json(path: Path, results: Results, meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        **meta,
        "rows": results.summary(),
        "errors": results.errors,
        "notes": results.notes,
        **results.extra,
    }
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
