"""The request side of what Codex CLI sends: custom, namespace and hosted tools, the
names namespaced functions get upstream (valid, within 64 characters, collision-free,
the same on every turn, mapped back), and the input items of a Codex history."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from gateway.core.capabilities import Capabilities
from gateway.core.translate.inputs import IMAGE_OMITTED
from gateway.core.translate.request import to_chat_request
from gateway.core.translate.tools import CUSTOM_PARAMETERS, namespaced_name
from gateway.core.wire.responses import REQUEST_DECODER
from gateway.errors import InvalidRequest, Unsupported
from gateway.limits import MAX_TOOL_NAME

CAPS = Capabilities()
CHAT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
GRAMMAR = 'start: begin hunk+ end\nbegin: "*** Begin Patch" LF\n'
APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files with a patch.",
    "format": {"type": "grammar", "syntax": "lark", "definition": GRAMMAR},
}
EXEC = {
    "type": "function",
    "name": "exec_command",
    "description": "Run a command.",
    "strict": False,
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
}


def translate(body: dict, caps: Capabilities = CAPS) -> tuple[dict, dict, Any]:
    req = REQUEST_DECODER.decode(orjson.dumps({"model": "m", **body}))
    chat, echo, tools = to_chat_request(req, caps, "up", stream=True)
    return orjson.loads(orjson.dumps(chat)), orjson.loads(orjson.dumps(echo)), tools


def test_custom_tool_is_a_function_with_one_string_input() -> None:
    chat, echo, tools = translate({"input": "hi", "tools": [EXEC, APPLY_PATCH]})
    function = chat["tools"][1]["function"]
    assert function["name"] == "apply_patch"
    assert function["parameters"] == CUSTOM_PARAMETERS
    assert function["description"].startswith("Edit files with a patch.\n\n")
    assert GRAMMAR in function["description"] and "lark" in function["description"]
    assert echo["tools"][1] == {
        "type": "custom",
        "name": "apply_patch",
        "description": "Edit files with a patch.",
        "format": {"type": "grammar", "syntax": "lark", "definition": GRAMMAR},
    }
    ref = tools.names.ref("apply_patch")
    assert (ref.kind, ref.name, ref.namespace) == ("custom", "apply_patch", None)
    assert tools.names.ref("exec_command") is None  # plain functions are not mapped


def test_freeform_custom_tool() -> None:
    tool = {"type": "custom", "name": "note", "format": {"type": "text"}}
    chat, echo, _ = translate({"input": "hi", "tools": [tool]})
    assert "free text" in chat["tools"][0]["function"]["description"]
    assert echo["tools"][0]["format"] == {"type": "text"}


def namespace(name: str, functions: list[str], custom: bool = False) -> dict:
    members = [{"type": "function", "name": f, "parameters": {"type": "object"}} for f in functions]
    if custom:
        members.append({"type": "custom", "name": "patch", "description": "p"})
    return {"type": "namespace", "name": name, "description": f"{name} tools", "tools": members}


def test_namespace_functions_are_exposed_under_their_own_names() -> None:
    tools = [EXEC, namespace("multi_agent_v1", ["spawn_agent", "close_agent"], custom=True)]
    chat, echo, got = translate({"input": "hi", "tools": tools})
    names = [t["function"]["name"] for t in chat["tools"]]
    assert names == [
        "exec_command",
        "multi_agent_v1__spawn_agent",
        "multi_agent_v1__close_agent",
        "multi_agent_v1__patch",
    ]
    assert chat["tools"][3]["function"]["parameters"] == CUSTOM_PARAMETERS
    ref = got.names.ref("multi_agent_v1__close_agent")
    assert (ref.kind, ref.name, ref.namespace) == ("function", "close_agent", "multi_agent_v1")
    assert got.names.ref("multi_agent_v1__patch").kind == "custom"
    assert echo["tools"][1]["type"] == "namespace"
    assert [t["name"] for t in echo["tools"][1]["tools"]] == ["spawn_agent", "close_agent", "patch"]


def test_tools_keep_the_request_order_upstream_and_in_the_echo() -> None:
    """A namespace's members go where the namespace stood; a top-level tool named like a
    namespace member, listed after it, keeps its name (the member gets another)."""
    ns = {
        "type": "namespace",
        "name": "files",
        "description": "File tools.",
        "tools": [
            {"type": "function", "name": "read", "parameters": {"type": "object"}},
            {"type": "custom", "name": "write"},
        ],
    }
    clash = {"type": "function", "name": "files__read", "parameters": {"type": "object"}}
    tools_in = [EXEC, ns, APPLY_PATCH, clash]
    chat, echo, tools = translate({"input": "hi", "tools": tools_in})
    names = [t["function"]["name"] for t in chat["tools"]]
    assert names[0] == "exec_command" and names[3:] == ["apply_patch", "files__read"]
    assert names[2] == "files__write"
    assert names[1] != "files__read" and names[1].startswith("files__read_")  # (the digest)
    ref = tools.names.ref(names[1])
    assert (ref.kind, ref.name, ref.namespace) == ("function", "read", "files")
    assert tools.names.ref("files__read") is None  # the top-level function
    assert [(t["type"], t["name"]) for t in echo["tools"]] == [
        ("function", "exec_command"),
        ("namespace", "files"),
        ("custom", "apply_patch"),
        ("function", "files__read"),
    ]
    assert [t["name"] for t in echo["tools"][1]["tools"]] == ["read", "write"]


def test_many_long_namespaces_stay_valid_distinct_and_reversible() -> None:
    """60 namespaces of long, similar names (some with characters chat names may not
    hold), 8 long functions each, and plain functions named like the obvious upstream
    names: every upstream name is a valid chat name of at most 64 characters, none
    repeats, each maps back to its (namespace, name), and a second translation of the
    same tools gives the same names (a conversation's turns agree)."""
    long_ns = [f"mcp__{'very_long_server_name_' * 3}{k:02d}__" for k in range(40)]
    odd_ns = [f"mcp.server/{k} with spaces" for k in range(20)]
    functions = [f"{'function_with_a_long_descriptive_name_' * 2}{j}" for j in range(8)]
    clashes = [{"type": "function", "name": "srv__f0"}, {"type": "function", "name": "srv__f1"}]
    tools = clashes + [namespace(ns, functions) for ns in long_ns + odd_ns]
    tools.append(namespace("srv", ["f0", "f1", "f2"]))
    chat, _, got = translate({"input": "hi", "tools": tools})
    names = [t["function"]["name"] for t in chat["tools"]]
    assert len(names) == 2 + 60 * 8 + 3
    assert len(set(names)) == len(names)
    assert all(CHAT_NAME.match(n) for n in names), [n for n in names if not CHAT_NAME.match(n)]
    assert max(map(len, names)) <= MAX_TOOL_NAME
    assert names[:2] == ["srv__f0", "srv__f1"]  # the plain functions keep theirs
    assert names[-1] == "srv__f2"  # free: the obvious name
    for ns in long_ns + odd_ns + ["srv"]:
        for function in functions if ns != "srv" else ["f0", "f1", "f2"]:
            upstream = got.names.upstream(function, ns)
            ref = got.names.ref(upstream)
            assert (ref.name, ref.namespace) == (function, ns)
    _, _, again = translate({"input": "hi", "tools": tools})
    assert again.names.by_upstream == got.names.by_upstream


def test_namespaced_name_avoids_what_is_taken() -> None:
    taken = {"ns__f"}
    other = namespaced_name("ns", "f", taken)
    assert other != "ns__f" and other.startswith("ns__f_") and CHAT_NAME.match(other)
    assert namespaced_name("ns", "f", taken | {other}) not in taken | {other}


@pytest.mark.parametrize("kind", ["web_search", "tool_search", "image_generation", "mcp"])
def test_hosted_tools_are_refused_with_the_way_out(kind: str) -> None:
    with pytest.raises(Unsupported) as info:
        translate({"input": "hi", "tools": [EXEC, {"type": kind}]})
    assert info.value.param == "tools[1].type"
    message = info.value.message
    assert f"'{kind}'" in message and 'web_search="disabled"' in message
    assert "--hosted-tools drop" in message


def test_hosted_tools_dropped_where_the_deployment_says_so() -> None:
    tools = [{"type": "web_search"}, EXEC, {"type": "tool_search"}, APPLY_PATCH]
    chat, echo, got = translate(
        {"input": "hi", "tools": tools}, Capabilities(drop_hosted_tools=True)
    )
    assert [t["function"]["name"] for t in chat["tools"]] == ["exec_command", "apply_patch"]
    assert got.dropped == ["web_search", "tool_search"]
    assert [t["type"] for t in echo["tools"]] == ["function", "custom"]
    chat, _, got = translate(
        {"input": "hi", "tools": [{"type": "web_search"}]}, Capabilities(drop_hosted_tools=True)
    )
    assert "tools" not in chat and got.dropped == ["web_search"]


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        ([EXEC, EXEC], "tools[1].name"),
        ([{"type": "namespace", "name": "n", "tools": []}], "tools[0].tools"),
        ([{"type": "namespace", "tools": [EXEC]}], "tools[0].name"),
        ([namespace("n", ["a", "a"])], "tools[0].tools[1].name"),
        ([{"type": "namespace", "name": "n", "tools": [{"type": "web_search"}]}], "tools[0].tools[0].type"),
        ([{"type": "custom", "name": "c", "format": {"type": "grammar"}}], "tools[0].format.definition"),
        ([{"type": "custom", "name": "c", "format": {"type": "json"}}], "tools[0].format.type"),
        ([{"type": "custom"}], "tools[0].name"),
    ],
)  # fmt: skip
def test_bad_tools_name_the_parameter(tools: list[dict], param: str) -> None:
    with pytest.raises((InvalidRequest, Unsupported)) as info:
        translate({"input": "hi", "tools": tools})
    assert info.value.param == param


def test_custom_tool_choice() -> None:
    chat, echo, _ = translate(
        {
            "input": "hi",
            "tools": [APPLY_PATCH],
            "tool_choice": {"type": "custom", "name": "apply_patch"},
        }
    )
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "apply_patch"}}
    assert echo["tool_choice"] == {"type": "custom", "name": "apply_patch"}


# ---- a Codex history -------------------------------------------------------------------

PATCH = "*** Begin Patch\n*** Add File: a.txt\n+hello\n*** End Patch\n"


def codex_history() -> list[dict]:
    """The item shapes Codex CLI sends on a turn after one that ran two tools."""
    return [
        {"type": "message", "id": "msg_d1", "role": "developer",
         "content": [{"type": "input_text", "text": "You are a coding agent."}]},
        {"type": "message", "id": "msg_d2", "role": "developer",
         "content": [{"type": "input_text", "text": "<skills>none</skills>"}]},
        {"type": "message", "id": "msg_u1", "role": "user",
         "content": [{"type": "input_text", "text": "<environment_context/>"}]},
        {"type": "message", "id": "msg_u2", "role": "user",
         "content": [{"type": "input_text", "text": "make a.txt"}]},
        {"type": "message", "id": "msg_a1", "role": "assistant", "phase": "commentary",
         "content": [{"type": "output_text", "text": "Looking first."}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "exec_command",
         "arguments": '{"cmd":"ls"}', "status": "completed"},
        {"type": "function_call_output", "id": "fco_1", "call_id": "call_1",
         "output": "total 0"},
        {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_2", "name": "apply_patch",
         "input": PATCH, "status": "completed"},
        {"type": "custom_tool_call_output", "id": "ctco_1", "call_id": "call_2",
         "output": "Success. Updated: A a.txt"},
        {"type": "function_call", "id": "fc_3", "call_id": "call_3", "name": "spawn_agent",
         "namespace": "multi_agent_v1", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_3",
         "output": [{"type": "input_text", "text": "see: "},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBOR"},
                    {"type": "input_text", "text": "done"}]},
        {"type": "message", "id": "msg_a2", "role": "assistant", "phase": "final_answer",
         "content": [{"type": "output_text", "text": "Created a.txt."}]},
        {"type": "message", "id": "msg_u3", "role": "user",
         "content": [{"type": "input_text", "text": "thanks"}]},
    ]  # fmt: skip


CODEX_EXTRAS = {
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "store": False,
    "stream": True,
    "prompt_cache_key": "01a2-session",
    "client_metadata": {"session_id": "01a2", "x-codex-turn-metadata": "{}"},
    "text": {"verbosity": "low"},
    "service_tier": "priority",
}


def test_a_codex_history_maps_to_chat_messages() -> None:
    tools = [EXEC, APPLY_PATCH, namespace("multi_agent_v1", ["spawn_agent"])]
    chat, echo, _ = translate({"input": codex_history(), "tools": tools, **CODEX_EXTRAS})
    messages = chat["messages"]
    assert [m["role"] for m in messages] == [
        "system", "system", "user", "user",
        "assistant", "tool", "assistant", "tool", "assistant", "tool",
        "assistant", "user",
    ]  # fmt: skip
    assert messages[4]["content"] == "Looking first."  # the commentary, in its place
    calls = [m["tool_calls"][0] for m in messages[4:10:2]]
    assert [c["function"]["name"] for c in calls] == [
        "exec_command",
        "apply_patch",
        "multi_agent_v1__spawn_agent",
    ]
    assert orjson.loads(calls[1]["function"]["arguments"]) == {"input": PATCH}
    outputs = messages[5:10:2]
    assert [m["tool_call_id"] for m in outputs] == ["call_1", "call_2", "call_3"]
    assert outputs[1]["content"] == "Success. Updated: A a.txt"
    assert outputs[2]["content"] == [
        {"type": "text", "text": "see: "},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
        {"type": "text", "text": "done"},
    ]
    assert messages[10] == {"role": "assistant", "content": "Created a.txt."}
    assert chat["parallel_tool_calls"] is True and chat["tool_choice"] == "auto"
    assert echo["text"] == {"verbosity": "low", "format": {"type": "text"}}
    assert echo["prompt_cache_key"] == "01a2-session" and echo["service_tier"] == "priority"
    assert "client_metadata" not in chat and "service_tier" not in chat


def test_tool_output_images_where_the_deployment_takes_none() -> None:
    chat, _, _ = translate({"input": codex_history()}, Capabilities(images=False))
    assert chat["messages"][9]["content"] == f"see: {IMAGE_OMITTED}done"


def test_replayed_namespaced_call_without_the_tool_still_maps() -> None:
    chat, _, _ = translate({"input": codex_history()[5:11]})
    names = [m["tool_calls"][0]["function"]["name"] for m in chat["messages"][::2]]
    assert names == ["exec_command", "apply_patch", "multi_agent_v1__spawn_agent"]


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"type": "custom_tool_call", "call_id": "c", "input": "x"}, "input[0].name"),
        ({"type": "custom_tool_call", "call_id": "c", "name": "p"}, "input[0].input"),
        ({"type": "custom_tool_call", "name": "p", "input": "x"}, "input[0].call_id"),
        ({"type": "custom_tool_call_output", "output": "x"}, "input[0].call_id"),
        ({"type": "custom_tool_call_output", "call_id": "c"}, "input[0].output"),
        ({"type": "function_call_output", "call_id": "c",
          "output": [{"type": "input_file", "file_id": "f"}]}, "input[0].output[0].type"),
    ],
)  # fmt: skip
def test_bad_codex_items_name_the_parameter(item: dict, param: str) -> None:
    with pytest.raises((InvalidRequest, Unsupported)) as info:
        translate({"input": [item]})
    assert info.value.param == param


def test_item_reference_says_what_works_instead() -> None:
    with pytest.raises(Unsupported) as info:
        translate({"input": [{"type": "item_reference", "id": "msg_1"}]})
    assert info.value.param == "input[0]"
    assert "item_reference" in info.value.message and "store: false" in info.value.message


def test_serve_hosted_tools_flag_and_config_key(tmp_path: Any) -> None:
    from gateway.cli import _parser, build_config
    from gateway.config import parse
    from gateway.upstream.routing import capabilities

    args = _parser().parse_args(["serve", "--upstream", "http://127.0.0.1:1/v1"])
    assert not capabilities(build_config(args).deployment[0]).drop_hosted_tools
    args = _parser().parse_args(
        ["serve", "--upstream", "http://127.0.0.1:1/v1", "--hosted-tools", "drop"]
    )
    assert capabilities(build_config(args).deployment[0]).drop_hosted_tools
    toml = b'[[deployment]]\nupstream = "http://h/v1"\nhosted-tools = "drop"\n'
    assert capabilities(parse(toml, "x.toml").deployment[0]).drop_hosted_tools


def test_the_bench_codex_request_is_codex_sized_and_accepted() -> None:
    """bench/codex.py's request (the codex row): about 60 KB of history, 30 tools with
    custom and namespace ones, and it translates."""
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).parents[2] / "bench"))
    from rows.codex import codex_request

    body = codex_request(stream=True)
    assert 50_000 <= len(orjson.dumps(body["input"])) <= 80_000
    chat, _, tools = translate({k: v for k, v in body.items() if k != "model"})
    assert len(chat["tools"]) == 30
    assert {t["type"] for t in body["tools"]} == {"function", "custom", "namespace"}
    assert len(tools.names.by_upstream) == 10  # 2 custom, 8 namespaced
    kinds = {m["role"] for m in chat["messages"]}
    assert kinds == {"system", "user", "assistant", "tool"}
