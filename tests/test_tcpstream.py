"""tcpstream: sequence offsets (wraparound, SYN, port reuse), range maps, in-order delivery of segments."""
from __future__ import annotations

import pytest

from pktmask_gui.tcpstream import RangeMap, Reassembler, SeqTracker


def test_offsets_relative_to_syn_and_across_wraparound():
    made = []
    tr = SeqTracker(lambda key, n: made.append((key, n)) or len(made))
    isn = 0xFFFFFF00
    tr.locate(b"k", isn, True, 0)             # the SYN: data starts one sequence number later
    s, off = tr.locate(b"k", isn + 1, False, 100)
    assert off == 0
    s, off = tr.locate(b"k", (isn + 1 + 255) & 0xFFFFFFFF, False, 10)   # after the 32-bit wrap
    assert off == 255
    s, off = tr.locate(b"k", (isn + 1 + 0x1_0000_0000 - 10 + 200) & 0xFFFFFFFF, False, 5)
    assert off == 190                       # a retransmission behind the wrap stays behind
    assert made == [(b"k", 0)]


def test_long_stream_unwraps_past_four_gigabytes():
    tr = SeqTracker(lambda key, n: n)
    seq = 1000
    off = 0
    for _ in range(5):
        for _ in range(4):
            _, off = tr.locate(b"k", seq, False, 1 << 30)
            seq = (seq + (1 << 30)) & 0xFFFFFFFF
    assert off == 19 << 30


def test_midstream_start_and_new_syn_starts_a_new_instance():
    tr = SeqTracker(lambda key, n: n)
    inst, off = tr.locate(b"k", 5000, False, 10)
    assert (inst, off) == (0, 0)
    inst, off = tr.locate(b"k", 4990, False, 10)     # earlier data than the first seen
    assert off == -10
    inst, off = tr.locate(b"k", 777, True, 0)        # port reuse: a new connection
    assert inst == 1
    inst, off = tr.locate(b"k", 778, False, 3)
    assert (inst, off) == (1, 0)
    inst, off = tr.locate(b"k", 777, True, 0)        # its SYN retransmitted: same instance
    assert inst == 1


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
