"""The ``identity`` row of bench/run.py: what request identity and replay safety cost.

In each repetition, back to back under the same pinning and the same wrk load
(non-streaming ``POST /v1/responses``, 64 connections):

- ``baseline chat``: the pass-through proxy, the yardstick of the other rows;
- ``plain``: the gateway as in the ``nonstream`` row (no keys, no Idempotency-Key);
- ``ids+auth+idem``: every request carries its own ``X-Request-Id``, a client API key
  (``--api-keys-file``) and its own ``Idempotency-Key``, kept in the in-memory store;
- ``... redis``: the same, with the records in a ``redis-server`` on loopback
  (``--redis``); its row also shows Redis's own CPU per request;
- ``paired``: ``plain`` and ``ids+auth+idem`` loaded at once, each by its own wrk with
  half the connections, both gateways on the same CPU. The scheduler shares that CPU
  between them, so the ratio of their request rates is the inverse ratio of their cost
  per request, and whatever else slows the machine meanwhile slows both alike: on this
  shared host the back-to-back ratio swung between 0.72x and 1.07x from run to run at
  one commit, the paired one by a few hundredths.

The issue's bar: the ids+auth+idem ratio to the baseline at least 0.9x of the plain
one (``vs plain`` column; the paired ratio is the steadier figure of the same). Each
request's keys are unique across requests, reps and runs, so every request is a first
run: the store writes a record each time (the replay path, a lookup and a copy, is
cheaper).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import harness as h
from report import fmt

if TYPE_CHECKING:
    from run import Bench

KEY = "sk-bench-identity-0123456789"
VARIANTS = ("plain", "ids+auth+idem", "ids+auth+idem redis")
METRICS = [
    ("rps", "req/s (64 conns)"),
    ("us_per_req", "gateway CPU us/request"),
    ("redis_us_per_req", "redis-server CPU us/request"),
    ("p99_ms", "p99 ms"),
]
STORE = ("memory store, empty", "memory store, full")
PAIRED = ("plain", "ids+auth+idem")


def store_cost(full: bool, n: int = 20_000) -> float:
    """CPU us per claim + finish of a new key in the in-process store (in this process),
    empty or full (100,000 records: every new one evicts the oldest)."""
    from gateway.core import idempotency as idem
    from gateway.stores.memory import MemoryStore

    store = MemoryStore()
    fp = idem.fingerprint("/v1/responses", b"{}")
    answer = b"x" * 1200
    if full:
        for i in range(store.max_entries):
            store.claim_now(f"fill-{i}", fp, "t")
            store.finish_now(f"fill-{i}", "t", 200, answer, "application/json")
    keys = [f"bench-{i}" for i in range(n)]
    t0 = time.process_time()
    for key in keys:
        store.claim_now(key, fp, key)
        store.finish_now(key, key, 200, answer, "application/json")
    return (time.process_time() - t0) * 1e6 / n


def identity_script(body: bytes, directory: Path, key: str | None) -> Path:
    """A wrk script that gives every request its own X-Request-Id and Idempotency-Key."""
    text = body.decode()
    assert "]==]" not in text
    run = uuid.uuid4().hex[:12]  # unique across runs and processes: no key is ever replayed
    auth = f'headers["Authorization"] = "Bearer {key}"\n' if key else ""
    lua = (
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{text}]==]\n"
        "local n = 0\n"
        'local headers = {["Content-Type"] = "application/json"}\n'
        f"{auth}"
        "request = function()\n"
        "  n = n + 1\n"
        f'  local id = "{run}-" .. n\n'
        '  headers["X-Request-Id"] = "bench-" .. id\n'
        '  headers["Idempotency-Key"] = "idem-" .. id\n'
        "  return wrk.format(nil, nil, headers, nil)\n"
        "end\n" + h.WRK_DONE
    )
    fd, name = tempfile.mkstemp(suffix=".lua", dir=directory)
    with os.fdopen(fd, "w") as f:
        f.write(lua)
    return Path(name)


class IdentityRow:
    """Started on the first repetition, kept for the others, stopped by ``close``."""

    def __init__(self, bench: Bench, payload: bytes, paths: dict[str, str]) -> None:
        self.bench, self.payload, self.paths = bench, payload, paths
        self.ports: dict[str, int] = {}
        self.pids: dict[str, int] = {}
        self.redis_pid = 0
        self.scripts: list[Path] = []
        self.started = False

    def start(self) -> None:
        b = self.bench
        self.started = True
        keys = b.log_dir / "identity-keys.txt"
        keys.write_text(KEY + "\n")
        auth = ["--api-keys-file", str(keys)]
        extra: dict[str, list[str]] = {"plain": [], "ids+auth+idem": auth}
        redis = shutil.which("redis-server")
        if redis is None:
            b.res.notes.append("identity: redis-server not found (apt-get install redis-server)")
        else:
            port = h.free_port()
            cmd = [*b.pin_load, redis, "--port", str(port), "--bind", h.HOST]
            cmd += ["--save", "", "--appendonly", "no"]
            proc = h.start("redis", cmd, b.log_dir)
            b.procs.append(proc)
            self.redis_pid = proc.pid
            wait_redis(port)
            extra["ids+auth+idem redis"] = [*auth, "--redis", f"redis://{h.HOST}:{port}/0"]
        for name, args in extra.items():
            port = h.free_port()
            cmd = [*b.pin_proxy, *gateway_cmd(port, b.fast, args)]
            auth_header = {"Authorization": f"Bearer {KEY}"} if args else None
            proc = b.launch(
                f"identity-{name.replace(' ', '-').replace('+', '-')}", cmd, port, auth_header
            )
            self.ports[name], self.pids[name] = port, proc.pid

    def run(self, rep: int) -> None:
        b, a = self.bench, self.bench.args
        if not self.started:
            try:
                self.start()
            except RuntimeError as exc:
                b.res.fail("identity", "setup", str(exc))
                return
        if "baseline" in b.ports:  # the yardstick, measured in the same minute
            m = h.run_wrk(
                b.pin_load,
                b.ports["baseline"],
                self.paths["chat"],
                b.scripts["chat", False],
                a.conns,
                a.duration,
            )
            b.res.add("identity", "baseline chat", {"rps": m["rps"], "p99_ms": m["p99_ms"]})
        for name in VARIANTS:
            if name not in self.ports:
                continue
            key = None if name == "plain" else KEY
            script = (
                b.scripts["responses", False]
                if name == "plain"
                else identity_script(self.payload, b.log_dir, key)
            )
            if script not in b.scripts.values():
                self.scripts.append(script)
            pid = self.pids[name]
            cpu0, redis0 = h.cpu_seconds(pid), self.redis_cpu()
            m = h.run_wrk(
                b.pin_load, self.ports[name], self.paths["responses"], script, a.conns, a.duration
            )
            cpu, redis = h.cpu_seconds(pid) - cpu0, self.redis_cpu() - redis0
            if m["errors"]:
                b.res.notes.append(f"identity {name}: {m['errors']:.0f} wrk errors/non-2xx")
            n = max(1.0, m["requests"])
            metrics = {"rps": m["rps"], "us_per_req": cpu * 1e6 / n, "p99_ms": m["p99_ms"]}
            if name.endswith("redis"):
                metrics["redis_us_per_req"] = redis * 1e6 / n
            b.res.add("identity", name, metrics)
        if all(name in self.ports for name in PAIRED):
            self.paired()
        for name, full in zip(STORE, (False, True), strict=True):
            b.res.add("identity", name, {"store_us": store_cost(full)})

    def paired(self) -> None:
        """Both PAIRED gateways under load at once (see the module's docstring)."""
        b, a = self.bench, self.bench.args
        plain, ident = PAIRED
        scripts = {plain: b.scripts["responses", False]}
        scripts[ident] = identity_script(self.payload, b.log_dir, KEY)
        self.scripts.append(scripts[ident])
        cpu0 = {name: h.cpu_seconds(self.pids[name]) for name in PAIRED}
        found: dict[str, dict[str, float]] = {}

        def load(name: str) -> None:
            found[name] = h.run_wrk(
                b.pin_load,
                self.ports[name],
                self.paths["responses"],
                scripts[name],
                max(1, a.conns // 2),
                a.duration,
            )

        threads = [threading.Thread(target=load, args=(name,)) for name in PAIRED]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if set(found) != set(PAIRED):
            b.res.notes.append("identity paired: a wrk run failed")
            return
        metrics = {}
        for name in PAIRED:
            m = found[name]
            if m["errors"]:
                b.res.notes.append(f"identity paired {name}: {m['errors']:.0f} wrk errors/non-2xx")
            cpu = h.cpu_seconds(self.pids[name]) - cpu0[name]
            metrics[name] = {"rps": m["rps"], "us_per_req": cpu * 1e6 / max(1.0, m["requests"])}
        metrics[ident]["vs_plain"] = metrics[ident]["rps"] / max(1.0, metrics[plain]["rps"])
        for name in PAIRED:
            b.res.add("identity", f"paired {name}", metrics[name])

    def redis_cpu(self) -> float:
        return h.cpu_seconds(self.redis_pid) if self.redis_pid else 0.0

    def close(self) -> None:
        for script in self.scripts:
            script.unlink(missing_ok=True)


def gateway_cmd(port: int, upstream: str, extra: list[str]) -> list[str]:
    common = ["--host", h.HOST, "--port", str(port), "--upstream", upstream, "--model", "demo"]
    return [sys.executable, "-m", "gateway", "serve", *common, *extra]


def wait_redis(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((h.HOST, port), timeout=1.0) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer on port {port}")


def table(summary: dict[str, dict[str, dict[str, dict[str, float]]]]) -> list[str]:
    """The identity row's own table: medians, the ratio to the baseline, and to plain."""
    row = summary.get("identity")
    if not row:
        return []
    base = row.get("baseline chat", {}).get("rps", {}).get("median")
    plain = row.get("plain", {}).get("rps", {}).get("median")
    lines = ["", "identity (non-streaming POST /v1/responses; every request its own keys)"]
    heads = ["series", *(label for _, label in METRICS), "rps / baseline", "vs plain"]
    rows = [heads]
    for name in ("baseline chat", *VARIANTS):
        stats = row.get(name)
        if not stats:
            continue
        cells = [name]
        for key, _ in METRICS:
            stat = stats.get(key)
            cells.append(fmt(stat["median"]) if stat else "-")
        rps = stats["rps"]["median"]
        cells.append(f"{rps / base:.2f}x" if base else "-")
        cells.append(f"{rps / plain:.2f}x" if plain and name != "baseline chat" else "-")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(heads))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    pair = [row.get(f"paired {name}", {}) for name in PAIRED]
    if all(pair) and "vs_plain" in pair[1]:
        rps = [p["rps"]["median"] for p in pair]
        cpu = [p["us_per_req"]["median"] for p in pair]
        lines.append(
            "paired (both at once on the same CPU, each with half the connections): "
            f"ids+auth+idem vs plain req/s {pair[1]['vs_plain']['median']:.2f}x "
            f"(median of the runs' ratios, {pair[1]['vs_plain']['min']:.2f}-"
            f"{pair[1]['vs_plain']['max']:.2f}; {rps[1]:,.0f} vs {rps[0]:,.0f} req/s, "
            f"{cpu[1]:.0f} vs {cpu[0]:.0f} us CPU a request)"
        )
    cost = [row.get(name, {}).get("store_us", {}).get("median") for name in STORE]
    if cost[0] and cost[1]:
        lines.append(
            f"memory store, claim + finish of a new key (in-process CPU): {cost[0]:.2f} us "
            f"empty, {cost[1]:.2f} us full (evicting the oldest): {cost[1] / cost[0]:.2f}x"
        )
    return lines
