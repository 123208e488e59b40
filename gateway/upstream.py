"""The upstream client: one pooled aiohttp session, phase timeouts, error mapping.

Every aiohttp/asyncio failure is turned into an ``errors.Upstream*`` here and
nowhere else (``mapped``), so handlers only ever see the gateway's own tree.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import aiohttp
import orjson

from gateway.config import Deployment
from gateway.errors import (
    GatewayError,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
    upstream_error_from_body,
)

# Connections kept per upstream host. High enough that the pool is never the
# limit at the concurrency one gateway process handles; the upstream's own
# admission control decides what runs.
POOL_PER_HOST = 1024
_JSON = "application/json"


@contextmanager
def mapped(what: str) -> Iterator[None]:
    """Translate aiohttp and timeout errors into the gateway's upstream errors."""
    try:
        yield
    except GatewayError:
        raise
    except TimeoutError as exc:  # aiohttp's timeouts subclass it
        raise UpstreamTimeout(f"The upstream server timed out while {what}.") from exc
    except aiohttp.ClientError as exc:
        detail = str(exc) or type(exc).__name__
        raise UpstreamUnavailable(f"The upstream server failed while {what}: {detail}") from exc


def open_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=0, limit_per_host=POOL_PER_HOST, keepalive_timeout=30, ttl_dns_cache=300
    )
    # No automatic decompression: we ask for identity and pass bytes through.
    return aiohttp.ClientSession(
        connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
    )


class Upstream:
    """One deployment's upstream: where chat requests go and how long to wait."""

    __slots__ = ("session", "base", "chat_url", "headers", "timeout")

    def __init__(self, dep: Deployment, session: aiohttp.ClientSession, key: str | None) -> None:
        self.session = session
        self.base = dep.upstream.rstrip("/")
        self.chat_url = self.base + "/chat/completions"
        headers = {"Content-Type": _JSON, "Accept-Encoding": "identity"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.headers = headers
        # sock_read bounds both the wait for the response headers and each gap
        # between two body chunks; total is unbounded (long generations are fine).
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=dep.connect_timeout, sock_read=dep.read_timeout
        )

    @asynccontextmanager
    async def chat(self, body: bytes) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST a chat request; yields the response once its status is 2xx.

        A 4xx/5xx answer is read and raised as the matching error before
        anything goes to the client. Leaving the block early (client gone,
        error) closes an unfinished upstream connection instead of pooling it.
        """
        with mapped("connecting"):
            resp = await self.session.post(
                self.chat_url, data=body, headers=self.headers, timeout=self.timeout
            )
        try:
            if resp.status >= 400:
                with mapped("sending its error"):
                    err_body = await resp.read()
                raise upstream_error_from_body(resp.status, err_body)
            yield resp
        finally:
            if resp.content.is_eof():
                resp.release()
            else:
                resp.close()

    async def models(self) -> list[str]:
        """The model ids the upstream serves (``GET {base}/models``)."""
        with mapped("listing models"):
            async with self.session.get(
                self.base + "/models", headers=self.headers, timeout=self.timeout
            ) as resp:
                body = await resp.read()
        if resp.status >= 400:
            raise upstream_error_from_body(resp.status, body)
        try:
            doc = orjson.loads(body)
            return [m["id"] for m in doc["data"] if isinstance(m["id"], str)]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise UpstreamBadResponse("The upstream's model list is not valid.") from exc


async def read_all(resp: aiohttp.ClientResponse) -> bytes:
    with mapped("sending its answer"):
        return await resp.read()


async def iter_chunks(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The upstream body as it arrives, one read at a time (no line splitting)."""
    stream = resp.content
    while True:
        with mapped("streaming its answer"):
            data = await stream.readany()
        if not data:
            return
        yield data
