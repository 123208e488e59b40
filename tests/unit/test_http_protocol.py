"""The lean HTTP server (``gateway.http.server``) driven as a protocol on a fake transport
(no sockets).

Requests are fed whole, one byte at a time and split at random points, with bodies from
0 bytes to several MiB, Content-Length and chunked, several pipelined in one feed or one
after the other; every way gives the same answers, parsed back from the bytes the server
wrote. The fake transport delivers nothing while it is paused, as a real one does, so a
server that never resumes reading shows as a stall. Flow control: a body over
``REQUEST_BODY_HIGH_WATER`` pauses reading while the handler does not read, and reading
resumes once it does.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import Http
from gateway.http.messages import Incoming, Reply, Response
from gateway.http.server import Server
from gateway.limits import MAX_QUEUED_REQUESTS, REQUEST_BODY_HIGH_WATER, KiB, MiB
from tests.fakes import FakeTransport

MAX_BODY = 8 * MiB


# ---- the fakes -----------------------------------------------------------------------


Handler = Callable[[Incoming], Awaitable[Reply]]


async def digest(request: Incoming) -> Reply:
    """``METHOD PATH LENGTH SHA256`` of the request and its body."""
    body = await request.content.read(MAX_BODY)
    sha = hashlib.sha256(body).hexdigest()[:16]
    text = f"{request.method} {request.path} {len(body)} {sha}".encode()
    return Response(body=text, content_type="text/plain")


# ---- requests and answers ------------------------------------------------------------


def payload(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def request(path: str, size: int | None, framing: str = "length", chunk: int = 100_000) -> bytes:
    """A request's bytes: a GET (``size`` None), or a POST with a body of ``size`` bytes."""
    if size is None:
        return b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode()
    body = payload(size)
    if framing == "length":
        return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
            path.encode(),
            size,
            body,
        )
    pieces = [body[i : i + chunk] for i in range(0, size, chunk)]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" % path.encode()
    return head + framed + b"0\r\n\r\n"


def expected(path: str, size: int | None) -> bytes:
    body = payload(size or 0)
    method = "GET" if size is None else "POST"
    return f"{method} {path} {len(body)} {hashlib.sha256(body).hexdigest()[:16]}".encode()


Answer = tuple[int, dict[str, str], bytes]


def parse_answers(data: bytes) -> list[Answer]:
    """The answers in ``data``, one after the other (Content-Length or chunked framing);
    a 100 Continue is skipped. Anything left that is not a whole answer is an error."""
    answers: list[Answer] = []
    pos = 0
    while pos < len(data):
        end = data.index(b"\r\n\r\n", pos)
        lines = data[pos:end].decode("latin-1").split("\r\n")
        pos = end + 4
        status = int(lines[0].split(" ")[1])
        if status == 100:
            continue
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"header {name} twice"
            headers[name.lower()] = value.strip()
        if "content-length" in headers:
            n = int(headers["content-length"])
            body = data[pos : pos + n]
            assert len(body) == n, "answer cut short"
            pos += n
        else:
            assert headers.get("transfer-encoding") == "chunked"
            parts = []
            while True:
                eol = data.index(b"\r\n", pos)
                n = int(data[pos:eol], 16)
                parts.append(data[eol + 2 : eol + 2 + n])
                assert data[eol + 2 + n : eol + 4 + n] == b"\r\n"
                pos = eol + 4 + n
                if n == 0:
                    break
            body = b"".join(parts)
        answers.append((status, headers, body))
    return answers


# ---- driving the protocol ------------------------------------------------------------


async def settle(until: Callable[[], bool], rounds: int = 2000) -> None:
    """Let the loop run (handler tasks, call_soon) until ``until()``, a bounded while."""
    for _ in range(rounds):
        if until():
            return
        await asyncio.sleep(0)
    for _ in range(200):  # timers (call_later): give real time, still bounded (2 s)
        if until():
            return
        await asyncio.sleep(0.01)


async def feed(
    pieces: Sequence[bytes],
    *,
    answers: int,
    handler: Handler = digest,
    limits: Http | None = None,
    settle_each: bool = False,
) -> tuple[FakeTransport, list[Answer]]:
    """Feed ``pieces`` to a fresh connection, never while it is paused (the fake socket
    holds them back), and wait for ``answers`` answers."""
    server = Server(handler, max_body=MAX_BODY, limits=limits)
    conn = server()
    transport = FakeTransport(conn)
    conn.connection_made(transport)  # type: ignore[arg-type]
    for piece in pieces:
        if transport.paused:
            await settle(lambda: not transport.paused or transport.closed)
            assert not transport.paused, "reading never resumed (a stall)"
        if transport.closed:
            break
        conn.data_received(piece)
        if settle_each:
            await asyncio.sleep(0)
    await settle(lambda: len(parse_complete(transport.data)) >= answers or transport.closed)
    got = parse_answers(transport.data)
    transport.close()
    await settle(lambda: not server.connections)
    assert not server.connections
    return transport, got


def parse_complete(data: bytes) -> list[Answer]:
    """The whole answers at the front of ``data`` (a partial last one is left out)."""
    try:
        return parse_answers(data)
    except (ValueError, AssertionError, IndexError):
        return []


def split(wire: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    return [wire[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


def run(coro: Awaitable[tuple[FakeTransport, list[Answer]]]) -> tuple[FakeTransport, list[Answer]]:
    return asyncio.run(coro)  # type: ignore[arg-type]


def check(got: list[Answer], want: list[bytes]) -> None:
    assert [status for status, _, _ in got] == [200] * len(want)
    assert [body for _, _, body in got] == want
    assert all("connection" not in headers for _, headers, _ in got)  # kept alive


# ---- every way of feeding gives the same answers -------------------------------------

SMALL = [None, 0, 1, 10, 1000]  # None: a GET without a body
BIG = [300 * KiB, 3 * MiB]


WAYS = [("whole", s) for s in SMALL + BIG] + [("bytes", s) for s in SMALL]
WAYS += [("pieces", s) for s in BIG]


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize(("way", "size"), WAYS)
def test_one_request_every_way(way: str, size: int | None, framing: str) -> None:
    wire = request("/a", size, framing, chunk=333)
    if way == "whole":
        pieces = [wire]
    elif way == "bytes":
        pieces = [wire[i : i + 1] for i in range(len(wire))]
    else:
        pieces = [wire[i : i + 65_536] for i in range(0, len(wire), 65_536)]
    _, got = run(feed(pieces, answers=1))
    check(got, [expected("/a", size)])


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_pipelined_in_one_feed(framing: str) -> None:
    sizes = [None, 0, 5, 300 * KiB, None, 1000, 3 * MiB, 7]
    wire = b"".join(request(f"/{i}", s, framing) for i, s in enumerate(sizes))
    _, got = run(feed([wire], answers=len(sizes)))
    check(got, [expected(f"/{i}", s) for i, s in enumerate(sizes)])


def test_one_after_the_other() -> None:
    """Each request fed once the one before is answered (keep-alive, not pipelined)."""

    async def scenario() -> tuple[FakeTransport, list[Answer]]:
        server = Server(digest, max_body=MAX_BODY)
        conn = server()
        transport = FakeTransport(conn)
        conn.connection_made(transport)  # type: ignore[arg-type]
        sizes = [None, 10, 300 * KiB, None, 0]
        for i, size in enumerate(sizes):
            conn.data_received(request(f"/{i}", size))
            await settle(lambda n=i + 1: len(parse_complete(transport.data)) >= n)  # type: ignore[misc]
        got = parse_answers(transport.data)
        check(got, [expected(f"/{i}", s) for i, s in enumerate(sizes)])
        transport.close()
        await settle(lambda: not server.connections)
        return transport, got

    run(scenario())


small_requests = st.lists(
    st.tuples(st.sampled_from(SMALL), st.sampled_from(["length", "chunked"])),
    min_size=1,
    max_size=4,
)


@settings(max_examples=25, deadline=None)
@given(reqs=small_requests, settle_each=st.booleans())
def test_small_requests_byte_at_a_time(
    reqs: list[tuple[int | None, str]], settle_each: bool
) -> None:
    wire = b"".join(request(f"/{i}", s, f, chunk=7) for i, (s, f) in enumerate(reqs))
    pieces = [wire[i : i + 1] for i in range(len(wire))]
    _, got = run(feed(pieces, answers=len(reqs), settle_each=settle_each))
    check(got, [expected(f"/{i}", s) for i, (s, _) in enumerate(reqs)])


any_requests = st.lists(
    st.tuples(st.sampled_from(SMALL + BIG), st.sampled_from(["length", "chunked"])),
    min_size=1,
    max_size=4,
).filter(lambda reqs: sum(s or 0 for s, _ in reqs) <= 4 * MiB)


@settings(max_examples=60, deadline=None)
@given(
    reqs=any_requests,
    cuts=st.lists(st.integers(min_value=0, max_value=8 * MiB), max_size=40),
    settle_each=st.booleans(),
)
def test_requests_split_at_random(
    reqs: list[tuple[int | None, str]], cuts: list[int], settle_each: bool
) -> None:
    wire = b"".join(request(f"/{i}", s, f, chunk=70_000) for i, (s, f) in enumerate(reqs))
    _, got = run(feed(split(wire, cuts), answers=len(reqs), settle_each=settle_each))
    check(got, [expected(f"/{i}", s) for i, (s, _) in enumerate(reqs)])


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("cut", [1, 20, 40])
def test_a_head_cut_before_a_big_body_is_not_too_large(cut: int, framing: str) -> None:
    """The bug: a head that began in one read and ended in the next, with more than
    ``max_head_bytes`` of body after it in that read, was answered 431 (the body was
    counted as head)."""
    wire = request("/a", 300 * KiB, framing)
    _, got = run(feed([wire[:cut], wire[cut:]], answers=1))
    check(got, [expected("/a", 300 * KiB)])


# ---- flow control --------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_big_body_pauses_reading_until_the_handler_reads(framing: str) -> None:
    async def scenario() -> None:
        go = asyncio.Event()

        async def late_reader(request: Incoming) -> Reply:
            await go.wait()
            return await digest(request)

        server = Server(late_reader, max_body=MAX_BODY)
        conn = server()
        transport = FakeTransport(conn)
        conn.connection_made(transport)  # type: ignore[arg-type]
        size = 2 * REQUEST_BODY_HIGH_WATER + 12_345
        wire = request("/big", size, framing, chunk=10_000)
        pieces = [wire[i : i + 16 * KiB] for i in range(0, len(wire), 16 * KiB)]
        fed = 0
        for piece in pieces:  # until the server pauses: the handler is not reading
            conn.data_received(piece)
            fed += len(piece)
            await asyncio.sleep(0)
            if transport.paused:
                break
        assert transport.paused and transport.pauses == 1
        assert REQUEST_BODY_HIGH_WATER < fed < REQUEST_BODY_HIGH_WATER + 64 * KiB
        for _ in range(20):  # it stays paused while nobody reads
            await asyncio.sleep(0)
        assert transport.paused and not transport.writes
        go.set()
        await settle(lambda: not transport.paused)
        assert transport.resumes >= 1
        rest = wire[fed:]
        for i in range(0, len(rest), 16 * KiB):
            await settle(lambda: not transport.paused)
            assert not transport.paused
            conn.data_received(rest[i : i + 16 * KiB])
        await settle(lambda: bool(parse_complete(transport.data)))
        check(parse_answers(transport.data), [expected("/big", size)])
        assert not transport.paused and not transport.closed
        transport.close()
        await settle(lambda: not server.connections)

    asyncio.run(scenario())


def test_pipelined_requests_beyond_the_queue_pause_reading() -> None:
    """With ``max_pipelined`` requests queued behind a busy one, reading pauses; it
    resumes once the queue drains, and every request is answered in order."""

    async def scenario() -> None:
        go = asyncio.Event()

        async def gated(request: Incoming) -> Reply:
            if request.path == "/0":
                await go.wait()
            return await digest(request)

        limits = Http(max_pipelined=3)
        server = Server(gated, max_body=MAX_BODY, limits=limits)
        conn = server()
        transport = FakeTransport(conn)
        conn.connection_made(transport)  # type: ignore[arg-type]
        for i in range(4):  # /0 runs, /1../3 queue: reading pauses
            conn.data_received(request(f"/{i}", None))
            await asyncio.sleep(0)
        assert transport.paused
        go.set()
        await settle(lambda: not transport.paused)
        assert not transport.paused
        conn.data_received(request("/4", None))
        await settle(lambda: len(parse_complete(transport.data)) >= 5)
        check(parse_answers(transport.data), [expected(f"/{i}", None) for i in range(5)])
        transport.close()
        await settle(lambda: not server.connections)

    asyncio.run(scenario())


def test_a_read_of_many_pipelined_requests_queues_a_bounded_number() -> None:
    """The bug: every request in a read was parsed and queued (a 256 KiB read of tiny
    GETs queued thousands of them). Past MAX_QUEUED_REQUESTS waiting, the next is
    refused (503) once those before it are answered, and the connection closes."""

    async def scenario() -> None:
        server = Server(digest, max_body=MAX_BODY)
        conn = server()
        transport = FakeTransport(conn)
        conn.connection_made(transport)  # type: ignore[arg-type]
        conn.data_received(b"".join(request(f"/{i}", None) for i in range(1000)))
        assert len(conn.queue) == MAX_QUEUED_REQUESTS  # (the first one runs)
        await settle(lambda: transport.eof or transport.closed)
        got = parse_answers(transport.data)
        n = MAX_QUEUED_REQUESTS + 1
        assert [body for _, _, body in got[:n]] == [expected(f"/{i}", None) for i in range(n)]
        assert [status for status, _, _ in got] == [200] * n + [503]
        assert got[-1][1]["connection"] == "close"
        transport.close()
        await settle(lambda: not server.connections)

    asyncio.run(scenario())


def test_pipelined_bodies_split_at_fixed_seed_random_points() -> None:
    """Three pipelined requests (chunked and sized bodies up to 3 MiB) cut at 30 points
    drawn with a fixed seed: each is answered as if it came whole (a failure reproduces
    outside hypothesis)."""
    rng = random.Random(7)
    reqs = [(3 * MiB, "chunked"), (None, "length"), (300 * KiB, "length")]
    wire = b"".join(request(f"/{i}", s, f) for i, (s, f) in enumerate(reqs))
    cuts = [rng.randrange(len(wire)) for _ in range(30)]
    _, got = run(feed(split(wire, cuts), answers=len(reqs)))
    check(got, [expected(f"/{i}", s) for i, (s, _) in enumerate(reqs)])
