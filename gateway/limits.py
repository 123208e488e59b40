"""Every size and time bound of the gateway, in one place (a shared leaf: no imports).

The config (``gateway.config``) takes its defaults from here; the rest are
the fixed bounds of the HTTP ends, the stream and the process. Each value says
what it bounds and why it has the size it has.
"""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB

# ---- client-facing HTTP (gateway.http) ------------------------------------------------

# The request line, one header line, the number of headers (aiohttp's defaults:
# ours is never laxer), and the whole head: anything larger gets 431.
MAX_REQUEST_LINE = 8190
MAX_HEADER_LINE = 8190
MAX_HEADERS = 128
MAX_REQUEST_HEAD = 64 * KiB
# A header's name: far above any real one. (aiohttp counts the name before it into a
# name's length, so that a name of 8,187 bytes after ``Host`` is refused.)
MAX_HEADER_NAME = 1 * KiB
# Seconds a client has to send a whole request head (slow-header clients): 408.
REQUEST_HEAD_TIMEOUT = 15.0
# Seconds a handler waits for more of a request body that trickles: 408.
REQUEST_BODY_TIMEOUT = 60.0
# Open client connections; one more is answered 503 and closed.
MAX_CONNECTIONS = 10_000
# Request body: room for a few base64 images; OpenAI's own limit is larger, but a
# gateway at the edge refuses a runaway body before decoding it. Per deployment
# in the config (``max-body-bytes``); the server enforces the largest.
MAX_REQUEST_BODY = 8 * MiB
# A compressed request body (Content-Encoding: zstd, gzip, deflate; gateway.api.body)
# is bounded twice by that limit: as read, and as decoded. At most this many codings
# are undone one after the other (a client compresses once; a proxy may once more).
MAX_CONTENT_CODINGS = 2
# The window a zstd frame may ask its decoder to keep (memory outside Python's heap,
# per body being decoded): zstd's levels 1 to 19 stay within 8 MiB; a frame asking for
# more (--ultra, --long) is refused (400).
MAX_ZSTD_WINDOW = 8 * MiB
# Unread request-body bytes buffered before the socket stops being read.
REQUEST_BODY_HIGH_WATER = 256 * KiB
# Pipelined requests queued behind the running one before the socket stops being read.
MAX_PIPELINED = 8
# Pipelined requests queued on one connection at most (those in the reads before it
# stopped): one more is refused (503) and the connection closed once the queue is
# answered. One read can hold thousands of small requests; aiohttp queues 32.
MAX_QUEUED_REQUESTS = 32
# HTTP keep-alive: seconds an idle client connection stays open (above the 60 s
# of common load balancers, so that they, not we, close idle connections).
HTTP_KEEPALIVE_IDLE = 75.0
# After answering without reading a request body: seconds its rest is read and
# dropped before the connection closes (closing at once can reset the answer away).
UNREAD_BODY_LINGER = 2.0
# Connections the kernel queues before the gateway accepts them.
LISTEN_BACKLOG = 4096
# WebSockets (a message is bounded by the request body's limit): after this many
# seconds without a frame from the client the server sends a ping, below the idle
# timeouts of common proxies (30-60 s); the client has WEBSOCKET_PING_TIMEOUT seconds
# to send anything back before the socket is closed (1011).
WEBSOCKET_PING_INTERVAL = 20.0
WEBSOCKET_PING_TIMEOUT = 20.0
# Seconds a closing side waits for the client's close frame before it cuts the
# connection (a client that never answers must not hold it).
WEBSOCKET_CLOSE_WAIT = 2.0

# The Responses WebSocket (gateway.api.websocket): a connection without a frame for this
# many seconds is closed (1000); one open this long is closed after the response in
# progress, with the error websocket_connection_limit_reached (OpenAI's 60 minutes:
# Codex reconnects on that code).
WEBSOCKET_IDLE_TIMEOUT = 300.0
WEBSOCKET_MAX_AGE = 3600.0

# ---- upstream (gateway.upstream) ------------------------------------------------------

UPSTREAM_CONNECT_TIMEOUT = 10.0
# The wait for the response headers, and for each gap between two body chunks
# (a long generation as a whole is fine). The official clients' default is 600 s.
UPSTREAM_READ_TIMEOUT = 600.0
# Unread upstream-response bytes buffered before the socket stops being read.
UPSTREAM_BODY_HIGH_WATER = 256 * KiB
# The most of a non-streamed upstream answer the gateway reads and holds (a whole
# completion, a chat pass-through JSON, a model list; ``[[deployment]]
# max-answer-bytes``), and of an upstream's error answer: past either, the read stops,
# the connection is closed and the client gets a 502 saying so. (Streamed answers are
# passed on as they come; each of their events is bounded by ``MAX_UPSTREAM_EVENT``.)
UPSTREAM_MAX_ANSWER = 64 * MiB
UPSTREAM_MAX_ERROR_BODY = 64 * KiB
# A pooled upstream connection unused this long is closed, not reused: below the
# 5 s keep-alive of uvicorn-based servers (vLLM, SGLang), so that a pooled
# connection is rarely closed under us.
UPSTREAM_IDLE = 4.0
# Open connections to one upstream server; a request that finds none free waits
# at most UPSTREAM_POOL_TIMEOUT seconds for one, then fails (503).
UPSTREAM_MAX_CONNECTIONS = 1024
UPSTREAM_POOL_TIMEOUT = 10.0
# After a stream's end (``data: [DONE]``), the rest of the upstream body (the end
# of its chunked framing) is read off the client's path, at most this many bytes
# for at most this many seconds; then the connection is pooled (or closed).
UPSTREAM_DRAIN_BYTES = 64 * KiB
UPSTREAM_DRAIN_TIMEOUT = 2.0
# A request that finds no idle connection but one draining waits at most this long for it
# (a stream's end is usually milliseconds behind its [DONE]) before opening another.
UPSTREAM_DRAIN_WAIT = 0.25
# Seconds between two asks of an upstream's ``GET /models`` for an unknown model id.
MODELS_REFRESH = 5.0
# Replicas: a replica is ejected after this many consecutive failures (a refused or
# timed-out connection, a stall before its headers count 1 each; a 5xx answer half:
# ``upstream.policy.failure_weight``), then probed every PROBE_INTERVAL seconds
# (``GET /health``, else ``/models``) until it answers 2xx again.
EJECT_AFTER = 3
PROBE_INTERVAL = 2.0
# At most this share of a deployment's replicas is ejected at once, rounded down: the
# only replica of a deployment is never ejected, nor both of two (nginx and Envoy's
# rules: a replica that may be down is better than none).
MAX_EJECTED_SHARE = 0.5
# Seconds one probe may take (connect and answer).
PROBE_TIMEOUT = 2.0
# Cache affinity (bounded-load rendezvous hashing): a key's replica is skipped while
# it holds more than this many times the mean load of the healthy replicas.
AFFINITY_LOAD_FACTOR = 2.0
# A request is tried on at most this many replicas (only ever again when the first
# never reached a model: a connect failure, or 429/503 before any output), and no new
# attempt starts after UPSTREAM_RETRY_BUDGET seconds.
UPSTREAM_MAX_ATTEMPTS = 3
UPSTREAM_RETRY_BUDGET = 10.0
# Overload (``[overload]`` and per deployment): requests beyond max-in-flight wait in
# a FIFO queue of at most this many for at most this many seconds, then get 503.
OVERLOAD_MAX_QUEUED = 1024
OVERLOAD_QUEUE_TIMEOUT = 5.0

# ---- streams (gateway.core.stream, gateway.api) ---------------------------------------

# An upstream SSE event that grows past this without ending fails the stream:
# far above any chat chunk (a whole long answer in one chunk is a few hundred KiB).
MAX_UPSTREAM_EVENT = 16 * MiB
# Seconds of upstream silence before an SSE comment goes to the client, so that
# proxies with idle timeouts (often 30-60 s) keep the connection open.
SSE_PING_INTERVAL = 15.0
# Frames held back while more upstream bytes are already in: at most this much.
STREAM_WRITE_AHEAD = 64 * KiB

# ---- the process (gateway.ops) --------------------------------------------------------

# Seconds that requests in flight get to finish after SIGTERM (``[ops] drain-timeout``);
# streams still open then end with response.failed (server_shutting_down).
DRAIN_TIMEOUT = 30.0
# After that (or on a plain close): seconds for those last events and answers to leave
# before the remaining connections are cut.
SHUTDOWN_GRACE = 2.0
# Seconds the metrics of finished requests wait before they are added to the exported
# values (one flush per second, not per request; every scrape flushes first).
METRICS_FLUSH = 1.0
# Seconds access-log lines wait to leave in one write (a busy process: one write for
# many lines; an idle one: each line within this).
ACCESS_LOG_FLUSH = 0.05
# Supervised workers (serve --workers N): a worker that exits unasked is started again
# after RESTART_BACKOFF s, doubled after each quick failure up to RESTART_BACKOFF_MAX;
# one that ran RESTART_STABLE s counts as healthy again.
RESTART_BACKOFF = 0.5
RESTART_BACKOFF_MAX = 30.0
RESTART_STABLE = 60.0
# A worker that sent no WATCHDOG=1 for this long (its loop is stuck) is killed and
# replaced; under systemd's WatchdogSec= that interval is used instead.
WORKER_WATCHDOG = 30.0

# ---- request identity, keys and replay (gateway.api, gateway.stores) ------------------

# A client's X-Request-Id longer than this (or not printable ASCII) is replaced.
MAX_REQUEST_ID = 128
# Seconds a finished answer stays replayable under its Idempotency-Key (Stripe's 24 h).
IDEMPOTENCY_RETENTION = 24 * 3600.0
# Seconds an in-flight key stays locked without word from its holder: the holder renews
# it every third of this while it runs, so a crashed one blocks its key this long at most.
IDEMPOTENCY_LOCK_TTL = 30.0
# The in-memory store: at most this many keys and this many bytes of stored answers
# (the oldest go first); a replay is worth less than the memory of the process.
IDEMPOTENCY_MAX_ENTRIES = 100_000
IDEMPOTENCY_MAX_BYTES = 256 * MiB
# Seconds between two looks at a Redis key that a duplicate waits for (another process
# holds it); in one process the wait is woken at once.
IDEMPOTENCY_POLL = 0.05
# Seconds a Redis command may take (connect included) before the store counts as down.
STORE_TIMEOUT = 2.0
# The window of a per-key requests-per-minute limit, in seconds.
RATE_WINDOW = 60.0
# Seconds a request's in-flight slot (the per-key in-flight limit, in Redis) lasts
# without word from its process: renewed every third of this while the request runs,
# so the slots of a process that died free themselves this long after.
SLOT_TTL = 30.0

# ---- tools (gateway.core.translate.tools) ---------------------------------------------

# The longest function name chat-completions servers take (OpenAI's limit; vLLM and
# others follow it): a namespace's functions are exposed upstream within it.
MAX_TOOL_NAME = 64
