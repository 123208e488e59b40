"""One upstream server of a deployment: where chat requests go, with which headers
and timeouts.

Built on the lean HTTP/1.1 client in ``client``; every transport failure is an
``errors.Upstream*`` by the time it leaves here, so the endpoints only ever see
the gateway's own error tree.
"""

from __future__ import annotations

import orjson

from gateway.config import Deployment
from gateway.errors import UpstreamBadResponse, upstream_error_from_body
from gateway.upstream.client import Pool, UpstreamConnection

__all__ = ["Replica", "UpstreamConnection"]


class Replica:
    __slots__ = ("base", "pool", "chat_head", "models_head")

    def __init__(self, dep: Deployment, key: str | None) -> None:
        self.base = dep.upstream.rstrip("/")
        # read_timeout bounds both the wait for the response headers and each gap
        # between two body chunks; a long generation as a whole is fine.
        self.pool = Pool(
            self.base, connect_timeout=dep.connect_timeout, read_timeout=dep.read_timeout
        )
        auth = {"Authorization": f"Bearer {key}"} if key else {}
        self.chat_head = self.pool.head(
            "POST", "/chat/completions", {"Content-Type": "application/json", **auth}
        )
        self.models_head = self.pool.head("GET", "/models", auth)

    async def chat(self, body: bytes, request_id: str | None = None) -> UpstreamConnection:
        """POST a chat request; the connection once the answer's status is 2xx.

        ``request_id`` (printable ASCII: the endpoints checked it) goes as X-Request-Id.
        A 4xx/5xx answer is read and raised as the matching error, before
        anything goes to the client. The caller must ``release()`` the result.
        """
        head = self.chat_head
        if request_id is not None:
            head += b"X-Request-Id: %s\r\n" % request_id.encode("ascii")
        resp = await self.pool.request(head, body)
        status = resp.status
        if status >= 400:
            try:
                err_body = await resp.read()
            finally:
                resp.release()  # (resets resp for its next use)
            raise upstream_error_from_body(status, err_body)
        return resp

    async def models(self) -> list[str]:
        """The model ids the upstream serves (``GET {base}/models``)."""
        resp = await self.pool.request(self.models_head, b"")
        status = resp.status
        try:
            body = await resp.read()
        finally:
            resp.release()
        if status >= 400:
            raise upstream_error_from_body(status, body)
        try:
            doc = orjson.loads(body)
            return [m["id"] for m in doc["data"] if isinstance(m["id"], str)]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise UpstreamBadResponse("The upstream's model list is not valid.") from exc

    def close(self) -> None:
        self.pool.close()
