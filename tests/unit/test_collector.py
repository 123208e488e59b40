"""ops.collector: the collector set for a server, and still collecting cycles."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from gateway.ops import collector


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> Node:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a


def test_settle_freezes_what_is_alive_and_raises_the_young_threshold() -> None:
    kept = cycle()
    collector.settle()
    assert gc.get_threshold()[0] == collector.YOUNG
    assert gc.get_freeze_count() > 0
    # Frozen: a full collection does not look at it.
    assert all(o is not kept for o in gc.get_objects(generation=2))


def test_cycles_made_after_settle_are_still_collected() -> None:
    collector.settle()
    gone = weakref.ref(cycle())  # garbage at once, kept alive by its cycle alone
    assert gone() is not None
    gc.collect()
    assert gone() is None


def test_a_second_settle_collects_what_the_first_froze_and_is_now_garbage() -> None:
    kept: list[Node] = [cycle()]
    collector.settle()
    ref = weakref.ref(kept[0])
    kept.clear()  # (a reload dropped the old config: a frozen cycle, now garbage)
    gc.collect()
    assert ref() is not None  # frozen: no collection sees it
    collector.settle()
    assert ref() is None
