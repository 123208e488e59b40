"""SIGHUP: re-read the config file and serve the new one, dropping nothing.

The command line hands down ``reread`` (it alone reads files): it returns the
new config and keys-file text, or raises ``ConfigError``; a file that does not
load is refused with one log line and the old config goes on serving. A good one
gets a new router (new replicas, its models discovered) and new client keys and
limits, and the gateway's references to them are swapped in one step: a request
in flight keeps the route and replica it already took, and its stream goes on.
The old replicas close once none of their upstream connections is in use.

What a reload cannot change (the listen address, the HTTP server and its bounds,
the worker count, the idempotency store, ``[ops]``) is kept, with a warning that
it needs a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from gateway.api.endpoints import Gateway
from gateway.config import Config, ConfigError
from gateway.errors import GatewayError
from gateway.ops import collector
from gateway.ops.build import make_guard, make_router
from gateway.upstream.routing import Router

log = logging.getLogger("gateway")

RETIRE_POLL = 1.0  # seconds between two looks at whether old replicas are still in use
RESTART_ONLY = ("listen", "http", "workers", "idempotency", "ops", "stream")


class Reloads:
    def __init__(
        self,
        gateway: Gateway,
        cfg: Config,
        env: Mapping[str, str],
        reread: Callable[[], tuple[Config, str | None]] | None,
    ) -> None:
        self.gateway = gateway
        self.cfg = cfg
        self.env = env
        self.reread = reread
        self.tasks: set[asyncio.Task[Any]] = set()
        self._running: asyncio.Task[bool] | None = None
        self.retiring: list[Router] = []
        self.done = 0  # reloads applied (tests wait on it)

    def request(self) -> None:
        """The SIGHUP handler: one reload at a time (one that comes meanwhile runs next)."""
        previous = self._running

        async def after() -> bool:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            return await self.reload()

        self._running = self._spawn(after())

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def reload(self) -> bool:
        """Re-read and apply the config; False (and the old one kept) if it is refused."""
        assert self.reread is not None
        try:
            cfg, keys_text = self.reread()
            store = self.gateway.process.store
            guard = make_guard(cfg, self.env, keys_text, store)
        except (ConfigError, ValueError) as exc:
            log.error("reload refused, the running config goes on: %s", exc)
            return False
        for name in RESTART_ONLY:
            if getattr(cfg, name) != getattr(self.cfg, name):
                log.warning("reload: [%s] changed; that takes a restart (kept as it was)", name)
        try:
            router = make_router(cfg, self.env, self.gateway.process.overload)
        except ValueError as exc:
            log.error("reload refused, the running config goes on: %s", exc)
            return False
        try:
            router.start()
            await router.discover()
        except GatewayError as exc:  # (discover logs and goes on; anything else: refuse)
            await router.close()
            log.error("reload refused: %s", exc.message)
            return False
        gw = self.gateway
        old = gw.router
        max_body = max(d.max_body_bytes for d in cfg.deployment)
        gw.router, gw.guard, gw.max_body = router, guard, max_body
        for server in gw.process.servers:
            server.max_body = max_body
        self.cfg = cfg
        self.done += 1
        log.info(
            "reloaded: %d deployment(s), models %s",
            len(cfg.deployment),
            ", ".join(router.model_ids()) or "none yet",
        )
        self._spawn(self._retire(old))
        return True

    async def _retire(self, router: Router) -> None:
        self.retiring.append(router)
        while router.in_use():
            await asyncio.sleep(RETIRE_POLL)
        self.retiring.remove(router)
        await router.close()
        collector.settle()  # (the old config's objects go; the new one's are frozen)

    async def close(self) -> None:
        """After the drain: stop reloading, close the old routers still open."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for router in self.retiring:
            await router.close()
        self.retiring.clear()
