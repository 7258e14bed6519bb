"""Host names: a hidden stage, run when Anonymize IPs' option "Pseudonymize host names" is on.

The pipeline adds it (``run_job``) with Anonymize IPs' options. How names map is hostnames.py's; where
they are, namefields.py (DNS, NetBIOS, DHCP, NRB), certnames.py (TLS hellos, certificates),
namestreams.py (TCP streams) and quicnames.py (QUIC Initials). This module walks the frames:

- pre-scan: TCP directions and QUIC Initials. Each TCP direction instance (from its SYN, or first
  segment, to a SYN with another sequence number, FIN or RST, or ``LIVE_LIMIT`` open directions) goes
  through a ``namestreams.Direction`` into a TLS parser (any port: by content, as Mask Payloads finds TLS)
  or, on ports 53 and 5355, a DNS-over-TCP parser; a direction whose parser is done (not TLS, or past its
  handshake) costs a dict lookup a segment. A finished instance with edits keeps them (packed) with its
  first and last frame numbers and sequence base. Client QUIC Initials are decrypted and their
  ClientHellos put together (quicnames.QuicNames).
- main pass: per frame, the usual shapes (shape.shapes) decide without a walk: a UDP datagram on no name
  port (DNS 53, mDNS 5353, LLMNR 5355, NetBIOS 137, DHCP 67/68, DHCPv6 546/547) and, with QUIC edits, no
  QUIC long header, or a TCP segment of a direction without edits, is passed on at once; a segment whose
  instance has an edit that lands in it is walked and written. Other frames are walked, and every UDP
  header in them (tunnelled, or quoted by an ICMP error) is looked at, its role taken as Wireshark takes
  it (``names_role``: the lower port first). A changed frame has its checksums updated (RFC 1624: the
  transport's, a tunnel's, an ICMP error's). pcapng Name Resolution Blocks get their names mapped.

Run order (docs/ARCHITECTURE.md, "Host names"): after Remove Dupes, before Mask Payloads and Anonymize
IPs, so that its TCP keys and its names are the original ones in both its passes, the reverse names it
maps are the original addresses, and the handshake Mask Payloads keeps already holds pseudonyms. Every
change keeps lengths and record structure, so Mask Payloads' pre-scan does not run it first
(``prescan_transparent``).
"""
from __future__ import annotations

from bisect import bisect_right

from . import Stage, StageContext, StageError
from .. import capture
from ..checksum import fix_checksums
from ..frames import walk
from ..layout import F_LATER_FRAGMENT, NON_IP, UNINSPECTABLE, L4F_FRAGMENT
from ..shape import ANY_ROLE, DHCP, DHCP6, DNS, DST_ROLE, ECHO, TCP, TCP_DNS, TCP_HEADER, UDP, shapes

# The modules that do the work are imported when the stage is first made: a run without host names
# does not pay for them (the registry imports every stage module).
HostNames = dhcp = dhcp6 = dns_message = nrb = Direction = DnsTcpNames = TlsNames = pack = None
QUIC_VERSIONS = QuicNames = client_initials = None


def _load() -> None:
    global HostNames, dhcp, dhcp6, dns_message, nrb, Direction, DnsTcpNames, TlsNames, pack
    global QUIC_VERSIONS, QuicNames, client_initials
    if HostNames is None:
        from ..hostnames import HostNames as _hn
        from ..namefields import dhcp as _d4, dhcp6 as _d6, dns_message as _dm, nrb as _nrb
        from ..namestreams import Direction as _dir, DnsTcpNames as _dns, TlsNames as _tls, pack as _pack
        from ..quicnames import VERSIONS as _qv, QuicNames as _qn, client_initials as _ci
        HostNames, dhcp, dhcp6, dns_message, nrb = _hn, _d4, _d6, _dm, _nrb
        Direction, DnsTcpNames, TlsNames, pack = _dir, _dns, _tls, _pack
        QUIC_VERSIONS, QuicNames, client_initials = _qv, _qn, _ci

NBNS = -1

_I = __import__("struct").Struct("!I").unpack_from
_HH = __import__("struct").Struct("!HH").unpack_from
MASK32 = 0xFFFFFFFF
HALF = 1 << 31
LIVE_LIMIT = 1 << 16            # directions open at once in the pre-scan (the longest idle are closed)
CLOSED_BITS = 1 << 23           # a 1 MiB bitmap of closed direction keys (a later start is mid-stream)
_DNS_KINDS = {53: "dns", 5353: "mdns", 5355: "llmnr"}
# UDP ports whose payload holds names, as Wireshark dispatches them (the lower port first; a port with
# another role, a well-known service or a tunnel, decides for its own protocol)
_NAME_PORTS = {53: DNS, 5353: DNS, 5355: DNS, 137: NBNS, 67: DHCP, 68: DHCP, 546: DHCP6, 547: DHCP6}
# pre-scan state of one direction instance (a list)
P_BASE, P_HIGH, P_FIRST, P_LAST, P_DIR = range(5)


def _maybe_quic(data, p: int, end: int) -> bool:
    """Can a QUIC long-header packet of a version this stage decrypts start at ``p``?"""
    return p + 7 <= end and data[p] & 0xC0 == 0xC0 and int.from_bytes(data[p + 1:p + 5], "big") in QUIC_VERSIONS


def _udp_end(data, t: int, end: int) -> int:
    ulen = (data[t + 4] << 8) | data[t + 5]
    return t + ulen if ulen >= 8 and t + ulen <= end else end


def _flow(data, o: int, t: int) -> bytes:
    """Addresses and ports of the usual frame (a QUIC connection's client side, as sent)."""
    return data[o + 12:o + 20] + data[t:t + 4] if t - o == 20 else data[o + 8:o + 40] + data[t:t + 4]


def _flow_walked(data, ip, t: int) -> bytes:
    size = 4 if ip[1] == 4 else 16
    return data[ip[6]:ip[6] + size] + data[ip[7]:ip[7] + size] + data[t:t + 4]


def _dns_kind(sport: int, dport: int) -> str:
    return _DNS_KINDS.get(sport) or _DNS_KINDS.get(dport) or "dns"


def names_role(sport: int, dport: int):
    """DNS, NBNS, DHCP, DHCP6 or None for a UDP datagram between these ports: the lower port first, as
    Wireshark dispatches; a port of another protocol (a service, a tunnel by its destination) ends it."""
    for port in ((sport, dport) if sport <= dport else (dport, sport)):
        role = _NAME_PORTS.get(port)
        if role is not None:
            return role
        if ANY_ROLE[port] or (port == dport and DST_ROLE[port]):
            return None
    return None


class NamesStage(Stage):
    name = "names"
    title = "Host names"
    description = ("Replace host names (DNS, mDNS, LLMNR, NetBIOS, DHCP, TLS server names and certificates) "
                   "by keyed pseudonyms of the same length, keeping the public suffix.")
    hidden = True
    order = 21                  # reports right after Anonymize IPs
    run_order = 12              # after Remove Dupes, before Mask Payloads (15) and Anonymize IPs (20)
    needs_prescan = True
    prescan_transparent = True  # changes no length or structure another stage's pre-scan reads
    implicit = True             # runs beside Anonymize IPs when its option "Pseudonymize host names" is on
    needs_key = True            # the pseudonyms are keyed with (a key derived from) the anonymization key
    OPTIONS = ()

    @classmethod
    def options_from(cls, settings) -> dict:
        return dict(settings.options_for("anonymize"))     # the option and its keep rules are Anonymize IPs'

    @classmethod
    def wanted(cls, settings, operations=()) -> bool:
        return "anonymize" in operations and settings.options_for("anonymize").get("pseudonymize_names") is True

    def __init__(self, options, context: StageContext):
        super().__init__(options, context)
        _load()
        opts = self.options
        if context.key is None or len(context.key) != 32:
            raise StageError("host-name pseudonyms need the anonymization key")
        from .anonymize import AnonymizeStage
        # the anonymizer's own mapping (keep rules included) for reverse names; its counts stay its own
        mapper = AnonymizeStage({k: v for k, v in opts.items() if k in {o.key for o in AnonymizeStage.OPTIONS}
                                 and k != "export_mapping"}, StageContext(log=context.log, key=context.key))
        try:
            self.hn = HostNames(context.key, bool(opts.get("keep_public_suffix", True)),
                                opts.get("keep_domains") or (), mapper.mapper.map_address,
                                export=bool(opts.get("export_mapping")))
        except ValueError as exc:
            raise StageError(f"Domains to keep: {exc}") from None
        self.everything = True      # every text value of a certificate (see certnames.py)
        self.frame = 0
        self.live = {}              # pre-scan: key -> direction instance state (P_*)
        self.closed = None
        self.streams = {}           # key -> its instances with edits, in frame order (see the main pass)
        self.cursor = {}            # main pass: key -> [entry index, high]
        self.finished = False
        self.frames_changed = 0
        self.frames_zeroed = 0
        self.streams_with_names = 0
        self.quic = QuicNames(self.hn)
        self._endian = "<"

    # ---- pre-scan: TCP streams --------------------------------------------------------------------
    def prescan(self, batch: list) -> None:
        if self.finished:
            raise StageError("host names: pre-scan after processing started.")
        live = self.live
        i = self.frame
        for rec, sh in zip(batch, shapes(batch)):
            if rec[1] < 0:
                continue
            i += 1
            data = rec[0]
            if sh is not None:
                kind, o, t, end = sh
                if kind > TCP_DNS:
                    if kind == UDP and _maybe_quic(data, t + 8, end):
                        self.quic.collect(_flow(data, o, t), client_initials(data, t + 8, _udp_end(data, t, end)))
                    continue
                key = data[o + 12:o + 20] + data[t:t + 4] if t - o == 20 else data[o + 8:o + 40] + data[t:t + 4]
                pay = t + TCP_HEADER[data[t + 12]]
            else:
                found = self._tcp_walked(data, rec[1])
                if found is None:
                    continue
                key, o, t, pay, end = found
            if pay > end:
                pay = end
            flags = data[t + 13]
            nb = end - pay
            if nb <= 0 and not flags & 7:
                continue
            st = live.get(key)
            seq = _I(data, t + 4)[0]
            if flags & 2:
                seq = (seq + 1) & MASK32
                if st is None or st[P_BASE] != seq:
                    if st is not None:
                        self._close(key, st)
                    st = self._open(key, seq, i, data, t, True)
            elif nb <= 0:
                if st is not None and (st[P_DIR] is None or st[P_DIR].done or not st[P_DIR].pending):
                    self._close(key, st)
                continue
            elif st is None:
                st = self._open(key, seq, i, data, t, False)
            high = st[P_HIGH]
            off = high + (((seq - st[P_BASE] - high + HALF) & MASK32) - HALF)
            if off + nb > high:
                st[P_HIGH] = off + nb
            st[P_LAST] = i
            d = st[P_DIR]
            if d is None or d.parser.done:
                continue
            d.feed(off, memoryview(data)[pay:end])
            if end == len(data) and end < rec[3]:
                wire = o + ((data[o + 2] << 8) | data[o + 3]) if data[o] >> 4 == 4 else \
                    o + 40 + ((data[o + 4] << 8) | data[o + 5])
                if wire > end:
                    d.hole(off + wire - pay)                 # cut by the snap length: known missing
            if flags & 5 and not d.pending:
                self._close(key, st)
        self.frame = i

    def _tcp_walked(self, data, lt):
        """(key, ip offset, tcp offset, payload start, payload end) of a walked TCP frame, else None (a
        walked UDP frame's QUIC Initials are collected on the way)."""
        w = walk(data, lt)
        if w[0] != 0 or w[4] is None:
            return None
        proto, t, pay, end, ipi, fl = w[4]
        ip = w[2][ipi]
        if proto == 17 and not fl & L4F_FRAGMENT and _maybe_quic(data, pay, end):
            self.quic.collect(_flow_walked(data, ip, t), client_initials(data, pay, end))
        if proto != 6 or fl & L4F_FRAGMENT or t + 20 > len(data):
            return None
        o, s, dst = ip[0], ip[6], ip[7]
        size = 4 if ip[1] == 4 else 16
        return data[s:s + size] + data[dst:dst + size] + data[t:t + 4], o, t, pay, end

    def _open(self, key, base: int, i: int, data, t: int, syn: bool) -> list:
        live = self.live
        if len(live) >= LIVE_LIMIT:
            for k, st in sorted(live.items(), key=lambda kv: kv[1][P_LAST])[:len(live) // 4]:
                self._close(k, st)
        midstream = False
        if not syn and self.closed is not None:
            h = hash(key) & (CLOSED_BITS - 1)
            midstream = bool(self.closed[h >> 3] & (1 << (h & 7)))
        sport, dport = _HH(data, t)
        if sport in (53, 5355) or dport in (53, 5355):
            parser = DnsTcpNames(self.hn, _dns_kind(sport, dport), syn)
        else:
            parser = TlsNames(self.hn, self.everything, syn, midstream)
        st = [base, 0, i, i, Direction(parser)]
        live[key] = st
        return st

    def _close(self, key, st) -> None:
        del self.live[key]
        closed = self.closed
        if closed is None:
            closed = self.closed = bytearray(CLOSED_BITS >> 3)
        h = hash(key) & (CLOSED_BITS - 1)
        closed[h >> 3] |= 1 << (h & 7)
        d = st[P_DIR]
        if d is None:
            return
        d.finish()
        edits = d.parser.edits
        if edits:
            self.streams_with_names += 1
            entry = (st[P_FIRST], st[P_LAST], st[P_BASE]) + pack(edits)
            self.streams.setdefault(key, []).append(entry)

    def _end_prescan(self) -> None:
        self.finished = True
        self.quic.finish()
        for key, st in list(self.live.items()):
            self._close(key, st)
        self.closed = None
        self.frame = 0

    # ---- main pass ------------------------------------------------------------------------------------
    # self.streams: key -> [(first frame, last frame, sequence base, starts, ends, offsets, blob), ...]
    def process(self, batch: list) -> list:
        if not self.finished:
            self._end_prescan()
        out = []
        add = out.append
        streams = self.streams
        i = self.frame
        for rec, sh in zip(batch, shapes(batch)):
            lt = rec[1]
            if lt < 0:
                add(self._metadata(rec))
                continue
            i += 1
            data = rec[0]
            if sh is not None:
                kind, o, t, end = sh
                if kind == ECHO or ((kind == TCP or kind == TCP_DNS) and not streams):
                    add(rec)
                    continue
                if kind == UDP:
                    sport, dport = _HH(data, t)
                    if sport not in _NAME_PORTS and dport not in _NAME_PORTS and \
                            not (self.quic.edits and _maybe_quic(data, t + 8, end)):
                        add(rec)
                        continue
                elif kind == TCP or kind == TCP_DNS:
                    key = data[o + 12:o + 20] + data[t:t + 4] if t - o == 20 else \
                        data[o + 8:o + 40] + data[t:t + 4]
                    if key not in streams:
                        add(rec)
                        continue
                    pay = t + TCP_HEADER[data[t + 12]]
                    edits = {}
                    zeroed = self._stream_edits(key, data, t, pay if pay < end else end, end, i, edits)
                    if not edits:
                        add(rec)
                        continue
                    add(self._write(rec, walk(data, rec[1]), edits, zeroed))
                    continue
            add(self._frame(rec, i))
        self.frame = i
        return out

    def _frame(self, rec, i: int):
        """One frame that may hold names: walked, its names rewritten, its checksums updated."""
        data = rec[0]
        w = walk(data, rec[1])
        if w[0] == NON_IP or w[0] == UNINSPECTABLE:
            return rec
        edits = {}
        bad = 0
        n = len(data)
        for ip in w[2]:
            if ip[3] != 17 or ip[8] & F_LATER_FRAGMENT:
                continue
            u = ip[4]
            if u + 8 > n:
                continue
            sport, dport = _HH(data, u)
            role = names_role(sport, dport)
            ulen = (data[u + 4] << 8) | data[u + 5]
            uend = min(ip[5], u + ulen if ulen >= 8 else ip[5], n)
            p = u + 8
            if p >= uend:
                continue
            if role is None:
                if self.quic.edits and _maybe_quic(data, p, uend):
                    bad += self.quic.rewrite(_flow_walked(data, ip, u), data, p, uend, edits)
                continue
            if role == NBNS:
                bad += dns_message(data, p, uend, self.hn, "netbios", edits, netbios=True)
            elif role == DNS:
                bad += dns_message(data, p, uend, self.hn, _dns_kind(sport, dport), edits)
            elif role == DHCP:
                bad += dhcp(data, p, uend, self.hn, edits)
            elif role == DHCP6:
                bad += dhcp6(data, p, uend, self.hn, edits)
        l4 = w[4]
        if self.streams and l4 is not None and l4[0] == 6 and not l4[5] & L4F_FRAGMENT and l4[1] + 20 <= n:
            ip = w[2][l4[4]]
            size = 4 if ip[1] == 4 else 16
            t = l4[1]
            key = data[ip[6]:ip[6] + size] + data[ip[7]:ip[7] + size] + data[t:t + 4]
            if key in self.streams:
                bad += self._stream_edits(key, data, t, l4[2], min(l4[3], n), i, edits)
        if not edits:
            return rec
        return self._write(rec, w, edits, bad)

    def _write(self, rec, w, edits: dict, bad: int):
        """The frame with ``edits`` written and its checksums updated (``w``: its walk)."""
        data = rec[0]
        n = len(data)
        buf = bytearray(data)
        changed = {}
        for off in sorted(edits):
            new = edits[off]
            stop = min(off + len(new), n)
            if stop <= off:
                continue
            old = bytes(buf[off:stop])
            if old != new[:stop - off]:
                buf[off:stop] = new[:stop - off]
                changed[off] = old
        if not changed:
            return rec
        fix_checksums(buf, w[5], w[2], changed)
        self.frames_changed += 1
        if bad:
            self.frames_zeroed += 1
        return (bytes(buf),) + rec[1:]

    def _stream_edits(self, key, data, t: int, pay: int, end: int, i: int, edits: dict) -> int:
        """The edits of this segment's instance that fall into its payload ``[pay, end)``; returns 1 when one
        zeroes bytes. Every payload segment of a key with edits comes here, in frame order, so that the
        sequence unwrapping sees what the pre-scan saw."""
        entries = self.streams[key]
        cur = self.cursor.get(key)
        if cur is None:
            cur = self.cursor[key] = [0, 0]
        while cur[0] < len(entries) and entries[cur[0]][1] < i:
            cur[0] += 1
            cur[1] = 0
        if cur[0] == len(entries):
            del self.streams[key]
            del self.cursor[key]
            return 0
        first, _last, base, starts, ends, offs, blob = entries[cur[0]]
        if i < first:
            return 0
        nb = end - pay
        if nb <= 0:
            return 0
        seq = _I(data, t + 4)[0]
        if data[t + 13] & 2:
            seq = (seq + 1) & MASK32
        high = cur[1]
        off = high + (((seq - base - high + HALF) & MASK32) - HALF)
        if off + nb > high:
            cur[1] = off + nb
        e = off + nb
        k = bisect_right(starts, off) - 1
        if k < 0:
            k = 0
        zeroed = 0
        while k < len(starts) and starts[k] < e:
            a, b, at = starts[k], ends[k], offs[k]
            k += 1
            if b <= off:
                continue
            lo, hi = max(a, off), min(b, e)
            if at < 0:
                piece = bytes(hi - lo)
                zeroed = 1
            else:
                piece = blob[at + lo - a:at + hi - a]
            edits[pay + lo - off] = piece
        return zeroed

    # ---- pcapng metadata ------------------------------------------------------------------------------
    def _metadata(self, rec):
        btype = rec[5]
        if btype == capture.SHB:
            try:
                self._endian = capture.section_endian(rec[0])
            except ValueError:
                pass
            return rec
        if btype != capture.NRB:
            return rec
        edits = {}
        nrb(rec[0], self._endian, self.hn, edits)
        if not edits:
            return rec
        body = bytearray(rec[0])
        for off, new in edits.items():
            body[off:off + len(new)] = new
        return (bytes(body),) + rec[1:]

    # ---- report -----------------------------------------------------------------------------------------
    def release_memory(self) -> str | None:
        n = self.hn.release()
        return f"host names: dropped {n} cached pseudonyms (recomputed on demand)" if n else None

    def report(self) -> dict:
        hn = self.hn
        rep = {
            "names_pseudonymized": sum(hn.by_kind.values()),
            "names_by_kind": dict(sorted(hn.by_kind.items())),
            "names_kept_by_rule": dict(sorted(hn.kept.items())),
            "names_zeroed": hn.zeroed,
            "frames_changed": self.frames_changed,
            "frames_zeroed": self.frames_zeroed,
        }
        if hn.zeroed:
            self.context.warn(f"{hn.zeroed:,} host name{'s' if hn.zeroed != 1 else ''} could not be rewritten in "
                              "place (cut short, malformed, or a reverse name whose mapped address has "
                              "other digits): their bytes were zeroed")
        if hn.export is not None:
            from ..hostnames import escape
            self.context.extra["name_mapping"] = {escape(k): escape(v) for k, v in hn.export.items()}
            if hn.export_full:
                self.context.warn("The name mapping table is incomplete: the file has more distinct names than "
                                  "the stage remembers.")
        return rep
