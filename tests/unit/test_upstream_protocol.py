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

from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.limits import (
    UPSTREAM_BODY_HIGH_WATER,
    UPSTREAM_DRAIN_BYTES,
    UPSTREAM_DRAIN_TIMEOUT,
    KiB,
    MiB,
)
from gateway.upstream.connection import UpstreamConnection
from gateway.upstream.pool import Pool
from tests.fakes import FakeTransport

# ---- the fakes ---------------------------------------------------------------------


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
        timers=clock or FakeClock(),
        **kw,
    )


def connect(pool: Pool) -> tuple[UpstreamConnection, FakeTransport]:
    """A new connection in a slot of the pool, as ``Pool.request`` makes one."""
    assert pool._take_slot()
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


async def first_part(conn: UpstreamConnection) -> bytes:
    await conn.read_headers()
    return await conn.read_some()


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
        assert pool.open == 1

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


# ---- drain after the end of a stream ---------------------------------------------------

DONE = b"data: [DONE]\n\n"
EVENTS = [b'data: {"n": %d}\n\n' % i for i in range(20)] + [DONE]


async def read_until_done(conn: UpstreamConnection) -> bytes:
    """What a stream's reader does: read until ``[DONE]``, then stop (and release)."""
    await conn.read_headers()
    got = b""
    while not got.endswith(DONE):
        data = await conn.read_some()
        assert data, "the body ended before [DONE]"
        got += data
    return got


async def stream_released_before_end(
    pool: Pool, conn: UpstreamConnection, transport: FakeTransport
) -> None:
    """A chunked stream whose reader stops at ``[DONE]`` and releases before ``0``."""
    reader = asyncio.ensure_future(read_until_done(conn))
    await asyncio.sleep(0)
    conn.data_received(chunked(EVENTS, end=False))
    assert await asyncio.wait_for(reader, 5) == b"".join(EVENTS)
    assert not conn.complete
    conn.release()


@pytest.mark.parametrize("split", ["whole", "bytes"])
def test_end_after_release_pools_the_connection(split: str) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        pool = make_pool(clock)
        conn, transport = connect(pool)
        for _ in range(3):  # and again on the same connection, once pooled
            await stream_released_before_end(pool, conn, transport)
            assert conn.draining and not pool.idle and not transport.closed
            drain = conn.drain_timer
            assert isinstance(drain, FakeTimer) and drain.when - clock.now == UPSTREAM_DRAIN_TIMEOUT
            end = b"0\r\n\r\n"
            for piece in [end] if split == "whole" else [end[i : i + 1] for i in range(5)]:
                assert not pool.idle
                conn.data_received(piece)
            assert list(pool.idle) == [conn] and not conn.draining
            assert drain.cancelled and conn.drain_timer is None  # gone with the drain
            assert not transport.closed
            assert pool._take_idle() is conn

    run(scenario())


def test_rest_of_a_length_body_drained() -> None:
    async def scenario() -> None:
        pool = make_pool()
        conn, transport = connect(pool)
        body = body_of(40 * KiB)
        reader = asyncio.ensure_future(first_part(conn))
        await asyncio.sleep(0)
        conn.data_received(with_length(body)[: 10 * KiB])
        assert body.startswith(await reader)
        conn.release()  # a reader that has what it needs: the rest is drained
        assert conn.draining
        rest = with_length(body)[10 * KiB :]
        for piece in cut(rest, range(0, len(rest), 7000)):
            conn.data_received(piece)
        assert list(pool.idle) == [conn] and not transport.closed
        # and the next answer on it is whole
        conn = pool._take_idle()
        assert conn is not None
        assert await exchange(pool, conn, transport, with_length(b"next"), "read") == (200, b"next")

    run(scenario())


def test_drain_byte_bound_closes() -> None:
    """An upstream still generating after the release: closed once more than
    UPSTREAM_DRAIN_BYTES arrived, so that it sees the client gone."""

    async def scenario() -> None:
        pool = make_pool()
        conn, transport = connect(pool)
        await stream_released_before_end(pool, conn, transport)
        piece = b"data: " + b"x" * 1000 + b"\n\n"
        frame = b"%x\r\n%s\r\n" % (len(piece), piece)
        sent = 0
        while sent + len(frame) <= UPSTREAM_DRAIN_BYTES:
            conn.data_received(frame)
            sent += len(frame)
            assert conn.draining and not transport.closed
            assert not conn.chunks and conn.buffered == 0  # dropped, not kept
        conn.data_received(frame)
        assert transport.closed and not conn.draining
        await settle()
        assert conn.transport is None and not pool.idle

    run(scenario())


def test_drain_time_bound_closes() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        pool = make_pool(clock)
        conn, transport = connect(pool)
        await stream_released_before_end(pool, conn, transport)
        clock.advance(UPSTREAM_DRAIN_TIMEOUT - 0.01)
        conn.data_received(b"5\r\nhello\r\n")  # a trickle does not extend the time
        assert conn.draining and not transport.closed
        clock.advance(0.02)
        assert transport.closed and not conn.draining
        await settle()
        assert not pool.idle

    run(scenario())


def test_unread_bytes_count_against_the_bound() -> None:
    async def scenario() -> None:
        pool = make_pool()
        conn, transport = connect(pool)
        conn.data_received(chunked([bytes(UPSTREAM_DRAIN_BYTES + 1)], end=False))
        conn.release()  # the reader left more than the bound unread: closed at once
        assert transport.closed and not conn.draining

    run(scenario())


def test_paused_connection_resumed_to_drain() -> None:
    async def scenario() -> None:
        pool = make_pool(drain_bytes=4 * MiB)
        conn, transport = connect(pool)
        conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (2 * MiB))
        sent = 0
        while not transport.paused:
            conn.data_received(bytes(64 * KiB))
            sent += 64 * KiB
        conn.release()
        assert conn.draining and not transport.paused and conn.buffered == 0
        while sent < 2 * MiB:
            assert not transport.paused
            conn.data_received(bytes(64 * KiB))
            sent += 64 * KiB
        assert list(pool.idle) == [conn] and not transport.closed

    run(scenario())


HEADS = {
    "connection-close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 9\r\n\r\n",
    "until-eof": b"HTTP/1.1 200 OK\r\n\r\n",
    "http/1.0": b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\n",
}


@pytest.mark.parametrize("case", [*HEADS, "cancelled", "cancelled-in-headers", "timed-out"])
def test_not_drained_closed_at_once(case: str) -> None:
    """Framing that does not allow reuse, a read cancelled mid-answer (the client
    went away: the upstream must see the close at once), a failed read."""

    async def scenario() -> None:
        clock = FakeClock()
        pool = make_pool(clock)
        conn, transport = connect(pool)
        reader = asyncio.ensure_future(first_part(conn))
        await asyncio.sleep(0)
        if case in HEADS:
            conn.data_received(HEADS[case] + b"abc")
            assert await reader == b"abc"
        elif case == "timed-out":
            pool.read_timeout = 0.01
            conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
            with pytest.raises(UpstreamTimeout):
                await reader
        else:
            length = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
            conn.data_received(length if case == "cancelled" else length[:20])
            await settle()
            reader.cancel()  # the client went away while the reader waited
            with pytest.raises(asyncio.CancelledError):
                await reader
        conn.release()
        assert transport.closed and not conn.draining and not clock.pending()

    run(scenario())


# ---- the pool: slots, waits, hand-overs, the idle timer (connections on fakes) ----------


class FakeConnector:
    """Stands in for ``loop.create_connection``: fake transports, counted."""

    def __init__(self, pool: Pool, fail: BaseException | None = None, hang: bool = False) -> None:
        self.pool, self.fail, self.hang = pool, fail, hang
        self.made: list[tuple[UpstreamConnection, FakeTransport]] = []

    async def __call__(self, protocol: Callable[[], UpstreamConnection], *a: Any, **kw: Any) -> Any:
        if self.fail is not None:
            raise self.fail
        conn = protocol()
        transport = FakeTransport(conn)
        conn.connection_made(transport)  # type: ignore[arg-type]
        self.made.append((conn, transport))
        if self.hang:
            await asyncio.sleep(60)
        return transport, conn


def fake_connects(pool: Pool, **kw: Any) -> FakeConnector:
    connector = FakeConnector(pool, **kw)
    asyncio.get_running_loop().create_connection = connector  # type: ignore[method-assign]
    return connector


OK = with_length(b"ok")


async def answered(pool: Pool, connector: FakeConnector, wire: bytes) -> Any:
    """Start a request, answer it with ``wire`` once it is written; the connection."""
    writes = sum(len(t.writes) for _, t in connector.made)
    task = asyncio.ensure_future(pool.request(b"POST /x HTTP/1.1\r\n", b"{}"))
    for _ in range(50):
        await asyncio.sleep(0)
        if sum(len(t.writes) for _, t in connector.made) > writes:
            break
    sent = [c for c, t in connector.made if c.waiter is not None]
    assert len(sent) == 1, "one request waits for its answer"
    sent[0].data_received(wire)
    return await asyncio.wait_for(task, 5)


def test_waiter_cancelled_after_the_hand_over_gives_it_back() -> None:
    async def scenario() -> None:
        pool = make_pool(max_connections=1)
        connector = fake_connects(pool)
        conn = await answered(pool, connector, OK)
        waiter = asyncio.ensure_future(pool.request(b"POST /x HTTP/1.1\r\n", b"{}"))
        await settle()
        assert len(pool.waiters) == 1 and pool.open == 1
        assert await conn.read() == b"ok"
        conn.release()  # handed to the waiter...
        assert not pool.idle and not pool.waiters
        waiter.cancel()  # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert list(pool.idle) == [conn] and pool.open == 1 and len(connector.made) == 1

    run(scenario())


def test_a_request_waits_for_a_draining_connection() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        pool = make_pool(clock)
        connector = fake_connects(pool)
        last = lambda: connector.made[-1][1]  # noqa: E731
        conn = await answered(pool, connector, chunked(EVENTS, end=False))
        assert await read_until_done(conn) == b"".join(EVENTS)
        conn.release()
        assert pool.draining == 1
        waiting = asyncio.ensure_future(pool.request(b"POST /x HTTP/1.1\r\n", b"{}"))
        await settle()
        assert len(pool.waiters) == 1 and len(connector.made) == 1  # no new connection
        conn.data_received(b"0\r\n\r\n")  # the drain ends: handed over
        await settle()
        assert len(last().writes) == 2
        conn.data_received(OK)
        assert await asyncio.wait_for(waiting, 5) is conn and len(connector.made) == 1
        await conn.read()
        # a drain that does not end in time: the waiter opens a new connection
        conn.release()
        conn2 = await answered(pool, connector, chunked(EVENTS, end=False))
        assert conn2 is conn
        await read_until_done(conn)
        conn.release()
        waiting = asyncio.ensure_future(pool.request(b"POST /x HTTP/1.1\r\n", b"{}"))
        await settle()
        assert len(pool.waiters) == 1
        clock.advance(pool.drain_wait)
        await settle()
        assert len(connector.made) == 2 and pool.open == 2 and conn.draining
        last().conn.data_received(OK)
        assert await asyncio.wait_for(waiting, 5) is connector.made[1][0]

    run(scenario())


@pytest.mark.parametrize("how", ["refused", "cancelled"])
def test_failed_connect_gives_its_slot_back(how: str) -> None:
    async def scenario() -> None:
        pool = make_pool(max_connections=1)
        if how == "refused":
            fake_connects(pool, fail=ConnectionRefusedError(111, "Connection refused"))
            for _ in range(3):
                with pytest.raises(UpstreamUnavailable, match="Connection refused"):
                    await pool.request(b"POST /x HTTP/1.1\r\n", b"{}")
                assert pool.open == 0
            return
        connector = fake_connects(pool, hang=True)
        task = asyncio.ensure_future(pool.request(b"POST /x HTTP/1.1\r\n", b"{}"))
        await settle()
        assert pool.open == 1 and connector.made
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.open == 0 and connector.made[0][1].closed
        await settle()
        assert not pool.conns

    run(scenario())


def test_idle_timer_closes_connections_in_their_time() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        pool = make_pool(clock, idle_timeout=4.0)
        conns = [connect(pool) for _ in range(3)]
        for (conn, _), at in zip(conns, [0.0, 1.0, 3.0], strict=True):
            clock.advance(at - (clock.now - 1000.0))
            conn.data_received(OK)
            conn.release()
        assert len(clock.pending()) == 1  # one timer for the pool, not one per connection
        closed = lambda: [t.closed for _, t in conns]  # noqa: E731
        clock.advance(4.0 - 3.0 - 0.01)  # t = 3.99
        assert closed() == [False, False, False]
        clock.advance(0.02)  # t = 4.01: the first is 4 s idle
        assert closed() == [True, False, False] and len(clock.pending()) == 1
        clock.advance(1.0)  # t = 5.01
        assert closed() == [True, True, False]
        clock.advance(2.0)  # t = 7.01
        assert closed() == [True, True, True]
        assert not pool.idle and pool.open == 0 and pool.sweeper is None
        assert not clock.pending()
        # close() stops the timer and closes everything
        conn, transport = connect(pool)
        conn.data_received(OK)
        conn.release()
        assert clock.pending()
        pool.close()
        assert not clock.pending() and transport.closed and pool.open == 0

    run(scenario())
