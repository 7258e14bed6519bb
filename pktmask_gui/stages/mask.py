"""Mask Payloads: keep what troubleshooting needs (headers, TCP behaviour, the TLS handshake), zero the rest.

Pre-scan (``stages/mask_prescan.py``): every TCP direction's bytes go through tcpstream.Reassembler into
a tls.TlsWalker, which builds a map of the stream ranges to keep (record headers, handshake / alert / CCS
records); fragments of IP datagrams are summed so that the first fragment's transport checksum can account
for the zeroed later ones. Process: per frame only offsets (frames.walk), a range lookup, zeroing, and RFC 1624 checksum
updates of every checksum that covers a changed byte (quoted headers, tunnel UDP and GRE included), so a
valid checksum stays valid and a bad one stays bad. The ones'-complement sums of the ranges the usual
frames zero are taken for a whole batch in one numpy reduction (``checksum.range_sums``; numpy for speed: a
big integer per frame cost a fifth of the stage). Both passes read the usual frame (Ethernet, at most
one VLAN tag, IPv4 without options or IPv6, TCP or plain UDP) at fixed offsets, exactly where
frames.walk's fast path would find them, and walk only the others; the pre-scan skips ICMP and plain UDP.

Memory follows the open streams, not the capture: a direction instance (from its SYN, or its first
segment, to a SYN with another sequence number, its FIN or RST, or LIVE_LIMIT open directions) is walked
while it is open; when it closes, only its kept (and re-sent) ranges stay, packed in one bytes object with
the numbers of its first and last frames (``mask_prescan.pack_entry``), and a direction with nothing kept
leaves nothing. The main pass finds a frame's instance by its frame number, unpacks the ranges when the
instance begins and drops them once it is over. A direction that goes on after it was closed (a segment
sent again after the FIN) is a new instance that starts mid-stream: its first bytes count as a record
header only when confirmed, as after a gap.

What is masked (the innermost payload; every header above it stays): TCP payload outside the kept TLS
ranges, all UDP payload (and any bytes after the UDP length inside its IP packet), ICMP / ICMPv6 echo
data, the payload quoted by ICMP errors after the quoted IP and transport headers (RFC 4884 extensions
stay), the data of IP fragments, anything after an IP header in a protocol the stage does not know (ESP,
OSPF, SCTP, ...), and link-layer trailers after the IP packet that are not all zero (padding can carry
leaked memory). Kept as they are: ICMP / ICMPv6 control messages (neighbour discovery, router
advertisements, MLD), IGMP, PIM, ARP and the non-IP protocols the walker names, and the TCP / UDP payload
of ``keep_ports``.

Where a TCP stream was captured more than once (retransmissions, overlaps), the first copy in capture
order is what the pre-scan classified; a later copy in the same direction instance keeps its kept bytes
only when they equal the first copy's, else they are masked too.

Trim mode cuts each frame after its last kept byte (never a pcapng Simple Packet Block's, never an IP
fragment's: reassembly needs them whole). Wireshark cannot reassemble TLS records over cut segments, so
its record view is incomplete there: zero mode keeps it, trim mode saves space.
"""
from __future__ import annotations

import struct
from array import array
from bisect import bisect_right

from . import (UNINSPECTED_OPTION, ZEROED_REASONS, Option, ReasonCounts, Stage, StageError, count_zeroed,
               report_zeroed, uninspected_policy)
from .. import checksum
from ..checksum import osum, range_sums, updated
from ..frames import Uninspectable, walk
from ..layout import (F_LATER_FRAGMENT, F_QUOTED, F_TRUNCATED, IP_END, IP_FLAGS, IP_FRAG_OFF, IP_OFF, IP_PAY,
                      IP_PROTO, L4F_ECHO, L4F_FRAGMENT, L4F_ICMP_ERROR, L4F_NO_HEADER, L4F_QUOTES, UNINSPECTABLE,
                      W_BLIND, W_QUOTED)
from ..shape import TCP_DNS, TCP_HEADER, UDP, UDP_DNS, shapes
from ..tcpstream import MASK32, unwrap
from ..tls import RECORD_NAMES
from .mask_prescan import P_HIGH, MaskPrescan, entry_head, entry_ranges, flow_key, frag_header, fragmented

_I = struct.Struct("!I").unpack_from
_H = struct.Struct("!H").unpack_from
_ZERO = memoryview(bytes(1 << 16))
_KEPT_PROTOS = frozenset((1, 58, 2, 103))   # ICMP / ICMPv6 control messages, IGMP, PIM: structure, kept


# main-pass state of one direction instance holding kept ranges
S_FIRST, S_LAST, S_BASE, S_HIGH, S_STARTS, S_ENDS, S_OVS, S_OVE, S_FSTARTS, S_FBYTES = range(10)
SWEEP_EVERY = 1 << 13               # main pass: frames between sweeps of finished states


def _same_as_first(st, a: int, b: int, chunk) -> bool:
    """Do the kept bytes [a, b) of this copy equal the first copy's? Records what is new."""
    starts, blobs = st[S_FSTARTS], st[S_FBYTES]
    if starts is None:
        starts, blobs = st[S_FSTARTS], st[S_FBYTES] = [], []
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


def _overlaps(st, a: int, b: int) -> bool:
    """Was any byte of the stream range [a, b) captured more than once?"""
    starts, ends = st[S_OVS], st[S_OVE]
    i = bisect_right(starts, a) - 1
    if i >= 0 and ends[i] > a:
        return True
    return i + 1 < len(starts) and starts[i + 1] < b


class MaskStage(MaskPrescan, Stage):
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
        UNINSPECTED_OPTION,
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
        self.policy = uninspected_policy(opts, options)
        self.record_counts = {}
        self.frame = 0                  # packet records met in the current pass (the pre-scan's, then the main's)
        self.prescan_frames = 0
        self.live = {}                  # direction key -> its open state (pre-scan: P_*, main pass: S_*)
        self.tls = {}                   # direction key -> packed entry (a tuple of them after port reuse)
        self.closed = None              # bitmap of closed direction keys (pre-scan only)
        self.datagrams = {}             # pre-scan: datagram key -> its open instance (_Datagram), FRAG_WINDOW
        # at most; settled, a fragment's frame number and what the main pass needs (see _settle), sorted
        self.settled = array("Q")
        self.finished = False
        self.next_sweep = SWEEP_EVERY
        self.bytes_kept = 0
        self.bytes_masked = 0
        self.frames_masked = 0
        self.frames_trimmed = 0
        self.copies_masked = 0
        self.uninspected = 0
        self.zeroed = ReasonCounts(ZEROED_REASONS)  # (status, reason) -> frames zeroed where the walker cannot read
        self.tls_flows = self.gaps = self.resyncs = 0
        self.resumed = 0                # segments: frames before this instance's segment, and the highest
        self.highs = {}                 # offset then of each direction instance open there

    # ---- main pass --------------------------------------------------------------------------------------
    def _activate(self, key, i: int):
        """The state of the direction instance of ``key`` that frame ``i`` belongs to, or None when it
        belongs to none with kept ranges (then all its payload is masked)."""
        live, tls = self.live, self.tls
        live.pop(key, None)
        v = tls.get(key)
        if v is None:
            return None
        entries = v if type(v) is tuple else (v,)
        j = 0
        while j < len(entries) and entry_head(entries[j])[1] < i:
            j += 1
        if j == len(entries):
            del tls[key]
            return None
        e = entries[j]
        first, last, base, nk, no = entry_head(e)
        if first > i:
            if j:
                tls[key] = entries[j] if j + 1 == len(entries) else entries[j:]
            return None
        rest = entries[j + 1:]
        if not rest:
            del tls[key]
        else:
            tls[key] = rest[0] if len(rest) == 1 else rest
        starts, ends, ovs, ove = entry_ranges(e, nk, no)
        st = [first, last, base, 0, starts, ends, ovs, ove, None, None]
        if first <= self.resumed:           # begun before this segment: its highest offset then (segments)
            st[S_HIGH] = self.highs.get(key, 0)
        live[key] = st
        return st

    def _sweep(self, i: int) -> None:
        """Drop the main-pass states of direction instances whose last frame is behind."""
        live = self.live
        for key in [k for k, st in live.items() if st[S_LAST] < i]:
            del live[key]
        self.next_sweep = i + SWEEP_EVERY

    def _stream_ranges(self, st, key, i: int, data, t: int, pay: int, end: int):
        """Ranges to zero in the TCP payload [pay, end) of frame ``i`` (``st``: the live state of ``key``
        or None); None: all of it."""
        if st is None or i > st[S_LAST]:
            if i >= self.next_sweep:
                self._sweep(i)
            st = self._activate(key, i)
            if st is None:
                return None
        if i < st[S_FIRST]:
            return None
        seq = _I(data, t + 4)[0]
        if data[t + 13] & 2:
            seq = (seq + 1) & MASK32
        high = st[S_HIGH]
        off = unwrap(st[S_BASE], high, seq)
        e = off + end - pay
        if e > high:
            st[S_HIGH] = e
        starts, ends = st[S_STARTS], st[S_ENDS]
        k = bisect_right(starts, off) - 1
        if k < 0:
            k = 0
        nk = len(starts)
        shift = pay - off
        ranges = []
        cur = pay
        while k < nk:
            a = starts[k]
            if a >= e:
                break
            b = ends[k]
            k += 1
            if b <= off:
                continue
            if a < off:
                a = off
            if b > e:
                b = e
            if st[S_OVS] is not None and _overlaps(st, a, b) \
                    and not _same_as_first(st, a, b, data[a + shift:b + shift]):
                # captured more than once and not equal to the copy the pre-scan classified: masked
                self.copies_masked += 1
                continue
            a += shift
            if a > cur:
                ranges.append((cur, a))
            cur = b + shift
        if cur < end:
            ranges.append((cur, end))
        return ranges

    def process(self, batch: list) -> list:
        if not self.finished:
            self._end_prescan()
        out = []
        append = out.append
        keep_ports = self.keep_ports
        live, tls = self.live, self.tls
        masked = kept = frames = 0
        zeroing = []                    # frames of the fast path to zero, finished by _zeroed
        i = self.frame
        for rec, sh in zip(batch, shapes(batch)):
            lt = rec[1]
            if lt < 0:
                append(rec)
                continue
            i += 1
            data = rec[0]
            n = len(data)
            if sh is not None:
                # the usual frame (shape.shapes, as in the pre-scan): TCP and plain UDP without a walk
                kind, o, t, end = sh
                if end == n or not any(data[end:]):                     # no trailer to zero
                    if kind <= TCP_DNS:
                        pay = t + TCP_HEADER[data[t + 12]]
                        if pay >= end:
                            append(rec)
                            continue
                        if keep_ports and self._kept_port(data, t):
                            kept += end - pay
                            append(rec)
                            continue
                        key = data[o + 12:o + 20] + data[t:t + 4] if t - o == 20 else \
                            data[o + 8:o + 40] + data[t:t + 4]
                        st = live.get(key)
                        a, b = pay, end                 # nothing kept anywhere in this direction
                        if st is not None or key in tls or i >= self.next_sweep:
                            ranges = self._stream_ranges(st, key, i, data, t, pay, end)
                            if ranges is not None:
                                if not ranges:
                                    kept += end - pay
                                    append(rec)
                                    continue
                                if len(ranges) > 1:
                                    csums = [(t + 16, t, end, "tcp", 0)]
                                    if t - o == 20:
                                        csums.append((o + 10, o, t, "ipv4", None))
                                    append(self._rewrite(rec, data, csums, (6, t, pay, end, 0, 0), ranges, 0))
                                    continue
                                a, b = ranges[0]
                        cs = t + 16
                        udp = False
                    elif (kind == UDP or kind == UDP_DNS) and _H(data, t + 4)[0] == end - t:
                        # a UDP datagram filling its packet
                        pay = a = t + 8
                        b = end
                        if pay == end:
                            append(rec)
                            continue
                        if keep_ports and self._kept_port(data, t):
                            kept += end - pay
                            append(rec)
                            continue
                        cs = t + 6
                        udp = True
                    else:
                        t = -1
                    if t >= 0:
                        # zero [a, b) and update the one checksum covering it (at cs, from t): the sums of
                        # the batch's zeroed ranges are taken together below (_zeroed)
                        zeroing.append((len(out), rec, a, b, cs, udp, t))
                        append(None)
                        masked += b - a
                        kept += end - pay - (b - a)
                        frames += 1
                        continue
            append(self._process_walked(rec, data, lt, i))
        if zeroing:
            self._zeroed(zeroing, out)
        self.frame = i
        self.bytes_masked += masked
        self.bytes_kept += kept
        self.frames_masked += frames
        if i > self.prescan_frames:
            raise StageError("Mask Payloads: the main pass met more frames than the pre-scan; the input "
                             "changed between passes.")
        return out

    def _zeroed(self, zeroing: list, out: list) -> None:
        """The frames of a batch whose range [a, b) is zeroed and whose one checksum (at cs, from t) is
        updated by RFC 1624 eqn. 3 (a UDP 0 stays 0, a computed 0 is written 0xFFFF): ``out[k]`` of each
        entry ``(k, rec, a, b, cs, udp, t)`` gets its new record. The ones'-complement sums of the zeroed
        ranges come in one numpy reduction over the batch (each range aligned on its checksum's 16-bit
        words by a leading zero byte when it starts at an odd offset from t, and padded to whole words):
        a big-integer sum per frame (osum) cost about a fifth of the stage."""
        sums = range_sums(zeroing)
        trim = self.trim
        trimmed = 0
        join, zero = b"".join, _ZERO
        for (k, rec, a, b, cs, udp, _t), s in zip(zeroing, sums):
            data = rec[0]
            hc = updated((data[cs] << 8) | data[cs + 1], -s % 0xFFFF, udp)     # new 0 - old sum
            if trim and b >= len(data) and not (rec[5] is not None and rec[5][0] == 3):
                trimmed += 1
                out[k] = (join((data[:cs], hc.to_bytes(2, "big"), data[cs + 2:a])),) + rec[1:]
            else:
                out[k] = (join((data[:cs], hc.to_bytes(2, "big"), data[cs + 2:a],
                                zero[:b - a] if b - a <= 65536 else bytes(b - a), data[b:])),) + rec[1:]
        self.frames_trimmed += trimmed

    def _process_walked(self, rec, data, lt: int, i: int):
        """One frame through the general walk."""
        w = walk(data, lt)
        if w[0] == UNINSPECTABLE:
            if self.policy == "fail":
                raise Uninspectable("Mask Payloads cannot inspect frame %d: %s (--strict fails the file on such "
                                    "a frame)." % (i, w[1]))
            if self.policy == "pass":
                self.uninspected += 1               # the user let it through unchanged
                return rec
            # fail closed on this frame only: everything after the last header understood is zeroed
            count_zeroed(self.zeroed, w)
            stop = w[W_BLIND][0][0]
            if stop >= len(data) or not any(data[stop:]):
                return rec
            return self._rewrite(rec, data, w[5], w[4], [(stop, len(data))], 0)
        l4 = w[4]
        if l4 is None:                              # ARP, non-IP protocols, headers cut short: no payload
            return rec
        dg = self._settled(i) if l4[5] & L4F_FRAGMENT else None
        ranges = self._masked_ranges(data, w, i, dg)
        tail = w[2][0][IP_END] if w[2] else len(data)
        if tail < len(data) and any(data[tail:]):
            # a link-layer trailer with something in it: padding that leaked memory (Etherleak) or
            # unknown data; no checksum covers it
            if ranges and ranges[-1][1] == tail:
                ranges[-1] = (ranges[-1][0], len(data))
            else:
                ranges.append((tail, len(data)))
        extra = None
        if l4[5] & L4F_FRAGMENT and not l4[5] & L4F_NO_HEADER:
            extra = self._fragment_deltas(data, w[2], w[5], dg)
        if not ranges and not extra:
            if l4[3] > l4[2]:
                self.bytes_kept += l4[3] - l4[2]
            return rec
        if not extra and len(ranges) == 1:
            new = self._rewrite_one(rec, data, w[5], l4, *ranges[0])
            if new is not None:
                return new
        return self._rewrite(rec, data, w[5], l4, ranges, extra)

    def _fragment_deltas(self, _data, ips, csums, dg) -> dict | None:
        """For a first fragment (of settled datagram ``dg``): {checksum offset: delta} of the checksums that
        cover its datagram to the end (its transport's, and a tunnelled transport's) for the zeroed data of
        the later fragments (the delta settled in the pre-scan, _settle)."""
        if dg is None or dg.d is None:
            return None
        ip = fragmented(ips)
        base = ip[IP_PAY]
        d = dg.d
        out = {}
        for cs_off, start, _end, kind, _ip in csums:
            if kind != "ipv4" and start >= base and cs_off < ip[IP_END]:
                out[cs_off] = ((d << 8) | (d >> 8)) & 0xFFFF if (start - base) & 1 else d
        return out

    def _masked_ranges(self, data, w, i, dg) -> list:
        """The [a, b) byte ranges of this frame to zero (``i``: the frame's number, for TCP streams; ``dg``:
        the datagram instance of a fragment)."""
        ips, l4 = w[2], w[4]
        proto, l4off, pay, end, ipi, fl = l4
        if end <= pay:
            return []
        if fl & L4F_FRAGMENT:
            if dg is not None and dg.kept:
                return []
            if fl & L4F_NO_HEADER:                  # a later fragment: what it holds of the header stays
                keep = frag_header(dg, proto) - fragmented(ips)[IP_FRAG_OFF]
                if keep > 0:
                    pay = min(pay + keep, end)
            return [(pay, end)] if pay < end else []
        if proto == 6:
            if l4off + 14 > len(data):
                return [(pay, end)]
            if self.keep_ports and self._kept_port(data, l4off):
                return []
            key = flow_key(data, ips, l4)
            ranges = self._stream_ranges(self.live.get(key), key, i, data, l4off, pay, end)
            return [(pay, end)] if ranges is None else ranges
        if proto == 17:
            if self.keep_ports and self._kept_port(data, l4off):
                return []
            ip_end = ips[ipi][IP_END]
            # bytes after the UDP length but inside the IP packet belong to no header: masked too
            stop = ip_end if ip_end > end else end
            if fl & L4F_QUOTES:
                return self._quoting_ranges(data, ips, w[W_QUOTED], w[W_BLIND], pay, end, stop)
            return [(pay, stop)]
        if fl & L4F_ECHO:
            return [(pay, end)]
        if fl & L4F_ICMP_ERROR:
            return self._icmp_error_ranges(data, ips, l4)
        if proto in _KEPT_PROTOS:
            return []
        return [(pay, end)]                         # opaque protocol: fail closed

    def _quoting_ranges(self, data, ips, quoted, blind, pay, end, stop) -> list:
        """A payload that carries other packets' headers (sFlow samples): its own fields and each quoted
        header up to its transport header are kept; what the walker could not read (``blind``), what each
        quoted packet carries after its transport header, and anything after the payload are zeroed."""
        zero = [(a, b) for a, b, _r in blind]
        for h, hend in quoted:
            inner = None
            for ip in ips:
                if ip[IP_FLAGS] & F_QUOTED and h <= ip[IP_OFF] < hend:
                    inner = ip                      # the innermost IP header of this sample
            if inner is None or inner[IP_FLAGS] & F_TRUNCATED:
                continue
            keep = min(inner[IP_PAY] + self._quoted_header(data, inner), hend)
            if keep < hend:
                zero.append((keep, hend))
        if end < stop:
            zero.append((end, stop))
        zero = sorted((max(a, pay), min(b, stop)) for a, b in zero if min(b, stop) > max(a, pay))
        merged = []
        for a, b in zero:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        return merged

    @staticmethod
    def _quoted_header(data, ip) -> int:
        """Bytes of the transport header a quoted packet keeps after its IP header (0: none)."""
        if ip[IP_FLAGS] & F_LATER_FRAGMENT:
            return 0
        p, proto = ip[IP_PAY], ip[IP_PROTO]
        if proto == 6:
            return TCP_HEADER[data[p + 12]] if p + 13 <= len(data) else 20
        return 8 if proto in (17, 1, 58) else 0

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
        keep_end = min(quoted[IP_PAY] + self._quoted_header(data, quoted), stop)
        return [(keep_end, stop)] if keep_end < stop else []

    def _rewrite(self, rec, data, csums, l4, ranges, extra):
        buf = bytearray(data)
        view = memoryview(data)
        changes = []                # (start, end, ones'-complement delta aligned at start, zeroed?)
        masked = 0
        for a, b in ranges:
            if b > a:
                buf[a:b] = _ZERO[:b - a] if b - a <= 65536 else bytes(b - a)
                changes.append((a, b, 0xFFFF - osum(view[a:b]), True))      # new 0 - old sum
                masked += b - a
        n = len(buf)
        lo, hi = (ranges[0][0], ranges[-1][1]) if ranges else (n, 0)     # where the changes are
        # RFC 1624 eqn. 3 for every checksum covering a change, innermost first; an updated checksum field
        # is itself a change for the checksums around it (quoting ICMP, tunnel UDP, GRE). ``extra``: the
        # deltas of checksums that also cover the zeroed data of later fragments (_fragment_deltas).
        for cs_off, start, end, kind, _ip in csums:
            if cs_off + 2 > n:
                continue
            if extra and cs_off in extra:
                d = extra[cs_off]
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
                    delta = 0xFFFF - osum(view[a:b])
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
        pay, end = (l4[2], l4[3]) if l4 is not None else (n, n)
        in_payload = sum(min(b, end) - max(a, pay) for a, b in ranges if a < end and b > pay)
        self.bytes_masked += masked
        self.bytes_kept += end - pay - in_payload if end > pay else 0
        self.frames_masked += 1
        if self.trim and ranges and not (l4 is not None and l4[5] & L4F_FRAGMENT):   # fragments stay whole
            a, b = ranges[-1]
            block = rec[5]
            if b >= n and a < b and not (block is not None and block[0] == 3):
                del buf[a:]
                self.frames_trimmed += 1
        return (bytes(buf),) + rec[1:]

    def _rewrite_one(self, rec, data, csums, l4, a, b):
        """_rewrite for the usual frame, or None: one zeroed range [a, b) inside the coverage of the first
        (transport) checksum, which sits before it, every other checksum (the IPv4 header's) before that."""
        if not csums or a >= b:
            return None
        cs_off, start, end, kind, _ip = csums[0]
        if start > a or b > end or cs_off + 2 > a or not (len(csums) == 1 or (
                len(csums) == 2 and csums[1][2] <= cs_off)):
            return None
        return self._zero(rec, data, cs_off, start, kind == "udp", l4[2], l4[3], a, b, l4[5] & L4F_FRAGMENT)

    def _zero(self, rec, data, cs_off, start, udp, pay, end, a, b, fragment=0):
        """Zero [a, b) of a frame whose one changed checksum (at cs_off, covering from ``start``) sits
        before it: the same bytes as _rewrite, built by one join instead of a bytearray edited in place."""
        d = 0xFFFF - osum(memoryview(data)[a:b])               # new 0 - old sum
        if (a - start) & 1:
            d = (d << 8) % 0xFFFF                                # the other byte of each word
        d %= 0xFFFF
        hc = updated((data[cs_off] << 8) | data[cs_off + 1], d, udp)
        n = len(data)
        self.bytes_masked += b - a
        if end > pay:
            self.bytes_kept += end - pay - (min(b, end) - max(a, pay) if a < end and b > pay else 0)
        self.frames_masked += 1
        if self.trim and not fragment and b >= n:
            block = rec[5]
            if not (block is not None and block[0] == 3):
                self.frames_trimmed += 1
                return (b"".join((data[:cs_off], hc.to_bytes(2, "big"), data[cs_off + 2:a])),) + rec[1:]
        zeros = _ZERO[:b - a] if b - a <= 65536 else bytes(b - a)
        return (b"".join((data[:cs_off], hc.to_bytes(2, "big"), data[cs_off + 2:a], zeros, data[b:])),) + rec[1:]

    # ---- segments (segments.py) ---------------------------------------------------------------------------
    # The main pass's state at a frame is the pre-scan's tables (what each direction instance keeps, and
    # what each fragment needs of its datagram, both by frame number), each open instance's highest stream
    # offset (the pre-scan's P_HIGH there: both passes raise it on the same frames with the same
    # arithmetic), and the first copies of re-sent kept bytes, which no pre-scan holds: a segment that
    # starts inside a direction instance with re-sent ranges first walks its earlier frames (split_needs).
    segmentable = True

    def snapshot(self) -> dict:
        return {"frame": self.frame, "highs": {k: st[P_HIGH] for k, st in self.live.items() if st[P_HIGH]}}

    def export(self) -> dict:
        if not self.finished:
            self._end_prescan()
        return {"tls": self.tls, "settled": self.settled, "prescan_frames": self.prescan_frames}

    def split_needs(self, points: list) -> list:
        """A direction instance with re-sent ranges that a point cuts: the main pass compares each later
        copy of its kept bytes with the first copy, which only its frames before the point hold. The
        segment's instance walks those directions' frames from the first one's on (warm) first."""
        cut = [{} for _ in points]
        if not points:
            return []
        lo, hi = min(points), max(points)
        for key, v in self.tls.items():
            for e in (v if type(v) is tuple else (v,)):
                first, last, _base, _nk, no = entry_head(e)
                if no and first <= hi and last > lo:
                    for j, b in enumerate(points):
                        if first <= b < last:
                            cut[j][key] = min(first, cut[j].get(key, first))
        return [(min(c.values()) - 1, {"keys": frozenset(c)}) if c else None for c in cut]

    def warm(self, batch, what) -> None:
        """The frames before this segment, for the directions in ``what["keys"]``: their main-pass state
        (first copies, highest offset) as the one-core pass builds it; nothing is written or counted."""
        if batch is None:
            self.copies_masked, self.resumed = what["copies"], what["resumed"]
            return
        if "i" not in what:
            what.update(i=what["from"], copies=self.copies_masked, resumed=self.resumed)
            self.resumed = 0                    # these instances start here, as in the one-core pass
        keys, keep_ports, i = what["keys"], self.keep_ports, what["i"]
        for rec, sh in zip(batch, shapes(batch)):
            lt = rec[1]
            if lt < 0:
                continue
            i += 1
            data = rec[0]
            n = len(data)
            if sh is not None and (sh[3] == n or not any(data[sh[3]:])):     # as process() takes them
                kind, o, t, end = sh
                if kind > TCP_DNS:
                    continue                    # UDP, echo: no stream
                pay = t + TCP_HEADER[data[t + 12]]
                if pay >= end or keep_ports and self._kept_port(data, t):
                    continue
                key = data[o + 12:o + 20] + data[t:t + 4] if t - o == 20 else data[o + 8:o + 40] + data[t:t + 4]
            else:
                w = walk(data, lt)
                l4 = w[4]
                if w[0] == UNINSPECTABLE or l4 is None or l4[5] & L4F_FRAGMENT or l4[0] != 6:
                    continue
                _p, t, pay, end = l4[:4]
                if end <= pay or t + 14 > n or keep_ports and self._kept_port(data, t):
                    continue
                key = flow_key(data, w[2], l4)
            if key in keys:
                self._stream_ranges(self.live.get(key), key, i, data, t, pay, end)
        what["i"] = i

    def segment_start(self, first: int, end: int, shared, at) -> None:  # noqa: ARG002
        if shared is not None:
            self.tls, self.settled = shared["tls"], shared["settled"]
            self.prescan_frames = shared["prescan_frames"]
            self.finished = True
            self.record_counts = {}
        if at is not None:
            if at["frame"] != first:
                raise StageError("internal error: a segment of the file does not start where the pre-scan cut it")
            self.frame = self.resumed = first
            self.highs = at["highs"]
            self.next_sweep = first + SWEEP_EVERY

    def segment_result(self) -> dict:
        return {"bytes_kept": self.bytes_kept, "bytes_masked": self.bytes_masked, "frames_masked": self.frames_masked,
                "frames_trimmed": self.frames_trimmed, "copies_masked": self.copies_masked,
                "uninspected": self.uninspected, "zeroed": dict(self.zeroed)}

    def absorb(self, result, baseline) -> None:
        for name in ("bytes_kept", "bytes_masked", "frames_masked", "frames_trimmed", "copies_masked", "uninspected"):
            setattr(self, name, getattr(self, name) + result[name] - baseline[name])
        self.zeroed.merge(result["zeroed"], baseline["zeroed"])

    # ---- results ----------------------------------------------------------------------------------------
    def release_memory(self) -> str | None:
        return None             # the ranges are what the main pass needs; finished directions are freed anyway

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
        if self.zeroed:
            out["frames_zeroed_unreadable"] = report_zeroed(self.zeroed, self.context)
        if self.copies_masked:
            out["resent_ranges_differing"] = self.copies_masked
        return out
