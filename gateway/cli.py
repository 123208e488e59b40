"""Command line: ``gateway serve``, ``gateway check-config``, ``gateway demo-upstream``.

    python -m gateway serve --host H --port P --upstream URL [--upstream URL ...]
                            [--model NAME ...] [--upstream-timeout S] [--workers N|auto]
                            [--http lean|aiohttp] [--hosted-tools refuse|drop]
    python -m gateway serve --config gateway.toml [--host H] [--port P] [--workers N|auto]
                            [--http lean|aiohttp]
    (either form) [--api-keys-file PATH] [--redis URL] [--log-level L] [--log-format F]
                  [--drain-timeout S] [--no-metrics] [--no-access-log]
    python -m gateway check-config [--config] gateway.toml
    python -m gateway demo-upstream [--port P] ...

``serve`` with neither ``--upstream`` nor ``--config`` starts the bundled demo
upstream (a fake model) and serves it, so the gateway works out of the box.
This is the only module that reads files, argv and the environment: the config
file's bytes go to ``config.parse``, the client keys file's text and
``os.environ`` are handed down to the process (``ops.lifecycle``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping

import msgspec

from gateway import __version__
from gateway.config import (
    Auth,
    Config,
    ConfigError,
    Deployment,
    Idempotency,
    Listen,
    client_keys,
    parse,
    seal_keys,
    upstream_key,
)
from gateway.limits import UPSTREAM_READ_TIMEOUT

log = logging.getLogger("gateway")
LEVELS = ("debug", "info", "warning", "error")


def _workers(text: str) -> int:
    """``--workers``: a count, or ``auto`` (one per CPU)."""
    if text == "auto":
        return os.cpu_count() or 1
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1 (or auto)")
    return n


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--config", help="TOML config file (see gateway/config.py)")
    s.add_argument("--host", help="listen address (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="listen port (default 8080)")
    s.add_argument(
        "--upstream",
        action="append",
        default=[],
        help="chat-completions base URL, e.g. http://127.0.0.1:8000/v1; given several "
        "times: one deployment with those replicas",
    )
    s.add_argument(
        "--model",
        action="append",
        default=[],
        help="model id to serve (repeatable); default: the upstream's /v1/models",
    )
    s.add_argument(
        "--upstream-timeout",
        type=float,
        default=UPSTREAM_READ_TIMEOUT,
        help="seconds to wait for upstream headers and between chunks (default 600)",
    )
    s.add_argument(
        "--workers",
        type=_workers,
        help="processes sharing the port under a supervisor; auto: one per CPU",
    )
    s.add_argument(
        "--http",
        choices=("lean", "aiohttp"),
        help="HTTP server: lean (ours, the default) or aiohttp (aiohttp's low-level server)",
    )
    s.add_argument(
        "--api-keys-file",
        help="client API keys, one per line: every /v1/* request needs one ([auth] keys-file)",
    )
    s.add_argument(
        "--redis",
        metavar="URL",
        help="share idempotency keys and limits through Redis, e.g. redis://127.0.0.1:6379/0",
    )
    s.add_argument(
        "--hosted-tools",
        choices=("refuse", "drop"),
        help="hosted tools in a request (web_search, ...): refused with a 400 (the default) "
        "or dropped, for every deployment (a deployment's hosted-tools)",
    )
    s.add_argument("--log-level", type=str.lower, choices=LEVELS, help="default: info ([ops])")
    s.add_argument(
        "--log-format",
        choices=("auto", "json", "text"),
        help="log lines as JSON or text; auto (the default): text on a terminal",
    )
    s.add_argument(
        "--drain-timeout",
        type=float,
        help="seconds requests and streams get to finish after SIGTERM (default 30)",
    )
    s.add_argument("--no-metrics", action="store_true", help="no GET /metrics")
    s.add_argument("--no-access-log", action="store_true", help="no line per request")
    c = sub.add_parser("check-config", help="validate a config file and exit")
    c.add_argument("file", nargs="?")
    c.add_argument("--config", dest="config_file", help="the config file (or give it plainly)")
    c.add_argument(
        "--api-keys-file", help="the client API keys file the service will read (as serve's)"
    )
    sub.add_parser(
        "demo-upstream", help="run the bundled demo chat-completions server", add_help=False
    )
    return p


def load(path: str) -> Config:
    """Read and validate a TOML config file; raise ConfigError naming the bad key."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return parse(data, path)


def build_config(args: argparse.Namespace) -> Config:
    if args.config:
        if args.upstream or args.model:
            raise ConfigError("--upstream/--model and --config cannot be combined")
        cfg = load(args.config)
    else:
        urls = tuple(args.upstream)
        dep = Deployment(
            upstream=urls[0] if len(urls) == 1 else urls,
            models=tuple(args.model),
            read_timeout=args.upstream_timeout,
        )
        cfg = Config(deployment=(dep,))
    listen = Listen(
        host=args.host or cfg.listen.host,
        port=args.port if args.port is not None else cfg.listen.port,
    )
    http = msgspec.structs.replace(cfg.http, server=args.http) if args.http else cfg.http
    auth = cfg.auth
    if args.api_keys_file:
        keys_env = auth.keys_env if auth is not None else None
        auth = Auth(keys_env=keys_env, keys_file=args.api_keys_file)
    idem = cfg.idempotency
    if args.redis:
        idem = Idempotency(
            **{**msgspec.structs.asdict(idem), "store": "redis", "redis_url": args.redis}
        )
    ops = cfg.ops
    changes = {
        "log_level": args.log_level,
        "log_format": args.log_format,
        "drain_timeout": args.drain_timeout,
        "metrics": False if args.no_metrics else None,
        "access_log": False if args.no_access_log else None,
    }
    ops = msgspec.structs.replace(ops, **{k: v for k, v in changes.items() if v is not None})
    if ops.drain_timeout < 0:
        raise ConfigError("--drain-timeout must not be negative")
    deployments = cfg.deployment
    if args.hosted_tools:
        deployments = tuple(
            msgspec.structs.replace(d, hosted_tools=args.hosted_tools) for d in deployments
        )
    return msgspec.structs.replace(
        cfg,
        listen=listen,
        http=http,
        deployment=deployments,
        workers=args.workers if args.workers else cfg.workers,
        auth=auth,
        idempotency=idem,
        ops=ops,
    )


def read_keys(cfg: Config) -> str | None:
    """The text of the ``[auth]`` keys file, if there is one."""
    if cfg.auth is None or not cfg.auth.keys_file:
        return None
    try:
        with open(cfg.auth.keys_file, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise ConfigError(f"cannot read the API keys file {cfg.auth.keys_file}: {why}") from exc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_demo() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "gateway.demo", "--host", "127.0.0.1", "--port", str(port)]
    cmd.append("--reasoning")  # so that `make run` shows reasoning items
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/models", timeout=1):
                return proc, url
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise ConfigError("the bundled demo upstream did not start")


def serve(args: argparse.Namespace) -> int:
    from gateway.ops.access_log import setup

    if args.config:  # SIGHUP re-reads it, once serving; until then a reload is ignored
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    setup(args.log_level or "info", args.log_format or "auto")
    demo = None
    if not args.config and not args.upstream:
        demo, url = start_demo()
        args.upstream = [url]
        log.warning(
            "no upstream configured: serving the bundled DEMO upstream (a fake model) at %s", url
        )
    try:
        cfg, keys_text = reread(args)
        setup(cfg.ops.log_level, cfg.ops.log_format)

        def again() -> tuple[Config, str | None]:  # SIGHUP: the same files, read anew
            return reread(args)

        hup = again if args.config else None
        if cfg.workers > 1:
            return supervise(cfg, keys_text, hup)
        from gateway.ops import lifecycle

        lifecycle.run(cfg, os.environ, keys_text=keys_text, reread=hup)
        return 0
    finally:
        if demo is not None:
            demo.terminate()
            demo.wait(5)


def reread(args: argparse.Namespace) -> tuple[Config, str | None]:
    """The config (file and flags) and the keys file's text, checked; ConfigError if bad."""
    cfg = build_config(args)
    keys_text = read_keys(cfg)
    check_environment(cfg, os.environ, keys_text)  # fail now, not in every worker
    return cfg, keys_text


def check_environment(
    cfg: Config, env: Mapping[str, str], keys_text: str | None, *, every_key: bool = False
) -> None:
    """What the config needs of the environment it will run with; ConfigError if not:
    client API keys where ``[auth]`` wants some, well-formed seal keys, upstream keys that
    can go in a header, and (``every_key``: check-config) every ``api-key-env`` set."""
    if cfg.auth is not None:
        client_keys(cfg.auth, env, keys_text)
    seal_keys(cfg.seal, env)
    for dep in cfg.deployment:
        if upstream_key(dep, env) is None and dep.api_key_env and every_key:
            raise ConfigError(
                f"{dep.api_key_env} is not set: the upstream API key of the deployment of "
                f"{dep.urls[0]} (api-key-env)"
            )


def supervise(cfg: Config, keys_text: str | None, hup: object) -> int:
    """Several workers: their metrics meet in a directory that must be named in the
    environment before the metrics library is first imported (its import reads it)."""
    import shutil
    import tempfile

    metrics_dir = None
    if cfg.ops.metrics:
        metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from gateway.ops.build import with_seal_key
    from gateway.ops.supervisor import Supervisor

    try:
        env = with_seal_key(
            cfg, os.environ
        )  # (one key for every worker: each opens what any seals)
        sup = Supervisor(cfg, env, keys_text=keys_text, reread=hup, metrics_dir=metrics_dir)
        return sup.run()
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo-upstream"]:
        from gateway.demo import upstream

        return upstream.main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            path = args.config_file or args.file
            if not path:
                print("gateway: check-config needs a config file", file=sys.stderr)
                return 2
            cfg = load(path)
            if args.api_keys_file:
                keys_env = cfg.auth.keys_env if cfg.auth is not None else None
                auth = Auth(keys_env=keys_env, keys_file=args.api_keys_file)
                cfg = msgspec.structs.replace(cfg, auth=auth)
            check_environment(cfg, os.environ, read_keys(cfg), every_key=True)
            print(f"{path}: OK ({len(cfg.deployment)} deployment(s))")
            return 0
        return serve(args)
    except (ConfigError, ValueError, msgspec.ValidationError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
