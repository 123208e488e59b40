"""The gateway's settings: frozen msgspec Structs decoded once from TOML.

Example ``gateway.toml``::

    [listen]
    host = "127.0.0.1"
    port = 8080

    [[deployment]]
    models = ["qwen"]                     # ids clients send; empty: ask the upstream's /v1/models
    upstream = "http://127.0.0.1:8000/v1"
    upstream-model = "Qwen/Qwen2.5-7B-Instruct"   # sent upstream; default: the id the client used
    token-field = "max_tokens"            # or "max_completion_tokens"
    api-key-env = "UPSTREAM_API_KEY"      # the key is read from this environment variable
    connect-timeout = 10.0
    read-timeout = 600.0                  # for the response headers, and between two body chunks
    max-body-bytes = 8388608

    [deployment.supports]
    streaming = true
    stream-usage = true                   # stream_options.include_usage
    tools = true
    structured-output = true
    images = true

Unknown keys are errors (``forbid_unknown_fields``), so a typo fails at
``gateway check-config`` instead of being ignored. Only ``cli`` reads files
and the environment; everything else receives these objects.
"""

from __future__ import annotations

import os
from typing import Literal

import msgspec


class _Base(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    pass


class Listen(_Base, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8080


class Supports(_Base, frozen=True):
    streaming: bool = True
    # Ask for usage on the last streamed chunk (stream_options.include_usage).
    stream_usage: bool = True
    tools: bool = True
    structured_output: bool = True
    images: bool = True


# 8 MiB: room for a few base64 images in a request; OpenAI's own limit is larger,
# but a gateway at the edge should refuse a runaway body before decoding it.
DEFAULT_MAX_BODY = 8 * 1024 * 1024
# The official clients' default timeout is 600 s.
DEFAULT_READ_TIMEOUT = 600.0


class Deployment(_Base, frozen=True):
    upstream: str
    models: tuple[str, ...] = ()
    upstream_model: str | None = None
    token_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    api_key_env: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_body_bytes: int = DEFAULT_MAX_BODY
    supports: Supports = Supports()

    def __post_init__(self) -> None:
        if not self.upstream.startswith(("http://", "https://")):
            raise ValueError(f"upstream must be an http:// or https:// URL, got {self.upstream!r}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_body_bytes <= 0:
            raise ValueError("max-body-bytes must be positive")


class Stream(_Base, frozen=True):
    # Seconds of upstream silence before an SSE comment goes to the client, so
    # proxies with idle timeouts (often 30-60 s) keep the connection open.
    keepalive_interval: float = 15.0


class Config(_Base, frozen=True):
    listen: Listen = Listen()
    deployment: tuple[Deployment, ...] = ()
    stream: Stream = Stream()
    workers: int = 1

    def __post_init__(self) -> None:
        if not self.deployment:
            raise ValueError("at least one [[deployment]] is required")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")


class ConfigError(Exception):
    pass


def load(path: str) -> Config:
    """Read and validate a TOML config file; raise ConfigError naming the bad key."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return msgspec.toml.decode(data, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def api_key(dep: Deployment, environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """The upstream API key for ``dep``, from the environment variable the file names."""
    if dep.api_key_env is None:
        return None
    return environ.get(dep.api_key_env) or None
