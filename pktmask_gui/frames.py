"""The frame walker: one pass over a frame's headers, shared by every stage.

``walk(data, linktype)`` reads the link layer, every encapsulation and every IP header of one frame and
returns offsets only (plain tuples and lists, no per-layer objects). It never copies or changes ``data``
(``bytes``, ``bytearray`` or ``memoryview``). Frames cut by the snap length are normal: every end is
clipped to ``len(data)`` and a header that stops early simply ends the walk.

Result: a 9-tuple ``(status, label, ips, addrs, l4, csums, macs, blind, quoted)``; index names ``W_STATUS``
... ``W_QUOTED``.

``status``
    ``OK`` (an IP or ARP frame, walked to its end), ``NON_IP`` (a known protocol that carries no IP
    header: ``label`` names it, e.g. ``"LLDP"``), or ``UNINSPECTABLE`` (``label`` is a one-sentence reason
    naming the link type or encapsulation, e.g. ``"link type 147 (USER0) is not supported"``). An
    uninspectable frame lists the outer layers it got through, and ``blind`` holds one range, from the
    first byte after the last header understood to the frame's end: the stages zero it (fail closed on the
    frame, not the file), pass the frame unchanged, or fail the file, by their ``uninspected`` option.
``label``
    For ``OK``: the outermost network protocol (``"IPv4"``, ``"IPv6"``, ``"ARP"``, ``"RARP"``, ``"NHRP"``,
    ``"PPP IPCP"``, or ``"truncated"`` when the frame ends before one); use it to count frames by type.
``ips``
    One tuple per IP header, outermost first (tunnelled inner headers and headers quoted inside ICMP /
    ICMPv6 errors included), indexed by ``IP_*``::

        (off, version, hdr_len, proto, pay_off, pay_end, src_off, dst_off, flags, frag_id, frag_off, pdst_off)

    ``hdr_len`` includes IPv4 options / IPv6 extension headers (up to the upper-layer header);
    ``proto`` is the upper-layer protocol (IPv6: the last next-header value); ``pay_end`` is
    ``min(end by total / payload length, len(data))``; ``src_off``/``dst_off`` the address offsets
    (4 or 16 bytes by ``version``); ``pdst_off`` the destination used in the upper-layer pseudo-header
    (differs from ``dst_off`` with an IPv4 source route or an IPv6 routing header with segments left).
    ``flags``: ``F_QUOTED`` (inside an ICMP/ICMPv6 error), ``F_TUNNELLED`` (not the outermost IP header),
    ``F_FRAGMENT`` (any fragment), ``F_LATER_FRAGMENT`` (fragment offset > 0: no upper-layer header),
    ``F_MORE_FRAGMENTS``, ``F_TRUNCATED`` (the header itself is cut short). ``frag_id``/``frag_off``
    (bytes) are 0 for unfragmented packets.
``addrs``
    Every IP address field in the frame, as ``(offset, size, prefix_bits)``: size 4 or 16; prefix_bits is
    ``size * 8`` for addresses, smaller for prefixes (ICMPv6 prefix information: bits past it are zero), or
    ``INVERTED`` (-1) for an address stored bitwise inverted (the Teredo origin indication). A field cut short
    by the end of its packet or of the frame is listed as a prefix of the bits present.
    Covers IP source/destination of every header above, IPv4 source/record route and timestamp options,
    IPv6 routing headers, ARP/RARP sender and target protocol addresses, ICMP redirect gateways and
    router advertisements, ICMPv6 neighbour discovery targets / prefixes / RDNSS, MLD and IGMP group and
    source addresses, VRRPv3 virtual addresses, PPP IPCP address options, NHRP NBMA / protocol / client
    addresses, and in
    application data: DNS A / AAAA records and EDNS client-subnet options (UDP/TCP 53, mDNS, LLMNR),
    DHCP address fields and address options, DHCPv6 addresses, prefixes and server lists. A field of
    ``prefix_bits < size * 8`` occupies ``(prefix_bits + 7) // 8`` bytes (``field_length()``); a prefix-
    preserving mapping rewrites such a part of an address exactly as the first bits of the whole.
``l4``
    The innermost transport layer that carries application data, or ``None``, indexed by ``L4_*``::

        (proto, l4_off, pay_off, pay_end, ip_index, flags)

    ``proto`` is the IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, anything else opaque);
    ``ip_index`` indexes ``ips`` (flow keys: addresses there, ports / TCP seq / flags at ``l4_off``).
    ``flags``: ``L4F_ECHO`` (ICMP/ICMPv6 echo: payload is the echo data), ``L4F_ICMP_ERROR`` (the payload is a
    quoted packet, see ``ips`` with ``F_QUOTED``), ``L4F_FRAGMENT`` (part of a fragmented datagram; the
    checksum of a fragmented datagram sits in its first fragment and covers all of them),
    ``L4F_NO_HEADER`` (a later fragment: ``l4_off`` is -1, the payload is the fragment data), ``L4F_QUOTES``
    (a UDP payload that carries other packets' headers: sFlow samples, see ``quoted``).
    A tunnel's carrier (outer UDP of VXLAN, GRE, ...) is never ``l4``; the tunnelled transport is. The first
    fragment of a datagram is walked like a whole packet (tunnels and inner headers included, its transport
    flagged ``L4F_FRAGMENT``); later fragments are opaque data, and a small one that holds the TCP
    checksum lists it (covering none of its bytes) so that its pseudo-header addresses update it.
``csums``
    Every checksum field present in the frame, innermost first (apply updates in list order), as
    ``(cs_off, cover_start, cover_end, kind, ip_index)``. ``kind``: ``CS_IPV4``, ``CS_TCP``, ``CS_UDP``,
    ``CS_ICMP``, ``CS_ICMPV6``, ``CS_IGMP``, ``CS_GRE``, ``CS_NHRP``, ``CS_PSEUDO`` (other transports with
    an IP pseudo-header: UDP-Lite, DCCP, VRRPv3, OSPFv3, PIM over IPv6) or ``CS_IP_BODY`` (PIM over IPv4).
    ``ip_index`` is the IP header whose addresses enter the pseudo-header, or ``None``. Byte parity of a
    changed byte is relative to ``cover_start``; ``cover_end`` is clipped to ``len(data)``. Includes
    checksums inside quoted headers, the outer UDP checksum of tunnels (VXLAN, Geneve, GTP-U, Teredo,
    MPLS-over-UDP, L2TP) and the GRE checksum: all cover the inner packet. ``checksum.fix_checksums``
    applies them (RFC 1624, UDP 0 stays 0).
``macs``
    Offsets of 6-byte MAC address fields: Ethernet destination/source at any depth (except an MPLS
    pseudo-wire's Ethernet header, recognised only by its first bytes), ARP hardware
    addresses of length 6, Linux cooked capture addresses of length 6, ICMPv6 link-layer address options,
    the DHCP client hardware address, sFlow Ethernet frame data records.
``blind``
    ``(start, end, reason)`` ranges the walker cannot read but which may hold addresses: after the last
    header of an UNINSPECTABLE frame; in flow export, sFlow records of formats it does not know, NetFlow
    v9 / IPFIX data records (their layout is in templates) and bytes after the last record it could read.
    ``end`` may pass the frame's end (a datagram cut by the snap length). ``()`` when there are none.
``quoted``
    ``(start, end)`` regions of headers quoted for other packets inside a UDP payload (sFlow sampled
    headers, walked like the packet an ICMP error quotes: their IP headers are flagged ``F_QUOTED``);
    ``()`` when there are none.

Link types: Ethernet (1), NULL (0), LOOP (108), raw IP (101, 12, 14, 228, 229: by the version nibble, as
Wireshark reads them), PPP (9, 50 PPP in HDLC framing, 204 with direction), Cisco HDLC (104), Linux SLL (113)
and SLL2 (276), NFLOG (239), IP over InfiniBand (242). Encapsulations: 802.1Q/802.1ad/QinQ at any depth,
802.1BR E-Tag, VN-Tag, Cisco FabricPath, MPLS stacks (with pseudo-wire Ethernet), PPPoE sessions, Arista
timestamp header, LLC/SNAP, NSH, IP-in-IP (4, 41), EtherIP (97), GRE (versions 0 and 1, keyed, with checksum,
carrying IP, Ethernet (TEB), ERSPAN I/II/III, PPP, MPLS, WCCP), MPLS in IP (137), PIM Register, IPv4 AH,
IPv6 extension headers and fragments, ICMP and ICMPv6 errors (quoted headers, walked like any other), and
the UDP tunnels shape.udp_payload() recognises (VXLAN, VXLAN-GPE, Geneve, MPLS over UDP and LISP by their
destination port; GTP-U, L2TPv2 and Teredo by either port; Teredo by content where no port names the
datagram; each only when its inner header validates). Payloads read for addresses: DNS (UDP/TCP 53, mDNS,
LLMNR), DHCP, DHCPv6, sFlow v5 and NetFlow v5 (NetFlow v9 / IPFIX data records are ``blind``). At most
MAX_HEADERS layers are walked.

Cost: the usual frame (shape.usual: Ethernet with at most one 802.1Q tag or raw IP, IPv4 without options or
IPv6 without extension headers, not a fragment, TCP, UDP whose payload is plain or DNS, ICMP / ICMPv6 echo)
takes a fast path at the top of ``walk`` (under a microsecond) that returns exactly what the general walk
``_walk`` would (tests/test_shape.py compares the two on crafted and mutated frames); everything else goes
through the general walk, one loop with ``struct.unpack_from`` and direct indexing. Nothing is cached per
packet. Stages with a fast path of their own start from shape.usual too, and ask ``dns_addresses()`` for a
DNS message's fields, so that they decide exactly as ``walk`` does.
"""
from __future__ import annotations

import struct

from .addressfields import clip, dns, ip4_options, ip6_routing, ipcp, nhrp
from .addressfields import dns_addresses  # noqa: F401 - part of the walker's interface for the stages
from .layout import *  # noqa: F403 - the result layout is the walker's vocabulary (and its importers')
from .layout import (CS_ICMP, CS_ICMPV6, CS_IPV4, CS_TCP, CS_UDP, F_FRAGMENT, F_LATER_FRAGMENT,
                     F_MORE_FRAGMENTS, F_QUOTED, F_TRUNCATED, F_TUNNELLED, L4F_ECHO, L4F_FRAGMENT, L4F_NO_HEADER,
                     NON_IP, OK, UNINSPECTABLE)
from .linklayer import (ARP as _ARP, LINKTYPE_NAMES, LLC as _LLC, LLC_SAPS, NON_IP_ETHERTYPES, PPP_NON_IP,
                        PPPPROTO as _PPPPROTO, SNAP_CISCO, link_start, linktype_name)
from .shape import (ETH as _ETH, ETYPE as _ETYPE, IP as _IP, IP4 as _IP4, IP6 as _IP6, MPLS as _MPLS,
                    PPP as _PPP, TCP_DNS, TCP_HEADER, UDP_DNS, usual)
from .stages import StageError
from .transport import DONE as _DONE, QUOTE as _QUOTE, QUOTE6 as _QUOTE6, later_fragment_checksum, transport, upper

__all__ = ["walk", "walk_from", "Uninspectable", "dns_addresses", "linktype_name", "LINKTYPE_NAMES",
           "NON_IP_ETHERTYPES"]


class Uninspectable(StageError):
    """A frame uses a link type or an encapsulation the walker cannot parse (fail closed)."""

    kind = "uninspectable"


_VLAN_TYPES = frozenset((0x8100, 0x88A8, 0x9100, 0x9200, 0x9300))
_PLAIN_ETYPES = frozenset((0x0800, 0x86DD, 0x0806, 0x8035, 0x8100, 0x88A8, 0x9100, 0x8847, 0x8848, 0x8864,
                           0x88CC))
_IP6_EXT = frozenset((0, 43, 44, 51, 60, 139, 140, 253, 254))
_NSH_NEXT = {1: _IP4, 2: _IP6, 3: _ETH, 5: _MPLS}

_H = struct.Struct("!H").unpack_from
_HH = struct.Struct("!HH").unpack_from
_HHH = struct.Struct("!HHH").unpack_from
_NONE = ()                                                 # blind / quoted when there are none
MAX_HEADERS = 256       # layers walked before a frame counts as uninspectable (each one takes bytes)


def walk(data, linktype: int):
    """Walk one frame; see the module docstring for the result layout."""
    s = usual(data, linktype)
    if s is not None:
        return _usual_walk(data, s)
    return _walk(data, linktype, len(data))


def _usual_walk(data, s):
    """The walk of a frame of the usual shape (shape.usual): the general walk's result, without the walk."""
    kind, o, t, end = s
    if t - o == 20:
        ip = (o, 4, 20, data[o + 9], t, end, o + 12, o + 16, 0, (data[o + 4] << 8) | data[o + 5], 0, o + 16)
        addrs = [(o + 12, 4, 32), (o + 16, 4, 32)]
        ipcs = (o + 10, o, t, CS_IPV4, None)
        label = "IPv4"
    else:
        ip = (o, 6, 40, data[o + 6], t, end, o + 8, o + 24, 0, 0, 0, o + 24)
        addrs = [(o + 8, 16, 128), (o + 24, 16, 128)]
        ipcs = None
        label = "IPv6"
    if kind <= TCP_DNS:
        pay = t + TCP_HEADER[data[t + 12]]
        if kind == TCP_DNS and pay + 14 <= end and _H(data, pay)[0] >= 12:   # a 2-byte length, a message
            dns(data, end, pay + 2, end, addrs)
            if len(addrs) > 2:
                clip(addrs, 2, end)
        if pay > end:
            pay = end
        csums = [(t + 16, t, end, CS_TCP, 0)]
        l4 = (6, t, pay, end, 0, 0)
    elif kind <= UDP_DNS:
        ulen = _H(data, t + 4)[0]
        uend = t + ulen
        if ulen < 8 or uend > end:
            uend = end
        p = t + 8
        if kind == UDP_DNS:
            dns(data, end, p, uend, addrs)
            if len(addrs) > 2:
                clip(addrs, 2, end)
        csums = [(t + 6, t, uend, CS_UDP, 0)]
        l4 = (17, t, p if p < uend else uend, uend, 0, 0)
    elif ipcs is not None:                                    # ECHO: ICMP, no pseudo-header
        csums = [(t + 2, t, end, CS_ICMP, None)]
        l4 = (1, t, min(t + 8, end), end, 0, L4F_ECHO)
    else:
        csums = [(t + 2, t, end, CS_ICMPV6, 0)]
        l4 = (58, t, min(t + 8, end), end, 0, L4F_ECHO)
    if ipcs is not None:
        csums.append(ipcs)
    return (OK, label, [ip], addrs, l4, csums, [0, 6] if o else [], _NONE, _NONE)


def _walk(data, linktype, n):
    """The general walk (every link type and encapsulation): the link layer (linklayer.link_start), then
    every layer after it (_layers)."""
    ips = []
    addrs = []
    csums = []
    macs = []
    state, off, t, status, label = link_start(data, linktype, n, macs)
    if state is None:
        return _stopped(status, label, ips, addrs, csums, macs, off, n)
    return _layers(data, n, state, off, t, ips, addrs, csums, macs, 0)


def walk_from(data, end: int, state: int, off: int, flags0: int):
    """A walk that starts inside a frame, at ``off`` in walker state ``state`` (a header quoted for another
    packet: flags0 F_QUOTED), and ends at ``end``; its own lists, its own offsets absolute."""
    return _layers(data, end, state, off, 0, [], [], [], [], flags0)


def _stopped(status, label, ips, addrs, csums, macs, stop, total, l4=None, quoted=_NONE):
    """The result of a walk that ended early: for UNINSPECTABLE, everything from ``stop`` to the frame's end
    is what the walker could not read (``blind``)."""
    csums.reverse()
    blind = ((stop, total, label),) if status == UNINSPECTABLE else _NONE
    return (status, label, ips, addrs, l4, csums, macs, blind, quoted)


def _layers(data, n, state, off, t, ips, addrs, csums, macs, flags0):
    """Every layer from ``state`` at ``off`` on, one per iteration; ``flags0``: F_QUOTED for a packet quoted
    for another (walked leniently: what cannot be read ends the walk quietly)."""
    total = n               # the frame's length (n becomes the end of the packet being walked)
    l4 = None
    label = None
    lenient = bool(flags0 & F_QUOTED)
    pw_guess = False        # the next Ethernet header was guessed (MPLS pseudo-wire)
    ck = len(addrs)         # addrs before this index are already clipped to their packet's end
    fragd = 0               # F_FRAGMENT once an IP header on the way is a (first) fragment
    quoted = _NONE          # regions of packets quoted for others (sFlow samples)
    blind = _NONE
    reason = None
    depth = 0
    while True:
        depth += 1
        if depth > MAX_HEADERS:
            reason = "more than %d nested headers" % MAX_HEADERS
            break

        if state == _ETH:
            if pw_guess:
                # Ethernet inside an MPLS pseudo-wire is recognised by its first bytes (no type field):
                # its MACs are not listed, since rewriting them could change how the frame reads
                pw_guess = False
            elif off + 12 <= n:
                macs.append(off)
                macs.append(off + 6)
            if off + 14 > n:
                break
            t = (data[off + 12] << 8) | data[off + 13]
            off += 14
            state = _ETYPE
            continue

        if state == _ETYPE:
            if t == 0x0800:
                state = _IP4
            elif t == 0x86DD:
                state = _IP6
            elif t in _VLAN_TYPES:
                if off + 4 > n:
                    break
                t = (data[off + 2] << 8) | data[off + 3]
                off += 4
            elif t == 0x0806 or t == 0x8035:
                if label is None:
                    label = "ARP" if t == 0x0806 else "RARP"
                state = _ARP
            elif t == 0x8847 or t == 0x8848:
                state = _MPLS
            elif t == 0x8864:                                # PPPoE session: 6-byte header, then PPP
                if off + 7 > n:
                    break
                if data[off + 6] & 1:                        # protocol field compressed to one byte (PFC)
                    t = data[off + 6]
                    off += 7
                else:
                    if off + 8 > n:
                        break
                    t = _H(data, off + 6)[0]
                    off += 8
                state = _PPPPROTO
            elif t == 0x6558:                                # transparent Ethernet bridging
                state = _ETH
            elif t == 0x880B:
                state = _PPP
            elif t == 0x88BE:                                # ERSPAN type II: 8-byte header
                off += 8
                state = _ETH
            elif t == 0x22EB:                                # ERSPAN type III: 12 bytes (+8 subheader)
                if off + 12 > n:
                    break
                off += 20 if data[off + 11] & 1 else 12
                state = _ETH
            elif t == 0x893F:                                # 802.1BR E-Tag: 6 bytes, then an Ethertype
                if off + 8 > n:
                    break
                t = _H(data, off + 6)[0]
                off += 8
            elif t == 0x8926:                                # VN-Tag: 4 bytes, then an Ethertype
                if off + 6 > n:
                    break
                t = _H(data, off + 4)[0]
                off += 6
            elif t == 0x8903:                                # Cisco FabricPath: FTag and TTL, then Ethernet
                off += 2
                state = _ETH
            elif t == 0xD28B:                                # Arista vendor header (timestamp)
                if off + 4 > n:
                    break
                sub, ver = _HH(data, off)
                if sub != 1:
                    if label is None and not ips:
                        return _stopped(NON_IP, "Arista AVSP", ips, addrs, csums, macs, off, total)
                    break
                vk = ver & 0xF0
                if vk == 0x10:
                    off += 12
                elif vk == 0x20:
                    off += 10
                else:
                    reason = "Arista header version 0x%04x is not supported" % ver
                    break
                if off + 2 > n:
                    break
                t = _H(data, off)[0]
                off += 2
            elif t == 0x2001:                                # NHRP (over GRE or SNAP): addresses inside
                if label is None and not ips:
                    label = "NHRP"
                nhrp(data, n, off, addrs, csums)
                break
            elif t == 0x894F:                                # NSH: length in words, next protocol
                if off + 4 > n:
                    break
                nxt = data[off + 3]
                state = _NSH_NEXT.get(nxt, -1)
                if state < 0:
                    reason = "NSH next protocol %d is not supported" % nxt
                    off += 4
                    break
                off += (data[off + 1] & 0x3F) * 4
            elif t == 0x88E7:                                # PBB I-tag: 4 bytes, then customer Ethernet
                off += 4
                state = _ETH
            elif t < 0x0600:                                 # 802.3 length field: LLC follows
                state = _LLC
            else:
                name = NON_IP_ETHERTYPES.get(t)
                if name:
                    if ips or addrs:
                        break
                    return _stopped(NON_IP, name, ips, addrs, csums, macs, off, total)
                reason = "EtherType 0x%04x is not supported" % t
                break
            continue

        if state == _IP:
            if off >= n:
                break
            v = data[off] >> 4
            if v == 4:
                state = _IP4
            elif v == 6:
                state = _IP6
            else:
                reason = "IP version %d is not supported" % v
                break
            continue

        if state == _IP4:
            if label is None:
                label = "IPv4"
            if off >= n:
                break
            ihl = (data[off] & 15) * 4
            fl = flags0
            if off + 20 > n:
                # header cut by the snap length: list whatever address bytes are present
                fl |= F_TRUNCATED
                if off + 12 <= n:                            # the header checksum is there: keep it right
                    csums.append((off + 10, off, n, CS_IPV4, None))
                if off + 12 < n:
                    addrs.append((off + 12, 4, 32))
                if off + 16 < n:
                    addrs.append((off + 16, 4, 32))
                ips.append((off, 4, ihl, data[off + 9] if off + 9 < n else -1, n, n, off + 12, off + 16, fl,
                            0, 0, off + 16))
                break
            tot, ident, frag = _HHH(data, off + 2)
            proto = data[off + 9]
            if ihl < 20:
                ihl = 20
            hend = off + ihl
            end = off + tot
            wire = end if tot else n                         # the packet's end on the wire
            if end > n or tot == 0:
                end = n
            if hend > n:
                fl |= F_TRUNCATED
                hend_c = n
            else:
                hend_c = hend
            if end < hend_c:
                end = hend_c                                 # total length below the header: no payload
            idx = len(ips)
            addrs.append((off + 12, 4, 32))
            addrs.append((off + 16, 4, 32))
            pdst = off + 16
            if ihl > 20 and hend_c > off + 20:
                pdst = ip4_options(data, off + 20, hend_c, addrs, pdst)
            frag_off = (frag & 0x1FFF) * 8
            if frag & 0x3FFF:
                fl |= F_FRAGMENT
                if frag_off:
                    fl |= F_LATER_FRAGMENT
                if frag & 0x2000:
                    fl |= F_MORE_FRAGMENTS
            csums.append((off + 10, off, hend_c, CS_IPV4, None))
            p = hend_c
            if not fl & (F_TRUNCATED | F_LATER_FRAGMENT):
                while proto == 51 and p + 8 <= end:          # AH: on to the protected protocol
                    proto = data[p]
                    p += (data[p + 1] + 2) * 4
            ips.append((off, 4, min(p, n) - off, proto, min(p, n), end, off + 12, off + 16, fl, ident, frag_off,
                        pdst))
            flags0 |= F_TUNNELLED
            if fl & F_TRUNCATED:
                break
            off = p
            if end < n:
                ck = clip(addrs, ck, n)
                n = end                                      # bytes past the total length are a trailer
            if fl & F_LATER_FRAGMENT:
                if not (flags0 & F_QUOTED) and l4 is None:
                    l4 = (proto, -1, off, end, idx, L4F_FRAGMENT | L4F_NO_HEADER)
                later_fragment_checksum(proto, frag_off, off, n, idx, csums)
                break
            fragd |= fl & F_FRAGMENT
            ver = 4
        elif state == _IP6:
            if label is None:
                label = "IPv6"
            if off >= n:
                break
            fl = flags0
            idx = len(ips)
            if off + 40 > n:
                fl |= F_TRUNCATED
                if off + 8 < n:
                    addrs.append((off + 8, 16, 128))
                if off + 24 < n:
                    addrs.append((off + 24, 16, 128))
                ips.append((off, 6, 40, data[off + 6] if off + 6 < n else -1, n, n, off + 8, off + 24, fl,
                            0, 0, off + 24))
                break
            plen = _H(data, off + 4)[0]
            nh = data[off + 6]
            end = off + 40 + plen
            if end > n or (plen == 0 and nh == 0):                # cut short, or a jumbogram
                end = n
            wire = off + 40 + plen if plen else end
            addrs.append((off + 8, 16, 128))
            addrs.append((off + 24, 16, 128))
            pdst = off + 24
            p = off + 40
            if end < n:
                ck = clip(addrs, ck, n)
                n = end                                      # bytes past the payload length are a trailer
            ident = frag_off = 0
            while nh in _IP6_EXT:
                if p + 8 > n:
                    fl |= F_TRUNCATED
                    break
                if nh == 44:
                    fw, ident = struct.unpack_from("!HI", data, p + 2)
                    frag_off = fw & 0xFFF8
                    fl |= F_FRAGMENT
                    if frag_off:
                        fl |= F_LATER_FRAGMENT
                    if fw & 1:
                        fl |= F_MORE_FRAGMENTS
                    nh = data[p]
                    p += 8
                    if frag_off:
                        break
                    continue
                if nh == 51:
                    hl = (data[p + 1] + 2) * 4
                else:
                    hl = (data[p + 1] + 1) * 8
                if nh == 43:
                    pdst = ip6_routing(data, p, min(p + hl, n), addrs, pdst)
                nh = data[p]
                p += hl
            if p > n:
                p = n
                fl |= F_TRUNCATED
            ips.append((off, 6, p - off, nh, p, end, off + 8, off + 24, fl, ident, frag_off, pdst))
            flags0 |= F_TUNNELLED
            if fl & F_TRUNCATED:
                break
            off = p
            if fl & F_LATER_FRAGMENT:
                if not (flags0 & F_QUOTED) and l4 is None:
                    l4 = (nh, -1, off, end, idx, L4F_FRAGMENT | L4F_NO_HEADER)
                later_fragment_checksum(nh, frag_off, off, n, idx, csums)
                break
            if nh == 59:                                     # no next header
                break
            fragd |= fl & F_FRAGMENT
            proto = nh
            ver = 6
        elif state == _MPLS:
            while off + 4 <= n:
                bos = data[off + 2] & 1
                off += 4
                if bos:
                    break
            else:
                break
            if off >= n:
                break
            v = data[off] >> 4
            if v == 4:
                state = _IP4
            elif v == 6:
                state = _IP6
            else:
                # Ethernet pseudo-wire, with or without a 4-byte control word: Wireshark's heuristic, using
                # a plausible ethertype where it uses its vendor table for the MAC addresses
                if off + 14 <= n and _H(data, off + 12)[0] in _PLAIN_ETYPES:
                    state = _ETH
                elif v == 0:
                    off += 4
                    state = _ETH
                else:
                    state = _ETH
                pw_guess = True
            continue
        elif state == _PPP:
            if off + 2 <= n and data[off] == 0xFF and data[off + 1] == 0x03:
                off += 2
            if off >= n:
                break
            if data[off] & 1:                                # protocol field compressed to one byte
                t = data[off]
                off += 1
            else:
                if off + 2 > n:
                    break
                t = _H(data, off)[0]
                off += 2
            state = _PPPPROTO
            continue
        elif state == _PPPPROTO:
            if t == 0x0021 or t == 0x002F:                   # IPv4 (0x2F: VJ uncompressed, an IPv4 header)
                state = _IP4
            elif t == 0x0057:
                state = _IP6
            elif t == 0x0281 or t == 0x0283:
                state = _MPLS
            elif t == 0x8021:                                # IPCP: address options
                if label is None and not ips:
                    label = "PPP IPCP"
                ipcp(data, off, n, addrs)
                break
            elif t == 0x0031:                                # bridged Ethernet (BCP): 2-byte header
                off += 2
                state = _ETH
            else:
                name = PPP_NON_IP.get(t)
                if name:
                    if ips or addrs:
                        break
                    return _stopped(NON_IP, name, ips, addrs, csums, macs, off, total)
                reason = "PPP protocol 0x%04x is not supported" % t
                break
            continue
        elif state == _ARP:
            if off + 8 > n:
                break
            ptype = _H(data, off + 2)[0]
            hlen = data[off + 4]
            plen = data[off + 5]
            sha = off + 8
            spa = sha + hlen
            tha = spa + plen
            tpa = tha + hlen
            if hlen == 6:
                if sha + 6 <= n:
                    macs.append(sha)
                if tha + 6 <= n:
                    macs.append(tha)
            if plen == 4 and ptype == 0x0800:
                if spa < n:
                    addrs.append((spa, 4, 32))
                if tpa < n:
                    addrs.append((tpa, 4, 32))
            elif plen == 16 and ptype == 0x86DD:
                if spa < n:
                    addrs.append((spa, 16, 128))
                if tpa < n:
                    addrs.append((tpa, 16, 128))
            break
        elif state == _LLC:
            if off + 3 > n:
                break
            dsap = data[off]
            if dsap == 0xFF and data[off + 1] == 0xFF:
                name = "IPX"
            elif dsap == 0xAA and data[off + 1] == 0xAA:
                if off + 8 > n:
                    break
                oui = (data[off + 3] << 16) | (data[off + 4] << 8) | data[off + 5]
                pid = _H(data, off + 6)[0]
                if oui == 0 or oui == 0xF8:
                    t = pid
                    off += 8
                    state = _ETYPE
                    continue
                name = SNAP_CISCO.get(pid) if oui == 0x00000C else None
                if name is None:
                    reason = "LLC/SNAP OUI %06x protocol 0x%04x is not supported" % (oui, pid)
                    off += 8
                    break
            elif dsap == 0x06:                               # the IP SAP
                off += 3
                state = _IP4
                continue
            else:
                name = LLC_SAPS.get(dsap & 0xFE, "LLC SAP 0x%02x" % dsap)
            if ips or addrs:
                break
            return _stopped(NON_IP, name, ips, addrs, csums, macs, off, total)
        else:
            break   # _DONE

        # ---- after an IP header: what it carries ----
        nxt = upper(proto)
        if nxt is not None:
            state = nxt
            continue
        state, off, t, l4, why, lim, extra = transport(data, n, proto, off, end, wire, idx, flags0, fl | fragd,
                                                        ips, addrs, csums, macs, l4, ver)
        if lim < n:
            ck = clip(addrs, ck, n)
            n = lim                                   # what follows lies inside this packet
        if extra is not None:
            quoted, blind = extra[0] or _NONE, extra[1] or _NONE
        if why is not None:
            reason = why
            break
        if state == _DONE:
            break
        if state == _QUOTE or state == _QUOTE6:       # into a packet quoted by an ICMP / ICMPv6 error
            state = _IP if state == _QUOTE else _IP6
            flags0 |= F_QUOTED
            lenient = True

    if reason is not None and not lenient:
        if ck < len(addrs):
            clip(addrs, ck, n)
        csums.reverse()
        return (UNINSPECTABLE, reason, ips, addrs, l4, csums, macs, ((min(off, total), total, reason),), quoted)
    csums.reverse()
    if label is None:
        label = "truncated"
    if ck < len(addrs):
        clip(addrs, ck, n)
    return (OK, label, ips, addrs, l4, csums, macs, blind, quoted)
