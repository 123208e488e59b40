"""``GET /metrics``, ``/healthz``, ``/readyz`` and the access log, in process, on both
HTTP servers: known traffic through the official client, then a scrape whose counters
and histograms moved by exactly what that traffic makes."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

import aiohttp
import msgspec
import openai
import orjson
import pytest

from gateway.config import Auth, Limits, Ops
from tests.conftest import (
    FakeUpstream,
    chunk,
    completion,
    make_config,
    sdk,
    text_stream,
)
from tests.integration.ops_support import Samples, get, parse, value

M = "gen_ai_request_model"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


async def scrape(url: str) -> Samples:
    status, body = await get(port_of(url), "/metrics")
    assert status == 200
    return parse(body)


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_scrape_moves_by_exactly_the_traffic(
    upstream: FakeUpstream, start_gateway: object
) -> None:
    url = await start_gateway(make_config(upstream.url))  # type: ignore[operator]
    before = await scrape(url)
    async with sdk(url) as client:
        upstream.reply = upstream.json_reply(
            completion(
                usage={
                    "prompt_tokens": 11,
                    "completion_tokens": 3,
                    "total_tokens": 14,
                    "completion_tokens_details": {"reasoning_tokens": 2},
                }
            )
        )
        for _ in range(3):
            await client.responses.create(model="m1", input="Hi")
        upstream.reply = upstream.sse_reply(text_stream("Hel", "lo", "!"))
        events = []
        async with client.responses.stream(model="m1", input="Hi") as stream:
            async for ev in stream:
                events.append(ev)
        with pytest.raises(openai.NotFoundError):
            await client.responses.create(model="nope", input="Hi")
        upstream.reply = upstream.json_reply({"error": {"message": "boom"}}, status=500)
        with pytest.raises(openai.APIStatusError):
            await client.responses.create(model="m1", input="Hi")
        upstream.reply = upstream.json_reply(completion())
        await client.chat.completions.create(
            model="m1", messages=[{"role": "user", "content": "x"}]
        )
    for path in ("/healthz", "/readyz"):  # not API traffic: counted nowhere
        assert (await get(port_of(url), path))[0] == 200
    after = await scrape(url)

    req = "gateway_requests_total"
    ok = {"endpoint": "responses", M: "m1", "status": "200", "outcome": "completed"}
    assert delta(after, before, req, **ok) == 4  # 3 JSON + 1 stream
    assert delta(after, before, req, endpoint="responses", status="404", outcome="failed") == 1
    assert delta(after, before, req, endpoint="responses", **{M: "unknown"}) == 1  # never "nope"
    assert not [k for k in after if "nope" in str(k)]
    assert delta(after, before, req, endpoint="responses", status="502", outcome="failed") == 1
    assert delta(after, before, req, endpoint="chat_completions", status="200") == 1
    assert delta(after, before, req) == 7  # and nothing for /healthz, /readyz, /metrics
    assert delta(after, before, req, endpoint="other") == 0

    hist = "gateway_request_duration_seconds"
    assert delta(after, before, hist + "_count") == 7
    assert delta(after, before, hist + "_count", endpoint="responses", **{M: "m1"}) == 5
    assert delta(after, before, hist + "_sum") > 0
    assert delta(after, before, hist + "_bucket", le="+Inf") == 7
    ttft = "gateway_time_to_first_token_seconds"
    assert delta(after, before, ttft + "_count", endpoint="responses") == 1  # the one stream
    assert delta(after, before, ttft + "_count", endpoint="chat_completions") == 0

    # Every event the client got, counted once, at the stream's end.
    assert delta(after, before, "gateway_stream_events_total", endpoint="responses") == len(events)
    tok = "gateway_tokens_total"
    # 3 JSON answers of 11/3 (2 reasoning), the stream's usage chunk 5/7, the chat one 11/3.
    assert delta(after, before, tok, endpoint="responses", type="input") == 3 * 11 + 5
    assert delta(after, before, tok, endpoint="responses", type="output") == 3 * 3 + 7
    assert delta(after, before, tok, endpoint="responses", type="reasoning") == 3 * 2
    assert delta(after, before, tok, endpoint="chat_completions", type="input") == 11
    up = "gateway_upstream_errors_total"
    assert delta(after, before, up, kind="unavailable", replica=upstream.url) == 1
    assert delta(after, before, up) == 1
    assert value(after, "gateway_requests_in_flight") == 0
    assert value(after, "gateway_upstream_replica_healthy", replica=upstream.url) == 1
    # Bounded labels: no request ids, raw paths or keys anywhere.
    labels = {k for (_, ls) in after for k, _ in ls}
    assert labels <= {
        "endpoint",
        M,
        "status",
        "outcome",
        "type",
        "kind",
        "deployment",
        "replica",
        "le",
    }


async def test_replays_rate_limits_and_disconnects_are_counted(
    upstream: FakeUpstream, start_gateway: object
) -> None:
    cfg = msgspec.structs.replace(make_config(upstream.url), limits=Limits(requests_per_minute=4))
    url = await start_gateway(cfg)  # type: ignore[operator]
    before = await scrape(url)
    async with sdk(url) as client:
        for _ in range(2):  # the second is a replay
            await client.responses.create(
                model="m1", input="Hi", extra_headers={"Idempotency-Key": "k-1"}
            )
    # A stream whose client goes away mid-answer.
    upstream.reply = upstream.sse_reply([chunk({"role": "assistant", "content": "a"})], then="hang")
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
    body = b'{"model":"m1","input":"Hi","stream":true}'
    writer.write(
        b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await reader.readuntil(b"response.output_text.delta")
    writer.close()
    await asyncio.wait_for(upstream.disconnected.wait(), 10)
    for _ in range(100):
        if value(await scrape(url), "gateway_client_disconnects_total"):
            break
        await asyncio.sleep(0.02)
    upstream.reply = upstream.json_reply(completion())
    async with sdk(url) as client:  # two replays and the stream counted: one more, then 429
        await client.responses.create(model="m1", input="Hi")
        with pytest.raises(openai.RateLimitError):
            await client.responses.create(model="m1", input="Hi")
    after = await scrape(url)
    assert delta(after, before, "gateway_idempotent_replays_total", endpoint="responses") == 1
    assert delta(after, before, "gateway_rate_limited_requests_total", endpoint="responses") == 1
    assert delta(after, before, "gateway_client_disconnects_total", endpoint="responses") == 1
    assert delta(after, before, "gateway_requests_total", outcome="client_gone") == 1
    assert value(after, "gateway_requests_in_flight") == 0


async def test_health_routes_are_plain_json_without_auth(
    upstream: FakeUpstream, start_gateway: object
) -> None:
    cfg = msgspec.structs.replace(make_config(upstream.url), auth=Auth(keys_env="K"))
    url = await start_gateway(cfg, {"K": "sk-secret-1"})  # type: ignore[operator]
    port = port_of(url)
    status, body = await get(port, "/healthz")
    assert status == 200 and orjson.loads(body)["status"] == "ok"
    status, body = await get(port, "/readyz")
    assert (status, orjson.loads(body)) == (200, {"status": "ready"})
    status, body = await get(port, "/metrics")
    assert status == 200 and b"# TYPE gateway_requests_total counter" in body
    assert (await get(port, "/v1/models"))[0] == 401  # the API itself still needs a key


async def test_metrics_can_be_turned_off(upstream: FakeUpstream, start_gateway: object) -> None:
    cfg = msgspec.structs.replace(make_config(upstream.url), ops=Ops(metrics=False))
    url = await start_gateway(cfg)  # type: ignore[operator]
    assert (await get(port_of(url), "/metrics"))[0] == 404
    assert (await get(port_of(url), "/healthz"))[0] == 200


async def test_metrics_behind_the_client_keys(
    upstream: FakeUpstream, start_gateway: object
) -> None:
    """[ops] metrics-auth: a scrape needs a client API key like the API (health does not)."""
    cfg = msgspec.structs.replace(
        make_config(upstream.url), auth=Auth(keys_env="K"), ops=Ops(metrics_auth=True)
    )
    url = await start_gateway(cfg, {"K": "sk-secret-1"})  # type: ignore[operator]
    port = port_of(url)
    status, body = await get(port, "/metrics")
    assert status == 401 and orjson.loads(body)["error"]["code"] == "invalid_api_key"
    assert (await get(port, "/healthz"))[0] == 200
    async with aiohttp.ClientSession() as s:
        headers = {"Authorization": "Bearer sk-secret-1"}
        async with s.get(url.removesuffix("/v1") + "/metrics", headers=headers) as r:
            assert r.status == 200 and b"gateway_requests_total" in await r.read()


# ---- the access log ------------------------------------------------------------------------


async def test_one_access_log_line_per_request_without_prompts_or_keys(
    upstream: FakeUpstream, start_gateway: object
) -> None:
    out = io.BytesIO()
    cfg = msgspec.structs.replace(
        make_config(upstream.url), auth=Auth(keys_env="K"), ops=Ops(log_format="json")
    )
    url = await start_gateway(cfg, {"K": "sk-secret-key-42"}, access_out=out)  # type: ignore[operator]
    prompt = "PROMPT-TEXT-THAT-MUST-NOT-BE-LOGGED"
    async with sdk(url, "sk-secret-key-42") as client:
        first = await client.responses.create(model="m1", input=prompt)
        upstream.reply = upstream.sse_reply(text_stream("a", "b", "c", "d"))
        async with client.responses.stream(model="m1", input=prompt) as stream:
            n = len([ev async for ev in stream])
        with pytest.raises(openai.NotFoundError):
            await client.responses.create(model="gone", input=prompt)
    await get(port_of(url), "/healthz")
    await asyncio.sleep(0.15)  # (lines leave within limits.ACCESS_LOG_FLUSH)
    data = out.getvalue()
    assert prompt.encode() not in data and b"sk-secret-key-42" not in data
    lines = [orjson.loads(line) for line in data.splitlines()]
    assert len(lines) == 3  # nothing for /healthz, nothing per chunk
    a, b, c = lines
    assert a["request_id"] == first._request_id
    assert {k: a[k] for k in ("endpoint", "model", "status", "outcome", "logger")} == {
        "endpoint": "responses",
        "model": "m1",
        "status": 200,
        "outcome": "completed",
        "logger": "gateway.access",
    }
    assert (a["input_tokens"], a["output_tokens"], a["reasoning_tokens"]) == (11, 3, 0)
    assert a["deployment"] == "m1" and a["replica"] == upstream.url.rstrip("/")
    assert a["ttft_s"] is None and a["duration_s"] > 0 and len(a["tenant"]) == 12
    assert b["events"] == n and b["ttft_s"] is not None and 0 < b["ttft_s"] <= b["duration_s"]
    assert (b["input_tokens"], b["output_tokens"]) == (5, 7)
    assert (c["status"], c["outcome"], c["model"], c["error"]) == (
        404,
        "failed",
        None,
        "model_not_found",
    )


async def test_access_log_as_text(upstream: FakeUpstream, start_gateway: object) -> None:
    out = io.BytesIO()
    cfg = msgspec.structs.replace(make_config(upstream.url), ops=Ops(log_format="text"))
    url = await start_gateway(cfg, access_out=out)  # type: ignore[operator]
    async with sdk(url) as client:
        resp = await client.responses.create(model="m1", input="Hi")
    await asyncio.sleep(0.15)
    (line,) = out.getvalue().decode().splitlines()
    assert f" INFO access {resp._request_id} responses " in line
    assert "status=200" in line and "outcome=completed" in line and "input_tokens=11" in line


def test_log_setup_formats_other_lines_too() -> None:
    from gateway.ops.access_log import setup

    buf = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        assert setup("warning", "auto", buf) == "json"  # (not a terminal)
        logging.getLogger("gateway").warning("hello %s", "there")
        logging.getLogger("gateway").info("not at this level")
        (line,) = buf.getvalue().splitlines()
        doc = orjson.loads(line)
        assert (doc["level"], doc["logger"], doc["msg"]) == ("warning", "gateway", "hello there")
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])


async def test_readyz_is_503_while_draining_and_healthz_stays_200(upstream: FakeUpstream) -> None:
    """The drain sets ``draining`` first (then closes the listener): readiness says so
    with the reason, liveness does not change."""
    from gateway.ops.lifecycle import listen, open_gateway

    async with open_gateway(make_config(upstream.url)) as gw:
        async with listen(gw, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            assert (await get(port, "/readyz"))[0] == 200
            gw.process.draining = True
            status, body = await get(port, "/readyz")
            assert (status, orjson.loads(body)["reasons"]) == (503, ["draining"])
            assert (await get(port, "/healthz"))[0] == 200
            gw.process.draining = False
            gw.router.ready = lambda: False  # (the router of issue 11 offers ready())
            status, body = await get(port, "/readyz")
            assert status == 503
            assert orjson.loads(body)["reasons"] == ["a deployment has no healthy replica"]
        assert gw.process.listening == 0


async def test_upstream_errors_and_log_lines_name_the_replica_of_several(
    upstream: FakeUpstream, aiohttp_raw_server: Any, start_gateway: object
) -> None:
    # Two replicas: each 500 (never retried) is counted under the replica that gave it,
    # and each access-log line names the replica that answered, not "" for "several".
    other = FakeUpstream()
    other.url = str((await aiohttp_raw_server(other.handle)).make_url("/v1"))
    urls = {upstream.url.rstrip("/"), other.url.rstrip("/")}
    out = io.BytesIO()
    cfg = make_config(upstream.url)
    two = msgspec.structs.replace(cfg.deployment[0], upstream=[upstream.url, other.url])
    cfg = msgspec.structs.replace(cfg, deployment=(two,), ops=Ops(log_format="json"))
    url = await start_gateway(cfg, access_out=out)  # type: ignore[operator]
    before = await scrape(url)
    for fake in (upstream, other):
        fake.reply = fake.json_reply({"error": {"message": "boom"}}, status=500)
    async with sdk(url) as client:
        for _ in range(6):
            with pytest.raises(openai.APIStatusError):
                await client.responses.create(model="m1", input="Hi")
    await asyncio.sleep(0.15)  # (lines leave within limits.ACCESS_LOG_FLUSH)
    after = await scrape(url)
    up = "gateway_upstream_errors_total"
    hits = {u: delta(after, before, up, replica=u) for u in urls}
    assert sum(hits.values()) == 6 == delta(after, before, up)
    assert hits[upstream.url.rstrip("/")] == len(upstream.received)
    assert hits[other.url.rstrip("/")] == len(other.received)
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 6 and all(line["replica"] in urls for line in lines)
