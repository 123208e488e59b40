"""Baseline for the load bench: the least an aiohttp pass-through proxy can do.

aiohttp low-level server + one ClientSession, no translation: forwards
POST /v1/chat/completions (a stream is relayed chunk by chunk as it arrives)
and GET /v1/models. ``--workers N`` forks N processes sharing the port
(SO_REUSEPORT). Usage: python bench/proxy_baseline.py --port P --upstream URL
"""

import argparse
import asyncio
import os
import signal

import uvloop
from aiohttp import ClientSession, TCPConnector, web

NOT_FOUND = (
    b'{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}'
)


async def serve(host: str, port: int, upstream: str) -> None:
    session = ClientSession(connector=TCPConnector(limit=0), auto_decompress=False)

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/v1/models" and request.method == "GET":
            async with session.get(upstream + "/models") as up:
                body = await up.read()
                return web.Response(body=body, status=up.status, content_type="application/json")
        if request.path != "/v1/chat/completions" or request.method != "POST":
            return web.Response(body=NOT_FOUND, status=404, content_type="application/json")
        body = await request.read()
        headers = {"Content-Type": "application/json"}
        async with session.post(upstream + "/chat/completions", data=body, headers=headers) as up:
            ctype = up.headers.get("Content-Type", "application/json")
            if not ctype.startswith("text/event-stream"):
                return web.Response(
                    body=await up.read(), status=up.status, headers={"Content-Type": ctype}
                )
            resp = web.StreamResponse(status=up.status, headers={"Content-Type": ctype})
            try:
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
            except ConnectionError:
                pass  # the client went away
            return resp

    runner = web.ServerRunner(web.Server(handler, access_log=None), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=True, backlog=4096).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    await session.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--upstream", default="http://127.0.0.1:8000/v1")
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    for _ in range(args.workers - 1):
        if os.fork() == 0:
            break
    uvloop.run(serve(args.host, args.port, args.upstream.rstrip("/")))


if __name__ == "__main__":
    main()
