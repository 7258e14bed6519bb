"""Anonymize IPs: keyed prefix-preserving Crypto-PAn in every header a frame carries, checksums kept right.

Per frame: ``frames.walk`` lists every address field (outer and tunnelled IP headers, ICMP-quoted headers,
ARP, IPv4 options, IPv6 routing headers, neighbour discovery, IGMP/MLD, VRRP, IPCP, NHRP, DNS answers, DHCP)
and every checksum; each field is replaced by its mapping and ``checksum.fix_checksums`` applies RFC 1624
updates to every checksum that covers a changed byte or takes it into its pseudo-header. Which addresses
are mapped, and how, is the address mapper's (``addressmap.py``); the self-check that reads the output back
is ``anonymize_check.py``. pcapng metadata that carries addresses (NRB records and DNS-server options, IDB
``if_IPv4addr``/``if_IPv6addr``, and ``if_MACaddr`` when MACs are mapped) is mapped with the same key
(``pcapngoptions.py`` finds the options); the metadata scrub may remove it later.

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
from itertools import repeat
from pathlib import Path

from .. import capture
from ..addressfields import dns_addresses
from ..addressmap import AddressMapper, MappingError
from ..capture import IDB, NRB, SHB
from ..checksum import fix_checksums, ones_sum
from ..frames import Uninspectable, walk
from ..hostnames import PRIVATE_NETWORKS
from ..layout import (F_FRAGMENT, F_LATER_FRAGMENT, F_MORE_FRAGMENTS, F_QUOTED, F_TRUNCATED, IP_FLAGS, IP_PAY,
                      IP_OFF, IP_PROTO, IP_VER, L4F_ICMP_ERROR, NON_IP, UNINSPECTABLE, W_BLIND, field_length)
from ..pcapngoptions import OPTION_HEADER, rewrite_in_place
from ..shape import ANY_ROLE, DST_ROLE, ECHO, SERVICE, TCP, TUNNELS, UDP, UDP_DNS, shapes
from . import (UNINSPECTED_OPTION, ZEROED_REASONS, Option, ReasonCounts, Stage, StageError, count_zeroed,
               report_zeroed, uninspected_policy)
from .anonymize_check import FIELD_BY_FIELD, AnonymizeCheck, inside, udp_end
from .mask_prescan import frag_key

_SPECIAL_HELP = ("unspecified (0.0.0.0, ::), broadcast (255.255.255.255), loopback (127.0.0.0/8, ::1) and "
                 "multicast (224.0.0.0/4, ff00::/8)")
# Memory, whatever the traffic (docs/ARCHITECTURE.md, "Memory"): every table is bounded (the address
# mapper's: addressmap.py). The pair cache holds at most _PAIR_CACHE pairs (~210 / ~260 bytes), the DNS
# answers' cache _ADDR_CACHE addresses; reasons for frames not inspected, at most _REASONS.
_PAIR_CACHE = 1 << 15
# IP fragments: a later fragment carries no header of its own, so what it holds of a DNS answer, a DHCP
# message or a tunnelled header cannot be read, let alone rewritten: it is zeroed when its first fragment
# says the datagram carries such addresses, or when no first fragment came in the FRAGMENT_FRAMES frames
# before it (out of order, or never: fail closed). A verdict per datagram, kept FRAGMENT_FRAMES frames.
FRAGMENT_FRAMES = 8192
_TUNNEL_PROTOS = frozenset((4, 41, 47, 97, 137))        # IP in IP, IPv6 in IP, GRE, EtherIP, MPLS in IP
_OPAQUE_PROTOS = frozenset((50, 59))                     # ESP (encrypted), IPv6 no next header
FRAGMENT_CARRIES = "a later IP fragment of a datagram that carries addresses (DNS, DHCP, a tunnel) it cannot rewrite"
FRAGMENT_ALONE = "a later IP fragment whose first fragment did not come before it"
_ADDR_CACHE = 1 << 14
_REASONS = 256
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


def _with_blind(w: tuple, start: int, end: int, reason: str) -> tuple:
    """A walk (frames.walk's result) with one more range that cannot be rewritten: zeroed and counted."""
    return w[:W_BLIND] + (w[W_BLIND] + ((start, end, reason),),) + w[W_BLIND + 1:]


def _frame_number(batch, rec, base):
    """1-based number of packet record ``rec`` (found by identity) when ``base`` packets came before ``batch``."""
    n = base
    for r in batch:
        if r[1] >= 0:
            n += 1
        if r is rec:
            break
    return n


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


class AnonymizeStage(AnonymizeCheck, Stage):
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
        self._keep_special = bool(self.options["keep_special"])
        self._macs = bool(self.options["anonymize_macs"]) or bool(self.options["keep_oui"])
        self._fast = self.fast_path and not self._macs      # the fast paths know no MAC fields
        self._payload = bool(self.options["payload_addresses"])
        self._policy = uninspected_policy(self.options, options)
        self._export = str(self.options["export_mapping"] or "")
        self.mapper = AddressMapper(key, keep_special=self._keep_special,
                                    keep_cidrs=_parse_cidrs(self.options["keep_cidrs"]),
                                    anonymize_only=_parse_cidrs(self.options["anonymize_only"]),
                                    macs=self._macs, keep_oui=bool(self.options["keep_oui"]),
                                    export=bool(self._export), warn=context.warn)
        self._pairs = {}            # fast path: source+destination bytes -> (mapped bytes, ~checksum delta)
        self._addrs = {}            # DNS fast path: address bytes -> (mapped bytes, checksum delta)
        self._types = {}
        self._uninspected = 0
        self._reasons = ReasonCounts(_REASONS)         # reason -> frames passed unchanged (policy "pass")
        self._zeroed = ReasonCounts(ZEROED_REASONS)    # (status, reason) -> frames with bytes zeroed ("zero")
        self._frames = 0
        self._checked = 0
        # What the self-check expects of each packet frame, in order, from process() to check(): for a
        # frame of the inline shapes (DNS included), the frame built; FIELD_BY_FIELD (which no frame
        # starts with): the frame is checked field by field from the input.
        self._expect: list = []
        self._expecting = False             # set by will_check(): only the checked main pass keeps them
        self._meta = 0
        self._fragments: dict = {}         # datagram -> (frame of its first fragment, carries addresses)
        self._prune_at = FRAGMENT_FRAMES
        self._scan: tuple = ([], 0, 0)      # process(): where _frame_of() looks next
        self._segment_first = None          # segments: frames before this segment
        self._alone_early = False           # segments: a later fragment alone in its first FRAGMENT_FRAMES
        self._endian = "<"
        self._exported = False

    # ---- frames ------------------------------------------------------------------------------------
    def _rewrite(self, data, w):
        """New frame bytes for a walked frame, or None when nothing changed: every address field mapped, and
        every range the walker could not read (``blind``: after the last header of a frame it cannot
        inspect, flow records without a known layout) zeroed; then the checksums."""
        buf = None
        changed = {}
        n = len(data)
        mapper = self.mapper
        map4, map6 = mapper.map4, mapper.map6
        skip_from = n
        if not self._payload and w[4] is not None and w[4][0] in (6, 17):
            skip_from = w[4][2]                  # DNS / DHCP fields sit in the transport's payload
        blind = w[W_BLIND]
        for off, size, plen in w[3]:
            if off >= skip_from or off in changed or (blind and inside(blind, off)):
                continue
            if plen >= size * 8:
                old = data[off:off + size]
                if len(old) == size:
                    new = (map4 if size == 4 else map6).get(old)
                    if new is None:
                        new = mapper.new(bytes(old), size == 4)
                else:
                    new = mapper.map_address(bytes(old), size, plen)
            else:
                old = data[off:off + field_length(size, plen)]
                new = mapper.map_address(bytes(old), size, plen)
            if new != old:
                if buf is None:
                    buf = bytearray(data)
                buf[off:off + len(new)] = new
                changed[off] = bytes(old)
        if self._macs:
            for off in w[6]:
                if off + 6 > n or off in changed or (blind and inside(blind, off)):
                    continue
                old = bytes(data[off:off + 6])
                new = mapper.map_mac(old)
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
        csums = w[5]
        if blind:                               # a checksum field inside a zeroed range stays zero
            csums = [c for c in csums if not inside(blind, c[0])]
        fix_checksums(buf, csums, w[2], changed)
        return bytes(buf)

    def _pair(self, key: bytes, v4: bool):
        """Fast path: ``(mapped source+destination, nd)`` for an address pair. ``nd`` is ``~d`` (16 bits) for
        the ones'-complement change d of the pair's sum, 0 when that sum stays the same (no checksum moves)
        and -1 when the pair maps to itself (nothing to write)."""
        size = 4 if v4 else 16
        mapper = self.mapper
        table = mapper.map4 if v4 else mapper.map6
        src, dst = key[:size], key[size:]
        new_src = table.get(src) or mapper.new(src, v4)
        new_dst = table.get(dst) or mapper.new(dst, v4)
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
        self._scan = (batch, 0, base)
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
                    expect(FIELD_BY_FIELD)
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
                self._reasons.add(w[1])
                return rec
        else:
            types[w[1]] = types.get(w[1], 0) + 1
            for ip in w[2]:
                if ip[IP_FLAGS] & (F_FRAGMENT | F_QUOTED | F_TRUNCATED) == F_FRAGMENT:
                    w, no_checksum = self._fragment(rec, w, ip)
                    if no_checksum is not None:     # see _fragment
                        new = bytearray(self._rewrite(data, w) or data)
                        new[no_checksum:no_checksum + 2] = b"\0\0"
                        return (bytes(new),) + rec[1:]
                    break
        new = self._rewrite(data, w)
        return rec if new is None else (new,) + rec[1:]

    def _frame_of(self, rec) -> int:
        """The 1-based number of packet record ``rec`` of the batch process() runs (found by identity, from
        where the last search ended: records come in order)."""
        batch, pos, n = self._scan
        while True:
            r = batch[pos]
            pos += 1
            if r[1] >= 0:
                n += 1
            if r is rec:
                break
        self._scan = (batch, pos, n)
        return n

    def _fragment(self, rec, w, ip):
        """A frame whose outermost fragmented IP header is ``ip``: a first fragment notes whether its datagram
        carries addresses past it; a later one is zeroed (after its IP header) when it does or when no first
        fragment came before it (see FRAGMENT_FRAMES). Returns the walk, with that range blind unless the
        policy lets it pass, and where a first fragment's UDP checksum is to be set to 0 (or None)."""
        data = rec[0]
        frame = self._frame_of(rec)
        if frame >= self._prune_at:
            self._prune_at = frame + FRAGMENT_FRAMES
            self._fragments = {k: v for k, v in self._fragments.items() if frame - v[0] <= FRAGMENT_FRAMES}
        key = frag_key(data, ip)
        if not ip[IP_FLAGS] & F_LATER_FRAGMENT:
            if not ip[IP_FLAGS] & F_MORE_FRAGMENTS:
                return w, None
            carries = self._carries_addresses(data, w, ip)
            self._fragments[key] = (frame, carries)
            if not carries or self._policy != "zero":
                return w, None
            # a tunnelled header cut by this fragment's end, before any of its addresses: it goes too (its
            # checksum could not match the zeroed addresses; zeros read as no header at all)
            for inner in w[2]:
                if inner[IP_FLAGS] & F_TRUNCATED and inner[IP_OFF] > ip[IP_OFF] and \
                        not any(off + size > inner[IP_OFF] for off, size, _plen in w[3]):
                    w = _with_blind(w, inner[IP_OFF], len(data), FRAGMENT_CARRIES)
                    break
            l4 = w[4]
            if ip[IP_VER] == 4 and l4 is not None and l4[0] == 17 and w[2][l4[4]] is ip and l4[1] + 8 <= len(data):
                # its later fragments will be zeroed, which its UDP checksum cannot account for (they come
                # after it): over IPv4, 0 says "no checksum", and the datagram stays valid
                return w, l4[1] + 6
            return w, None
        if ip[IP_PROTO] in _OPAQUE_PROTOS:
            return w, None
        seen = self._fragments.get(key)
        if seen is not None and frame - seen[0] <= FRAGMENT_FRAMES:
            if not seen[1]:
                return w, None
            reason = FRAGMENT_CARRIES
        else:
            reason = FRAGMENT_ALONE
            first = self._segment_first
            if first is not None and frame - first <= FRAGMENT_FRAMES:
                self._alone_early = True        # its first fragment may lie in the segment before
        if self._policy == "fail":
            raise _FrameError(rec, reason)
        if self._policy == "pass":             # its headers are still anonymized, its data left
            self._uninspected += 1
            self._reasons.add(reason)
            return w, None
        start = ip[IP_PAY]
        if start >= len(data) or any(off + size > start for off, size, _plen in w[3]):
            return w, None                      # (the walker reads nothing past a later fragment's header)
        return _with_blind(w, start, len(data), reason), None

    def _carries_addresses(self, data, w, ip) -> bool:
        """Whether a first fragment's datagram may hold, past this fragment, addresses this stage rewrites: a
        tunnelled header cut by the fragment's end (or a tunnel whose inner transport it cannot find), an
        ICMP error's quoted header, DNS or DHCP (and the other payloads the walker reads) by the ports of
        the innermost transport, as frames.walk names them."""
        ips = w[2]
        at = next(j for j, x in enumerate(ips) if x is ip)
        l4 = w[4]
        tunnel = ip[IP_PROTO] in _TUNNEL_PROTOS or at + 1 < len(ips)
        if tunnel and (l4 is None or l4[4] <= at or any(x[IP_FLAGS] & F_TRUNCATED for x in ips[at + 1:])):
            return True
        if l4 is None or l4[4] < at:
            return False
        if l4[5] & L4F_ICMP_ERROR:
            return True
        t = l4[1]
        if l4[0] not in (6, 17) or t < 0 or t + 4 > len(data):
            return False
        sport, dport = (data[t] << 8) | data[t + 1], (data[t + 2] << 8) | data[t + 3]
        for port in (sport, dport):
            role = ANY_ROLE[port] or (DST_ROLE[port] if port == dport else 0)
            if role and role != SERVICE and (role in TUNNELS or self._payload):
                return True
        return False

    def _dns_frame(self, rec, o, t, end):
        """A DNS message over UDP on the usual shape: the IP addresses and the A / AAAA answers mapped, the
        checksums updated for both. None for one the general way must take (a prefix such as a client
        subnet, a field cut short or past the UDP length): its self-check then goes field by field too."""
        data = rec[0]
        v4 = t - o == 20
        uend = udp_end(data, t, end)
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
        mapper = self.mapper
        new = (mapper.map4 if v4 else mapper.map6).get(old) or mapper.new(old, v4)
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
        if btype == SHB:
            try:
                self._endian = capture.section_endian(body)
            except ValueError:
                pass
            return rec
        if btype == IDB:
            new = self._idb(body, self._endian)
        elif btype == NRB:
            new = self._nrb(body, self._endian)
        else:
            return rec
        return rec if new is None else (new,) + rec[1:]

    def _field(self, buf, off, size) -> bool:
        old = bytes(buf[off:off + size])
        new = self.mapper.map_address(old, size, size * 8)
        if new == old:
            return False
        buf[off:off + size] = new
        self._meta += 1
        return True

    def _mac_field(self, buf, off, length) -> bool:
        if not self._macs or length != 6:
            return False
        old = bytes(buf[off:off + 6])
        new = self.mapper.map_mac(old)
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
        return bytes(buf) if rewrite_in_place(buf, 8, endian, handlers) else None

    def _nrb(self, body, endian):
        buf = bytearray(body)
        hdr = OPTION_HEADER[endian]
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
        if rewrite_in_place(buf, off, endian, handlers):
            changed = True
        return bytes(buf) if changed else None

    # ---- memory, report, mapping export -----------------------------------------------------------------
    def release_memory(self) -> str | None:
        # the memos and caches only (the address sets keep the counts and the export)
        n = self.mapper.release() + len(self._pairs) + len(self._addrs)
        for table in (self._pairs, self._addrs):
            table.clear()
        if not n:
            return None
        return (f"anonymize: dropped {n} cached addresses and prefixes (recomputed on demand; the mapping "
                "is unchanged)")

    def report(self) -> dict:
        if self._export and not self._exported:
            self._exported = True
            try:
                self.mapper.write_mapping(Path(self._export), self.context.extra.get("name_mapping") or {})
            except MappingError as exc:
                raise StageError(str(exc)) from None
        mapper = self.mapper
        n4, n6 = len(mapper.seen4), len(mapper.seen6)
        rep = {
            "addresses_mapped": n4 + n6,
            "ipv4_addresses_mapped": n4,
            "ipv6_addresses_mapped": n6,
            "addresses_kept": len(mapper.kept_seen),
            "frames_by_type": dict(sorted(self._types.items())),
            "frames_not_inspected": self._uninspected,
            "collisions": mapper.collisions,
            "metadata_addresses_mapped": self._meta,
            "not_covered": "addresses inside other application payloads (SIP, SNMP, Kerberos, AFS, ...) and "
                           "routing protocol bodies (OSPF, BGP, VRRPv2, PIM join/hello)",
        }
        if self._uninspected:
            rep["not_inspected_reasons"] = dict(sorted(self._reasons.items()))  # (one order for any split)
        if self._zeroed:
            rep["frames_zeroed_unreadable"] = report_zeroed(self._zeroed, self.context)
        if self._macs:
            rep["macs_mapped"] = mapper.nmac
        if not mapper.complete() or mapper.seen_full:
            rep["counts_approximate"] = True
        if self._export:
            rep["mapping_exported"] = True
        return rep

    # ---- segments (segments.py): stateless per packet; the address sets are merged ------------------------
    segmentable = True

    def segment_start(self, first: int, end: int, shared, at) -> None:  # noqa: ARG002
        self._frames = first                # frame numbers in messages stay the file's
        self._segment_first = first

    def segment_result(self) -> dict:
        m = self.mapper
        return {"seen4": m.seen4, "seen6": m.seen6, "macs": m.mapmac, "macs_lost": m.macs_lost,
                "kept_seen": m.kept_seen, "landed": m.landed_on_kept, "seen_full": m.seen_full,
                "types": dict(self._types), "uninspected": self._uninspected, "reasons": dict(self._reasons),
                "zeroed": dict(self._zeroed), "meta": self._meta, "alone_early": self._alone_early}

    def absorb(self, result: dict, baseline: dict) -> None:
        """The counts of one run over the whole file: counters add up (less the segment's re-read header
        blocks); each address and MAC counts once, as when first met; collisions are the kept addresses
        that mapped ones landed on. Where a bounded table filled, the one-core counts depend on the order
        things were met: the caller then runs the file on one core (SplitInexact)."""
        from ..addressmap import MEMO, NAMED_COLLISIONS, SEEN
        from ..segments import SplitInexact, add_counts

        m = self.mapper
        if result["seen_full"] or m.seen_full or result["macs_lost"] or m.macs_lost:
            raise SplitInexact("a bounded table of the anonymizer filled")
        if result["alone_early"]:
            raise SplitInexact("a later IP fragment near a segment's start, whose first may lie before it")
        add_counts(self._types, result["types"], baseline["types"])
        self._reasons.merge(result["reasons"], baseline["reasons"])
        self._zeroed.merge(result["zeroed"], baseline["zeroed"])
        self._uninspected += result["uninspected"] - baseline["uninspected"]
        self._meta += result["meta"] - baseline["meta"]
        for mine, theirs in ((m.seen4, result["seen4"]), (m.seen6, result["seen6"])):
            for entry in theirs:
                mine.add(entry)
            if not (mine.complete and theirs.complete):
                raise SplitInexact("more distinct addresses than the anonymizer counts")
        if m.macs:
            for old, new in result["macs"].items():
                m.mapmac.setdefault(old, new)
            if len(m.mapmac) >= MEMO:
                raise SplitInexact("more distinct MAC addresses than the anonymizer remembers")
            m.nmac = sum(1 for a in m.mapmac
                         if not (a == b"\xff" * 6 or a == b"\x00" * 6 or (self._keep_special and a[0] & 1)))
        # an anonymized address equal to a kept one counts once, whichever segment met either first
        kept, landed = m.kept_seen | result["kept_seen"], m.landed_on_kept | result["landed"]
        if len(kept) >= SEEN or len(landed) >= SEEN:
            raise SplitInexact("more kept addresses than the anonymizer remembers")
        fresh = (kept & landed) - (m.kept_seen & m.landed_on_kept)
        if fresh and m.collisions + len(fresh) > NAMED_COLLISIONS:
            raise SplitInexact("which collisions are named depends on the order they are met")
        m.kept_seen, m.landed_on_kept = kept, landed
        m.collisions += len(fresh)
        for addr in sorted(fresh):
            self.context.warn(
                f"The anonymized form of an address equals {ipaddress.ip_address(addr)}, an address kept as it "
                "is: in the output two different addresses look alike (use another key or keep fewer addresses).")
