"""Every error of the spec's table surfaces as the SDK's matching exception."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from tests.conftest import FakeUpstream, make_config, sdk


async def expect(
    exc_type: type[openai.APIStatusError],
    call: Any,
    *,
    status: int,
    code: str | None = None,
    param: str | None = None,
    type_: str = "invalid_request_error",
    says: str = "",
) -> openai.APIStatusError:
    with pytest.raises(exc_type) as info:
        await call
    err = info.value
    assert err.status_code == status
    assert err.code == code
    assert err.param == param
    assert err.type == type_
    assert says.lower() in err.message.lower()
    body = err.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    return err


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"include": ["file_search_call.results"]}, "include"),
        (
            {"include": ["reasoning.encrypted_content", "message.output_text.logprobs"]},
            "include[1]",
        ),
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        (
            {"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "file_search"}},
            "tool_choice",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
        ),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}
                ]
            },
            "input[0].content[0].file_id",
        ),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"input": [{"type": "computer_call_output", "call_id": "c"}]}, "input[0].type"),
    ],
)
async def test_not_offered(
    client: openai.AsyncOpenAI, upstream: FakeUpstream, extra: dict, param: str
) -> None:
    body = {"model": "m1", "input": "x", **extra}
    call = client.responses.create(**body)
    await expect(
        openai.BadRequestError, call, status=400, code="unsupported_parameter", param=param
    )
    assert upstream.received == []


async def test_unknown_model(client: openai.AsyncOpenAI) -> None:
    await expect(
        openai.NotFoundError,
        client.responses.create(model="nope", input="x"),
        status=404,
        code="model_not_found",
        param="model",
        says="'nope'",
    )
    await expect(
        openai.NotFoundError,
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}]),
        status=404,
        code="model_not_found",
        param="model",
    )


async def test_wrong_type_names_path(client: openai.AsyncOpenAI) -> None:
    await expect(
        openai.BadRequestError,
        client.responses.create(model="m1", input="x", temperature="hot"),  # type: ignore[arg-type]
        status=400,
        code="invalid_type",
        param="temperature",
    )
    await expect(
        openai.BadRequestError,
        client.responses.create(model="m1", input=[{"role": "user", "content": 5}]),  # type: ignore[list-item]
        status=400,
        code="invalid_type",
        param="input[0].content",
    )
    await expect(
        openai.BadRequestError,
        client.responses.create(model="m1", input="x", temperature=3),
        status=400,
        code="invalid_value",
        param="temperature",
    )


async def test_missing_fields(client: openai.AsyncOpenAI) -> None:
    await expect(
        openai.BadRequestError,
        client.responses.create(input="x"),  # type: ignore[call-overload]
        status=400,
        code="missing_required_parameter",
        param="model",
    )
    await expect(
        openai.BadRequestError,
        client.responses.create(model="m1"),
        status=400,
        code="missing_required_parameter",
        param="input",
    )
    await expect(
        openai.BadRequestError,
        client.responses.create(
            model="m1",
            input=[{"type": "function_call_output", "output": "x"}],  # type: ignore[list-item]
        ),
        status=400,
        code="missing_required_parameter",
        param="input[0].call_id",
    )


async def raw(url: str, method: str, path: str, data: bytes = b"", **kw: Any) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.request(method, url + path, data=data, **kw) as r:
        return r.status, orjson.loads(await r.read())


async def test_malformed_json(gateway_url: str) -> None:
    for path in ("/responses", "/chat/completions"):
        status, body = await raw(gateway_url, "POST", path, b'{"model": "m1", "input": ')
        assert status == 400
        assert body["error"]["type"] == "invalid_request_error"
        assert "parse the JSON body" in body["error"]["message"]
    status, body = await raw(gateway_url, "POST", "/responses", b"[1, 2]")
    assert status == 400 and body["error"]["code"] == "invalid_type"


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "m1\xff", "input": "x"}',
        b'{"model": "m1", "input": "caf\xe9"}',
        b'{"model": "m1", "input": "x", "text": {"format": {"type": "json_schema",'
        b' "name": "n\xff", "schema": {}}}}',
        b'{"model": "m1", "input": "x", "tool_choice": {"type": "function", "name": "\xff"}}',
    ],
)
async def test_invalid_utf8_is_a_400(gateway_url: str, body: bytes) -> None:
    """A string that is not UTF-8 is the client's error, wherever it is (never a 500)."""
    status, doc = await raw(gateway_url, "POST", "/responses", body)
    assert status == 400, doc
    assert doc["error"]["type"] == "invalid_request_error"
    if b'"model": "m1\xff"' in body:
        status, doc = await raw(gateway_url, "POST", "/chat/completions", body)
        assert status == 400 and "UTF-8" in doc["error"]["message"]


async def test_stored_responses_refused(client: openai.AsyncOpenAI, gateway_url: str) -> None:
    await expect(
        openai.NotFoundError,
        client.responses.retrieve("resp_123"),
        status=404,
        says="stateless",
    )
    await expect(
        openai.NotFoundError, client.responses.delete("resp_123"), status=404, says="stateless"
    )
    await expect(
        openai.NotFoundError, client.responses.cancel("resp_123"), status=404, says="stateless"
    )
    status, body = await raw(gateway_url, "DELETE", "/responses")
    assert status == 405 and body["error"]["type"] == "invalid_request_error"


async def test_plain_get_of_the_websocket_route(gateway_url: str) -> None:
    """GET /v1/responses without the upgrade: 426, saying what the route is."""
    status, body = await raw(gateway_url, "GET", "/responses")
    assert status == 426 and body["error"]["code"] == "upgrade_required"
    assert "WebSocket" in body["error"]["message"] and "POST" in body["error"]["message"]


async def test_body_too_large(upstream: FakeUpstream, start_gateway: Any) -> None:
    url = await start_gateway(make_config(upstream.url, max_body_bytes=1000))
    big = orjson.dumps({"model": "m1", "input": "x" * 2000})
    status, body = await raw(url, "POST", "/responses", big)
    assert status == 413 and body["error"]["code"] == "request_too_large"

    # chunked, without Content-Length
    async def gen() -> Any:
        yield big

    status, body = await raw(url, "POST", "/responses", gen())  # type: ignore[arg-type]
    assert status == 413
    assert upstream.received == []


@pytest.mark.parametrize(
    ("status", "doc", "message", "exc"),
    [
        (
            400,
            {"error": {"message": "context too long", "type": "BadRequestError",
                       "param": "input", "code": 400}},
            "context too long",
            openai.BadRequestError,
        ),
        (400, {"object": "error", "message": "old vllm says no", "type": "x", "code": 400},
         "old vllm says no", openai.BadRequestError),
        (422, {"error": "ollama style"}, "ollama style", openai.UnprocessableEntityError),
        (429, {"error": "busy", "error_type": "overloaded"}, "busy", openai.RateLimitError),
    ],
)  # fmt: skip
async def test_upstream_4xx_normalised(
    client: openai.AsyncOpenAI,
    upstream: FakeUpstream,
    status: int,
    doc: dict,
    message: str,
    exc: type[openai.APIStatusError],
) -> None:
    upstream.reply = upstream.json_reply(doc, status=status)
    with pytest.raises(exc) as info:
        await client.responses.create(model="m1", input="x")
    assert info.value.status_code == status
    assert info.value.message.endswith(message) or message in info.value.message
    assert isinstance(info.value.body, dict) and set(info.value.body) == {
        "message", "type", "param", "code"
    }  # fmt: skip


async def test_upstream_5xx_is_502(client: openai.AsyncOpenAI, upstream: FakeUpstream) -> None:
    upstream.reply = upstream.raw_reply(b"<html>oops</html>", 500, "text/html")
    await expect(
        openai.InternalServerError,
        client.responses.create(model="m1", input="x"),
        status=502,
        code="server_error",
        type_="server_error",
        says="HTTP 500",
    )


async def test_upstream_unreachable_is_502(start_gateway: Any) -> None:
    url = await start_gateway(make_config("http://127.0.0.1:9/v1"))
    async with sdk(url) as c:
        await expect(
            openai.InternalServerError,
            c.responses.create(model="m1", input="x"),
            status=502,
            code="server_error",
            type_="server_error",
        )


async def test_upstream_timeout_is_504(upstream: FakeUpstream, start_gateway: Any) -> None:
    async def slow(request: Any, body: dict) -> Any:
        await asyncio.sleep(5)

    upstream.reply = slow
    url = await start_gateway(make_config(upstream.url, read_timeout=0.3))
    async with sdk(url) as c:
        await expect(
            openai.InternalServerError,
            c.responses.create(model="m1", input="x"),
            status=504,
            code="upstream_headers_timeout",
            type_="server_error",
            says="timed out",
        )


@pytest.mark.parametrize(
    "body",
    [
        b'{"choices": "nope"}',  # JSON, but not a chat completion
        # not UTF-8 (some msgspec versions raise UnicodeDecodeError, others DecodeError)
        b'{"choices":[{"index":0,"message":{"content":"hi"},"finish_reason":"st\xffp"}]}',
    ],
)
async def test_upstream_garbage_is_502(
    client: openai.AsyncOpenAI, upstream: FakeUpstream, body: bytes
) -> None:
    upstream.reply = upstream.raw_reply(body, 200, "application/json")
    await expect(
        openai.InternalServerError,
        client.responses.create(model="m1", input="x"),
        status=502,
        code="server_error",
        type_="server_error",
    )


async def test_capabilities(upstream: FakeUpstream, start_gateway: Any) -> None:
    url = await start_gateway(
        make_config(
            upstream.url,
            supports={"tools": False, "structured_output": False, "images": False},
        )
    )
    async with sdk(url) as c:
        tool = {"type": "function", "name": "f", "parameters": {}}
        cases = [
            ({"tools": [tool]}, "tools"),
            ({"text": {"format": {"type": "json_object"}}}, "text.format"),
            (
                {"input": [{"role": "user", "content": [
                    {"type": "input_text", "text": "x"},
                    {"type": "input_image", "image_url": "https://x/y.png"}]}]},
                "input[0].content[1]",
            ),
        ]  # fmt: skip
        for extra, param in cases:
            body = {"model": "m1", "input": "x", **extra}
            err = await expect(
                openai.BadRequestError,
                c.responses.create(**body),
                status=400,
                code="unsupported_parameter",
                param=param,
                says="does not",
            )
            assert "model" in err.message
    assert upstream.received == []


@pytest.mark.parametrize("path", ["/responses", "/chat/completions"])
async def test_json_nested_a_thousand_deep_is_400_logged_once_per_burst(
    upstream: FakeUpstream, start_gateway: Any, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A 2 KB body nested 1,000 levels deep (where it is skipped or kept raw) raised
    RecursionError: a 500 with a traceback for each request."""
    url = await start_gateway(make_config(upstream.url))
    deep = b"[" * 1000 + b"]" * 1000
    tool = b'{"type": "function", "name": "f", "parameters": %s}' % deep  # (kept raw)
    body = b'{"model": "m1", "input": "x", "messages": [], "tools": [%s]}' % tool
    statuses, docs = [], []
    async with aiohttp.ClientSession() as s:
        for _ in range(20):
            async with s.post(
                url + path, data=body, headers={"Content-Type": "application/json"}
            ) as r:
                statuses.append(r.status)
                docs.append(await r.json())
    assert statuses == [400] * 20
    assert docs[0]["error"]["message"] == "The JSON body of your request is nested too deeply."
    assert not upstream.received
    logged = [r for r in caplog.records if "nested too deeply" in r.getMessage()]
    assert len(logged) <= 1 and not [r for r in caplog.records if r.exc_info]
