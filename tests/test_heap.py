"""The multiplexer's garbage-collector settings (multiplexer/heap.py)."""

from __future__ import annotations

import gc

from shoal.multiplexer import heap


def test_settle_freezes_what_exists_and_collects_less_often() -> None:
    threshold = gc.get_threshold()
    survivor = [[]]  # a container that exists before: frozen, never walked again
    try:
        heap.settle()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD
        assert all(survivor is not obj for obj in gc.get_objects())
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
