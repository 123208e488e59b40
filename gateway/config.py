"""The gateway's settings: frozen msgspec Structs decoded once from TOML.

Example ``gateway.toml``::

    [listen]
    host = "127.0.0.1"
    port = 8080

    [http]                                # every key optional: gateway/limits.py has the defaults
    server = "lean"                       # or "aiohttp" (also: serve --http aiohttp)
    max-request-line = 8190               # bytes; a longer line, header line or head: 431
    max-header-line = 8190
    max-headers = 128
    max-head-bytes = 65536
    head-timeout = 15.0                   # seconds to send a request head: 408
    body-timeout = 60.0                   # seconds a request body may stall: 408
    keepalive-timeout = 75.0              # an idle client connection is closed after this
    max-connections = 10000               # one more is answered 503 and closed
    max-pipelined = 8                     # requests queued on one connection before reading stops
    websocket-idle-timeout = 300.0        # a Responses WebSocket without a message: closed

    [auth]                                # client API keys: every /v1/* request needs one
    keys-env = "GATEWAY_API_KEYS"         # keys in this environment variable (comma-separated;
                                          # a '#' there is part of a key)
    keys-file = "/etc/gateway/keys"       # and/or one per line in this file (also: serve
                                          # --api-keys-file PATH); '#' starts a comment

    [limits]                              # per client API key (one shared key without [auth])
    requests-per-minute = 600             # 0: no limit; over it: 429 with Retry-After
    max-in-flight = 32                    # 0: no limit

    [idempotency]                         # Idempotency-Key on non-streaming POSTs
    enabled = true
    store = "memory"                      # or "redis" (also: serve --redis URL): shared by
    redis-url = "redis://127.0.0.1:6379/0"  # processes and hosts; [limits] count there too;
                                          # or "sqlite" (sqlite-path = FILE): the processes
                                          # of one host. "memory" with workers > 1 is
                                          # "sqlite" in the supervisor's runtime directory
    retention = 86400.0                   # seconds an answer stays replayable
    lock-ttl = 30.0                       # seconds a crashed holder keeps its key locked
    max-entries = 100000                  # the memory store's bounds
    max-bytes = 268435456

    [ops]
    metrics = true                        # GET /metrics (Prometheus text format)
    metrics-listen = "127.0.0.1:9464"     # /metrics on this listener only (default: the
                                          # API's port, where anyone reaching it may scrape)
    metrics-auth = false                  # true: /metrics on the API's port needs a client key
    access-log = true                     # one line per finished request
    log-level = "info"                    # debug | info | warning | error (also --log-level)
    log-format = "auto"                   # json | text | auto: text on a terminal (--log-format)
    drain-timeout = 30.0                  # seconds requests and streams get after SIGTERM

    [overload]                            # requests in flight upstream, all deployments together
    max-in-flight = 0                     # 0: no limit; beyond it requests queue
    max-queued = 1024                     # a request beyond the queue: 503 at once
    queue-timeout = 5.0                   # seconds in the queue at most, then 503 + Retry-After

    [[deployment]]
    models = ["qwen"]                     # ids clients send; empty: ask the upstream's /v1/models
    upstream = "http://127.0.0.1:8000/v1" # or a list: the replicas of this deployment
    # upstream = ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"]
    weights = [1.0, 2.0]                  # per replica (default: all 1): least loaded per weight
    upstream-model = "Qwen/Qwen2.5-7B-Instruct"   # sent upstream; default: the id the client used
    token-field = "max_tokens"            # or "max_completion_tokens"
    api-key-env = "UPSTREAM_API_KEY"      # the key is read from this environment variable
    connect-timeout = 10.0
    read-timeout = 600.0                  # for the response headers, and between two body chunks
    headers-timeout = 600.0               # default read-timeout: queueing and prefill
    chunk-timeout = 600.0                 # default read-timeout: the gap between two chunks
    request-timeout = 0.0                 # the whole request, connect to end; 0: no bound
    max-body-bytes = 8388608
    max-answer-bytes = 67108864           # a non-streamed upstream answer read at most (502)
    affinity-header = "x-session-id"      # cache affinity key when the body has none
                                          # (prompt_cache_key, else user / safety_identifier)
    affinity-load-factor = 2.0            # a key's replica above this x the mean load is skipped
    eject-after = 3                       # consecutive failures (a 5xx answer: half): ejected
    probe-interval = 2.0                  # seconds between probes of an ejected replica
    active-probe-interval = 0.0           # probe every replica this often; 0: off
    max-attempts = 3                      # tries of a request (only ever retried when safe)
    retry-budget = 10.0                   # seconds after which no new attempt starts
    max-in-flight = 0                     # this deployment's bound ([overload]'s meaning)
    max-queued = 1024
    queue-timeout = 5.0
    hosted-tools = "refuse"               # or "drop": hosted tools (web_search, ...) in a
                                          # request are dropped, not refused (also: serve
                                          # --hosted-tools drop)
    compaction-prompt = "Summarise ..."   # the last message of a compaction's request to
                                          # the model (default: COMPACTION_PROMPT below)

    [deployment.supports]
    streaming = true
    stream-usage = true                   # stream_options.include_usage
    tools = true
    structured-output = true
    images = true

    [deployment.reasoning]                # every key optional
    enabled = true                        # false: an effort other than "none" is a 400
    effort-field = "reasoning_effort"     # the chat field reasoning.effort goes in ("": none)
    effort-map = { xhigh = "high", max = "high", ultra = "high" }   # values it does not know
    none-fields = { chat_template_kwargs = { enable_thinking = false } }  # sent for "none"
    replay-field = "reasoning_content"    # or "reasoning", or "drop": replayed reasoning
    summary-text = false                  # also return the reasoning text as the summary

    [seal]                                # reasoning.encrypted_content
    key-env = "GATEWAY_SEAL_KEY"          # the default; its value: base64 of 32 bytes, or
                                          # several comma-separated (the first seals, all open)

Unknown keys are errors (``forbid_unknown_fields``), so a typo fails at
``gateway check-config`` instead of being ignored. Nothing here reads a file or
the environment: ``cli`` reads the file and hands its bytes to ``parse``, and
reads the environment once, handing it down as a mapping (``upstream_key``,
``client_keys``); a keys file is read there too and handed down as text.
Defaults that are bounds come from ``gateway.limits``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from gateway import limits


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


class Overload(_Base, frozen=True):
    """A bound on requests in flight upstream, with a bounded queue in front of it."""

    max_in_flight: int = 0  # 0: no bound
    max_queued: int = limits.OVERLOAD_MAX_QUEUED
    queue_timeout: float = limits.OVERLOAD_QUEUE_TIMEOUT

    def __post_init__(self) -> None:
        if self.max_in_flight < 0 or self.max_queued < 0 or self.queue_timeout < 0:
            raise ValueError("max-in-flight, max-queued and queue-timeout must not be negative")


class Reasoning(_Base, frozen=True):
    """What a deployment's model does with reasoning (``core.capabilities`` has the meanings)."""

    enabled: bool = True
    effort_field: str = "reasoning_effort"
    effort_map: dict[str, str] = msgspec.field(default_factory=dict)
    none_fields: dict[str, Any] = msgspec.field(default_factory=dict)
    replay_field: Literal["reasoning_content", "reasoning", "drop"] = "reasoning_content"
    summary_text: bool = False


# What the upstream model is asked, after the conversation, to compact it
# (POST /v1/responses/compact, or a compaction_trigger input item): its answer is sealed
# into the compaction item that stands for the conversation from then on.
COMPACTION_PROMPT = (
    "You are compacting this conversation: its history is about to be replaced by your "
    "summary, which is all that later turns will see of it. Write the summary now, as plain "
    "text, without calling any tool. Keep: what the user asked for and every constraint they "
    "gave, in their own words where the wording matters; what has been done so far (files "
    "read or changed, commands run and what they showed); the decisions taken and why; "
    "errors not yet resolved, open questions and the next steps. Be concise and factual."
)


class Deployment(_Base, frozen=True):
    upstream: str | tuple[str, ...]  # one base URL, or the replicas' base URLs
    models: tuple[str, ...] = ()
    upstream_model: str | None = None
    token_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    api_key_env: str | None = None
    connect_timeout: float = limits.UPSTREAM_CONNECT_TIMEOUT
    # The default of both headers-timeout and chunk-timeout (``--upstream-timeout``).
    read_timeout: float = limits.UPSTREAM_READ_TIMEOUT
    headers_timeout: float | None = None
    chunk_timeout: float | None = None
    request_timeout: float = 0.0  # 0: no bound on the whole request
    max_body_bytes: int = limits.MAX_REQUEST_BODY
    max_answer_bytes: int = limits.UPSTREAM_MAX_ANSWER
    # Tools that run on OpenAI's side (web_search, tool_search, image_generation, ...):
    # refused with a 400 that says how to proceed, or dropped (counted and logged).
    hosted_tools: Literal["refuse", "drop"] = "refuse"
    compaction_prompt: str = COMPACTION_PROMPT
    supports: Supports = Supports()
    weights: tuple[float, ...] = ()
    affinity_header: str | None = None
    affinity_load_factor: float = limits.AFFINITY_LOAD_FACTOR
    eject_after: int = limits.EJECT_AFTER
    probe_interval: float = limits.PROBE_INTERVAL
    active_probe_interval: float = 0.0
    max_attempts: int = limits.UPSTREAM_MAX_ATTEMPTS
    retry_budget: float = limits.UPSTREAM_RETRY_BUDGET
    max_in_flight: int = 0
    max_queued: int = limits.OVERLOAD_MAX_QUEUED
    queue_timeout: float = limits.OVERLOAD_QUEUE_TIMEOUT
    reasoning: Reasoning = Reasoning()

    def __post_init__(self) -> None:
        urls = self.urls
        if not urls:
            raise ValueError("upstream needs at least one URL")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"upstream must be an http:// or https:// URL, got {url!r}")
        if self.weights and (len(self.weights) != len(urls) or min(self.weights) <= 0):
            raise ValueError("weights: one positive number per upstream URL")
        timeouts = (self.connect_timeout, self.read_timeout, self.headers_timeout or 1.0)
        if min(timeouts + (self.chunk_timeout or 1.0, self.probe_interval)) <= 0:
            raise ValueError("timeouts must be positive")
        if self.request_timeout < 0 or self.active_probe_interval < 0 or self.retry_budget < 0:
            raise ValueError("request-timeout, active-probe-interval, retry-budget: not negative")
        if self.max_body_bytes <= 0 or self.max_answer_bytes <= 0:
            raise ValueError("max-body-bytes and max-answer-bytes must be positive")
        if self.eject_after < 1 or self.max_attempts < 1 or self.affinity_load_factor < 1:
            raise ValueError("eject-after, max-attempts and affinity-load-factor must be >= 1")
        if self.max_in_flight < 0 or self.max_queued < 0 or self.queue_timeout < 0:
            raise ValueError("max-in-flight, max-queued and queue-timeout must not be negative")
        if not self.compaction_prompt.strip():
            raise ValueError("compaction-prompt must not be empty")

    @property
    def urls(self) -> tuple[str, ...]:
        """The base URLs of the deployment's replicas."""
        return (self.upstream,) if isinstance(self.upstream, str) else self.upstream


class Stream(_Base, frozen=True):
    # Seconds of upstream silence before an SSE comment (a ping) goes to the
    # client; 0 turns pings off. (The key predates the word "ping"; kept so that
    # existing files still load.)
    keepalive_interval: float = limits.SSE_PING_INTERVAL


class Http(_Base, frozen=True):
    """The client-facing HTTP server: which one, and its bounds (``gateway.limits``)."""

    # "lean": ours, on httptools (the default, measured faster); "aiohttp": aiohttp's
    # low-level server running the same handler, the battle-tested reference.
    server: Literal["lean", "aiohttp"] = "lean"
    max_request_line: int = limits.MAX_REQUEST_LINE
    max_header_line: int = limits.MAX_HEADER_LINE
    max_headers: int = limits.MAX_HEADERS
    max_head_bytes: int = limits.MAX_REQUEST_HEAD
    head_timeout: float = limits.REQUEST_HEAD_TIMEOUT
    body_timeout: float = limits.REQUEST_BODY_TIMEOUT
    keepalive_timeout: float = limits.HTTP_KEEPALIVE_IDLE
    max_connections: int = limits.MAX_CONNECTIONS
    max_pipelined: int = limits.MAX_PIPELINED
    websocket_ping_interval: float = limits.WEBSOCKET_PING_INTERVAL
    websocket_ping_timeout: float = limits.WEBSOCKET_PING_TIMEOUT
    websocket_idle_timeout: float = limits.WEBSOCKET_IDLE_TIMEOUT

    def __post_init__(self) -> None:
        sizes = (self.max_request_line, self.max_header_line, self.max_headers)
        if min(sizes) < 1 or self.max_head_bytes < 1024:
            raise ValueError("[http] sizes and counts must be positive (max-head-bytes >= 1024)")
        times = (self.head_timeout, self.body_timeout, self.keepalive_timeout)
        websocket = (self.websocket_ping_interval, self.websocket_ping_timeout)
        if min(*times, *websocket, self.websocket_idle_timeout) <= 0:
            raise ValueError("[http] timeouts must be positive")
        if self.max_connections < 1 or self.max_pipelined < 1:
            raise ValueError("[http] max-connections and max-pipelined must be at least 1")


class Auth(_Base, frozen=True):
    """Where the client API keys are (``cli`` reads them; see ``client_keys``)."""

    keys_env: str | None = None
    keys_file: str | None = None

    def __post_init__(self) -> None:
        if not self.keys_env and not self.keys_file:
            raise ValueError("[auth] needs keys-env or keys-file")


class Limits(_Base, frozen=True):
    """Per client API key; 0 turns a limit off."""

    requests_per_minute: int = 0
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        if self.requests_per_minute < 0 or self.max_in_flight < 0:
            raise ValueError("[limits] must not be negative")


class Idempotency(_Base, frozen=True):
    enabled: bool = True
    store: Literal["memory", "redis", "sqlite"] = "memory"
    redis_url: str | None = None
    sqlite_path: str | None = None
    retention: float = limits.IDEMPOTENCY_RETENTION
    lock_ttl: float = limits.IDEMPOTENCY_LOCK_TTL
    max_entries: int = limits.IDEMPOTENCY_MAX_ENTRIES
    max_bytes: int = limits.IDEMPOTENCY_MAX_BYTES

    def __post_init__(self) -> None:
        if self.store == "redis" and not self.redis_url:
            raise ValueError('[idempotency] store = "redis" needs redis-url')
        if self.store == "sqlite" and not self.sqlite_path:
            raise ValueError('[idempotency] store = "sqlite" needs sqlite-path')
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis-url must be a redis://, rediss:// or unix:// URL")
        if min(self.retention, self.lock_ttl) <= 0:
            raise ValueError("[idempotency] retention and lock-ttl must be positive")
        if self.max_entries < 1 or self.max_bytes < 1:
            raise ValueError("[idempotency] max-entries and max-bytes must be positive")


class Ops(_Base, frozen=True):
    """The process: what it tells operators (metrics, logs) and how it stops."""

    metrics: bool = True  # GET /metrics
    # /metrics on a listener of its own ("host:port", e.g. a loopback port), not the API's
    metrics_listen: str | None = None
    metrics_auth: bool = False  # /metrics (on the API's port) needs a client API key
    access_log: bool = True  # one line per finished request (logger gateway.access, INFO)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "text"] = "auto"  # auto: text on a terminal, else JSON
    drain_timeout: float = limits.DRAIN_TIMEOUT  # seconds in-flight requests get after SIGTERM

    def __post_init__(self) -> None:
        if self.drain_timeout < 0:
            raise ValueError("[ops] drain-timeout must not be negative")
        if self.metrics_listen is not None:
            host, _, port = self.metrics_listen.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError('[ops] metrics-listen must be "host:port"')

    @property
    def metrics_address(self) -> tuple[str, int]:
        """``metrics-listen`` as (host, port); the brackets of an IPv6 host dropped."""
        assert self.metrics_listen is not None
        host, _, port = self.metrics_listen.rpartition(":")
        return host.strip("[]"), int(port)


class Seal(_Base, frozen=True):
    """Where the keys that seal reasoning (``encrypted_content``) are: ``seal_keys``."""

    key_env: str = "GATEWAY_SEAL_KEY"


class Config(_Base, frozen=True):
    listen: Listen = Listen()
    http: Http = Http()
    deployment: tuple[Deployment, ...] = ()
    stream: Stream = Stream()
    workers: int = 1
    auth: Auth | None = None
    limits: Limits = Limits()
    idempotency: Idempotency = Idempotency()
    ops: Ops = Ops()
    overload: Overload = Overload()
    seal: Seal = Seal()

    def __post_init__(self) -> None:
        if not self.deployment:
            raise ValueError("at least one [[deployment]] is required")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")


class ConfigError(Exception):
    pass


def parse(data: bytes, source: str) -> Config:
    """Validate a TOML config file's bytes; raise ConfigError naming ``source`` and the bad key."""
    try:
        return msgspec.toml.decode(data, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc


def upstream_key(dep: Deployment, env: Mapping[str, str]) -> str | None:
    """The upstream API key for ``dep``: the variable of ``env`` its ``api-key-env`` names.
    A key that could not go in a header as it is (a CR, LF or other control character,
    or a character beyond latin-1) is refused: ``ConfigError``, at start."""
    if dep.api_key_env is None:
        return None
    key = env.get(dep.api_key_env) or None
    if key is not None and not all(" " <= c <= "~" or "\xa0" <= c <= "\xff" for c in key):
        raise ConfigError(
            f"{dep.api_key_env}: the upstream API key holds a character that cannot go in "
            "an HTTP header (a line break or other control character, or one beyond latin-1)"
        )
    return key


def parse_keys(text: str, *, comments: bool = True) -> tuple[str, ...]:
    """Client API keys from a keys file's text (one per line; blank lines and, with
    ``comments``, ``#`` comments skipped) or an environment variable's value (split at
    commas and spaces; ``comments=False``: a ``#`` there is part of a key)."""
    keys = []
    for line in text.splitlines():
        if comments:
            line = line.split("#", 1)[0]
        keys += [k for k in line.replace(",", " ").split() if k]
    return tuple(dict.fromkeys(keys))


def client_keys(auth: Auth, env: Mapping[str, str], file_text: str | None) -> tuple[str, ...]:
    """The client API keys of ``auth``: those of its environment variable in ``env``
    and those of its keys file (``file_text``, read by the command line)."""
    keys = parse_keys(env.get(auth.keys_env, ""), comments=False) if auth.keys_env else ()
    if file_text is not None:
        keys += parse_keys(file_text)
    keys = tuple(dict.fromkeys(keys))
    if not keys:
        raise ConfigError("[auth] is configured but names no client API key")
    return keys


SEAL_KEY_BYTES = 32  # AES-256


def seal_keys(seal: Seal, env: Mapping[str, str]) -> tuple[bytes, ...]:
    """The keys of ``seal``'s environment variable in ``env``: each the base64 (standard or
    URL-safe alphabet) of 32 bytes, several separated by commas; the first seals, all
    open. ``()`` when the variable is unset or empty."""
    text = env.get(seal.key_env, "")
    keys = []
    for n, item in enumerate(k.strip() for k in text.split(",")):
        if not item:
            continue
        try:
            key = base64.b64decode(item.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != SEAL_KEY_BYTES:
            raise ConfigError(
                f"{seal.key_env}: key {n + 1} is not the base64 of {SEAL_KEY_BYTES} bytes "
                "(make one with: python -c 'import base64,os; "
                "print(base64.b64encode(os.urandom(32)).decode())')"
            )
        keys.append(key)
    return tuple(dict.fromkeys(keys))
