"""Process lifecycle: open the upstream session, serve, drain, stop cleanly.

``open_gateway`` builds everything a handler needs (the tests use it too), with
the process's own routes (``ops.health``: /healthz, /readyz, /metrics) and the
observer of each request (``ops.metrics``, ``ops.access_log``) as ``[ops]``
says; ``listen`` serves it with the lean HTTP server (``gateway.http.server``)
or aiohttp's (``gateway.http.aiohttp_server``), as ``[http] server`` says, on
host:port or on a socket handed in (socket activation), and drains on exit;
``serve`` runs it until SIGTERM/SIGINT (a drain), reloads on SIGHUP
(``ops.reload``) and talks to systemd (``ops.notify``); ``ops.supervisor``
runs several such processes.

The drain: ``/readyz`` turns 503 and the listener closes (new connections are
refused); idle connections close, busy ones after their answer; requests and
streams in flight get ``[ops] drain-timeout`` seconds; streams still open then
end with ``response.failed`` (``server_shutting_down``); after
``limits.SHUTDOWN_GRACE`` more seconds what is left is cut, the upstream
connections close, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import IO, TYPE_CHECKING, Any

from gateway.api.endpoints import Gateway
from gateway.api.pings import SsePings
from gateway.api.process import ProcessState
from gateway.api.replay import Replays
from gateway.config import Config, Http
from gateway.http.server import Server
from gateway.limits import LISTEN_BACKLOG, SHUTDOWN_GRACE
from gateway.ops import collector
from gateway.ops.access_log import AccessLog, access_enabled, resolve_format
from gateway.ops.build import (
    NO_ENV,
    make_guard,
    make_overload,
    make_router,
    open_sealer,
    open_store,
)
from gateway.ops.health import Observer, OpsRoutes
from gateway.ops.metrics import Metrics, multiprocess_dir
from gateway.ops.notify import (
    Notifier,
    activated_socket,
    listen_fds,
    notify_address,
    watchdog_interval,
)
from gateway.ops.reload import Reloads

if TYPE_CHECKING:
    from gateway.http.aiohttp_server import AiohttpServer

log = logging.getLogger("gateway")

DEFAULT_HTTP = Http()


def observe(
    gateway: Gateway, cfg: Config, env: Mapping[str, str], out: IO[bytes] | None
) -> OpsRoutes:
    """Plug ``[ops]`` in: metrics and the access log as the observer, the health routes."""
    ops = cfg.ops
    metrics = Metrics(multiprocess_dir(env)) if ops.metrics else None
    access = None
    if ops.access_log and (out is not None or access_enabled()):
        fmt = resolve_format(ops.log_format, sys.stderr)
        access = AccessLog(out if out is not None else sys.stderr.buffer, fmt)
    if metrics is not None or access is not None:
        gateway.observer = Observer(metrics, access)
    apart = ops.metrics_listen is not None
    routes = OpsRoutes(gateway, metrics, apart=apart, auth=ops.metrics_auth)
    if apart and metrics is not None:
        gateway.process.metrics_only = routes.metrics_only
    return routes


@asynccontextmanager
async def open_gateway(
    cfg: Config,
    env: Mapping[str, str] = NO_ENV,
    *,
    keys_text: str | None = None,
    access_out: IO[bytes] | None = None,
) -> AsyncIterator[Gateway]:
    """The gateway for ``cfg``; ``env`` is the environment as the command line read it
    (upstream and client keys are looked up there), ``keys_text`` the text of the
    ``[auth]`` keys file, which the command line read. The access log goes to
    ``access_out`` if given (else to stderr, if the ``gateway.access`` logger is on)."""
    sealer = open_sealer(cfg, env)
    pings = SsePings(cfg.stream.keepalive_interval)
    overload = make_overload(cfg)
    store = open_store(cfg, env)
    guard = make_guard(cfg, env, keys_text, store)
    replays = Replays(store, cfg.idempotency.lock_ttl) if cfg.idempotency.enabled else None
    gateway: Gateway | None = None
    routes: OpsRoutes | None = None
    router = make_router(cfg, env, overload)
    try:
        router.start()
        await router.discover()
        max_body = max(d.max_body_bytes for d in cfg.deployment)
        pings.start()
        process = ProcessState(store, overload)
        gateway = Gateway(
            router, pings, max_body, guard=guard, replays=replays, sealer=sealer, process=process
        )
        gateway.websocket_idle = cfg.http.websocket_idle_timeout
        routes = observe(gateway, cfg, env, access_out)
        yield gateway
    finally:
        pings.stop()
        if routes is not None:
            routes.close()
        await router.close()
        if gateway is not None and gateway.router is not router:
            await gateway.router.close()  # (a reload swapped it)
        if replays is not None:
            await replays.close()
        await store.close()


@asynccontextmanager
async def listen(
    gateway: Gateway,
    host: str,
    port: int,
    *,
    http: Http = DEFAULT_HTTP,
    reuse_port: bool = False,
    sock: Any = None,
    drain_timeout: float = SHUTDOWN_GRACE,
) -> AsyncIterator[asyncio.Server]:
    """Serve ``gateway`` on host:port (or on the listening socket ``sock``); on exit,
    drain: stop listening, let requests and streams finish for ``drain_timeout`` s,
    then end the streams left (``response.failed``) and close."""
    loop = asyncio.get_running_loop()
    server: Server | AiohttpServer
    if http.server == "aiohttp":  # (imported only then: aiohttp's server costs startup)
        from gateway.http.aiohttp_server import AiohttpServer

        server = AiohttpServer(gateway.handle, max_body=gateway.max_body, limits=http)
    else:
        server = Server(gateway.handle, max_body=gateway.max_body, limits=http)
    if sock is not None:
        sock_server = await loop.create_server(server, sock=sock, backlog=LISTEN_BACKLOG)
    else:
        sock_server = await loop.create_server(
            server, host, port, reuse_port=reuse_port or None, backlog=LISTEN_BACKLOG
        )
    process = gateway.process
    process.listening += 1
    process.servers.append(server)
    try:
        yield sock_server
    finally:
        process.drain()
        process.listening -= 1
        process.servers.remove(server)
        sock_server.close()
        server.begin_drain()
        if not await gateway.idle(drain_timeout):
            log.warning(
                "drain: %d request(s) still in flight after %.1f s: ending their streams",
                gateway.in_flight,
                drain_timeout,
            )
            gateway.cut_streams()
            await gateway.idle(SHUTDOWN_GRACE)
        await server.shutdown(SHUTDOWN_GRACE)


@asynccontextmanager
async def metrics_listener(gateway: Gateway, cfg: Config, reuse_port: bool) -> AsyncIterator[None]:
    """``/metrics`` on a listener of its own, when ``[ops] metrics-listen`` says so (each
    worker binds it too, with SO_REUSEPORT: any of them reports them all)."""
    handler = gateway.process.metrics_only
    if handler is None:
        yield
        return
    host, port = cfg.ops.metrics_address
    server = Server(handler, max_body=0, limits=cfg.http)
    loop = asyncio.get_running_loop()
    sock_server = await loop.create_server(server, host, port, reuse_port=reuse_port or None)
    log.info("metrics on http://%s:%d/metrics only", host, port)
    try:
        yield
    finally:
        sock_server.close()
        server.begin_drain()
        await server.shutdown(SHUTDOWN_GRACE)


Reread = Callable[[], tuple[Config, str | None]]


def listening_socket(env: Mapping[str, str], listen_fd: int | None) -> Any:
    """The socket systemd (or the supervisor) passed in, if any (socket activation)."""
    if listen_fd is None:
        fds = listen_fds(env, os.getpid())
        listen_fd = fds[0] if fds else None
    return None if listen_fd is None else activated_socket(listen_fd)


async def serve(
    cfg: Config,
    env: Mapping[str, str],
    *,
    reuse_port: bool = False,
    keys_text: str | None = None,
    listen_fd: int | None = None,
    reread: Reread | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain; SIGHUP re-reads the config (``reread``)."""
    notifier = Notifier(notify_address(env))
    sock = listening_socket(env, listen_fd)
    async with (
        open_gateway(cfg, env, keys_text=keys_text) as gateway,
        listen(
            gateway,
            cfg.listen.host,
            cfg.listen.port,
            http=cfg.http,
            reuse_port=reuse_port,
            sock=sock,
            drain_timeout=cfg.ops.drain_timeout,
        ) as server,
        metrics_listener(gateway, cfg, reuse_port),
    ):
        where = ", ".join(_address(s) for s in server.sockets)
        log.info(
            "gateway %d serving http://%s/v1 (%s server%s): models %s; %s",
            os.getpid(),
            where,
            cfg.http.server,
            ", socket from the service manager" if sock is not None else "",
            ", ".join(gateway.router.model_ids()) or "none yet",
            "; ".join(
                f"{' '.join(d.urls)} for {', '.join(d.models) or 'its /models'}"
                for d in cfg.deployment
            ),
        )
        log.info(
            "health on /healthz and /readyz%s; drain %.1f s",
            (", metrics on /metrics" if cfg.ops.metrics and not cfg.ops.metrics_listen else ""),
            cfg.ops.drain_timeout,
        )

        def status() -> str:
            return f"{gateway.in_flight} requests in flight"

        collector.settle()  # (startup's objects: frozen; collections: rare)
        notifier.ready(status())
        notifier.start(watchdog_interval(env, os.getpid()), status)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        reloads = Reloads(gateway, cfg, env, reread)
        if reread is not None:
            loop.add_signal_handler(signal.SIGHUP, reloads.request)
        await stop.wait()
        log.info("drain: stopping (%d request(s) in flight)", gateway.in_flight)
        notifier.stop()
        notifier.stopping(f"draining {gateway.in_flight} requests")
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if reread is not None:
            loop.remove_signal_handler(signal.SIGHUP)
    await reloads.close()
    notifier.close()
    log.info("gateway %d stopped", os.getpid())


def _address(sock: Any) -> str:
    name = sock.getsockname()
    if isinstance(name, tuple):
        host = f"[{name[0]}]" if ":" in name[0] else name[0]
        return f"{host}:{name[1]}"
    return str(name)


def run(
    cfg: Config,
    env: Mapping[str, str],
    *,
    reuse_port: bool = False,
    keys_text: str | None = None,
    listen_fd: int | None = None,
    reread: Reread | None = None,
) -> None:
    import uvloop

    if reread is not None:
        # A SIGHUP before serve() handles it (a reload asked for during the start) would
        # end the process: it is ignored until then.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    uvloop.run(
        serve(
            cfg, env, reuse_port=reuse_port, keys_text=keys_text, listen_fd=listen_fd, reread=reread
        )
    )
