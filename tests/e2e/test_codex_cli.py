"""The real Codex CLI (``@openai/codex``, pinned in the Makefile, installed by ``make e2e``)
through the gateway, in front of the demo upstream in scripted mode.

``codex exec`` runs one task: the model reads a file with Codex's shell tool
(``exec_command``), edits it with ``apply_patch`` (a custom tool: a grammar, its input
free text) and answers; the file really changes on disk. ``codex exec resume --last``
runs a second turn, whose history (reasoning included: sealed by the gateway as
``encrypted_content``, opened on replay) reaches the upstream. Codex sends what it
always sends: ``reasoning``, ``include: ["reasoning.encrypted_content"]``, developer
messages, ids on every item, ``client_metadata``, ``prompt_cache_key``,
``text.verbosity``, ``store: false``, hosted tools (dropped here:
``hosted-tools = "drop"``). Every run is bounded (``RUN_TIMEOUT``)."""

from __future__ import annotations

import pathlib
from typing import Any

import orjson

from tests.e2e.codex_support import MODEL, codex, dirs

PATCH = "*** Begin Patch\n*** Update File: notes.txt\n@@\n-old line\n+new line\n*** End Patch\n"
ANSWER = "Updated notes.txt: the old line is now the new line."
SCRIPT: list[dict[str, Any]] = [
    {
        "reasoning": "I should read the file first.",
        "text": "Reading notes.txt.",
        "calls": [{"name": "exec_command", "arguments": {"cmd": "cat notes.txt"}}],
    },
    {"reasoning": "Now replace the line.", "calls": [{"name": "apply_patch", "input": PATCH}]},
    {"reasoning": "Both tools worked.", "text": ANSWER},
]
PROVIDER = """\
model = "{model}"
model_provider = "gateway"

[model_providers.gateway]
name = "Responses gateway"
base_url = "{url}"
env_key = "GATEWAY_API_KEY"
wire_api = "responses"
"""


def assistant_reasoning(messages: list[dict]) -> list[str]:
    return [m["reasoning_content"] for m in messages if m.get("reasoning_content")]


async def test_codex_exec_and_resume(start: Any, codex_bin: str, tmp_path: pathlib.Path) -> None:
    options, url, _ = await start(MODEL, SCRIPT, "drop")
    home, work = dirs(tmp_path, PROVIDER.format(model=MODEL, url=url))
    (work / "notes.txt").write_text("old line\n")

    status, out, _ = await codex(
        codex_bin, home, work, "Replace old line with new line in notes.txt"
    )
    assert status == 0
    assert out.strip().endswith(ANSWER)
    assert (work / "notes.txt").read_text() == "new line\n"  # apply_patch really ran
    turns = [r["body"] for r in options.received]
    assert len(turns) == 3  # the shell call, the patch, the answer
    first = turns[0]
    names = [t["function"]["name"] for t in first["tools"]]
    assert "exec_command" in names and "apply_patch" in names
    patch_tool = first["tools"][names.index("apply_patch")]["function"]
    assert patch_tool["parameters"]["required"] == ["input"]  # a custom tool, as a function
    assert first["messages"][0]["role"] == "system"  # Codex's developer message
    # The shell's output came back as a tool message, then the patch's.
    tools = [m for m in turns[2]["messages"] if m["role"] == "tool"]
    assert len(tools) == 2 and "old line" in str(tools[0]["content"])
    calls = [c for m in turns[2]["messages"] for c in m.get("tool_calls") or ()]
    assert [c["function"]["name"] for c in calls] == ["exec_command", "apply_patch"]
    assert orjson.loads(calls[1]["function"]["arguments"]) == {"input": PATCH}
    assert assistant_reasoning(turns[2]["messages"]) == [
        "I should read the file first.",
        "Now replace the line.",
    ]

    status, out, _ = await codex(
        codex_bin, home, work, "resume", "--last", "Thanks, anything else?"
    )
    assert status == 0
    assert out.strip().endswith(ANSWER)  # the script's last turn, again
    assert len(options.received) == 4
    replayed = options.received[3]["body"]["messages"]
    assert replayed[-1]["role"] == "user"
    assert "Thanks, anything else?" in str(replayed[-1]["content"])
    # The whole first turn, its reasoning included, reached the upstream again.
    assert assistant_reasoning(replayed) == [
        "I should read the file first.",
        "Now replace the line.",
        "Both tools worked.",
    ]
    assert ANSWER in [m.get("content") for m in replayed if m["role"] == "assistant"]
    assert len([m for m in replayed if m["role"] == "tool"]) == 2


async def test_a_model_codex_does_not_know(
    start: Any, codex_bin: str, tmp_path: pathlib.Path
) -> None:
    """A local model's name: Codex falls back to its default tools (a namespace among
    them, no apply_patch); the deployment refuses hosted tools, and Codex's
    ``-c web_search="disabled"`` (the advice in the refusal) leaves none."""
    script = [
        {"calls": [{"name": "exec_command", "arguments": {"cmd": "echo made > out.txt"}}]},
        {"text": "Wrote out.txt."},
    ]
    options, url, _ = await start("local-coder", script, "refuse")
    home, work = dirs(tmp_path, PROVIDER.format(model="local-coder", url=url))
    status, out, _ = await codex(
        codex_bin, home, work, "-c", 'web_search="disabled"', "Make out.txt"
    )
    assert status == 0 and out.strip().endswith("Wrote out.txt.")
    assert (work / "out.txt").read_text() == "made\n"
    sent = options.received[0]["body"]["tools"]
    namespaced = [t["function"]["name"] for t in sent if "__" in t["function"]["name"]]
    assert namespaced and all(n.startswith("multi_agent_v1__") for n in namespaced)
    assert all(len(t["function"]["name"]) <= 64 for t in sent)
