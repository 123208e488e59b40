"""The real Codex CLI on the Responses WebSocket (``GET /v1/responses`` upgraded), wired
both ways people wire it: the built-in OpenAI provider pointed at the gateway
(``openai_base_url``, the key in ``OPENAI_API_KEY``), and a custom provider with
``supports_websockets = true``. Either opens the socket first, sends a warm-up
(``generate: false``), then each request of a turn as a ``response.create`` that continues
the last response (``previous_response_id``, only the new items); a socket the gateway
failed would show on Codex's stderr as a fallback to HTTP or a reconnection.

Each test runs the tool loop of ``test_codex_cli`` (a shell call, a patch, the answer),
then ``codex exec resume --last`` with ``model_auto_compact_token_limit`` so small that
Codex compacts before the second turn. How it compacts depends on the provider (Codex
0.171's choice): the built-in one compacts remotely, over the socket, with a
``response.create`` whose last input item is a ``compaction_trigger``, and expects exactly
one ``compaction`` item back (the gateway's summary, sealed); a custom provider compacts
locally, asking the model itself with its own prompt, without tools, and puts the answer
in a user message of its own. Either way the upstream sees the summary, not the history,
in the turn that follows."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from gateway.config import COMPACTION_PROMPT
from gateway.core.translate.compaction import SUMMARY_HEADING
from gateway.demo.answers import compaction_summary
from tests.e2e.codex_support import MODEL, Run, codex, dirs
from tests.e2e.test_codex_cli import ANSWER, PROVIDER, SCRIPT

BUILT_IN = """\
model = "{model}"
openai_base_url = "{url}"
"""
CUSTOM = PROVIDER + "supports_websockets = true\n"  # the HTTP test's provider, on the socket
COMPACT = ("-c", "model_auto_compact_token_limit=10")  # under any turn's usage: compact
TASK = "Replace old line with new line in notes.txt"
AGAIN = "Thanks, anything else?"
AFTER = "Nothing else: notes.txt holds the new line."
# What Codex says when the socket fails it, or a compaction does.
TROUBLE = ("Falling back from WebSockets", "Reconnecting", "Error running remote compact task")
LOCAL_PROMPT = "CONTEXT CHECKPOINT COMPACTION"  # (in Codex's own compaction prompt)


def ran(run: Run) -> str:
    """The run's stdout, once it exited 0 and its stderr told of no trouble."""
    assert run.status == 0
    for words in TROUBLE:
        assert words not in run.err
    return run.out


def texts(messages: list[dict], role: str) -> list[str]:
    return [str(m.get("content")) for m in messages if m["role"] == role]


@pytest.mark.parametrize("config", [BUILT_IN, CUSTOM], ids=["openai_base_url", "custom"])
async def test_codex_on_the_websocket_with_a_compaction(
    config: str, start: Any, codex_bin: str, tmp_path: pathlib.Path
) -> None:
    options, url, calls = await start(MODEL, SCRIPT, "drop")
    home, work = dirs(tmp_path, config.format(model=MODEL, url=url))
    (work / "notes.txt").write_text("old line\n")

    assert ran(await codex(codex_bin, home, work, TASK)).strip().endswith(ANSWER)
    assert (work / "notes.txt").read_text() == "new line\n"
    turns = [r["body"] for r in options.received]
    assert len(turns) == 3  # the shell call, the patch, the answer
    # Each continuation reached the upstream with the whole conversation.
    assert TASK in texts(turns[1]["messages"], "user")
    assert TASK in texts(turns[2]["messages"], "user")
    calls_made = [
        c["function"]["name"] for m in turns[2]["messages"] for c in m.get("tool_calls") or ()
    ]
    assert calls_made == ["exec_command", "apply_patch"]
    outputs = texts(turns[2]["messages"], "tool")
    assert len(outputs) == 2 and "old line" in outputs[0]
    # All of it on the socket: no POST /v1/responses; one warm-up more than upstream requests.
    assert {endpoint for endpoint, _ in calls} == {"responses_ws"}
    assert len(calls) == 4 and all(status == 200 for _, status in calls)

    # The second turn's answer: a compacted history holds no tool results, so the script
    # would start over at its shell call.
    options.script = [{"text": AFTER}]
    run = await codex(codex_bin, home, work, *COMPACT, "resume", "--last", AGAIN)
    assert ran(run).strip().endswith(AFTER)
    assert "context compacted" in run.err
    summarised, after = (r["body"] for r in options.received[3:])
    assert "tools" not in summarised  # the summary was asked without tools
    assert TASK in texts(summarised["messages"], "user")
    assert ANSWER in texts(summarised["messages"], "assistant")
    assert len(texts(summarised["messages"], "tool")) == 2  # the whole first turn
    if config is BUILT_IN:  # remote: the gateway's prompt, its summary sealed and opened
        assert summarised["messages"][-1]["content"] == COMPACTION_PROMPT
        summary = SUMMARY_HEADING + compaction_summary(summarised["messages"])
    else:  # local: Codex's own prompt; the model's answer is the summary
        assert LOCAL_PROMPT in str(summarised["messages"][-1]["content"])
        summary = AFTER
    users = texts(after["messages"], "user")
    assert users[-1] == AGAIN
    assert any(summary in text for text in users[:-1])
    # The history the summary stands for is gone.
    assert not texts(after["messages"], "tool")
    assert ANSWER not in texts(after["messages"], "assistant")
    assert {endpoint for endpoint, _ in calls} == {"responses_ws"}  # the compaction too
