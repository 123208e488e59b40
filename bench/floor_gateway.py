"""The gateway with its idempotency store cut down to a floor: for bench/rows/identity.py only.

``python bench/floor_gateway.py serve ...`` runs ``python -m gateway serve ...`` with
one change: a request that carries an ``Idempotency-Key`` is answered as any other,
and a copy of its answer's body is kept in a dict under the client's key and its
Idempotency-Key. Nothing else: no record in flight, no fingerprint, no token, no lock,
no expiry, no bound, no replay. It is not a store (it breaks every promise of one);
it is the part of the work that every store that replays answers must do (keep each
answer's bytes, under a key of the request's, for hours), measured with the rest of
the gateway unchanged. So no store can cost less than it, and the identity row's
paired run against it gives the least that request ids, client keys and idempotency
can cost on the machine at hand.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # (the checkout's gateway)

from gateway.api.replay import Replays  # noqa: E402
from gateway.cli import main  # noqa: E402

_KEPT: dict[str, bytes] = {}
_EDGES = (b"", b"")  # body.join(_EDGES): a copy of its own size (as the memory store makes)


async def _keep_only(
    self: Replays,
    call: Any,
    key: str,
    request: Any,
    body: bytes,
    answer: Any,
    held: list[Any],
    *,
    shielded: bool = False,
) -> Any:
    reply = await answer(request, call, held)
    _KEPT[call.tenant + ":" + key] = reply.body.join(_EDGES)
    return reply


Replays.run = _keep_only  # type: ignore[method-assign]

if __name__ == "__main__":
    raise SystemExit(main())
