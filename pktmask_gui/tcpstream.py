"""TCP stream positions and byte-range maps, for stages that work on stream content (Mask Payloads).

Memory is bounded by flows and ranges, never by payload bytes: a direction keeps a few integers, a map of
stream ranges and, for segments that arrive ahead of a hole, a *digest* (their first / last bytes and the
positions of plausible record headers, see tls.digest) instead of their bytes.

- ``unwrap(base, high, seq)``: the stream offset of a segment, relative to the first sequence number seen
  in its direction (after the SYN when there is one), unwrapped across 32-bit wraparound by taking the
  candidate nearest to the highest offset seen so far. Two passes that feed the same segments in the same
  order get the same offsets. (Which segments form one stream instance, across port reuse, is the
  caller's business: Mask Payloads keeps its own table of directions.)
- ``RangeMap``: sorted, merged ``[start, end)`` ranges (the bytes to keep; everything else is masked).
- ``Reassembler``: orders one direction's segments for a consumer (the TLS walker): retransmissions and
  overlaps are dropped (the first copy in capture order wins, as a receiver's buffer would), segments
  ahead of a hole wait as digests, and holes are declared when the capture ends or when the data waiting
  behind a hole spans more than ``REORDER_LIMIT`` bytes of stream.

Hand-written: the TCP reassemblers of Python packet libraries (scapy sessions, dpkt examples) keep the
payload bytes of whole streams, which is what this module must not do.
"""
from __future__ import annotations

from array import array
from bisect import bisect_right

MASK32 = 0xFFFFFFFF
HALF = 1 << 31
REORDER_LIMIT = 64 << 20


def unwrap(base: int, high: int, seq: int) -> int:
    """The stream offset of sequence number ``seq`` in a direction whose offset 0 is ``base`` and whose
    highest offset seen so far is ``high``: of the offsets that ``seq`` can stand for (every 2**32 apart),
    the one nearest to ``high``. Mask Payloads inlines this expression in its pre-scan loop."""
    return high + (((seq - base - high + HALF) & MASK32) - HALF)


class RangeMap:
    """Sorted disjoint ``[start, end)`` ranges, appended in increasing order (adjacent ones merge)."""

    __slots__ = ("starts", "ends")

    def __init__(self):
        self.starts = array("q")
        self.ends = array("q")

    def add(self, s: int, e: int) -> None:
        if e <= s:
            return
        ends = self.ends
        if ends and s <= ends[-1]:
            if s < self.starts[-1]:
                raise ValueError("ranges must be added in increasing order")
            if e > ends[-1]:
                ends[-1] = e
            return
        self.starts.append(s)
        ends.append(e)

    def pieces(self, s: int, e: int) -> list:
        """The kept ``(start, end)`` pieces inside ``[s, e)``, in order."""
        starts, ends = self.starts, self.ends
        i = bisect_right(starts, s) - 1
        if i < 0:
            i = 0
        out = []
        n = len(starts)
        while i < n:
            a = starts[i]
            if a >= e:
                break
            b = ends[i]
            if b > s:
                out.append((a if a > s else s, b if b < e else e))
            i += 1
        return out

    def __len__(self) -> int:
        return len(self.starts)


class Reassembler:
    """Feeds one direction's bytes to ``consumer`` in stream order, exactly once each.

    The consumer (tls.TlsWalker) provides an attribute ``pos`` (everything before it was delivered),
    ``data(start, bytes)``, ``sparse(piece)``, ``hole(end)``, ``finish()`` and the digest makers
    ``make_digest(start, bytes) -> [start, end, ...]``, ``merge_digest(piece, start, bytes)`` (append
    adjacent bytes) and ``join_digests(first, second)`` (two adjacent digests become the first).
    """

    __slots__ = ("c", "pending", "overlaps", "holes")

    def __init__(self, consumer):
        self.c = consumer
        self.pending = []           # digests ahead of the consumer, sorted, disjoint
        self.overlaps = None        # RangeMap of stream ranges captured more than once, made when one is
        self.holes = 0

    def feed(self, off: int, data) -> None:
        c = self.c
        end = off + len(data)
        if off < 0:                 # before the first byte seen: not part of the walked stream
            if end <= 0:
                return
            data = data[-off:]
            off = 0
        pos = c.pos
        if off < pos:
            self._overlap(off, end if end < pos else pos)
            if end <= pos:
                return
            data = data[pos - off:]
            off = pos
        if not self.pending:
            if off == pos:
                c.data(off, data)
            else:
                self.pending.append(c.make_digest(off, data))
            return
        self._feed_around_pending(off, end, data)
        self._drain()
        if self.pending and self.pending[-1][1] - c.pos > REORDER_LIMIT:
            self.holes += 1
            c.hole(self.pending[0][0])
            self._drain()

    def _overlap(self, s: int, e: int) -> None:
        ov = self.overlaps
        if ov is None:
            ov = self.overlaps = RangeMap()
        starts, ends = ov.starts, ov.ends
        if not ends or s > ends[-1]:
            ov.add(s, e)
            return
        # rare: out of order; merge [s, e) with every range it touches (the list stays sorted, disjoint)
        i = bisect_right(starts, s) - 1
        if i >= 0 and ends[i] >= s:
            s = min(s, starts[i])
        else:
            i += 1
        j = i
        while j < len(starts) and starts[j] <= e:
            e = max(e, ends[j])
            j += 1
        del starts[i:j]
        del ends[i:j]
        starts.insert(i, s)
        ends.insert(i, e)

    def _feed_around_pending(self, off: int, end: int, data) -> None:
        c = self.c
        parts = []
        cur = off
        for piece in self.pending:
            ps, pe = piece[0], piece[1]
            if pe <= cur:
                continue
            if ps >= end:
                break
            if ps > cur:
                parts.append((cur, ps))
            self._overlap(max(ps, cur), min(pe, end))
            cur = pe
            if cur >= end:
                break
        if cur < end:
            parts.append((cur, end))
        for a, b in parts:
            chunk = data[a - off:b - off]
            if a == c.pos:
                c.data(a, chunk)
                self._drain()
            else:
                self._insert(a, chunk)

    def _insert(self, a: int, chunk) -> None:
        pending = self.pending
        i = 0
        n = len(pending)
        while i < n and pending[i][0] < a:
            i += 1
        if i and pending[i - 1][1] == a:
            self.c.merge_digest(pending[i - 1], a, chunk)
            if i < n and pending[i][0] == pending[i - 1][1]:
                self._join(i - 1)
        else:
            pending.insert(i, self.c.make_digest(a, chunk))
            if i + 1 < len(pending) and pending[i + 1][0] == pending[i][1]:
                self._join(i)

    def _join(self, i: int) -> None:
        first, second = self.pending[i], self.pending.pop(i + 1)
        self.c.join_digests(first, second)

    def _drain(self) -> None:
        pending, c = self.pending, self.c
        while pending and pending[0][0] <= c.pos:
            piece = pending.pop(0)
            if piece[0] == c.pos:
                c.sparse(piece)
            elif piece[1] > c.pos:
                # unreachable (new bytes are cut around waiting pieces); if it were reached, losing the
                # piece's bytes is the safe side: they are masked
                self.holes += 1
                c.hole(piece[1])

    def finish(self) -> None:
        c = self.c
        while self.pending:
            self.holes += 1
            c.hole(self.pending[0][0])
            self._drain()
        c.finish()
