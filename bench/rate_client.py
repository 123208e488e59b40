"""Open-loop, fixed-rate HTTP load for the CPU-per-request row of bench/run.py.

wrk (without the wrk2 patch) cannot hold a fixed rate, so this small asyncio
client sends POSTs on a fixed schedule (``--rate`` per second for
``--duration`` seconds, at most ``--max-inflight`` at once; late sends are
counted as ``dropped``). It prints ``START`` just before the first timed
request and ``END`` after the last answer, so the caller can read the target's
CPU time exactly around the load, then one JSON line with the counts.
Usage: python bench/rate_client.py --port P --path /v1/... --body JSON --rate R
"""

import argparse
import asyncio
import json
import sys
import time

import uvloop
from aiohttp import ClientSession, ClientTimeout, TCPConnector


async def run(args: argparse.Namespace) -> dict[str, float]:
    url = f"http://127.0.0.1:{args.port}{args.path}"
    body = args.body.encode()
    headers = {"Content-Type": "application/json"}
    stats = {"ok": 0, "failed": 0, "dropped": 0, "events": 0}
    inflight: set[asyncio.Task[None]] = set()
    latencies: list[float] = []

    async def one(session: ClientSession, timed: bool = True) -> None:
        t0 = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                data = await resp.read()
                ok = resp.status == 200
        except Exception:  # noqa: BLE001 - any failure is just a failed request here
            ok, data = False, b""
        if not timed:
            return
        if ok:
            stats["ok"] += 1
            stats["events"] += sum(1 for b in data.split(b"\n\n") if b"data:" in b)
            latencies.append(time.perf_counter() - t0)
        else:
            stats["failed"] += 1

    connector = TCPConnector(limit=args.max_inflight)
    async with ClientSession(connector=connector, timeout=ClientTimeout(total=30)) as session:
        await asyncio.gather(*(one(session, timed=False) for _ in range(8)))  # warm up
        total = int(args.rate * args.duration)
        print("START", flush=True)
        t0 = time.perf_counter()
        for i in range(total):
            delay = t0 + i / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(inflight) >= args.max_inflight:
                stats["dropped"] += 1
                continue
            task = asyncio.create_task(one(session))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        if inflight:
            await asyncio.wait(inflight, timeout=60)
        elapsed = time.perf_counter() - t0
        print("END", flush=True)
    latencies.sort()
    p50 = latencies[len(latencies) // 2] if latencies else float("nan")
    return {**stats, "elapsed_s": elapsed, "sent": total, "p50_ms": p50 * 1000}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--body", required=True)
    p.add_argument("--rate", type=float, default=500.0, help="requests per second")
    p.add_argument("--duration", type=float, default=5.0, help="seconds (bounded: <= 120)")
    p.add_argument("--max-inflight", type=int, default=256)
    args = p.parse_args()
    if not 0 < args.duration <= 120 or not 0 < args.rate <= 20000:
        p.error("need 0 < duration <= 120 and 0 < rate <= 20000")
    result = uvloop.run(run(args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
