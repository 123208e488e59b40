"""End-to-end tests with real third-party clients, installed by ``make e2e`` (not part of
``make test``): the pinned Codex CLI under ``.e2e/``. Without it these tests skip; with
``CI`` set, a missing client fails them instead."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).parents[2]


@pytest.fixture(scope="session")
def codex_bin() -> str:
    """The Codex CLI that ``make e2e`` installed (``CODEX_BIN``), at the pinned version."""
    path = os.environ.get("CODEX_BIN") or str(ROOT / ".e2e" / "node_modules" / ".bin" / "codex")
    found = shutil.which(path)
    if not found:
        message = f"Codex CLI not installed at {path}: run `make e2e`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(pathlib.Path(found).resolve())
