"""The demo upstream's answers (``demo.upstream`` serves them): what it says to a chat
request, and that answer as chat-completions bytes, a whole body or every SSE frame of
a stream.

Answer rules, first match wins:

0. The last message is the gateway's default compaction prompt (it starts with
   ``COMPACTION_REQUEST``): a short summary of the conversation before it
   (``compaction_summary``), whatever the tools and the format.
1. ``tools`` present, last message from the user, ``tool_choice`` not
   ``"none"``: call the chosen (or first) tool with arguments generated from
   its JSON schema; ``finish_reason: "tool_calls"``.
2. ``response_format`` ``json_schema``: a JSON document generated from the
   schema; ``json_object``: ``{"answer": "demo"}``.
3. Last message from a tool: ``"The tool said: <content>"``.
4. Otherwise a greeting that echoes the last user text and counts its images.

Prose is cut into at most ``deltas`` pieces on word boundaries; JSON answers
and tool arguments by characters. ``max_tokens`` / ``max_completion_tokens``
below the piece count truncate the answer with ``finish_reason: "length"``.
Usage: prompt tokens are whitespace words in all messages, completion tokens are pieces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.demo import reasoning as thinking

BASE_TEXT = "Hello from the demo upstream (a fake model)."
FIXED_TEXT = BASE_TEXT + " This is the fixed benchmark answer."
FIXED_PROMPT_TOKENS = 8
ECHO_LIMIT = 200  # characters of user / tool text echoed back
FILLER = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")
DONE_FRAME = b"data: [DONE]\n\n"
_TOKEN = re.compile(r"\s*\S+\s*|\s+")

Json = dict[str, Any]
# The first words of the gateway's default compaction prompt (gateway.config's
# COMPACTION_PROMPT: the demo imports nothing of the gateway; tests/unit/test_demo.py
# checks that the two agree).
COMPACTION_REQUEST = "You are compacting this conversation"


@dataclass(slots=True)
class DemoAnswer:
    pieces: list[str]
    finish_reason: str
    prompt_tokens: int
    tool: tuple[str, str] | None = None  # (call id, function name)
    reasoning: list[str] = field(default_factory=list)  # pieces, streamed before the answer
    reasoning_field: str = "reasoning_content"


class BadRequest(Exception):
    def __init__(self, status: int, message: str, param: str | None, code: str | None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


# -- text generation ---------------------------------------------------------


def pad_words(text: str, words: int) -> str:
    if words <= 0:
        return text
    have = text.split()
    extra = [FILLER[i % len(FILLER)] for i in range(max(0, words - len(have)))]
    return " ".join((have + extra)[:words])


def split_pieces(text: str, n: int, words: bool = True) -> list[str]:
    """Cut ``text`` into at most ``n`` contiguous pieces, on word boundaries or by characters."""
    tokens: list[str] = _TOKEN.findall(text) if words else list(text)
    n = min(n, len(tokens))
    size = len(tokens)
    return ["".join(tokens[i * size // n : (i + 1) * size // n]) for i in range(n)]


def content_text(content: Any) -> tuple[str, int]:
    """(joined text, image count) of a chat message ``content``."""
    if isinstance(content, str):
        return content, 0
    texts: list[str] = []
    images = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "image_url":
                images += 1
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
    return " ".join(texts), images


def sample_json(schema: Any, root: Any, depth: int = 0) -> Any:
    """A value that satisfies the common parts of a JSON schema."""
    if not isinstance(schema, dict) or depth > 16:
        return "demo"
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return sample_json(resolve_ref(root, ref), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            real = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return sample_json((real or options)[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties")
        out = {}
        if isinstance(props, dict):
            out = {name: sample_json(sub, root, depth + 1) for name, sub in props.items()}
        for name in schema.get("required") or ():
            out.setdefault(name, "demo")
        return out
    if kind == "array":
        return [sample_json(schema.get("items", {}), root, depth + 1)]
    scalars = {"string": "demo", "integer": 1, "number": 1.5, "boolean": True, "null": None}
    return scalars.get(kind, "demo")


def resolve_ref(root: Any, ref: str) -> Any:
    node = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not isinstance(node, dict):
            return {}
        node = node.get(part.replace("~1", "/").replace("~0", "~"), {})
    return node


def pick_tool(tools: Any, choice: Any) -> Json | None:
    if not isinstance(tools, list) or choice == "none":
        return None
    wanted = None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        wanted = choice["function"].get("name")
    for tool in tools:
        func = tool.get("function") if isinstance(tool, dict) else None
        name = func.get("name") if isinstance(func, dict) else None
        if isinstance(name, str) and wanted in (None, name):
            return func
    return None


def asks_compaction(messages: list[Json]) -> bool:
    """Is the last message the gateway's default compaction prompt?"""
    text = messages[-1].get("content")
    return isinstance(text, str) and text.startswith(COMPACTION_REQUEST)


def compaction_summary(messages: list[Json]) -> str:
    """A deterministic summary of the messages before the compaction prompt: how many
    there were, the first and the last user text, and the tools called."""
    earlier = messages[:-1]
    users = [content_text(m.get("content"))[0] for m in earlier if m.get("role") == "user"]
    calls = [
        str(call.get("function", {}).get("name"))
        for m in earlier
        if m.get("role") == "assistant"
        for call in m.get("tool_calls") or ()
        if isinstance(call, dict)
    ]
    lines = [f"Summary of the conversation so far (demo): {len(earlier)} messages."]
    if users:
        lines.append(f"The user first asked: {users[0][:ECHO_LIMIT]}")
        if len(users) > 1:
            lines.append(f"The user last said: {users[-1][:ECHO_LIMIT]}")
    if calls:
        names = ", ".join(dict.fromkeys(calls))
        lines.append(f"Tools called: {len(calls)} ({names}).")
    return "\n".join(lines)


def answer_text(body: Json, messages: list[Json], words: int) -> tuple[str, bool]:
    """The answer, and whether it is prose (split by words) rather than JSON (by characters)."""
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return orjson.dumps(sample_json(schema or {}, schema)).decode(), False
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return '{"answer": "demo"}', False
    last = messages[-1]
    if last.get("role") == "tool":
        return "The tool said: " + content_text(last.get("content"))[0][:ECHO_LIMIT], True
    user: Json = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    said, images = content_text(user.get("content"))
    text = BASE_TEXT
    if images:
        text += f" I see {images} image{'' if images == 1 else 's'}."
    return pad_words(f"{text} You said: {said[:ECHO_LIMIT]}", words), True


def token_limit(body: Json) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BadRequest(400, f"'{key}' must be a positive integer", key, "invalid_value")
        return value
    return None


def plan_answer(body: Json, messages: list[Json], deltas: int, words: int, n: int) -> DemoAnswer:
    prompt = sum(len(content_text(m.get("content"))[0].split()) for m in messages)
    limit = token_limit(body)
    if asks_compaction(messages):
        return DemoAnswer(split_pieces(compaction_summary(messages), deltas), "stop", prompt)
    func = pick_tool(body.get("tools"), body.get("tool_choice", "auto"))
    if func is not None and messages[-1].get("role") == "user":
        params = func.get("parameters") or {"type": "object", "properties": {}}
        args = orjson.dumps(sample_json(params, params)).decode()
        tool = (f"call_demo_{n}", func["name"])
        return DemoAnswer(split_pieces(args, deltas, False), "tool_calls", prompt, tool)
    text, prose = answer_text(body, messages, words)
    pieces = split_pieces(text, deltas, prose)
    if limit is not None and limit < len(pieces):
        return DemoAnswer(pieces[:limit], "length", prompt)
    return DemoAnswer(pieces, "stop", prompt)


# -- wire encoding -----------------------------------------------------------


def usage(answer: DemoAnswer) -> dict[str, int]:
    done = len(answer.pieces)
    total = answer.prompt_tokens + done
    counts = {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": done,
        "total_tokens": total,
    }
    return thinking.usage_with(counts, len(answer.reasoning))


def completion_body(answer: DemoAnswer, cid: str, created: int, model: str) -> bytes:
    text = "".join(answer.pieces)
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if answer.tool is not None:
        function = {"name": answer.tool[1], "arguments": text}
        call = {"id": answer.tool[0], "type": "function", "function": function}
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
    if answer.reasoning:
        message[answer.reasoning_field] = "".join(answer.reasoning)
    finish = answer.finish_reason
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    head = {"id": cid, "object": "chat.completion", "created": created, "model": model}
    return orjson.dumps({**head, "choices": [choice], "usage": usage(answer)})


def stream_frames(
    answer: DemoAnswer, cid: str, created: int, model: str, usage_: bool
) -> list[bytes]:
    """Every SSE frame of one streamed answer, ``data: [DONE]`` included."""
    head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}

    def frame(delta: Json, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"

    frames = [frame({"role": "assistant", "content": ""})]
    frames.extend(frame({answer.reasoning_field: piece}) for piece in answer.reasoning)
    if answer.tool is not None:
        function = {"name": answer.tool[1], "arguments": ""}
        opening = {"index": 0, "id": answer.tool[0], "type": "function", "function": function}
        frames.append(frame({"tool_calls": [opening]}))
        for piece in answer.pieces:
            frames.append(frame({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    else:
        frames.extend(frame({"content": piece}) for piece in answer.pieces)
    frames.append(frame({}, answer.finish_reason))
    if usage_:
        tail = {**head, "choices": [], "usage": usage(answer)}
        frames.append(b"data: " + orjson.dumps(tail) + b"\n\n")
    frames.append(DONE_FRAME)
    return frames
