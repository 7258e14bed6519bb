"""Internet checksums: ones'-complement sums and RFC 1624 incremental updates.

API (all offsets are absolute offsets into the frame buffer):

- ``ones_sum(buf, start=0, end=None) -> int``: the folded 16-bit ones'-complement sum of ``buf[start:end]``,
  words taken big-endian from ``start`` (an odd length is padded with a zero byte).
- ``internet_checksum(buf, start=0, end=None, initial=0) -> int``: ``~sum & 0xFFFF`` (the value a sender
  stores); ``initial`` adds a pseudo-header sum.
- ``field_delta(old, new, odd=False) -> int``: the ones'-complement difference ``sum(new) - sum(old)`` of one
  changed field; ``odd`` when the field starts at an odd distance from the start of the checksum's coverage
  (its bytes then sit in the other half of each 16-bit word).
- ``update(buf, cs_off, delta, kind) -> None``: RFC 1624 eqn. 3, ``HC' = ~(~HC + delta)``, written in place.
  Kind ``"udp"``: a stored 0 means "no checksum" and stays 0, and a computed 0 is stored as 0xFFFF.
- ``fix_checksums(buf, csums, ips, changed) -> int``: the one call a stage needs after rewriting bytes.
  ``csums`` and ``ips`` come from ``frames.walk()``; ``changed`` is a dict ``{offset: old_bytes}`` of every
  field the stage rewrote (the new bytes are in ``buf``). Every checksum whose coverage or pseudo-header
  includes a changed byte is updated incrementally; updated checksum fields are added to ``changed`` so
  that an enclosing checksum (ICMP over a quoted header, a tunnel's outer UDP, GRE) sees them too. Returns
  the number of checksum fields written.

- ``osum(b) -> int``: the ones'-complement sum of ``b`` as a residue mod 0xFFFF, from one big integer (fast
  for long ranges); ``range_sums(entries) -> list``: osum of many ranges at once (one numpy reduction).

Incremental updates keep a bad checksum bad (the delta is added to whatever was stored) and stay right for
frames cut by the snap length (only bytes that differ enter the delta).
"""
from __future__ import annotations

import struct

_W8 = struct.Struct("!8H").unpack


def ones_sum(buf, start: int = 0, end: int | None = None) -> int:
    """Folded 16-bit ones'-complement sum of ``buf[start:end]`` (big-endian words from ``start``)."""
    if end is None:
        end = len(buf)
    chunk = bytes(buf[start:end])
    if len(chunk) & 1:
        chunk += b"\x00"
    # One big integer per call: summing the bytes at even / odd positions is C-speed slicing.
    total = (sum(chunk[0::2]) << 8) + sum(chunk[1::2])
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def internet_checksum(buf, start: int = 0, end: int | None = None, initial: int = 0) -> int:
    total = ones_sum(buf, start, end) + initial
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _swap(x: int) -> int:
    return ((x & 0xFF) << 8) | (x >> 8)


def field_delta(old, new, odd: bool = False) -> int:
    """Ones'-complement ``sum(new) + ~sum(old)`` (folded) for one changed field."""
    d = _fold(_word_sum(new)) + (~_fold(_word_sum(old)) & 0xFFFF)
    d = (d & 0xFFFF) + (d >> 16)
    d = (d & 0xFFFF) + (d >> 16)
    return _swap(d) if odd else d


def update(buf, cs_off: int, delta: int, kind: str = "") -> None:
    """Apply a ones'-complement delta to the checksum stored at ``cs_off`` (RFC 1624 eqn. 3)."""
    hc = (buf[cs_off] << 8) | buf[cs_off + 1]
    new = updated(hc, delta, kind == "udp")
    buf[cs_off] = new >> 8
    buf[cs_off + 1] = new & 0xFF


def updated(hc: int, delta: int, udp: bool = False) -> int:
    """The checksum ``hc`` after a ones'-complement change ``delta`` of what it covers (RFC 1624 eqn. 3); UDP:
    0 ("no checksum") stays 0 and a computed 0 is written 0xFFFF."""
    if not delta or (udp and hc == 0):
        return hc
    s = (~hc & 0xFFFF) + delta
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    new = ~s & 0xFFFF
    return 0xFFFF if udp and new == 0 else new


def _word_sum(b) -> int:
    """Unfolded sum of big-endian 16-bit words of ``b`` (an odd length is padded with a zero byte)."""
    n = len(b)
    if n == 4:
        x = int.from_bytes(b, "big")
        return (x >> 16) + (x & 0xFFFF)
    if n == 16:
        return sum(_W8(b))
    if n == 2:
        return (b[0] << 8) | b[1]
    return ones_sum(b)


def fix_checksums(buf, csums, ips, changed: dict) -> int:
    """Update every checksum in ``csums`` (innermost first, as walk() lists them) for the ``changed`` fields.

    ``changed``: ``{offset: old_bytes}``; new bytes are read from ``buf``. Mutates ``changed``: rewritten
    checksum fields are added so enclosing checksums include them.
    """
    n = len(buf)
    written = 0
    # per changed field: (offset, end, sum(new) - sum(old) at even parity, kept positive)
    deltas = []
    by_off = {}
    for off, old in changed.items():
        ln = len(old)
        if ln == 4:
            x = int.from_bytes(buf[off:off + 4], "big")
            y = int.from_bytes(old, "big")
            d = (x >> 16) + (x & 0xFFFF) + 0x1FFFE - (y >> 16) - (y & 0xFFFF)
        else:
            d = _word_sum(buf[off:off + ln]) + 0xFFFF * 9 - _word_sum(old)
        deltas.append((off, off + ln, d))
        by_off[off] = d
    for cs_off, start, end, kind, ip_index in csums:
        if cs_off + 2 > n:
            continue
        delta = 0
        for off, hi, d in deltas:
            if hi <= start or off >= end or off == cs_off:
                continue
            if off >= start and hi <= end:
                if (off - start) & 1:
                    d = _fold(d)
                    d = ((d & 0xFF) << 8) | (d >> 8)
                delta += d
            else:                   # straddles the coverage: only the covered bytes count
                lo = start if off < start else off
                h = end if hi > end else hi
                old = changed[off]
                delta += field_delta(old[lo - off:h - off], buf[lo:h], (lo - start) & 1)
        if ip_index is not None:
            ip = ips[ip_index]
            a = ip[6]
            if a in by_off and not start <= a < end:
                delta += by_off[a]           # pseudo-header addresses: even alignment by construction
            a = ip[11]
            if a in by_off and not start <= a < end:
                delta += by_off[a]
        while delta > 0xFFFF:
            delta = (delta & 0xFFFF) + (delta >> 16)
        if delta == 0 or delta == 0xFFFF:
            continue
        hc = (buf[cs_off] << 8) | buf[cs_off + 1]
        if kind == "udp" and hc == 0:
            continue                # "no checksum": stays none
        t = (~hc & 0xFFFF) + delta
        t = (t & 0xFFFF) + (t >> 16)
        new = ~t & 0xFFFF
        if new == 0 and kind == "udp":
            new = 0xFFFF
        if new == hc:
            continue
        buf[cs_off] = new >> 8
        buf[cs_off + 1] = new & 0xFF
        if cs_off not in changed:
            changed[cs_off] = bytes((hc >> 8, hc & 0xFF))
            d = new + 0xFFFF - hc
            deltas.append((cs_off, cs_off + 2, d))
            by_off[cs_off] = d
        written += 1
    return written


def _fold(x: int) -> int:
    while x > 0xFFFF:
        x = (x & 0xFFFF) + (x >> 16)
    return x


_FOLDS = [(1536 << j, (1 << (1536 << j)) - 1) for j in range(8)]     # fold widths, multiples of 16 bits


def osum(b) -> int:
    """Ones'-complement sum of big-endian 16-bit words, as a residue mod 0xFFFF (0 stands for both zeros);
    one big integer: C speed, unlike a loop over words. Since 2**16 = 1 (mod 0xFFFF), adding the two halves
    of the integer split at a multiple of 16 bits keeps the residue: folds down to 1536 bits before the
    division, which is the slow part, with masks made once."""
    s = int.from_bytes(b, "big")
    bits = len(b) << 3
    if bits & 8:
        s <<= 8
        bits += 8
    if bits > 1536:
        while bits > 3072 << 7:                     # beyond the table (a 48 KiB segment): halve first
            half = (bits >> 5) << 4
            s = (s >> half) + (s & ((1 << half) - 1))
            bits -= half - 1
        j = ((bits - 1) // 1536).bit_length() - 1   # the widest fold below the length
        while j >= 0:
            k, m = _FOLDS[j]
            s = (s >> k) + (s & m)
            j -= 1
    return s % 0xFFFF


BATCH_SUMS = 16                # ranges in a batch from which one numpy reduction beats osum per range
_np = None                      # numpy, imported at the first such batch


def range_sums(zeroing: list) -> list:
    """osum of each entry's range [a, b) of its frame, read as 16-bit words from t (an odd start gets a
    leading zero byte, so the byte lands in the low half as it does in the checksum): in one numpy
    reduction, or range by range for fewer than BATCH_SUMS entries. Entries as Mask Payloads makes them:
    ``(_, record, a, b, _, _, t)``, the frame being ``record[0]``."""
    if len(zeroing) < BATCH_SUMS:
        return [osum(b"\0" + rec[0][a:b] if (a - t) & 1 else rec[0][a:b]) for _k, rec, a, b, _cs, _u, t in zeroing]
    global _np
    if _np is None:
        import numpy
        _np = numpy
    np = _np
    pieces, starts = [], []
    add, mark = pieces.append, starts.append
    pos = 0
    for _k, rec, a, b, _cs, _udp, t in zeroing:
        mark(pos)
        size = b - a
        if (a - t) & 1:
            add(b"\0")
            size += 1
        add(rec[0][a:b])
        if size & 1:
            add(b"\0")
            size += 1
        pos += size >> 1
    words = np.frombuffer(b"".join(pieces), ">u2")
    return (np.add.reduceat(words, starts, dtype=np.uint64) % 0xFFFF).tolist()
