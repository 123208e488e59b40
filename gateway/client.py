"""The client side of the gateway's replay promise, on the official ``openai`` package
(``pip install gateway[client]``)::

    from gateway.client import Client
    client = Client(base_url="http://127.0.0.1:8080/v1", api_key="sk-...")
    resp = client.responses.create(model="default", input="Say hello")
    print(resp.output_text, resp._request_id)

``Client`` / ``AsyncClient`` are ``openai.OpenAI`` / ``openai.AsyncOpenAI`` whose
non-streaming ``responses.create`` and ``chat.completions.create`` send an
``Idempotency-Key``: one per logical call, the same on each of the SDK's retries, so
that a retry after a timeout replays the answer instead of generating again. Pass
your own as ``idempotency_key=`` (or in ``extra_headers``) to make a call safe
across restarts of your app. Streaming calls are sent once, never retried: part of
a stream may already have reached the app. Every call also sends an
``X-Request-Id`` (unless you set one), which the gateway keeps: it is on every
result (``_request_id``) and on every exception (``request_id``), even when no
answer came back (a timeout, a refused connection).

This module imports nothing of the gateway; only ``openai``.
"""

from __future__ import annotations

import uuid
from typing import Any

import openai
from openai.resources.chat import AsyncChat, Chat
from openai.resources.responses import AsyncResponses, Responses

__all__ = ["AsyncClient", "Client"]

IDEMPOTENCY = "Idempotency-Key"
REQUEST_ID = "X-Request-Id"


def _prepare(kwargs: dict[str, Any]) -> tuple[dict[str, Any], str, bool]:
    """The call's arguments with its headers added; its request id; whether it streams."""
    key = kwargs.pop("idempotency_key", None)
    headers = dict(kwargs.get("extra_headers") or {})
    names = {k.lower(): k for k in headers}
    stream = kwargs.get("stream") is True
    if not stream and "idempotency-key" not in names:
        headers[IDEMPOTENCY] = key or f"gw-{uuid.uuid4()}"
    rid = headers.get(names.get("x-request-id", REQUEST_ID))
    if not rid:
        rid = headers[REQUEST_ID] = f"req_{uuid.uuid4().hex}"
    kwargs["extra_headers"] = headers
    return kwargs, str(rid), stream


def _label(exc: BaseException, rid: str) -> None:
    """Put the request id on an exception that came without one."""
    if isinstance(exc, openai.APIError) and not getattr(exc, "request_id", None):
        exc.request_id = rid  # type: ignore[attr-defined]


class _Creates:
    """A resource whose ``create`` gets the headers; everything else is the SDK's."""

    def __init__(self, client: Any, resource: Any, build: Any) -> None:
        self._client = client
        self._resource = resource
        self._build = build  # the resource's class, for a client without retries

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resource, name)


class _SyncCreates(_Creates):
    def create(self, *args: Any, **kwargs: Any) -> Any:
        kwargs, rid, stream = _prepare(kwargs)
        resource = self._build(self._client.with_options(max_retries=0)) if stream else None
        try:
            return (resource or self._resource).create(*args, **kwargs)
        except openai.APIError as exc:
            _label(exc, rid)
            raise


class _AsyncCreates(_Creates):
    async def create(self, *args: Any, **kwargs: Any) -> Any:
        kwargs, rid, stream = _prepare(kwargs)
        resource = self._build(self._client.with_options(max_retries=0)) if stream else None
        try:
            return await (resource or self._resource).create(*args, **kwargs)
        except openai.APIError as exc:
            _label(exc, rid)
            raise


class _ChatOf:
    def __init__(self, completions: _Creates, chat: Any) -> None:
        self.completions = completions
        self._chat = chat

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chat, name)


class Client(openai.OpenAI):
    """``openai.OpenAI`` with idempotent non-streaming creates (see the module)."""

    @property
    def responses(self) -> Any:
        return _SyncCreates(self, Responses(self), Responses)

    @property
    def chat(self) -> Any:
        completions = _SyncCreates(self, Chat(self).completions, lambda c: Chat(c).completions)
        return _ChatOf(completions, Chat(self))


class AsyncClient(openai.AsyncOpenAI):
    """``openai.AsyncOpenAI`` with idempotent non-streaming creates (see the module)."""

    @property
    def responses(self) -> Any:
        return _AsyncCreates(self, AsyncResponses(self), AsyncResponses)

    @property
    def chat(self) -> Any:
        completions = _AsyncCreates(
            self, AsyncChat(self).completions, lambda c: AsyncChat(c).completions
        )
        return _ChatOf(completions, AsyncChat(self))
