"""Closed-loop load over the Responses WebSocket and, for comparison, over SSE: the
client of the ``websocket`` row of bench/run.py.

Each of ``--lanes`` lanes holds one connection and sends one request at a time:

* ``ws``: a socket; ``response.create`` with ``--body`` until ``--duration`` is up
  (permessage-deflate offered, as Codex does, unless ``--no-deflate``).
* ``sse``: a keep-alive HTTP connection; the same body POSTed with ``stream: true``.
* ``ws-turns``: a socket; the whole ``--body`` (a conversation) once, then ``--turns``
  continuations, each with ``previous_response_id`` and only a new user message.
* ``http-turns``: the same conversation POSTed whole once, then ``--turns`` times the
  whole of it so far (what each answer added, and the new user message), as a client
  without the WebSocket must; ``ws-whole``: the same whole sends on a socket (what the
  continuation saves, the transport aside).

The first request of each lane is sent before ``START`` (a warm-up; in the turn modes,
the conversation's first send); ``END`` follows the last answer, then one JSON line:
responses, events, failed. The caller reads the gateway's CPU between the two lines.
Usage: python bench/ws_client.py --port P --mode ws|sse|ws-turns|ws-whole|http-turns --body JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import uvloop
from aiohttp import ClientSession, ClientTimeout, TCPConnector
from websockets.asyncio.client import ClientConnection, connect

TERMINAL = ("response.completed", "response.incomplete", "response.failed", "error")
NEXT = {"type": "message", "role": "user", "content": "go on"}


class Lane:
    """One connection's requests and what came back."""

    def __init__(self, args: argparse.Namespace, body: dict[str, Any]) -> None:
        self.args = args
        self.body = body
        self.responses = self.events = self.failed = 0
        self.history: list[Any] = list(body.get("input") or [])
        self.last = ""

    def count(self, events: list[dict[str, Any]]) -> None:
        self.events += len(events)
        final = events[-1] if events else {}
        if final.get("type") == "response.completed":
            self.responses += 1
            self.last = final["response"]["id"]
            self.history += final["response"]["output"]
        else:
            self.failed += 1

    async def ws(self, socket: ClientConnection, doc: dict[str, Any]) -> None:
        await socket.send(json.dumps({"type": "response.create", **doc}))
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] not in TERMINAL:
            events.append(json.loads(await socket.recv()))
        self.count(events)

    async def sse(self, session: ClientSession, url: str, doc: dict[str, Any]) -> None:
        async with session.post(url, json={**doc, "stream": True}) as resp:
            raw = await resp.read()
        events = [
            json.loads(line[6:])
            for line in raw.decode().split("\n")
            if line.startswith("data: ") and line != "data: [DONE]"
        ]
        self.count(events)


async def lane(args: argparse.Namespace, lane: Lane, started: asyncio.Event, ready: Any) -> None:
    base = f"127.0.0.1:{args.port}/v1/responses"
    mode = args.mode
    if mode.startswith("ws"):
        compression = None if args.no_deflate else "deflate"
        async with connect(f"ws://{base}", max_size=None, compression=compression) as socket:
            await lane.ws(socket, lane.body)
            ready()
            await started.wait()
            if mode == "ws":
                while time.monotonic() < args.until:
                    await lane.ws(socket, lane.body)
                return
            for _ in range(args.turns):
                if mode == "ws-turns":
                    doc = {**lane.body, "input": [NEXT], "previous_response_id": lane.last}
                else:
                    lane.history.append(NEXT)
                    doc = {**lane.body, "input": lane.history}
                await lane.ws(socket, doc)
        return
    timeout = ClientTimeout(total=60)
    async with ClientSession(connector=TCPConnector(limit=1), timeout=timeout) as session:
        url = f"http://{base}"
        await lane.sse(session, url, lane.body)
        ready()
        await started.wait()
        if mode == "sse":
            while time.monotonic() < args.until:
                await lane.sse(session, url, lane.body)
            return
        for _ in range(args.turns):
            lane.history.append(NEXT)
            await lane.sse(session, url, {**lane.body, "input": lane.history})


async def run(args: argparse.Namespace) -> dict[str, int]:
    body = json.loads(args.body)
    body.pop("stream", None)
    lanes = [Lane(args, body) for _ in range(args.lanes)]
    started = asyncio.Event()
    waiting = [len(lanes)]
    all_ready = asyncio.Event()

    def ready() -> None:
        waiting[0] -= 1
        if not waiting[0]:
            all_ready.set()

    tasks = [asyncio.ensure_future(lane(args, one, started, ready)) for one in lanes]
    await all_ready.wait()
    for one in lanes:  # (the warm-up is not counted)
        one.responses = one.events = one.failed = 0
    print("START", flush=True)
    args.until = time.monotonic() + args.duration
    started.set()
    await asyncio.gather(*tasks)
    print("END", flush=True)
    return {
        "responses": sum(one.responses for one in lanes),
        "events": sum(one.events for one in lanes),
        "failed": sum(one.failed for one in lanes),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument(
        "--mode", choices=("ws", "sse", "ws-turns", "ws-whole", "http-turns"), required=True
    )
    p.add_argument("--body", required=True, help="the create body (JSON)")
    p.add_argument("--lanes", type=int, default=4)
    p.add_argument("--duration", type=float, default=3.0, help="seconds (ws, sse)")
    p.add_argument("--turns", type=int, default=20, help="continuations per lane (the turn modes)")
    p.add_argument("--no-deflate", action="store_true", help="offer no permessage-deflate")
    args = p.parse_args()
    out = uvloop.run(run(args))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
