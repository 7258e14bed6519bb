"""The self-check of Anonymize IPs: the output, as read back, against the input, frame by frame.

A frame the stage built on its inline paths (``stages/anonymize.py``: the usual TCP/UDP/ICMP shapes and DNS
over UDP) must be exactly the frame built: the input's bytes with the addresses mapped and the checksums
updated, nothing else (an equality in C). Every other frame, and one that differs (a later stage changed
it), is compared field by field: both walked, each address field against the mapping of the input's, every
range the walker could not read zero. ``AnonymizeCheck`` is the half of ``AnonymizeStage`` that does this;
it reads the stage's mapper, caches and options (see the attributes named in its docstring).
"""
from __future__ import annotations

from itertools import compress, repeat
from operator import and_, eq, itemgetter, not_, sub

from ..addressfields import dns_addresses
from ..frames import walk
from ..layout import NON_IP, UNINSPECTABLE, W_BLIND, field_length
from ..shape import ECHO, TCP, UDP, UDP_DNS, shapes
from . import StageError

_DATA = itemgetter(0)
FIELD_BY_FIELD = ()             # equals no frame (and bytes.startswith(()) is False): see AnonymizeStage._expect


class _Mismatch(Exception):
    """A self-check failure of one frame: turned into StageError with its frame number."""

    def __init__(self, rec, tail):
        super().__init__(tail)
        self.rec, self.tail = rec, tail


def inside(blind, off: int) -> bool:
    """Does offset ``off`` lie in one of the walker's blind ranges?"""
    return any(start <= off < end for start, end, _reason in blind)


def udp_end(data, t: int, end: int) -> int:
    """End of the UDP datagram at ``t`` in an IP packet ending at ``end``, as frames.walk takes it."""
    uend = t + ((data[t + 4] << 8) | data[t + 5])
    return end if uend < t + 8 or uend > end else uend


class AnonymizeCheck:
    """The self-check methods of AnonymizeStage. They use the stage's ``mapper`` (addressmap.AddressMapper),
    its fast-path caches and their fillers (``_pairs`` / ``_pair``, ``_addrs`` / ``_addr``), its options
    (``_fast``, ``_payload``, ``_policy``, ``_macs``) and what process() built (``_expect``, ``_expecting``),
    and count the frames checked (``_checked``)."""

    def will_check(self) -> None:
        self._expecting = True

    def check(self, before: list, after: list) -> None:
        """Every frame of the output, as read back, against the input. A frame process() took inline must
        be the frame it built: the input's bytes with the addresses mapped (and the DNS answers) and the
        checksums updated, nothing else. Every other frame, and one that differs (a later stage changed
        it), is compared field by field: both walked, each address field against the mapping of the
        input's."""
        n = len(before)
        if n != len(after):
            raise StageError("self-check failed: the output holds a different number of frames than the input")
        hits = list(map(eq, map(_DATA, after), self._wanted(n)))      # () equals no frame
        if not all(hits):
            self._check_frames(before, list(compress(zip(before, after), map(not_, hits))))
        self._checked += n

    def check_spans(self, before: list, buf: bytes, starts: list, ends: list, linktype: int) -> None:
        """check() on frames read back as spans of one buffer: no record is made for a frame that is
        what was built (same length, ``buf.startswith(built, start, end)``: both in C)."""
        n = len(before)
        if n != len(starts):
            raise StageError("self-check failed: the output holds a different number of frames than the input")
        wanted = self._wanted(n)
        # buf[start:end] == built, without slicing: the span starts with it, and is no longer. A hit lies
        # inside its span, so the hits are all of their spans' length exactly when the lengths add up.
        hits = list(map(buf.startswith, wanted, starts, ends))
        if all(hits):
            exact = sum(map(len, wanted)) == sum(ends) - sum(starts)
        else:
            exact = sum(map(len, compress(wanted, hits))) == sum(compress(ends, hits)) - sum(compress(starts, hits))
        if not exact:                       # some frame goes on past what was built
            hits = list(map(and_, hits, map(eq, map(len, wanted), map(sub, ends, starts))))
        if not all(hits):
            todo = [(before[i], (buf[starts[i]:ends[i]], linktype, 0, ends[i] - starts[i], 0, None))
                    for i in compress(range(n), map(not_, hits))]
            self._check_frames(before, todo)
        self._checked += n

    def _wanted(self, n: int) -> list:
        """What process() built for the next ``n`` frames (see _expect); all FIELD_BY_FIELD when it
        kept less (check() called without process())."""
        expect = self._expect
        if len(expect) < n:
            expect.clear()
            return [FIELD_BY_FIELD] * n
        wanted = expect[:n]
        del expect[:n]
        return wanted

    def _check_frames(self, before: list, todo: list) -> None:
        """The field-by-field check of the (input, output) record pairs ``todo`` of the run ``before``."""
        base = self._checked
        pairs = self._pairs
        pair = self._pair
        slow = self._check_one
        try:
            for (b, a), s in zip(todo, shapes([b for b, _a in todo]) if self._fast else repeat(None)):
                db = b[0]
                if b[1] != a[1]:
                    raise _Mismatch(b, " changed link type")
                if len(a[0]) > len(db):
                    # no stage makes a frame longer (masking may cut one): bytes past the input's end are
                    # not its fields, and could be anything, an original frame included
                    raise _Mismatch(b, " is longer in the output than in the input")
                if s is not None:
                    # The inline shapes of process(), read again from the input: when the output's headers
                    # around the two addresses are the input's, they are its only address fields.
                    kind, o, t, end = s
                    if kind == TCP or kind == UDP or kind == ECHO:
                        da = a[0]
                        v4 = t - o == 20
                        at = o + 12 if v4 else o + 8
                        head = at - 2 if v4 else at                 # up to the IPv4 checksum / the addresses
                        cs = t + 16 if kind == TCP else t + 6 if kind == UDP else t + 2
                        if da[:head] == db[:head] and da[t:cs] == db[t:cs]:
                            key = db[at:t]
                            if da[at:t] != (pairs.get(key) or pair(key, v4))[0]:
                                raise _Mismatch(b, ": the IP addresses do not hold their anonymized form")
                            continue
                    elif kind == UDP_DNS and self._check_dns(b, a, o, t, end):
                        continue
                slow(b, a)
        except _Mismatch as exc:
            pos = next(i for i, r in enumerate(before) if r is exc.rec)
            raise StageError(f"self-check failed: frame {base + pos + 1}{exc.tail}") from None

    def _check_dns(self, b, a, o, t, end) -> bool:
        """Self-check of a frame _dns_frame rewrote; False: let the general check decide."""
        db, da = b[0], a[0]
        v4 = t - o == 20
        uend = udp_end(db, t, end)
        at = o + 12 if v4 else o + 8
        head = at - 2 if v4 else at
        if da[:head] != db[:head] or da[t:t + 6] != db[t:t + 6]:
            return False
        key = db[at:t]
        if da[at:t] != (self._pairs.get(key) or self._pair(key, v4))[0]:
            raise _Mismatch(b, ": the IP addresses do not hold their anonymized form")
        p = t + 8
        if not self._payload or p >= uend:
            return True
        na = len(da)
        addrs = self._addrs
        for off, size, plen in dns_addresses(db, p, uend, end):
            if plen != size * 8 or off + size > uend:
                return False
            if off >= na:
                continue
            old = db[off:off + size]
            want = (addrs.get(old) or self._addr(old))[0]
            got = da[off:off + size]
            if got != want and got != want[:len(got)] and any(got):
                # a later stage (masking) may have zeroed or trimmed the payload: zeros pass, nothing else
                raise _Mismatch(b, f": the address field at byte {off} does not hold the anonymized address")
        return True

    def _check_one(self, b, a) -> None:
        """The general self-check of one frame: both walked, every address field compared, every range the
        walker could not read zero (or cut)."""
        db, da = b[0], a[0]
        wb = walk(db, b[1])
        if wb[0] == NON_IP or (wb[0] == UNINSPECTABLE and self._policy == "pass"):
            return
        if wb[0] == UNINSPECTABLE and self._policy == "fail":
            raise _Mismatch(b, f" cannot be inspected: {wb[1]}")
        na = len(da)
        blind = wb[W_BLIND]
        for start, end, _reason in blind:
            if any(da[start:end]):
                raise _Mismatch(b, f": bytes {start} to {min(end, na)} (where the walker cannot read: "
                                   f"{_reason}) are not zeroed")
        # Fields in the innermost transport's payload (DNS, DHCP, ICMP-quoted headers) may have been
        # masked by a later stage: there zeros are accepted too, and the structure is not compared.
        l4 = wb[4]
        pay = l4[2] if l4 is not None else na
        wa = walk(da, a[1])
        offs_a = [f[0] for f in wa[3] if f[0] < pay]
        offs_b = [f[0] for f in wb[3] if f[0] < min(pay, na)]
        if offs_a != offs_b:
            raise _Mismatch(b, " has different address fields in the output than in the input")
        skip_from = na
        if not self._payload and l4 is not None and l4[0] in (6, 17):
            skip_from = min(na, pay)
        for off, size, plen in wb[3]:
            if off >= skip_from or (blind and inside(blind, off)):
                continue
            old = bytes(db[off:off + field_length(size, plen)])
            want = self.mapper.map_address(old, size, plen)[:max(0, na - off)]
            got = da[off:off + len(want)]
            if got != want and not (off >= pay and not any(got)):
                raise _Mismatch(b, f": the address field at byte {off} does not hold the anonymized address")
        if self._macs:
            for off in wb[6]:
                got = da[off:off + 6]
                if off + 6 <= na and got != self.mapper.map_mac(bytes(db[off:off + 6])) and \
                        not (off >= pay and not any(got)) and not (blind and inside(blind, off)):
                    raise _Mismatch(b, f": the MAC address at byte {off} does not hold its anonymized form")
