"""Command line: ``gateway serve``, ``gateway check-config``, ``gateway demo-upstream``.

    python -m gateway serve --host H --port P --upstream URL [--upstream URL ...]
                            [--model NAME ...] [--upstream-timeout S] [--workers N]
                            [--http lean|aiohttp] [--hosted-tools refuse|drop]
    python -m gateway serve --config gateway.toml [--host H] [--port P] [--workers N]
                            [--http lean|aiohttp]
    (either form) [--api-keys-file PATH] [--redis URL]
    python -m gateway check-config gateway.toml
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
import socket
import subprocess
import sys
import time
import urllib.request

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
)
from gateway.limits import UPSTREAM_READ_TIMEOUT

log = logging.getLogger("gateway")


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
    s.add_argument("--workers", type=int, help="processes sharing the port (SO_REUSEPORT)")
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
    s.add_argument("--log-level", default="INFO")
    c = sub.add_parser("check-config", help="validate a config file and exit")
    c.add_argument("file")
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
    from gateway.ops import lifecycle

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    demo = None
    if not args.config and not args.upstream:
        demo, url = start_demo()
        args.upstream = [url]
        log.warning(
            "no upstream configured: serving the bundled DEMO upstream (a fake model) at %s", url
        )
    try:
        cfg = build_config(args)
        keys_text = read_keys(cfg)
        if cfg.auth is not None:
            client_keys(cfg.auth, os.environ, keys_text)  # none at all: fail now, not per worker
        seal_keys(cfg.seal, os.environ)  # a malformed seal key: likewise
        if cfg.workers > 1:
            return lifecycle.run_workers(cfg, os.environ, keys_text=keys_text)
        lifecycle.run(cfg, os.environ, keys_text=keys_text)
        return 0
    finally:
        if demo is not None:
            demo.terminate()
            demo.wait(5)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo-upstream"]:
        from gateway.demo import upstream

        return upstream.main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            cfg = load(args.file)
            print(f"{args.file}: OK ({len(cfg.deployment)} deployment(s))")
            return 0
        return serve(args)
    except (ConfigError, ValueError, msgspec.ValidationError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
