"""What an IP header carries: transports, tunnels and the payloads read for addresses, for frames.walk.

``transport(...)`` parses the protocol after one IP header (TCP, UDP and what shape.udp_payload finds in it,
ICMP / ICMPv6 and the packets their errors quote, GRE, EtherIP, UDP-Lite, DCCP, VRRPv3, OSPFv3, PIM, IGMP)
and tells the walker where to go on; ``upper()`` names the protocols that carry an IP or MPLS layer
directly. Offsets, checksums and address fields are appended to the walker's lists (see frames.py).
"""
from __future__ import annotations

import struct

from .addressfields import dhcp, dhcp6, dns, icmp6_body, igmp
from .flowexport import flow_export
from .layout import (CS_GRE, CS_ICMP, CS_ICMPV6, CS_IGMP, CS_IP_BODY, CS_PSEUDO, CS_TCP, CS_UDP, F_FRAGMENT, F_QUOTED,
                     INVERTED, L4F_ECHO, L4F_FRAGMENT, L4F_ICMP_ERROR, L4F_QUOTES)
from .shape import (DHCP, DHCP6, DNS, ETH, ETYPE, IP, IP4, IP6, MPLS, PPP, TCP_HEADER, TEREDO, teredo_origin,
                    udp_payload)

DONE, QUOTE, QUOTE6 = 10, 11, 12    # the walk ends; into a quoted packet (by its version nibble / IPv6)
_ICMP_ERRORS = frozenset((3, 4, 5, 11, 12))
_H = struct.Struct("!H").unpack_from
_HH = struct.Struct("!HH").unpack_from
_HHH = struct.Struct("!HHH").unpack_from


def later_fragment_checksum(proto, frag_off, off, n, idx, csums) -> None:
    """A small later fragment may hold the TCP checksum (datagram bytes 16 and 17): listed, covering none of
    the fragment's bytes, so that the addresses of its pseudo-header still update it."""
    if proto == 6 and frag_off <= 16:
        cs = off + 16 - frag_off
        if cs + 2 <= n:
            csums.append((cs, cs, cs, CS_TCP, idx))


def upper(proto):
    """States for IP protocols that carry another IP/link layer directly; None for transports."""
    if proto == 4:
        return IP4
    if proto == 41:
        return IP6
    if proto == 137:
        return MPLS
    return None


def transport(data, n, proto, off, end, wire, idx, flags0, fl, ips, addrs, csums, macs, l4, ver):
    """Parse a transport or tunnel protocol at ``off`` (the payload of IP header ``idx``).

    Returns ``(state, off, etype, l4, reason, limit, extra)``: ``DONE`` when the walk ends here, another
    state to go on with at ``off`` (``etype``: the pending Ethertype or PPP protocol for ETYPE /
    PPPPROTO; QUOTE: into the packet an ICMP error quotes, an IP header by its version nibble, or IPv6
    for ICMPv6), or a ``reason`` why it cannot be read (``off``: where understanding stopped); ``limit``
    is where the carried content ends (nothing after it belongs to it); ``extra``: None, or
    ``(quoted, blind)`` found in the payload (sFlow samples, flow records without a known layout).
    """
    quoted = flags0 & F_QUOTED
    frag = L4F_FRAGMENT if fl & F_FRAGMENT else 0
    if proto == 6:
        if off + 18 <= n:
            csums.append((off + 16, off, end, CS_TCP, idx))
        if not quoted and l4 is None:
            pay = off + TCP_HEADER[data[off + 12]] if off + 13 <= n else end
            if pay > end:
                pay = end
            l4 = (6, off, pay, end, idx, frag)
        if off + 13 <= n:
            sport, dport = _HH(data, off)
            if sport == 53 or dport == 53:                   # DNS over TCP: a 2-byte length, then a message
                pay = off + TCP_HEADER[data[off + 12]]
                if pay + 14 <= end and _H(data, pay)[0] >= 12:
                    dns(data, n, pay + 2, end, addrs)
        return DONE, off, 0, l4, None, end, None

    if proto == 17:
        if off + 8 > n:
            if not quoted and l4 is None:
                l4 = (17, off, end, end, idx, frag)
            return DONE, off, 0, l4, None, end, None
        sport, dport, ulen = _HHH(data, off)
        uend = off + ulen
        # the datagram's end on the wire; in a first fragment only the UDP length knows it
        uwire = uend if ulen >= 8 and (uend <= wire or frag) else wire
        if ulen < 8 or uend > end:
            uend = end
        csums.append((off + 6, off, uend, CS_UDP, idx))
        p = off + 8
        role, nxt, q, etype = udp_payload(data, n, sport, dport, p, uend, uwire)
        extra = None
        lflags = frag
        if role >= 16:                                       # a tunnel: its carrier is never l4
            if role == TEREDO:
                origin = teredo_origin(data, n, p)
                if 0 <= origin < q:
                    addrs.append((origin, 4, INVERTED))
            return nxt, q, etype, l4, None, uend, None
        if role == DNS:
            dns(data, n, p, uend, addrs)
        elif role == DHCP:
            dhcp(data, n, p, uend, addrs, macs)
        elif role == DHCP6:
            dhcp6(data, n, p, uend, addrs, 0)
        elif role and not quoted:                            # flow export: addresses of other packets
            extra = flow_export(data, n, role, p, uend, ips, addrs, csums, macs)
            if extra[0]:
                lflags |= L4F_QUOTES
        if not quoted and l4 is None:
            l4 = (17, off, p if p < uend else uend, uend, idx, lflags)
        return DONE, off, 0, l4, None, end, extra

    if proto == 1:
        if off + 4 <= n:
            csums.append((off + 2, off, end, CS_ICMP, None))
        if off >= n:
            return DONE, off, 0, l4, None, end, None
        typ = data[off]
        if typ in _ICMP_ERRORS:
            if typ == 5 and off + 4 < n:
                addrs.append((off + 4, 4, 32))               # redirect: gateway address
            if not quoted and l4 is None:
                l4 = (1, off, min(off + 8, end), end, idx, L4F_ICMP_ERROR | frag)
            if off + 8 >= end:
                return DONE, off, 0, l4, None, end, None
            return QUOTE, off + 8, 0, l4, None, end, None
        if typ == 9 and off + 8 <= n:                        # router advertisement
            cnt, size = data[off + 4], data[off + 5] * 4
            q = off + 8
            for _ in range(cnt):
                if q >= end or size < 4:
                    break
                addrs.append((q, 4, 32))
                q += size
        if not quoted and l4 is None:
            l4 = (1, off, min(off + 8, end), end, idx, (L4F_ECHO if typ in (0, 8) else 0) | frag)
        return DONE, off, 0, l4, None, end, None

    if proto == 58:
        if off + 4 <= n:
            csums.append((off + 2, off, end, CS_ICMPV6, idx))
        if off >= n:
            return DONE, off, 0, l4, None, end, None
        typ = data[off]
        if typ < 128:
            if not quoted and l4 is None:
                l4 = (58, off, min(off + 8, end), end, idx, L4F_ICMP_ERROR | frag)
            if off + 8 >= end:
                return DONE, off, 0, l4, None, end, None
            return QUOTE6, off + 8, 0, l4, None, end, None
        q = icmp6_body(data, n, typ, off, end, addrs, macs)
        if q is not None:
            if not quoted and l4 is None:
                l4 = (58, off, min(off + 8, end), end, idx, frag)
            return QUOTE6, q, 0, l4, None, end, None       # redirected header: a quoted packet
        if not quoted and l4 is None:
            l4 = (58, off, min(off + 8, end), end, idx, (L4F_ECHO if typ in (128, 129) else 0) | frag)
        return DONE, off, 0, l4, None, end, None

    if proto == 47:                                          # GRE
        if off + 4 > n:
            return DONE, off, 0, l4, None, end, None
        gfl, ptype = _HH(data, off)
        gver = gfl & 7
        p = off + 4
        if gfl & 0xC000:                                     # checksum (and offset) present
            if gfl & 0x8000 and p + 2 <= n:
                csums.append((p, off, end, CS_GRE, None))
            p += 4
        if gfl & 0x2000:
            p += 4
        if gfl & 0x1000:
            p += 4
        if gver == 1 and gfl & 0x0080:                       # PPTP acknowledgment number
            p += 4
        if gfl & 0x4000 and gver == 0:                       # RFC 1701 source routing entries
            while p + 4 <= n:
                sre_len = data[p + 3]
                p += 4 + sre_len
                if sre_len == 0:
                    break
        if gver not in (0, 1):
            return DONE, off + 4, 0, l4, "GRE version %d is not supported" % gver, end, None
        if p >= end:
            return DONE, off, 0, l4, None, end, None
        if ptype == 0x88BE and not gfl & 0x1000:             # ERSPAN type I: no ERSPAN header
            return ETH, p, 0, l4, None, end, None
        if ptype == 0x880B:
            return PPP, p, 0, l4, None, end, None
        if ptype == 0x883E:                                  # WCCP redirect header, then IP
            return IP, p + 4, 0, l4, None, end, None
        if ptype < 0x0600:
            return DONE, p, 0, l4, "GRE protocol type 0x%04x is not supported" % ptype, end, None
        return ETYPE, p, ptype, l4, None, end, None

    if proto == 97 and off + 2 <= n and data[off] >> 4 == 3:       # EtherIP (RFC 3378): 2 bytes, then Ethernet
        return ETH, off + 2, 0, l4, None, end, None

    if proto == 136 or proto == 33:                          # UDP-Lite, DCCP: pseudo-header checksums
        if off + 8 <= n:
            csums.append((off + 6, off, end, CS_PSEUDO, idx))
        if not quoted and l4 is None:
            pay = off + 8 if proto == 136 else (off + data[off + 4] * 4 if off + 5 <= n else end)
            l4 = (proto, off, min(pay, end), end, idx, frag)
        return DONE, off, 0, l4, None, end, None

    if proto == 112 and off + 8 <= n and data[off] >> 4 == 3:  # VRRPv3: virtual addresses, pseudo-header
        csums.append((off + 6, off, end, CS_PSEUDO, idx))
        size = 4 if ver == 4 else 16
        q = off + 8
        for _ in range(data[off + 3]):
            if q >= end:
                break
            addrs.append((q, size, size * 8))
            q += size
        if not quoted and l4 is None:
            l4 = (112, off, end, end, idx, frag)
        return DONE, off, 0, l4, None, end, None

    if proto == 89 and ver == 6 and off + 14 <= n:            # OSPFv3: pseudo-header checksum
        csums.append((off + 12, off, end, CS_PSEUDO, idx))

    if proto == 103:                                         # PIM: only Register carries a packet
        if off + 4 <= n:
            # Register: the checksum covers the 8-byte header only; IPv6: with a pseudo-header
            reg = data[off] == 0x21
            csums.append((off + 2, off, min(off + 8, end) if reg else end, CS_PSEUDO if ver == 6 else CS_IP_BODY,
                          idx if ver == 6 else None))
        if off + 8 <= n and data[off] & 0x0F == 1 and data[off] >> 4 == 2:
            if off + 8 >= end:
                return DONE, off, 0, l4, None, end, None
            return IP, off + 8, 0, l4, None, end, None      # the carried packet holds the transport
        if not quoted and l4 is None:
            l4 = (103, off, min(off + 4, end), end, idx, frag)
        return DONE, off, 0, l4, None, end, None

    if proto == 2:                                           # IGMP
        if off + 4 <= n:
            csums.append((off + 2, off, end, CS_IGMP, None))
        if off + 8 <= n:
            igmp(data, n, off, end, addrs)
        if not quoted and l4 is None:
            l4 = (2, off, min(off + 8, end), end, idx, frag)
        return DONE, off, 0, l4, None, end, None

    # anything else: opaque payload (ESP, OSPF, SCTP, ...)
    if not quoted and l4 is None:
        l4 = (proto, off, off, end, idx, frag)
    return DONE, off, 0, l4, None, end, None
