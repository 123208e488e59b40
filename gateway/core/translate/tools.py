"""Responses ``tools`` → chat tools, and the names that map the upstream's calls back.

- ``function`` tools go as they are (the flat Responses form, or the nested chat form).
- ``custom`` tools (free text or a grammar, e.g. Codex's ``apply_patch``) go as a chat
  function with one string parameter, ``input``; the format (its grammar's definition)
  is kept in the description, since chat servers cannot constrain a call to a grammar.
  The model's call comes back as a ``custom_tool_call`` whose ``input`` is that string.
- ``namespace`` tools: each of their functions (or custom tools) is exposed under a
  name of its own, ``<namespace>__<name>`` when that is a valid chat name of at most
  ``MAX_TOOL_NAME`` characters that nothing else in the request uses; otherwise the
  name cut to fit, with a digest of (namespace, name) that keeps it apart. A call
  comes back with the function's own ``name`` and its ``namespace``.
- Hosted tools (``web_search``, ``tool_search``, ``image_generation``, ...) cannot run
  behind a chat server: refused with a 400 that says how to proceed, or dropped when
  the deployment says so (``Capabilities.drop_hosted_tools``), listed in ``dropped``.

``ToolNames`` is the map both ways: the translation of replayed calls uses it, the
stream encoder looks up every call the upstream makes in it. Names are chosen in a
fixed order from the request's tools alone, so the same tools get the same names on
every turn of a conversation; the chat tools and the echoed ``tools`` keep the
request's order (a namespace's members where the namespace stood).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

import msgspec
import orjson

from gateway.core.capabilities import Capabilities
from gateway.core.wire.responses import CustomFormat, Tool, is_absent
from gateway.errors import InvalidRequest, Unsupported, missing
from gateway.limits import MAX_TOOL_NAME

_EMPTY_PARAMETERS = {"type": "object", "properties": {}}
# A custom tool's one parameter: the whole input as a string.
CUSTOM_PARAMETERS = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "The tool's whole input."}},
    "required": ["input"],
    "additionalProperties": False,
}
CLIENT_TOOLS = ("function", "custom", "namespace")
_VALID_NAME = re.compile(r"[A-Za-z0-9_-]+\Z")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_DIGEST = 10  # hex characters of the digest in a cut name
_NAME_PART = 40  # characters of the function's own name kept in a cut name


def hosted_tool_message(kind: str) -> str:
    return (
        f"Tools of type '{kind}' are hosted tools, run by OpenAI's servers; this gateway "
        "serves chat-completions models, which call only tools the client runs (function, "
        "custom and namespace tools). Leave it out of 'tools' (Codex CLI: "
        '-c web_search="disabled"), or have the gateway drop hosted tools: '
        'serve --hosted-tools drop, or hosted-tools = "drop" in the deployment\'s config.'
    )


class ToolRef(msgspec.Struct, frozen=True):
    """What an upstream function name stands for, when it is not a plain function."""

    kind: Literal["function", "custom"]
    name: str
    namespace: str | None = None


class ToolNames:
    """Upstream function names ↔ the request's custom and namespaced tools.

    Plain functions are not listed: a name without an entry is a function call.
    """

    __slots__ = ("by_upstream", "by_tool", "taken")

    def __init__(self) -> None:
        self.by_upstream: dict[str, ToolRef] = {}
        self.by_tool: dict[tuple[str | None, str], str] = {}  # (namespace, name) -> upstream
        self.taken: set[str] = set()  # every upstream name of the request

    def ref(self, upstream: str) -> ToolRef | None:
        return self.by_upstream.get(upstream)

    def upstream(self, name: str, namespace: str | None) -> str:
        """The upstream name of a tool (a replayed call's), listed or not."""
        if namespace is None:
            return name
        known = self.by_tool.get((namespace, name))
        return known if known is not None else namespaced_name(namespace, name, self.taken)

    def add(self, ref: ToolRef, upstream: str) -> None:
        self.taken.add(upstream)
        self.by_tool[(ref.namespace, ref.name)] = upstream
        if ref.kind == "custom" or ref.namespace is not None:
            self.by_upstream[upstream] = ref


NO_NAMES = ToolNames()  # a request without custom or namespace tools (never added to)


def namespaced_name(namespace: str, name: str, taken: set[str]) -> str:
    """The upstream name of ``namespace``'s tool ``name``: valid, at most
    ``MAX_TOOL_NAME`` characters, and not in ``taken``."""
    joint = namespace if namespace.endswith("__") else namespace + "__"
    plain = joint + name
    if len(plain) <= MAX_TOOL_NAME and _VALID_NAME.match(plain) and plain not in taken:
        return plain
    ns, own = _UNSAFE.sub("_", namespace), _UNSAFE.sub("_", name)[:_NAME_PART]
    head = ns[: MAX_TOOL_NAME - _DIGEST - 3 - len(own)]
    salt = 0
    while True:
        seed = f"{namespace}\x00{name}\x00{salt}".encode()
        digest = hashlib.blake2b(seed, digest_size=_DIGEST // 2).hexdigest()
        candidate = f"{head}__{own}_{digest}"
        if candidate not in taken:
            return candidate
        salt += 1


class ToolSet(msgspec.Struct):
    chat: list[dict]  # the chat request's tools
    echo: list[dict]  # the response's ``tools``
    names: ToolNames
    dropped: list[str]  # the types of the hosted tools dropped, in order


def to_tool_set(tools: list[Tool], caps: Capabilities) -> ToolSet:
    names = ToolNames()
    dropped: list[str] = []
    kept: list[tuple[int, Tool]] = []
    for i, tool in enumerate(tools):
        if tool.type in CLIENT_TOOLS:
            kept.append((i, tool))
        elif caps.drop_hosted_tools:
            dropped.append(tool.type)
        else:
            raise Unsupported(hosted_tool_message(tool.type), param=f"tools[{i}].type")
    # Names are chosen for the top-level tools first (they are sent as they are), then
    # for the namespaces' members (which must not take a top-level name); the tools go
    # upstream and are echoed in the request's order.
    chats: list[list[dict]] = [[] for _ in kept]
    echoes: list[dict] = [{} for _ in kept]
    for k, (i, tool) in enumerate(kept):
        if tool.type != "namespace":
            fn, ref = _top_level(tool, i)
            if ref.name in names.taken:
                raise InvalidRequest(
                    f"Duplicate tool name: '{ref.name}'.", param=f"tools[{i}].name"
                )
            names.add(ref, ref.name)
            chats[k].append(fn)
            echoes[k] = _echo(tool, ref.name)
    for k, (i, tool) in enumerate(kept):
        if tool.type == "namespace":
            members = _namespace(tool, i, names, chats[k])
            echoes[k] = {
                "type": "namespace",
                "name": tool.name,
                "description": tool.description or "",
                "tools": members,
            }
    chat = [fn for group in chats for fn in group]
    echo = echoes
    return ToolSet(chat, echo, names, dropped)


def _top_level(tool: Tool, i: int) -> tuple[dict, ToolRef]:
    if tool.type == "function" and tool.function is not None:  # the chat form, as given
        fn = tool.function
        chat = _function(fn.name, fn.description, fn.parameters, fn.strict)
        return chat, ToolRef("function", fn.name)
    if not tool.name:
        raise missing(f"tools[{i}].name")
    if tool.type == "custom":
        return _custom(tool.name, tool, f"tools[{i}]"), ToolRef("custom", tool.name)
    chat = _function(tool.name, tool.description, tool.parameters, tool.strict)
    return chat, ToolRef("function", tool.name)


def _namespace(tool: Tool, i: int, names: ToolNames, chat: list[dict]) -> list[dict]:
    if not tool.name:
        raise missing(f"tools[{i}].name")
    if not tool.tools:
        raise missing(f"tools[{i}].tools")
    echo = []
    for j, member in enumerate(tool.tools):
        where = f"tools[{i}].tools[{j}]"
        if member.type not in ("function", "custom"):
            raise Unsupported(
                f"A namespace may hold function and custom tools, not '{member.type}'.",
                param=f"{where}.type",
            )
        if not member.name:
            raise missing(f"{where}.name")
        kind: Literal["function", "custom"] = "custom" if member.type == "custom" else "function"
        ref = ToolRef(kind, member.name, tool.name)
        if (tool.name, member.name) in names.by_tool:
            raise InvalidRequest(
                f"Duplicate tool name in namespace '{tool.name}': '{member.name}'.",
                param=f"{where}.name",
            )
        upstream = namespaced_name(tool.name, member.name, names.taken)
        names.add(ref, upstream)
        if kind == "custom":
            chat.append(_custom(upstream, member, where))
        else:
            parameters, strict = member.parameters, member.strict
            chat.append(_function(upstream, member.description, parameters, strict))
        echo.append(_echo(member, member.name))
    return echo


def _function(name: str, description: str | None, parameters: msgspec.Raw, strict: Any) -> dict:
    function: dict[str, Any] = {"name": name}
    if description is not None:
        function["description"] = description
    has_params = not is_absent(parameters)
    function["parameters"] = orjson.Fragment(bytes(parameters)) if has_params else _EMPTY_PARAMETERS
    if strict is not msgspec.UNSET and strict is not None:
        function["strict"] = strict
    return {"type": "function", "function": function}


def _custom(upstream: str, tool: Tool, where: str) -> dict:
    fmt = tool.format
    text = tool.description or ""
    if fmt is None or fmt.type == "text":
        how = "Its input is free text: pass it whole, as is, in the string argument `input`."
    elif fmt.type == "grammar":
        if not fmt.definition:
            raise missing(f"{where}.format.definition")
        syntax = fmt.syntax or "lark"
        how = (
            f"Its input must follow this {syntax} grammar; pass it whole, as is, in the "
            f"string argument `input`:\n{fmt.definition}"
        )
    else:
        raise InvalidRequest(
            f"Invalid value: '{fmt.type}'. Supported values are: 'text' and 'grammar'.",
            param=f"{where}.format.type",
            code="invalid_value",
        )
    description = f"{text}\n\n{how}" if text else how
    function = {"name": upstream, "description": description, "parameters": CUSTOM_PARAMETERS}
    return {"type": "function", "function": function}


def _format_echo(fmt: CustomFormat | None) -> dict:
    if fmt is None or fmt.type == "text":
        return {"type": "text"}
    return {"type": "grammar", "syntax": fmt.syntax or "lark", "definition": fmt.definition}


def _echo(tool: Tool, name: str) -> dict:
    if tool.type == "custom":
        return {
            "type": "custom",
            "name": name,
            "description": tool.description,
            "format": _format_echo(tool.format),
        }
    if tool.function is not None:
        fn = tool.function
        description, parameters, strict = fn.description, fn.parameters, fn.strict
    else:
        description, parameters, strict = tool.description, tool.parameters, tool.strict
    return {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": None if is_absent(parameters) else orjson.Fragment(bytes(parameters)),
        "strict": True if strict is msgspec.UNSET or strict is None else strict,
    }
