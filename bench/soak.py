"""Bounded soak: thousands of concurrent streams through the gateway to three demo
replicas, some clients leaving mid-stream, one replica killed and restarted.

    .venv/bin/python bench/soak.py [--streams 2000] [--duration 12] [--leave 0.1]

Each of ``--streams`` clients streams ``POST /v1/responses`` answers one after the
other until ``--duration`` seconds are over; a fraction ``--leave`` of the streams is
dropped by its client after a few events. At ``--kill-at`` s the second replica is
killed (SIGKILL), at ``--restart-at`` s it starts again on its port. Printed:

* completed: a whole stream ending in ``response.completed``;
* failed: an error answer in the OpenAI envelope before the stream, or a stream
  ending in exactly one ``response.failed`` (the killed replica's streams);
* left: streams their client dropped on purpose. Every client sends its own
  ``X-Request-Id``, and the replicas (``--faults``) record how each stream ended by
  that id (``gateway.demo.faults``); each leaver is found there: ``cut`` (the replica
  saw the disconnect), ``completed before`` (the replica had written its last byte
  before the client left: nothing to disconnect; the gateway runs behind at this
  load), ``completed after`` (written to the end after the client left, before the
  gateway got round to closing its upstream), or ``died with the kill`` (in flight
  on the killed replica, whose record is read just before the kill, new requests
  refused with 503 from that moment so the record is whole); for cut and completed
  after, the median and largest delay from the client leaving to the upstream's cut
  or last byte;
* the staying clients' streams against the record (``response.completed`` should
  be a stream completed upstream, ``response.failed`` one that died with the kill);
* lost: a staying client without a full stream or exactly one terminal failure (no
  terminal event, two, a broken body, a non-envelope error), or a leaver whose
  upstream stream was neither cut nor completed nor on the killed replica (no
  record, still open at the end, on two replicas): must be 0, and the exit status
  says so;
* the gateway's peak RSS (VmHWM) and the upstream connections the replicas accepted.

Loopback only; every process is started in its own group and stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import harness as h
import uvloop

BENCH = Path(__file__).resolve().parent
TERMINAL = (b"response.completed", b"response.failed", b"response.incomplete")
BODY = {"model": "demo", "input": "Say hello", "stream": True}


class Tally:
    def __init__(self) -> None:
        self.completed = self.failed = self.left = self.lost = 0
        self.reasons: dict[str, int] = {}
        self.leavers: dict[str, float] = {}  # request id -> wall time the client left
        self.sent = 0
        self.stayed: dict[str, str] = {}  # request id -> "completed" / "failed" stream
        self.refused: dict[int, int] = {}  # failed before the stream, by HTTP status

    def next_id(self) -> str:
        self.sent += 1
        return f"soak-{self.sent}"

    def lose(self, why: str) -> None:
        self.lost += 1
        self.reasons[why] = self.reasons.get(why, 0) + 1


async def one_stream(s: aiohttp.ClientSession, url: str, leave: bool, t: Tally) -> None:
    rid = t.next_id()
    try:
        async with s.post(url, json=BODY, headers={"X-Request-Id": rid}) as r:
            if r.status != 200:
                doc = json.loads(await r.read())
                if r.status >= 400 and set(doc["error"]) >= {"message", "type", "code"}:
                    t.failed += 1
                    t.refused[r.status] = t.refused.get(r.status, 0) + 1
                else:
                    t.lose(f"HTTP {r.status}")
                return
            events, terminals, last = 0, 0, b""
            stop_after = random.randint(3, 12) if leave else -1
            async for line in r.content:
                if line.startswith(b"event: "):
                    events += 1
                    name = line[7:].strip()
                    if name in TERMINAL:
                        terminals += 1
                        last = name
                    if events == stop_after:
                        t.left += 1
                        t.leavers[rid] = time.time()
                        return  # leaving the block drops the connection
            if terminals != 1:
                t.lose(f"{terminals} terminal events")
            elif last == b"response.completed":
                t.completed += 1
                t.stayed[rid] = "completed"
            else:
                t.failed += 1
                t.stayed[rid] = "failed"
    except (aiohttp.ClientError, ValueError, KeyError) as exc:
        t.lose(type(exc).__name__)


async def client(s: aiohttp.ClientSession, url: str, end: float, leave: float, t: Tally) -> None:
    while time.monotonic() < end:
        await one_stream(s, url, random.random() < leave, t)


def demo_stats(port: int) -> dict[str, Any]:
    """Connections accepted (this request's own left out) and the stream record."""
    status, _, raw = h.request(port, "GET", "/demo/stats", None, timeout=10.0)
    if status != 200:
        raise RuntimeError(f"GET /demo/stats -> {status}")
    doc = json.loads(raw)
    return {"accepted": doc["connections_accepted"] - 1, "streams": doc["streams"]}


def refuse_new_streams(port: int) -> None:
    """From now on the replica answers 503 (the gateway retries those elsewhere)."""
    fault = json.dumps({"mode": "status", "status": 503}).encode()
    status, _, raw = h.request(port, "POST", "/demo/fault", fault, timeout=5.0)
    if status != 200:
        raise RuntimeError(f"POST /demo/fault -> {status}: {raw[:200]!r}")


def classify(
    leavers: dict[str, float], live: list[dict[str, list[Any]]], dead: dict[str, list[Any]]
) -> tuple[dict[str, int], dict[str, list[float]], dict[str, int]]:
    """How each leaver's stream ended upstream: (kinds, the seconds from the client
    leaving to the upstream's cut or completion by kind, lost leavers by reason)."""
    kinds = {"cut": 0, "completed before": 0, "completed after": 0, "died with the kill": 0}
    lost: dict[str, int] = {}
    delays: dict[str, list[float]] = {"cut": [], "completed after": []}
    for rid, left_at in leavers.items():
        seen = [(how, when) for rec in live if rid in rec for how, when in [rec[rid]]]
        if rid in dead:
            how, when = dead[rid]
            seen.append(("died with the kill" if how == "open" else how, when))
        if len(seen) == 1 and seen[0][0] == "completed":
            how = "completed before" if seen[0][1] <= left_at else "completed after"
        elif len(seen) == 1:
            how = seen[0][0]
            if how == "open":  # on a live replica at the end: never cut, it ran on
                how = "still open upstream"
        else:
            how = "on two replicas" if seen else "no upstream record"
        if how in kinds:
            kinds[how] += 1
            if how in delays:
                delays[how].append(seen[0][1] - left_at)
        else:
            lost[f"leaver: {how}"] = lost.get(f"leaver: {how}", 0) + 1
    return kinds, delays, lost


def spread(delays: list[float]) -> str:
    """`` (median M ms, max N ms after the client left)``, or nothing."""
    if not delays:
        return ""
    ms = sorted(d * 1000 for d in delays)
    return f" ({ms[len(ms) // 2]:.0f} ms median, {ms[-1]:.0f} ms max after it left)"


def cross_check(
    stayed: dict[str, str], live: list[dict[str, list[Any]]], dead: dict[str, list[Any]]
) -> dict[str, int]:
    """The staying clients' whole streams against the upstream record: a client's
    ``response.completed`` should be a stream completed upstream, its
    ``response.failed`` one that died with the killed replica."""
    out: dict[str, int] = {}
    for rid, got in stayed.items():
        ends = [rec[rid][0] for rec in live if rid in rec]
        if rid in dead:
            ends.append("died with the kill" if dead[rid][0] == "open" else dead[rid][0])
        key = f"{got}: {' + '.join(ends) or 'no upstream record'}"
        out[key] = out.get(key, 0) + 1
    return out


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def run(args: argparse.Namespace, log_dir: Path) -> int:
    procs: list[h.Proc] = []
    pin = ["taskset", "-c", args.load_cpus]

    def demo(port: int, name: str) -> h.Proc:
        cmd = [*pin, sys.executable, "-m", "gateway.demo", "--port", str(port), "--fixed"]
        cmd += ["--faults"]  # the stream record by request id
        cmd += ["--deltas", str(args.deltas), "--delay-ms", str(args.delay_ms)]
        proc = h.start(name, cmd, log_dir)
        procs.append(proc)
        h.wait_ready(proc, port)
        return proc

    try:
        ports = [h.free_port() for _ in range(3)]
        replicas = [demo(p, f"soak-replica{i}") for i, p in enumerate(ports)]
        gw_port = h.free_port()
        cmd = ["taskset", "-c", args.gateway_cpus, sys.executable, "-m", "gateway", "serve"]
        cmd += ["--host", h.HOST, "--port", str(gw_port), "--model", "demo"]
        for p in ports:
            cmd += ["--upstream", f"http://{h.HOST}:{p}/v1"]
        gateway = h.start("soak-gateway", cmd, log_dir)
        procs.append(gateway)
        h.wait_ready(gateway, gw_port)
        url = f"http://{h.HOST}:{gw_port}/v1/responses"
        t = Tally()
        victim_port = ports[1]
        dead: dict[str, Any] = {"accepted": 0, "streams": {}}
        rss_samples: list[float] = []
        start = time.monotonic()
        end = start + args.duration

        async def chaos() -> None:
            await asyncio.sleep(args.kill_at)
            refuse_new_streams(victim_port)  # its record below is then whole
            dead.update(demo_stats(victim_port))
            victim = replicas[1]
            victim.popen.send_signal(signal.SIGKILL)
            victim.popen.wait(5)
            print(f"t={time.monotonic() - start:.1f}s: replica 2 killed", flush=True)
            await asyncio.sleep(args.restart_at - args.kill_at)
            replicas[1] = await asyncio.to_thread(demo, victim_port, "soak-replica1-again")
            print(f"t={time.monotonic() - start:.1f}s: replica 2 restarted", flush=True)

        async def sample() -> None:
            while time.monotonic() < end:
                rss_samples.append(h.rss_kib(gateway.pid) / 1024)
                await asyncio.sleep(0.25)

        conn = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
            await asyncio.gather(
                chaos(),
                sample(),
                *(client(s, url, end, args.leave, t) for _ in range(args.streams)),
            )
        elapsed = time.monotonic() - start
        await asyncio.sleep(1.0)  # the replicas see the last cuts
        stats = [demo_stats(p) for p in ports]
        opened = sum(x["accepted"] for x in stats) + dead["accepted"]
        live = [x["streams"] for x in stats]
        kinds, delays, lost = classify(t.leavers, live, dead["streams"])
        for why, n in lost.items():
            t.lost += n
            t.reasons[why] = t.reasons.get(why, 0) + n
        checked = cross_check(t.stayed, live, dead["streams"])
        in_flight = sum(1 for how, _ in dead["streams"].values() if how == "open")
        total = t.completed + t.failed + t.left
        refused = sum(t.refused.values())
        print(
            f"\nsoak: {args.streams} concurrent clients, {total} streams in {elapsed:.1f} s\n"
            f"  completed {t.completed}\n"
            f"  failed    {t.failed}\n"
            f"    ending in response.failed    {t.failed - refused}\n"
            f"    an error before the stream   {refused} {t.refused or ''}\n"
            f"    (in flight on replica 2 at its kill: {in_flight} streams,"
            f" {kinds['died with the kill']} of them leavers)\n"
            f"  left      {t.left}, found by request id upstream:\n"
            f"    cut (the disconnect seen)    {kinds['cut']}{spread(delays['cut'])}\n"
            f"    completed before it left     {kinds['completed before']}\n"
            f"    completed after it left      {kinds['completed after']}"
            f"{spread(delays['completed after'])}\n"
            f"    died with the killed replica {kinds['died with the kill']}\n"
            f"  staying streams by client / upstream end {checked}\n"
            f"  lost      {t.lost} {t.reasons or ''}\n"
            f"  gateway peak RSS {peak_rss_mib(gateway.pid):.1f} MiB "
            f"(sampled max {max(rss_samples or [0.0]):.1f} MiB)\n"
            f"  upstream connections opened {opened}",
            flush=True,
        )
        return 0 if t.lost == 0 else 1
    finally:
        for proc in procs:
            h.stop(proc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=2000, help="concurrent clients")
    p.add_argument("--duration", type=float, default=12.0, help="seconds of load")
    p.add_argument("--leave", type=float, default=0.1, help="fraction of streams dropped")
    p.add_argument("--kill-at", type=float, default=3.0)
    p.add_argument("--restart-at", type=float, default=5.0)
    p.add_argument("--deltas", type=int, default=64, help="content deltas per answer")
    p.add_argument("--delay-ms", type=float, default=50.0, help="replica delay between chunks")
    p.add_argument("--gateway-cpus", default="0")
    p.add_argument("--load-cpus", default="1")
    args = p.parse_args(argv)
    if not (1 <= args.streams <= 5000 and 0 < args.duration <= 60 and 0 <= args.leave < 1):
        p.error("bounds: 1 <= streams <= 5000, 0 < duration <= 60, 0 <= leave < 1")
    if not 0 < args.kill_at < args.restart_at < args.duration:
        p.error("need 0 < kill-at < restart-at < duration")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 65536)), hard))
    log_dir = BENCH / "results" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    return uvloop.run(run(args, log_dir))


if __name__ == "__main__":
    raise SystemExit(main())
