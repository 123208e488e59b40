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
  one commit, the paired one by up to 0.05 among a run's repetitions. Two more pairs
  the same way:
- ``floor`` against ``plain``: ``floor`` is ``ids+auth+idem`` with the store cut down
  to what every store that replays answers must do, keep a copy of each answer under
  its key (bench/floor_gateway.py; not a store: nothing is ever replayed). No store
  can cost less, so this pair is the least the three can cost on this machine;
- ``ids+auth+idem`` against the same with a store of 200 records (it stays in the
  core's cache, and evicts a hundredth of itself every other request): what it costs
  that a store keeps its answers for hours, in memory the next request finds cold.

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

import harness as h
from report import fmt

from rows.base import BENCH, PATHS, Bench, Row, Summary, body

KEY = "sk-bench-identity-0123456789"
FLOOR = BENCH / "floor_gateway.py"
VARIANTS = ("plain", "ids+auth+idem", "ids+auth+idem redis")
METRICS = [
    ("rps", "req/s (64 conns)"),
    ("us_per_req", "gateway CPU us/request"),
    ("redis_us_per_req", "redis-server CPU us/request"),
    ("p99_ms", "p99 ms"),
]
STORE = ("memory store, empty", "memory store, full")
CACHED = "ids+auth+idem, store in cache"
CACHED_ENTRIES = 200  # records of about 1.5 KB: 300 KB, within a core's L2
# Paired runs (a, b): b's req/s over a's. The first is the bar's; the floor's is the least
# any store can cost here; the third, what keeping the answers in memory that is cold
# by the time it is read again costs, against a store so small that it stays cached.
PAIRS = (
    ("plain", "ids+auth+idem"),
    ("plain", "floor"),
    (CACHED, "ids+auth+idem"),
)
PAIR_LABELS = {
    PAIRS[0]: "ids+auth+idem vs plain",
    PAIRS[1]: "floor vs plain",
    PAIRS[2]: f"ids+auth+idem vs the same with a {CACHED_ENTRIES}-record store",
}


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


class Identity(Row):
    """Started on the first repetition, kept for the others, stopped by ``close``."""

    name = "identity"

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.payload, self.paths = body("responses", False), PATHS
        self.ports: dict[str, int] = {}
        self.pids: dict[str, int] = {}
        self.redis_pid = 0
        self.scripts: list[Path] = []

    def start(self) -> None:
        b = self.bench
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
            self.redis_pid = b.spawn("redis", cmd).pid
            wait_redis(port)
            extra["ids+auth+idem redis"] = [*auth, "--redis", f"redis://{h.HOST}:{port}/0"]
        extra["floor"] = auth
        extra[CACHED] = auth
        for name, args in extra.items():
            port = h.free_port()
            if name == CACHED:
                conf = b.log_dir / "identity-cached.toml"
                bounded = bounded_store(conf, port, b.fast, CACHED_ENTRIES)
                cmd = [*b.pin_proxy, sys.executable, "-m", "gateway", "serve", *bounded, *args]
            elif name == "floor":
                cmd = [*b.pin_proxy, *gateway_cmd(port, b.fast, args, FLOOR)]
            else:
                cmd = [*b.pin_proxy, *gateway_cmd(port, b.fast, args)]
            auth_header = {"Authorization": f"Bearer {KEY}"} if args else None
            proc = b.launch(
                f"identity-{name.replace(' ', '-').replace('+', '-')}", cmd, port, auth_header
            )
            self.ports[name], self.pids[name] = port, proc.pid

    def run(self, rep: int) -> None:
        b, a = self.bench, self.bench.args
        if not self.started():
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
            script = self.script(name)
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
        for pair in PAIRS:
            if all(name in self.ports for name in pair):
                self.paired(pair)
        for name, full in zip(STORE, (False, True), strict=True):
            b.res.add("identity", name, {"store_us": store_cost(full)})

    def script(self, name: str) -> Path:
        """The wrk script for a run of ``name``: plain requests for ``plain``; for the
        others, a new one whose keys no earlier run used (removed by ``close``)."""
        if name == "plain":
            return self.bench.scripts["responses", False]
        script = identity_script(self.payload, self.bench.log_dir, KEY)
        self.scripts.append(script)
        return script

    def paired(self, pair: tuple[str, str]) -> None:
        """Both gateways of ``pair`` under load at once (see the module's docstring)."""
        b, a = self.bench, self.bench.args
        first, second = pair
        scripts = {name: self.script(name) for name in pair}
        cpu0 = {name: h.cpu_seconds(self.pids[name]) for name in pair}
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

        threads = [threading.Thread(target=load, args=(name,)) for name in pair]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        label = PAIR_LABELS[pair]
        if set(found) != set(pair):
            b.res.notes.append(f"identity paired {label}: a wrk run failed")
            return
        metrics = {}
        for name in pair:
            m = found[name]
            if m["errors"]:
                b.res.notes.append(f"identity paired {name}: {m['errors']:.0f} wrk errors/non-2xx")
            cpu = h.cpu_seconds(self.pids[name]) - cpu0[name]
            metrics[name] = {"rps": m["rps"], "us_per_req": cpu * 1e6 / max(1.0, m["requests"])}
        ratio = metrics[second]["rps"] / max(1.0, metrics[first]["rps"])
        b.res.add("identity", f"paired {label}", {"ratio": ratio})
        for name in pair:
            b.res.add("identity", f"paired {label}: {name}", metrics[name])

    def redis_cpu(self) -> float:
        return h.cpu_seconds(self.redis_pid) if self.redis_pid else 0.0

    def table(self, summary: Summary) -> list[str]:
        return table(summary)

    def close(self) -> None:
        for script in self.scripts:
            script.unlink(missing_ok=True)


def gateway_cmd(
    port: int, upstream: str, extra: list[str], program: Path | None = None
) -> list[str]:
    """``python -m gateway serve`` (or ``program serve``, the floor's) with these flags."""
    common = ["--host", h.HOST, "--port", str(port), "--upstream", upstream, "--model", "demo"]
    run = [str(program)] if program is not None else ["-m", "gateway"]
    return [sys.executable, *run, "serve", *common, *extra]


def bounded_store(conf: Path, port: int, upstream: str, entries: int) -> list[str]:
    """Flags for a gateway on ``port`` in front of ``upstream`` whose memory store holds
    at most ``entries`` records: a config file written to ``conf`` (the bound has no
    flag of its own, and ``--config`` goes without ``--upstream``/``--model``)."""
    conf.write_text(
        f'[listen]\nhost = "{h.HOST}"\nport = {port}\n'
        f"[idempotency]\nmax-entries = {entries}\n"
        f'[[deployment]]\nmodels = ["demo"]\nupstream = "{upstream}"\n'
    )
    return ["--config", str(conf)]


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
    for pair in PAIRS:
        label = PAIR_LABELS[pair]
        ratio = row.get(f"paired {label}", {}).get("ratio")
        sides = [row.get(f"paired {label}: {name}", {}) for name in pair]
        if not ratio or not all(sides):
            continue
        rps = [s["rps"]["median"] for s in sides]
        cpu = [s["us_per_req"]["median"] for s in sides]
        lines.append(
            f"paired: {label} req/s {ratio['median']:.2f}x (median of the runs' ratios, "
            f"{ratio['min']:.2f}-{ratio['max']:.2f}; {rps[1]:,.0f} vs {rps[0]:,.0f} req/s, "
            f"{cpu[1]:.0f} vs {cpu[0]:.0f} us CPU a request)"
        )
    cost = [row.get(name, {}).get("store_us", {}).get("median") for name in STORE]
    if cost[0] and cost[1]:
        lines.append(
            f"memory store, claim + finish of a new key (in-process CPU): {cost[0]:.2f} us "
            f"empty, {cost[1]:.2f} us full (evicting the oldest): {cost[1] / cost[0]:.2f}x"
        )
    return lines
