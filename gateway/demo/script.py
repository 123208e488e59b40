"""The demo upstream's scripted mode: answers read from a script of turns.

A script is a JSON list of turns (``--script FILE`` for ``python -m gateway.demo``, or
``DemoOptions.script`` in-process); each turn answers with any of::

    {"reasoning": "thinking text",                       # streamed as reasoning_content
     "text": "what the model says",
     "calls": [{"name": "exec_command", "arguments": {"cmd": "ls"}},
               {"name": "apply_patch", "input": "*** Begin Patch\\n..."}]}

``input`` is a custom tool's input: sent as the arguments ``{"input": ...}``, the form
in which the gateway offers custom tools upstream. A call's ``name`` may be a tool's
own name where the request offers it under another (a namespace's function): the
request's tool whose name ends with ``__<name>`` is called then.

Which turn answers: the one numbered by how many tool results (``role: "tool"``
messages) the request holds, the last one once they run out. So an agent that runs
each call and asks again walks the script: call a shell command, then edit a file,
then say it is done; a later conversation turn (more history, no new results) gets
the last answer again.

The answer streams the way vLLM streams: reasoning, then text, then the calls, each
in a few pieces; a turn with calls finishes with ``tool_calls``.
"""

from __future__ import annotations

from typing import Any

import orjson

Json = dict[str, Any]
PIECES = 4  # deltas per reasoning, text and call arguments


class ScriptError(ValueError):
    pass


def parse_script(data: bytes | str | list) -> list[Json]:
    """A script's turns, checked: a list of objects with reasoning / text / calls."""
    turns = orjson.loads(data) if isinstance(data, (bytes, str)) else data
    if not isinstance(turns, list) or not turns:
        raise ScriptError("a script is a non-empty JSON list of turns")
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict) or not set(turn) <= {"reasoning", "text", "calls"}:
            raise ScriptError(f"turn {k}: an object with reasoning, text and/or calls")
        for call in turn.get("calls") or ():
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise ScriptError(f"turn {k}: every call needs a name")
            if "input" in call and not isinstance(call["input"], str):
                raise ScriptError(f"turn {k}: a call's input is a string")
    return turns


def choose(turns: list[Json], messages: list[Json]) -> tuple[int, Json]:
    results = sum(1 for m in messages if m.get("role") == "tool")
    index = min(results, len(turns) - 1)
    return index, turns[index]


def _pieces(text: str, n: int = PIECES) -> list[str]:
    size = max(1, -(-len(text) // n))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _tool_name(name: str, body: Json) -> str:
    offered = [
        t["function"]["name"]
        for t in body.get("tools") or ()
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    if name in offered:
        return name
    return next((n for n in offered if n.endswith("__" + name)), name)


def _calls(turn: Json, body: Json, index: int) -> list[tuple[str, str, str]]:
    """(call id, function name, arguments) of a turn's calls."""
    out = []
    for k, call in enumerate(turn.get("calls") or ()):
        if "input" in call:
            arguments = orjson.dumps({"input": call["input"]}).decode()
        else:
            arguments = orjson.dumps(call.get("arguments") or {}).decode()
        out.append((f"call_script_{index}_{k}", _tool_name(call["name"], body), arguments))
    return out


def _usage(turn: Json, messages: list[Json]) -> Json:
    prompt = sum(len(str(m.get("content") or "").split()) for m in messages)
    done = len(str(turn.get("text", "")).split()) + len(turn.get("calls") or ())
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


def completion_body(turns: list[Json], body: Json, cid: str, created: int) -> bytes:
    """The non-streamed answer of the turn the request is at."""
    messages = body["messages"]
    index, turn = choose(turns, messages)
    message: Json = {"role": "assistant", "content": turn.get("text")}
    if turn.get("reasoning"):
        message["reasoning_content"] = turn["reasoning"]
    calls = _calls(turn, body, index)
    if calls:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
            for i, n, a in calls
        ]
    choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
    head = {"id": cid, "object": "chat.completion", "created": created, "model": body["model"]}
    return orjson.dumps({**head, "choices": [choice], "usage": _usage(turn, messages)})


def stream_frames(turns: list[Json], body: Json, cid: str, created: int) -> list[bytes]:
    """Every SSE frame of the streamed answer, ``data: [DONE]`` included."""
    messages = body["messages"]
    index, turn = choose(turns, messages)
    head = {"id": cid, "object": "chat.completion.chunk", "created": created}
    head["model"] = body["model"]

    def frame(delta: Json, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"

    frames = [frame({"role": "assistant", "content": ""})]
    frames += [frame({"reasoning_content": p}) for p in _pieces(turn.get("reasoning") or "")]
    frames += [frame({"content": p}) for p in _pieces(turn.get("text") or "")]
    calls = _calls(turn, body, index)
    for k, (call_id, name, arguments) in enumerate(calls):
        function = {"name": name, "arguments": ""}
        opening = {"index": k, "id": call_id, "type": "function", "function": function}
        frames.append(frame({"tool_calls": [opening]}))
        for piece in _pieces(arguments):
            frames.append(frame({"tool_calls": [{"index": k, "function": {"arguments": piece}}]}))
    frames.append(frame({}, "tool_calls" if calls else "stop"))
    if (body.get("stream_options") or {}).get("include_usage") is True:
        tail = {**head, "choices": [], "usage": _usage(turn, messages)}
        frames.append(b"data: " + orjson.dumps(tail) + b"\n\n")
    frames.append(b"data: [DONE]\n\n")
    return frames
