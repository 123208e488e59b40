"""Client keys on their own: the tenant of a right key, refusals, and the memo of
Authorization values that held a right key (bounded; never a wrong one)."""

from __future__ import annotations

import pytest

from gateway.api.guard import Guard, tenant_of
from gateway.errors import Unauthorized
from gateway.http.messages import Headers
from gateway.stores.memory import MemoryStore

SECRET = b"s" * 32


class Req:
    def __init__(self, auth: str | None) -> None:
        items = [(b"host", b"x")]
        if auth is not None:
            items.append((b"authorization", auth.encode("latin-1")))
        self.headers = Headers(items)


def test_right_keys_wrong_keys_and_the_memo() -> None:
    guard = Guard(["sk-one", "sk-two"], MemoryStore(), secret=SECRET)
    assert guard.tenant(Req("Bearer sk-one")) == tenant_of("sk-one", SECRET)  # type: ignore[arg-type]
    assert guard.tenant(Req("Bearer sk-one")) == tenant_of("sk-one", SECRET)  # type: ignore[arg-type]
    assert guard.tenant(Req("bearer  sk-two ")) == tenant_of("sk-two", SECRET)  # type: ignore[arg-type]
    for wrong in ("Bearer sk-on", "Bearer sk-one2", "Basic sk-one", "Bearer ", "sk-one"):
        with pytest.raises(Unauthorized):
            guard.tenant(Req(wrong))  # type: ignore[arg-type]
    with pytest.raises(Unauthorized):
        guard.tenant(Req(None))  # type: ignore[arg-type]
    assert set(guard._known) == {"Bearer sk-one", "bearer  sk-two "}  # only right ones


def test_the_memo_is_bounded() -> None:
    guard = Guard(["sk-one"], MemoryStore(), secret=SECRET)
    for spaces in range(40):
        assert guard.tenant(Req("Bearer " + "sk-one" + " " * spaces)) == tenant_of("sk-one", SECRET)  # type: ignore[arg-type]
    assert len(guard._known) == 8


def test_a_tenant_name_is_keyed_by_the_deployments_secret() -> None:
    """A weak key cannot be found again from the logs by trying keys: its name is an
    HMAC under the deployment's secret (derived from the seal key: the same in every
    process that holds it), not a plain hash."""
    import hashlib

    from gateway.config import Config, Deployment, Seal
    from gateway.ops.build import tenant_secret

    plain = hashlib.sha256(b"sk-1234").hexdigest()[:12]
    assert tenant_of("sk-1234", SECRET) != plain
    assert tenant_of("sk-1234", SECRET) != tenant_of("sk-1234", b"t" * 32)
    assert len(tenant_of("sk-1234", SECRET)) == 12
    cfg = Config(deployment=(Deployment(upstream="http://u/v1"),), seal=Seal())
    key = {cfg.seal.key_env: "A" * 43 + "="}  # (the base64 of 32 bytes)
    assert tenant_secret(cfg, key) == tenant_secret(cfg, dict(key))  # any process with it
    assert tenant_secret(cfg, key) != tenant_secret(cfg, {cfg.seal.key_env: "B" * 43 + "="})
    assert tenant_secret(cfg, {}) == tenant_secret(cfg, {})  # this process's own, kept
