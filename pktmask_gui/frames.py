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

from pktmask_gui.shape import (TCP_HEADER, DHCP, DHCP6, DNS, ETH as _ETH, ETYPE as _ETYPE, IP as _IP, IP4 as _IP4,
                               IP6 as _IP6, MPLS as _MPLS, NETFLOW, PPP as _PPP, SFLOW, TCP_DNS, TEREDO, UDP_DNS,
                               teredo_origin, udp_payload, usual)
from pktmask_gui.stages import StageError


class Uninspectable(StageError):
    """A frame uses a link type or an encapsulation the walker cannot parse (fail closed)."""

    kind = "uninspectable"


# ---- result layout ---------------------------------------------------------------------------------
OK, NON_IP, UNINSPECTABLE = 0, 1, 2
W_STATUS, W_LABEL, W_IPS, W_ADDRS, W_L4, W_CSUMS, W_MACS, W_BLIND, W_QUOTED = range(9)
B_START, B_END, B_REASON = range(3)

(IP_OFF, IP_VER, IP_HLEN, IP_PROTO, IP_PAY, IP_END, IP_SRC, IP_DST, IP_FLAGS, IP_FRAG_ID, IP_FRAG_OFF,
 IP_PDST) = range(12)
F_QUOTED, F_TUNNELLED, F_FRAGMENT, F_LATER_FRAGMENT, F_MORE_FRAGMENTS, F_TRUNCATED = 1, 2, 4, 8, 16, 32

L4_PROTO, L4_OFF, L4_PAY, L4_END, L4_IP, L4_FLAGS = range(6)
L4F_ECHO, L4F_ICMP_ERROR, L4F_FRAGMENT, L4F_NO_HEADER, L4F_QUOTES = 1, 2, 4, 8, 16

CS_OFF, CS_START, CS_END, CS_KIND, CS_IP = range(5)
INVERTED = -1       # addrs prefix_bits: a whole IPv4 address stored bitwise inverted (Teredo origin indication)
CS_IPV4, CS_TCP, CS_UDP, CS_ICMP, CS_ICMPV6, CS_IGMP, CS_GRE, CS_NHRP, CS_PSEUDO, CS_IP_BODY = (
    "ipv4", "tcp", "udp", "icmp", "icmpv6", "igmp", "gre", "nhrp", "pseudo", "body")

LINKTYPE_NAMES = {
    0: "NULL", 1: "ETHERNET", 6: "IEEE802_5", 8: "SLIP", 9: "PPP", 10: "FDDI", 12: "RAW", 14: "RAW",
    50: "PPP_HDLC", 101: "RAW", 104: "C_HDLC", 105: "IEEE802_11", 107: "FRELAY", 108: "LOOP",
    113: "LINUX_SLL", 119: "PRISM_HEADER", 122: "IP_OVER_FC", 127: "IEEE802_11_RADIOTAP",
    138: "APPLE_IP_OVER_IEEE1394", 139: "MTP2_WITH_PHDR", 140: "MTP2", 141: "MTP3", 143: "DOCSIS",
    163: "IEEE802_11_AVS", 187: "BLUETOOTH_HCI_H4", 189: "USB_LINUX", 192: "PPI", 195: "IEEE802_15_4",
    201: "BLUETOOTH_HCI_H4_WITH_PHDR", 204: "PPP_WITH_DIR", 215: "IEEE802_15_4_NONASK_PHY",
    220: "USB_LINUX_MMAPPED", 228: "IPV4", 229: "IPV6", 239: "NFLOG", 242: "IPOIB", 249: "USBPCAP",
    252: "WIRESHARK_UPPER_PDU", 263: "BLUETOOTH_LE_LL", 264: "SCTP", 274: "NETANALYZER_TRANSPARENT",
    276: "LINUX_SLL2", 281: "DSA_TAG_BRCM",
}
for _i in range(16):
    LINKTYPE_NAMES[147 + _i] = "USER%d" % _i

# Ethertypes of protocols that carry no IP header (frames pass unchanged, counted by this name).
NON_IP_ETHERTYPES = {
    0x88CC: "LLDP", 0x8809: "Slow Protocols (LACP/OAM)", 0x888E: "EAPOL", 0x88F7: "PTP",
    0x8808: "MAC Control", 0x9000: "Ethernet Loopback", 0x8902: "CFM", 0x88E5: "MACsec",
    0x8863: "PPPoE Discovery", 0x8137: "IPX", 0x8138: "IPX", 0x809B: "AppleTalk", 0x80F3: "AARP",
    0x6002: "DEC MOP", 0x6003: "DECnet", 0x6004: "DEC LAT", 0x8906: "FCoE", 0x8914: "FIP",
    0x88E1: "HomePlug AV", 0x893A: "IEEE 1905.1", 0x88E3: "MRP", 0x88F5: "MVRP", 0x88F6: "MMRP",
    0x8892: "PROFINET", 0x88A4: "EtherCAT", 0x88BA: "IEC 61850 SV", 0x88B8: "GOOSE", 0x892F: "HSR",
    0x88FB: "PRP", 0x88DC: "WSMP", 0x8899: "Realtek RRCP", 0x88D9: "LLTD", 0x88C7: "802.11 pre-auth",
    0x890D: "802.11 TDLS", 0x0842: "Wake-on-LAN", 0x88A2: "ATA over Ethernet", 0x8819: "CobraNet",
    0x88AB: "Ethernet Powerlink", 0x8204: "QNX Qnet", 0x88CD: "SERCOS III", 0x88CA: "TIPC", 0x22F4: "IS-IS",
    0x88F8: "NC-SI", 0x8940: "ECP", 0x22F0: "AVTP",
}
_SNAP_CISCO = {0x2000: "CDP", 0x2003: "VTP", 0x2004: "DTP", 0x010B: "PVST+", 0x0111: "UDLD", 0x0104: "PAgP"}
_LLC_SAPS = {0x42: "STP", 0xE0: "IPX", 0xF0: "NetBIOS", 0xFE: "OSI (IS-IS/ES-IS/CLNP)", 0x04: "SNA",
             0x05: "SNA", 0x08: "SNA", 0x0C: "SNA", 0x10: "NetWare", 0x80: "XNS", 0xBC: "Banyan VINES",
             0xF4: "LAN Management", 0xF8: "RPL", 0xFC: "RPL", 0x00: "LLC null SAP"}
_PPP_NON_IP = {0xC021: "PPP LCP", 0xC023: "PPP PAP", 0xC223: "PPP CHAP", 0x8057: "PPP IPV6CP",
               0x80FD: "PPP CCP", 0x80FB: "PPP CCP", 0x00FD: "PPP compressed data",
               0x00FB: "PPP compressed data", 0xC025: "PPP LQR", 0x8281: "PPP MPLSCP", 0xC227: "PPP EAP",
               0x8207: "PPP CDPCP", 0x002D: "PPP VJ compressed TCP", 0x8029: "PPP ATCP", 0x802B: "PPP IPXCP",
               0x80FF: "PPP BACP", 0xC02B: "PPP BAP", 0x8031: "PPP BCP"}

_VLAN_TYPES = frozenset((0x8100, 0x88A8, 0x9100, 0x9200, 0x9300))
_PLAIN_ETYPES = frozenset((0x0800, 0x86DD, 0x0806, 0x8035, 0x8100, 0x88A8, 0x9100, 0x8847, 0x8848, 0x8864,
                           0x88CC))
_ICMP_ERRORS = frozenset((3, 4, 5, 11, 12))
# DHCP options holding a list of IPv4 addresses (RFC 2132 and successors); 21 / 33 hold pairs
_DHCP_ADDR_OPTS = frozenset((3, 4, 5, 6, 7, 8, 9, 10, 11, 16, 28, 32, 41, 42, 44, 45, 48, 49, 50, 54, 65, 68,
                             69, 70, 71, 72, 73, 74, 75, 76, 118))
_IP6_EXT = frozenset((0, 43, 44, 51, 60, 139, 140, 253, 254))

# walker states (the first seven are shape's "next layer" values, which tunnels hand on)
_PPPPROTO, _ARP, _LLC, _DONE, _QUOTE, _QUOTE6 = range(7, 13)
_NSH_NEXT = {1: _IP4, 2: _IP6, 3: _ETH, 5: _MPLS}

_H = struct.Struct("!H").unpack_from
_I = struct.Struct("!I").unpack_from
_HH = struct.Struct("!HH").unpack_from
_ILE = struct.Struct("<I").unpack_from
_II = struct.Struct("!II").unpack_from
_HHLE = struct.Struct("<HH").unpack_from


def linktype_name(linktype: int) -> str:
    return LINKTYPE_NAMES.get(linktype, "unknown")


def _unsupported_link(linktype: int) -> str:
    return "link type %d (%s) is not supported" % (linktype, linktype_name(linktype))


_HHH = struct.Struct("!HHH").unpack_from
_HHHH = struct.Struct("!HHHH").unpack_from
_RR = struct.Struct("!HHIH").unpack_from                   # DNS resource record: type, class, TTL, length
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
            _dns(data, end, pay + 2, end, addrs)
            if len(addrs) > 2:
                _clip(addrs, 2, end)
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
            _dns(data, end, p, uend, addrs)
            if len(addrs) > 2:
                _clip(addrs, 2, end)
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
    """The general walk (every link type and encapsulation): the link layer here, the rest in _layers."""
    ips = []
    addrs = []
    csums = []
    macs = []
    off = 0
    t = 0                   # pending ethertype / protocol value for _ETYPE / _PPPPROTO
    if linktype == 1:
        state = _ETH
    elif linktype in (101, 12, 14, 228, 229):                 # raw IP: by the version nibble, as Wireshark
        state = _IP
    elif linktype == 113:                                    # Linux cooked capture v1, 16-byte header
        if n < 16:
            return (OK, "truncated", ips, addrs, None, csums, macs, _NONE, _NONE)
        hatype, halen = _HH(data, 2)
        if halen == 6:
            macs.append(6)
        t = _H(data, 14)[0]
        off = 16
        state, why = _sll_state(hatype, t)
        if state is None:
            return _stopped(why[0], why[1], ips, addrs, csums, macs, off, n)
    elif linktype == 276:                                    # Linux cooked capture v2, 20-byte header
        if n < 20:
            return (OK, "truncated", ips, addrs, None, csums, macs, _NONE, _NONE)
        t = _H(data, 0)[0]
        hatype = _H(data, 8)[0]
        if data[11] == 6:
            macs.append(12)
        off = 20
        state, why = _sll_state(hatype, t)
        if state is None:
            return _stopped(why[0], why[1], ips, addrs, csums, macs, off, n)
    elif linktype in (0, 108):                               # BSD loopback: 4-byte address family
        if n < 4:
            return (OK, "truncated", ips, addrs, None, csums, macs, _NONE, _NONE)
        fam = _I(data, 0)[0] if linktype == 108 else _ILE(data, 0)[0]
        if fam > 0xFFFF:
            fam = _I(data, 0)[0]                             # NULL written on a big-endian host
        off = 4
        if fam == 2:
            state = _IP4
        elif fam in (10, 23, 24, 26, 28, 30):
            state = _IP6
        else:
            return _stopped(UNINSPECTABLE, "loopback address family %d is not supported" % fam, ips, addrs,
                            csums, macs, off, n)
    elif linktype in (9, 50):
        state = _PPP
    elif linktype == 204:                                    # PPP with a direction byte
        off = 1
        state = _PPP
    elif linktype == 104:                                    # Cisco HDLC: address, control, ethertype
        if n < 4:
            return (OK, "truncated", ips, addrs, None, csums, macs, _NONE, _NONE)
        t = _H(data, 2)[0]
        off = 4
        state = _ETYPE
    elif linktype == 239:                                    # NFLOG: TLVs, the packet is TLV type 9
        if n < 4:
            return (OK, "truncated", ips, addrs, None, csums, macs, _NONE, _NONE)
        fam = data[0]
        off = _nflog_payload(data, n)
        if off < 0:
            return (NON_IP, "NFLOG without packet", ips, addrs, None, csums, macs, _NONE, _NONE)
        if fam == 2:
            state = _IP4
        elif fam == 10:
            state = _IP6
        else:
            state = _IP
    elif linktype == 242:                                    # IP over InfiniBand: 44-byte header
        if n < 44:
            return (OK, "truncated", ips, addrs, None, csums, macs, _NONE, _NONE)
        t = _H(data, 40)[0]
        off = 44
        state = _ETYPE
    else:
        return _stopped(UNINSPECTABLE, _unsupported_link(linktype), ips, addrs, csums, macs, 0, n)
    return _layers(data, n, state, off, t, ips, addrs, csums, macs, 0)


def _later_fragment_checksum(proto, frag_off, off, n, idx, csums) -> None:
    """A small later fragment may hold the TCP checksum (datagram bytes 16 and 17): listed, covering none of
    the fragment's bytes, so that the addresses of its pseudo-header still update it."""
    if proto == 6 and frag_off <= 16:
        cs = off + 16 - frag_off
        if cs + 2 <= n:
            csums.append((cs, cs, cs, CS_TCP, idx))


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
                _nhrp(data, n, off, addrs, csums)
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
                pdst = _ip4_options(data, off + 20, hend_c, addrs, pdst)
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
                ck = _clip(addrs, ck, n)
                n = end                                      # bytes past the total length are a trailer
            if fl & F_LATER_FRAGMENT:
                if not (flags0 & F_QUOTED) and l4 is None:
                    l4 = (proto, -1, off, end, idx, L4F_FRAGMENT | L4F_NO_HEADER)
                _later_fragment_checksum(proto, frag_off, off, n, idx, csums)
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
                ck = _clip(addrs, ck, n)
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
                    pdst = _ip6_routing(data, p, min(p + hl, n), addrs, pdst)
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
                _later_fragment_checksum(nh, frag_off, off, n, idx, csums)
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
                _ipcp(data, off, n, addrs)
                break
            elif t == 0x0031:                                # bridged Ethernet (BCP): 2-byte header
                off += 2
                state = _ETH
            else:
                name = _PPP_NON_IP.get(t)
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
                name = _SNAP_CISCO.get(pid) if oui == 0x00000C else None
                if name is None:
                    reason = "LLC/SNAP OUI %06x protocol 0x%04x is not supported" % (oui, pid)
                    off += 8
                    break
            elif dsap == 0x06:                               # the IP SAP
                off += 3
                state = _IP4
                continue
            else:
                name = _LLC_SAPS.get(dsap & 0xFE, "LLC SAP 0x%02x" % dsap)
            if ips or addrs:
                break
            return _stopped(NON_IP, name, ips, addrs, csums, macs, off, total)
        else:
            break   # _DONE

        # ---- after an IP header: what it carries ----
        nxt = _upper(proto)
        if nxt is not None:
            state = nxt
            continue
        state, off, t, l4, why, lim, extra = _transport(data, n, proto, off, end, wire, idx, flags0, fl | fragd,
                                                        ips, addrs, csums, macs, l4, ver)
        if lim < n:
            ck = _clip(addrs, ck, n)
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
            _clip(addrs, ck, n)
        csums.reverse()
        return (UNINSPECTABLE, reason, ips, addrs, l4, csums, macs, ((min(off, total), total, reason),), quoted)
    csums.reverse()
    if label is None:
        label = "truncated"
    if ck < len(addrs):
        _clip(addrs, ck, n)
    return (OK, label, ips, addrs, l4, csums, macs, blind, quoted)


def _clip(addrs, k, n):
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


def _sll_state(hatype, proto):
    """Linux cooked capture: the protocol field is an ethertype except for a few pseudo-values.

    Returns ``(state, None)`` or ``(None, (status, label))``.
    """
    if hatype in (778, 823):                                 # ARPHRD_IPGRE / IP6GRE: GRE protocol type
        return _ETYPE, None
    if hatype == 824:
        return None, (NON_IP, "Netlink")
    if hatype == 280:
        return None, (NON_IP, "CAN")
    if hatype in (801, 802, 803, 804):
        return None, (UNINSPECTABLE, "Linux cooked capture of 802.11 (ARPHRD type %d) is not supported"
                      % hatype)
    if proto == 0x0004:                                      # 802.2 LLC frame
        return _LLC, None
    if proto == 0x0001:
        return None, (NON_IP, "IPX")
    if proto < 0x0600:
        return None, (UNINSPECTABLE, "Linux cooked capture protocol 0x%04x is not supported" % proto)
    return _ETYPE, None


def _nflog_payload(data, n):
    """Offset of the NFULA_PAYLOAD (type 9) value in an NFLOG frame, or -1."""
    p = 4
    while p + 4 <= n:
        ln, typ = _HHLE(data, p)
        if ln < 4:
            ln, typ = _HH(data, p)                           # written by a big-endian host
            if ln < 4:
                return -1
        if (typ & 0x7FFF) == 9:
            return p + 4
        p += (ln + 3) & ~3
    return -1


def _upper(proto):
    """States for IP protocols that carry another IP/link layer directly; None for transports."""
    if proto == 4:
        return _IP4
    if proto == 41:
        return _IP6
    if proto == 137:
        return _MPLS
    return None


def _ip4_options(data, p, hend, addrs, pdst):
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


def _ip6_routing(data, p, hend, addrs, pdst):
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


def _ipcp(data, off, n, addrs):
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


def _transport(data, n, proto, off, end, wire, idx, flags0, fl, ips, addrs, csums, macs, l4, ver):
    """Parse a transport or tunnel protocol at ``off`` (the payload of IP header ``idx``).

    Returns ``(state, off, etype, l4, reason, limit, extra)``: ``_DONE`` when the walk ends here, another
    state to go on with at ``off`` (``etype``: the pending Ethertype or PPP protocol for _ETYPE /
    _PPPPROTO; _QUOTE: into the packet an ICMP error quotes, an IP header by its version nibble, or IPv6
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
                    _dns(data, n, pay + 2, end, addrs)
        return _DONE, off, 0, l4, None, end, None

    if proto == 17:
        if off + 8 > n:
            if not quoted and l4 is None:
                l4 = (17, off, end, end, idx, frag)
            return _DONE, off, 0, l4, None, end, None
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
            _dns(data, n, p, uend, addrs)
        elif role == DHCP:
            _dhcp(data, n, p, uend, addrs, macs)
        elif role == DHCP6:
            _dhcp6(data, n, p, uend, addrs, 0)
        elif role and not quoted:                            # flow export: addresses of other packets
            extra = _flow_export(data, n, role, p, uend, ips, addrs, csums, macs)
            if extra[0]:
                lflags |= L4F_QUOTES
        if not quoted and l4 is None:
            l4 = (17, off, p if p < uend else uend, uend, idx, lflags)
        return _DONE, off, 0, l4, None, end, extra

    if proto == 1:
        if off + 4 <= n:
            csums.append((off + 2, off, end, CS_ICMP, None))
        if off >= n:
            return _DONE, off, 0, l4, None, end, None
        typ = data[off]
        if typ in _ICMP_ERRORS:
            if typ == 5 and off + 4 < n:
                addrs.append((off + 4, 4, 32))               # redirect: gateway address
            if not quoted and l4 is None:
                l4 = (1, off, min(off + 8, end), end, idx, L4F_ICMP_ERROR | frag)
            if off + 8 >= end:
                return _DONE, off, 0, l4, None, end, None
            return _QUOTE, off + 8, 0, l4, None, end, None
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
        return _DONE, off, 0, l4, None, end, None

    if proto == 58:
        if off + 4 <= n:
            csums.append((off + 2, off, end, CS_ICMPV6, idx))
        if off >= n:
            return _DONE, off, 0, l4, None, end, None
        typ = data[off]
        if typ < 128:
            if not quoted and l4 is None:
                l4 = (58, off, min(off + 8, end), end, idx, L4F_ICMP_ERROR | frag)
            if off + 8 >= end:
                return _DONE, off, 0, l4, None, end, None
            return _QUOTE6, off + 8, 0, l4, None, end, None
        q = _icmp6_body(data, n, typ, off, end, addrs, macs)
        if q is not None:
            if not quoted and l4 is None:
                l4 = (58, off, min(off + 8, end), end, idx, frag)
            return _QUOTE6, q, 0, l4, None, end, None       # redirected header: a quoted packet
        if not quoted and l4 is None:
            l4 = (58, off, min(off + 8, end), end, idx, (L4F_ECHO if typ in (128, 129) else 0) | frag)
        return _DONE, off, 0, l4, None, end, None

    if proto == 47:                                          # GRE
        if off + 4 > n:
            return _DONE, off, 0, l4, None, end, None
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
            return _DONE, off + 4, 0, l4, "GRE version %d is not supported" % gver, end, None
        if p >= end:
            return _DONE, off, 0, l4, None, end, None
        if ptype == 0x88BE and not gfl & 0x1000:             # ERSPAN type I: no ERSPAN header
            return _ETH, p, 0, l4, None, end, None
        if ptype == 0x880B:
            return _PPP, p, 0, l4, None, end, None
        if ptype == 0x883E:                                  # WCCP redirect header, then IP
            return _IP, p + 4, 0, l4, None, end, None
        if ptype < 0x0600:
            return _DONE, p, 0, l4, "GRE protocol type 0x%04x is not supported" % ptype, end, None
        return _ETYPE, p, ptype, l4, None, end, None

    if proto == 97:                                          # EtherIP (RFC 3378): 2 bytes, then Ethernet
        if off + 2 <= n and data[off] >> 4 == 3:
            return _ETH, off + 2, 0, l4, None, end, None

    if proto == 136 or proto == 33:                          # UDP-Lite, DCCP: pseudo-header checksums
        if off + 8 <= n:
            csums.append((off + 6, off, end, CS_PSEUDO, idx))
        if not quoted and l4 is None:
            pay = off + 8 if proto == 136 else (off + data[off + 4] * 4 if off + 5 <= n else end)
            l4 = (proto, off, min(pay, end), end, idx, frag)
        return _DONE, off, 0, l4, None, end, None

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
        return _DONE, off, 0, l4, None, end, None

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
                return _DONE, off, 0, l4, None, end, None
            return _IP, off + 8, 0, l4, None, end, None      # the carried packet holds the transport
        if not quoted and l4 is None:
            l4 = (103, off, min(off + 4, end), end, idx, frag)
        return _DONE, off, 0, l4, None, end, None

    if proto == 2:                                           # IGMP
        if off + 4 <= n:
            csums.append((off + 2, off, end, CS_IGMP, None))
        if off + 8 <= n:
            _igmp(data, n, off, end, addrs)
        if not quoted and l4 is None:
            l4 = (2, off, min(off + 8, end), end, idx, frag)
        return _DONE, off, 0, l4, None, end, None

    # anything else: opaque payload (ESP, OSPF, SCTP, ...)
    if not quoted and l4 is None:
        l4 = (proto, off, off, end, idx, frag)
    return _DONE, off, 0, l4, None, end, None


# sFlow v5 flow records whose layout is known: raw packet header (1), Ethernet frame data (2), IPv4 data (3),
# IPv6 data (4), extended switch (1001), router (1002) and gateway (1003) data; counter records without
# addresses: generic interface (1), Ethernet (2), token ring (3), 100BaseVG (4), VLAN (5), processor (1001)
_SFLOW_COUNTERS = frozenset((1, 2, 3, 4, 5, 1001))
_SFLOW_HEADER_STATES = {1: _ETH, 11: _IP4, 12: _IP6}


def _flow_export(data, n, role, p, uend, ips, addrs, csums, macs):
    """Flow export datagrams carry other packets' addresses and headers. sFlow v5: the agent address, and
    per flow sample the sampled packet headers (walked like a packet quoted by an ICMP error), the IPv4 /
    IPv6 data records' addresses, the next hops of the extended router and gateway records. NetFlow v5:
    each record's source, destination and next hop. NetFlow v9 and IPFIX data records (their layout is
    in templates sent earlier), sFlow records of other formats, and anything after the last record that
    can be read are ``blind``: Anonymize IPs zeroes them (fail closed). Returns ``(quoted, blind)``:
    the [start, end) regions of sampled headers, and the (start, end, reason) blind ranges."""
    end = min(n, uend)
    quoted = []
    blind = []
    if role == SFLOW:
        q = _sflow_address(data, p + 4, end, addrs)
        if q < 0:
            blind.append((p + 4, uend, "sFlow datagram that cannot be read"))
            return quoted, blind
        q += 12                                              # sub-agent id, sequence number, uptime
        samples = _I(data, q)[0] if q + 4 <= end else 0
        q += 4
        for _ in range(samples):
            if q + 8 > end:
                break
            fmt, ln = _II(data, q)
            s, e = q + 8, q + 8 + ln
            if e > end:
                break
            if fmt in (1, 3):                                # flow sample (expanded): its flow records
                _sflow_records(data, s + (32 if fmt == 1 else 44), e, ips, quoted, blind, addrs, csums, macs,
                               True)
            elif fmt in (2, 4):                              # counter sample (expanded)
                _sflow_records(data, s + (12 if fmt == 2 else 16), e, ips, quoted, blind, addrs, csums, macs,
                               False)
            else:
                blind.append((s, e, "sFlow sample of format %d" % fmt))
            q = e
        if q < uend:
            blind.append((q, uend, "bytes after the last sFlow sample"))
    elif _H(data, p)[0] == 5:                                # NetFlow v5: 24-byte header, 48-byte records
        q = p + 24
        for _ in range(_H(data, p + 2)[0]):
            if q + 48 > end:
                break
            addrs.append((q, 4, 32))
            addrs.append((q + 4, 4, 32))
            addrs.append((q + 8, 4, 32))
            q += 48
        if q < uend:
            blind.append((q, uend, "bytes after the last NetFlow v5 record"))
    else:                                                    # NetFlow v9 (20-byte header), IPFIX (16)
        q = p + (20 if role == NETFLOW else 16)
        name = "NetFlow v9" if role == NETFLOW else "IPFIX"
        while q + 4 <= end:
            sid, ln = _HH(data, q)
            if ln < 4 or q + ln > end:
                break
            if sid >= 256:
                blind.append((q + 4, q + ln, name + " data records (their template is not read)"))
            q += ln
        if q < uend:
            blind.append((q, uend, "bytes after the last %s set" % name))
    return quoted, blind


def _sflow_address(data, q, end, addrs) -> int:
    """An sFlow address (type 1 IPv4, 2 IPv6) at q: listed; returns the offset after it, or -1."""
    if q + 4 > end:
        return -1
    kind = _I(data, q)[0]
    size = 4 if kind == 1 else 16 if kind == 2 else 0 if kind == 0 else -1
    if size < 0 or q + 4 + size > end:
        return -1
    if size:
        addrs.append((q + 4, size, size * 8))
    return q + 4 + size


def _sflow_records(data, q, e, ips, quoted, blind, addrs, csums, macs, flows):
    """The records of one sFlow sample, from q to e (after the record count at q - 4)."""
    if q > e:
        blind.append((e, e, "sFlow sample cut short"))
        return
    count = _I(data, q - 4)[0]
    for _ in range(count):
        if q + 8 > e:
            break
        fmt, ln = _II(data, q)
        s, r = q + 8, q + 8 + ln
        if r > e:
            break
        if not flows:
            if fmt not in _SFLOW_COUNTERS:
                blind.append((s, r, "sFlow counter record of format %d" % fmt))
        elif fmt == 1 and s + 16 <= r:                       # raw packet header
            hproto, hlen = _I(data, s)[0], _I(data, s + 12)[0]
            h, hend = s + 16, min(s + 16 + hlen, r)
            state = _SFLOW_HEADER_STATES.get(hproto)
            if state is None:
                blind.append((h, hend, "sFlow sampled header of protocol %d" % hproto))
            elif h < hend:
                _quoted_walk(data, hend, state, h, ips, addrs, csums, macs)
                quoted.append((h, hend))
        elif fmt == 2 and s + 24 <= r:                       # Ethernet frame data: source and destination MAC
            macs.append(s + 4)
            macs.append(s + 12)
        elif fmt == 3 and s + 16 <= r:                       # IPv4 data
            addrs.append((s + 8, 4, 32))
            addrs.append((s + 12, 4, 32))
        elif fmt == 4 and s + 40 <= r:                       # IPv6 data
            addrs.append((s + 8, 16, 128))
            addrs.append((s + 24, 16, 128))
        elif fmt in (1002, 1003):                            # extended router / gateway: a next hop first
            if _sflow_address(data, s, r, addrs) < 0:
                blind.append((s, r, "sFlow extended record %d" % fmt))
        elif fmt != 1001:
            blind.append((s, r, "sFlow flow record of format %d" % fmt))
        q = r
    if q < e:
        blind.append((q, e, "sFlow records that cannot be read"))


def _quoted_walk(data, end, state, off, ips, addrs, csums, macs):
    """Walk a packet quoted for another one (an sFlow sampled header) and add what it holds to the lists."""
    sub = _layers(data, end, state, off, 0, [], [], [], [], F_QUOTED)
    base = len(ips)
    ips += sub[W_IPS]
    addrs += sub[W_ADDRS]
    macs += sub[W_MACS]
    for cs in reversed(sub[W_CSUMS]):           # outer first, like the enclosing walk's list until its end
        csums.append(cs if cs[4] is None else cs[:4] + (cs[4] + base,))


def _icmp6_body(data, n, typ, off, end, addrs, macs):
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


def _igmp(data, n, off, end, addrs):
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


def _nhrp(data, n, p, addrs, csums):
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
def field_length(size: int, prefix_bits: int) -> int:
    """Bytes an ``addrs`` entry occupies: the whole address, or the bytes its prefix needs."""
    return size if prefix_bits >= size * 8 or prefix_bits < 0 else (prefix_bits + 7) >> 3


def dns_addresses(data, p: int, end: int, limit: int) -> list:
    """The ``addrs`` entries walk() lists for a DNS message over UDP at ``p`` that ends at ``end`` (the UDP
    length), with ``limit`` the end of its IP packet: A / AAAA records and EDNS client-subnet prefixes,
    fields cut by ``limit`` given as prefixes of the bits present. For stages with a fast path of their own."""
    addrs = []
    _dns(data, limit, p, end, addrs)
    if addrs:
        _clip(addrs, 0, limit)
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


def _dns(data, n, p, end, addrs):
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


def _dhcp(data, n, p, end, addrs, macs):
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
            _dhcp6(data, vend, v, vend, addrs, depth + 1)
        q += 4 + ln


def _dhcp6(data, n, p, end, addrs, depth):
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
