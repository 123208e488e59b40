"""The lean upstream client against raw sockets: reuse, stale connections, framing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.errors import UpstreamBadResponse, UpstreamTimeout, UpstreamUnavailable
from gateway.upstream.client import Pool

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Serve], object]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Serve) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    yield start  # type: ignore[misc]
    for s in servers:
        s.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def pool(url: str, read_timeout: float = 5.0) -> Pool:
    return Pool(url, connect_timeout=2.0, read_timeout=read_timeout)


async def test_keep_alive_reuse_and_stale_retry(raw_server: Callable) -> None:
    connections = 0
    requests: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            for _ in range(2):  # serve two requests, then close the idle connection
                requests.append(await read_request(reader))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    p = pool(await raw_server(handler))
    head = p.head("POST", "/chat/completions", {"Content-Type": "application/json"})
    for _ in range(5):
        resp = await p.request(head, b"{}")
        assert resp.status == 200 and await resp.read() == b"ok"
        resp.release()
        await asyncio.sleep(0.01)
    assert len(requests) == 5
    assert connections == 3
    assert requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
    assert requests[0].endswith(b"Content-Length: 2\r\n\r\n{}")
    p.close()


async def test_body_until_eof_and_chunked(raw_server: Callable) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = await read_request(reader)
        if b"/eof" in req:
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"3\r\nabc\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"2\r\nde\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()

    p = pool(await raw_server(handler))
    resp = await p.request(p.head("GET", "/eof", {}), b"")
    assert await resp.read() == b"until the end"
    resp.release()
    resp = await p.request(p.head("GET", "/chunked", {}), b"")
    assert await resp.read_some() == b"abc"
    assert await resp.read_some() == b"de"
    assert await resp.read_some() == b""
    resp.release()
    p.close()


async def test_errors(raw_server: Callable) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = await read_request(reader)
        if b"/garbage" in req:
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        elif b"/cut" in req:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        elif b"/slow" in req:
            await reader.read()  # answers nothing until the client gives up
        await writer.drain()
        writer.close()

    p = pool(await raw_server(handler), read_timeout=0.2)
    with pytest.raises(UpstreamBadResponse):
        await p.request(p.head("GET", "/garbage", {}), b"")
    resp = await p.request(p.head("GET", "/cut", {}), b"")
    with pytest.raises(UpstreamUnavailable):
        await resp.read()
    resp.release()
    with pytest.raises(UpstreamTimeout):
        await p.request(p.head("GET", "/slow", {}), b"")
    closed = pool("http://127.0.0.1:9/v1")
    with pytest.raises(UpstreamUnavailable):
        await closed.request(closed.head("GET", "/x", {}), b"")
    p.close()


BIG = bytes(range(256)) * (8 * 1024)  # 2 MiB


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize("how", ["read", "read_some"])
async def test_two_mib_answer_arrives_intact(raw_server: Callable, framing: str, how: str) -> None:
    """Far above the high-water mark: reading pauses and resumes, and never stalls."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if framing == "length":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG) + BIG)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(BIG), 5000):
                piece = BIG[i : i + 5000]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.read(), 5)  # until the client closes
        writer.close()

    p = pool(await raw_server(handler), read_timeout=2.0)
    resp = await p.request(p.head("POST", "/chat/completions", {}), b"{}")
    try:
        if how == "read":
            got = await resp.read()
        else:
            parts = []
            while data := await resp.read_some():
                parts.append(data)
            got = b"".join(parts)
    finally:
        resp.release()
        p.close()
    assert len(got) == len(BIG) and got == BIG
