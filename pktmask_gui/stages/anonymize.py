"""Anonymize IPs: keyed prefix-preserving Crypto-PAn in every header a frame carries, checksums kept right.

Per frame: ``frames.walk`` lists every address field (outer and tunnelled IP headers, ICMP-quoted headers,
ARP, IPv4 options, IPv6 routing headers, neighbour discovery, IGMP/MLD, VRRP, IPCP, NHRP, DNS answers, DHCP)
and every checksum; each field is replaced by its mapping and ``checksum.fix_checksums`` applies RFC 1624
updates to every checksum that covers a changed byte or takes it into its pseudo-header. The self-check
re-walks input and output and compares every address field with the mapping of the input's field. pcapng metadata that carries addresses (NRB
records and DNS-server options, IDB ``if_IPv4addr``/``if_IPv6addr``, and ``if_MACaddr`` when MACs are
mapped) is mapped with the same key; the metadata scrub may remove it later.

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
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .. import capture
from ..checksum import fix_checksums, ones_sum
from ..cryptopan import CryptoPAn
from ..frames import NON_IP, OK, UNINSPECTABLE, Uninspectable, field_length, walk
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
_PAIR_CACHE = 1 << 16


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
        self._payload = bool(self.options["payload_addresses"])
        self._allow = bool(self.options["allow_uninspected"])
        self._export = str(self.options["export_mapping"] or "")
        self._map4 = {}             # original bytes -> output bytes (kept addresses map to themselves)
        self._map6 = {}
        self._mapmac = {}
        self._pairs = {}            # fast path: source+destination bytes -> (mapped bytes, checksum delta)
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
        """(mapped source+destination, ones'-complement delta of the pair) for the fast path."""
        size = 4 if v4 else 16
        table = self._map4 if v4 else self._map6
        src, dst = key[:size], key[size:]
        new_src = table.get(src) or self._new(src, v4)
        new_dst = table.get(dst) or self._new(dst, v4)
        new = new_src + new_dst
        d = ones_sum(new) + 0xFFFF - ones_sum(key)
        d = (d & 0xFFFF) + (d >> 16)
        cache = self._pairs
        if len(cache) >= _PAIR_CACHE:
            cache.clear()
        cache[key] = hit = (new, d)
        return hit

    def process(self, batch: list) -> list:
        out = []
        append = out.append
        types = self._types
        fast = self.fast_path and not self._macs
        pairs = self._pairs
        plain = _plain_frame
        n4 = n6 = 0                         # fast-path frames by type, added to the counts after the batch
        try:
            for rec in batch:
                lt = rec[1]
                if lt < 0:
                    append(self._metadata(rec))
                    continue
                self._frames += 1
                data = rec[0]
                if fast:
                    c = plain(data, lt)
                    if c is not None:
                        # Fast path, same bytes out as the general one: a plain TCP/UDP packet whose only
                        # address fields are the IP source and destination (see _plain_frame).
                        a, size, cs, udp = c
                        b = a + 2 * size
                        key = data[a:b]
                        hit = pairs.get(key)
                        if size == 4:
                            n4 += 1
                            if hit is None:
                                hit = self._pair(key, True)
                        else:
                            n6 += 1
                            if hit is None:
                                hit = self._pair(key, False)
                        new, d = hit
                        if new == key:
                            append(rec)
                            continue
                        if d and d != 0xFFFF:
                            # RFC 1624 eqn. 3 on the IPv4 header checksum and the TCP/UDP one (UDP: a
                            # stored 0 stays 0, a computed 0 is stored as 0xFFFF), as checksum.update does
                            hc = (data[cs] << 8) | data[cs + 1]
                            if udp == _NO_PATCH:
                                l4cs = data[cs:cs + 2]
                            elif udp and hc == 0:
                                l4cs = b"\0\0"
                            else:
                                t = (~hc & 0xFFFF) + d
                                t = ~((t & 0xFFFF) + (t >> 16)) & 0xFFFF
                                if udp and t == 0:
                                    t = 0xFFFF
                                l4cs = t.to_bytes(2, "big")
                            if size == 4:
                                hc = (data[a - 2] << 8) | data[a - 1]
                                t = (~hc & 0xFFFF) + d
                                t = ~((t & 0xFFFF) + (t >> 16)) & 0xFFFF
                                new = t.to_bytes(2, "big") + new
                                a -= 2
                            append((b"".join((data[:a], new, data[b:cs], l4cs, data[cs + 2:])),) + rec[1:])
                        else:
                            append((b"".join((data[:a], new, data[b:])),) + rec[1:])
                        continue
                w = walk(data, lt)
                status = w[0]
                if status != OK:
                    if status == NON_IP:
                        types[w[1]] = types.get(w[1], 0) + 1
                        append(rec)
                        continue
                    if not self._allow:
                        raise Uninspectable(
                            f"frame {self._frames} cannot be inspected: {w[1]} (the option 'Let uninspectable "
                            f"frames through' / --allow-uninspected passes such frames unchanged)")
                    self._uninspected += 1
                    self._reasons[w[1]] = self._reasons.get(w[1], 0) + 1
                    append(rec)
                    continue
                types[w[1]] = types.get(w[1], 0) + 1
                new = self._rewrite(data, w)
                append(rec if new is None else (new,) + rec[1:])
        finally:
            if n4:
                types["IPv4"] = types.get("IPv4", 0) + n4
            if n6:
                types["IPv6"] = types.get("IPv6", 0) + n6
        return out

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
    def check(self, before: list, after: list) -> None:
        if len(before) != len(after):
            raise StageError("self-check failed: the output holds a different number of frames than the input")
        fast = self.fast_path and not self._macs
        pairs = self._pairs
        plain = _plain_frame
        for b, a in zip(before, after):
            self._checked += 1
            if b[1] != a[1]:
                raise StageError(f"self-check failed: frame {self._checked} changed link type")
            if fast:
                db, da = b[0], a[0]
                c = plain(db, b[1])
                if c is not None:
                    at, size, cs = c[0], c[1] * 2, c[2]
                    head = at - 2 if size == 8 else at          # up to the IPv4 checksum / the addresses
                    # same headers around the rewritten fields: the output reads as the input did
                    if da[:head] == db[:head] and da[at + size:cs] == db[at + size:cs]:
                        key = db[at:at + size]
                        hit = pairs.get(key) or self._pair(key, size == 8)
                        if da[at:at + size] != hit[0]:
                            raise StageError(f"self-check failed: frame {self._checked}: the IP addresses do not "
                                             "hold their anonymized form")
                        continue
            wb = walk(b[0], b[1])
            if wb[0] != OK:
                if wb[0] == UNINSPECTABLE and not self._allow:
                    raise StageError(f"self-check failed: frame {self._checked} cannot be inspected: {wb[1]}")
                continue
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
                raise StageError(f"self-check failed: frame {self._checked} has different address fields in the "
                                 "output than in the input")
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
                    raise StageError(f"self-check failed: frame {self._checked}: the address field at byte {off} "
                                     "does not hold the anonymized address")
            if self._macs:
                for off in wb[6]:
                    got = da[off:off + 6]
                    if off + 6 <= na and got != self.map_mac(bytes(db[off:off + 6])) and \
                            not (off >= pay and not any(got)):
                        raise StageError(f"self-check failed: frame {self._checked}: the MAC address at byte {off} "
                                         "does not hold its anonymized form")

    # ---- memory, report, mapping export -----------------------------------------------------------------
    def release_memory(self) -> str | None:
        n = self._cp.release()
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
