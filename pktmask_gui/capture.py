"""Streaming pcap / pcapng reader, the record layout and the pcapng helpers (the writer: capturewriter.py).

Hand-written on purpose: the known Python libraries fall short for a sanitizer (dpkt keeps only the
first pcapng interface and gives float timestamps, python-pcapng reads ~30x slower than a struct walk,
scapy copies comments and names into outputs). This module reads the file in 1 MiB chunks, walks the
records with precompiled ``struct.Struct`` objects at offsets, and yields plain tuples.

Records (see docs/ARCHITECTURE.md, "Records")::

    (data, linktype, ts, origlen, iface, block)

- packets: ``data`` the captured bytes, ``linktype >= 0``, ``ts`` the exact integer timestamp in the
  interface's units, ``origlen`` the wire length, ``iface`` the interface id local to its pcapng section,
  ``block`` ``None`` (pcap), ``(btype, options)`` (pcapng EPB 6 / SPB 3) or ``(2, options, drops)`` (PB).
  ``options`` are the raw bytes after the padded packet data (for an SPB: any bytes the block holds past
  its padded data, normally ``b""``), so that the writer reproduces the block exactly.
  Modified ("Kuznetsov", magic a1b2cd34) pcap: ``block`` is ``(0, extra)`` with the 8 extra header bytes.
- pcapng metadata blocks: ``data`` the raw block body, ``linktype`` ``META`` (-1), ``block`` the block type.

A pcap record whose timestamp fraction is one second or more (invalid, seen in the wild) gets a
``RawPcapTime`` ts: an ``int`` equal to the true time whose ``divmod`` by its unit gives back the original
fields, so that the round trip stays byte-exact.
"""
from __future__ import annotations

import os
import stat
import struct
from collections import namedtuple
from itertools import repeat

DATA, LINKTYPE, TS, ORIGLEN, IFACE, BLOCK = range(6)
META = -1

SHB, IDB, PB, SPB, NRB, ISB, EPB, DSB = 0x0A0D0D0A, 1, 2, 3, 4, 5, 6, 10
CB_COPY, CB_NOCOPY = 0x00000BAD, 0x40000BAD

MAX_CAPLEN = 262144             # 256 KiB, as Wireshark's standard maximum packet size
MAX_BLOCK = 16 * 1024 * 1024    # a pcapng block above 16 MiB is damage, not data
CHUNK = 1 << 20                 # read size
FLUSH = 1 << 20                 # the writer writes once this much is buffered
READ_AHEAD = True               # a compressed file is decompressed on a thread of its own (compression.ReadAhead)

_PCAP_MAGICS = {                # magic bytes -> (endian, ts unit, record header length)
    b"\xd4\xc3\xb2\xa1": ("<", 10 ** 6, 16),
    b"\xa1\xb2\xc3\xd4": (">", 10 ** 6, 16),
    b"\x4d\x3c\xb2\xa1": ("<", 10 ** 9, 16),
    b"\xa1\xb2\x3c\x4d": (">", 10 ** 9, 16),
    b"\x34\xcd\xb2\xa1": ("<", 10 ** 6, 24),   # modified pcap (Kuznetsov patches)
    b"\xa1\xb2\xcd\x34": (">", 10 ** 6, 24),
}
_SHB_MAGIC = b"\x0a\x0d\x0d\x0a"
_BOM = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}
_SECTION_LENGTH_UNKNOWN = 0xFFFFFFFFFFFFFFFF
_ZEROS = (b"", b"\0", b"\0\0", b"\0\0\0")

Interface = namedtuple("Interface", "linktype snaplen tsresol tsoffset")
Interface.__doc__ = """One capture interface: link type, snap length (0 = none), the raw if_tsresol byte
(6 = microseconds, 9 = nanoseconds; high bit set = 2^-n) and if_tsoffset in seconds."""


class _Structs:
    """Precompiled structs for one byte order."""

    def __init__(self, e: str):
        self.u16 = struct.Struct(e + "H")
        self.u32 = struct.Struct(e + "I")
        self.i64 = struct.Struct(e + "q")
        self.u64 = struct.Struct(e + "Q")
        self.head = struct.Struct(e + "II")            # block type, block length
        self.pcap_rec = struct.Struct(e + "IIII")      # sec, frac, caplen, origlen
        self.epb = struct.Struct(e + "IIIII")          # iface, ts high, ts low, caplen, origlen
        self.epb_out = struct.Struct(e + "IIIIIII")    # type, length + the EPB fields
        self.pb = struct.Struct(e + "HHIIII")          # iface, drops, ts high, ts low, caplen, origlen
        self.pb_out = struct.Struct(e + "IIHHIIII")
        self.spb_out = struct.Struct(e + "III")        # type, length, origlen
        self.opt = struct.Struct(e + "HH")


_STRUCTS = {"<": _Structs("<"), ">": _Structs(">")}


class CaptureError(Exception):
    """The capture cannot be read: damage, wrong format or an I/O failure, at a file offset."""

    def __init__(self, reason: str, offset: int = 0, located: bool = True):
        super().__init__(reason, offset)
        self.reason = reason
        self.offset = offset
        self.located = located      # False: the whole file is concerned (cannot open, empty, wrong format)
        self.compression = None     # "gzip" …: the offset is in the data of a file compressed so

    def __str__(self) -> str:
        if not self.located:
            return self.reason
        joiner = ", at" if self.reason.endswith(")") else " at"
        if self.compression:
            return (f"{self.reason}{joiner} byte {self.offset} of the decompressed capture (the file is "
                    f"{self.compression}-compressed)")
        return f"{self.reason}{joiner} file offset {self.offset}"


class RawPcapTime(int):
    """A pcap timestamp whose fraction field is >= its unit (invalid, but found in real files).

    Its int value is the true time ``sec * unit + frac``; ``divmod(ts, unit)`` gives back the original
    ``(sec, frac)`` fields, so that the writer reproduces the record byte for byte. Arithmetic on it
    yields plain ints.
    """

    def __new__(cls, sec: int, frac: int, unit: int):
        self = int.__new__(cls, sec * unit + frac)
        self.raw = (sec, frac, unit)
        return self

    def __divmod__(self, other):
        if other == self.raw[2]:
            return self.raw[0], self.raw[1]
        return int.__divmod__(self, other)

    def __getnewargs__(self):
        return self.raw


# ---------------------------------------------------------------------------------------------------
# pcapng helpers (bodies are in the section's byte order)

def section_endian(shb_body: bytes) -> str:
    """Byte order of a section from its SHB body: "<" or ">"."""
    try:
        return _BOM[bytes(shb_body[:4])]
    except KeyError:
        raise ValueError(f"bad pcapng byte-order magic {bytes(shb_body[:4]).hex()}") from None


def parse_options(buf: bytes, endian: str) -> list:
    """pcapng options -> [(code, value bytes)], up to opt_endofopt or the end of ``buf``."""
    opt = _STRUCTS[endian].opt
    out = []
    off, end = 0, len(buf)
    while off + 4 <= end:
        code, length = opt.unpack_from(buf, off)
        if code == 0:
            break
        out.append((code, bytes(buf[off + 4:off + 4 + length])))
        off += 4 + ((length + 3) & ~3)
    return out


def build_options(options, endian: str) -> bytes:
    """[(code, value bytes)] -> padded pcapng options, with opt_endofopt when not empty."""
    if not options:
        return b""
    opt = _STRUCTS[endian].opt
    parts = []
    for code, value in options:
        parts += (opt.pack(code, len(value)), value, _ZEROS[-len(value) & 3])
    parts.append(opt.pack(0, 0))
    return b"".join(parts)


def idb_info(body: bytes, endian: str) -> Interface:
    """Interface description from an IDB body (link type, snaplen, if_tsresol, if_tsoffset)."""
    s = _STRUCTS[endian]
    linktype = s.u16.unpack_from(body, 0)[0]
    snaplen = s.u32.unpack_from(body, 4)[0]
    tsresol, tsoffset = 6, 0
    for code, value in parse_options(body[8:], endian):
        if code == 9 and value:
            tsresol = value[0]
        elif code == 14 and len(value) >= 8:
            tsoffset = s.i64.unpack_from(value, 0)[0]
    return Interface(linktype, snaplen, tsresol, tsoffset)


def ts_to_ns(ts: int, tsresol: int = 6, tsoffset: int = 0) -> int:
    """Exact integer nanoseconds since the epoch for a record timestamp (for display and comparison).

    ``tsresol`` is the raw if_tsresol byte (pcap: 6 for microseconds, 9 for nanoseconds). Decimal units
    down to 10^-9 convert exactly; finer decimal units and binary units (2^-n) round to the nearest
    nanosecond, halves up. ``tsoffset`` is if_tsoffset in seconds.
    """
    if tsresol & 0x80:
        n = tsresol & 0x7F
        ns = (ts * 10 ** 9 + (1 << (n - 1))) >> n if n else ts * 10 ** 9
    elif tsresol <= 9:
        ns = ts * 10 ** (9 - tsresol)
    else:
        div = 10 ** (tsresol - 9)
        ns = (ts + div // 2) // div
    return ns + tsoffset * 10 ** 9


def make_pcap_header(linktype: int = 1, snaplen: int = MAX_CAPLEN, nanos: bool = False,
                     endian: str = "<") -> bytes:
    """A classic pcap file header (version 2.4)."""
    return struct.pack(endian + "IHHiIII", 0xA1B23C4D if nanos else 0xA1B2C3D4, 2, 4, 0, 0,
                       snaplen, linktype)


def make_shb_body(endian: str = "<", options: bytes = b"", section_length: int = -1) -> bytes:
    """An SHB body (byte-order magic, version 1.0, section length) in ``endian``."""
    return struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, section_length) + options


def make_idb_body(linktype: int = 1, snaplen: int = 0, endian: str = "<", options: bytes = b"") -> bytes:
    """An IDB body; pass ``build_options([(9, bytes([9]))], endian)`` for nanosecond timestamps."""
    return struct.pack(endian + "HHI", linktype, 0, snaplen) + options


# ---------------------------------------------------------------------------------------------------
# reader

def _open_regular(path) -> tuple:
    """Open ``path`` for reading, refusing anything but a regular file without blocking on a fifo."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CaptureError(f"cannot open the file: {exc.strerror or exc}", 0, located=False) from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a fifo" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise CaptureError(f"not a capture file: the path is {kind}", 0, located=False)
    # O_NONBLOCK: should the path have become a fifo since the stat, open must not hang
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise CaptureError(f"cannot open the file: {exc.strerror or exc}", 0, located=False) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CaptureError("not a capture file: the path is not a regular file", 0, located=False)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


class RawBatch(list):
    """A pcap reader's batch: its records, plus where they lie back to back in the file's bytes (``raw``
    from ``start``, each ``len(header) == 24``-byte file's record header followed by its data), so that
    the writer can copy the records a stage passed through unchanged without packing them again."""

    __slots__ = ("raw", "start", "header")


class CaptureReader:
    """Streaming reader of one pcap or pcapng file; see the module docstring for the records."""

    def __init__(self, path, fileobj=None, compressed: str | None = None):
        """``fileobj``: read this object (``read(n)``, ``close()``) instead of opening ``path``;
        ``compressed``: its data is compressed so (known: not looked at), and a read may return less than
        asked for before the end. A gzip, zstd or lz4 file (told by its first bytes) is read through a
        decompressor: ``compression`` names it; ``size`` and ``position`` count compressed bytes."""
        self.path = path
        self.format: str | None = None     # "pcap" | "pcapng" once the header is read
        self.pcap_header = None
        self.section_length = None  # pcapng: the first section's length, when its header gives one
        self.offset = 0
        self.packets = 0            # packet records yielded so far
        self.compression = None
        self._fh, self.size = _open_regular(path) if fileobj is None else (fileobj, 0)
        self._sections = []         # pcapng: one list of Interface per section
        self._counts = {"snaplen": 0, "origlen": 0, "fraction": 0}
        self._cuts = []             # (what, offset, packets kept) of a last record cut short: see warnings
        self.stop_at = None         # a batch never reads a record that starts at or past this offset
        self._started = False
        try:
            from .compression import DecompressingReader, ReadAhead, detect
            first = b"" if compressed else self._read(CHUNK)
            self.compression = compressed or detect(first)
            if self.compression:
                self._fh = DecompressingReader(self._fh, self.compression, first, self.size)
                if fileobj is None and READ_AHEAD:
                    self._fh = ReadAhead(self._fh)
                first = self._read(CHUNK)
            self._buf = first
            self._eof = len(self._buf) < CHUNK
            self._read_file_header()
        except CaptureError as exc:
            exc = self._located(exc)
            self.close()
            raise exc from None
        except BaseException:
            self.close()
            raise

    # context manager ------------------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    # public views ---------------------------------------------------------------------------------
    @property
    def position(self) -> int:
        """Bytes of the file read so far (compressed bytes for a compressed file): progress."""
        return self._fh.position if self.compression and self._fh is not None else self.offset

    @property
    def warnings(self) -> list:
        out = []
        counts = self._counts
        if counts["snaplen"]:
            out.append(f"{counts['snaplen']} packet(s) have a captured length above the snap length "
                       f"of their interface; kept as they are")
        if counts["origlen"]:
            out.append(f"{counts['origlen']} packet(s) have a captured length above their original "
                       f"length; kept as they are")
        if counts["fraction"]:
            out.append(f"{counts['fraction']} packet(s) have an invalid timestamp (fraction of a second "
                       f"of one second or more); kept as they are")
        if self.compression and self._fh is not None:
            out += self._fh.notes
        return out + [self.cut_note(*cut) for cut in self._cuts]

    def cut_note(self, what: str, offset: int, kept: int) -> str:
        where = f"byte {offset} of the decompressed data" if self.compression else f"offset {offset}"
        return f"file is cut short inside its last {what} at {where}: {kept} complete packets kept"

    def interfaces(self, section: int = 0) -> list:
        """Interfaces of a section known so far (pcap: the one interface of the file header)."""
        return list(self._sections[section]) if section < len(self._sections) else []

    @property
    def interface_table(self) -> list:
        """[[Interface, ...] per section]; grows as the reader meets IDBs."""
        return [list(s) for s in self._sections]

    # internals ------------------------------------------------------------------------------------
    def _read(self, n: int) -> bytes:
        try:
            return self._fh.read(n)
        except OSError as exc:
            raise CaptureError(f"cannot read the file: {exc.strerror or exc}", self.offset) from None

    def _more(self, buf: bytes, pos: int, need: int):
        """Keep ``buf[pos:]`` and append file data so that ``need`` bytes are available (unless EOF)."""
        rest = buf[pos:]
        if self._eof:
            return rest
        want = max(CHUNK, need - len(rest))
        chunk = self._read(want)
        if len(chunk) < want:
            self._eof = True
        return rest + chunk if rest else chunk

    def _read_file_header(self) -> None:
        buf = self._buf
        packed = self.compression
        if not buf:
            raise self._fh.no_data() if packed else CaptureError("the file is empty (0 bytes)", 0, located=False)
        magic = buf[:4]
        if len(buf) < 4 and any(m.startswith(buf) for m in (*_PCAP_MAGICS, _SHB_MAGIC)):
            raise CaptureError(f"the file header is cut short: the file has only {len(buf)} bytes", 0)
        if magic in _PCAP_MAGICS:
            if len(buf) < 24:
                raise CaptureError(f"the pcap file header is cut short: {len(buf)} of 24 bytes", 0)
            self.format = "pcap"
            self.pcap_header = buf[:24]
            e, unit, hl = _PCAP_MAGICS[magic]
            snaplen, raw_linktype = struct.unpack_from(e + "II", buf, 16)
            self.linktype = raw_linktype & 0xFFFF
            self._pcap = (e, unit, hl, snaplen)
            self._sections.append([Interface(self.linktype, snaplen, 6 if unit == 10 ** 6 else 9, 0)])
            self._buf = buf[24:]
            self._base = 24
        elif magic == _SHB_MAGIC:
            if len(buf) < 28:
                raise CaptureError(f"the pcapng section header is cut short: {len(buf)} of at least "
                                   f"28 bytes", 0)
            if bytes(buf[8:12]) not in _BOM:
                raise CaptureError(f"the pcapng section header has a bad byte-order magic "
                                   f"{bytes(buf[8:12]).hex()}", 0)
            self.format = "pcapng"
            self._base = 0
            length = struct.unpack_from(_BOM[bytes(buf[8:12])] + "q", buf, 16)[0]
            self.section_length = None if length == -1 else length
        else:
            shown = " ".join(f"{b:02x}" for b in magic)
            if packed:
                raise CaptureError(f"the {packed}-compressed file does not hold a pcap or pcapng capture "
                                   f"(its data starts with the bytes {shown})", 0, located=False)
            raise CaptureError(f"not a pcap or pcapng capture (it starts with the bytes {shown})", 0)

    def batches(self, max_records: int = 2048):
        """Generator of record lists (at most ``max_records`` each), streaming through the file."""
        if self._started:
            raise RuntimeError("batches() can be iterated only once per reader")
        self._started = True
        if self.format == "pcap":
            batches = self._pcap_batches(max_records)
        else:
            batches = self._pcapng_batches(max_records)
        return self._compressed(batches) if self.compression else batches

    def _compressed(self, batches):
        """A compressed file's batches, whose errors the decompressor explains (DecompressingReader.explain)."""
        try:
            yield from batches
        except CaptureError as exc:
            raise self._located(exc) from None

    def _located(self, exc: CaptureError) -> CaptureError:
        return self._fh.explain(exc) if self.compression and self._fh is not None else exc

    def frame_spans(self, max_records: int = 2048):
        """pcap only: generator of ``(buffer, starts, ends)``, the frames of up to ``max_records`` records
        as ``buffer[starts[i]:ends[i]]``, without a record object each: for a reader that only compares
        frame bytes (the self-check reading the output back). The same limits as batches(): a record
        above MAX_CAPLEN is an error, one cut short at the end of the file ends it (and is noted)."""
        if self._started:
            raise RuntimeError("frame_spans() can be iterated only once per reader")
        if self.format != "pcap":
            raise ValueError("frame_spans() reads pcap files only")
        self._started = True
        spans = self._pcap_spans(max_records)
        return self._compressed(spans) if self.compression else spans

    def _pcap_spans(self, max_records: int):
        e, _unit, hl, _snap = self._pcap
        caplen_at = _STRUCTS[e].u32.unpack_from
        buf, base, pos = self._buf, self._base, 0
        self._buf = None
        end = len(buf)
        while True:
            if pos + hl > end:
                buf, base, pos, end = self._refill(buf, base, pos, hl)
                if hl > end:
                    break
            starts, ends = [], []
            at_start, at_end = starts.append, ends.append
            last = end - hl
            for _ in repeat(None, max_records):
                if pos > last:
                    break
                at = pos + hl
                nxt = at + caplen_at(buf, pos + 8)[0]
                if nxt > end:
                    caplen = nxt - at
                    if caplen > MAX_CAPLEN:
                        raise CaptureError(f"packet {self.packets + len(starts) + 1} claims a captured "
                                           f"length of {caplen} bytes, above the {MAX_CAPLEN}-byte limit",
                                           base + pos)
                    if starts:
                        break               # the next run refills the buffer
                    buf = self._more(buf, pos, hl + caplen)
                    base += pos
                    pos, end = 0, len(buf)
                    last = end - hl
                    if hl + caplen > end:
                        self._cut_short("packet", base, self.packets)
                        self.offset = base + pos
                        return
                    continue
                if nxt - at > MAX_CAPLEN:
                    raise CaptureError(f"packet {self.packets + len(starts) + 1} claims a captured length "
                                       f"of {nxt - at} bytes, above the {MAX_CAPLEN}-byte limit", base + pos)
                at_start(at)
                at_end(nxt)
                pos = nxt
            self.packets += len(starts)
            self.offset = base + pos
            if starts:
                yield buf, starts, ends
        self.offset = base + pos

    def _cut_short(self, what: str, offset: int, kept: int) -> None:
        self._cuts.append((what, offset, kept))

    def _refill(self, buf: bytes, base: int, pos: int, hl: int) -> tuple:
        """A pcap reader's next buffer, from ``pos`` of ``buf``: ``(buf, base, 0, len(buf))``; fewer than
        ``hl`` bytes left in it means the end of the file (and a last record cut short is noted)."""
        buf = self._more(buf, pos, hl)
        base += pos
        if 0 < len(buf) < hl:
            self._cut_short("packet", base, self.packets)
        return buf, base, 0, len(buf)

    def _pcap_batches(self, max_records: int):
        e, unit, hl, snap = self._pcap
        unpack_from = _STRUCTS[e].pcap_rec.unpack_from
        linktype = self.linktype
        modified = hl == 24
        # records above this caplen (or all records of a modified pcap) take the checked slow path
        fast_cap = -1 if modified else min(snap, MAX_CAPLEN) if snap else MAX_CAPLEN
        counts = self._counts
        header = self.pcap_header
        buf, base, pos = self._buf, self._base, 0
        self._buf = None
        end = len(buf)
        done = False
        last_sec = sec_base = -1
        while not done:
            # A batch ends where the buffer does: its records then lie back to back in one buffer, and
            # the writer can copy the ones that come out unchanged as spans of it (RawBatch).
            batch = RawBatch()
            append = batch.append
            if pos + hl > end:
                buf, base, pos, end = self._refill(buf, base, pos, hl)
                if hl > end:
                    break
            start = pos
            last = end - hl                 # the last position a record header fits at
            if self.stop_at is not None and self.stop_at - base - 1 < last:
                last = self.stop_at - base - 1      # records from there on wait for the next batch
                if last < pos:
                    raise RuntimeError("a batch was asked for at the reader's stop")
            for _ in repeat(None, max_records):
                if pos > last:
                    break                   # the next batch refills the buffer
                sec, frac, caplen, origlen = unpack_from(buf, pos)
                at = pos + hl
                nxt = at + caplen
                if caplen > origlen or nxt > end or frac >= unit or caplen > fast_cap:
                    number = self.packets + len(batch) + 1
                    if caplen > MAX_CAPLEN:
                        raise CaptureError(f"packet {number} claims a captured length of {caplen} bytes, "
                                           f"above the {MAX_CAPLEN}-byte limit", base + pos)
                    if nxt > end:
                        if batch:
                            break           # the next batch refills the buffer
                        buf = self._more(buf, pos, hl + caplen)
                        base += pos
                        pos, end = 0, len(buf)
                        start, last = 0, end - hl
                        if self.stop_at is not None and self.stop_at - base - 1 < last:
                            last = self.stop_at - base - 1
                        at, nxt = hl, hl + caplen
                        if nxt > end:
                            if caplen > origlen or (snap and caplen > snap):
                                raise CaptureError(f"packet {number} claims a captured length of "
                                                   f"{caplen} bytes, beyond the end of the file",
                                                   base + pos)
                            self._cut_short("packet", base, number - 1)
                            done = True
                            break
                    if snap and caplen > snap:
                        counts["snaplen"] += 1
                    if caplen > origlen:
                        counts["origlen"] += 1
                    if frac >= unit:
                        counts["fraction"] += 1
                        ts = RawPcapTime(sec, frac, unit)
                    else:
                        ts = sec * unit + frac
                    append((buf[at:nxt], linktype, ts, origlen, 0,
                            (0, buf[pos + 16:pos + 24]) if modified else None))
                    pos = nxt
                    continue
                if sec != last_sec:         # one multiplication per second of capture, not per packet
                    last_sec, sec_base = sec, sec * unit
                append((buf[at:nxt], linktype, sec_base + frac, origlen, 0, None))
                pos = nxt
            else:
                if pos == end and self._eof:
                    done = True
            self.packets += len(batch)
            self.offset = base + pos
            if batch:
                batch.raw, batch.start, batch.header = buf, start, header
                yield batch
        self.offset = base + pos

    def _pcapng_batches(self, max_records: int):
        buf, base, pos = self._buf, self._base, 0
        self._buf = None
        end = len(buf)
        e = "<"
        s = _STRUCTS[e]
        head_unpack, u32_unpack, epb_unpack = s.head.unpack_from, s.u32.unpack_from, s.epb.unpack_from
        counts = self._counts
        ifaces = []                 # Interface per IDB of the current section
        ltsnap = []                 # (linktype, snaplen) per IDB, for the packet path
        npk = 0                     # packets so far
        done = False
        while not done:
            batch = []
            append = batch.append
            stop = (1 << 62) if self.stop_at is None else self.stop_at
            if base + pos >= stop:
                raise RuntimeError("a batch was asked for at the reader's stop")
            for _ in repeat(None, max_records):
                if base + pos >= stop:
                    break                   # records from there on wait for the next batch
                if pos + 12 > end:
                    buf = self._more(buf, pos, 12)
                    base += pos
                    pos, end = 0, len(buf)
                    if end < 12:
                        if end:
                            self._cut_short("block", base, npk)
                        done = True
                        break
                btype, blen = head_unpack(buf, pos)
                is_shb = btype == SHB
                if is_shb:
                    bom = buf[pos + 8:pos + 12]
                    if bom not in _BOM:
                        raise CaptureError(f"a pcapng section header has a bad byte-order magic "
                                           f"{bom.hex()}", base + pos)
                    e = _BOM[bom]
                    s = _STRUCTS[e]
                    head_unpack, u32_unpack = s.head.unpack_from, s.u32.unpack_from
                    epb_unpack = s.epb.unpack_from
                    btype, blen = head_unpack(buf, pos)
                if blen < 12 or blen & 3 or blen > MAX_BLOCK:
                    if blen <= MAX_BLOCK:
                        raise CaptureError(f"a pcapng block (type 0x{btype:x}) has an invalid length "
                                           f"of {blen} bytes", base + pos)
                    raise CaptureError(f"a pcapng block (type 0x{btype:x}) claims a length of {blen} "
                                       f"bytes, above the {MAX_BLOCK}-byte limit", base + pos)
                nxt = pos + blen
                if nxt > end:
                    buf = self._more(buf, pos, blen)
                    base += pos
                    pos, end = 0, len(buf)
                    nxt = blen
                    if nxt > end:
                        if is_shb and not (base and self.compression and self._fh.truncated):
                            raise CaptureError(f"a pcapng section header is cut short: {end} of "
                                               f"{blen} bytes", base)
                        self._cut_short("block", base, npk)
                        done = True
                        break
                if u32_unpack(buf, nxt - 4)[0] != blen:
                    raise CaptureError(f"a pcapng block (type 0x{btype:x}) has a trailing length of "
                                       f"{u32_unpack(buf, nxt - 4)[0]} bytes that does not match its "
                                       f"leading length of {blen} bytes", base + pos)
                if btype == EPB or btype == PB:
                    if blen < 32:
                        raise CaptureError(f"a pcapng packet block is too short ({blen} bytes)", base + pos)
                    if btype == EPB:
                        iface, tsh, tsl, caplen, origlen = epb_unpack(buf, pos + 8)
                    else:
                        iface, drops, tsh, tsl, caplen, origlen = s.pb.unpack_from(buf, pos + 8)
                    if caplen > blen - 32 or caplen > MAX_CAPLEN or iface >= len(ltsnap):
                        self._packet_damage(caplen, blen, iface, ltsnap, base + pos, npk + 1)
                    linktype, snap = ltsnap[iface]
                    if caplen > origlen:
                        counts["origlen"] += 1
                    if snap and caplen > snap:
                        counts["snaplen"] += 1
                    data_end = pos + 28 + caplen
                    opt_start = data_end + (-caplen & 3)
                    options = buf[opt_start:nxt - 4] if opt_start < nxt - 4 else b""
                    append((buf[pos + 28:data_end], linktype, (tsh << 32) | tsl, origlen, iface,
                            (6, options) if btype == EPB else (2, options, drops)))
                    npk += 1
                elif btype == SPB:
                    if blen < 16:
                        raise CaptureError(f"a pcapng simple packet block is too short ({blen} bytes)",
                                           base + pos)
                    if not ltsnap:
                        raise CaptureError(f"packet {npk + 1} (a simple packet block) comes before "
                                           f"any interface of its section",
                                           base + pos)
                    origlen = u32_unpack(buf, pos + 8)[0]
                    linktype, snap = ltsnap[0]
                    caplen = min(origlen, blen - 16)
                    if snap and snap < caplen:
                        caplen = snap
                    data_end = pos + 12 + caplen
                    opt_start = data_end + (-caplen & 3)
                    options = buf[opt_start:nxt - 4] if opt_start < nxt - 4 else b""
                    append((buf[pos + 12:data_end], linktype, 0, origlen, 0, (3, options)))
                    npk += 1
                else:
                    body = buf[pos + 8:nxt - 4]
                    if is_shb:
                        if blen < 28:
                            raise CaptureError(f"a pcapng section header is too short ({blen} bytes)",
                                               base + pos)
                        ifaces, ltsnap = [], []
                        self._sections.append(ifaces)
                    elif btype == IDB:
                        if blen < 20:
                            raise CaptureError(f"a pcapng interface description block is too short "
                                               f"({blen} bytes)", base + pos)
                        ifaces.append(idb_info(body, e))
                        ltsnap.append(ifaces[-1][:2])
                    append((body, META, 0, 0, 0, btype))
                pos = nxt
            else:
                if pos == end and self._eof:
                    done = True
            self.packets = npk
            self.offset = base + pos
            if batch:
                yield batch
        self.offset = base + pos

    @staticmethod
    def _packet_damage(caplen, blen, iface, ifaces, offset, number):
        if caplen > MAX_CAPLEN:
            raise CaptureError(f"packet {number} claims a captured length of {caplen} bytes, above the "
                               f"{MAX_CAPLEN}-byte limit", offset)
        if caplen > blen - 32:
            raise CaptureError(f"packet {number} claims a captured length of {caplen} bytes, more than "
                               f"its {blen}-byte block holds", offset)
        raise CaptureError(f"packet {number} refers to interface {iface}, which is not defined in its "
                           f"section ({len(ifaces)} interface(s) so far)", offset)
