"""Before/after: what a run did to each frame (the engine side of the Inspect view; Qt-free, read-only).

- ``CaptureIndex``: the file offset of every packet record of a capture, found by ``scan()`` (run it off the
  UI thread: it grows as it goes, 1 MiB reads, one struct read per record), and ``frame(i)``: any packet
  read on demand (one ``pread``), so that a 10 GB capture opens at once and only what is shown is decoded.
- ``Pairing``: which output frame each input frame became. Without Remove Dupes it is frame for frame;
  with it, the input's scan replays Remove Dupes itself (the engine's ``DedupStage``, fed every input frame
  with its number) and records the frames it drops, so the pairing is exact, not guessed by position.
  ``verify`` holds it against the frames' timestamps and wire lengths, which no operation changes.
- ``summary(frame)``: the list line (protocol, addresses, ports) from the engine's frame walker;
  ``explain(before, after)``: the header fields the walker found, down to where it stopped, each with what
  happened to it (address mapped, checksum updated, payload zeroed or trimmed, unchanged), and the exact
  offsets of the bytes that differ.
"""
from __future__ import annotations

import ipaddress
import os
import struct
from array import array
from typing import NamedTuple

from .capture import MAX_CAPLEN, CaptureError, idb_info, ts_to_ns
from .frames import walk
from .layout import NON_IP, UNINSPECTABLE
from .linklayer import LINKTYPE_NAMES

CHUNK = 1 << 20
MAX_BLOCK = 16 * 1024 * 1024
_PCAP = {b"\xd4\xc3\xb2\xa1": ("<", 6, 16), b"\xa1\xb2\xc3\xd4": (">", 6, 16),
         b"\x4d\x3c\xb2\xa1": ("<", 9, 16), b"\xa1\xb2\x3c\x4d": (">", 9, 16),
         b"\x34\xcd\xb2\xa1": ("<", 6, 24), b"\xa1\xb2\xcd\x34": (">", 6, 24)}
_BOM = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}
_PACKET_BLOCKS = (2, 3, 6)      # obsolete PB, SPB, EPB


class Frame(NamedTuple):
    number: int         # 1-based, among the file's packets
    data: bytes
    linktype: int
    ts_ns: int | None   # None: a pcapng simple packet block has no timestamp
    origlen: int


class CaptureIndex:
    """Offsets of a capture's packet records; ``scan()`` fills them, ``frame(i)`` reads one."""

    def __init__(self, path):
        self.path = str(path)
        self.fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self.size = os.fstat(self.fd).st_size
        head = os.pread(self.fd, 24, 0)
        self.offsets = array("q")           # file offset of each packet's record header / block
        self.ifaces = array("I")            # pcapng: each packet's interface, numbered across sections
        self.interfaces: list = []          # pcapng: (linktype, snaplen, tsresol, tsoffset, endian)
        self.bytes_scanned = 0
        self.done = False
        self.error: str | None = None
        if head[:4] in _PCAP:
            self.format = "pcap"
            self.endian, resol, self.header_len = _PCAP[head[:4]]
            self.linktype = struct.unpack_from(self.endian + "I", head, 20)[0] & 0xFFFF
            self.ts_unit = 10 ** resol
        elif head[:4] == b"\x0a\x0d\x0d\x0a" and head[8:12] in _BOM:
            self.format = "pcapng"
        else:
            os.close(self.fd)
            from .compression import detect
            kind = detect(head)
            if kind:        # records are found by their offsets in the file: a compressed one has none
                raise CaptureError(f"the file is {kind}-compressed, and the before/after view reads "
                                   f"uncompressed captures only", 0, located=False)
            raise CaptureError("not a pcap or pcapng capture", 0)

    def __len__(self) -> int:
        return len(self.offsets)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # --- scanning (a worker thread) ----------------------------------------------------------------
    def scan(self, stop=None, frames=None) -> None:
        """Find every packet record; ``stop()`` true ends early. ``frames(list of (data, linktype))`` gets
        the packets in order, batch by batch, when given (the pairing replays Remove Dupes on them)."""
        try:
            with open(self.path, "rb") as fh:
                if self.format == "pcap":
                    self._scan_pcap(fh, stop, frames)
                else:
                    self._scan_pcapng(fh, stop, frames)
        except (CaptureError, OSError, struct.error) as exc:
            self.error = str(exc)
        finally:
            self.done = True

    def _scan_pcap(self, fh, stop, frames) -> None:
        hl, lt = self.header_len, self.linktype
        caplen_at = struct.Struct(self.endian + "I").unpack_from
        offsets = self.offsets
        fh.seek(24)
        buf, base = b"", 24
        while stop is None or not stop():
            chunk = fh.read(CHUNK)
            buf = buf + chunk if buf else chunk
            n, p = len(buf), 0
            batch = [] if frames is not None else None
            while p + hl <= n:
                caplen = caplen_at(buf, p + 8)[0]
                if caplen > MAX_CAPLEN:
                    raise CaptureError(f"packet {len(offsets) + 1} claims a captured length of {caplen} bytes, "
                                       f"above the {MAX_CAPLEN}-byte limit (offset {base + p})", base + p)
                end = p + hl + caplen
                if end > n:
                    break
                offsets.append(base + p)
                if batch is not None:
                    batch.append((buf[p + hl:end], lt))
                p = end
            if batch:
                frames(batch)
            base += p
            buf = buf[p:]
            self.bytes_scanned = base
            if not chunk:
                break

    def _scan_pcapng(self, fh, stop, frames) -> None:
        offsets, ifaces, interfaces = self.offsets, self.ifaces, self.interfaces
        buf, base = b"", 0
        e = "<"
        section_first = 0               # global number of the current section's first interface
        while stop is None or not stop():
            chunk = fh.read(CHUNK)
            buf = buf + chunk if buf else chunk
            n, p = len(buf), 0
            batch = [] if frames is not None else None
            while p + 12 <= n:
                if buf[p:p + 4] == b"\x0a\x0d\x0d\x0a":
                    e = _BOM.get(buf[p + 8:p + 12], e)
                    section_first = len(interfaces)
                btype, blen = struct.unpack_from(e + "II", buf, p)
                if blen < 12 or blen & 3 or blen > MAX_BLOCK:
                    raise CaptureError(f"a pcapng block has an invalid length of {blen} bytes", base + p)
                if p + blen > n:
                    break
                if btype in _PACKET_BLOCKS:
                    if btype == 3:
                        iface = section_first
                    else:
                        iface = section_first + struct.unpack_from(e + "I", buf, p + 8)[0]
                    if iface >= len(interfaces):
                        raise CaptureError(f"packet {len(offsets) + 1} names an undefined interface", base + p)
                    offsets.append(base + p)
                    ifaces.append(iface)
                    if batch is not None:
                        batch.append((self._block_frame(buf[p:p + blen], e, interfaces[iface])[0],
                                      interfaces[iface][0]))
                elif btype == 1:
                    info = idb_info(buf[p + 8:p + blen - 4], e)
                    interfaces.append((info.linktype, info.snaplen, info.tsresol, info.tsoffset, e))
                p += blen
            if batch:
                frames(batch)
            base += p
            buf = buf[p:]
            self.bytes_scanned = base
            if not chunk:
                break

    # --- random access (any thread) -------------------------------------------------------------------
    def frame(self, i: int) -> Frame:
        off = self.offsets[i]
        if self.format == "pcap":
            hl = self.header_len
            head = os.pread(self.fd, hl, off)
            sec, frac, caplen, origlen = struct.unpack_from(self.endian + "IIII", head, 0)
            data = os.pread(self.fd, caplen, off + hl)
            return Frame(i + 1, data, self.linktype, sec * 10 ** 9 + frac * (10 ** 9 // self.ts_unit), origlen)
        iface = self.interfaces[self.ifaces[i]]
        e = iface[4]
        blen = struct.unpack_from(e + "I", os.pread(self.fd, 8, off), 4)[0]
        data, ts, origlen = self._block_frame(os.pread(self.fd, blen, off), e, iface)
        return Frame(i + 1, data, iface[0], None if ts is None else ts_to_ns(ts, iface[2], iface[3]), origlen)

    @staticmethod
    def _block_frame(block: bytes, e: str, iface) -> tuple:
        """(data, raw timestamp or None, origlen) of a pcapng packet block."""
        btype, blen = struct.unpack_from(e + "II", block, 0)
        if btype == 3:
            origlen = struct.unpack_from(e + "I", block, 8)[0]
            caplen = min(origlen, blen - 16)
            if iface[1]:
                caplen = min(caplen, iface[1])
            return block[12:12 + caplen], None, origlen
        if btype == 6:
            _iface, tsh, tsl, caplen, origlen = struct.unpack_from(e + "IIIII", block, 8)
        else:
            _iface, _drops, tsh, tsl, caplen, origlen = struct.unpack_from(e + "HHIIII", block, 8)
        return block[28:28 + caplen], (tsh << 32) | tsl, origlen


class Pairing:
    """Input frame i -> output frame ``output_of(i)`` (None: dropped as a duplicate)."""

    def __init__(self, dedup: bool, input_size: int = 0):
        self.dedup = dedup
        self.decided = 0                    # input frames decided so far (with Remove Dupes)
        self.dropped_count = 0
        self._out = array("q")              # with Remove Dupes: output number per input frame, -1 dropped
        self._stage = None
        if dedup:
            from .stages import StageContext
            from .stages.dedup import DedupStage

            self._stage = DedupStage({}, StageContext(extra={"input_size": input_size}))

    def feed(self, frames: list) -> None:
        """The next input frames, in order, as (data, linktype): Remove Dupes decides on them."""
        first = self.decided
        records = [(data, lt, first + k, 0, 0, None) for k, (data, lt) in enumerate(frames)]
        kept = iter(rec[2] for rec in self._stage.process(records))
        out = self._out
        j = first - self.dropped_count
        following = next(kept, None)
        for k in range(first, first + len(records)):
            if k == following:
                out.append(j)
                j += 1
                following = next(kept, None)
            else:
                out.append(-1)
                self.dropped_count += 1
        self.decided = first + len(records)

    def known(self, i: int) -> bool:
        return not self.dedup or i < self.decided

    def output_of(self, i: int) -> int | None:
        """The output frame (0-based) input frame ``i`` became; None if dropped. Call when ``known(i)``."""
        if not self.dedup:
            return i
        j = self._out[i]
        return None if j < 0 else j


def verify(before: Frame, after: Frame) -> bool:
    """A pair is consistent when what no operation changes agrees: timestamp and wire length."""
    return before.ts_ns == after.ts_ns and before.origlen == after.origlen


# ---- what a frame is ----------------------------------------------------------------------------------
_PROTO = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 47: "GRE", 50: "ESP", 51: "AH", 58: "ICMPv6", 89: "OSPF",
          103: "PIM", 112: "VRRP", 132: "SCTP", 136: "UDP-Lite"}
_TCP_FLAGS = ((0x02, "SYN"), (0x10, "ACK"), (0x08, "PSH"), (0x01, "FIN"), (0x04, "RST"), (0x20, "URG"))
_CS_NAMES = {"ipv4": "IPv4 header checksum", "tcp": "TCP checksum", "udp": "UDP checksum",
             "icmp": "ICMP checksum", "icmpv6": "ICMPv6 checksum", "igmp": "IGMP checksum",
             "gre": "GRE checksum", "nhrp": "NHRP checksum", "pseudo": "Transport checksum",
             "body": "PIM checksum"}


def _addr(data, off: int, size: int) -> str:
    raw = bytes(data[off:off + size])
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    if len(raw) == 16:
        return str(ipaddress.IPv6Address(raw))
    return raw.hex(":")


def _mac(data, off: int) -> str:
    return bytes(data[off:off + 6]).hex(":")


def summary(frame: Frame) -> str:
    """One line for the frame list: protocol, addresses and ports, TCP flags."""
    data = frame.data
    w = walk(data, frame.linktype)
    status, label, ips, _addrs, l4 = w[0], w[1], w[2], w[3], w[4]
    if status == UNINSPECTABLE:
        return f"Not inspectable: {label}"
    if status == NON_IP:
        return label
    if not ips:
        return label
    ip = ips[0]
    src, dst = _addr(data, ip[6], 4 if ip[1] == 4 else 16), _addr(data, ip[7], 4 if ip[1] == 4 else 16)
    if l4 is None:
        return f"{label} {src} → {dst}" + (f" ({_PROTO.get(ip[3], ip[3])})" if ip[3] not in (None, 0) else "")
    proto, l4off = l4[0], l4[1]
    inner = ips[l4[4]]
    if inner is not ip:
        src = _addr(data, inner[6], 4 if inner[1] == 4 else 16)
        dst = _addr(data, inner[7], 4 if inner[1] == 4 else 16)
    name = _PROTO.get(proto, f"IP proto {proto}")
    if proto in (6, 17, 136) and l4off >= 0 and l4off + 4 <= len(data):
        sport, dport = struct.unpack_from(">HH", data, l4off)
        text = f"{name} {src}:{sport} → {dst}:{dport}"
        if proto == 6 and l4off + 14 <= len(data):
            flags = data[l4off + 13]
            text += " [" + ", ".join(n for bit, n in _TCP_FLAGS if flags & bit) + "]"
        payload = l4[3] - l4[2]
        return text + (f" · {payload} bytes" if payload > 0 else "")
    if proto in (1, 58) and l4off >= 0 and l4off + 2 <= len(data):
        return f"{name} {src} → {dst} type {data[l4off]} code {data[l4off + 1]}"
    return f"{name} {src} → {dst}"


class Field(NamedTuple):
    depth: int
    name: str
    start: int
    end: int
    before: str         # value in the input ("" for a range)
    after: str          # value in the output
    change: str         # what happened: "address mapped", "checksum updated", "zeroed", "unchanged", ...


def changed_offsets(before: bytes, after: bytes) -> list[int]:
    """Offsets where the output's byte differs from the input's (bytes the output lacks: see trimmed)."""
    n = min(len(before), len(after))
    if before[:n] == after[:n]:
        return []
    return [i for i in range(n) if before[i] != after[i]]


def _range_change(before: bytes, after: bytes, start: int, end: int) -> str:
    a, b = before[start:end], after[start:min(end, len(after))]
    if len(b) < len(a):
        cut = len(a) - len(b)
        rest = "" if a[:len(b)] == b else (", the rest zeroed" if not any(b) else ", the rest changed")
        return f"trimmed ({cut:,} of {len(a):,} bytes cut){rest}"
    if a == b:
        return "unchanged" if any(a) or not a else "unchanged (all zero)"
    if not any(b):
        return f"zeroed ({len(a):,} bytes)"
    differing = sum(1 for x, y in zip(a, b) if x != y)
    return f"{differing:,} of {len(a):,} bytes changed"


def explain(before: Frame, after: Frame | None) -> list[Field]:
    """The fields of the input frame as the engine's walker sees them, each with what became of it."""
    data = before.data
    out = after.data if after is not None else data
    w = walk(data, before.linktype)
    status, label, ips, addrs, l4, csums, macs, blind, _quoted = w
    n = len(data)
    fields: list[Field] = []

    def add(depth, name, start, end, kind):
        start, end = min(start, n), min(end, n)
        if end <= start:
            return
        a, b = data[start:end], out[start:end]
        if kind == "address":
            va, vb = _addr(data, start, end - start), _addr(out, start, end - start) if len(b) == end - start else "—"
            change = "unchanged" if a == b else "address mapped"
        elif kind == "mac":
            va, vb = _mac(data, start), _mac(out, start) if len(b) == 6 else "—"
            change = "unchanged" if a == b else "MAC address mapped"
        elif kind == "checksum":
            va, vb = f"0x{bytes(a).hex()}", f"0x{bytes(b).hex()}" if len(b) == 2 else "—"
            change = "unchanged" if a == b else "checksum updated"
        elif kind == "number":
            va, vb = str(int.from_bytes(a, "big")), str(int.from_bytes(b, "big")) if len(b) == len(a) else "—"
            change = "unchanged" if a == b else "changed"
        else:
            va = vb = ""
            change = _range_change(data, out, start, end)
        fields.append(Field(depth, name, start, end, va, vb, change))

    link = LINKTYPE_NAMES.get(before.linktype, f"link type {before.linktype}")
    link_end = ips[0][0] if ips else (n if status == NON_IP else 0)
    if link_end:
        add(0, f"Link layer ({link})" + (f": {label}" if status == NON_IP else ""), 0, link_end, "range")
        for off in sorted(m for m in macs if m < link_end):
            add(1, "MAC address", off, off + 6, "mac")
    addr_at = {a[0]: a for a in addrs}
    cs_at = {c[0]: c for c in csums}
    listed = set()
    for k, ip in enumerate(ips):
        off, ver, hlen = ip[0], ip[1], ip[2]
        where = " (quoted in an ICMP error)" if ip[8] & 1 else " (tunnelled)" if ip[8] & 2 else ""
        add(0, f"IPv{ver} header{where}", off, off + hlen, "range")
        size = 4 if ver == 4 else 16
        for name, a_off in (("Source address", ip[6]), ("Destination address", ip[7])):
            add(1, name, a_off, a_off + size, "address")
            listed.add(a_off)
        for c in csums:
            if c[3] == "ipv4" and off <= c[0] < off + hlen:
                add(1, _CS_NAMES["ipv4"], c[0], c[0] + 2, "checksum")
                listed.add(c[0])
        nxt = ips[k + 1][0] if k + 1 < len(ips) else None
        if l4 is not None and l4[4] == k:
            proto, l4off, pay, pend = l4[0], l4[1], l4[2], l4[3]
            name = _PROTO.get(proto, f"protocol {proto}")
            if l4off >= 0 and pay > l4off:
                add(0, f"{name} header", l4off, pay, "range")
                if proto in (6, 17, 136) and l4off + 4 <= n:
                    add(1, "Source port", l4off, l4off + 2, "number")
                    add(1, "Destination port", l4off + 2, l4off + 4, "number")
                for c in csums:
                    if l4off <= c[0] < pay:
                        add(1, _CS_NAMES.get(c[3], "checksum"), c[0], c[0] + 2, "checksum")
                        listed.add(c[0])
            if pend > pay:
                add(0, f"{name} payload", pay, pend, "range")
        elif nxt is not None and nxt > off + hlen:
            add(0, "Encapsulation", off + hlen, nxt, "range")
    # Addresses and checksums the walker found elsewhere (DNS answers, DHCP, ARP, ICMPv6 options, tunnels).
    for a_off in sorted(addr_at):
        if a_off not in listed:
            a = addr_at[a_off]
            size = a[1] if a[2] in (-1, a[1] * 8) else (a[2] + 7) // 8
            add(1, "Address" + (" (prefix)" if a[2] not in (-1, a[1] * 8) else ""), a_off, a_off + size, "address")
    for c_off in sorted(cs_at):
        if c_off not in listed:
            add(1, _CS_NAMES.get(cs_at[c_off][3], "checksum"), c_off, c_off + 2, "checksum")
    covered = max((f.end for f in fields if f.depth == 0), default=0)
    if status == UNINSPECTABLE:
        stop = blind[0][0] if blind else covered
        if covered < stop:
            add(0, "Headers understood", covered, stop, "range")
        rest = _range_change(data, out, stop, n) if stop < n else ""
        fields.append(Field(0, f"Not inspected: {label}", stop, n, "", "",
                            ("zeroed after the last header understood" if rest.startswith("zeroed")
                             else "passed unchanged (let through uninspected)" if rest == "unchanged"
                             else rest) or "nothing after this point"))
        return _in_order(fields)
    for start, end, reason in blind:                # inside a payload: records the walker cannot read
        if start < min(end, n):
            fields.append(Field(1, f"Not readable: {reason}", start, min(end, n), "", "",
                                _range_change(data, out, start, min(end, n))))
    if covered < n:
        add(0, "Trailer (after the IP packet)" if ips else "Other bytes", covered, n, "range")
    if after is not None and len(out) > n:
        fields.append(Field(0, "Bytes only in the output", n, len(out), "", "", "added"))
    return _in_order(fields)


def _in_order(fields: list) -> list:
    """Each top-level field followed by its sub-fields in byte order; top-level fields in byte order."""
    groups: list = []
    for f in fields:
        if f.depth == 0 or not groups:
            groups.append([f, []])
        else:
            groups[-1][1].append(f)
    groups.sort(key=lambda g: (g[0].start, g[0].end))
    return [f for head, children in groups for f in [head] + sorted(children, key=lambda c: c.start)]


def change_words(fields: list) -> str:
    """A few words for the frame list: what happened to this frame."""
    counts: dict = {}
    for f in fields:
        change = f.change
        key = ("addresses mapped" if change == "address mapped" else
               "MACs mapped" if change == "MAC address mapped" else
               "checksums updated" if change == "checksum updated" else
               f"{f.name.lower()} zeroed" if change.startswith("zeroed") else
               f"{f.name.lower()} trimmed" if change.startswith("trimmed") else
               "zeroed: not inspectable" if change.startswith("frame zeroed") else
               "not inspected" if change.startswith("passed unchanged") else
               f"{f.name.lower()} partly zeroed" if f.name.endswith(("payload", "Trailer (after the IP packet)"))
               and change.endswith("bytes changed") else None)
        if key is not None and (f.depth > 0 or key.endswith(("zeroed", "trimmed", "inspectable", "inspected"))):
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return "unchanged"
    rank = {"addresses mapped": 0, "MACs mapped": 1, "checksums updated": 9}
    counts = dict(sorted(counts.items(), key=lambda item: rank.get(item[0], 5)))
    return " · ".join(f"{n} {k}" if k in ("addresses mapped", "MACs mapped", "checksums updated") else k
                      for k, n in counts.items())
