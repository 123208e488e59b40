"""CPython's cyclic garbage collector, set for a long-running server.

The defaults suit short programs: a young collection every 700 container objects
allocated and not yet freed, and a full collection, which walks every object of the
process, whenever the objects promoted since the last one reach a quarter of the
rest. Under load the requests in flight hold hundreds of such objects at any moment,
so a young collection came every hundred or so requests, found those objects still
alive and promoted them, and full collections followed: 20 ms each (a pause of every
request in flight), and 3.7 us of CPU per non-streaming request in all (9 us with an
Idempotency-Key; bench/README.md, identity).

``settle()``, once the process is up and after each reload:

- collects, then freezes what is left (``gc.freeze``): the config, the routes, the
  modules live as long as the process, so no collection walks them again;
- raises the young threshold to ``YOUNG``: a request's objects are freed by their
  reference counts long before that many pile up, so collections become rare (a
  few per 100,000 requests) and still find what reference cycles leave behind.
"""

from __future__ import annotations

import gc

YOUNG = 10_000  # container objects allocated and not freed before a young collection


def settle() -> None:
    """Collect, freeze the survivors, and set the young threshold (idempotent)."""
    gc.unfreeze()  # (after a reload: what the old config held may be garbage now)
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, old)
