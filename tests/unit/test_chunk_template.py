"""gateway.core.stream.chunk_template: text chunks recognised by their bytes, never wrongly.

The property tests build streams whose chunks share a template except for the
content slot, fill the slot with valid tokens and with junk (whitespace around
a token, two values, numbers, bad escapes, bad UTF-8, raw control bytes), and
require that whatever the template accepts is exactly what decoding the chunk
would give, and that the transcoder's output is the same with and without it.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transcript import check, run

from gateway.core.stream import transcoder
from gateway.core.stream.chunk_template import LEARN_TRIES, PROBE, ChunkTemplate
from gateway.core.stream.sse import SseParser
from gateway.core.wire.chunks import PLAIN_DECODER

# (prefix, suffix) of real servers' text chunks, as they send them.
SHAPES = {
    "vllm": (
        b'{"id":"chatcmpl-8f2b","object":"chat.completion.chunk","created":1741476542,'
        b'"model":"Qwen/Qwen2.5-7B-Instruct","choices":[{"index":0,"delta":{"content":',
        b'},"logprobs":null,"finish_reason":null}]}',
    ),
    "sglang": (
        b'{"id":"9d1c","object":"chat.completion.chunk","created":1741476542,"model":"m",'
        b'"choices":[{"index":0,"delta":{"role":null,"content":',
        b',"reasoning_content":null,"tool_calls":null},"logprobs":null,"finish_reason":null,'
        b'"matched_stop":null}],"usage":null}',
    ),
    "llama.cpp": (
        b'{"choices":[{"finish_reason":null,"index":0,"delta":{"content":',
        b'}}],"created":1741476542,"id":"chatcmpl-x","model":"m","system_fingerprint":"b1",'
        b'"object":"chat.completion.chunk"}',
    ),
    "spaced": (
        b'{"choices": [{"index": 0, "delta": {"content": ',
        b'}, "finish_reason": null}]}',
    ),
}

FINISH = b'{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'


def payload(shape: str, token: bytes) -> bytes:
    prefix, suffix = SHAPES[shape]
    return prefix + token + suffix


def content(chunk: bytes) -> bytes | None:
    """What the decoding path reads from a chunk: its content token, or None if not plain."""
    try:
        view = PLAIN_DECODER.decode(chunk)
    except ValueError:
        return None
    if view.usage is not None:
        return None
    return bytes(view.choices[0].delta.content)


def learned(shape: str) -> ChunkTemplate:
    template = ChunkTemplate.learn(payload(shape, b'" hi"'), b'" hi"')
    assert template is not None
    return template


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_learn_finds_the_content_slot(shape: str) -> None:
    template = learned(shape)
    assert (template.prefix, template.suffix) == SHAPES[shape]


def test_learn_proves_the_slot_when_the_token_also_appears_elsewhere() -> None:
    chunk = b'{"model":"x","id":"x","choices":[{"index":0,"delta":{"content":"x"}}],"o":"x"}'
    template = ChunkTemplate.learn(chunk, b'"x"')
    assert template is not None
    assert template.prefix.endswith(b'"content":') and template.suffix == b'}}],"o":"x"}'


@pytest.mark.parametrize(
    "chunk",
    [
        b'{"choices":[{"index":0,"delta":{"content":"x"}}],"usage":{"prompt_tokens":1}}',
        b'{"choices":[{"index":0,"delta":{"content":\n"x"}}]}',  # an LF: run's separator
        b'{"choices":[{"index":0,"delta":{"content":"y"}}]}',  # the token is not in it
    ],
)
def test_learn_refuses(chunk: bytes) -> None:
    assert ChunkTemplate.learn(chunk, b'"x"') is None


def test_learn_refuses_the_probe_itself() -> None:
    assert ChunkTemplate.learn(payload("vllm", PROBE), PROBE) is None


GOOD = [b'"a"', b'" world"', b'"say \\"hi\\""', b'"back\\\\"', b'"\\u00e9"', "é🙂".encode()]
GOOD[-1] = b'"' + GOOD[-1] + b'"'
BAD = [
    b'"a" ',  # whitespace after the token
    b' "a"',  # whitespace before
    b'"a","b"',  # two values
    b'"a"}',  # more than the token
    b"7",  # not a string
    b"null",
    b'"a',  # unterminated
    b'"bad\\q"',  # bad escape
    b'"\xff"',  # bad UTF-8
    b'"tab\x01"',  # raw control byte
    b"",
    b'"","',  # a string and the start of another
    b'"',
    b'"\\"',  # an escaped quote, no closing one
    b'",""',
]


@pytest.mark.parametrize("token", GOOD + [b'""'])
def test_token_takes_one_exact_string(token: bytes) -> None:
    assert learned("vllm").token(payload("vllm", token)) == token


@pytest.mark.parametrize("token", BAD)
def test_token_refuses_anything_else(token: bytes) -> None:
    assert learned("vllm").token(payload("vllm", token)) is None


def test_token_refuses_other_chunks() -> None:
    template = learned("vllm")
    assert template.token(FINISH) is None
    assert template.token(payload("sglang", b'"a"')) is None
    assert template.token(SHAPES["vllm"][0] + SHAPES["vllm"][1][5:]) is None  # too short


def test_run_takes_the_block_before_the_tail() -> None:
    template = learned("vllm")
    tokens = [b'"a"', b'""', b'"b"', b'"\\"c\\""']
    payloads = [FINISH] + [payload("vllm", t) for t in tokens] + [FINISH, b"[DONE]"]
    assert template.run(payloads, 1) == (4, [b'"a"', b'"b"', b'"\\"c\\""'])
    assert template.run(payloads, 0) == (0, [])  # starts with a chunk that does not fit
    assert template.run(payloads, 5) == (0, [])


@pytest.mark.parametrize("odd", BAD + [FINISH])
def test_run_refuses_a_block_with_an_odd_payload_inside(odd: bytes) -> None:
    template = learned("vllm")
    inner = odd if odd == FINISH else payload("vllm", odd)
    payloads = [payload("vllm", b'"a"'), inner, payload("vllm", b'"b"')]
    assert template.run(payloads, 0) == (0, [])


@pytest.mark.parametrize(
    "pair", [(b'"","', b'"'), (b'"\\"', b'",""'), (b'"a\\"', b'",'), (b'"",', b'"b"')]
)
def test_run_refuses_tokens_that_straddle_the_join(pair: tuple[bytes, bytes]) -> None:
    """Joined as a list, '"","' and '"' give two valid strings: a count is not enough."""
    template = learned("vllm")
    payloads = [payload("vllm", token) for token in pair]
    assert template.run(payloads, 0) == (0, [])
    assert template.token(payloads[0]) is None


def test_learn_tries_a_bounded_number_of_places() -> None:
    """Each try decodes the chunk: a token repeated all over it must not cost more."""
    decoys = "".join(f',"k{i}":"x"' for i in range(LEARN_TRIES))
    head = b'{"o":"x"' + decoys.encode() + b',"choices":[{"index":0,"delta":{"content":'
    chunk = head + b'"x"}}]}'
    assert ChunkTemplate.learn(chunk, b'"x"') is None  # the content is place LEARN_TRIES + 2
    assert ChunkTemplate.learn(chunk.replace(b',"k0":"x"', b""), b'"x"') is None
    fewer = b'{"o":"x","choices":[{"index":0,"delta":{"content":"x"}}]}'
    assert ChunkTemplate.learn(fewer, b'"x"') is not None


# ---- properties -------------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
valid_token = st.one_of(
    text.map(orjson.dumps),
    text.map(lambda s: orjson.dumps(s).replace(b"/", b"\\/")),
    st.sampled_from(GOOD),
)
junk = st.one_of(
    st.sampled_from(BAD),
    st.tuples(valid_token, st.sampled_from([b" ", b",", b"}", b'""', b"\t", b",1"])).map(
        lambda pair: pair[0] + pair[1]
    ),
    st.binary(max_size=6),
)
fill = st.one_of(valid_token, valid_token, junk)


@settings(max_examples=300, deadline=None)
@given(shape=st.sampled_from(sorted(SHAPES)), fills=st.lists(fill, min_size=1, max_size=12))
def test_whatever_the_template_accepts_is_what_decoding_gives(
    shape: str, fills: list[bytes]
) -> None:
    template = learned(shape)
    payloads = [payload(shape, f) for f in fills]
    for p in payloads:
        token = template.token(p)
        if token is not None:
            assert content(p) == token
    count, tokens = template.run(payloads, 0)
    if count:
        decoded = [content(p) for p in payloads[:count]]
        assert None not in decoded
        assert tokens == [t for t in decoded if t is not None and len(t) > 2]
    if all(f in GOOD for f in fills) and len(fills) > 1:
        assert count == len(fills)


def _sse(chunks: list[bytes]) -> bytes:
    return b"".join(b"data: " + c + b"\n\n" for c in chunks)


@settings(max_examples=200, deadline=None)
@given(
    shape=st.sampled_from(sorted(SHAPES)),
    fills=st.lists(fill, min_size=1, max_size=12),
    cuts=st.lists(st.integers(0, 4000), max_size=6),
)
def test_transcoder_output_is_the_same_without_templates(
    shape: str, fills: list[bytes], cuts: list[int]
) -> None:
    chunks = [payload(shape, b'"first"'), *(payload(shape, f) for f in fills), FINISH]
    raw = _sse(chunks) + b"data: [DONE]\n\n"
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(raw)}), len(raw)]
    pieces = [raw[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    with_templates = run([raw]), run(pieces)
    learns = transcoder.LEARNS
    transcoder.LEARNS = 0
    try:
        without = run([raw])
    finally:
        transcoder.LEARNS = learns
    assert with_templates == (without, without)
    check(without)


def test_templates_are_used_on_a_plain_stream() -> None:
    """The equivalence above must not hold only because the template never matches."""
    chunks = [payload("vllm", orjson.dumps(f" w{i}")) for i in range(20)]
    parser = SseParser()
    payloads = parser.feed(_sse(chunks))
    assert parser.lf_free
    template = ChunkTemplate.learn(payloads[0], b'" w0"')
    assert template is not None
    assert template.run(payloads, 1) == (19, [orjson.dumps(f" w{i}") for i in range(1, 20)])
    calls = []
    original = ChunkTemplate.run

    def spy(self: ChunkTemplate, payloads: list[bytes], start: int) -> tuple[int, list[bytes]]:
        result = original(self, payloads, start)
        calls.append(result[0])
        return result

    ChunkTemplate.run = spy  # type: ignore[method-assign]
    try:
        events = check(
            run([_sse([payload("vllm", b'"a"'), *chunks, FINISH]) + b"data: [DONE]\n\n"])
        )
    finally:
        ChunkTemplate.run = original  # type: ignore[method-assign]
    assert 19 in calls
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == "a" + "".join(f" w{i}" for i in range(20))
