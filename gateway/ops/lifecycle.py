"""Process lifecycle: open the upstream session, serve, stop cleanly.

``open_gateway`` builds everything a handler needs (the tests use it too);
``listen`` serves it with the lean HTTP server (``gateway.http.server``) or
aiohttp's (``gateway.http.aiohttp_server``), as ``[http] server`` says;
``serve`` runs it on a socket until SIGTERM/SIGINT; ``run_workers`` forks
several processes that share the port through SO_REUSEPORT.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING

from gateway.api.endpoints import Gateway
from gateway.api.guard import Guard
from gateway.api.pings import SsePings
from gateway.api.replay import Replays
from gateway.api.seal import Sealer
from gateway.config import Config, Http, client_keys, seal_keys, upstream_key
from gateway.http.server import Server
from gateway.limits import LISTEN_BACKLOG, SHUTDOWN_GRACE
from gateway.stores.base import Store
from gateway.stores.memory import MemoryStore
from gateway.upstream.admission import Gate
from gateway.upstream.replicas import ReplicaSet
from gateway.upstream.routing import Router

if TYPE_CHECKING:
    from gateway.http.aiohttp_server import AiohttpServer

log = logging.getLogger("gateway")

NO_ENV: Mapping[str, str] = {}
DEFAULT_HTTP = Http()


def open_store(cfg: Config) -> Store:
    """The store of idempotency records and request counters that ``cfg`` names."""
    idem = cfg.idempotency
    if idem.store == "redis" and idem.redis_url:
        from gateway.stores.redis import RedisStore  # (only then: the client costs startup)

        return RedisStore(idem.redis_url, retention=idem.retention, lock_ttl=idem.lock_ttl)
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


@asynccontextmanager
async def open_gateway(
    cfg: Config, env: Mapping[str, str] = NO_ENV, *, keys_text: str | None = None
) -> AsyncIterator[Gateway]:
    """The gateway for ``cfg``; ``env`` is the environment as the command line read it
    (upstream and client keys are looked up there), ``keys_text`` the text of the
    ``[auth]`` keys file, which the command line read."""
    keys = client_keys(cfg.auth, env, keys_text) if cfg.auth is not None else ()
    sealer = open_sealer(cfg, env)
    limits = cfg.limits
    pings = SsePings(cfg.stream.keepalive_interval)
    load = cfg.overload
    overload = None
    if load.max_in_flight:
        overload = Gate("gateway", load.max_in_flight, load.max_queued, load.queue_timeout)
    deployments = [(d, ReplicaSet(d, upstream_key(d, env), overload)) for d in cfg.deployment]
    router = Router(deployments)
    store = open_store(cfg)
    guard = None
    if keys or limits.requests_per_minute or limits.max_in_flight:
        guard = Guard(
            keys,
            store,
            per_minute=limits.requests_per_minute,
            in_flight=limits.max_in_flight,
        )
    replays = Replays(store, cfg.idempotency.lock_ttl) if cfg.idempotency.enabled else None
    try:
        router.start()
        await router.discover()
        max_body = max(d.max_body_bytes for d in cfg.deployment)
        pings.start()
        yield Gateway(router, pings, max_body, guard=guard, replays=replays, sealer=sealer)
    finally:
        pings.stop()
        await router.close()
        if replays is not None:
            await replays.close()
        await store.close()


@asynccontextmanager
async def listen(
    gateway: Gateway, host: str, port: int, *, http: Http = DEFAULT_HTTP, reuse_port: bool = False
) -> AsyncIterator[asyncio.Server]:
    """Serve ``gateway`` on host:port; on exit, stop listening and let requests finish."""
    loop = asyncio.get_running_loop()
    server: Server | AiohttpServer
    if http.server == "aiohttp":  # (imported only then: aiohttp's server costs startup)
        from gateway.http.aiohttp_server import AiohttpServer

        server = AiohttpServer(gateway.handle, max_body=gateway.max_body, limits=http)
    else:
        server = Server(gateway.handle, max_body=gateway.max_body, limits=http)
    sock_server = await loop.create_server(
        server, host, port, reuse_port=reuse_port or None, backlog=LISTEN_BACKLOG
    )
    try:
        yield sock_server
    finally:
        sock_server.close()
        await server.shutdown(SHUTDOWN_GRACE)


async def serve(
    cfg: Config,
    env: Mapping[str, str],
    *,
    reuse_port: bool = False,
    keys_text: str | None = None,
) -> None:
    async with (
        open_gateway(cfg, env, keys_text=keys_text) as gateway,
        listen(gateway, cfg.listen.host, cfg.listen.port, http=cfg.http, reuse_port=reuse_port),
    ):
        log.info(
            "gateway listening on http://%s:%d (models: %s)",
            cfg.listen.host,
            cfg.listen.port,
            ", ".join(gateway.router.model_ids()) or "none yet",
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def run(
    cfg: Config,
    env: Mapping[str, str],
    *,
    reuse_port: bool = False,
    keys_text: str | None = None,
) -> None:
    import uvloop

    uvloop.run(serve(cfg, env, reuse_port=reuse_port, keys_text=keys_text))


def run_workers(cfg: Config, env: Mapping[str, str], *, keys_text: str | None = None) -> int:
    """Fork ``cfg.workers`` processes sharing the port; forward SIGTERM/SIGINT to them."""
    env = with_seal_key(cfg, env)
    children = []
    for _ in range(cfg.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                run(cfg, env, reuse_port=True, keys_text=keys_text)
                code = 0
            except BaseException:
                log.exception("worker failed")
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(code)
    sys.stdout.flush()
    return 1 if status else 0
