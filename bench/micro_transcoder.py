"""Micro-benchmark: the chosen transcoder vs the naive baseline, CPU only.

Replays upstream chat-completions SSE streams through ``gateway.core.stream.transcoder.Transcoder``
and ``bench.naive_transcoder.NaiveTranscoder`` (a whole request each time:
``start()``, the reads, ``finish()``) and prints, per stream and per feeding mode,
upstream events/s and µs per upstream event for both, and the ratio naive/chosen.

Feeding modes: ``whole`` gives the entire stream in one ``feed`` (many events per
read, the parser's best case); ``per-event`` gives one SSE event per ``feed``
(what a token-by-token upstream on a fast link looks like).

Streams: generated vLLM-shaped ones (64 / 512 text deltas of token-sized English
text, 256 CJK/emoji deltas, a tool call with 200 argument deltas, and the same 64 /
512 tokens as reasoning deltas, in ``reasoning_content`` and in ``reasoning``) and/or
the golden files in ``tests/data/streams``; ``--streams reasoning``: the reasoning
rows beside their text rows only.

    .venv/bin/python bench/micro_transcoder.py                # generated streams
    .venv/bin/python bench/micro_transcoder.py --streams all --repeat 9
"""

from __future__ import annotations

import argparse
import gc
import itertools
import pathlib
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.naive_transcoder import NaiveTranscoder  # noqa: E402
from gateway.core.stream.sse import SseParser  # noqa: E402
from gateway.core.stream.transcoder import Transcoder  # noqa: E402
from gateway.core.wire import output  # noqa: E402

GOLDEN = ROOT / "tests" / "data" / "streams"
_TEXT = (
    "the of and to in is that for it as was with be by on not he this are or his from at"
    " which but have an they you were her she there been one all we their has would when"
    " model server stream token latency gateway response request throughput answer question"
)
WORDS = _TEXT.split(" ")
ECHO = {"tools": [], "tool_choice": "auto", "parallel_tool_calls": True, "metadata": {}}
EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


# ---- streams ---------------------------------------------------------------------------


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    doc = {
        "id": "chatcmpl-8f2b1c7e4a9d4e0fa3b5c6d7e8f90a1b",
        "object": "chat.completion.chunk",
        "created": 1741476542,
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def _tail(finish: str) -> bytes:
    usage = {"prompt_tokens": 100, "completion_tokens": 64, "total_tokens": 164}
    doc = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": usage}
    return (
        _chunk({"content": ""}, finish)
        + b"data: "
        + orjson.dumps(doc)
        + b"\n\n"
        + b"data: [DONE]\n\n"
    )


def _tokens(n: int, rng: random.Random) -> list[str]:
    out = []
    for _ in range(n):
        word = rng.choice(WORDS)
        if rng.random() < 0.3 and len(word) > 4:  # a word split in two tokens
            cut = rng.randint(2, len(word) - 2)
            out += [" " + word[:cut], word[cut:]]
        else:
            out.append(" " + word + ("," if rng.random() < 0.08 else ""))
    return out[:n]


def text_stream(n: int) -> bytes:
    rng = random.Random(n)
    body = b"".join(_chunk({"content": t}) for t in _tokens(n, rng))
    return _chunk({"role": "assistant", "content": ""}) + body + _tail("stop")


def reasoning_stream(n: int, field: str = "reasoning_content") -> bytes:
    """``text_stream(n)``'s tokens as reasoning deltas, then one piece of text: a reasoning
    delta's cost beside a text delta's, on the same bytes but for the field name."""
    rng = random.Random(n)
    body = b"".join(_chunk({field: t}) for t in _tokens(n, rng))
    answer = _chunk({"content": " Done."})
    return _chunk({"role": "assistant", "content": ""}) + body + answer + _tail("stop")


def reasoning_streams() -> dict[str, bytes]:
    """The reasoning rows, each beside the text row it is measured against."""
    return {
        "text-64": text_stream(64),
        "reasoning-64": reasoning_stream(64),
        "text-512": text_stream(512),
        "reasoning-512": reasoning_stream(512),
        "reasoning-field-512": reasoning_stream(512, "reasoning"),
    }


def cjk_stream(n: int) -> bytes:
    rng = random.Random(n)
    alphabet = "\u4f60\u597d\u4e16\u754c\u6a21\u578b\u670d\u52a1\u5668\u3002\U0001f600\u00e9"
    tokens = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3))) for _ in range(n)]
    body = b"".join(_chunk({"content": t}) for t in tokens)
    return _chunk({"role": "assistant", "content": ""}) + body + _tail("stop")


def tool_stream(n: int) -> bytes:
    rng = random.Random(n)
    args = '{"query": "' + "".join(_tokens(n - 4, rng)) + '", "limit": 10}'
    step = max(1, len(args) // n)
    pieces = [args[i : i + step] for i in range(0, len(args), step)]
    first = {
        "index": 0,
        "id": "chatcmpl-tool-1",
        "type": "function",
        "function": {"name": "search"},
    }
    body = _chunk({"tool_calls": [first]}) + b"".join(
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in pieces
    )
    return _chunk({"role": "assistant", "content": ""}) + body + _tail("tool_calls")


def streams(which: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if which in ("generated", "all"):
        out["text-64"] = text_stream(64)
        out["text-512"] = text_stream(512)
        out["cjk-256"] = cjk_stream(256)
        out["tool-200"] = tool_stream(200)
    if which in ("generated", "all", "reasoning"):
        out.update(reasoning_streams())
    if which in ("golden", "all"):
        for path in sorted(GOLDEN.glob("*.sse")):
            out[path.stem] = path.read_bytes()
    return out


def per_event(data: bytes) -> list[bytes]:
    """One read per SSE event (the event's terminating blank line included)."""
    cuts = [m.end() for m in EVENT_END.finditer(data)]
    bounds = [0, *cuts] if not cuts or cuts[-1] == len(data) else [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def count_events(data: bytes) -> int:
    parser = SseParser()
    return len(parser.feed(data)) + (parser.flush() is not None)


# ---- timing ------------------------------------------------------------------------------


def request(impl: Any, base: dict, reads: list[bytes]) -> None:
    tx = impl(base, now=time.time)
    tx.start()
    for read in reads:
        tx.feed(read)
    tx.finish()


def measure(impls: list[Any], reads: list[bytes], args: argparse.Namespace) -> list[float]:
    """Median seconds per request for each implementation.

    Batches of the implementations alternate, so a change in machine load hits
    both alike; the clock is CPU time of this process by default (``--clock cpu``),
    which other processes on a busy machine do not inflate.
    """
    clock = time.process_time_ns if args.clock == "cpu" else time.perf_counter_ns
    base = output.response_base("resp_bench", 1700000000, "demo", ECHO)
    numbers = [_calibrate(lambda i=impl: request(i, base, reads), args.target) for impl in impls]
    samples: list[list[float]] = [[] for _ in impls]
    for _ in range(args.repeat):
        for impl, number, out in zip(impls, numbers, samples, strict=True):
            gc.collect()
            start = clock()
            for _ in range(number):
                request(impl, base, reads)
            out.append((clock() - start) / number / 1e9)
    return [statistics.median(s) for s in samples]


def _calibrate(call: Callable[[], None], target: float) -> int:
    """How many calls take about ``target`` seconds."""
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            call()
        elapsed = time.perf_counter() - start
        if elapsed >= target / 4:
            return max(1, int(number * target / elapsed))
        number *= 4


def reasoning_marginal(args: argparse.Namespace) -> list[str]:
    """CPU per delta, reasoning beside text: the extra time of a 1,024-delta answer over a
    64-delta one, per extra delta (a request's fixed costs cancel out; the reasoning
    answer's one piece of text too). The four streams' batches alternate, so a change in
    machine load hits all alike; the ratio is of the medians."""
    clock = time.process_time_ns if args.clock == "cpu" else time.perf_counter_ns
    base = output.response_base("resp_bench", 1700000000, "demo", ECHO)
    lines = []
    for mode in args.modes.split(","):
        cases = {
            (kind, n): ([make(n)] if mode == "whole" else per_event(make(n)))
            for kind, make in (("text", text_stream), ("reasoning", reasoning_stream))
            for n in (64, 1024)
        }
        numbers = {
            key: _calibrate(lambda r=reads: request(Transcoder, base, r), args.target)
            for key, reads in cases.items()
        }
        samples: dict[tuple[str, int], list[float]] = {key: [] for key in cases}
        for _ in range(args.repeat):
            for key, reads in cases.items():
                gc.collect()
                start = clock()
                for _ in range(numbers[key]):
                    request(Transcoder, base, reads)
                samples[key].append((clock() - start) / numbers[key])
        med = {key: statistics.median(v) for key, v in samples.items()}
        per = {k: (med[k, 1024] - med[k, 64]) / 960 for k in ("text", "reasoning")}
        lines.append(
            f"per delta, {mode:<9}: text {per['text']:.0f} ns, reasoning {per['reasoning']:.0f} ns,"
            f" reasoning / text {per['reasoning'] / per['text']:.2f}x (bar: within 1.1x)"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--streams", choices=["generated", "golden", "all", "reasoning"], default="generated"
    )
    parser.add_argument("--repeat", type=int, default=7, help="timed batches (median taken)")
    parser.add_argument("--target", type=float, default=0.1, help="seconds per batch")
    parser.add_argument("--modes", default="whole,per-event")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    args = parser.parse_args(argv)
    cpu0 = time.process_time()
    header = (
        f"{'stream':<22}{'mode':<10}{'events':>7}  {'chosen ev/s':>12}{'µs/ev':>8}"
        f"  {'naive ev/s':>12}{'µs/ev':>8}  {'naive/chosen':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, data in streams(args.streams).items():
        events = count_events(data)
        for mode in args.modes.split(","):
            reads = [data] if mode == "whole" else per_event(data)
            chosen, naive = measure([Transcoder, NaiveTranscoder], reads, args)
            print(
                f"{name:<22}{mode:<10}{events:>7}  {events / chosen:>12,.0f}"
                f"{chosen / events * 1e6:>8.2f}  {events / naive:>12,.0f}"
                f"{naive / events * 1e6:>8.2f}  {naive / chosen:>11.2f}x"
            )
    if args.streams in ("generated", "all", "reasoning"):
        print("\n" + "\n".join(reasoning_marginal(args)))
    print(
        f"\nPython {sys.version.split()[0]}, {args.clock} clock, median of {args.repeat};"
        f" µs/ev = time per request (start + reads + finish) / upstream events;"
        f" bench CPU time {time.process_time() - cpu0:.1f} s"
    )


if __name__ == "__main__":
    main()
