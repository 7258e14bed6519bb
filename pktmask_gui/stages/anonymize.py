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
from itertools import compress, repeat
from operator import and_, eq, itemgetter, not_, sub
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .. import capture
from ..addressset import AddressSet
from ..checksum import fix_checksums, ones_sum
from ..cryptopan import CryptoPAn
from ..addressfields import dns_addresses
from ..frames import Uninspectable, walk
from ..hostnames import PRIVATE_NETWORKS
from ..layout import NON_IP, OK, UNINSPECTABLE, W_BLIND, field_length
from ..shape import ECHO, TCP, UDP, UDP_DNS, shapes
from ..settings import write_text_atomically
from . import (UNINSPECTED_OPTION, Option, Stage, StageError, count_zeroed, report_zeroed,
               uninspected_policy)

META = -1
_SHB, _IDB, _NRB = 0x0A0D0D0A, 1, 4
_SPECIAL_HELP = ("unspecified (0.0.0.0, ::), broadcast (255.255.255.255), loopback (127.0.0.0/8, ::1) and "
                 "multicast (224.0.0.0/4, ff00::/8)")
_MAC_DOMAIN = b"pktmaskMAC"     # 10 bytes + 6 MAC bytes = one AES block (domain-separated from Crypto-PAn)
# Memory, whatever the traffic (docs/ARCHITECTURE.md, "Memory"): every table is bounded. The mapping memos
# hold at most _MEMO addresses a family (~115 bytes each for IPv4, ~140 for IPv6; emptied when full, the
# mapping is recomputed on demand), the pair cache _PAIR_CACHE pairs (~210 / ~260 bytes), the DNS answers'
# cache _ADDR_CACHE addresses; the distinct addresses, for the counts and the export, are kept in an
# AddressSet (6 to 12 bytes an IPv4 address, 24 to 48 an IPv6 one); the kept addresses seen and the mapped
# ones that land on a kept address (collisions) at most _SEEN each (~80 bytes); reasons for frames not
# inspected, at most _REASONS.
_MEMO = 1 << 15
_PAIR_CACHE = 1 << 15
_ADDR_CACHE = 1 << 14
_SEEN = 1 << 15
_REASONS = 256
_NAMED_COLLISIONS = 10          # collisions named in a warning each (the report counts them all)
_DATA = itemgetter(0)
_FIELD_BY_FIELD = ()            # equals no frame (and bytes.startswith(()) is False): see AnonymizeStage._expect
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


def _inside(blind, off: int) -> bool:
    """Does offset ``off`` lie in one of the walker's blind ranges?"""
    for start, end, _reason in blind:
        if start <= off < end:
            return True
    return False


def _udp_end(data, t: int, end: int) -> int:
    """End of the UDP datagram at ``t`` in an IP packet ending at ``end``, as frames.walk takes it."""
    uend = t + ((data[t + 4] << 8) | data[t + 5])
    return end if uend < t + 8 or uend > end else uend


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
    needs_key = True
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
        Option("keep_oui", "Keep the vendor prefix (OUI) of MAC addresses", "bool", False,
               "Map only the last three bytes of each MAC address: the device is hidden, its vendor stays "
               "readable (turns MAC anonymization on)."),
        Option("anonymize_only", "Anonymize only these networks", "cidr_list", [],
               "When not empty, only addresses in these networks are anonymized and every other address "
               "stays as it is: internal hosts are hidden, public servers stay readable. The private ranges "
               + ", ".join(PRIVATE_NETWORKS) + " are the usual choice (--internal-only)."),
        Option("pseudonymize_names", "Pseudonymize host names", "bool", False,
               "Replace host names in DNS, mDNS, LLMNR, NetBIOS, DHCP, the TLS server name and certificates "
               "sent in clear by keyed pseudonyms of the same length, label by label (the same key gives "
               "the same pseudonym in every file); reverse names follow the mapped addresses."),
        Option("keep_public_suffix", "Keep the public suffix of host names", "bool", True,
               "Leave the public suffix (com, co.uk, ...: the ICANN section of the Public Suffix List) of "
               "each pseudonymized name as it is."),
        Option("keep_domains", "Domains to keep", "domain_list", [],
               "Host names equal to or under these domains stay as they are (a vendor's own domain, say); "
               "an entry *.local keeps only the suffix local."),
        UNINSPECTED_OPTION,
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
        only = _parse_cidrs(self.options["anonymize_only"])     # internal-only: the rest is kept
        self._only4 = [(net >> (32 - plen), 32 - plen) for ver, net, plen in only if ver == 4] if only else None
        self._only6 = [(net >> (128 - plen), 128 - plen) for ver, net, plen in only if ver == 6] if only else None
        self._oui = bool(self.options["keep_oui"])
        self._macs = bool(self.options["anonymize_macs"]) or self._oui
        self._fast = self.fast_path and not self._macs      # the fast paths know no MAC fields
        self._payload = bool(self.options["payload_addresses"])
        self._policy = uninspected_policy(self.options, options)
        self._export = str(self.options["export_mapping"] or "")
        self._map4 = {}             # original bytes -> output bytes (kept addresses map to themselves)
        self._map6 = {}
        self._mapmac = {}
        self._pairs = {}            # fast path: source+destination bytes -> (mapped bytes, ~checksum delta)
        self._addrs = {}            # DNS fast path: address bytes -> (mapped bytes, checksum delta)
        self._kept_seen = set()     # kept addresses met (at most _SEEN)
        self._landed_on_kept = set()    # mapped addresses that are kept addresses too (at most _SEEN)
        self._collisions = 0
        # the distinct addresses mapped (with their mapping when it is exported): counts and export
        self._seen4 = AddressSet(8 if self._export else 4)
        self._seen6 = AddressSet(32 if self._export else 16)
        self._nmac = 0
        self._seen_full = False     # _kept_seen or _landed_on_kept was full: counts approximate
        self._macs_lost = False     # the MAC memo was cleared: its count approximate, its export partial
        self._types = {}
        self._uninspected = 0
        self._reasons = {}                  # reason -> frames passed unchanged (policy "pass")
        self._zeroed = {}                   # reason -> frames with bytes zeroed (policy "zero")
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
        if self._only4 is not None:
            return not any(a >> shift == net for net, shift in self._only4)
        return False

    def _kept6(self, a: int) -> bool:
        if self._keep_special and (a <= 1 or a >> 120 == 0xFF):
            return True
        for net, shift in self._keep6:
            if a >> shift == net:
                return True
        if self._only6 is not None:
            return not any(a >> shift == net for net, shift in self._only6)
        return False

    def _new(self, addr: bytes, v4: bool) -> bytes:
        """Map an address the memo does not hold (new, or forgotten when the memo was cleared)."""
        a = int.from_bytes(addr, "big")
        kept = self._kept4 if v4 else self._kept6
        if kept(a):
            out = addr
            if addr not in self._kept_seen:
                if addr in self._landed_on_kept:
                    self._collision(addr)
                self._seen(self._kept_seen, addr)
        else:
            if v4:
                m = self._cp.anonymize_v4(a)
                out = m.to_bytes(4, "big")
                self._seen4.add(addr + out if self._export else addr)
            else:
                m = self._cp.anonymize_v6(a)
                out = m.to_bytes(16, "big")
                self._seen6.add(addr + out if self._export else addr)
            if kept(m) and out not in self._landed_on_kept:
                if out in self._kept_seen:
                    self._collision(out)
                self._seen(self._landed_on_kept, out)
        table = self._map4 if v4 else self._map6
        if len(table) >= _MEMO:
            table.clear()
        table[addr] = out
        return out

    def _seen(self, table: set, addr: bytes) -> None:
        if len(table) < _SEEN:
            table.add(addr)
        else:
            self._seen_full = True

    def _collision(self, addr: bytes) -> None:
        self._collisions += 1
        if self._collisions > _NAMED_COLLISIONS:
            if self._collisions == _NAMED_COLLISIONS + 1:
                self.context.warn("More anonymized addresses equal addresses kept as they are; the report "
                                  "counts them all ('collisions').")
            return
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
                if self._oui:
                    new = bytes(old[:3]) + new[3:]         # the vendor stays readable
                self._nmac += 1
            if len(self._mapmac) >= _MEMO:
                self._mapmac.clear()
                self._macs_lost = True
            self._mapmac[bytes(old)] = new
        return new

    # ---- frames ------------------------------------------------------------------------------------
    def _rewrite(self, data, w):
        """New frame bytes for a walked frame, or None when nothing changed: every address field mapped, and
        every range the walker could not read (``blind``: after the last header of a frame it cannot
        inspect, flow records without a known layout) zeroed; then the checksums."""
        buf = None
        changed = {}
        n = len(data)
        map4, map6 = self._map4, self._map6
        skip_from = n
        if not self._payload and w[4] is not None and w[4][0] in (6, 17):
            skip_from = w[4][2]                  # DNS / DHCP fields sit in the transport's payload
        blind = w[W_BLIND]
        for off, size, plen in w[3]:
            if off >= skip_from or off in changed or (blind and _inside(blind, off)):
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
                if off + 6 > n or off in changed or (blind and _inside(blind, off)):
                    continue
                old = bytes(data[off:off + 6])
                new = self.map_mac(old)
                if new != old:
                    if buf is None:
                        buf = bytearray(data)
                    buf[off:off + 6] = new
                    changed[off] = old
        if blind:
            count_zeroed(self._zeroed, w)
        for start, end, _reason in blind:
            end = min(end, n)
            if start < end and any(data[start:end]):
                if buf is None:
                    buf = bytearray(data)
                changed[start] = bytes(buf[start:end])
                buf[start:end] = bytes(end - start)
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
        fold, foldz = _FOLD, _FOLDZ
        n4 = n6 = 0                         # inline-path frames by type, added to the counts after the batch
        expect = self._expect.append if self._expecting else [].append
        base = self._frames
        self._frames = base + len(batch)    # _one takes metadata records off again
        try:
            for rec, s in zip(batch, shapes(batch) if self._fast else repeat(None)):
                data = rec[0]
                if s is not None:
                    # Inline fast path, same bytes out as the general one (tests compare them): the usual
                    # frame (shape.shapes) whose only address fields are the IP source and destination, side
                    # by side before the transport header; one cached pair mapping and RFC 1624 updates of
                    # the IPv4 header checksum and the transport's from a table (see _FOLD; a UDP 0 stays 0).
                    kind, o, t, end = s
                    if kind == TCP or kind == UDP or kind == ECHO:
                        v4 = t - o == 20
                        a = o + 12 if v4 else o + 8
                        key = data[a:t]
                        new, nd = pairs.get(key) or pair(key, v4)
                        if v4:
                            n4 += 1
                        else:
                            n6 += 1
                        if nd > 0:
                            if kind == TCP:
                                cs = t + 16
                                l4cs = foldz[((data[cs] << 8) | data[cs + 1]) + nd]
                            elif kind == UDP:
                                cs = t + 6
                                u = (data[cs] << 8) | data[cs + 1]
                                l4cs = fold[u + nd] if u else data[cs:cs + 2]
                            else:
                                cs = t + 2          # ICMP has no pseudo-header, ICMPv6 has
                                l4cs = data[cs:cs + 2] if v4 else foldz[((data[cs] << 8) | data[cs + 1]) + nd]
                            if v4:
                                d = join((data[:o + 10], foldz[((data[o + 10] << 8) | data[o + 11]) + nd], new,
                                          data[t:cs], l4cs, data[cs + 2:]))
                            else:
                                d = join((data[:a], new, data[t:cs], l4cs, data[cs + 2:]))
                        elif nd == 0:
                            d = join((data[:a], new, data[t:]))
                        else:
                            append(rec)
                            expect(data)
                            continue
                        append((d, rec[1], rec[2], rec[3], rec[4], rec[5]))
                        expect(d)
                        continue
                    if kind == UDP_DNS:
                        d = self._dns_frame(rec, o, t, end)
                        if d is not None:
                            append(d)
                            expect(d[0])
                            continue
                append(one(rec))
                if rec[1] >= 0:
                    expect(_FIELD_BY_FIELD)
        except _FrameError as exc:
            raise Uninspectable(f"frame {_frame_number(batch, exc.rec, base)} cannot be inspected: {exc.reason} "
                                f"(--strict fails the file on such a frame; without it, it would have been "
                                f"zeroed after the last header understood)") from None
        finally:
            if n4:
                self._types["IPv4"] = self._types.get("IPv4", 0) + n4
            if n6:
                self._types["IPv6"] = self._types.get("IPv6", 0) + n6
        return out

    def _one(self, rec):
        """One record the inline path does not take: metadata, other shapes, anything unusual."""
        lt = rec[1]
        if lt < 0:
            self._frames -= 1
            return self._metadata(rec)
        data = rec[0]
        types = self._types
        w = walk(data, lt)
        status = w[0]
        if status == NON_IP:
            types[w[1]] = types.get(w[1], 0) + 1
            return rec
        if status == UNINSPECTABLE:
            if self._policy == "fail":
                raise _FrameError(rec, w[1])
            if self._policy == "pass":
                self._uninspected += 1
                reason = w[1] if w[1] in self._reasons or len(self._reasons) < _REASONS else "other reasons"
                self._reasons[reason] = self._reasons.get(reason, 0) + 1
                return rec
        else:
            types[w[1]] = types.get(w[1], 0) + 1
        new = self._rewrite(data, w)
        return rec if new is None else (new,) + rec[1:]

    def _dns_frame(self, rec, o, t, end):
        """A DNS message over UDP on the usual shape: the IP addresses and the A / AAAA answers mapped, the
        checksums updated for both. None for one the general way must take (a prefix such as a client
        subnet, a field cut short or past the UDP length): its self-check then goes field by field too."""
        data = rec[0]
        v4 = t - o == 20
        uend = _udp_end(data, t, end)
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

    def _addr(self, old: bytes):
        """DNS fast path: ``(mapped address, d)`` with d the ones'-complement change of its sum (even byte
        position; 0 when unchanged)."""
        v4 = len(old) == 4
        new = (self._map4 if v4 else self._map6).get(old) or self._new(old, v4)
        d = ones_sum(new) + 0xFFFF - ones_sum(old)
        d = (d & 0xFFFF) + (d >> 16)
        cache = self._addrs
        if len(cache) >= _ADDR_CACHE:
            cache.clear()
        cache[old] = hit = (new, 0 if d == 0xFFFF else d)
        return hit

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
        uend = _udp_end(db, t, end)
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
            if off >= skip_from or (blind and _inside(blind, off)):
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
                        not (off >= pay and not any(got)) and not (blind and _inside(blind, off)):
                    raise _Mismatch(b, f": the MAC address at byte {off} does not hold its anonymized form")

    # ---- memory, report, mapping export -----------------------------------------------------------------
    def release_memory(self) -> str | None:
        # the memos and caches only (the address sets keep the counts and the export)
        n = self._cp.release() + len(self._pairs) + len(self._addrs) + len(self._map4) + len(self._map6)
        for table in (self._pairs, self._addrs, self._map4, self._map6):
            table.clear()
        if not n:
            return None
        return (f"anonymize: dropped {n} cached addresses and prefixes (recomputed on demand; the mapping "
                "is unchanged)")

    def _complete(self) -> bool:
        """Does the export hold every address mapped?"""
        return self._seen4.complete and self._seen6.complete and not (self._macs and self._macs_lost)

    def report(self) -> dict:
        if self._export and not self._exported:
            self._exported = True
            self._write_mapping(Path(self._export))
        n4, n6 = len(self._seen4), len(self._seen6)
        rep = {
            "addresses_mapped": n4 + n6,
            "ipv4_addresses_mapped": n4,
            "ipv6_addresses_mapped": n6,
            "addresses_kept": len(self._kept_seen),
            "frames_by_type": dict(sorted(self._types.items())),
            "frames_not_inspected": self._uninspected,
            "collisions": self._collisions,
            "metadata_addresses_mapped": self._meta,
            "not_covered": "addresses inside other application payloads (SIP, SNMP, Kerberos, AFS, ...) and "
                           "routing protocol bodies (OSPF, BGP, VRRPv2, PIM join/hello)",
        }
        if self._uninspected:
            rep["not_inspected_reasons"] = dict(self._reasons)
        if self._zeroed:
            rep["frames_zeroed_unreadable"] = report_zeroed(self._zeroed, self.context)
        if self._macs:
            rep["macs_mapped"] = self._nmac
        if not self._complete() or self._seen_full:
            rep["counts_approximate"] = True
        if self._export:
            rep["mapping_exported"] = True
        return rep

    def _write_mapping(self, path: Path) -> None:
        """Merge this file's mapping into ``path`` (one key: entries never conflict), atomically, mode 0600."""
        lines = {}
        if not self._complete():
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
            for seen, size in ((self._seen4, 4), (self._seen6, 16)):      # entries: address + mapping
                for entry in seen:
                    old, new = entry[:size], entry[size:]
                    if old != new:
                        lines[str(ipaddress.ip_address(old))] = str(ipaddress.ip_address(new))
            for old, new in self._mapmac.items():
                if old != new:
                    lines[old.hex(":")] = new.hex(":")
            lines.update(self.context.extra.get("name_mapping") or {})     # host names (stages/names.py)
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
