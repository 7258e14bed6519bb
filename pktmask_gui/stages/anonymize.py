"""Anonymize IPs: keyed prefix-preserving Crypto-PAn in every header a frame carries, checksums kept right.

Per frame: ``frames.walk`` lists every address field (outer and tunnelled IP headers, ICMP-quoted headers,
ARP, IPv4 options, IPv6 routing headers, neighbour discovery, IGMP/MLD, VRRP, IPCP, NHRP, DNS answers, DHCP)
and every checksum; each field is replaced by its mapping and ``checksum.fix_checksums`` applies RFC 1624
updates to every checksum that covers a changed byte or takes it into its pseudo-header. The self-check
reads the output back: a frame of the inline shapes (below) must be the frame process() built for it (the
input's bytes, the addresses mapped, the checksums updated); any other frame, or one that differs, is
re-walked in input and output and every address field compared with the mapping of the input's field.
pcapng
metadata that carries addresses (NRB records and DNS-server options, IDB ``if_IPv4addr``/``if_IPv6addr``, and
``if_MACaddr`` when MACs are mapped) is mapped with the same key; the metadata scrub may remove it later.

Speed: most frames are Ethernet (+802.1Q) / IPv4 or IPv6 / TCP or UDP whose only address fields are the two
IP addresses. process() and check() read those at fixed offsets inline (one struct read, no call, no walk):
the address pair's mapping and checksum delta are cached per pair, the new checksums come from a table
(_FOLD), and the self-check compares the output's frame with the frame built (an equality in C,
about a quarter of the field check's cost). DNS over UDP on the same shapes takes a short path too
(``dns_addresses``), checked the same way.
Everything else, and every frame when ``fast_path`` is off (tests compare both: same bytes, same counts, same
self-check verdicts), goes through ``walk``.

Addresses kept as they are (``keep_special``): unspecified, limited broadcast, loopback, multicast; plus the
user's ``keep_cidrs``. A mapped address that lands on a kept address seen in the file is a collision: two
inputs would look like one; it is counted and reported as a warning. The mapping table is written only
when ``export_mapping`` names a file (merged with what is there: one key, one mapping).
"""
from __future__ import annotations

import ipaddress
import os
import struct
import time
from itertools import compress
from operator import and_, eq, itemgetter, not_, sub
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .. import capture
from ..checksum import fix_checksums, ones_sum
from ..cryptopan import CryptoPAn
from ..frames import NON_IP, OK, UNINSPECTABLE, Uninspectable, dns_addresses, field_length, udp_tunnel_at, walk
from ..settings import write_text_atomically
from . import Option, Stage, StageError

META = -1
_SHB, _IDB, _NRB = 0x0A0D0D0A, 1, 4
_SPECIAL_HELP = ("unspecified (0.0.0.0, ::), broadcast (255.255.255.255), loopback (127.0.0.0/8, ::1) and "
                 "multicast (224.0.0.0/4, ff00::/8)")
_MAC_DOMAIN = b"pktmaskMAC"     # 10 bytes + 6 MAC bytes = one AES block (domain-separated from Crypto-PAn)
_MAP_LIMIT = 1 << 20            # distinct addresses remembered (counts, mapping export): ~100 bytes each


# UDP ports whose payload the walker reads (tunnels, Teredo, DNS, DHCP): never on the fast path
_SLOW_UDP_PORTS = frozenset((4789, 4790, 6081, 2152, 6635, 1701, 8472, 3544, 53, 5353, 5355, 67, 68, 546, 547))
_DNS_PORTS = frozenset((53, 5353, 5355))
_TUNNEL_DHCP_PORTS = _SLOW_UDP_PORTS - _DNS_PORTS      # with DNS ports: DNS frames the inline path maps
_PAIR_CACHE = 1 << 16
_DATA = itemgetter(0)
_FIELD_BY_FIELD = ()            # equals no frame (and bytes.startswith(()) is False): see AnonymizeStage._expect
# Inline fast path (process / check): one read from the byte before the IP header (the low byte of the
# Ethertype) up to the ports. IPv4: Ethertype low byte, version/IHL, total length, flags/fragment offset,
# protocol, header checksum, both addresses, ports. IPv6: Ethertype low byte, version/class, payload length,
# next header, both addresses, ports.
_V4 = struct.Struct("!BBxH2xHxBH8sHH").unpack_from
_V6 = struct.Struct("!BB3xHBx32sHH").unpack_from
# process() reads on to both transport checksum fields (UDP's, then TCP's): the frame is long enough for both
_V4P = struct.Struct("!BBxH2xHxBH8sHH2xH8xH").unpack_from
_V6P = struct.Struct("!BB3xHBx32sHH2xH8xH").unpack_from
# RFC 1624 eqn. 3, HC' = ~(~HC + d), equals the ones'-complement HC + ~d except for its zero: eqn. 3 gives
# 0x0000 where HC + ~d gives 0xFFFF (and never 0xFFFF itself for d != 0). So for nd = ~d, the new checksum's
# bytes are _FOLDZ[hc + nd] (0xFFFF written as 0x0000, as eqn. 3 does) and, for UDP, whose computed 0 is
# stored as 0xFFFF, _FOLD[hc + nd]: one list index instead of a dozen integer operations per checksum.
# Built by the first AnonymizeStage (~5 MB): a run without Anonymize IPs neither pays nor holds them.
_FOLD = _FOLDZ = _H2 = None


def checksum_tables() -> tuple:
    """(_FOLD, _FOLDZ), built once."""
    global _FOLD, _FOLDZ, _H2
    if _FOLD is None:
        fold = [i.to_bytes(2, "big") for i in range(65536)]
        fold += fold[1:]                # x <= 0x1FFFE -> the 2 bytes of (x & 0xFFFF) + (x >> 16)
        foldz = fold[:]
        foldz[0xFFFF] = foldz[0x1FFFE] = fold[0]
        _FOLD, _FOLDZ, _H2 = fold, foldz, fold      # _H2: below 0x10000, a value's own 2 bytes
    return _FOLD, _FOLDZ


class _FrameError(Exception):
    """An uninspectable frame met in process(): turned into Uninspectable with its frame number."""

    def __init__(self, rec, reason):
        super().__init__(reason)
        self.rec, self.reason = rec, reason


class _Mismatch(Exception):
    """A self-check failure of one frame: turned into StageError with its frame number."""

    def __init__(self, rec, tail):
        super().__init__(tail)
        self.rec, self.tail = rec, tail


def _frame_number(batch, rec, base):
    """1-based number of packet record ``rec`` (found by identity) when ``base`` packets came before ``batch``."""
    n = base
    for r in batch:
        if r[1] >= 0:
            n += 1
        if r is rec:
            break
    return n


_NO_PATCH = 2                   # _plain_frame: the transport checksum does not cover the addresses


def _plain_frame(data, linktype):
    """``(address offset, address size, L4 checksum offset, is_udp)`` for a frame whose only address fields are
    the IP source and destination and whose only checksums are the IPv4 header's and the transport's:
    Ethernet (at most one 802.1Q tag) or raw IP, IPv4 without options or IPv6 without extension headers,
    not a fragment, TCP or UDP not carrying anything the walker looks into, or an ICMP / ICMPv6 echo; else
    None (use walk()). ``is_udp`` is ``_NO_PATCH`` for ICMP (no pseudo-header: its checksum stays)."""
    n = len(data)
    if linktype == 1:
        if n < 34:
            return None
        et = (data[12] << 8) | data[13]
        off = 14
        if et == 0x8100:
            et = (data[16] << 8) | data[17]
            off = 18
    elif linktype == 101:
        et = 0x0800 if n and data[0] >> 4 == 4 else 0x86DD
        off = 0
    elif linktype == 228 or linktype == 229:
        et = 0x0800 if linktype == 228 else 0x86DD
        off = 0
    else:
        return None
    if et == 0x0800:
        if n < off + 28 or data[off] != 0x45 or (data[off + 6] & 0x3F) or data[off + 7]:
            return None
        proto = data[off + 9]
        l4 = off + 20
        a, size = off + 12, 4
        tot = (data[off + 2] << 8) | data[off + 3]
        if tot and off + tot < n:
            n = off + tot               # the walker reads nothing past the total length
    elif et == 0x86DD:
        if n < off + 48 or data[off] >> 4 != 6:
            return None
        proto = data[off + 6]
        l4 = off + 40
        a, size = off + 8, 16
        plen = (data[off + 4] << 8) | data[off + 5]
        if off + 40 + plen < n:
            n = off + 40 + plen
    else:
        return None
    if n < l4 + 8:
        return None
    if proto == 6:
        if n < l4 + 18:
            return None
        sport, dport = (data[l4] << 8) | data[l4 + 1], (data[l4 + 2] << 8) | data[l4 + 3]
        if sport == 53 or dport == 53:
            return None
        return a, size, l4 + 16, False
    if proto == 17:
        sport, dport = (data[l4] << 8) | data[l4 + 1], (data[l4 + 2] << 8) | data[l4 + 3]
        if sport in _SLOW_UDP_PORTS or dport in _SLOW_UDP_PORTS:
            return None
        p = l4 + 8
        if p < n and (data[p] >> 4 == 6 or data[p] == 0):
            return None                 # could be Teredo (recognised by content)
        return a, size, l4 + 6, True
    if proto == 1 and size == 4 and data[l4] in (0, 8):
        return a, size, l4 + 2, _NO_PATCH           # ICMP echo: its checksum has no pseudo-header
    if proto == 58 and size == 16 and data[l4] in (128, 129):
        return a, size, l4 + 2, False               # ICMPv6 echo: pseudo-header checksum, as TCP's
    return None


def _parse_cidrs(values) -> list:
    nets = []
    for text in values or ():
        try:
            net = ipaddress.ip_network(str(text).strip(), strict=False)
        except ValueError:
            raise StageError(f"'{text}' is not a valid address or network to keep (expected e.g. 192.0.2.0/24)") \
                from None
        nets.append((net.version, int(net.network_address), net.prefixlen))
    return nets


class AnonymizeStage(Stage):
    name = "anonymize"
    title = "Anonymize IPs"
    description = ("Replace every IPv4/IPv6 address (tunnels, ARP, ICMP-quoted headers and pcapng metadata "
                   "included) by a keyed, prefix-preserving mapping (Crypto-PAn): subnets and who talks to "
                   "whom survive, the same key gives the same mapping in every file; checksums stay valid.")
    order = 20
    self_check = True
    fast_path = True                # plain TCP/UDP packets skip the general walk (tests compare both paths)
    OPTIONS = (
        Option("keep_special", "Keep special addresses", "bool", True,
               "Leave " + _SPECIAL_HELP + " as they are: they identify no one."),
        Option("keep_cidrs", "Networks to keep", "cidr_list", [],
               "Addresses in these networks (or single addresses) are kept as they are, for example a "
               "public DNS server the analysis needs."),
        Option("payload_addresses", "Map addresses inside DNS and DHCP", "bool", True,
               "Also map the addresses that DNS answers (A, AAAA, EDNS client subnet) and DHCP / DHCPv6 "
               "messages carry, so that they cannot undo the anonymization of the headers. Off: those "
               "payload bytes stay as they are."),
        Option("anonymize_macs", "Anonymize MAC addresses", "bool", False,
               "Also map MAC addresses with the same key, keeping their group and local bits."),
        Option("allow_uninspected", "Pass frames it cannot parse unchanged", "bool", False,
               "A frame of a link type or encapsulation PktMask cannot parse normally fails the whole file. "
               "With this on, such frames are kept unchanged, addresses included, and counted as "
               "'frames not inspected'."),
        Option("export_mapping", "Save the address mapping to", "str", "",
               "A text file that lists each original address and its anonymized form, tab-separated "
               "(leave empty to save none). It undoes the anonymization: keep it private."),
    )

    def __init__(self, options, context):
        checksum_tables()
        super().__init__(options, context)
        key = context.key
        if key is None or len(key) != 32:
            raise StageError("the anonymization key is missing or not 32 bytes")
        self._cp = CryptoPAn(key)
        self._mac_ecb = Cipher(algorithms.AES(bytes(key[:16])), modes.ECB()).encryptor()
        self._keep_special = bool(self.options["keep_special"])
        nets = _parse_cidrs(self.options["keep_cidrs"])
        self._keep4 = [(net >> (32 - plen), 32 - plen) for ver, net, plen in nets if ver == 4]
        self._keep6 = [(net >> (128 - plen), 128 - plen) for ver, net, plen in nets if ver == 6]
        self._macs = bool(self.options["anonymize_macs"])
        self._fast = self.fast_path and not self._macs      # the fast paths know no MAC fields
        self._payload = bool(self.options["payload_addresses"])
        self._allow = bool(self.options["allow_uninspected"])
        self._export = str(self.options["export_mapping"] or "")
        self._map4 = {}             # original bytes -> output bytes (kept addresses map to themselves)
        self._map6 = {}
        self._mapmac = {}
        self._pairs = {}            # fast path: source+destination bytes -> (mapped bytes, ~checksum delta)
        self._addrs = {}            # DNS fast path: address bytes -> (mapped bytes, checksum delta)
        self._kept_seen = set()
        self._landed_on_kept = set()
        self._collisions = 0
        self._n4 = self._n6 = self._nkept = self._nmac = 0
        self._overflow = False
        self._types = {}
        self._uninspected = 0
        self._reasons = {}
        self._frames = 0
        self._checked = 0
        # What the self-check expects of each packet frame, in order, from process() to check(): for a
        # frame of the inline shapes (DNS included), the frame built; _FIELD_BY_FIELD (which no frame
        # starts with): the frame is checked field by field from the input.
        self._expect: list = []
        self._expecting = False             # set by will_check(): only the checked main pass keeps them
        self._meta = 0
        self._endian = "<"
        self._exported = False

    # ---- address mapping -------------------------------------------------------------------------
    def _kept4(self, a: int) -> bool:
        if self._keep_special and (a == 0 or a == 0xFFFFFFFF or a >> 24 == 127 or a >> 28 == 14):
            return True
        for net, shift in self._keep4:
            if a >> shift == net:
                return True
        return False

    def _kept6(self, a: int) -> bool:
        if self._keep_special and (a <= 1 or a >> 120 == 0xFF):
            return True
        for net, shift in self._keep6:
            if a >> shift == net:
                return True
        return False

    def _new(self, addr: bytes, v4: bool) -> bytes:
        a = int.from_bytes(addr, "big")
        if (self._kept4 if v4 else self._kept6)(a):
            out = addr
            self._nkept += 1
            if addr in self._landed_on_kept:
                self._collision(addr)
            self._kept_seen.add(addr)
        else:
            if v4:
                m = self._cp.anonymize_v4(a)
                out = m.to_bytes(4, "big")
                self._n4 += 1
            else:
                m = self._cp.anonymize_v6(a)
                out = m.to_bytes(16, "big")
                self._n6 += 1
            if (self._kept4 if v4 else self._kept6)(m):
                self._landed_on_kept.add(out)
                if out in self._kept_seen:
                    self._collision(out)
        table = self._map4 if v4 else self._map6
        if len(self._map4) + len(self._map6) >= _MAP_LIMIT:
            self._overflow = True
            table.clear()
        table[addr] = out
        return out

    def _collision(self, addr: bytes) -> None:
        self._collisions += 1
        self.context.warn(
            f"The anonymized form of an address equals {ipaddress.ip_address(addr)}, an address kept as it is: "
            "in the output two different addresses look alike (use another key or keep fewer addresses).")

    def map_address(self, old: bytes, size: int, plen: int) -> bytes:
        """Mapping of one address field: ``old`` may be cut short (snap length, or a prefix of plen bits
        stored in fewer bytes); the bytes present map as the first bytes of the whole address would."""
        if plen < 0:                        # stored bitwise inverted (Teredo origin indication)
            new = self.map_address(bytes(b ^ 0xFF for b in old), size, size * 8)
            return bytes(b ^ 0xFF for b in new)
        have = len(old)
        if have == size and plen >= size * 8:
            table = self._map4 if size == 4 else self._map6
            new = table.get(old)
            return new if new is not None else self._new(bytes(old), size == 4)
        # a part of an address or a prefix: mapped like the whole, not counted as an address of its own
        full = old + bytes(size - have)
        a = int.from_bytes(full, "big")
        if size == 4:
            new = full if self._kept4(a) else self._cp.anonymize_v4(a).to_bytes(4, "big")
        else:
            new = full if self._kept6(a) else self._cp.anonymize_v6(a).to_bytes(16, "big")
        if plen < size * 8 and new != full:
            v = int.from_bytes(new, "big") >> (size * 8 - plen) << (size * 8 - plen)
            new = v.to_bytes(size, "big")
        return new if have == size else new[:have]

    def map_mac(self, old: bytes) -> bytes:
        new = self._mapmac.get(old)
        if new is None:
            if old == b"\xff" * 6 or old == b"\x00" * 6 or (self._keep_special and old[0] & 1):
                new = bytes(old)
            else:
                block = self._mac_ecb.update(_MAC_DOMAIN + bytes(old))
                new = bytes(((block[0] & 0xFC) | (old[0] & 0x03),)) + block[1:6]
                self._nmac += 1
            if len(self._mapmac) < _MAP_LIMIT:
                self._mapmac[bytes(old)] = new
        return new

    # ---- frames ------------------------------------------------------------------------------------
    def _rewrite(self, data, w):
        """New frame bytes for a walked frame, or None when nothing changed."""
        buf = None
        changed = {}
        n = len(data)
        map4, map6 = self._map4, self._map6
        skip_from = n
        if not self._payload and w[4] is not None and w[4][0] in (6, 17):
            skip_from = w[4][2]                  # DNS / DHCP fields sit in the transport's payload
        for off, size, plen in w[3]:
            if off >= skip_from or off in changed:
                continue
            if plen >= size * 8:
                old = data[off:off + size]
                if len(old) == size:
                    new = (map4 if size == 4 else map6).get(old)
                    if new is None:
                        new = self._new(bytes(old), size == 4)
                else:
                    new = self.map_address(bytes(old), size, plen)
            else:
                old = data[off:off + field_length(size, plen)]
                new = self.map_address(bytes(old), size, plen)
            if new != old:
                if buf is None:
                    buf = bytearray(data)
                buf[off:off + len(new)] = new
                changed[off] = bytes(old)
        if self._macs:
            for off in w[6]:
                if off + 6 > n or off in changed:
                    continue
                old = bytes(data[off:off + 6])
                new = self.map_mac(old)
                if new != old:
                    if buf is None:
                        buf = bytearray(data)
                    buf[off:off + 6] = new
                    changed[off] = old
        if buf is None:
            return None
        fix_checksums(buf, w[5], w[2], changed)
        return bytes(buf)

    def _pair(self, key: bytes, v4: bool):
        """Fast path: ``(mapped source+destination, nd)`` for an address pair. ``nd`` is ``~d`` (16 bits) for
        the ones'-complement change d of the pair's sum, 0 when that sum stays the same (no checksum moves)
        and -1 when the pair maps to itself (nothing to write)."""
        size = 4 if v4 else 16
        table = self._map4 if v4 else self._map6
        src, dst = key[:size], key[size:]
        new_src = table.get(src) or self._new(src, v4)
        new_dst = table.get(dst) or self._new(dst, v4)
        new = new_src + new_dst
        if new == key:
            d = -1
        else:
            d = ones_sum(new) + 0xFFFF - ones_sum(key)
            d = (d & 0xFFFF) + (d >> 16)
            d = 0 if d == 0xFFFF or d == 0 else 0xFFFF ^ d
        cache = self._pairs
        if len(cache) >= _PAIR_CACHE:
            cache.clear()
        cache[key] = hit = (new, d)
        return hit

    def process(self, batch: list) -> list:
        out = []
        append = out.append
        pairs = self._pairs
        pair = self._pair
        one = self._one
        join = b"".join
        h2, fold, foldz = _H2, _FOLD, _FOLDZ
        slow_udp = _SLOW_UDP_PORTS
        # the inline path reads at most 52 bytes of an untagged IPv4 frame (its TCP checksum; 56 with a tag)
        least = 52 if self._fast else 1 << 62
        n4 = n6 = 0                         # inline-path frames by type, added to the counts after the batch
        expect = self._expect.append if self._expecting else [].append
        base = self._frames
        self._frames = base + len(batch)    # _one takes metadata records off again
        try:
            for rec in batch:
                data = rec[0]
                if rec[1] == 1 and len(data) >= least:
                    # Inline fast path, same bytes out as the general one (tests compare them): Ethernet with
                    # at most one 802.1Q tag, IPv4 without options or IPv6 without extension headers, not a
                    # fragment, TCP or UDP whose payload holds no address field (see _plain_frame). Offsets
                    # are fixed, so one struct read gives the addresses, ports and checksum; no call per frame.
                    o = 14
                    e = data[12]
                    if e == 0x81 and data[13] == 0:
                        o = 18
                        e = data[16] if len(data) >= 56 else 0
                    if e == 8:
                        et2, vihl, tot, frag, proto, hc, key, sport, dport, ucs, tcs = _V4P(data, o - 1)
                        if et2 == 0 and vihl == 0x45 and not frag & 0x3FFF and (tot == 0 or tot >= 38):
                            if proto == 6:
                                cs = 0 if sport == 53 or dport == 53 else o + 36
                            elif proto == 17:
                                if sport in slow_udp or dport in slow_udp:
                                    cs = -1
                                else:
                                    cs = o + 26
                                    x = data[o + 28]
                                    if x == 0 or x >> 4 == 6:
                                        cs = 0          # could be Teredo (recognised by content)
                            else:
                                cs = 0
                            if cs > 0:
                                new, nd = pairs.get(key) or pair(key, True)
                                n4 += 1
                                if nd > 0:
                                    # RFC 1624 on the IPv4 header checksum and the TCP/UDP one (see _FOLD;
                                    # UDP: a stored 0 stays 0)
                                    d = join((data[:o + 10], foldz[hc + nd], new, data[o + 20:cs],
                                              foldz[tcs + nd] if proto == 6 else fold[ucs + nd] if ucs else h2[0],
                                              data[cs + 2:]))
                                    append((d, 1, rec[2], rec[3], rec[4], rec[5]))
                                elif nd == 0:
                                    d = join((data[:o + 12], new, data[o + 20:]))
                                    append((d, 1, rec[2], rec[3], rec[4], rec[5]))
                                else:
                                    d = data
                                    append(rec)
                                expect(d)
                                continue
                            if cs < 0 and (sport in _DNS_PORTS or dport in _DNS_PORTS) and \
                                    sport not in _TUNNEL_DHCP_PORTS and dport not in _TUNNEL_DHCP_PORTS:
                                d = self._dns_frame(rec, o, True)
                                if d is not None:
                                    append(d)
                                    expect(d[0])
                                    continue
                    elif e == 0x86 and len(data) >= o + 58:
                        et2, vtc, plen, nh, key, sport, dport, ucs, tcs = _V6P(data, o - 1)
                        if et2 == 0xDD and vtc >> 4 == 6 and plen >= 18:
                            if nh == 6:
                                cs = 0 if sport == 53 or dport == 53 else o + 56
                            elif nh == 17:
                                if sport in slow_udp or dport in slow_udp:
                                    cs = -1
                                else:
                                    cs = o + 46
                                    x = data[o + 48]
                                    if x == 0 or x >> 4 == 6:
                                        cs = 0
                            else:
                                cs = 0
                            if cs > 0:
                                new, nd = pairs.get(key) or pair(key, False)
                                n6 += 1
                                if nd > 0:
                                    d = join((data[:o + 8], new, data[o + 40:cs],
                                              foldz[tcs + nd] if nh == 6 else fold[ucs + nd] if ucs else h2[0],
                                              data[cs + 2:]))
                                    append((d, 1, rec[2], rec[3], rec[4], rec[5]))
                                elif nd == 0:
                                    d = join((data[:o + 8], new, data[o + 40:]))
                                    append((d, 1, rec[2], rec[3], rec[4], rec[5]))
                                else:
                                    d = data
                                    append(rec)
                                expect(d)
                                continue
                            if cs < 0 and (sport in _DNS_PORTS or dport in _DNS_PORTS) and \
                                    sport not in _TUNNEL_DHCP_PORTS and dport not in _TUNNEL_DHCP_PORTS:
                                d = self._dns_frame(rec, o, False)
                                if d is not None:
                                    append(d)
                                    expect(d[0])
                                    continue
                append(one(rec))
                if rec[1] >= 0:
                    expect(_FIELD_BY_FIELD)
        except _FrameError as exc:
            raise Uninspectable(f"frame {_frame_number(batch, exc.rec, base)} cannot be inspected: {exc.reason} "
                                f"(the option 'Let uninspectable frames through' / --allow-uninspected passes "
                                f"such frames unchanged)") from None
        finally:
            if n4:
                self._types["IPv4"] = self._types.get("IPv4", 0) + n4
            if n6:
                self._types["IPv6"] = self._types.get("IPv6", 0) + n6
        return out

    def _one(self, rec):
        """One record the inline path does not take: metadata, other link types, anything unusual."""
        lt = rec[1]
        if lt < 0:
            self._frames -= 1
            return self._metadata(rec)
        data = rec[0]
        types = self._types
        if self._fast:
            c = _plain_frame(data, lt)
            if c is not None:
                return self._plain(rec, c)
        w = walk(data, lt)
        status = w[0]
        if status != OK:
            if status == NON_IP:
                types[w[1]] = types.get(w[1], 0) + 1
                return rec
            if not self._allow:
                raise _FrameError(rec, w[1])
            self._uninspected += 1
            self._reasons[w[1]] = self._reasons.get(w[1], 0) + 1
            return rec
        types[w[1]] = types.get(w[1], 0) + 1
        new = self._rewrite(data, w)
        return rec if new is None else (new,) + rec[1:]

    def _plain(self, rec, c):
        """A frame _plain_frame accepts (raw IP link types, ICMP echo, short frames): its two addresses."""
        data = rec[0]
        a, size, cs, udp = c
        b = a + 2 * size
        key = data[a:b]
        v4 = size == 4
        self._types["IPv4" if v4 else "IPv6"] = self._types.get("IPv4" if v4 else "IPv6", 0) + 1
        new, nd = self._pairs.get(key) or self._pair(key, v4)
        if nd < 0:
            return rec
        if nd == 0:
            return (b"".join((data[:a], new, data[b:])),) + rec[1:]
        hc = (data[cs] << 8) | data[cs + 1]
        if udp == _NO_PATCH:
            l4cs = data[cs:cs + 2]              # ICMP: no pseudo-header, its checksum stays
        elif udp:
            l4cs = _FOLD[hc + nd] if hc else b"\0\0"
        else:
            l4cs = _FOLDZ[hc + nd]
        if v4:
            new = _FOLDZ[((data[a - 2] << 8) | data[a - 1]) + nd] + new
            a -= 2
        return (b"".join((data[:a], new, data[b:cs], l4cs, data[cs + 2:])),) + rec[1:]

    def _dns_layout(self, data, o, v4):
        """``(udp_off, udp_end, ip_end)`` of a DNS-port UDP frame on the inline shapes, or None when the
        general walk must decide (a payload that could be Teredo)."""
        n = len(data)
        if v4:
            t = o + 20
            end = o + ((data[o + 2] << 8) | data[o + 3])
            if end > n or end == o:
                end = n
        else:
            t = o + 40
            end = t + ((data[o + 4] << 8) | data[o + 5])
            if end > n:
                end = n
        uend = t + ((data[t + 4] << 8) | data[t + 5])
        if uend < t + 8 or uend > end:
            uend = end
        p = t + 8
        if p < uend and (data[p] == 0 or data[p] >> 4 == 6) and udp_tunnel_at(
                data, (data[t] << 8) | data[t + 1], (data[t + 2] << 8) | data[t + 3], p, uend):
            return None                 # Teredo by content: the general walk follows it
        return t, uend, end

    def _addr(self, old: bytes):
        """DNS fast path: ``(mapped address, d)`` with d the ones'-complement change of its sum (even byte
        position; 0 when unchanged)."""
        v4 = len(old) == 4
        new = (self._map4 if v4 else self._map6).get(old) or self._new(old, v4)
        d = ones_sum(new) + 0xFFFF - ones_sum(old)
        d = (d & 0xFFFF) + (d >> 16)
        cache = self._addrs
        if len(cache) >= _PAIR_CACHE:
            cache.clear()
        cache[old] = hit = (new, 0 if d == 0xFFFF else d)
        return hit

    def _dns_frame(self, rec, o, v4):
        """A DNS message over UDP on the inline shapes: the IP addresses and the A / AAAA answers mapped,
        the checksums updated for both. None for one the general way must take (a prefix such as a client
        subnet, a field cut short or past the UDP length): its self-check then goes field by field too."""
        data = rec[0]
        lay = self._dns_layout(data, o, v4)
        if lay is None:
            return None
        t, uend, end = lay
        p = t + 8
        a = o + 12 if v4 else o + 8
        new, nd = self._pairs.get(data[a:t]) or self._pair(data[a:t], v4)
        total = 0xFFFF ^ nd if nd > 0 else 0
        pieces = [new, data[t:t + 6], None]     # from the addresses to the UDP checksum (set below)
        at = t + 8
        if self._payload and p < uend:
            addrs = self._addrs
            for off, size, plen in dns_addresses(data, p, uend, end):
                if plen != size * 8 or off + size > uend:
                    return None
                old = data[off:off + size]
                f, d = addrs.get(old) or self._addr(old)
                if f != old:
                    if (off - t) & 1:
                        d = ((d & 0xFF) << 8) | (d >> 8)
                    total += d
                    pieces += (data[at:off], f)
                    at = off + size
        label = "IPv4" if v4 else "IPv6"
        self._types[label] = self._types.get(label, 0) + 1
        if nd < 0 and at == t + 8:
            return rec
        pieces.append(data[at:])
        total = (total & 0xFFFF) + (total >> 16)
        total = (total & 0xFFFF) + (total >> 16)
        u = (data[t + 6] << 8) | data[t + 7]
        # RFC 1624 on the UDP checksum (see _FOLD; a stored 0 stays 0) and on the IPv4 header checksum
        pieces[2] = _FOLD[u + (0xFFFF ^ total)] if u and total and total != 0xFFFF else data[t + 6:t + 8]
        if v4:
            head = data[:a - 2] + (_FOLDZ[((data[a - 2] << 8) | data[a - 1]) + nd] if nd > 0 else data[a - 2:a])
        else:
            head = data[:a]
        return (head + b"".join(pieces),) + rec[1:]

    # ---- pcapng metadata -----------------------------------------------------------------------------
    def _metadata(self, rec):
        btype = rec[5]
        body = rec[0]
        if btype == _SHB:
            try:
                self._endian = capture.section_endian(body)
            except ValueError:
                pass
            return rec
        if btype == _IDB:
            new = self._idb(body, self._endian)
        elif btype == _NRB:
            new = self._nrb(body, self._endian)
        else:
            return rec
        return rec if new is None else (new,) + rec[1:]

    def _options_in_place(self, buf, off, endian, handlers) -> bool:
        """Rewrite option values in place; handlers: {code: fn(buf, value_off, length) -> bool}."""
        hdr = struct.Struct(endian + "HH")
        changed = False
        end = len(buf)
        while off + 4 <= end:
            code, length = hdr.unpack_from(buf, off)
            if code == 0:
                break
            if off + 4 + length > end:
                break
            fn = handlers.get(code)
            if fn is not None and fn(buf, off + 4, length):
                changed = True
            off += 4 + ((length + 3) & ~3)
        return changed

    def _field(self, buf, off, size) -> bool:
        old = bytes(buf[off:off + size])
        new = self.map_address(old, size, size * 8)
        if new == old:
            return False
        buf[off:off + size] = new
        self._meta += 1
        return True

    def _mac_field(self, buf, off, length) -> bool:
        if not self._macs or length != 6:
            return False
        old = bytes(buf[off:off + 6])
        new = self.map_mac(old)
        if new == old:
            return False
        buf[off:off + 6] = new
        self._meta += 1
        return True

    def _idb(self, body, endian):
        buf = bytearray(body)
        handlers = {
            4: lambda b, o, ln: ln >= 4 and self._field(b, o, 4),     # if_IPv4addr: address + netmask
            5: lambda b, o, ln: ln >= 16 and self._field(b, o, 16),   # if_IPv6addr: address + prefix length
            6: self._mac_field,                                         # if_MACaddr
        }
        return bytes(buf) if self._options_in_place(buf, 8, endian, handlers) else None

    def _nrb(self, body, endian):
        buf = bytearray(body)
        hdr = struct.Struct(endian + "HH")
        off, end = 0, len(buf)
        changed = False
        while off + 4 <= end:
            rtype, length = hdr.unpack_from(buf, off)
            if rtype == 0:
                off += 4
                break
            if off + 4 + length > end:
                break
            if rtype == 1 and length >= 4:
                changed |= self._field(buf, off + 4, 4)
            elif rtype == 2 and length >= 16:
                changed |= self._field(buf, off + 4, 16)
            off += 4 + ((length + 3) & ~3)
        else:
            off = end
        handlers = {
            3: lambda b, o, ln: ln >= 4 and self._field(b, o, 4),     # ns_dnsIP4addr
            4: lambda b, o, ln: ln >= 16 and self._field(b, o, 16),   # ns_dnsIP6addr
        }
        if self._options_in_place(buf, off, endian, handlers):
            changed = True
        return bytes(buf) if changed else None

    # ---- self-check ------------------------------------------------------------------------------------
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
        """What process() built for the next ``n`` frames (see _expect); all _FIELD_BY_FIELD when it
        kept less (check() called without process())."""
        expect = self._expect
        if len(expect) < n:
            expect.clear()
            return [_FIELD_BY_FIELD] * n
        wanted = expect[:n]
        del expect[:n]
        return wanted

    def _check_frames(self, before: list, todo: list) -> None:
        """The field-by-field check of the (input, output) record pairs ``todo`` of the run ``before``."""
        base = self._checked
        pairs = self._pairs
        pair = self._pair
        slow = self._check_one
        slow_udp = _SLOW_UDP_PORTS
        least = 52 if self._fast else 1 << 62
        try:
            for b, a in todo:
                db = b[0]
                lt = b[1]
                if lt != a[1]:
                    raise _Mismatch(b, " changed link type")
                if len(a[0]) > len(db):
                    # no stage makes a frame longer (masking may cut one): bytes past the input's end are
                    # not its fields, and could be anything, an original frame included
                    raise _Mismatch(b, " is longer in the output than in the input")
                if lt == 1 and len(db) >= least:
                    # The inline shapes of process(), read again from the input: when the output's headers
                    # around the two addresses are the input's, they are its only address fields.
                    o = 14
                    e = db[12]
                    if e == 0x81 and db[13] == 0:
                        o = 18
                        e = db[16] if len(db) >= 56 else 0
                    if e == 8:
                        et2, vihl, tot, frag, proto, hc, key, sport, dport = _V4(db, o - 1)
                        if et2 == 0 and vihl == 0x45 and not frag & 0x3FFF and (tot == 0 or tot >= 38):
                            if proto == 6:
                                cs = 0 if sport == 53 or dport == 53 else o + 36
                            elif proto == 17:
                                if sport in slow_udp or dport in slow_udp:
                                    cs = -1
                                else:
                                    cs = o + 26
                                    x = db[o + 28]
                                    if x == 0 or x >> 4 == 6:
                                        cs = 0
                            else:
                                cs = 0
                            if cs > 0:
                                da = a[0]
                                if da[:o + 10] == db[:o + 10] and da[o + 20:cs] == db[o + 20:cs]:
                                    if da[o + 12:o + 20] != (pairs.get(key) or pair(key, True))[0]:
                                        raise _Mismatch(b, ": the IP addresses do not hold their anonymized form")
                                    continue
                            elif cs < 0 and (sport in _DNS_PORTS or dport in _DNS_PORTS) and \
                                    sport not in _TUNNEL_DHCP_PORTS and dport not in _TUNNEL_DHCP_PORTS and \
                                    self._check_dns(b, a, o, True):
                                continue
                    elif e == 0x86 and len(db) >= o + 58:
                        et2, vtc, plen, nh, key, sport, dport = _V6(db, o - 1)
                        if et2 == 0xDD and vtc >> 4 == 6 and plen >= 18:
                            if nh == 6:
                                cs = 0 if sport == 53 or dport == 53 else o + 56
                            elif nh == 17:
                                if sport in slow_udp or dport in slow_udp:
                                    cs = -1
                                else:
                                    cs = o + 46
                                    x = db[o + 48]
                                    if x == 0 or x >> 4 == 6:
                                        cs = 0
                            else:
                                cs = 0
                            if cs > 0:
                                da = a[0]
                                if da[:o + 8] == db[:o + 8] and da[o + 40:cs] == db[o + 40:cs]:
                                    if da[o + 8:o + 40] != (pairs.get(key) or pair(key, False))[0]:
                                        raise _Mismatch(b, ": the IP addresses do not hold their anonymized form")
                                    continue
                            elif cs < 0 and (sport in _DNS_PORTS or dport in _DNS_PORTS) and \
                                    sport not in _TUNNEL_DHCP_PORTS and dport not in _TUNNEL_DHCP_PORTS and \
                                    self._check_dns(b, a, o, False):
                                continue
                slow(b, a)
        except _Mismatch as exc:
            pos = next(i for i, r in enumerate(before) if r is exc.rec)
            raise StageError(f"self-check failed: frame {base + pos + 1}{exc.tail}") from None

    def _check_dns(self, b, a, o, v4) -> bool:
        """Self-check of a frame _dns_frame rewrote; False: let the general check decide."""
        db, da = b[0], a[0]
        lay = self._dns_layout(db, o, v4)
        if lay is None:
            return False
        t, uend, end = lay
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
        """The general self-check of one frame: both walked, every address field compared."""
        if self._fast:
            db, da = b[0], a[0]
            c = _plain_frame(db, b[1])
            if c is not None:
                at, size, cs = c[0], c[1] * 2, c[2]
                head = at - 2 if size == 8 else at          # up to the IPv4 checksum / the addresses
                # same headers around the rewritten fields: the output reads as the input did
                if da[:head] == db[:head] and da[at + size:cs] == db[at + size:cs]:
                    key = db[at:at + size]
                    if da[at:at + size] != (self._pairs.get(key) or self._pair(key, size == 8))[0]:
                        raise _Mismatch(b, ": the IP addresses do not hold their anonymized form")
                    return
        wb = walk(b[0], b[1])
        if wb[0] != OK:
            if wb[0] == UNINSPECTABLE and not self._allow:
                raise _Mismatch(b, f" cannot be inspected: {wb[1]}")
            return
        da, db = a[0], b[0]
        na = len(da)
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
            if off >= skip_from:
                continue
            old = bytes(db[off:off + field_length(size, plen)])
            want = self.map_address(old, size, plen)[:max(0, na - off)]
            got = da[off:off + len(want)]
            if got != want and not (off >= pay and not any(got)):
                raise _Mismatch(b, f": the address field at byte {off} does not hold the anonymized address")
        if self._macs:
            for off in wb[6]:
                got = da[off:off + 6]
                if off + 6 <= na and got != self.map_mac(bytes(db[off:off + 6])) and \
                        not (off >= pay and not any(got)):
                    raise _Mismatch(b, f": the MAC address at byte {off} does not hold its anonymized form")

    # ---- memory, report, mapping export -----------------------------------------------------------------
    def release_memory(self) -> str | None:
        n = self._cp.release() + len(self._pairs) + len(self._addrs)
        self._pairs.clear()
        self._addrs.clear()
        m = len(self._map4) + len(self._map6) + len(self._mapmac)
        if m > 65536:
            # the mapping itself never changes; only the exact counts and the export table lose entries
            self._map4.clear()
            self._map6.clear()
            self._mapmac.clear()
            self._overflow = True
        else:
            m = 0
        if not n and not m:
            return None
        return (f"anonymize: dropped {n + m} cached addresses and prefixes (recomputed on demand; the mapping "
                "is unchanged)")

    def report(self) -> dict:
        if self._export and not self._exported:
            self._exported = True
            self._write_mapping(Path(self._export))
        rep = {
            "addresses_mapped": self._n4 + self._n6,
            "ipv4_addresses_mapped": self._n4,
            "ipv6_addresses_mapped": self._n6,
            "addresses_kept": self._nkept,
            "frames_by_type": dict(sorted(self._types.items())),
            "frames_not_inspected": self._uninspected,
            "collisions": self._collisions,
            "metadata_addresses_mapped": self._meta,
            "not_covered": "addresses inside other application payloads (SIP, SNMP, Kerberos, AFS, ...) and "
                           "routing protocol bodies (OSPF, BGP, VRRPv2, PIM join/hello)",
        }
        if self._uninspected:
            rep["not_inspected_reasons"] = dict(self._reasons)
        if self._macs:
            rep["macs_mapped"] = self._nmac
        if self._overflow:
            rep["counts_approximate"] = True
        if self._export:
            rep["mapping_exported"] = True
        return rep

    def _write_mapping(self, path: Path) -> None:
        """Merge this file's mapping into ``path`` (one key: entries never conflict), atomically, mode 0600."""
        lines = {}
        if self._overflow:
            self.context.warn("The mapping table is incomplete: the file has more distinct addresses than the "
                              "stage remembers.")
        lock = path.with_name(path.name + ".lock")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StageError(f"cannot write the mapping table {path}: {exc.strerror or exc}") from None
        fd = None
        deadline = time.monotonic() + 10
        while fd is None:
            try:
                fd = os.open(str(lock), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                if time.monotonic() > deadline:
                    break           # a stale lock from a killed job: go on without it
                time.sleep(0.05)
            except OSError as exc:
                raise StageError(f"cannot write the mapping table {path}: {exc.strerror or exc}") from None
        try:
            try:
                with open(path, encoding="utf-8") as fh:
                    for line in fh:
                        parts = line.rstrip("\n").split("\t")
                        if len(parts) == 2 and not line.startswith("#"):
                            lines[parts[0]] = parts[1]
            except FileNotFoundError:
                pass
            for table in (self._map4, self._map6):
                for old, new in table.items():
                    if old != new:
                        lines[str(ipaddress.ip_address(old))] = str(ipaddress.ip_address(new))
            for old, new in self._mapmac.items():
                if old != new:
                    lines[old.hex(":")] = new.hex(":")
            text = "# original\tanonymized\n" + "".join(f"{k}\t{v}\n" for k, v in sorted(lines.items()))
            write_text_atomically(path, text, mode=0o600)    # the table undoes the anonymization
        except OSError as exc:
            raise StageError(f"cannot write the mapping table {path}: {exc.strerror or exc}") from None
        finally:
            if fd is not None:
                os.close(fd)
                try:
                    os.unlink(lock)
                except OSError:
                    pass
