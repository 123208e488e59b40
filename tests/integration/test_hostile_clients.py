"""Hostile clients against both client-facing servers, the lean one (``gateway.http.server``)
and aiohttp's (``gateway.http.aiohttp_server``), over raw sockets on loopback.

The rule: ours is never laxer. Where aiohttp refuses a vector (a 4xx, or it closes
without answering), the lean server refuses it too (any 4xx, or a close); where the
lean server is stricter, that is fine. Each vector also pins the lean server's exact
answer. After an answer that keeps the connection open a sentinel request goes out, so
an answer too many (a request smuggled in a body) shows before the sentinel's own.

The vectors, as a run answered them (``python -m tests.integration.test_hostile_clients``
prints this table again). ``kept alive``: the sentinel after the answer was answered too;
``*``: the lean server answered 200 before this suite's fixes; ``+``: so did aiohttp's
(``gateway.http.aiohttp_server`` adds that check to aiohttp).

vector                                         lean                         aiohttp
--------------------------------------------------------------------------------------------------------
Content-Length with Transfer-Encoding          400, closed                  400, closed
Transfer-Encoding with Content-Length          400, closed                  400, closed
two Content-Lengths, same value                400, closed                  400, closed
two Content-Lengths, different values          400, closed                  400, closed
Content-Length: 3, 3                           400, closed                  400, closed
Content-Length: +3                             400, closed                  400, closed
Content-Length: -1                             400, closed                  400, closed
Content-Length: 0x3                            400, closed                  400, closed
Content-Length over 2^64                       400, closed                  400, closed
Content-Length empty                           400, closed                  400, closed
Transfer-Encoding: gzip                        400, closed                  400, closed
Transfer-Encoding: xchunked                    400, closed                  400, closed
Transfer-Encoding: chunked, chunked            400, closed                  400, closed
Transfer-Encoding: identity, then chunked *    400, closed                  400, closed
Transfer-Encoding: gzip, then chunked *        400, closed                  400, closed
Transfer-Encoding: gzip, chunked *+            400, closed                  400, closed
Transfer-Encoding: , chunked *+                400, closed                  400, closed
Transfer-Encoding empty +                      400, closed                  400, closed
Transfer-Encoding: CHUNKED                     200 `POST /p 3`, kept alive  200 `POST /p 3`, kept alive
Transfer-Encoding : chunked                    400, closed                  400, closed
chunked on HTTP/1.0                            200 `POST /p 3`, closed      200 `POST /p 3`, closed
chunked on HTTP/1.0 keep-alive *+               200 `POST /p 3`, closed      200 `POST /p 3`, closed
chunk size zz                                  400, closed                  400, closed
chunk size -1                                  400, closed                  400, closed
chunk size 3 + space                           400, closed                  400, closed
chunk size over 2^64                           400, closed                  400, closed
chunk size 2^64 + 3 (wraps to 3)               400, closed                  400, closed
chunk longer than its size                     400, closed                  400, closed
chunk lines end in bare LF                     400, closed                  400, closed
chunk extension                                200 `POST /p 3`, kept alive  200 `POST /p 3`, kept alive
Content-Length in the trailer                  400, closed                  400, closed
obs-fold                                       400, closed                  400, closed
folded first header                            400, closed                  400, closed
NUL in a name                                  400, closed                  400, closed
NUL in a value                                 400, closed                  400, closed
CR in a name                                   400, closed                  400, closed
CR in a value                                  400, closed                  400, closed
LF in a name                                   400, closed                  400, closed
LF in a value (bare LF)                        400, closed                  400, closed
bare LF line ends                              400, closed                  400, closed
control character in a value                   400, closed                  400, closed
DEL in a value                                 400, closed                  400, closed
space before colon                             400, closed                  400, closed
tab before colon                               400, closed                  400, closed
( in a name                                    400, closed                  400, closed
empty name                                     400, closed                  400, closed
line without a colon                           400, closed                  400, closed
request line of 8,200 bytes                    431, closed                  400, closed
header line of 8,193 bytes                     431, closed                  200 `GET /p 0`, kept alive
header name of 8,200 bytes                     431, closed                  400, closed
header name of 8,187 bytes after Host *        431, closed                  400, closed
header name of 1,025 bytes *                   431, closed                  200 `GET /p 0`, kept alive
129 headers                                    431, closed                  400, closed
head of 72 KB, each line fits                  431, closed                  200 `GET /p 0`, kept alive
HTTP/1.0                                       200 `GET /p 0`, closed       200 `GET /p 0`, closed
HTTP/1.0 keep-alive                            200 `GET /p 0`, kept alive   200 `GET /p 0`, kept alive
request line without a version *               400, closed                  200 `GET /p 0`, closed
request line without a version, no Host        400, closed                  200 `GET /p 0`, closed
request line without a version, with a body *  400, closed                  200 `POST /p 3`, closed
HTTP/0.9 *                                     400, closed                  200 `GET /p 0`, closed
HTTP/1.2                                       400, closed                  400, closed
HTTP/2.0 *                                     400, closed                  200 `GET /p 0`, closed
lower-case http/1.1                            400, closed                  400, closed
lower-case method                              400, closed                  400, closed
unknown method                                 400, closed                  400, closed
tab between method and target                  400, closed                  400, closed
space after the version                        400, closed                  400, closed
NUL in the target                              400, closed                  400, closed
target without a slash                         400, closed                  400, closed
absolute-form URL                              200 `GET /p 0`, kept alive   200 `GET /p 0`, kept alive
absolute-form URL, another host                200 `GET /p 0`, kept alive   200 `GET /p 0`, kept alive
CONNECT                                        400, closed                  200 without a length, then nothing, left open
HTTP/2 preface                                 400, closed                  400, closed
Upgrade: websocket                             200 `GET /p 0`, closed       200 `GET /p 0`, kept alive
empty line before the request                  200 `GET /p 0`, kept alive   200 `GET /p 0`, kept alive
GET with a body                                200 `GET /p 3`, kept alive   200 `GET /p 3`, kept alive
Connection: close, then a request              200 `GET /p 0`, closed       400, closed
HTTP/1.0, then bytes                           200 `GET /p 0`, closed       400, closed
Expect: 200-ok                                 417, closed                  417, closed
Expect: 100-continue                           200 `POST /p 3`, kept alive  200 `POST /p 3`, kept alive
HTTP/1.1 without Host                          400, closed                  400, closed
two Hosts                                      400, closed                  400, closed
body over the limit (by Content-Length)        413, closed                  no answer, left open

aiohttp is laxer on the rows where it answers 200: a header line is its name and value
counted apart (a value of 8,190 bytes passes), it has no bound on the whole head, no
version check (HTTP/0.9 and "2.0" are served), serves CONNECT (200, then a tunnel of
nothing) and waits for a body the lean server refuses at its Content-Length. It refuses a
valid request when junk follows it in the same read; the lean server answers it and closes.

The other vectors (each test below, both servers, both loops):

    vector                              lean                          aiohttp
    ----------------------------------------------------------------------------------------------
    200 connections trickling a head    each 408 after head_timeout   no head timeout: left open
      (a byte per 0.1 s; 20 requests    (0.8 s); others: median 0.3-  others: median 0.5 ms,
      on other connections, timed)      0.6 ms, max 18 ms (0.4 ms,    max 19 ms (0.7 ms, 6 ms
                                        6 ms without the trickle)     without)
    a body that stops (body_timeout)    408, FIN at once              408, closed after its
                                                                      lingering 2 s (was 10 s) +
    a body trickling within the gap     read to its end (no bound on  the same
                                        the whole body's time)
    connections beyond max_connections  503, closed; the cap frees    the same
                                        when one goes
    1,000 pipelined GETs in one write   33 answered in order, then    1,000 answered in order
                                        503, closed (32 parsed ahead  (its parser stops at 32
                                        at most: was all 999) *       queued)
    pipelined GETs never read (0.5 s)   32 queued, then 503 and the   reading paused at 32 queued
                                        close (was: one read's worth,
                                        8,000+, queued) *
    a client gone mid-body              handler cancelled, no log     was "Error handling request"
                                                                      and a 500 per client +
    20 malformed requests               one "refused" line            was 20 tracebacks; one
                                                                      "refused" line +
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from gateway.config import Http
from gateway.http.aiohttp_server import AiohttpServer
from gateway.http.messages import Incoming, Reply, Response
from gateway.http.server import Server

MAX_BODY = 1024 * 1024
KINDS = ("lean", "aiohttp")


async def echo(request: Incoming) -> Reply:
    """``METHOD PATH LENGTH`` of the request and its body."""
    body = await request.content.read(MAX_BODY)
    text = f"{request.method} {request.path} {len(body)}".encode()
    return Response(body=text, content_type="text/plain")


AnyServer = Server | AiohttpServer
Start = Callable[..., Awaitable[tuple[int, AnyServer]]]


@asynccontextmanager
async def servers() -> AsyncIterator[Start]:
    """``await start(kind, **limits)``: a server of that kind on 127.0.0.1, its port."""
    opened: list[tuple[asyncio.Server, AnyServer]] = []

    async def start_(kind: str, **limits: Any) -> tuple[int, AnyServer]:
        cls = Server if kind == "lean" else AiohttpServer
        server = cls(echo, max_body=MAX_BODY, limits=Http(**limits))
        listener = await asyncio.get_running_loop().create_server(server, "127.0.0.1", 0)
        opened.append((listener, server))
        return listener.sockets[0].getsockname()[1], server

    try:
        yield start_
    finally:
        for listener, server in opened:
            listener.close()
            await server.shutdown(0.5)


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    async with servers() as start_:
        yield start_


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


# ---- reading answers -----------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    unframed: bool = False  # no length, no chunks, and no close within the wait


async def next_answer(reader: asyncio.StreamReader, timeout: float) -> Answer | None:
    """The next answer (a 100 Continue skipped); None if the connection ends first."""
    while True:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if status != 100:
            break
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
            parts.append((await reader.readexactly(size + 2))[:-2])
        await reader.readexactly(2)
        body = b"".join(parts)
    else:  # until the close (HTTP/1.0; aiohttp's 200 to CONNECT)
        try:
            body = await asyncio.wait_for(reader.read(), timeout)
        except TimeoutError:
            return Answer(status, headers, b"", unframed=True)
    return Answer(status, headers, body)


async def closes(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


SENTINEL = b"GET /sentinel HTTP/1.1\r\nHost: x\r\n\r\n"


@dataclass
class Seen:
    """What a server did with a vector: its answers (the sentinel's left out) and
    whether it closed the connection."""

    answers: list[Answer] = field(default_factory=list)
    closed: bool = False
    kept: bool = False  # the sentinel was answered: the connection went on

    def refused(self, requests: int = 1) -> bool:
        """A 4xx, or the close before each of the vector's ``requests`` is answered."""
        if any(a.status >= 400 for a in self.answers):
            return True
        return self.closed and len(self.answers) < requests

    def __str__(self) -> str:
        if not self.answers:
            return "closed, no answer" if self.closed else "no answer, left open"
        shown = []
        for a in self.answers:
            if a.unframed:
                shown.append(f"{a.status} without a length, then nothing")
            elif a.status < 400:
                shown.append(f"{a.status} `{a.body.decode('latin-1')}`")
            else:
                shown.append(str(a.status))
        end = "kept alive" if self.kept else "closed" if self.closed else "left open"
        return " + ".join(shown) + ", " + end


async def probe(port: int, raw: bytes, wait: float) -> Seen:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    seen = Seen()
    try:
        writer.write(raw)
        first = await next_answer(reader, wait)
        if first is None:
            seen.closed = True
            return seen
        seen.answers.append(first)
        if first.unframed:
            return seen
        if first.headers.get("connection", "").lower() != "close":
            with suppress(ConnectionError):
                writer.write(SENTINEL)
            while (a := await next_answer(reader, wait)) is not None:
                if a.body == b"GET /sentinel 0":
                    seen.kept = True
                    return seen
                seen.answers.append(a)
        seen.closed = await closes(reader)
        return seen
    except TimeoutError:
        return seen
    finally:
        writer.transport.abort()


# ---- the vectors ---------------------------------------------------------------------


def post(headers: bytes, body: bytes) -> bytes:
    return b"POST /p HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + body


def get(headers: bytes = b"Host: x\r\n", line: bytes = b"GET /p HTTP/1.1") -> bytes:
    return line + b"\r\n" + headers + b"\r\n"


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
TE = b"Transfer-Encoding: chunked\r\n"
CLOSE_THEN_MORE = "Connection: close, then a request"
HTTP10_THEN_MORE = "HTTP/1.0, then bytes"
CHUNKED_10_KEEP = "chunked on HTTP/1.0 keep-alive"
TWO = {CLOSE_THEN_MORE, HTTP10_THEN_MORE}  # two requests: the second is refused by the close

# name -> (request bytes, the lean server's status)
VECTORS: dict[str, tuple[bytes, int]] = {
    # -- request smuggling: two framings, or one read two ways
    "Content-Length with Transfer-Encoding": (
        post(b"Content-Length: 6\r\n" + TE, b"0\r\n\r\n" + SMUGGLED), 400),
    "Transfer-Encoding with Content-Length": (
        post(TE + b"Content-Length: 6\r\n", b"0\r\n\r\n" + SMUGGLED), 400),
    "two Content-Lengths, same value": (
        post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"), 400),
    "two Content-Lengths, different values": (
        post(b"Content-Length: 3\r\nContent-Length: 4\r\n", b"abcd"), 400),
    "Content-Length: 3, 3": (post(b"Content-Length: 3, 3\r\n", b"abc"), 400),
    "Content-Length: +3": (post(b"Content-Length: +3\r\n", b"abc"), 400),
    "Content-Length: -1": (post(b"Content-Length: -1\r\n", b""), 400),
    "Content-Length: 0x3": (post(b"Content-Length: 0x3\r\n", b"abc"), 400),
    "Content-Length over 2^64": (post(b"Content-Length: 99999999999999999999999\r\n", b""), 400),
    "Content-Length empty": (post(b"Content-Length:\r\n", b""), 400),
    "Transfer-Encoding: gzip": (post(b"Transfer-Encoding: gzip\r\n", b"abc"), 400),
    "Transfer-Encoding: xchunked": (post(b"Transfer-Encoding: xchunked\r\n", b"abc"), 400),
    "Transfer-Encoding: chunked, chunked": (
        post(TE + TE, b"0\r\n\r\n"), 400),
    "Transfer-Encoding: identity, then chunked": (
        post(b"Transfer-Encoding: identity\r\n" + TE, b"0\r\n\r\n" + SMUGGLED), 400),
    "Transfer-Encoding: gzip, then chunked": (
        post(b"Transfer-Encoding: gzip\r\n" + TE, b"3\r\nabc\r\n0\r\n\r\n"), 400),
    "Transfer-Encoding: gzip, chunked": (
        post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n" + SMUGGLED), 400),
    "Transfer-Encoding: , chunked": (
        post(b"Transfer-Encoding: , chunked\r\n", b"0\r\n\r\n"), 400),
    "Transfer-Encoding empty": (post(b"Transfer-Encoding:\r\n", SMUGGLED), 400),
    "Transfer-Encoding: CHUNKED": (
        post(b"Transfer-Encoding: CHUNKED\r\n", b"3\r\nabc\r\n0\r\n\r\n"), 200),
    "Transfer-Encoding : chunked": (
        post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n" + SMUGGLED), 400),
    "chunked on HTTP/1.0": (
        b"POST /p HTTP/1.0\r\n" + TE + b"\r\n3\r\nabc\r\n0\r\n\r\n", 200),
    CHUNKED_10_KEEP: (
        b"POST /p HTTP/1.0\r\nConnection: keep-alive\r\n" + TE + b"\r\n3\r\nabc\r\n0\r\n\r\n", 200),
    "chunk size zz": (post(TE, b"zz\r\nabc\r\n0\r\n\r\n"), 400),
    "chunk size -1": (post(TE, b"-1\r\nabc\r\n0\r\n\r\n"), 400),
    "chunk size 3 + space": (post(TE, b"3 \r\nabc\r\n0\r\n\r\n"), 400),
    "chunk size over 2^64": (post(TE, b"fffffffffffffffff\r\nabc\r\n0\r\n\r\n"), 400),
    "chunk size 2^64 + 3 (wraps to 3)": (post(TE, b"10000000000000003\r\nabc\r\n0\r\n\r\n"), 400),
    "chunk longer than its size": (post(TE, b"3\r\nabcX\r\n0\r\n\r\n"), 400),
    "chunk lines end in bare LF": (post(TE, b"3\nabc\n0\n\n"), 400),
    "chunk extension": (post(TE, b"3;a=b\r\nabc\r\n0\r\n\r\n"), 200),
    "Content-Length in the trailer": (post(TE, b"0\r\nContent-Length: 5\r\n\r\n"), 400),
    # -- header syntax
    "obs-fold": (get(b"Host: x\r\nX: a\r\n b\r\n"), 400),
    "folded first header": (get(b" Host: x\r\nHost: x\r\n"), 400),
    "NUL in a name": (get(b"Host: x\r\nX\x00Y: a\r\n"), 400),
    "NUL in a value": (get(b"Host: x\r\nX: a\x00b\r\n"), 400),
    "CR in a name": (get(b"Host: x\r\nX\rY: a\r\n"), 400),
    "CR in a value": (get(b"Host: x\r\nX: a\rb\r\n"), 400),
    "LF in a name": (get(b"Host: x\r\nX\nY: a\r\n"), 400),
    "LF in a value (bare LF)": (get(b"Host: x\r\nX: a\nb\r\n"), 400),
    "bare LF line ends": (b"GET /p HTTP/1.1\nHost: x\n\n", 400),
    "control character in a value": (get(b"Host: x\r\nX: a\x01b\r\n"), 400),
    "DEL in a value": (get(b"Host: x\r\nX: a\x7fb\r\n"), 400),
    "space before colon": (get(b"Host : x\r\n"), 400),
    "tab before colon": (get(b"Host\t: x\r\n"), 400),
    "( in a name": (get(b"Host: x\r\nX(y): a\r\n"), 400),
    "empty name": (get(b"Host: x\r\n: a\r\n"), 400),
    "line without a colon": (get(b"Host: x\r\nBad Header\r\n"), 400),
    # -- sizes (the defaults: aiohttp's line, field and count bounds; our whole head)
    "request line of 8,200 bytes": (get(line=b"GET /" + b"a" * 8200 + b" HTTP/1.1"), 431),
    "header line of 8,193 bytes": (get(b"Host: x\r\nX: " + b"y" * 8190 + b"\r\n"), 431),
    "header name of 8,200 bytes": (get(b"Host: x\r\n" + b"X" * 8200 + b": y\r\n"), 431),
    "header name of 8,187 bytes after Host": (get(b"Host: x\r\n" + b"X" * 8187 + b": y\r\n"), 431),
    "header name of 1,025 bytes": (get(b"Host: x\r\n" + b"X" * 1025 + b": y\r\n"), 431),
    "129 headers": (
        get(b"Host: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(128))), 431),
    "head of 72 KB, each line fits": (
        get(b"".join(b"X-%d: %s\r\n" % (i, b"v" * 8000) for i in range(9)) + b"Host: x\r\n"), 431),
    # -- versions, request lines, targets
    "HTTP/1.0": (get(b"", line=b"GET /p HTTP/1.0"), 200),
    "HTTP/1.0 keep-alive": (get(b"Connection: keep-alive\r\n", line=b"GET /p HTTP/1.0"), 200),
    "request line without a version": (get(line=b"GET /p"), 400),
    "request line without a version, no Host": (get(b"", line=b"GET /p"), 400),
    "request line without a version, with a body": (
        post(b"Content-Length: 3\r\n", b"abc").replace(b" HTTP/1.1", b""), 400),
    "HTTP/0.9": (get(line=b"GET /p HTTP/0.9"), 400),
    "HTTP/1.2": (get(line=b"GET /p HTTP/1.2"), 400),
    "HTTP/2.0": (get(line=b"GET /p HTTP/2.0"), 400),
    "lower-case http/1.1": (get(line=b"GET /p http/1.1"), 400),
    "lower-case method": (get(line=b"get /p HTTP/1.1"), 400),
    "unknown method": (get(line=b"BREW /p HTTP/1.1"), 400),
    "tab between method and target": (get(line=b"GET\t/p HTTP/1.1"), 400),
    "space after the version": (get(line=b"GET /p HTTP/1.1 "), 400),
    "NUL in the target": (get(line=b"GET /p\x00q HTTP/1.1"), 400),
    "target without a slash": (get(line=b"GET p HTTP/1.1"), 400),
    "absolute-form URL": (get(line=b"GET http://x/p?q=1 HTTP/1.1"), 200),
    "absolute-form URL, another host": (get(line=b"GET http://other/p HTTP/1.1"), 200),
    "CONNECT": (get(b"Host: x:443\r\n", line=b"CONNECT x:443 HTTP/1.1"), 400),
    "HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    "Upgrade: websocket": (get(b"Host: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"), 200),
    "empty line before the request": (b"\r\n" + get(), 200),
    "GET with a body": (get(b"Host: x\r\nContent-Length: 3\r\n") + b"abc", 200),
    CLOSE_THEN_MORE: (get(b"Host: x\r\nConnection: close\r\n") + get(), 200),
    HTTP10_THEN_MORE: (get(b"", line=b"GET /p HTTP/1.0") + b"\x00garbage\r\n\r\n", 200),
    # -- the checks the servers add
    "Expect: 200-ok": (post(b"Content-Length: 3\r\nExpect: 200-ok\r\n", b"abc"), 417),
    "Expect: 100-continue": (post(b"Content-Length: 3\r\nExpect: 100-continue\r\n", b"abc"), 200),
    "HTTP/1.1 without Host": (get(b""), 400),
    "two Hosts": (get(b"Host: a\r\nHost: b\r\n"), 400),
    "body over the limit (by Content-Length)": (post(b"Content-Length: %d\r\n" % (MAX_BODY + 1), b""), 413),
}  # fmt: skip

# The lean server's whole answer where it accepts (the rest are refusals: 4xx, closed).
ACCEPTED = {
    "Transfer-Encoding: CHUNKED": "200 `POST /p 3`, kept alive",
    "chunked on HTTP/1.0": "200 `POST /p 3`, closed",
    CHUNKED_10_KEEP: "200 `POST /p 3`, closed",
    "chunk extension": "200 `POST /p 3`, kept alive",
    "HTTP/1.0": "200 `GET /p 0`, closed",
    "HTTP/1.0 keep-alive": "200 `GET /p 0`, kept alive",
    "absolute-form URL": "200 `GET /p 0`, kept alive",
    "absolute-form URL, another host": "200 `GET /p 0`, kept alive",
    "Upgrade: websocket": "200 `GET /p 0`, closed",
    "empty line before the request": "200 `GET /p 0`, kept alive",
    "GET with a body": "200 `GET /p 3`, kept alive",
    CLOSE_THEN_MORE: "200 `GET /p 0`, closed",
    HTTP10_THEN_MORE: "200 `GET /p 0`, closed",
    "Expect: 100-continue": "200 `POST /p 3`, kept alive",
}

VECTOR_LIMITS = {"head_timeout": 1.0}  # a request that never ends (none should) is 408


async def both(start: Start, raw: bytes) -> tuple[Seen, Seen]:
    (lean, _), (aio, _) = await asyncio.gather(
        start("lean", **VECTOR_LIMITS), start("aiohttp", **VECTOR_LIMITS)
    )
    # aiohttp leaves a few vectors unanswered: its wait is short (an answer it gives late
    # reads as none, which never fails a test); the lean server answers every one at once.
    return await asyncio.gather(probe(lean, raw, 5.0), probe(aio, raw, 1.0))


@pytest.mark.parametrize("vector", list(VECTORS))
async def test_never_laxer_than_aiohttp(start: Start, vector: str) -> None:
    raw, status = VECTORS[vector]
    lean, aio = await both(start, raw)
    assert lean.answers and lean.answers[0].status == status, f"lean: {lean}"
    if status >= 400:
        answer = lean.answers[0]
        assert len(lean.answers) == 1 and lean.closed, f"lean: {lean}"
        assert answer.headers["connection"] == "close"
        error = orjson.loads(answer.body)["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
    else:
        assert str(lean) == ACCEPTED[vector]
    requests = 2 if vector in TWO else 1
    if aio.refused(requests):
        assert lean.refused(requests), f"aiohttp refuses ({aio}), lean does not ({lean})"


@pytest.mark.parametrize(
    ("codings", "body"),
    [
        (b"gzip, chunked", b"0\r\n\r\n" + SMUGGLED),
        (b"identity, chunked", b"0\r\n\r\n" + SMUGGLED),
        (b", chunked", b"0\r\n\r\n" + SMUGGLED),
        (b"", SMUGGLED),
    ],
)
async def test_transfer_encoding_other_than_chunked_is_400(
    start: Start, kind: str, codings: bytes, body: bytes
) -> None:
    """The bug (aiohttp's server): ``gzip, chunked`` was read as chunked (the gzip never
    undone) and an empty Transfer-Encoding as no body, the body's bytes as the next
    request: smuggled past a proxy that reads the header otherwise."""
    port, _ = await start(kind)
    te = b"Transfer-Encoding: %s\r\n" % codings
    seen = await probe(port, post(te, body), 5.0)
    assert [a.status for a in seen.answers] == [400] and seen.closed  # nothing smuggled


async def test_http10_with_transfer_encoding_is_closed_after_its_answer(
    start: Start, kind: str
) -> None:
    """RFC 9112 section 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
    framing; it is processed, then the connection closes, even with keep-alive asked
    for (both servers kept it open and served the sentinel behind it)."""
    port, _ = await start(kind)
    raw, _ = VECTORS[CHUNKED_10_KEEP]
    seen = await probe(port, raw, 5.0)
    assert str(seen) == "200 `POST /p 3`, closed"


# ---- slow clients --------------------------------------------------------------------


async def timed_requests(port: int, n: int) -> list[float]:
    """Seconds each of ``n`` requests took, one after the other, each on a new connection."""
    took = []
    for i in range(n):
        t0 = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post(b"Content-Length: 5\r\n", b"hello").replace(b"/p", b"/%d" % i))
        answer = await next_answer(reader, 5.0)
        took.append(time.monotonic() - t0)
        writer.close()
        assert answer is not None and answer.body == b"POST /%d 5" % i
    return took


TRICKLERS = 200


async def test_slow_heads_do_not_slow_others(start: Start, kind: str) -> None:
    """200 connections trickle a head a byte at a time; requests on other connections
    keep their latency; the lean server answers each trickler 408 once its head is
    ``head_timeout`` old (aiohttp has no head timeout: they stay open)."""
    port, _ = await start(kind, head_timeout=0.8)
    base = await timed_requests(port, 20)
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(TRICKLERS)]
    stop = asyncio.Event()

    async def trickle(writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        while not stop.is_set():
            await asyncio.sleep(0.1)
            if writer.is_closing():
                return
            writer.write(b"y")

    t0 = time.monotonic()
    tasks = [asyncio.create_task(trickle(w)) for _, w in conns]
    try:
        loaded = await timed_requests(port, 20)
        assert time.monotonic() - t0 < 0.8, "the 408s came before the measurement ended"
        assert max(loaded) < 2.0
        assert statistics.median(loaded) < 20 * statistics.median(base) + 0.05
        if kind == "lean":
            answers = await asyncio.gather(*(next_answer(r, 5.0) for r, _ in conns))
            assert [a.status if a else None for a in answers] == [408] * TRICKLERS
            assert time.monotonic() - t0 < 5.0
            assert all(await asyncio.gather(*(closes(r) for r, _ in conns)))
        else:
            await asyncio.sleep(1.0)
            assert not any(r.at_eof() for r, _ in conns)  # (table: left open)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, w in conns:
            w.transport.abort()


async def test_stalled_body_is_408(start: Start, kind: str) -> None:
    port, _ = await start(kind, body_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post(b"Content-Length: 100\r\n", b"abc"))
    answer = await next_answer(reader, 5.0)
    assert answer is not None and answer.status == 408
    assert orjson.loads(answer.body)["error"]["code"] == "request_timeout"
    assert answer.headers["connection"] == "close" and await closes(reader)
    writer.close()


async def test_trickling_body_within_the_gap_is_read(start: Start, kind: str) -> None:
    """``body_timeout`` bounds each gap, not the whole body (on both servers): a body
    that keeps coming is read to its end."""
    port, _ = await start(kind, body_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post(b"Content-Length: 4\r\n", b""))
    t0 = time.monotonic()
    for _ in range(4):
        await asyncio.sleep(0.15)
        writer.write(b"x")
    answer = await next_answer(reader, 5.0)
    assert answer is not None and answer.body == b"POST /p 4"
    assert time.monotonic() - t0 > 0.5  # longer than body_timeout in all
    writer.close()


async def test_a_client_gone_mid_body_is_no_error(
    start: Start, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The bug (aiohttp's server): every client that closed mid-body logged an
    'Error handling request' traceback and had a 500 made for it."""
    port, _ = await start(kind)
    for _ in range(2):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post(b"Content-Length: 100\r\n", b"abc"))
        await asyncio.sleep(0.05)
        writer.close()
    await asyncio.sleep(0.2)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_a_flood_of_bad_requests_is_not_a_flood_of_log_lines(
    start: Start, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The bug (aiohttp's server): every request aiohttp could not parse logged an
    'Error handling request' traceback, so 30 bytes of junk made 20 log lines. Now as
    on the lean server: one line per kind of refusal per burst."""
    port, _ = await start(kind)
    for raw in [get(b"Host: x\r\nX: a\r\n b\r\n"), b"GET /p HTTP/1.1\nHost: x\n\n"] * 10:
        seen = await probe(port, raw, 5.0)
        assert [a.status for a in seen.answers] == [400] and seen.closed
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) <= 2, [r.getMessage() for r in lines]


# ---- too many: connections, pipelined requests ---------------------------------------


async def test_connections_beyond_the_cap_get_503(start: Start, kind: str) -> None:
    port, _ = await start(kind, max_connections=3)
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    await asyncio.sleep(0.05)
    for _ in range(5):  # every one beyond the cap, not only the first
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await next_answer(reader, 5.0)
        assert answer is not None and answer.status == 503
        assert orjson.loads(answer.body)["error"]["code"] == "server_overloaded"
        assert await closes(reader)
        writer.close()
    for reader, writer in held:  # the held ones still work
        writer.write(get())
        answer = await next_answer(reader, 5.0)
        assert answer is not None and answer.body == b"GET /p 0"
    held[0][1].transport.abort()  # one goes: a new connection fits again
    await asyncio.sleep(0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get())
    answer = await next_answer(reader, 5.0)
    assert answer is not None and answer.body == b"GET /p 0"
    for _, w in [*held, (reader, writer)]:
        w.close()


def queued(server: AnyServer) -> int:
    """Requests parsed and waiting on any one connection (aiohttp: its message queue)."""
    if isinstance(server, Server):
        return max((len(c.queue) for c in server.connections), default=0)
    return max((len(c._messages) for c in server.web.connections), default=0)


QUEUE_BOUND = 100  # lean: max_pipelined (8), then 503 past MAX_PIPELINED_QUEUE; aiohttp 32


async def test_pipelining_flood(start: Start, kind: str) -> None:
    """1,000 pipelined GETs in one write: answered in order, all of them or up to a
    refusal and the close; the requests parsed ahead stay few."""
    port, server = await start(kind)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    most = 0

    async def sample() -> None:
        nonlocal most
        while True:
            most = max(most, queued(server))
            await asyncio.sleep(0)

    sampler = asyncio.create_task(sample())
    writer.write(b"".join(get(line=b"GET /%d HTTP/1.1" % i) for i in range(1000)))
    paths = []
    try:
        for _ in range(1000):
            answer = await next_answer(reader, 5.0)
            if answer is None or answer.status != 200:
                break
            paths.append(int(answer.body.split()[1][1:]))
        assert paths == list(range(len(paths)))
        if len(paths) < 1000:
            assert answer is not None and answer.status == 503
            assert await closes(reader)
    finally:
        sampler.cancel()
        writer.close()
    assert most <= QUEUE_BOUND
    assert len(paths) >= 8


async def test_pipelining_flood_without_reading(start: Start, kind: str) -> None:
    """Pipelined GETs written for half a second, never read: the server stops reading (or
    refuses and closes) instead of parsing everything that arrives."""
    port, server = await start(kind)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    burst = b"".join(get(line=b"GET /%d HTTP/1.1" % i) for i in range(10_000))
    most = 0
    deadline = time.monotonic() + 0.5
    try:
        while time.monotonic() < deadline and not writer.is_closing():
            if writer.transport.get_write_buffer_size() < 4 * len(burst):
                writer.write(burst)
            most = max(most, queued(server))
            await asyncio.sleep(0.01)
        assert most <= QUEUE_BOUND
        if writer.transport.get_write_buffer_size() == 0:  # not paused: refused and closed
            answers = (await asyncio.wait_for(reader.read(), 5)).split(b"HTTP/1.1 ")[1:]
            assert answers[-1].startswith(b"503 ") and len(answers) > 8
    finally:
        writer.transport.abort()


# ---- the table -----------------------------------------------------------------------


async def table() -> list[tuple[str, str, str]]:
    rows = []
    async with servers() as start_:
        for name, (raw, _) in VECTORS.items():
            lean, aio = await both(start_, raw)
            rows.append((name, str(lean), str(aio)))
    return rows


if __name__ == "__main__":
    logging.disable(logging.CRITICAL)
    rows = asyncio.run(table())
    print("| vector | lean | aiohttp |\n|---|---|---|")
    for name, lean, aio in rows:
        print(f"| {name} | {lean} | {aio} |")
    sys.exit(0)
