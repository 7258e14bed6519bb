"""Mask Payloads' pre-scan: the direction table, IP fragments, and the packed entries the main pass reads.

Every TCP direction's bytes go through tcpstream.Reassembler into a tls.TlsWalker, which builds the map of
the stream ranges to keep (record headers, handshake / alert / CCS records); fragments of IP datagrams are
summed so that the first fragment's transport checksum can account for the zeroed later ones.

Memory follows the open streams, not the capture: a direction instance (from its SYN, or its first
segment, to a SYN with another sequence number, its FIN or RST, or LIVE_LIMIT open directions) is walked
while it is open; when it closes, only its kept (and re-sent) ranges stay, packed in one bytes object
(``pack_entry``, below: the format the main pass in ``stages/mask.py`` reads in place with ``entry_head``
and ``entry_ranges``), and a direction with nothing kept leaves nothing. A fragmented datagram is settled
into one number per frame that needs something of it (``MaskPrescan._settle``, read back as ``Settled``).
``MaskPrescan`` is the pre-scan half of ``MaskStage``; it uses the stage's options (``keep_ports``,
``keep_handshake``, ``keep_alerts_ccs``, ``policy``) and fills its tables (``live``, ``tls``, ``settled``).
"""
from __future__ import annotations

import struct
from array import array
from bisect import bisect_left
from itertools import islice
from zlib import crc32

from ..frames import Uninspectable, walk
from ..layout import (F_FRAGMENT, IP_DST, IP_END, IP_FLAGS, IP_FRAG_ID, IP_FRAG_OFF, IP_OFF, IP_PAY, IP_PROTO,
                      IP_SRC, IP_VER, L4F_FRAGMENT, L4F_NO_HEADER, UNINSPECTABLE)
from ..shape import TCP_DNS, TCP_HEADER, shapes
from ..tcpstream import HALF, MASK32, RangeMap, Reassembler
from ..tls import DONE, SYNC, TlsWalker
from .. import checksum
from . import StageError

_I = struct.Struct("!I").unpack_from
_H = struct.Struct("!H").unpack_from
_HH = struct.Struct("!HH").unpack_from

# A finished direction instance is one bytes object: an array of first frame, last frame, base sequence
# number, #kept ranges, #re-sent ranges, the kept starts, ends, the re-sent starts, ends; then its typecode
# ("I" when every number fits 32 bits, else "q"), last so that the array stays aligned for a memoryview
# cast. About 90 bytes for the usual TLS direction; the main pass reads it in place.
ENTRY_HEAD = 5
_DEAD = False                       # P_KEEP of a direction given up as not TLS (the rest of it is masked)
# pre-scan direction state, a plain list: sequence base, highest offset, first / last frame located in it,
# the kept ranges (tcpstream.RangeMap; None before the first payload byte), walker, reassembler (after
# the walk: the re-sent ranges), and whether it starts mid-stream after its key was closed (None: it
# began at its SYN)
P_BASE, P_HIGH, P_FIRST, P_LAST, P_KEEP, P_WALKER, P_REASM, P_STRICT = range(8)

# fragmented datagrams the pre-scan gathers at once (~300 bytes each); when it is full the oldest quarter
# is settled (a fragment more than that many datagrams away from the rest of its own comes too late for it)
FRAG_WINDOW = 1 << 13
MAX_HEADER = 60                     # the longest transport header a later fragment may carry part of (TCP)
LIVE_LIMIT = 1 << 15                # pre-scan directions open at once; beyond it the longest idle are closed
CLOSED_BITS = 1 << 23               # a 1 MiB bitmap of closed direction keys (see _open), by CRC-32: the
                                    # same bits in every process and run (hash() is seeded per process), so
                                    # one input gives one output; a collision only makes a start stricter


def pack_entry(first: int, last: int, base: int, keep, resent) -> bytes:
    """The packed entry of a finished direction instance (see ENTRY_HEAD): its frames, sequence base, kept
    ranges (a RangeMap) and re-sent ranges (a RangeMap, or None)."""
    a = array("q", (first, last, base, len(keep.starts), len(resent) if resent else 0))
    a += keep.starts
    a += keep.ends
    if resent:
        a += resent.starts
        a += resent.ends
    if min(a) >= 0 and max(a) <= MASK32:
        return array("I", a).tobytes() + b"I"
    return a.tobytes() + b"q"


def entry_head(e) -> tuple:
    """(first frame, last frame, base, #kept, #re-sent) of a packed entry."""
    return struct.unpack_from("=5I" if e[-1] == 73 else "=5q", e)         # 73: "I"


def entry_ranges(e, nk: int, no: int) -> tuple:
    """The kept starts, kept ends, re-sent starts (None when ``no`` is 0) and re-sent ends of a packed entry
    with ``nk`` kept and ``no`` re-sent ranges: memoryviews into it, no copy."""
    a = memoryview(e)[:-1].cast(chr(e[-1]))
    p = ENTRY_HEAD + nk
    q = p + nk + no
    return a[ENTRY_HEAD:p], a[p:p + nk], a[p + nk:q] if no else None, a[q:]


def flow_key(data, ips, l4):
    """Addresses and ports of one direction (records hold bytes, so the key is hashable bytes)."""
    ip = ips[l4[4]]
    s, d, t = ip[6], ip[7], l4[1]                   # IP_SRC, IP_DST, the ports
    if ip[1] == 4:
        return data[s:s + 4] + data[d:d + 4] + data[t:t + 4]
    return data[s:s + 16] + data[d:d + 16] + data[t:t + 4]


def fragmented(ips):
    """The fragmented IP header of a walked frame (the outermost that is a fragment), or None."""
    for ip in ips:
        if ip[IP_FLAGS] & F_FRAGMENT:
            return ip
    return None


def frag_key(data, ip):
    size = 4 if ip[IP_VER] == 4 else 16
    s, d = ip[IP_SRC], ip[IP_DST]
    return (bytes(data[s:s + size]), bytes(data[d:d + size]), ip[IP_PROTO], ip[IP_FRAG_ID])


class _Datagram:
    """What the pre-scan learns of one fragmented IP datagram: its later fragments' data sums (and the
    transport header bytes they hold), its TCP header length, whether a kept port protects it, and its
    fragments' frame numbers."""

    __slots__ = ("first", "sums", "thl", "kept", "frames", "head")

    def __init__(self):
        self.first = False
        self.sums = {}          # fragment offset -> (end, ones' sum of its data, its data in the header area)
        self.thl = 20
        self.kept = False
        self.frames = []        # frame numbers of its later fragments
        self.head = None        # its first fragment's (frame, own data, UDP length limit, IP protocol)


class Settled:
    """What the main pass needs of a fragment's datagram (see MaskStage._settle); ``d``: a first fragment's
    checksum delta, or None."""

    __slots__ = ("thl", "kept", "d")

    def __init__(self, v: int):
        self.kept = bool(v >> 23 & 1)
        self.thl = v >> 16 & 0x3F
        self.d = v & 0xFFFF if v >> 22 & 1 else None


def frag_header(dg, proto) -> int:
    """Bytes of a fragmented datagram's transport header (kept in whichever fragment holds them)."""
    if proto == 6:
        return dg.thl if dg is not None else 20
    return 8 if proto in (17, 1, 58, 136) else 0


class MaskPrescan:
    """The pre-scan methods of MaskStage (see the module's docstring)."""

    # firstpass.py: called with (frame, direction key, record, TCP offset, TCP flags) before each frame
    # that reads or changes a direction's state, and (frame, None, record, 0, 0) before each fragment
    touch = None

    # A direction instance lives from its first located frame to its last: a SYN with another sequence
    # number, a FIN or RST after which nothing is pending, or LIVE_LIMIT closes it. The main pass finds a
    # frame's instance by frame number in [first, last], so the two passes agree without replaying the
    # pre-scan's decisions, and a finished direction costs only its packed ranges.
    def prescan(self, batch: list) -> None:
        if self.finished:
            raise StageError("Mask Payloads: pre-scan after processing started.")
        keep_ports = self.keep_ports
        live = self.live
        touch = self.touch
        i = self.frame
        for rec, sh in zip(batch, shapes(batch)):
            lt = rec[1]
            if lt < 0:
                continue
            i += 1
            data = rec[0]
            n = len(data)
            if sh is not None:
                # the usual frame (shape.shapes): a TCP segment at fixed offsets; frames that cannot carry
                # one (plain UDP, DNS over UDP, echo) are skipped without a walk
                kind, o, t, end = sh
                if kind > TCP_DNS:
                    continue
                pay = t + TCP_HEADER[data[t + 12]]
                if pay > end:
                    pay = end
                key = None
            else:
                w = walk(data, lt)
                if w[0] == UNINSPECTABLE:
                    if self.policy == "fail":
                        raise Uninspectable("Mask Payloads cannot inspect frame %d: %s (--strict fails the file on "
                                            "such a frame)." % (i, w[1]))
                    continue
                l4 = w[4]
                if l4 is None:
                    ip = fragmented(w[2])
                    if ip is not None:                  # a first fragment that ends inside a header
                        if touch is not None:
                            touch(i, None, rec, 0, 0)
                        self._datagram(frag_key(data, ip), True)
                    continue
                proto, t, pay, end, _ipi, fl = l4
                if fl & L4F_FRAGMENT:
                    if touch is not None:
                        touch(i, None, rec, 0, 0)
                    self._prescan_fragment(data, w[2], l4, i)
                    continue
                if proto != 6 or t + 14 > n:
                    continue
                key = flow_key(data, w[2], l4)
                o = w[2][l4[4]][IP_OFF]
            flags = data[t + 13]
            nb = end - pay if end > pay else 0
            if not nb and not flags & 7:
                continue                            # an ACK: nothing to place
            if keep_ports and self._kept_port(data, t):
                continue
            if key is None:
                key = data[o + 12:o + 20] + data[t:t + 4] if t - o == 20 else data[o + 8:o + 40] + data[t:t + 4]
            if touch is not None:
                touch(i, key, rec, t, flags)
            st = live.get(key)
            seq = _I(data, t + 4)[0]
            if flags & 2:
                seq = (seq + 1) & MASK32            # the SYN takes one sequence number; data starts after it
                if st is None or st[P_BASE] != seq:
                    if st is not None:
                        self._close(key, st)        # port reuse: a new connection
                    st = self._open(key, seq, i, False)
            elif not nb:
                # FIN / RST without data: the direction is over when everything before it was seen
                if st is not None and (st[P_REASM] is None or not st[P_REASM].pending
                                       and st[P_WALKER].pos >= st[P_HIGH]):
                    self._close(key, st)
                continue
            elif st is None:
                st = self._open(key, seq, i, True)
            high = st[P_HIGH]
            off = high + (((seq - st[P_BASE] - high + HALF) & MASK32) - HALF)     # tcpstream.unwrap, inline
            if off + nb > high:
                st[P_HIGH] = off + nb
            st[P_LAST] = i
            if not nb:
                continue
            wk = st[P_WALKER]
            if wk is None:
                if st[P_KEEP] is _DEAD:
                    if flags & 5:
                        self._close(key, st)
                    continue
                wk = self._start(st)
            reasm = st[P_REASM]
            if wk.pos == off and wk.mode == SYNC and wk.nxt >= off + nb and not wk.part \
                    and not reasm.pending and n >= rec[3] and not flags & 5:
                # the common case, in short: in order, inside a record body, nothing to look at
                wk.pos = off + nb
                continue
            reasm.feed(off, memoryview(data)[pay:end])
            if end == n and end < rec[3]:
                wire = o + _H(data, o + 2)[0] if data[o] >> 4 == 4 else o + 40 + _H(data, o + 4)[0]
                if wire > end and wk.pos == off + nb and not reasm.pending:
                    reasm.holes += 1
                    wk.hole(off + wire - pay)       # cut by the snap length: known missing
            if flags & 5 and wk.pos == off + nb and not reasm.pending:
                self._close(key, st)                # FIN / RST: nothing more in this direction
            elif wk.mode == DONE and not st[P_KEEP].starts:
                # not TLS (given up): all of it is masked, stop looking at it
                self._finish(st)
                st[P_KEEP] = _DEAD
        self.frame = i

    def _open(self, key, base: int, i: int, midstream: bool) -> list:
        """A new direction instance. One that starts without a SYN after its key was closed (a segment
        re-sent after the FIN, a direction closed for LIVE_LIMIT) starts in the middle of a stream: its
        first bytes are a record header only when a second header or the stream's end confirms it."""
        live = self.live
        if len(live) >= LIVE_LIMIT:
            by_age = sorted(live.items(), key=lambda kv: kv[1][P_LAST])
            for k, st in by_age[:len(by_age) // 4]:
                self._close(k, st)
        strict = False if midstream else None
        if midstream and self.closed is not None:
            h = crc32(key) & (CLOSED_BITS - 1)
            strict = bool(self.closed[h >> 3] & (1 << (h & 7)))
        st = [base, 0, i, i, None, None, None, strict]
        live[key] = st
        return st

    def _start(self, st):
        """The first payload byte of a direction: make its range map, walker and reassembler."""
        keep = RangeMap()
        wk = TlsWalker(keep, self.keep_handshake, self.keep_alerts_ccs, self.record_counts)
        if st[P_STRICT]:
            wk.midstream()
        elif st[P_STRICT] is None:
            wk.at_syn()                             # plaintext at its start: TLS only from a hello on
        st[P_KEEP], st[P_WALKER], st[P_REASM] = keep, wk, Reassembler(wk)
        return wk

    def _finish(self, st) -> None:
        """The walk of a direction is over: count it, keep only the ranges (and the re-sent ones)."""
        reasm = st[P_REASM]
        reasm.finish()
        if reasm.holes:
            self.gaps += 1
        self.resyncs += st[P_WALKER].lost
        st[P_WALKER] = None
        st[P_REASM] = reasm.overlaps if st[P_KEEP].starts else None

    def _close(self, key, st) -> None:
        """A direction instance is over: pack what the main pass needs, forget the rest."""
        del self.live[key]
        closed = self.closed
        if closed is None:
            closed = self.closed = bytearray(CLOSED_BITS >> 3)
        h = crc32(key) & (CLOSED_BITS - 1)
        closed[h >> 3] |= 1 << (h & 7)
        if st[P_WALKER] is not None:
            self._finish(st)
        keep = st[P_KEEP]
        if not keep:                                # never had data, not TLS, or nothing kept
            return
        entry = pack_entry(st[P_FIRST], st[P_LAST], st[P_BASE], keep, st[P_REASM])
        old = self.tls.get(key)
        if old is None:
            self.tls[key] = entry
        else:
            self.tls[key] = (old + (entry,)) if type(old) is tuple else (old, entry)

    def _kept_port(self, data, l4off) -> bool:
        sport, dport = _HH(data, l4off)
        return sport in self.keep_ports or dport in self.keep_ports

    def _prescan_fragment(self, data, ips, l4, i: int) -> None:
        """A fragment in the pre-scan. Later fragments are opaque data, zeroed in the main pass, except the
        bytes of the transport header when a small fragment carries part of it; their sums let the first
        fragment's transport checksum account for what is zeroed."""
        proto, l4off, pay, end, ipi, fl = l4
        ip = fragmented(ips)                                           # maybe a tunnel's packet
        dg = self._datagram(frag_key(data, ip), not fl & L4F_NO_HEADER)
        if fl & L4F_NO_HEADER:
            dg.frames.append(i)
            start = ip[IP_FRAG_OFF]
            if start not in dg.sums and end > pay:
                head = bytes(data[pay:min(end, pay + MAX_HEADER - start)]) if start < MAX_HEADER else b""
                dg.sums[start] = (start + end - pay, checksum.ones_sum(data, pay, end), head)
            at = pay + 12 - start                   # the TCP header length's byte, if in this fragment
            if proto == 6 and start <= 12 and at < end:
                dg.thl = TCP_HEADER[data[at]]
        else:
            base = ip[IP_PAY]
            limit = 1 << 62
            if ip[IP_PROTO] == 17 and base + 6 <= len(data) and _H(data, base + 4)[0] >= 8:
                limit = _H(data, base + 4)[0]       # bytes past the UDP length are not covered
            # its own data (overlapping copies do not count)
            dg.head = (i, ip[IP_END] - base, limit, ip[IP_PROTO])
            if proto in (6, 17) and l4off + 4 <= len(data):
                if self.keep_ports and self._kept_port(data, l4off):
                    dg.kept = True
                if proto == 6 and l4off + 13 <= len(data) and ips[ipi] is ip:
                    dg.thl = TCP_HEADER[data[l4off + 12]]

    def _datagram(self, key, first: bool):
        """The open instance of datagram ``key`` a fragment belongs to (pre-scan). IP identifications repeat,
        so a first fragment starts a new instance, unless the current one has not met its first fragment
        yet (its fragments came out of order); the one it ends is settled. At most FRAG_WINDOW are open: the
        oldest quarter is settled to make room."""
        datagrams = self.datagrams
        dg = datagrams.get(key)
        if dg is None or (first and dg.first):
            if dg is not None:
                self._settle(dg)
            elif len(datagrams) >= FRAG_WINDOW:
                for old in list(islice(datagrams, FRAG_WINDOW // 4)):
                    self._settle(datagrams.pop(old))
            dg = datagrams[key] = _Datagram()
        dg.first = dg.first or first
        return dg

    def _settle(self, dg) -> None:
        """What the main pass needs of a datagram's fragments, by frame number, as ``frame << 24 | kept << 23
        | has delta << 22 | TCP header length << 16 | delta``: for its first fragment, the delta of the
        checksums that cover the zeroed data of the later ones; for those, the header bytes they keep.
        Frames that need nothing of it are not listed."""
        kept = dg.kept << 23
        if dg.head is not None:
            i, own, limit, proto = dg.head
            d = None
            if dg.sums and not dg.kept:
                hdr = frag_header(dg, proto)
                total = 0
                for start, (end, s, head) in dg.sums.items():
                    if start >= own and end <= limit:
                        total += s
                        if start < hdr:                     # the header bytes it carries stay
                            total += 0xFFFF - checksum.ones_sum(head[:hdr - start]) % 0xFFFF
                if total % 0xFFFF:
                    d = ~(total % 0xFFFF) & 0xFFFF          # zeroing bytes of sum S adds ~S (RFC 1624 eqn. 3)
            if d is not None or kept:
                self.settled.append(i << 24 | kept | (d is not None) << 22 | (d or 0))
        if kept or dg.thl != 20:
            info = kept | dg.thl << 16
            for i in dg.frames:
                self.settled.append(i << 24 | info)

    def _settled(self, i: int):
        """The settled datagram of fragment frame ``i`` (main pass; None: nothing is kept of it, no delta)."""
        settled = self.settled
        j = bisect_left(settled, i << 24)
        if j == len(settled) or settled[j] >> 24 != i:
            return None
        return Settled(settled[j])

    def _end_prescan(self) -> None:
        self.finished = True
        for key, st in list(self.live.items()):
            self._close(key, st)
        self.closed = None
        for dg in self.datagrams.values():
            self._settle(dg)
        self.datagrams = {}
        if len(self.settled) > 1:
            import numpy as np
            np.frombuffer(self.settled, dtype=np.uint64).sort()        # in place, by frame number
        # flows: the n-th instances of a direction and of its reverse are one flow
        tls = self.tls
        flows = 0
        for key, entries in tls.items():
            half = (len(key) - 4) // 2
            back = key[half:2 * half] + key[:half] + key[-2:] + key[-4:-2]
            other = tls.get(back)
            if other is None or key <= back:
                count = len(entries) if type(entries) is tuple else 1
                if other is not None:
                    count = max(count, len(other) if type(other) is tuple else 1)
                flows += count
        self.tls_flows = flows
        self.prescan_frames = self.frame
        self.frame = 0
