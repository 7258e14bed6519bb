"""tcpstream: sequence offsets (wraparound), range maps, in-order delivery of segments."""
from __future__ import annotations

import pytest

from pktmask_gui.tcpstream import RangeMap, Reassembler, unwrap


def test_offsets_relative_to_the_base_and_across_wraparound():
    base = (0xFFFFFF00 + 1) & 0xFFFFFFFF       # the SYN's sequence number + 1: data starts there
    assert unwrap(base, 0, base) == 0
    high = 100
    assert unwrap(base, high, (base + 255) & 0xFFFFFFFF) == 255                  # after the 32-bit wrap
    high = 265
    assert unwrap(base, high, (base + 190) & 0xFFFFFFFF) == 190                  # a retransmission behind it


def test_long_stream_unwraps_past_four_gigabytes():
    base, seq, high = 1000, 1000, 0
    for _ in range(20):
        off = unwrap(base, high, seq)
        high = off + (1 << 30)
        seq = (seq + (1 << 30)) & 0xFFFFFFFF
    assert off == 19 << 30


def test_data_before_the_first_segment_seen_has_a_negative_offset():
    assert unwrap(5000, 10, 4990) == -10
    assert unwrap(5000, 10, (5000 - 3) & 0xFFFFFFFF) == -3
    assert unwrap(0, 0, 0xFFFFFFFF) == -1


def test_range_map_merges_and_finds_pieces():
    m = RangeMap()
    m.add(0, 5)
    m.add(5, 10)          # adjacent: merged
    m.add(20, 25)
    m.add(22, 30)         # overlapping: extended
    assert list(m.starts) == [0, 20] and list(m.ends) == [10, 30]
    assert m.pieces(3, 22) == [(3, 10), (20, 22)]
    assert m.pieces(10, 20) == []
    assert m.pieces(-5, 100) == [(0, 10), (20, 30)]
    with pytest.raises(ValueError):
        m.add(1, 2)


class Recorder:
    """A consumer that keeps what it is given (tests only: the real one keeps no bytes)."""

    def __init__(self):
        self.pos = 0
        self.got = []

    def data(self, start, data):
        assert start == self.pos
        self.got.append(("data", start, bytes(data)))
        self.pos = start + len(data)

    def make_digest(self, start, data):
        return [start, start + len(data), bytes(data), b"", {}]

    def merge_digest(self, piece, start, data):
        piece[1] = start + len(data)
        piece[2] += bytes(data)

    def join_digests(self, first, second):
        first[1] = second[1]
        first[2] += second[2]

    def sparse(self, piece):
        assert piece[0] == self.pos
        self.got.append(("sparse", piece[0], piece[2]))
        self.pos = piece[1]

    def hole(self, end):
        self.got.append(("hole", self.pos, end))
        self.pos = end

    def finish(self):
        self.got.append(("finish",))


def test_reassembler_orders_drops_overlaps_and_declares_holes():
    c = Recorder()
    r = Reassembler(c)
    r.feed(0, b"abc")
    r.feed(6, b"ghi")             # ahead of a hole: waits
    r.feed(9, b"jk")              # adjacent to the waiting piece: merged
    r.feed(1, b"bcdef")           # fills the hole, overlapping old bytes
    r.feed(2, b"XX")              # retransmission with different bytes: the first copy won
    r.feed(20, b"zz")             # never filled
    r.finish()
    assert c.got == [("data", 0, b"abc"), ("data", 3, b"def"), ("sparse", 6, b"ghijk"),
                     ("hole", 11, 20), ("sparse", 20, b"zz"), ("finish",)]
    assert list(r.overlaps.starts) == [1] and list(r.overlaps.ends) == [4]
    assert r.holes == 1


def test_reassembler_splits_new_data_around_waiting_pieces():
    c = Recorder()
    r = Reassembler(c)
    r.feed(5, b"FG")              # waits
    r.feed(0, b"abcdefghij")      # covers it: only the parts around it are new
    r.finish()
    assert c.got == [("data", 0, b"abcde"), ("sparse", 5, b"FG"), ("data", 7, b"hij"), ("finish",)]


def test_overlap_ranges_stay_sorted_when_reported_out_of_order():
    c = Recorder()
    r = Reassembler(c)
    r.feed(0, b"0123456789")
    r.feed(20, b"abcdefghij")      # waits behind a hole
    r.feed(22, b"cd")              # overlaps the waiting piece
    r.feed(2, b"23")               # then an old retransmission, earlier in the stream
    r.feed(25, b"fghijkl")         # overlaps the waiting piece and adds new bytes
    assert list(zip(r.overlaps.starts, r.overlaps.ends)) == [(2, 4), (22, 24), (25, 30)]
    r.feed(3, b"3456789")
    assert list(zip(r.overlaps.starts, r.overlaps.ends)) == [(2, 10), (22, 24), (25, 30)]
