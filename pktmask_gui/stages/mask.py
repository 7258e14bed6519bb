"""Mask Payloads: keep what troubleshooting needs (headers, TCP behaviour, the TLS handshake), zero the rest.

Pre-scan: every TCP direction's bytes go through tcpstream.Reassembler into a tls.TlsWalker, which builds a
map of the stream ranges to keep (record headers, handshake / alert / CCS records); fragments of IP
datagrams are summed so that the first fragment's transport checksum can account for the zeroed later
ones. Process: per frame only offsets (frames.walk), a range lookup, zeroing, and RFC 1624 checksum
updates of every checksum that covers a changed byte (quoted headers, tunnel UDP and GRE included), so a
valid checksum stays valid and a bad one stays bad.

What is masked (the innermost payload; every header above it stays): TCP payload outside the kept TLS
ranges, all UDP payload, ICMP / ICMPv6 echo data, the payload quoted by ICMP errors after the quoted IP
and transport headers (RFC 4884 extensions stay), the data of IP fragments, anything after an IP
header in a protocol the stage does not know (ESP, OSPF, SCTP, ...), and link-layer trailers after the IP
packet that are not all zero (padding can carry leaked memory). Kept as they are: ICMP / ICMPv6
control messages (neighbour discovery, router advertisements, MLD), IGMP, PIM, ARP and the non-IP
protocols the walker names, and the TCP / UDP payload of ``keep_ports``.

Where a TCP stream was captured more than once (retransmissions, overlaps), the first copy in capture
order is what the pre-scan classified; a later copy keeps its kept bytes only when they equal the first
copy's, else they are masked too.

Trim mode cuts each frame after its last kept byte (never a pcapng Simple Packet Block's, never an IP
fragment's: reassembly needs them whole). Wireshark cannot reassemble TLS records over cut segments, so
its record view is incomplete there: zero mode keeps it, trim mode saves space.
"""
from __future__ import annotations

import struct
from bisect import bisect_right

from . import Option, Stage, StageError
from .. import checksum
from ..frames import (F_LATER_FRAGMENT, F_QUOTED, F_TRUNCATED, IP_DST, IP_END, IP_FLAGS, IP_FRAG_ID,
                      IP_FRAG_OFF, IP_OFF, IP_PAY, IP_PROTO, IP_SRC, IP_VER, L4F_ECHO, L4F_FRAGMENT,
                      L4F_ICMP_ERROR, L4F_NO_HEADER, UNINSPECTABLE, Uninspectable, walk)
from ..tcpstream import RangeMap, Reassembler, SeqTracker
from ..tls import DONE, RECORD_NAMES, SYNC, TlsWalker

_I = struct.Struct("!I").unpack_from
_H = struct.Struct("!H").unpack_from
_HH = struct.Struct("!HH").unpack_from
_ZERO = memoryview(bytes(1 << 16))
_KEPT_PROTOS = frozenset((1, 58, 2, 103))   # ICMP / ICMPv6 control messages, IGMP, PIM: structure, kept


def _osum(b) -> int:
    """Ones'-complement sum of big-endian 16-bit words, as a residue mod 0xFFFF (0 stands for both zeros);
    one big integer: C speed, unlike a loop over words. Since 2**16 = 1 (mod 0xFFFF), adding the two halves
    of the integer split at a multiple of 16 bits keeps the residue: two folds before the division, which
    is the slow part for a full-size segment."""
    s = int.from_bytes(b, "big")
    bits = len(b) << 3
    if bits & 8:
        s <<= 8
        bits += 8
    while bits > 2048:
        half = (bits >> 5) << 4                     # a multiple of 16 bits, about half of them
        s = (s >> half) + (s & ((1 << half) - 1))
        bits -= half - 1
    return s % 0xFFFF


def _ip_wire_end(data, ip) -> int:
    """End of an IP packet by its length field (beyond the captured bytes when the frame is cut)."""
    off = ip[IP_OFF]
    if ip[IP_VER] == 4:
        return off + _H(data, off + 2)[0]
    return off + 40 + _H(data, off + 4)[0]


def _flow_key(data, ips, l4):
    """Addresses and ports of one direction (records hold bytes, so the key is hashable bytes)."""
    ip = ips[l4[4]]
    s, d, t = ip[6], ip[7], l4[1]                   # IP_SRC, IP_DST, the ports
    if ip[1] == 4:
        return data[s:s + 4] + data[d:d + 4] + data[t:t + 4]
    return data[s:s + 16] + data[d:d + 16] + data[t:t + 4]


def _frag_key(data, ip):
    size = 4 if ip[IP_VER] == 4 else 16
    s, d = ip[IP_SRC], ip[IP_DST]
    return (bytes(data[s:s + size]), bytes(data[d:d + size]), ip[IP_PROTO], ip[IP_FRAG_ID])


class _Direction:
    """One TCP direction: pre-scan state, then what the main pass needs (the map, the re-sent ranges).
    The walker is made at the first payload byte: a SYN-only direction costs a few slots."""

    __slots__ = ("keep", "walker", "reasm", "overlaps", "first_starts", "first_bytes")

    def __init__(self):
        self.keep = self.walker = self.reasm = self.overlaps = None
        # kept bytes as their first copy carried them, only where the stream was captured more than once
        self.first_starts = self.first_bytes = None

    def start(self, keep_handshake: bool, keep_alerts_ccs: bool, counts: dict) -> None:
        self.keep = RangeMap()
        self.walker = TlsWalker(self.keep, keep_handshake, keep_alerts_ccs, counts)
        self.reasm = Reassembler(self.walker)

    def same_as_first(self, a: int, b: int, chunk) -> bool:
        """Do the kept bytes [a, b) of this copy equal the first copy's? Records what is new."""
        if self.first_starts is None:
            self.first_starts, self.first_bytes = [], []
        starts, blobs = self.first_starts, self.first_bytes
        i = bisect_right(starts, a) - 1
        if i < 0:
            i = 0
        same = True
        cur = a
        new = []
        while i < len(starts) and starts[i] < b:
            s0, blob = starts[i], blobs[i]
            lo, hi = max(a, s0), min(b, s0 + len(blob))
            if lo < hi:
                if cur < lo:
                    new.append((cur, lo))
                if blob[lo - s0:hi - s0] != chunk[lo - a:hi - a]:
                    same = False
                cur = max(cur, hi)
            i += 1
        if cur < b:
            new.append((cur, b))
        for x, y in new:
            j = bisect_right(starts, x)
            starts.insert(j, x)
            blobs.insert(j, bytes(chunk[x - a:y - a]))
        return same


class _Nothing:
    """What the main pass sees of a direction in which nothing is kept."""

    __slots__ = ()
    keep = RangeMap()
    overlaps = None


_NOTHING_KEPT = _Nothing()


class MaskStage(Stage):
    name = "mask"
    title = "Mask Payloads"
    description = ("Keeps every header and the TLS handshake (record headers, handshake, alerts, change "
                   "cipher spec), found by content on any port; zeroes TLS application data and every other "
                   "TCP, UDP and ICMP echo payload, keeping lengths and checksums valid.")
    order = 30
    # Runs before the anonymizer (see docs/ARCHITECTURE.md): its pre-scan then replays only Remove Dupes,
    # and both passes key TCP streams on the same (original) addresses.
    run_order = 15
    needs_prescan = True
    OPTIONS = (
        Option("keep_handshake", "Keep TLS handshake", "bool", True,
               "Keep TLS handshake records (hello messages, certificates in TLS 1.2 and older). "
               "In TLS 1.3 everything after the ServerHello is encrypted and masked anyway."),
        Option("keep_alerts_ccs", "Keep TLS alerts and ChangeCipherSpec", "bool", True,
               "Keep TLS alert and ChangeCipherSpec records: they carry no application data and show how "
               "a session ended."),
        Option("mode", "Masked bytes", "choice", "zero",
               "Zero: masked bytes become zeros and every length stays as it was. Trim: each frame is cut "
               "after its last kept byte; its original length is still recorded and files shrink "
               "several-fold, but Wireshark can no longer reassemble TLS records across the cut segments.",
               choices=("zero", "trim")),
        Option("keep_ports", "Keep payload on ports", "int_list", [],
               "TCP or UDP ports whose payload is kept unmasked, for example 53 to keep DNS readable "
               "(none by default).", minimum=0, maximum=65535),
        Option("allow_uninspected", "Pass frames it cannot parse unchanged", "bool", False,
               "A frame PktMask cannot parse normally fails the whole file. With this on, such frames are "
               "kept unchanged, payload included, and counted as 'frames not inspected'."),
    )

    def __init__(self, options, context):
        super().__init__(options, context)
        opts = self.options
        self.keep_handshake = bool(opts["keep_handshake"])
        self.keep_alerts_ccs = bool(opts["keep_alerts_ccs"])
        if opts["mode"] not in ("zero", "trim"):
            raise StageError("Mask Payloads: mode must be zero or trim, not %r." % (opts["mode"],))
        self.trim = opts["mode"] == "trim"
        self.keep_ports = frozenset(int(p) for p in opts["keep_ports"] or ())
        self.allow_uninspected = bool(opts["allow_uninspected"])
        self.record_counts = {}
        self.directions = {}            # flow key -> [_Direction per stream instance]
        self.pre = SeqTracker(self._new_direction)
        self.post = None                # process-pass tracker, made when the pre-scan is over
        self.frag_sums = {}             # datagram key -> {fragment offset: ones' sum of its data}
        self.frag_kept = set()          # datagrams whose first fragment has a kept port
        self.finished = False
        self.bytes_kept = 0
        self.bytes_masked = 0
        self.frames_masked = 0
        self.frames_trimmed = 0
        self.copies_masked = 0
        self.uninspected = 0
        self.tls_flows = self.gaps = self.resyncs = 0
        self.tls_keys = set()           # direction keys with something kept in some stream instance

    # ---- pre-scan -------------------------------------------------------------------------------------
    def _new_direction(self, key, number):
        d = _Direction()
        self.directions.setdefault(key, []).append(d)
        return d

    def prescan(self, batch: list) -> None:
        if self.finished:
            raise StageError("Mask Payloads: pre-scan after processing started.")
        keep_ports = self.keep_ports
        locate = self.pre.locate
        for rec in batch:
            if rec[1] < 0:
                continue
            data = rec[0]
            w = walk(data, rec[1])
            if w[0] == UNINSPECTABLE and not self.allow_uninspected:
                raise Uninspectable("Mask Payloads cannot inspect a frame: %s." % w[1])
            l4 = w[4]
            if l4 is None or w[0] == UNINSPECTABLE:
                continue
            proto, l4off, pay, end, _ipi, fl = l4
            if fl & L4F_FRAGMENT:
                self._prescan_fragment(data, w[2], l4)
                continue
            if proto != 6 or l4off + 14 > len(data):
                continue
            flags = data[l4off + 13]
            if end <= pay and not flags & 2:
                continue
            if keep_ports and self._kept_port(data, l4off):
                continue
            key = _flow_key(data, w[2], l4)
            n = end - pay if end > pay else 0
            d, off = locate(key, _I(data, l4off + 4)[0], flags & 2, n)
            if n and d.reasm is None and d.keep is None:
                d.start(self.keep_handshake, self.keep_alerts_ccs, self.record_counts)
            if n and d.reasm is not None:
                wk = d.walker
                if wk.pos == off and wk.mode == SYNC and wk.nxt >= off + n and not wk.part \
                        and not d.reasm.pending and len(data) >= rec[3]:
                    # the common case, in short: in order, inside a record body, nothing to look at
                    wk.pos = off + n
                    continue
                d.reasm.feed(off, memoryview(data)[pay:end])
                if end == len(data) and end < rec[3]:
                    wire = _ip_wire_end(data, w[2][l4[4]])
                    if wire > end and d.walker.pos == off + n and not d.reasm.pending:
                        d.reasm.holes += 1
                        d.walker.hole(off + wire - pay)      # cut by the snap length: known missing
                wk = d.walker
                if not d.keep.starts and (wk.mode == DONE or flags & 5 and not wk.order and wk.pos == off + n
                                        and not d.reasm.pending):
                    # not TLS (given up, or closed with nothing found): all of it is masked, stop tracking
                    self._retire(d)

    def _kept_port(self, data, l4off) -> bool:
        sport, dport = _HH(data, l4off)
        return sport in self.keep_ports or dport in self.keep_ports

    def _prescan_fragment(self, data, ips, l4) -> None:
        proto, l4off, pay, end, ipi, fl = l4
        ip = ips[ipi]
        key = _frag_key(data, ip)
        if fl & L4F_NO_HEADER:
            sums = self.frag_sums.setdefault(key, {})
            if ip[IP_FRAG_OFF] not in sums and end > pay:
                start = ip[IP_FRAG_OFF]
                sums[start] = (start + end - pay, checksum.ones_sum(data, pay, end))
        elif proto in (6, 17) and l4off + 4 <= len(data):
            if self.keep_ports and self._kept_port(data, l4off):
                self.frag_kept.add(key)

    def _retire(self, d) -> None:
        """The pre-scan of a direction is over: count it, keep only what the main pass needs."""
        d.reasm.finish()
        w = d.walker
        if d.reasm.holes:
            self.gaps += 1
        self.resyncs += w.lost
        d.overlaps = d.reasm.overlaps if d.reasm.overlaps is not None and d.keep.starts else None
        d.walker = d.reasm = None

    def _end_prescan(self) -> None:
        self.finished = True
        flows = set()
        for key, insts in self.directions.items():
            for number, d in enumerate(insts):
                if d.reasm is not None:
                    self._retire(d)
                if d.keep is None or not d.keep.starts:
                    insts[number] = _NOTHING_KEPT       # one shared object for every non-TLS direction
                    continue
                self.tls_keys.add(key)
                half = (len(key) - 4) // 2
                back = key[half:2 * half] + key[:half] + key[-2:] + key[-4:-2]
                flows.add((min(key, back), number))
        self.tls_flows = len(flows)
        self.pre = None                                 # the main pass replays the offsets with its own
        self.post = SeqTracker(self._old_direction)

    def _old_direction(self, key, number):
        insts = self.directions.get(key)
        if insts is None or number >= len(insts):
            raise StageError("Mask Payloads: the main pass met a TCP stream the pre-scan did not see; "
                             "the input changed between passes.")
        return insts[number]

    # ---- main pass --------------------------------------------------------------------------------------
    def process(self, batch: list) -> list:
        if not self.finished:
            self._end_prescan()
        out = []
        append = out.append
        for rec in batch:
            if rec[1] < 0:
                append(rec)
                continue
            data = rec[0]
            w = walk(data, rec[1])
            if w[0] == UNINSPECTABLE:
                if not self.allow_uninspected:
                    raise Uninspectable("Mask Payloads cannot inspect a frame: %s." % w[1])
                self.uninspected += 1               # the user let it through unchanged
                append(rec)
                continue
            l4 = w[4]
            if l4 is None:                          # ARP, non-IP protocols, headers cut short: no payload
                append(rec)
                continue
            ranges = self._masked_ranges(data, w[2], l4)
            tail = w[2][0][IP_END] if w[2] else len(data)
            if tail < len(data) and any(data[tail:]):
                # a link-layer trailer with something in it: padding that leaked memory (Etherleak) or
                # unknown data; no checksum covers it
                if ranges and ranges[-1][1] == tail:
                    ranges[-1] = (ranges[-1][0], len(data))
                else:
                    ranges.append((tail, len(data)))
            extra = 0
            if l4[5] & L4F_FRAGMENT and not l4[5] & L4F_NO_HEADER:
                extra = self._fragment_delta(data, w[2], l4)
            if not ranges and not extra:
                if l4[3] > l4[2]:
                    self.bytes_kept += l4[3] - l4[2]
                append(rec)
                continue
            if not extra and len(ranges) == 1:
                a, b = ranges[0]
                new = self._rewrite_one(rec, data, w[5], l4, a, b)
                if new is not None:
                    append(new)
                    continue
            append(self._rewrite(rec, data, w, l4, ranges, extra))
        return out

    def _fragment_delta(self, data, ips, l4) -> int:
        """Checksum delta a first fragment takes for the zeroed data of its datagram's later fragments."""
        key = _frag_key(data, ips[l4[4]])
        sums = self.frag_sums.get(key)
        if not sums or key in self.frag_kept:
            return 0
        limit = 1 << 62
        if l4[0] == 17 and l4[1] + 6 <= len(data) and _H(data, l4[1] + 4)[0] >= 8:
            limit = _H(data, l4[1] + 4)[0]          # bytes past the UDP length are not covered
        own = l4[3] - l4[1]                         # this fragment's own data (overlapping copies do not count)
        total = 0
        for start, (end, s) in sums.items():
            if start >= own and end <= limit:
                total += s
        total = total % 0xFFFF if total else 0
        return ~total & 0xFFFF                      # zeroing bytes of sum S adds ~S (RFC 1624 eqn. 3)

    def _masked_ranges(self, data, ips, l4) -> list:
        """The [a, b) byte ranges of this frame to zero."""
        proto, l4off, pay, end, ipi, fl = l4
        if end <= pay:
            if proto == 6 and not fl & L4F_FRAGMENT and l4off + 14 <= len(data) and data[l4off + 13] & 2 \
                    and not (self.keep_ports and self._kept_port(data, l4off)):
                # a SYN starts (or restarts) a stream: the offsets must follow the pre-scan's exactly
                key = _flow_key(data, ips, l4)
                if key in self.tls_keys:
                    self.post.locate(key, _I(data, l4off + 4)[0], 2, 0)
            return []
        if fl & L4F_FRAGMENT:
            if self.frag_kept and _frag_key(data, ips[ipi]) in self.frag_kept:
                return []
            return [(pay, end)]
        if proto == 6:
            if l4off + 14 > len(data):
                return [(pay, end)]
            if self.keep_ports and self._kept_port(data, l4off):
                return []
            key = _flow_key(data, ips, l4)
            if key not in self.tls_keys:
                if key not in self.directions:
                    raise StageError("Mask Payloads: the main pass met a TCP stream the pre-scan did not see; "
                                     "the input changed between passes.")
                return [(pay, end)]                 # nothing kept in any stream of these addresses/ports
            d, off = self.post.locate(key, _I(data, l4off + 4)[0], data[l4off + 13] & 2, end - pay)
            keep = d.keep
            pieces = keep.pieces(off, off + end - pay) if keep.starts else ()
            if pieces and d.overlaps is not None:
                pieces = self._first_copy_check(d, pieces, data, pay - off)
            ranges = []
            cur = pay
            for a, b in pieces:
                a += pay - off
                if a > cur:
                    ranges.append((cur, a))
                cur = b + pay - off
            if cur < end:
                ranges.append((cur, end))
            return ranges
        if proto == 17:
            if self.keep_ports and self._kept_port(data, l4off):
                return []
            return [(pay, end)]
        if fl & L4F_ECHO:
            return [(pay, end)]
        if fl & L4F_ICMP_ERROR:
            return self._icmp_error_ranges(data, ips, l4)
        if proto in _KEPT_PROTOS:
            return []
        return [(pay, end)]                         # opaque protocol: fail closed

    def _first_copy_check(self, d, pieces, data, shift) -> list:
        """Where the stream was captured more than once, a copy keeps its kept bytes only when they equal
        the first copy's (the one the pre-scan classified); a retransmission with other bytes is masked."""
        out = []
        for a, b in pieces:
            if d.overlaps.pieces(a, b) and not d.same_as_first(a, b, data[a + shift:b + shift]):
                self.copies_masked += 1
                continue
            out.append((a, b))
        return out

    def _icmp_error_ranges(self, data, ips, l4) -> list:
        proto, l4off, pay, end, ipi, fl = l4
        # RFC 4884: a length field says where the quoted datagram stops and extensions (MPLS labels, ...)
        # begin; kept only when it is well formed (>= 128 bytes, then a version 2 extension header)
        typ = data[l4off]
        if proto == 1:
            length = data[l4off + 5] * 4 if typ in (3, 11, 12) else 0
        else:
            length = data[l4off + 4] * 8 if typ in (1, 3) else 0
        stop = end
        if length >= 128 and pay + length < end and data[pay + length] >> 4 == 2:
            stop = pay + length
        quoted = None
        for ip in ips:
            if ip[IP_FLAGS] & F_QUOTED and ip[IP_OFF] >= pay:
                quoted = ip                         # the innermost quoted IP header
        if quoted is None:
            return [(pay, stop)]
        if quoted[IP_FLAGS] & F_TRUNCATED:
            return []
        p = quoted[IP_PAY]
        qproto = quoted[IP_PROTO]
        n = len(data)
        if quoted[IP_FLAGS] & F_LATER_FRAGMENT:
            hl = 0
        elif qproto == 6:
            hl = (data[p + 12] >> 4) * 4 if p + 13 <= n else 20
        elif qproto in (17, 1, 58):
            hl = 8
        else:
            hl = 0
        keep_end = min(p + hl, stop)
        return [(keep_end, stop)] if keep_end < stop else []

    def _rewrite(self, rec, data, w, l4, ranges, extra):
        buf = bytearray(data)
        view = memoryview(data)
        changes = []                # (start, end, ones'-complement delta aligned at start, zeroed?)
        masked = 0
        for a, b in ranges:
            if b > a:
                buf[a:b] = _ZERO[:b - a] if b - a <= 65536 else bytes(b - a)
                changes.append((a, b, 0xFFFF - _osum(view[a:b]), True))      # new 0 - old sum
                masked += b - a
        n = len(buf)
        first_l4 = l4[1] if extra else -2
        lo, hi = (ranges[0][0], ranges[-1][1]) if ranges else (n, 0)     # where the changes are
        # RFC 1624 eqn. 3 for every checksum covering a change, innermost first; an updated checksum field
        # is itself a change for the checksums around it (quoting ICMP, tunnel UDP, GRE).
        for cs_off, start, end, kind, _ip in w[5]:
            if cs_off + 2 > n:
                continue
            if start == first_l4 and kind != "ipv4":
                d = extra
            elif end <= lo or start >= hi:
                continue                            # covers nothing that changed (an IPv4 header)
            else:
                d = 0
            for a, b, delta, zeroed in changes:
                if b <= start or a >= end:
                    continue
                if a < start or b > end:
                    if not zeroed:
                        continue
                    a, b = max(a, start), min(b, end)
                    delta = 0xFFFF - _osum(view[a:b])
                if (a - start) & 1:
                    delta = (delta << 8) % 0xFFFF                            # the other byte of each word
                d += delta
            d %= 0xFFFF
            if not d:
                continue
            old = (buf[cs_off] << 8) | buf[cs_off + 1]
            checksum.update(buf, cs_off, d, kind)
            new = (buf[cs_off] << 8) | buf[cs_off + 1]
            if new != old:
                changes.append((cs_off, cs_off + 2, (new + 0xFFFF - old) % 0xFFFF, False))
                lo, hi = min(lo, cs_off), max(hi, cs_off + 2)
        pay, end = l4[2], l4[3]
        in_payload = sum(min(b, end) - max(a, pay) for a, b in ranges if a < end and b > pay)
        self.bytes_masked += masked
        self.bytes_kept += end - pay - in_payload if end > pay else 0
        self.frames_masked += 1
        if self.trim and ranges and not l4[5] & L4F_FRAGMENT:     # fragments stay whole: reassembly
            a, b = ranges[-1]
            block = rec[5]
            if b >= n and a < b and not (block is not None and block[0] == 3):
                del buf[a:]
                self.frames_trimmed += 1
        return (bytes(buf),) + rec[1:]

    def _rewrite_one(self, rec, data, csums, l4, a, b):
        """_rewrite for the usual frame, or None: one zeroed range [a, b) inside the coverage of the first
        (transport) checksum, which sits before it, every other checksum (the IPv4 header's) before that.
        The same bytes as _rewrite, built by one join instead of a bytearray edited in place."""
        if not csums or a >= b:
            return None
        cs_off, start, end, kind, _ip = csums[0]
        if start > a or b > end or cs_off + 2 > a or not (len(csums) == 1 or (
                len(csums) == 2 and csums[1][2] <= cs_off)):
            return None
        d = 0xFFFF - _osum(memoryview(data)[a:b])               # new 0 - old sum
        if (a - start) & 1:
            d = (d << 8) % 0xFFFF                                # the other byte of each word
        d %= 0xFFFF
        hc = (data[cs_off] << 8) | data[cs_off + 1]
        if d and not (kind == "udp" and hc == 0):                # checksum.update, inline
            t = (~hc & 0xFFFF) + d
            t = (t & 0xFFFF) + (t >> 16)
            t = (t & 0xFFFF) + (t >> 16)
            hc = ~t & 0xFFFF
            if kind == "udp" and hc == 0:
                hc = 0xFFFF
        n = len(data)
        pay, end = l4[2], l4[3]
        self.bytes_masked += b - a
        if end > pay:
            self.bytes_kept += end - pay - (min(b, end) - max(a, pay) if a < end and b > pay else 0)
        self.frames_masked += 1
        if self.trim and not l4[5] & L4F_FRAGMENT and b >= n:
            block = rec[5]
            if not (block is not None and block[0] == 3):
                self.frames_trimmed += 1
                return (b"".join((data[:cs_off], hc.to_bytes(2, "big"), data[cs_off + 2:a])),) + rec[1:]
        zeros = _ZERO[:b - a] if b - a <= 65536 else bytes(b - a)
        return (b"".join((data[:cs_off], hc.to_bytes(2, "big"), data[cs_off + 2:a], zeros, data[b:])),) + rec[1:]

    # ---- results ----------------------------------------------------------------------------------------
    def release_memory(self) -> str | None:
        return None                                 # the maps are what the main pass needs: nothing to drop

    def report(self) -> dict:
        out = {
            "bytes_kept": self.bytes_kept,
            "bytes_masked": self.bytes_masked,
            "frames_masked": self.frames_masked,
            "tls_flows": self.tls_flows,
            "tls_records": {RECORD_NAMES[t]: n for t, n in sorted(self.record_counts.items())},
            "streams_with_gaps": self.gaps,
            "tls_resyncs": self.resyncs,
        }
        if self.trim:
            out["frames_trimmed"] = self.frames_trimmed
        if self.uninspected:
            out["uninspected_frames"] = self.uninspected
        if self.copies_masked:
            out["resent_ranges_differing"] = self.copies_masked
        return out
