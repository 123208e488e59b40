"""gateway.core.stream.sse.SseParser: the SSE grammar, at every possible split of the input."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.stream.sse import SseParser

STREAMS = pathlib.Path(__file__).parent.parent / "data" / "streams"


def parse(*pieces: bytes) -> tuple[list[bytes], bytes | None]:
    parser = SseParser()
    events: list[bytes] = []
    for piece in pieces:
        events += parser.feed(piece)
    return events, parser.flush()


def splits(data: bytes) -> list[tuple[bytes, ...]]:
    """Whole, one byte at a time, and cut in two at every position."""
    out: list[tuple[bytes, ...]] = [(data,), tuple(data[i : i + 1] for i in range(len(data)))]
    out += [(data[:i], data[i:]) for i in range(1, len(data))]
    return out


CASES = [
    (b"data: a\n\n", [b"a"], None),
    (b"data:a\n\n", [b"a"], None),
    (b"data:  two spaces\n\n", [b" two spaces"], None),
    (b"data: a\r\n\r\n", [b"a"], None),
    (b"data: a\r\rdata: b\r\r", [b"a", b"b"], None),
    (b"data: a\ndata: b\n\n", [b"a\nb"], None),
    (b"data: a\r\ndata:\r\ndata: c\r\n\r\n", [b"a\n\nc"], None),
    (b"data\n\n", [b""], None),
    (b"data:\n\n", [b""], None),
    (b": comment\n\n", [], None),
    (b": ping\ndata: x\n: another\n\n", [b"x"], None),
    (b"event: foo\nid: 7\nretry: 10\ndata: x\n\n", [b"x"], None),
    (b"event: foo\nid: 7\n\n", [], None),
    (b"\n\n\ndata: a\n\n\n\ndata: b\n\n", [b"a", b"b"], None),
    (b"datax: a\ndata : b\n\n", [], None),
    (b'data: {"k": "v: w"}\n\n', [b'{"k": "v: w"}'], None),
    (b"data: a\n\ndata: tail", [b"a"], b"tail"),
    (b"data: a\n\ndata: tail\n", [b"a"], b"tail"),
    (b"data: a\n\ndata: t1\ndata: t2", [b"a"], b"t1\nt2"),
    (b"data: a\n\n: only a comment", [b"a"], None),
    (b"data: a\n\nevent: x\n", [b"a"], None),
    (b"data: a\r", [], b"a"),
    ("data: caf\u00e9 \U0001f600\n\n".encode(), ["caf\u00e9 \U0001f600".encode()], None),
]


@pytest.mark.parametrize(("data", "events", "tail"), CASES)
def test_grammar_at_every_split(data: bytes, events: list[bytes], tail: bytes | None) -> None:
    for pieces in splits(data):
        assert parse(*pieces) == (events, tail), pieces


def test_crlf_split_across_feeds_counts_once() -> None:
    assert parse(b"data: a\r", b"\n", b"data: b\r", b"\n\r", b"\n") == ([b"a\nb"], None)
    assert parse(b"data: a\r", b"\r") == ([b"a"], None)
    assert parse(b"data: a\r", b"", b"\n\r\n") == ([b"a"], None)


def test_flush_resets() -> None:
    parser = SseParser()
    assert parser.feed(b"data: one") == []
    assert parser.flush() == b"one"
    assert parser.flush() is None
    assert parser.feed(b"data: two\n\n") == [b"two"]


def test_many_events_in_one_read() -> None:
    data = b"".join(b'data: {"n": %d}\n\n' % i for i in range(100))
    assert parse(data) == ([b'{"n": %d}' % i for i in range(100)], None)


def test_large_event_in_small_reads() -> None:
    payload = b"x" * 100_000
    data = b"data: " + payload + b"\n\n"
    parser = SseParser()
    events = []
    for i in range(0, len(data), 7):
        events += parser.feed(data[i : i + 7])
    assert events == [payload]


@pytest.mark.parametrize("path", sorted(STREAMS.glob("*.sse")), ids=lambda p: p.stem)
def test_golden_streams_split_anywhere(path: pathlib.Path) -> None:
    data = path.read_bytes()
    expected = parse(data)
    assert parse(*(data[i : i + 1] for i in range(len(data)))) == expected
    for cut in range(1, len(data), 13):
        assert parse(data[:cut], data[cut:]) == expected


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(
        st.sampled_from(
            [b"data: a", b"data:b", b"data", b": c", b"event: e", b"id: 1", b"", b"data: \xc3\xa9"]
        ),
        max_size=12,
    ),
    ending=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_random_streams_match_reference(lines: list[bytes], ending: bytes, cuts: list[int]) -> None:
    data = b"".join(line + ending for line in lines)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert parse(*pieces) == reference(lines)


def reference(lines: list[bytes]) -> tuple[list[bytes], bytes | None]:
    """The WHATWG dispatch algorithm, line by line (lines already split)."""
    events: list[bytes] = []
    data: list[bytes] | None = None
    for line in lines:
        if not line:
            if data is not None:
                events.append(b"\n".join(data))
            data = None
            continue
        name, _, value = line.partition(b":")
        if not name:
            continue
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data = (data or []) + [value]
    return events, None if data is None else b"\n".join(data)


def test_unterminated_event_is_bounded() -> None:
    from gateway.core.stream.sse import SseTooLarge
    from gateway.limits import MAX_UPSTREAM_EVENT

    parser = SseParser()
    piece = b"data: " + b"x" * (1024 * 1024)
    with pytest.raises(SseTooLarge):
        for _ in range(MAX_UPSTREAM_EVENT // len(piece) + 2):
            parser.feed(piece)
    whole = SseParser()
    with pytest.raises(SseTooLarge):
        whole.feed(b"data: " + b"y" * (MAX_UPSTREAM_EVENT + 1))
