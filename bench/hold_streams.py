"""Hold N streaming requests open at once, for the memory row of bench/run.py.

Opens ``--streams`` connections (``--parallel`` at a time), sends one
streaming POST on each and reads until the first SSE event has arrived, then
prints ``OPEN <n>`` (n = streams that got their first event before
``--timeout``) and keeps every connection open until a line arrives on stdin
(or ``--hold`` seconds pass). Then it closes them all and prints ``CLOSED``.
Plain asyncio streams keep the client itself small and fast.
Usage: python bench/hold_streams.py --port P --path /v1/... --body JSON
"""

import argparse
import asyncio
import contextlib
import resource
import sys

import uvloop


async def open_stream(port: int, request: bytes, timeout: float) -> asyncio.StreamWriter | None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            writer.close()
            return None
        seen = b""
        while b"data:" not in seen:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if not chunk:
                writer.close()
                return None
            seen = seen[-8:] + chunk
        return writer
    except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None


async def run(args: argparse.Namespace) -> None:
    body = args.body.encode()
    request = (
        f"POST {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    gate = asyncio.Semaphore(args.parallel)

    async def gated() -> asyncio.StreamWriter | None:
        async with gate:
            return await open_stream(args.port, request, args.timeout)

    writers = [w for w in await asyncio.gather(*(gated() for _ in range(args.streams))) if w]
    print(f"OPEN {len(writers)}", flush=True)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), args.hold)
    for w in writers:
        w.close()
    print("CLOSED", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--body", required=True)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--parallel", type=int, default=100, help="connections opening at once")
    p.add_argument("--timeout", type=float, default=20.0, help="per stream, to first event")
    p.add_argument("--hold", type=float, default=60.0, help="max seconds to keep them open")
    args = p.parse_args()
    if not 0 < args.streams <= 10000:
        p.error("--streams must be in 1..10000")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.streams + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
