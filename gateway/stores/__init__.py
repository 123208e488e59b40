"""Where idempotency records and per-key counters live: the I/O shell around
``gateway.core.idempotency``.

``memory.MemoryStore`` keeps them in the process (the default: bounded by
entries and bytes, with expiry); ``redis.RedisStore`` in Redis, so that every
process and host behind one Redis shares them (a retry that lands on another
replica replays; a duplicate waits for a holder in another process; limits
count across them); ``sqlite.SqliteStore`` in one SQLite database that the
workers of one host share (``serve --workers N`` without Redis). All run the
same pure transitions; ``base.Store`` is what
the endpoints (``gateway.api``) see. A store that cannot be reached raises
``errors.StoreUnavailable``.
"""

# The environment variable by which the supervisor names the database its workers share
# (``sqlite.SqliteStore``) when ``[idempotency]`` keeps records in memory.
SHARED_STORE_ENV = "GATEWAY_SHARED_STORE"
