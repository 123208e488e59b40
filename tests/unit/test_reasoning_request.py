"""Reasoning on the request side, without a network: reasoning.effort per deployment,
include, replayed reasoning onto the assistant message, and the sealer's blob."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from gateway.api.seal import Sealer
from gateway.config import ConfigError, Seal, parse, seal_keys
from gateway.core.capabilities import Capabilities
from gateway.core.translate.request import to_chat_request
from gateway.core.wire.responses import REQUEST_DECODER
from gateway.errors import InvalidRequest, Unsupported
from gateway.upstream.routing import capabilities

KEY_A, KEY_B = bytes(range(32)), bytes(range(32, 64))
SEALER = Sealer([KEY_A])
CAPS = Capabilities()


def chat_for(
    body: dict, caps: Capabilities = CAPS, sealer: Sealer | None = SEALER
) -> tuple[dict, dict]:
    req = REQUEST_DECODER.decode(orjson.dumps({"model": "m", "input": "x", **body}))
    chat, echo, _ = to_chat_request(req, caps, "up", stream=False, sealer=sealer)
    return orjson.loads(orjson.dumps(chat)), orjson.loads(orjson.dumps(echo))


# ---- reasoning.effort -------------------------------------------------------------------


def test_effort_passed_through_by_default_and_echoed() -> None:
    chat, echo = chat_for({"reasoning": {"effort": "xhigh", "summary": "auto"}})
    assert chat["reasoning_effort"] == "xhigh"
    assert echo["reasoning"] == {"effort": "xhigh", "summary": "auto"}
    chat, echo = chat_for({"reasoning": {"summary": "detailed"}})
    assert "reasoning_effort" not in chat
    assert echo["reasoning"] == {"effort": None, "summary": "detailed"}
    chat, echo = chat_for({})
    assert "reasoning_effort" not in chat and echo["reasoning"] == {"effort": None, "summary": None}


def deployment_caps(toml: str) -> Capabilities:
    cfg = parse(f'[[deployment]]\nupstream = "http://h/v1"\n{toml}'.encode(), "test.toml")
    return capabilities(cfg.deployment[0])


MAPPED = deployment_caps(
    "[deployment.reasoning]\n"
    'effort-field = "thinking_effort"\n'
    'effort-map = { xhigh = "high", max = "high", ultra = "high", minimal = "none" }\n'
    "none-fields = { chat_template_kwargs = { enable_thinking = false } }\n"
)


@pytest.mark.parametrize(
    ("effort", "fields"),
    [
        ("low", {"thinking_effort": "low"}),
        ("xhigh", {"thinking_effort": "high"}),
        ("ultra", {"thinking_effort": "high"}),
        ("none", {"chat_template_kwargs": {"enable_thinking": False}}),
        ("minimal", {"chat_template_kwargs": {"enable_thinking": False}}),
    ],
)
def test_effort_mapped_per_deployment(effort: str, fields: dict) -> None:
    chat, _ = chat_for({"reasoning": {"effort": effort}}, MAPPED)
    assert {k: chat[k] for k in fields} == fields
    assert "reasoning_effort" not in chat
    others = {"thinking_effort", "chat_template_kwargs"} - set(fields)
    assert not others & set(chat)


def test_effort_not_sent_when_the_field_is_empty() -> None:
    caps = deployment_caps('[deployment.reasoning]\neffort-field = ""\n')
    chat, _ = chat_for({"reasoning": {"effort": "high"}}, caps)
    assert set(chat) == {"model", "messages"}


OFF = deployment_caps("[deployment.reasoning]\nenabled = false\n")


def test_reasoning_off_refuses_an_effort_naming_it() -> None:
    with pytest.raises(Unsupported) as info:
        chat_for({"reasoning": {"effort": "high"}}, OFF)
    assert info.value.param == "reasoning.effort" and info.value.status == 400
    chat, _ = chat_for({"reasoning": {"effort": "none", "summary": "auto"}}, OFF)
    assert set(chat) == {"model", "messages"}
    chat, _ = chat_for({"reasoning": {"summary": "auto"}}, OFF)
    assert set(chat) == {"model", "messages"}


# ---- include --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("include", "param"),
    [
        (["message.output_text.logprobs"], "include"),
        (["reasoning.encrypted_content", "file_search_call.results"], "include[1]"),
    ],
)
def test_include_values_not_served(include: list[str], param: str) -> None:
    with pytest.raises(Unsupported) as info:
        chat_for({"include": include})
    assert info.value.param == param and include[-1] in info.value.message


def test_include_encrypted_content_accepted() -> None:
    chat, _ = chat_for({"include": ["reasoning.encrypted_content"]})
    assert "include" not in chat


# ---- replayed reasoning ----------------------------------------------------------------


def reasoning_item(text: str, *, sealed: bool = True, content: bool = False) -> dict:
    item: dict[str, Any] = {"type": "reasoning", "id": "rs_1", "summary": []}
    if sealed:
        item["encrypted_content"] = SEALER.seal(orjson.dumps(text))
    if content:
        item["content"] = [{"type": "reasoning_text", "text": text}]
    return item


def call(call_id: str, name: str = "f") -> dict:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": "{}"}


def result(call_id: str) -> dict:
    return {"type": "function_call_output", "call_id": call_id, "output": "ok"}


def test_interleaved_reasoning_lands_on_each_assistant_turn() -> None:
    items = [
        {"role": "user", "content": "go"},
        reasoning_item('first "think"\n\u00e9'),
        call("c1"),
        result("c1"),
        reasoning_item("second", sealed=False, content=True),
        call("c2", "g"),
        result("c2"),
        reasoning_item("third"),
        {"role": "assistant", "content": "done"},
        reasoning_item("dropped: before a user turn"),
        {"role": "user", "content": "thanks"},
    ]
    chat, _ = chat_for({"input": items})
    messages = chat["messages"]
    assert [m["role"] for m in messages] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert messages[1]["reasoning_content"] == 'first "think"\n\u00e9'
    assert messages[1]["tool_calls"][0]["id"] == "c1"
    assert messages[3]["reasoning_content"] == "second"
    assert messages[5] == {"role": "assistant", "content": "done", "reasoning_content": "third"}
    assert not any("reasoning_content" in m for m in messages if m["role"] != "assistant")


def test_reasoning_before_parallel_calls_goes_on_their_one_message() -> None:
    items = [
        {"role": "user", "content": "go"},
        reasoning_item("plan"),
        call("c1"),
        call("c2"),
        result("c1"),
        result("c2"),
    ]
    messages = chat_for({"input": items})[0]["messages"]
    assert messages[1]["reasoning_content"] == "plan"
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["c1", "c2"]


@pytest.mark.parametrize(("field", "key"), [("reasoning", "reasoning"), ("drop", None)])
def test_replay_field_per_deployment(field: str, key: str | None) -> None:
    caps = deployment_caps(f'[deployment.reasoning]\nreplay-field = "{field}"\n')
    items = [{"role": "user", "content": "go"}, reasoning_item("plan"), call("c1")]
    message = chat_for({"input": items}, caps)[0]["messages"][1]
    assert "reasoning_content" not in message
    if key is None:
        assert set(message) == {"role", "content", "tool_calls"}
    else:
        assert message[key] == "plan"


def sealed_blob(text: str = "secret plan") -> str:
    return SEALER.seal(orjson.dumps(text))


def tampered(blob: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4)))
    raw[-1] ^= 1
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "blob",
    [
        tampered(sealed_blob()),
        Sealer([KEY_B]).seal(b'"other key"'),
        "not a blob at all!",
        "",
        sealed_blob()[:20],
    ],
    ids=["tampered", "other-key", "garbage", "empty", "cut"],
)
def test_a_blob_that_does_not_open_is_400_naming_it(blob: str) -> None:
    items = [
        {"role": "user", "content": "go"},
        call("c0"),
        {**reasoning_item("x", sealed=False, content=True), "encrypted_content": blob},
        call("c1"),
    ]
    with pytest.raises(InvalidRequest) as info:
        chat_for({"input": items})
    err = info.value
    assert (err.status, err.code, err.param) == (
        400,
        "invalid_encrypted_content",
        "input[2].encrypted_content",
    )
    assert "secret plan" not in err.message


def test_without_a_sealer_a_blob_is_refused() -> None:
    items = [reasoning_item("x"), {"role": "assistant", "content": "a"}]
    with pytest.raises(InvalidRequest) as info:
        chat_for({"input": items}, sealer=None)
    assert info.value.code == "invalid_encrypted_content"


# ---- the sealer and its keys -----------------------------------------------------------


def test_rotation_first_key_seals_every_key_opens() -> None:
    old = Sealer([KEY_A])
    rotated = Sealer([KEY_B, KEY_A])
    assert rotated.open(old.seal(b'"from before"')) == "from before"
    blob = rotated.seal(b'"new"')
    assert Sealer([KEY_B]).open(blob) == "new"
    with pytest.raises(ValueError):
        old.open(blob)


def test_blob_binds_version_and_key_id() -> None:
    raw = bytearray(base64.urlsafe_b64decode(sealed_blob() + "=="))
    assert raw[0] == 1
    for position in (0, 1, 4, 5, 16, len(raw) - 1):  # version, key id, nonce, tag
        changed = bytearray(raw)
        changed[position] ^= 0x80
        with pytest.raises(ValueError):
            SEALER.open(base64.urlsafe_b64encode(bytes(changed)).decode())


def test_seal_is_randomised() -> None:
    assert SEALER.seal(b'"same"') != SEALER.seal(b'"same"')


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_seal_keys_from_the_environment() -> None:
    seal = Seal()
    assert seal_keys(seal, {}) == ()
    assert seal_keys(seal, {"GATEWAY_SEAL_KEY": f" {b64(KEY_A)} , {b64(KEY_B)},"}) == (
        KEY_A,
        KEY_B,
    )
    urlsafe = base64.urlsafe_b64encode(bytes([0xFB] * 32)).decode()
    assert seal_keys(seal, {"GATEWAY_SEAL_KEY": urlsafe}) == (bytes([0xFB] * 32),)
    assert seal_keys(Seal(key_env="K"), {"K": b64(KEY_B)}) == (KEY_B,)


@pytest.mark.parametrize("value", ["short", b64(b"x" * 31), b64(b"x" * 33), "!!!!"])
def test_malformed_seal_keys_fail_at_start(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        seal_keys(Seal(), {"GATEWAY_SEAL_KEY": f"{b64(KEY_A)},{value}"})
    assert "GATEWAY_SEAL_KEY" in str(info.value) and "key 2" in str(info.value)
    assert value not in str(info.value)


def test_workers_get_one_random_key_when_none_is_set(caplog: pytest.LogCaptureFixture) -> None:
    from gateway.ops.build import with_seal_key

    cfg = parse(b'[[deployment]]\nupstream = "http://h/v1"\n', "t.toml")
    given = {"GATEWAY_SEAL_KEY": b64(KEY_A), "OTHER": "x"}
    assert with_seal_key(cfg, given) is given
    assert caplog.records == []
    env = with_seal_key(cfg, {"OTHER": "x"})
    (key,) = seal_keys(cfg.seal, env)
    assert env["OTHER"] == "x" and len(key) == 32
    assert with_seal_key(cfg, {})["GATEWAY_SEAL_KEY"] != env["GATEWAY_SEAL_KEY"]
    assert "GATEWAY_SEAL_KEY is not set" in caplog.text
    assert env["GATEWAY_SEAL_KEY"] not in caplog.text


def test_serve_refuses_a_malformed_seal_key() -> None:
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "gateway", "serve", "--upstream", "http://127.0.0.1:9/v1"]
    env = {**os.environ, "GATEWAY_SEAL_KEY": "c2hvcnQ="}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "GATEWAY_SEAL_KEY: key 1 is not the base64 of 32 bytes" in out.stderr
    assert "c2hvcnQ=" not in out.stderr
