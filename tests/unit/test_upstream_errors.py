"""Upstream error answers in each server's words become the gateway's errors
(``errors.upstream_error_from_body``), and the two "full, retry later" 503s agree."""

from __future__ import annotations

import orjson
import pytest

from gateway.errors import (
    ContextLengthExceeded,
    InputNotSupported,
    Overloaded,
    UpstreamBusy,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
    upstream_error_from_body,
)
from tests.unit.transcript import check, run

# (server, status, body) as each server words a context overflow
OVERFLOWS = [
    ("vllm", 400, {"object": "error", "type": "BadRequestError", "code": 400,
      "message": "This model's maximum context length is 4096 tokens. However, you requested "
                 "5000 tokens (4000 in the messages, 1000 in the completion)."}),
    ("vllm-new", 400, {"error": {"type": "BadRequestError", "code": 400, "param": None,
      "message": "'max_tokens' or 'max_completion_tokens' is too large: 5000. This model's "
                 "maximum context length is 4096 tokens and your request has 100 input tokens"}}),
    ("vllm-decoder", 400, {"error": {"message": "The decoder prompt (length 5000) is longer "
                                     "than the maximum model length of 4096."}}),
    ("sglang", 400, {"object": "error", "code": 400, "type": "BadRequestError",
      "message": "The input (5000 tokens) is longer than the model's context length "
                 "(4096 tokens)."}),
    ("sglang-total", 400, {"error": {"message": "Requested token count exceeds the model's "
                                     "maximum context length of 4096 tokens."}}),
    ("llama.cpp", 400, {"error": {"code": 400, "type": "exceed_context_size_error",
      "message": "the request exceeds the available context size, try increasing it",
      "n_prompt_tokens": 5000, "n_ctx": 4096}}),
    ("llama.cpp-500", 500, {"error": {"code": 500, "type": "server_error",
      "message": "the request exceeds the available context size. try increasing the "
                 "context size or enable context shift"}}),
    ("ollama", 400, {"error": "the input length exceeds the context length"}),
    ("ollama-old", 500, {"error": "prompt too long; exceeded max context length by 904 tokens"}),
]  # fmt: skip


@pytest.mark.parametrize(("server", "status", "body"), OVERFLOWS, ids=[o[0] for o in OVERFLOWS])
def test_context_overflow_in_every_servers_words(server: str, status: int, body: dict) -> None:
    exc = upstream_error_from_body(status, orjson.dumps(body))
    assert isinstance(exc, ContextLengthExceeded)
    assert exc.status == 400 and exc.code == "context_length_exceeded"
    assert exc.to_dict()["error"]["type"] == "invalid_request_error"


def test_other_400s_and_500s_keep_their_meaning() -> None:
    other = upstream_error_from_body(400, b'{"error": {"message": "bad temperature"}}')
    assert type(other) is UpstreamRejected and other.status == 400 and other.code is None
    down = upstream_error_from_body(500, b'{"error": {"message": "CUDA out of memory"}}')
    assert type(down) is UpstreamUnavailable and down.status == 502


# (server, status, body) as each server words an input its model cannot take
NOT_SUPPORTED = [
    ("llama.cpp", 500, {"error": {"code": 500, "type": "server_error",
      "message": "image input is not supported - hint: if this is unexpected, you may need "
                 "to provide the mmproj"}}),
    ("vllm", 400, {"error": {"type": "BadRequestError", "code": 400,
      "message": "Qwen2ForCausalLM is not a multimodal model"}}),
    ("ollama", 500, {"error": "this model is missing data required for image input"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("server", "status", "body"), NOT_SUPPORTED, ids=[o[0] for o in NOT_SUPPORTED]
)
def test_an_input_the_model_cannot_take_is_400_naming_the_input(
    server: str, status: int, body: dict
) -> None:
    exc = upstream_error_from_body(status, orjson.dumps(body))
    assert isinstance(exc, InputNotSupported)
    assert (exc.status, exc.code, exc.param) == (400, "unsupported_input", "input")
    assert exc.to_dict()["error"]["type"] == "invalid_request_error"


def test_a_number_in_code_is_not_passed_on_as_a_string() -> None:
    """llama.cpp and vLLM put the HTTP status in ``code``; OpenAI's is a string or null."""
    exc = upstream_error_from_body(400, b'{"error": {"code": 400, "message": "bad top_k"}}')
    assert type(exc) is UpstreamRejected and exc.code is None
    assert exc.to_dict()["error"]["code"] is None
    named = upstream_error_from_body(400, b'{"error": {"code": "bad_value", "message": "x"}}')
    assert named.code == "bad_value"


def test_every_answer_is_marked_answered() -> None:
    for status in (400, 429, 500, 502, 503):
        assert upstream_error_from_body(status, b"{}").answered, status


def test_upstream_429_is_rate_limit_exceeded_with_its_retry_after() -> None:
    exc = upstream_error_from_body(429, b'{"error": {"message": "slow down"}}', b"12")
    assert isinstance(exc, UpstreamRateLimited)
    assert (exc.status, exc.code, exc.type) == (429, "rate_limit_exceeded", "requests")
    assert exc.headers == {"Retry-After": "12"}
    no_header = upstream_error_from_body(429, b"", None)
    assert no_header.headers == {"Retry-After": "1"}
    a_date = upstream_error_from_body(429, b"", b"Wed, 21 Oct 2015 07:28:00 GMT")
    assert a_date.headers == {"Retry-After": "1"}


def test_the_two_full_503s_agree() -> None:
    ours = Overloaded("the gateway is full")
    theirs = upstream_error_from_body(503, b'{"error": {"message": "queue full"}}', b"3")
    pool = UpstreamBusy("every connection in use")
    for exc in (ours, theirs, pool):
        assert exc.status == 503 and exc.code == "server_overloaded"
        assert exc.to_dict()["error"]["type"] == "server_error"
        assert exc.headers is not None and int(exc.headers["Retry-After"]) >= 1
    assert theirs.headers == {"Retry-After": "3"}
    assert isinstance(theirs, UpstreamBusy) and theirs.answered


def chunk(doc: dict) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


@pytest.mark.parametrize("split", ["whole", "bytes"])
def test_context_overflow_after_the_stream_started_is_response_failed(split: str) -> None:
    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]}
    error = {"error": {"message": "The input (5000 tokens) is longer than the model's "
                       "context length (4096 tokens).", "code": 400}}  # fmt: skip
    data = chunk(role) + chunk(error)
    pieces = [data] if split == "whole" else [data[i : i + 1] for i in range(len(data))]
    events = check(run(pieces))
    final = events[-1]
    assert final["type"] == "response.failed"
    assert final["response"]["error"]["code"] == "context_length_exceeded"
    plain = check(run([chunk(role) + chunk({"error": {"message": "engine died"}})]))
    assert plain[-1]["response"]["error"]["code"] == "server_error"
