"""``UpstreamConnection`` driven as a protocol on a fake transport (no sockets).

Responses are fed whole, one byte at a time and split at random points, with bodies
from 0 bytes to several MiB, chunked and with Content-Length, several in a row on one
kept-alive connection; each way gives the same result. The fake transport delivers
nothing while it is paused, as a real one does, so a reader that never resumes reading
shows as a stall. Time (the drain and idle timers) is a fake clock the test moves.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.limits import UPSTREAM_BODY_HIGH_WATER, KiB, MiB
from gateway.upstream.client import Pool, UpstreamConnection

# ---- the fakes ---------------------------------------------------------------------


class FakeTransport:
    """Records writes, pauses, resumes and the close; loses the connection as asyncio
    does (on the next loop iteration)."""

    def __init__(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        self.writes: list[bytes] = []
        self.paused = False
        self.pauses = 0
        self.resumes = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def pause_reading(self) -> None:
        assert not self.paused, "paused twice"
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        assert self.paused, "resumed while not paused"
        self.paused = False
        self.resumes += 1

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.conn.connection_lost, None)


class FakeTimer:
    def __init__(self, when: float, callback: Callable[..., object], args: tuple) -> None:
        self.when, self.callback, self.args = when, callback, args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """The pool's ``timers``: time stands still until the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback, args)
        self.timers.append(timer)
        return timer

    def pending(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled and t.when is not None]

    def advance(self, seconds: float) -> None:
        """Move time on, firing each timer that falls due, in order."""
        end = self.now + seconds
        while due := sorted(
            (t for t in self.timers if not t.cancelled and t.when <= end), key=lambda t: t.when
        ):
            timer = due[0]
            self.timers.remove(timer)
            self.now = max(self.now, timer.when)
            timer.callback(*timer.args)
        self.now = end


def make_pool(clock: FakeClock | None = None, **kw: Any) -> Pool:
    return Pool(
        "http://127.0.0.1:9/v1",
        connect_timeout=1.0,
        read_timeout=60.0,
        **kw,
    )


def connect(pool: Pool) -> tuple[UpstreamConnection, FakeTransport]:
    """A new connection in a slot of the pool, as ``Pool.request`` makes one."""
    conn = UpstreamConnection(pool)
    transport = FakeTransport(conn)
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


async def settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


# ---- responses on the wire ---------------------------------------------------------


def body_of(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def with_length(body: bytes, status: int = 200) -> bytes:
    return b"HTTP/1.1 %d OK\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)


def chunked(pieces: Iterable[bytes], *, end: bool = True) -> bytes:
    out = [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"]
    out.append(b"Transfer-Encoding: chunked\r\n\r\n")
    out += [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p]
    if end:
        out.append(b"0\r\n\r\n")
    return b"".join(out)


def cut(data: bytes, points: Iterable[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


async def deliver(transport: FakeTransport, pieces: list[bytes], let_run: list[bool]) -> None:
    """Feed ``pieces`` as a socket would: nothing while reading is paused; after a piece,
    the reader runs or not (``let_run``), so that bytes pile up unread."""
    for i, piece in enumerate(pieces):
        for _ in range(50):
            if not transport.paused:
                break
            await asyncio.sleep(0)
        else:
            raise AssertionError("reading stalled: paused, and the reader never resumed it")
        transport.conn.data_received(piece)
        if let_run[i % len(let_run)] if let_run else True:
            await asyncio.sleep(0)


async def read_whole(conn: UpstreamConnection) -> tuple[int, bytes]:
    await conn.read_headers()
    return conn.status, await conn.read()


async def read_pieces(conn: UpstreamConnection) -> tuple[int, bytes]:
    await conn.read_headers()
    parts = []
    while data := await conn.read_some():
        parts.append(data)
    return conn.status, b"".join(parts)


READERS = {"read": read_whole, "read_some": read_pieces}


async def exchange(
    pool: Pool,
    conn: UpstreamConnection,
    transport: FakeTransport,
    wire: bytes,
    how: str,
    points: Iterable[int] = (),
    let_run: list[bool] | None = None,
) -> tuple[int, bytes]:
    reader = asyncio.ensure_future(READERS[how](conn))
    await asyncio.sleep(0)
    await deliver(transport, cut(wire, points), let_run or [True])
    return await asyncio.wait_for(reader, 10)


# ---- the same result however the bytes arrive ----------------------------------------

SIZES = st.one_of(
    st.integers(0, 300),
    st.integers(0, 70 * KiB),
    st.sampled_from([UPSTREAM_BODY_HIGH_WATER - 1, UPSTREAM_BODY_HIGH_WATER + 1, 3 * MiB]),
)


# A response as drawn: (body size, None for Content-Length or the body's cut points
# into chunks), small enough to show when an example fails.
RESPONSES = st.tuples(SIZES, st.none() | st.lists(st.integers(0, 4 * MiB), max_size=20))


def response(size: int, chunks: list[int] | None) -> tuple[bytes, bytes]:
    """(the body, a response carrying it: with a length, or chunked at those points)."""
    body = body_of(size)
    if chunks is None:
        return body, with_length(body)
    return body, chunked(cut(body, chunks) if body else [])


@settings(max_examples=60, deadline=None)
@given(
    exchanges=st.lists(
        st.tuples(
            RESPONSES,
            st.sampled_from(sorted(READERS)),
            st.lists(st.integers(0, 4 * MiB), max_size=40),
            st.lists(st.booleans(), min_size=1, max_size=8),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_split_anywhere_same_result(exchanges: list) -> None:
    """Each answer of a kept-alive connection, cut at random points, some pieces fed
    before the reader runs again: the same status and body."""

    async def scenario() -> None:
        pool = make_pool()
        conn, transport = connect(pool)
        for (size, chunks), how, points, let_run in exchanges:
            body, wire = response(size, chunks)
            status, got = await exchange(pool, conn, transport, wire, how, points, let_run)
            assert (status, len(got), got == body) == (200, len(body), True)
            assert conn.complete and not conn.chunks and not transport.paused
            conn.release()
            assert list(pool.idle) == [conn] and not transport.closed
            assert pool._take_idle() is conn  # kept alive: the next answer on the same one

    run(scenario())


@pytest.mark.parametrize("how", sorted(READERS))
@pytest.mark.parametrize("size", [0, 1, 700])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_byte_by_byte(how: str, size: int, framing: str) -> None:
    body = body_of(size)
    wire = with_length(body) if framing == "length" else chunked(cut(body, [5, 100, 101]))

    async def scenario() -> tuple[int, bytes]:
        pool = make_pool()
        conn, transport = connect(pool)
        return await exchange(pool, conn, transport, wire, how, range(len(wire)))

    assert run(scenario()) == (200, body)


@pytest.mark.parametrize("how", sorted(READERS))
def test_whole_several_mib(how: str) -> None:
    body = body_of(5 * MiB)

    async def scenario() -> tuple[int, bytes]:
        pool = make_pool()
        conn, transport = connect(pool)
        return await exchange(pool, conn, transport, chunked([body]), how)

    assert run(scenario()) == (200, body)


# ---- flow control ---------------------------------------------------------------------


@pytest.mark.parametrize("how", sorted(READERS))
def test_paused_above_high_water_resumed_as_read(how: str) -> None:
    piece = 64 * KiB
    total = 4 * MiB

    async def scenario() -> None:
        pool = make_pool()
        conn, transport = connect(pool)
        reader = asyncio.ensure_future(READERS[how](conn))
        conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        await settle()
        sent = 0
        while not transport.paused:  # the reader does not run: bytes pile up
            conn.data_received(bytes(piece))
            sent += piece
        assert transport.pauses == 1 and sent > UPSTREAM_BODY_HIGH_WATER
        assert sent - piece <= UPSTREAM_BODY_HIGH_WATER  # paused at the first piece above
        await settle(1)  # the reader takes what is buffered, and reading resumes
        assert not transport.paused and transport.resumes == 1
        assert conn.buffered == 0 and not conn.chunks
        while sent < total:
            conn.data_received(bytes(piece))
            sent += piece
            if transport.paused:
                await settle(1)
                assert not transport.paused
        status, got = await asyncio.wait_for(reader, 5)
        assert status == 200 and len(got) == total
        assert transport.pauses == transport.resumes >= 2

    run(scenario())
