"""gateway.core.wire.chunks helpers that the hot path leans on."""

from __future__ import annotations

import json

import orjson
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.wire.chunks import join_tokens

text = st.text(st.sampled_from('a"\\/é🙂\n\t'), max_size=5)
ENCODERS = [
    orjson.dumps,  # UTF-8 as is
    lambda s: json.dumps(s).encode(),  # \\u escapes, as Python servers send
]


@given(st.lists(st.tuples(text, st.sampled_from(ENCODERS)), max_size=8))
def test_join_tokens_is_the_token_of_the_joined_text(parts: list) -> None:
    tokens = [encode(s) for s, encode in parts]
    joined = join_tokens(tokens)
    assert orjson.loads(joined) == "".join(s for s, _ in parts)
    assert joined[:1] == b'"' and joined[-1:] == b'"'


def test_join_tokens_cases() -> None:
    assert join_tokens([]) == b'""'
    assert join_tokens([b'"a"']) == b'"a"'
    assert join_tokens([b'"say \\"hi\\""', b'"\\""', b'""', b'"\\\\"']) == b'"say \\"hi\\"\\"\\\\"'
    assert join_tokens([b'""', b'"x"', b'""']) == b'"x"'
