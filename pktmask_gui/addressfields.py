"""Address fields inside headers and payloads, for the frame walker: IPv4 options, IPv6 routing headers, PPP
IPCP, ICMPv6 neighbour discovery and MLD, IGMP, NHRP, DNS answers and client subnets, DHCP and DHCPv6.

Each function appends ``(offset, size, prefix_bits)`` entries to the walker's ``addrs`` list (see frames.py)
and never raises on what it cannot read: a malformed message simply ends its list. Hand-written: these run
on live frames at byte offsets; a message library would build objects per packet.
"""
from __future__ import annotations

import struct

from .layout import CS_NHRP

_H = struct.Struct("!H").unpack_from
_HH = struct.Struct("!HH").unpack_from
_HHHH = struct.Struct("!HHHH").unpack_from
_RR = struct.Struct("!HHIH").unpack_from                   # DNS resource record: type, class, TTL, length
# DHCP options holding a list of IPv4 addresses (RFC 2132 and successors); 21 / 33 hold pairs
_DHCP_ADDR_OPTS = frozenset((3, 4, 5, 6, 7, 8, 9, 10, 11, 16, 28, 32, 41, 42, 44, 45, 48, 49, 50, 54, 65, 68,
                             69, 70, 71, 72, 73, 74, 75, 76, 118))


def ip4_options(data, p, hend, addrs, pdst):
    """List addresses in IPv4 options (record route, source routes, timestamps); return pseudo dst."""
    while p < hend:
        typ = data[p]
        if typ == 0:
            break
        if typ == 1:
            p += 1
            continue
        if p + 1 >= hend:
            break
        ln = data[p + 1]
        if ln < 2 or p + ln > hend:
            break
        if typ in (7, 131, 137):                             # RR, LSRR, SSRR
            q = p + 3
            last = -1
            while q + 4 <= p + ln:
                addrs.append((q, 4, 32))
                last = q
                q += 4
            if typ != 7 and last >= 0 and data[p + 2] <= ln:
                pdst = last                                  # final destination of a source route
        elif typ == 68 and ln >= 4:                          # timestamp with addresses
            fl = data[p + 3] & 15
            if fl in (1, 3):
                q = p + 4
                while q + 8 <= p + ln:
                    addrs.append((q, 4, 32))
                    q += 8
        p += ln
    return pdst


def ip6_routing(data, p, hend, addrs, pdst):
    """List addresses in an IPv6 routing header; return the pseudo-header destination offset."""
    if p + 8 > hend:
        return pdst
    rtype = data[p + 2]
    left = data[p + 3]
    if rtype in (0, 2, 4):
        q = p + 8
        first = last = -1
        while q + 16 <= hend:
            addrs.append((q, 16, 128))
            if first < 0:
                first = q
            last = q
            q += 16
        if left and last >= 0:
            pdst = first if rtype == 4 else last
    return pdst


def ipcp(data, off, n, addrs):
    if off + 4 > n:
        return
    end = min(off + _H(data, off + 2)[0], n)
    if data[off] not in (1, 2, 3, 4):                        # Configure-Request/Ack/Nak/Reject
        return
    p = off + 4
    while p + 2 <= end:
        typ, ln = data[p], data[p + 1]
        if ln < 2:
            break
        if typ in (3, 129, 130, 131, 132) and ln == 6:
            addrs.append((p + 2, 4, 32))
        p += ln


def icmp6_body(data, n, typ, off, end, addrs, macs):
    """Addresses in ICMPv6 informational messages; returns a redirected-header offset or None."""
    opts = -1
    if typ in (135, 136):                                    # neighbour solicitation / advertisement
        if off + 8 < n:
            addrs.append((off + 8, 16, 128))
        opts = off + 24
    elif typ == 137:                                         # redirect
        if off + 8 < n:
            addrs.append((off + 8, 16, 128))
        if off + 24 < n:
            addrs.append((off + 24, 16, 128))
        opts = off + 40
    elif typ == 133:
        opts = off + 8
    elif typ == 134:
        opts = off + 16
    elif typ in (130, 131, 132):                             # MLD (v2 query: source list)
        if off + 8 < n:
            addrs.append((off + 8, 16, 128))
        if typ == 130 and end - off >= 28 and off + 28 <= n:
            q = off + 28
            for _ in range(_H(data, off + 26)[0]):
                if q >= end:
                    break
                addrs.append((q, 16, 128))
                q += 16
    elif typ == 143 and off + 8 <= n:                        # MLDv2 report
        q = off + 8
        for _ in range(_H(data, off + 6)[0]):
            if q + 4 > n:
                break
            aux, nsrc = data[q + 1], _H(data, q + 2)[0]
            addrs.append((q + 4, 16, 128))
            q += 20
            for _ in range(nsrc):
                if q >= end:
                    break
                addrs.append((q, 16, 128))
                q += 16
            q += aux * 4
    redirected = None
    if opts > 0:
        q = opts
        while q + 2 <= n and q < end:
            otype, olen = data[q], data[q + 1] * 8
            if olen == 0:
                break
            if otype in (1, 2) and olen == 8:
                macs.append(q + 2)
            elif otype == 3 and olen == 32 and q + 16 < n:
                addrs.append((q + 16, 16, min(data[q + 2], 128)))
            elif otype == 25 and olen >= 24:
                r = q + 8
                while r + 16 <= q + olen:
                    if r < n:
                        addrs.append((r, 16, 128))
                    r += 16
            elif otype == 4 and olen > 8 and q + 8 < end:
                redirected = q + 8
            q += olen
    return redirected


def igmp(data, n, off, end, addrs):
    typ = data[off]
    if typ == 0x22:                                          # IGMPv3 report: group records
        q = off + 8
        for _ in range(_H(data, off + 6)[0]):
            if q + 8 > n:
                break
            aux, nsrc = data[q + 1], _H(data, q + 2)[0]
            addrs.append((q + 4, 4, 32))
            q += 8
            for _ in range(nsrc):
                if q >= end:
                    break
                addrs.append((q, 4, 32))
                q += 4
            q += aux * 4
        return
    addrs.append((off + 4, 4, 32))                           # group address
    if typ == 0x11 and end - off >= 12 and off + 12 <= n:    # IGMPv3 query: sources
        q = off + 12
        for _ in range(_H(data, off + 10)[0]):
            if q >= end:
                break
            addrs.append((q, 4, 32))
            q += 4


def _nhrp_cies(data, n, q, stop, addrs):
    """Client information entries from q to stop: 12-byte header, then NBMA, NBMA subaddress, protocol."""
    if stop > n:
        stop = n
    while q + 12 <= stop:
        tl, stl, pl = data[q + 8] & 0x3F, data[q + 9] & 0x3F, data[q + 10]
        q += 12
        if tl in (4, 16) and q + tl <= stop:
            addrs.append((q, tl, tl * 8))
        q += tl + stl
        if pl in (4, 16) and q + pl <= stop:
            addrs.append((q, pl, pl * 8))
        q += pl


def nhrp(data, n, p, addrs, csums):
    """NHRP (RFC 2332): fixed header, mandatory part, client information entries, extensions.

    Address fields are listed only where they cannot overlap a header read after them (a malformed
    extension offset ends the walk), so that rewriting them never changes how the packet reads."""
    if p + 20 > n:
        return
    pktsz, _cs, extoff = struct.unpack_from("!HHH", data, p + 10)
    end = p + pktsz if pktsz >= 20 else n
    if end > n:
        end = n
    csums.append((p + 12, p, end, CS_NHRP, None))
    ptype, shtl, sstl = data[p + 17], data[p + 18] & 0x3F, data[p + 19] & 0x3F
    if not 1 <= ptype <= 8:
        return
    q = p + 20
    if q + 8 > end:
        return
    spl, dpl = data[q], data[q + 1]
    q += 8
    stop = p + extoff if extoff else end
    if stop > end:
        stop = end
    for ln in (shtl, -sstl, spl, dpl):
        if ln in (4, 16) and q + ln <= stop:
            addrs.append((q, ln, ln * 8))
        q += abs(ln)
    if q > stop:
        return                                               # extensions would overlap the mandatory part
    if ptype != 7:
        _nhrp_cies(data, n, q, stop, addrs)
    if not extoff:
        return
    q = p + extoff
    while q + 4 <= end:
        etype, elen = struct.unpack_from("!HH", data, q)
        etype &= 0x3FFF
        if etype == 0:
            break
        if etype in (3, 4, 5, 9):
            _nhrp_cies(data, n, q + 4, min(q + 4 + elen, end), addrs)
        q += 4 + elen


def dns_addresses(data, p: int, end: int, limit: int) -> list:
    """The ``addrs`` entries walk() lists for a DNS message over UDP at ``p`` that ends at ``end`` (the UDP
    length), with ``limit`` the end of its IP packet: A / AAAA records and EDNS client-subnet prefixes,
    fields cut by ``limit`` given as prefixes of the bits present. For stages with a fast path of their own."""
    addrs = []
    dns(data, limit, p, end, addrs)
    if addrs:
        clip(addrs, 0, limit)
    return addrs


def _dns_name(data, q, end):
    """Offset after a (possibly compressed) DNS name, or -1."""
    for _ in range(128):
        if q >= end:
            return -1
        ln = data[q]
        if ln == 0:
            return q + 1
        if ln >= 0xC0:
            return q + 2
        if ln > 63:
            return -1
        q += 1 + ln
    return -1


def dns(data, n, p, end, addrs):
    """A / AAAA record data and EDNS client-subnet addresses of a DNS message at p."""
    if end > n:
        end = n
    if p + 12 > end:
        return
    qd, an, ns, ar = _HHHH(data, p + 4)
    if qd > 32 or an + ns + ar > 512 or (data[p + 2] >> 3) & 15 > 6:
        return                                               # not a plausible DNS message
    q = p + 12
    for _ in range(qd):
        q = _dns_name(data, q, end)
        if q < 0 or q + 4 > end:
            return
        q += 4
    for _ in range(an + ns + ar):
        if q < end and data[q] >= 0xC0:
            q += 2                                           # a name that is one compression pointer
        else:
            q = _dns_name(data, q, end)
            if q < 0:
                return
        if q + 10 > end:
            return
        rtype, _cls, _ttl, rdlen = _RR(data, q)
        r = q + 10
        if rtype == 1 and rdlen == 4 and r < end:
            addrs.append((r, 4, 32))
        elif rtype == 28 and rdlen == 16 and r < end:
            addrs.append((r, 16, 128))
        elif rtype == 41:                                    # OPT: EDNS options
            o, oend = r, min(r + rdlen, end)
            while o + 4 <= oend:
                code, olen = _HH(data, o)
                if code == 8 and olen >= 4 and o + 8 <= oend:    # client subnet
                    fam, src = _H(data, o + 4)[0], data[o + 6]
                    size = 4 if fam == 1 else 16 if fam == 2 else 0
                    if size and 0 < src <= size * 8 and o + 8 + ((src + 7) >> 3) <= oend:
                        addrs.append((o + 8, size, src))
                o += 4 + olen
        q = r + rdlen


def dhcp(data, n, p, end, addrs, macs):
    """BOOTP/DHCP: ciaddr, yiaddr, siaddr, giaddr, client MAC, address options."""
    if end > n:
        end = n
    if p + 236 > end or data[p] not in (1, 2) or data[p + 2] > 16:
        return
    for k in (12, 16, 20, 24):
        addrs.append((p + k, 4, 32))
    if data[p + 1] == 1 and data[p + 2] == 6:
        macs.append(p + 28)
    if p + 240 > end or data[p + 236:p + 240] != b"\x63\x82\x53\x63":
        return
    q = p + 240
    while q < end:
        code = data[q]
        if code == 255:
            break
        if code == 0:
            q += 1
            continue
        if q + 2 > end:
            break
        ln = data[q + 1]
        v, vend = q + 2, min(q + 2 + ln, end)
        if code in _DHCP_ADDR_OPTS or code == 33:
            while v + 4 <= vend:
                addrs.append((v, 4, 32))
                v += 4
        elif code == 21:                                     # policy filter: address, mask pairs
            while v + 8 <= vend:
                addrs.append((v, 4, 32))
                v += 8
        q += 2 + ln


_DHCP6_NESTED = {3: 12, 4: 4, 25: 12}                        # IA_NA, IA_TA, IA_PD: options after this many bytes


def _dhcp6_options(data, q, end, addrs, depth):
    while q + 4 <= end:
        code, ln = _HH(data, q)
        v, vend = q + 4, min(q + 4 + ln, end)
        if code in _DHCP6_NESTED:
            _dhcp6_options(data, v + _DHCP6_NESTED[code], vend, addrs, depth)
        elif code == 5 and v + 16 <= vend:                   # IA address
            addrs.append((v, 16, 128))
            _dhcp6_options(data, v + 24, vend, addrs, depth)
        elif code == 26 and v + 25 <= vend:                  # IA prefix: lifetimes, length, prefix
            plen = data[v + 8]
            if 0 < plen <= 128:
                addrs.append((v + 9, 16, plen))
            _dhcp6_options(data, v + 25, vend, addrs, depth)
        elif code in (12, 21, 22, 23, 31, 40, 48):          # server unicast, SIP / DNS / SNTP / ... servers
            a = v
            while a + 16 <= vend:
                addrs.append((a, 16, 128))
                a += 16
        elif code == 9:                                      # relay message: a whole DHCPv6 message
            dhcp6(data, vend, v, vend, addrs, depth + 1)
        q += 4 + ln


def dhcp6(data, n, p, end, addrs, depth):
    if end > n:
        end = n
    if p + 4 > end or depth > 8:
        return
    mtype = data[p]
    if mtype in (12, 13):                                    # relay-forward / relay-reply
        if p + 34 > end:
            return
        addrs.append((p + 2, 16, 128))
        addrs.append((p + 18, 16, 128))
        _dhcp6_options(data, p + 34, end, addrs, depth)
    elif 1 <= mtype <= 11 or mtype in (14, 15, 16, 17, 18, 19, 20, 21, 22, 23):
        _dhcp6_options(data, p + 4, end, addrs, depth)


def clip(addrs, k, n):
    """Fields from index k that run past n (the end of their packet or of the frame) keep only the bytes
    before it, written as a prefix of that many bits; returns the new clipping start."""
    i = k
    while i < len(addrs):
        off, size, plen = addrs[i]
        if off + size > n:
            bits = (n - off) * 8
            if bits <= 0 or plen < 0:
                del addrs[i]                                 # nothing left / an inverted field cut short
                continue
            if bits < plen:
                addrs[i] = (off, size, bits)
        i += 1
    return len(addrs)
