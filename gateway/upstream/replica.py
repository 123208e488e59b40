"""One upstream server of a deployment: where chat requests go, with which headers
and timeouts, how loaded it is and whether it is healthy.

Built on the lean HTTP/1.1 client (``pool``, ``connection``); every transport failure is an
``errors.Upstream*`` by the time it leaves here, so the endpoints only ever see
the gateway's own error tree. ``replicas.ReplicaSet`` balances over several.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson

from gateway.config import Deployment
from gateway.errors import GatewayError, UpstreamBadResponse, upstream_error_from_body
from gateway.limits import PROBE_TIMEOUT, UPSTREAM_MAX_ERROR_BODY
from gateway.upstream.policy import ReplicaHealth, replica_seed
from gateway.upstream.pool import Pool
from gateway.upstream.response import UpstreamResponse
from gateway.upstream.timers import NO_DEADLINE


class Replica:
    """One upstream server: its pool, its load (``in_flight``: requests sent and not
    yet released) and its health (``healthy``: a plain attribute, cheap to read)."""

    __slots__ = (
        "base",
        "pool",
        "chat_head",
        "models_head",
        "health_head",
        "in_flight",
        "weight",
        "seed",
        "health",
        "healthy",
    )

    def __init__(
        self, dep: Deployment, key: str | None, url: str | None = None, weight: float = 1.0
    ) -> None:
        self.base = (url or dep.urls[0]).rstrip("/")
        self.pool = Pool(
            self.base,
            connect_timeout=dep.connect_timeout,
            read_timeout=dep.read_timeout,
            headers_timeout=dep.headers_timeout,
            chunk_timeout=dep.chunk_timeout,
            max_answer=dep.max_answer_bytes,
        )
        auth = {"Authorization": f"Bearer {key}"} if key else {}
        self.chat_head = self.pool.head(
            "POST", "/chat/completions", {"Content-Type": "application/json", **auth}
        )
        self.models_head = self.pool.head("GET", "/models", auth)
        self.health_head = self.pool.head("GET", "/health", auth, root=True)
        self.in_flight = 0
        self.weight = weight
        self.seed = replica_seed(self.base)
        self.health = ReplicaHealth(dep.eject_after, dep.probe_interval)
        self.healthy = True  # (the balancer reads it per request: a plain attribute)

    def succeeded(self) -> bool:
        """An answer or a probe's 2xx; True when it brings the replica back."""
        back = self.health.success()
        self.healthy = self.health.healthy
        return back

    def failed(self, now: float, weight: float = 1.0, may_eject: bool = True) -> bool:
        """A failure of ``weight`` against it (``policy.failure_weight``); True when it
        ejects the replica (never while ``may_eject`` is False)."""
        out = self.health.failure(now, weight, may_eject)
        self.healthy = self.health.healthy
        return out

    async def chat(
        self,
        body: bytes,
        request_id: str | None = None,
        deadline: float = NO_DEADLINE,
        done: Callable[[], object] | None = None,
    ) -> UpstreamResponse:
        """POST a chat request; the answer once its status is 2xx.

        ``request_id`` (printable ASCII: the endpoints checked it) goes as X-Request-Id.
        A 4xx/5xx answer is read and raised as the matching error, before
        anything goes to the client. The caller must ``release()`` the result;
        ``done`` is called at that release (the caller's accounting of the load).
        """
        head = self.chat_head
        if request_id is not None:
            head += b"X-Request-Id: %s\r\n" % request_id.encode("ascii")
        resp = await self.pool.request(head, body, deadline)
        status = resp.status
        if status >= 400:
            retry_after = resp.retry_after
            try:
                err_body = await resp.read(UPSTREAM_MAX_ERROR_BODY)
            except UpstreamBadResponse as exc:
                too_long = UpstreamBadResponse(
                    f"The upstream answered HTTP {status} with an error body over the "
                    f"gateway's limit of {UPSTREAM_MAX_ERROR_BODY} bytes."
                )
                too_long.answered = True  # (alive: it answered)
                raise too_long from exc
            finally:
                resp.release()  # (resets resp for its next use)
            raise upstream_error_from_body(status, err_body, retry_after)
        resp.done = done
        resp.replica = self.base
        return resp

    async def models(self) -> list[str]:
        """The model ids the upstream serves (``GET {base}/models``)."""
        body = await self._get(self.models_head, NO_DEADLINE)
        try:
            doc = orjson.loads(body)
            return [m["id"] for m in doc["data"] if isinstance(m["id"], str)]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise UpstreamBadResponse("The upstream's model list is not valid.") from exc

    async def probe(self) -> bool:
        """Whether the server answers: ``GET /health`` (vLLM, SGLang, llama.cpp), else
        (404 or 405) ``GET {base}/models``; at most ``limits.PROBE_TIMEOUT`` s each."""
        loop = asyncio.get_running_loop()
        try:
            resp = await self.pool.request(self.health_head, b"", loop.time() + PROBE_TIMEOUT)
            status = resp.status
            try:
                await resp.read()
            finally:
                resp.release()
            if status in (404, 405):
                await self._get(self.models_head, loop.time() + PROBE_TIMEOUT)
                return True
        except GatewayError:
            return False
        return status < 300

    async def _get(self, head: bytes, deadline: float) -> bytes:
        resp = await self.pool.request(head, b"", deadline)
        status = resp.status
        try:
            body = await resp.read()
        finally:
            resp.release()
        if status >= 400:
            raise upstream_error_from_body(status, body)
        return body

    def close(self) -> None:
        self.pool.close()
