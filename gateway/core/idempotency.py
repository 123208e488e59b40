"""The life of one idempotency record, as a pure state machine (no I/O, no clock
but the ``now`` handed in).

A record is stored under a *scope*: the client's API key (its short hash) and its
``Idempotency-Key`` (hashed in a store outside the process: ``scope``), so one
tenant never reaches another's records::

    absent ──claim──▶ in flight ──finish (storable)──▶ done ──retention over──▶ absent
                         │  ▲                             │
                         │  └─refresh (the holder alive)  └─claim: Replay (same body)
                         ├──finish (other) / release──▶ absent   or Conflict (other body)
                         └──lock over (holder crashed)──▶ absent
    claim on in flight: Wait (same body) or Conflict (other body)

Every transition is a function from the stored record (``None``: absent) to a
decision and the record to store; the stores (``gateway.stores``) only make
each one atomic: the memory store because one event loop runs it, the Redis
store with a compare-and-set around the same functions.
A transition that is not the holder's to make (its lock expired and another
request claimed the key) returns ``KEEP``: the store leaves the record alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Final, TypeVar

import msgspec

from gateway.errors import IdempotencyKeyReused, InvalidRequest

MAX_KEY = 255  # characters of an Idempotency-Key (Stripe's bound; longer: 400)

# A store's digest of a request: ``fingerprint`` (bytes) where processes share the
# records; the in-process store's own, cheaper one is an int (``MemoryStore``).
Fingerprint = bytes | int


class Record(msgspec.Struct, frozen=True, array_like=True):
    """What a store holds for one scope. ``status == 0``: in flight, held by
    ``token`` until ``expires``; otherwise done, replayable until ``expires``."""

    fingerprint: Fingerprint
    token: str
    expires: float
    status: int = 0
    body: bytes = b""
    content_type: str = ""

    @property
    def done(self) -> bool:
        return self.status != 0


class Run(msgspec.Struct, frozen=True):
    """The caller holds the key now: run the request, then ``finish`` or ``release``."""

    record: Record  # to store (in flight)


class Wait(msgspec.Struct, frozen=True):
    """Another request with this key is running: wait for it, then claim again."""

    until: float  # its lock's end: claim again by then at the latest


class Replay(msgspec.Struct, frozen=True):
    """The request ran already: send its stored answer."""

    record: Record


class _Keep:
    __slots__ = ()

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = _Keep()  # a transition that changes nothing
# The statuses of answers kept for replay: those the same request would get again,
# 2xx and the 4xx that judge the request itself (400, 404, 413, 422). Any other frees
# the key, so that a retry runs for real: a 5xx; 408, 409, 425 and 429 (a timeout, a
# conflict, too early, a rate limit: the next try may well pass); an upstream's 401 or
# 403 (they are about the deployment's key, not the client's request). (A frozenset:
# ``in`` is one C call.)
STORABLE: Final = frozenset((*range(200, 300), 400, 404, 413, 422))
Decision = Run | Wait | Replay
Change = Record | None | _Keep  # the record to store; None: delete it; KEEP: leave it


def check_key(key: str) -> str:
    """The client's Idempotency-Key, or a 400 if it is empty or too long."""
    if not key or len(key) > MAX_KEY:
        raise InvalidRequest(
            f"The Idempotency-Key header must be 1 to {MAX_KEY} characters long.",
            param="Idempotency-Key",
            code="invalid_idempotency_key",
        )
    return key


# BLAKE2b (CPython's own, 256-bit digests) rather than SHA-256: as strong for this, and
# without OpenSSL's per-hash setup, which cost about 3,000 instructions a hash.
def scope(tenant: str, key: str) -> str:
    """The store key of ``key`` for ``tenant`` (fixed length, whatever the key holds)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=32)
    return tenant + ":" + digest.hexdigest()


def fingerprint(path: str, body: bytes) -> bytes:
    """What makes two requests with one key "the same": the route and the body's bytes."""
    prefix = _PREFIXES.get(path)
    if prefix is None:
        prefix = hashlib.blake2b(path.encode("latin-1"), digest_size=32)
        prefix.update(b"\0")
        if len(_PREFIXES) < 16:  # (the routes: a few)
            _PREFIXES[path] = prefix
    h = prefix.copy()
    h.update(body)
    return h.digest()


_PREFIXES: dict[str, Any] = {}  # path -> a hash of the path and its separator


def live(record: Record | None, now: float) -> Record | None:
    """``record``, or ``None`` once it expired (an abandoned lock, a retention over)."""
    if record is None or record.expires <= now:
        return None
    return record


def claim(
    record: Record | None, fp: Fingerprint, token: str, now: float, lock_ttl: float
) -> Decision:
    """A request with this scope arrives. Raises ``IdempotencyKeyReused`` when the
    key was used for another request."""
    if record is None or record.expires <= now:  # (``live``, inline: once per request)
        return Run(Record(fp, token, now + lock_ttl))
    if record.fingerprint != fp:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used with a different request body; "
            "use a new key for a new request.",
            param="Idempotency-Key",
        )
    if record.status:  # done
        return Replay(record)
    return Wait(record.expires)


def refresh(record: Record | None, token: str, now: float, lock_ttl: float) -> Change:
    """The holder is still running: its lock lasts ``lock_ttl`` more seconds."""
    if not _held(record, token, now):
        return KEEP
    assert record is not None
    return msgspec.structs.replace(record, expires=now + lock_ttl)


def finish(
    record: Record | None,
    token: str,
    status: int,
    body: bytes,
    content_type: str,
    now: float,
    retention: float,
) -> Change:
    """The holder has its answer: kept for ``retention`` seconds if it is ``STORABLE``,
    else the key is freed (a retry must run for real)."""
    if record is None or record.token != token or record.status or record.expires <= now:
        return KEEP  # (``_held``, inline: once per request)
    if status not in STORABLE:
        return None
    return Record(record.fingerprint, token, now + retention, status, body, content_type)


def release(record: Record | None, token: str, now: float) -> Change:
    """The holder stops without an answer to keep (failure, cancellation, a stream)."""
    return None if _held(record, token, now) else KEEP


def _held(record: Record | None, token: str, now: float) -> bool:
    current = live(record, now)
    return current is not None and not current.done and current.token == token


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Record)


def encode(record: Record) -> bytes:
    """A record as bytes (for a store outside the process)."""
    return _ENCODER.encode(record)


def decode(data: bytes | None) -> Record | None:
    """A record from ``encode``'s bytes; ``None`` for absent or unreadable (another
    version's) bytes, which count as absent."""
    if data is None:
        return None
    try:
        return _DECODER.decode(data)
    except msgspec.DecodeError:
        return None


# ---- the transitions as steps: what a shared store runs inside its atomic section ------

T = TypeVar("T")
Step = Callable[[Record | None, float], tuple[Change, T]]  # (stored record, now) -> ...


def claim_step(fp: Fingerprint, token: str, lock_ttl: float) -> Step[Decision]:
    def step(record: Record | None, now: float) -> tuple[Change, Decision]:
        decision = claim(record, fp, token, now, lock_ttl)
        return (decision.record if isinstance(decision, Run) else KEEP), decision

    return step


def refresh_step(token: str, lock_ttl: float) -> Step[None]:
    return lambda record, now: (refresh(record, token, now, lock_ttl), None)


def finish_step(
    token: str, status: int, body: bytes, content_type: str, retention: float
) -> Step[None]:
    return lambda record, now: (
        finish(record, token, status, body, content_type, now, retention),
        None,
    )


def release_step(token: str) -> Step[None]:
    return lambda record, now: (release(record, token, now), None)
