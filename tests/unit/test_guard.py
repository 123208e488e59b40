"""Client keys on their own: the tenant of a right key, refusals, and the memo of
Authorization values that held a right key (bounded; never a wrong one)."""

from __future__ import annotations

import pytest

from gateway.api.guard import Guard, tenant_of
from gateway.errors import Unauthorized
from gateway.http.messages import Headers
from gateway.stores.memory import MemoryStore


class Req:
    def __init__(self, auth: str | None) -> None:
        items = [(b"host", b"x")]
        if auth is not None:
            items.append((b"authorization", auth.encode("latin-1")))
        self.headers = Headers(items)


def test_right_keys_wrong_keys_and_the_memo() -> None:
    guard = Guard(["sk-one", "sk-two"], MemoryStore())
    assert guard.tenant(Req("Bearer sk-one")) == tenant_of("sk-one")  # type: ignore[arg-type]
    assert guard.tenant(Req("Bearer sk-one")) == tenant_of("sk-one")  # type: ignore[arg-type]
    assert guard.tenant(Req("bearer  sk-two ")) == tenant_of("sk-two")  # type: ignore[arg-type]
    for wrong in ("Bearer sk-on", "Bearer sk-one2", "Basic sk-one", "Bearer ", "sk-one"):
        with pytest.raises(Unauthorized):
            guard.tenant(Req(wrong))  # type: ignore[arg-type]
    with pytest.raises(Unauthorized):
        guard.tenant(Req(None))  # type: ignore[arg-type]
    assert set(guard._known) == {"Bearer sk-one", "bearer  sk-two "}  # only right ones


def test_the_memo_is_bounded() -> None:
    guard = Guard(["sk-one"], MemoryStore())
    for spaces in range(40):
        assert guard.tenant(Req("Bearer " + "sk-one" + " " * spaces)) == tenant_of("sk-one")  # type: ignore[arg-type]
    assert len(guard._known) == 8
