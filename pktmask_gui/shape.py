"""A frame's shape, decided in one place: what a UDP payload is, and the usual frame at fixed offsets.

Every stage and every fast path asks this module, so that they never disagree with ``frames.walk``:

- ``udp_payload()`` says what a UDP datagram carries, the way Wireshark dispatches it: by port, the lower
  port first, then the higher (a conversation's well-known service port, DNS, DHCP, NTP, SNMP, syslog, ...
  wins over everything else); the tunnels whose *source* port is a flow hash (VXLAN, Geneve, VXLAN-GPE,
  MPLS over UDP, LISP) only by their destination port; and only then the one content heuristic, Teredo on
  any port. A guess is taken only when what it implies validates fully (the tunnel header, then the inner
  header's version, header and total lengths inside the datagram, and a known next protocol); a guess
  that does not validate is plain UDP payload, and the next port is tried.
- ``usual()`` reads the usual frame (Ethernet with at most one 802.1Q tag, IPv4 without options or IPv6
  without extension headers, not a fragment; TCP, UDP whose payload is plain or DNS, ICMP / ICMPv6 echo)
  at fixed offsets. ``frames.walk``'s fast path, the anonymizer's inline path and its self-check, and the
  masker's two passes all start from it; whatever it does not answer goes through the general walk.
  tests/test_shape.py feeds random frames to every fast path and demands the general walk's answer.

Hand-written: the decisions are the product's own, and this runs once per packet.
"""
from __future__ import annotations

import struct

# ---- what follows a tunnel header: the walker's next layer (frames.py uses the same numbers) ---------
ETH, ETYPE, IP, IP4, IP6, MPLS, PPP = range(7)

# ---- UDP payload roles --------------------------------------------------------------------------------
PLAIN = 0           # application data the engine does not read (masked whole by Mask Payloads)
SERVICE = 1         # a well-known service port: plain payload, and no content heuristic
DNS, DHCP, DHCP6, SFLOW, NETFLOW, IPFIX = 2, 3, 4, 5, 6, 7                  # payloads with addresses
VXLAN, VXLAN_LINUX, GENEVE, GPE, MPLS_UDP, GTPU, L2TP, TEREDO, LISP = range(16, 25)     # tunnels
TUNNELS = frozenset(range(16, 25))
PAYLOAD_NAMES = {DNS: "DNS", DHCP: "DHCP", DHCP6: "DHCPv6", SFLOW: "sFlow", NETFLOW: "NetFlow",
                 IPFIX: "IPFIX"}

# roles a port has whichever side it is on
_ANY_PORTS = {53: DNS, 5353: DNS, 5355: DNS, 67: DHCP, 68: DHCP, 546: DHCP6, 547: DHCP6,
              2152: GTPU, 1701: L2TP, 3544: TEREDO}
# roles a port has only as the destination (the sender picks the source port from a flow hash)
_DST_PORTS = {4789: VXLAN, 8472: VXLAN_LINUX, 6081: GENEVE, 4790: GPE, 6635: MPLS_UDP, 4341: LISP,
              6343: SFLOW, 2055: NETFLOW, 9995: NETFLOW, 9996: NETFLOW, 4739: IPFIX}
# registered services above 1023 whose payload is their own (every port below 1024 counts as one too)
_SERVICE_PORTS = (1194, 1645, 1646, 1812, 1813, 1900, 3478, 4500, 5060, 5061, 5246, 5247, 11211)

ANY_ROLE = bytearray(65536)
DST_ROLE = bytearray(65536)
for _p in range(1024):
    ANY_ROLE[_p] = SERVICE
for _p in _SERVICE_PORTS:
    ANY_ROLE[_p] = SERVICE
for _p, _r in _ANY_PORTS.items():
    ANY_ROLE[_p] = _r
for _p, _r in _DST_PORTS.items():
    DST_ROLE[_p] = _r
del _p, _r

# IP protocols a validated inner header may name (a tunnel guess whose inner header names anything else is
# plain payload): the transports, the tunnels the walker follows, and the usual control protocols
KNOWN_PROTOS = frozenset((0, 1, 2, 4, 6, 17, 33, 41, 43, 44, 46, 47, 50, 51, 58, 59, 60, 88, 89, 97, 103, 108,
                          112, 115, 132, 135, 136, 137))
_IP6_EXT = frozenset((0, 43, 60))
# Ethertypes a validated inner Ethernet header may carry
KNOWN_ETYPES = frozenset((0x0800, 0x86DD, 0x0806, 0x8035, 0x8100, 0x88A8, 0x9100, 0x8847, 0x8848, 0x8863,
                          0x8864, 0x88CC, 0x893F, 0x8926, 0x888E, 0x88F7, 0x8809, 0x894F))

# A TCP header's length from its data-offset byte (byte 12): a bogus offset below 5 words still has the
# 20-byte header, which stays a header (what follows it is payload)
TCP_HEADER = tuple(max(20, (b >> 4) * 4) for b in range(256))

_H = struct.Struct("!H").unpack_from
_HHH = struct.Struct("!HHH").unpack_from


def udp_payload(data, n: int, sport: int, dport: int, p: int, uend: int, wire_end: int):
    """What the UDP payload ``data[p:uend]`` is: ``(role, next, off, etype)``.

    ``n`` is where the captured bytes this datagram may use end, ``uend`` its end within them, and
    ``wire_end`` its end on the wire (the UDP length), for the length checks of an inner header cut by the
    snap length. ``role``: PLAIN (also for a service port and for every guess that did not validate), a
    payload role (DNS, DHCP, DHCP6, SFLOW, NETFLOW, IPFIX: the caller reads their fields), or a tunnel
    role with the walker's ``next`` layer at ``off`` (``etype``: the pending Ethertype for ETYPE)."""
    if p >= uend:
        return PLAIN, 0, 0, 0
    lo, hi = (sport, dport) if sport <= dport else (dport, sport)
    named = False
    for port in ((lo, hi) if lo != hi else (lo,)):
        role = ANY_ROLE[port] or (DST_ROLE[port] if port == dport else 0)
        if not role:
            continue
        named = True
        if role == SERVICE:
            return PLAIN, 0, 0, 0
        if role < 16:
            if _PAYLOAD_CHECKS[role](data, n, p, uend):
                return role, 0, 0, 0
            continue
        hit = _TUNNEL_PARSERS[role](data, n, p, uend, wire_end)
        if hit is not None:
            return (role,) + hit
    if not named:
        hit = _teredo(data, n, p, uend, wire_end, exact=True)
        if hit is not None:
            return (TEREDO,) + hit
    return PLAIN, 0, 0, 0


def plain_or_dns(data, n: int, t: int, end: int, wire: int) -> int:
    """For the usual frame's UDP datagram at ``t`` in an IP packet ending at ``end`` (``wire`` on the
    wire): PLAIN or DNS when that is what udp_payload() makes of it, else -1 (the general walk must
    follow it). shapes() answers the plain cases itself, the same way, without the call."""
    sport, dport, ulen = _HHH(data, t)
    p = t + 8
    uend = t + ulen
    uwire = uend if ulen >= 8 and uend <= wire else wire
    if ulen < 8 or uend > end:
        uend = end
    # No role on either port (0), or only service ports (the OR of role numbers is SERVICE only then):
    # plain, unless the payload may be Teredo by content (the only heuristic, and only without a role)
    r = ANY_ROLE[sport] | ANY_ROLE[dport] | DST_ROLE[dport]
    if r == SERVICE or (not r and (p >= uend or (data[p] and data[p] >> 4 != 6))):
        return PLAIN
    role = udp_payload(data, n, sport, dport, p, uend, uwire)[0]
    return role if role == PLAIN or role == DNS else -1


# ---- validation of what a guess implies ---------------------------------------------------------------
def valid_ip(data, n: int, q: int, wire_end: int, exact: bool = False) -> bool:
    """An IPv4 or IPv6 header at ``q`` that ends inside ``wire_end`` (fills it exactly with ``exact``) and
    names a known next protocol. A header cut by the snap length validates on what was captured, unless
    ``exact`` (a guess by content needs the whole header)."""
    if q >= n:
        return False
    v = data[q] >> 4
    if v == 4:
        if q + 20 > n:
            return not exact and q + 20 <= wire_end
        ihl = (data[q] & 15) * 4
        tot = _H(data, q + 2)[0]
        if ihl < 20 or tot < ihl or q + tot > wire_end or (exact and q + tot != wire_end):
            return False
        return data[q + 9] in KNOWN_PROTOS
    if v == 6:
        if q + 40 > n:
            return not exact and q + 40 <= wire_end
        end = q + 40 + _H(data, q + 4)[0]
        if end > wire_end or (exact and end != wire_end):
            return False
        nh = data[q + 6]
        return nh in KNOWN_PROTOS and (nh not in _IP6_EXT or _valid_ext(data, n, q + 40, end, nh))
    return False


def _valid_ext(data, n, p, end, nh) -> bool:
    """IPv6 extension headers (hop-by-hop, routing, destination options) that fit, then a known protocol."""
    for _ in range(8):
        if nh not in _IP6_EXT:
            return nh in KNOWN_PROTOS
        if p + 8 > end:
            return False
        if p + 2 > n:
            return True
        nh, p = data[p], p + (data[p + 1] + 1) * 8
    return False


def valid_ether(data, n: int, q: int, wire_end: int) -> bool:
    """An Ethernet header at ``q`` (up to two VLAN tags) with a known Ethertype; an IP payload validates."""
    if q + 14 > wire_end:
        return False
    if q + 14 > n:
        return True                         # cut by the snap length inside the header
    et, r = _H(data, q + 12)[0], q + 14
    for _ in range(2):
        if et not in (0x8100, 0x88A8, 0x9100) or r + 4 > n:
            break
        et, r = _H(data, r + 2)[0], r + 4
    if et == 0x0800 or et == 0x86DD:
        return valid_ip(data, n, r, wire_end)
    return et in KNOWN_ETYPES


# ---- payloads read for addresses: plausible enough to read ------------------------------------------
def _dns_ok(data, n, p, uend) -> bool:
    end = min(n, uend)
    if p + 12 > end:
        return False
    qd, an, ns, ar = struct.unpack_from("!HHHH", data, p + 4)
    return qd <= 32 and an + ns + ar <= 512 and (data[p + 2] >> 3) & 15 <= 6


def _dhcp_ok(data, n, p, uend) -> bool:
    return p + 236 <= min(n, uend) and data[p] in (1, 2) and data[p + 2] <= 16


def _dhcp6_ok(data, n, p, uend) -> bool:
    return p + 4 <= min(n, uend) and 1 <= data[p] <= 23


def _sflow_ok(data, n, p, uend) -> bool:
    return p + 28 <= min(n, uend) and _H(data, p)[0] == 0 and _H(data, p + 2)[0] == 5 and \
        _H(data, p + 4)[0] == 0 and _H(data, p + 6)[0] in (1, 2)


def _netflow_ok(data, n, p, uend) -> bool:
    return p + 24 <= min(n, uend) and _H(data, p)[0] in (5, 9)


def _ipfix_ok(data, n, p, uend) -> bool:
    return p + 16 <= min(n, uend) and _H(data, p)[0] == 10 and p + _H(data, p + 2)[0] <= uend


_PAYLOAD_CHECKS = {DNS: _dns_ok, DHCP: _dhcp_ok, DHCP6: _dhcp6_ok, SFLOW: _sflow_ok, NETFLOW: _netflow_ok,
                   IPFIX: _ipfix_ok}


# ---- tunnels: their header, then the inner header validated --------------------------------------------
def _vxlan(data, n, p, _uend, wire_end):
    q = p + 8
    if q > n or not valid_ether(data, n, q, wire_end):
        return None
    return ETH, q, 0


def _vxlan_linux(data, n, p, uend, wire_end):
    return _vxlan(data, n, p, uend, wire_end) if p < n and data[p] & 0x08 else None


def _geneve(data, n, p, _uend, wire_end):
    if p + 8 > n or data[p] >> 6:                            # version 0
        return None
    q = p + 8 + (data[p] & 0x3F) * 4
    ptype = _H(data, p + 2)[0]
    if q >= wire_end:
        return None
    if ptype == 0x6558:
        return (ETH, q, 0) if valid_ether(data, n, q, wire_end) else None
    if ptype == 0x0800 or ptype == 0x86DD:
        return (ETYPE, q, ptype) if valid_ip(data, n, q, wire_end) else None
    return (ETYPE, q, ptype) if ptype in KNOWN_ETYPES else None


def _gpe(data, n, p, _uend, wire_end):
    if p + 8 > n or data[p] & 0x30:                          # version 0
        return None
    nxt, q = data[p + 3], p + 8
    if nxt == 1 or nxt == 2:
        return (IP4 if nxt == 1 else IP6, q, 0) if valid_ip(data, n, q, wire_end) else None
    if nxt == 3:
        return (ETH, q, 0) if valid_ether(data, n, q, wire_end) else None
    if nxt == 4:
        return ETYPE, q, 0x894F                                # NSH
    if nxt == 5:
        return _mpls_stack(data, n, q, wire_end)
    return None


def _mpls_stack(data, n, q, wire_end):
    for _ in range(16):
        if q + 4 > n:
            return None
        bos = data[q + 2] & 1
        q += 4
        if bos:
            break
    else:
        return None
    if valid_ip(data, n, q, wire_end):
        return MPLS_PAYLOAD_IP, q, 0
    return None


MPLS_PAYLOAD_IP = IP                            # the stack ends in an IP header (by its version nibble)


def _mpls_udp(data, n, p, _uend, wire_end):
    hit = _mpls_stack(data, n, p, wire_end)
    return None if hit is None else (MPLS, p, 0)


def _gtpu(data, n, p, _uend, wire_end):
    if p + 8 > n:
        return None
    f = data[p]
    if f >> 5 != 1 or not f & 0x10 or data[p + 1] != 0xFF:   # version 1, GTP (not GTP'), a G-PDU
        return None
    if p + 8 + _H(data, p + 2)[0] != wire_end:
        return None
    q = p + 8
    if f & 0x07:
        if q + 4 > n:
            return None
        nxt = data[q + 3]
        q += 4
        while nxt:
            if q >= n:
                return None
            ln = data[q] * 4
            if ln == 0 or q + ln > n:
                return None
            nxt = data[q + ln - 1]
            q += ln
    return (IP, q, 0) if valid_ip(data, n, q, wire_end) else None


def _l2tp(data, n, p, _uend, wire_end):
    if p + 6 > n:
        return None
    lf = _H(data, p)[0]
    if lf & 0x8000 or lf & 0xF != 2:                         # a data message of L2TPv2
        return None
    q = p + 2
    if lf & 0x4000:
        if _H(data, q)[0] != wire_end - p:
            return None
        q += 2
    q += 4 + (4 if lf & 0x0800 else 0)
    if lf & 0x0200:
        if q + 2 > n:
            return None
        q += 2 + _H(data, q)[0]
    if q + 2 > n:
        return None
    r = q + 2 if data[q] == 0xFF and data[q + 1] == 0x03 else q
    if r + 2 > n:
        return None
    proto = data[r] if data[r] & 1 else _H(data, r)[0]
    step = 1 if data[r] & 1 else 2
    if proto == 0x0021 or proto == 0x0057:
        return (PPP, q, 0) if valid_ip(data, n, r + step, wire_end) else None
    return (PPP, q, 0) if proto in (0xC021, 0xC023, 0xC223, 0x8021, 0x8057, 0x80FD) else None


def _teredo(data, n, p, _uend, wire_end, exact=False):
    q = p
    if q + 4 <= n and data[q] == 0 and data[q + 1] == 1:     # authentication header
        q += 13 + data[q + 2] + data[q + 3]
    if q + 2 <= n and data[q] == 0 and data[q + 1] == 0:     # origin indication
        q += 8
    if q < n and data[q] >> 4 == 6 and valid_ip(data, n, q, wire_end, exact):
        return IP6, q, 0
    return None


def _teredo_port(data, n, p, uend, wire_end):
    return _teredo(data, n, p, uend, wire_end)


def _lisp(data, n, p, _uend, wire_end):
    q = p + 8
    return (IP, q, 0) if valid_ip(data, n, q, wire_end) else None


def teredo_origin(data, n: int, p: int) -> int:
    """Offset of the (inverted) IPv4 address of a Teredo origin indication in the payload at ``p``, or -1."""
    q = p
    if q + 4 <= n and data[q] == 0 and data[q + 1] == 1:
        q += 13 + data[q + 2] + data[q + 3]
    if q + 2 <= n and data[q] == 0 and data[q + 1] == 0 and q + 4 < n:
        return q + 4
    return -1


_TUNNEL_PARSERS = {VXLAN: _vxlan, VXLAN_LINUX: _vxlan_linux, GENEVE: _geneve, GPE: _gpe, MPLS_UDP: _mpls_udp,
                   GTPU: _gtpu, L2TP: _l2tp, TEREDO: _teredo_port, LISP: _lisp}


# ---- the usual frame ------------------------------------------------------------------------------------
TCP, TCP_DNS, UDP, UDP_DNS, ECHO = 1, 2, 3, 4, 5


RAW_IP_LINKTYPES = frozenset((101, 12, 14, 228, 229))


# From the Ethertype on (offset 12, or 16 behind an 802.1Q tag): Ethertype, IPv4 version/IHL, total length,
# flags/fragment offset, protocol, and the first four bytes after a 20-byte IPv4 header (the ports of TCP and
# UDP): one C call for the usual IPv4 frame's whole decision
_ETH_IP4 = struct.Struct("!HBxH2xHxB10xHH").unpack_from
_HH = struct.Struct("!HH").unpack_from


def usual(data, linktype: int = 1):
    """``(kind, o, t, end)`` for one frame of the usual shape, else None (walk it): ``shapes()`` of one."""
    return shapes(((data, linktype),))[0]


def shapes(records) -> list:
    """For each record ``(data, linktype, ...)``: ``(kind, o, t, end)`` when its frame has the usual shape,
    else None (walk it). One loop for a whole batch: the per-frame cost is the decision, not a call.

    The usual shape: Ethernet (link type 1) with at most one 802.1Q tag, or raw IP (by the version
    nibble); IPv4 without options or IPv6 without extension headers; not a fragment. kind: TCP (TCP_DNS
    when a port is 53: a DNS message follows its length), UDP (the payload is plain), UDP_DNS (a DNS
    message by port), ECHO (ICMP echo over IPv4, ICMPv6 echo over IPv6); ``o`` the IP header (IPv4 when
    ``t - o == 20``), ``t`` the transport header, ``end`` the IP packet's end (its length field, clipped
    to the frame; bytes after it are a trailer). TCP has its 20 header bytes, UDP its 8, ECHO its 4."""
    out = []
    add = out.append
    eth_ip4, hh = _ETH_IP4, _HH
    any_role, dst_role = ANY_ROLE, DST_ROLE
    for rec in records:
        data, linktype = rec[0], rec[1]
        n = len(data)
        if linktype == 1:
            if n < 38:
                add(None)
                continue
            et, vihl, tot, frag, proto, sport, dport = eth_ip4(data, 12)
            o = 14
            if et == 0x8100:
                if n < 42:
                    add(None)
                    continue
                et, vihl, tot, frag, proto, sport, dport = eth_ip4(data, 16)
                o = 18
        elif linktype in RAW_IP_LINKTYPES and n >= 24:
            v = data[0] >> 4
            et = 0x0800 if v == 4 else 0x86DD if v == 6 else 0
            if et == 0x0800:
                _e, vihl, tot, frag, proto, sport, dport = eth_ip4(b"\0\0" + data[:24], 0)
            o = 0
        else:
            add(None)
            continue
        if et == 0x0800:
            if vihl != 0x45 or frag & 0x3FFF:
                add(None)
                continue
            t = o + 20
            end = wire = o + tot
            if tot == 0:
                end = wire = n
            elif end > n:
                end = n
        elif et == 0x86DD:
            if n < o + 44:
                add(None)
                continue
            proto = data[o + 6]
            t = o + 40
            end = wire = t + ((data[o + 4] << 8) | data[o + 5])
            if end > n:
                end = n
            sport, dport = hh(data, t)
        else:
            add(None)
            continue
        if proto == 6:
            if t + 20 > end:
                add(None)
            else:
                add(((TCP_DNS if sport == 53 or dport == 53 else TCP), o, t, end))
        elif proto == 17:
            if t + 8 > end:
                add(None)
                continue
            # plain_or_dns(), its plain cases inline: no role on either port, or service ports only (the OR
            # of role numbers is SERVICE only then), and a payload that cannot be Teredo by content
            r = any_role[sport] | any_role[dport] | dst_role[dport]
            p = t + 8
            if r == SERVICE or (not r and (p >= end or (data[p] and data[p] >> 4 != 6))):
                add((UDP, o, t, end))
            else:
                role = plain_or_dns(data, n, t, end, wire)
                add(None if role < 0 else ((UDP_DNS if role else UDP), o, t, end))
        elif (proto == 1 if t - o == 20 else proto == 58) and t + 4 <= end and \
                data[t] in ((0, 8) if proto == 1 else (128, 129)):
            add((ECHO, o, t, end))
        else:
            add(None)
    return out
