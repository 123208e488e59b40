"""What the end-to-end tests share to run the real Codex CLI: a CODEX_HOME with its
``config.toml`` and a work dir (``dirs``), and one unattended ``codex exec`` run,
bounded by ``RUN_TIMEOUT`` (``codex``). The gateway in front of the scripted demo
upstream is the ``start`` fixture of ``conftest.py``."""

from __future__ import annotations

import asyncio
import os
import pathlib
from typing import NamedTuple

import pytest

MODEL = "gpt-5.5"  # a model Codex knows: it offers apply_patch as a custom (grammar) tool
RUN_TIMEOUT = 120.0  # seconds for one codex run
API_KEY = "sk-e2e"


class Run(NamedTuple):
    """One ``codex exec`` run: its exit status, stdout and stderr."""

    status: int
    out: str
    err: str


def dirs(tmp_path: pathlib.Path, config: str) -> tuple[pathlib.Path, pathlib.Path]:
    """A CODEX_HOME whose config.toml is ``config``, and a work dir."""
    home, work = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (home / "config.toml").write_text(config)
    return home, work


async def codex(binary: str, home: pathlib.Path, work: pathlib.Path, *args: str) -> Run:
    """Run ``codex exec ... args`` unattended in ``work``. The API key is in both
    ``GATEWAY_API_KEY`` (a custom provider's ``env_key``) and ``OPENAI_API_KEY`` (the
    built-in provider's)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home.parent),
        "CODEX_HOME": str(home),
        "GATEWAY_API_KEY": API_KEY,
        "OPENAI_API_KEY": API_KEY,
    }
    if "RUST_LOG" in os.environ:  # (to see what Codex sends: RUST_LOG=codex_api=trace)
        env["RUST_LOG"] = os.environ["RUST_LOG"]
    proc = await asyncio.create_subprocess_exec(
        binary,
        "exec",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",  # a temp dir, nothing to guard
        *args,
        cwd=work,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"codex {' '.join(args)} ran over {RUN_TIMEOUT} s")
    assert proc.returncode is not None
    errors = err.decode(errors="replace")
    if proc.returncode != 0:
        print(errors[-4000:])  # shown when the test fails
    return Run(proc.returncode, out.decode(), errors)
