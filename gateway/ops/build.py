"""What a config builds: the store, the sealer, the client keys and limits, the
overload gate and the router. ``lifecycle.open_gateway`` builds a gateway with
them at start; ``reload`` builds a new router and guard with them on SIGHUP.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
from collections.abc import Mapping

from gateway.api.guard import Guard
from gateway.api.seal import Sealer
from gateway.config import Config, client_keys, seal_keys, upstream_key
from gateway.stores import SHARED_STORE_ENV
from gateway.stores.base import Store
from gateway.stores.memory import MemoryStore
from gateway.upstream.admission import Gate
from gateway.upstream.replicas import ReplicaSet
from gateway.upstream.routing import Router

log = logging.getLogger("gateway")

NO_ENV: Mapping[str, str] = {}


def open_store(cfg: Config, env: Mapping[str, str] = NO_ENV) -> Store:
    """The store of idempotency records and request counters that ``cfg`` names: Redis,
    or the database of ``sqlite-path``, or the one the supervisor named for its workers
    (``SHARED_STORE_ENV``: the memory store cannot be shared), or this process's memory."""
    idem = cfg.idempotency
    if idem.store == "redis" and idem.redis_url:
        from gateway.stores.redis import RedisStore  # (only then: the client costs startup)

        return RedisStore(idem.redis_url, retention=idem.retention, lock_ttl=idem.lock_ttl)
    path = idem.sqlite_path if idem.store == "sqlite" else env.get(SHARED_STORE_ENV)
    if path:
        from gateway.stores.sqlite import SqliteStore

        return SqliteStore(
            path,
            retention=idem.retention,
            lock_ttl=idem.lock_ttl,
            max_entries=idem.max_entries,
            max_bytes=idem.max_bytes,
        )
    return MemoryStore(
        retention=idem.retention,
        lock_ttl=idem.lock_ttl,
        max_entries=idem.max_entries,
        max_bytes=idem.max_bytes,
    )


def open_sealer(cfg: Config, env: Mapping[str, str]) -> Sealer:
    """The sealer of reasoning, with the keys of ``[seal] key-env`` in ``env``; without
    any, a random key of this process (and a warning: what it seals opens nowhere else,
    nor after a restart)."""
    keys = seal_keys(cfg.seal, env)
    if keys:
        return Sealer(keys)
    log.warning(
        "%s is not set: reasoning is sealed with a random key of this process, so "
        "encrypted_content opens only here and only until it restarts (set it to the "
        "base64 of 32 random bytes, the same for every gateway process)",
        cfg.seal.key_env,
    )
    return Sealer.random()


def with_seal_key(cfg: Config, env: Mapping[str, str]) -> Mapping[str, str]:
    """``env``, with a random seal key when it has none: given to every worker, so that
    what one worker seals the others open."""
    if seal_keys(cfg.seal, env):
        return env
    open_sealer(cfg, env)  # (the warning, once)
    return {**env, cfg.seal.key_env: base64.b64encode(os.urandom(32)).decode()}


def make_guard(
    cfg: Config, env: Mapping[str, str], keys_text: str | None, store: Store
) -> Guard | None:
    """The client keys and limits of ``cfg``; None when it has neither."""
    keys = client_keys(cfg.auth, env, keys_text) if cfg.auth is not None else ()
    limits = cfg.limits
    if not (keys or limits.requests_per_minute or limits.max_in_flight):
        return None
    return Guard(
        keys,
        store,
        secret=tenant_secret(cfg, env),
        per_minute=limits.requests_per_minute,
        in_flight=limits.max_in_flight,
    )


_PROCESS_SECRET = os.urandom(32)  # (without a seal key: this process's own, for good)


def tenant_secret(cfg: Config, env: Mapping[str, str]) -> bytes:
    """The secret client keys' tenant names are keyed with (``api.guard``): derived from
    the first seal key, which every process of a deployment holds (the workers of one
    host are given one; hosts that share a Redis must be given the same, as reasoning
    needs anyway); without one, this process's own (a reload keeps it)."""
    keys = seal_keys(cfg.seal, env)
    if not keys:
        return _PROCESS_SECRET
    return hmac.new(keys[0], b"gateway tenant names", hashlib.sha256).digest()


def make_overload(cfg: Config) -> Gate | None:
    """The gateway-wide bound of upstream requests (``[overload]``), if any."""
    load = cfg.overload
    if not load.max_in_flight:
        return None
    return Gate("gateway", load.max_in_flight, load.max_queued, load.queue_timeout)


def make_router(cfg: Config, env: Mapping[str, str], overload: Gate | None) -> Router:
    """A router over new replicas of ``cfg``'s deployments (``start`` and ``discover``
    it, then use it); ``overload`` is the process's one gate, kept across reloads."""
    return Router([(d, ReplicaSet(d, upstream_key(d, env), overload)) for d in cfg.deployment])
