"""addressset.py: an exact set of fixed-width entries in one bytearray, bounded."""
from __future__ import annotations

import random

import pytest

from pktmask_gui import addressset
from pktmask_gui.addressset import AddressSet


@pytest.mark.parametrize("width", [4, 8, 16, 32])
def test_holds_each_entry_once_across_growth(width):
    rng = random.Random(width)
    pool = [rng.randbytes(width) for _ in range(20_000)] + [bytes(width)]       # the all-zero entry too
    s = AddressSet(width)
    for _ in range(2):
        for entry in pool:
            s.add(entry)
    assert len(s) == len(set(pool)) and sorted(s) == sorted(set(pool))
    assert s.complete
    assert len(s._table) <= 3 * width * len(pool)       # at least a third full after a doubling


def test_past_its_limit_it_stops_and_says_so():
    s = AddressSet(4, limit=4 * addressset.SLOTS)
    for i in range(1, 10_000):
        s.add(i.to_bytes(4, "big"))
    assert not s.complete
    assert len(s) == 2 * addressset.SLOTS // 3 and len(s._table) == 4 * addressset.SLOTS
    s.add((1).to_bytes(4, "big"))                       # what is there stays found
    assert len(s) == 2 * addressset.SLOTS // 3
