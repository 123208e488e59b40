"""The ``codex`` row of bench/run.py: gateway CPU per request at Codex CLI's sizes.

Codex sends every turn whole: tens of KB of history (developer instructions, tool calls
and their outputs, reasoning, patches) and dozens of tools. ``codex_request`` builds
one such request (synthetic text of those shapes: about 60 KB of ``input``, 30 tools of
which 2 custom and 8 in 2 namespaces, Codex's other fields). In each repetition the row
sends, at the same fixed rate (``--codex-rate``, ``--codex-stream-rate``), that
request and the small one of the ``cpu`` row to each gateway series (non-streaming,
then streaming), and reads the gateway's CPU time around each run: the CPU per
request side by side, and their ratio. The upstream is the fixed demo, so the
difference is the translation of the request (the answer is the same short text).
"""

from __future__ import annotations

import json
from typing import Any

import harness as h
from report import fmt

from rows.base import FAILURES, PATHS, Bench, Row, Summary, body

WORDS = [
    "the",
    "build",
    "step",
    "runs",
    "each",
    "test",
    "file",
    "then",
    "reports",
    "a",
    "summary",
    "of",
    "failures",
    "and",
    "timings",
]
METRICS = [
    ("us_small", "CPU us/request, small"),
    ("us_codex", "CPU us/request, Codex-sized"),
    ("ratio", "Codex / small"),
]


def prose(n: int, seed: int) -> str:
    """About ``n`` characters of words (deterministic)."""
    out: list[str] = []
    size, k = 0, seed
    while size < n:
        word = WORDS[k % len(WORDS)]
        out.append(word)
        size += len(word) + 1
        k = k * 7 + 3
    return " ".join(out)


def _schema(k: int) -> dict[str, Any]:
    props = {f"arg_{j}": {"type": "string", "description": prose(60, k + j)} for j in range(4)}
    props["count"] = {"type": "integer", "description": "How many."}
    return {
        "type": "object",
        "properties": props,
        "required": ["arg_0"],
        "additionalProperties": False,
    }


def tools() -> list[dict[str, Any]]:
    """30 callable tools: 20 functions, 2 custom, 2 namespaces of 4 functions."""
    out: list[dict[str, Any]] = [
        {"type": "function", "name": f"tool_{k:02d}", "description": prose(160, k),
         "strict": False, "parameters": _schema(k)}
        for k in range(20)
    ]  # fmt: skip
    grammar = "start: begin hunk+ end\n" + "\n".join(
        f'rule_{k}: "{prose(40, k)}" LF' for k in range(20)
    )
    out.append(
        {
            "type": "custom",
            "name": "apply_patch",
            "description": prose(200, 1),
            "format": {"type": "grammar", "syntax": "lark", "definition": grammar},
        }
    )
    out.append({"type": "custom", "name": "js_repl", "description": prose(120, 2),
                "format": {"type": "text"}})  # fmt: skip
    for ns in ("multi_agent_v1", "mcp__server_with_a_long_name__"):
        members = [
            {"type": "function", "name": f"action_{j}", "description": prose(120, j),
             "strict": False, "parameters": _schema(j)}
            for j in range(4)
        ]  # fmt: skip
        out.append({"type": "namespace", "name": ns, "description": prose(80, 3), "tools": members})
    return out


def history(rounds: int = 14) -> list[dict[str, Any]]:
    """Developer and user messages, then rounds of reasoning, commentary, a shell call
    and its output; every fourth round a patch and its result."""
    items: list[dict[str, Any]] = [
        {"type": "message", "id": "msg_dev_0", "role": "developer",
         "content": [{"type": "input_text", "text": prose(12000, 5)}]},
        {"type": "message", "id": "msg_dev_1", "role": "developer",
         "content": [{"type": "input_text", "text": prose(2000, 6)}]},
        {"type": "message", "id": "msg_env", "role": "user",
         "content": [{"type": "input_text", "text": prose(800, 7)}]},
        {"type": "message", "id": "msg_task", "role": "user",
         "content": [{"type": "input_text", "text": prose(300, 8)}]},
    ]  # fmt: skip
    for r in range(rounds):
        items.append(
            {
                "type": "reasoning",
                "id": f"rs_{r}",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": prose(300, r)}],
            }
        )
        items.append(
            {
                "type": "message",
                "id": f"msg_c{r}",
                "role": "assistant",
                "phase": "commentary",
                "content": [{"type": "output_text", "text": prose(120, r + 1)}],
            }
        )
        args = json.dumps({"cmd": f"rg -n pattern_{r} src", "yield_time_ms": 10000})
        items.append(
            {
                "type": "function_call",
                "id": f"fc_{r}",
                "call_id": f"call_{r}",
                "name": "tool_00",
                "arguments": args,
                "status": "completed",
            }
        )
        items.append(
            {
                "type": "function_call_output",
                "id": f"fco_{r}",
                "call_id": f"call_{r}",
                "output": prose(2000, r + 2),
            }
        )
        if r % 4 == 3:
            patch = (
                "*** Begin Patch\n*** Update File: src/m.py\n@@\n"
                + "\n".join(f"-{prose(50, r + j)}\n+{prose(50, r + j + 1)}" for j in range(12))
                + "\n*** End Patch\n"
            )
            items.append(
                {
                    "type": "custom_tool_call",
                    "id": f"ctc_{r}",
                    "call_id": f"cp_{r}",
                    "name": "apply_patch",
                    "input": patch,
                    "status": "completed",
                }
            )
            items.append(
                {
                    "type": "custom_tool_call_output",
                    "call_id": f"cp_{r}",
                    "output": "Success. Updated the following files:\nM src/m.py",
                }
            )
    items.append(
        {
            "type": "message",
            "id": "msg_final",
            "role": "assistant",
            "phase": "final_answer",
            "content": [{"type": "output_text", "text": prose(400, 9)}],
        }
    )
    items.append(
        {
            "type": "message",
            "id": "msg_next",
            "role": "user",
            "content": [{"type": "input_text", "text": "now run the tests"}],
        }
    )
    return items  # fmt: skip


def codex_request(stream: bool, model: str = "demo") -> dict[str, Any]:
    return {
        "model": model,
        "input": history(),
        "tools": tools(),
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": stream,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0199a2b3-bench",
        "text": {"verbosity": "low"},
        "client_metadata": {"session_id": "0199a2b3-bench"},
    }


class Codex(Row):
    name = "codex"

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        self.small = {s: body("responses", s) for s in (False, True)}
        self.path = PATHS["responses"]
        self.big = {s: json.dumps(codex_request(s)).encode() for s in (False, True)}

    def run(self, rep: int) -> None:
        b = self.bench
        for series in b.live:
            target, api = series.split()
            if api != "responses":
                continue
            try:
                b.res.add("codex", series, self.measure(b.pid(target), b.ports[target]))
            except FAILURES as exc:
                b.res.fail("codex", series, str(exc))

    def measure(self, pid: int, port: int) -> dict[str, float]:
        a = self.bench.args
        out: dict[str, float] = {}
        for stream, rate, tag in ((False, a.codex_rate, ""), (True, a.codex_stream_rate, "_s")):
            small = self.cpu_per_request(pid, port, self.small[stream], rate)
            big = self.cpu_per_request(pid, port, self.big[stream], rate)
            out |= {f"us_small{tag}": small, f"us_codex{tag}": big, f"ratio{tag}": big / small}
        return out

    def table(self, summary: Summary) -> list[str]:
        return table(summary)

    def cpu_per_request(self, pid: int, port: int, payload: bytes, rate: float) -> float:
        b = self.bench
        seconds = b.args.cpu_duration
        cpu, result = h.fixed_rate(b.pin_load, pid, port, self.path, payload, rate, seconds)
        if result["failed"] or result["dropped"]:
            b.res.notes.append(f"codex {len(payload)} B at {rate}/s: {result}")
        return cpu * 1e6 / result["ok"]


def table(summary: Summary) -> list[str]:
    row = summary.get("codex")
    if not row:
        return []
    size = len(json.dumps(codex_request(False))) / 1024
    lines = ["", f"codex (POST /v1/responses: a {size:.0f} KB request with 30 tools beside the "
             "small one, at the same fixed rate; gateway CPU per request)"]  # fmt: skip
    lines.append(f"{'series':<20}{'':<12}" + "".join(f"{label:>30}" for _, label in METRICS))
    for series, stats in row.items():
        for tag, mode in (("", "non-stream"), ("_s", "stream")):
            cells = [f"{series:<20}{mode:<12}"]
            for key, _ in METRICS:
                stat = stats.get(key + tag)
                value = fmt(stat["median"]) + ("x" if key == "ratio" else "") if stat else "-"
                cells.append(f"{value:>30}")
            lines.append("".join(cells))
    return lines
