"""The capture writer: records back to pcap or pcapng, byte-identical where nothing was changed.

The reader's counterpart (``capture.py`` holds the reader, the record layout and the pcapng helpers both
use). Streaming: output goes out in chunks of about 1 MiB; runs of unchanged pcap records are copied from
the reader's buffer as spans (``write_batch(records, source)``), not packed again record by record.
"""
from __future__ import annotations

import struct

# the formats' structs and magic numbers are the reader's (one definition of each)
from .capture import (_PCAP_MAGICS, _SECTION_LENGTH_UNKNOWN, _STRUCTS, _ZEROS, BLOCK, EPB, FLUSH, LINKTYPE, PB,
                      SHB, SPB, make_pcap_header, section_endian)


class CaptureWriter:
    """Writes records back in the reader's format: byte-identical when nothing was changed.

    pcap: ``pcap_header`` (the reader's 24 raw bytes) decides byte order, unit and link type; without
    it, a little-endian microsecond header with the first record's link type is written. pcapng: the
    records must start with an SHB; each section's byte order comes from its SHB body, and a section
    length the input had is patched on close (or at the next SHB), since stages may drop records.
    Writes go out in chunks of about 1 MiB; ``close()`` flushes but does not close ``fileobj``.
    """

    def __init__(self, fileobj, fmt: str, pcap_header: bytes | None = None):
        if fmt not in ("pcap", "pcapng"):
            raise ValueError(f"unknown capture format {fmt!r}")
        self._fh = fileobj
        self.format = fmt
        self._out = bytearray()
        self._flushed = 0           # bytes handed to fileobj so far
        self._closed = False
        try:
            self._seekable = fileobj.seekable()
            self._origin = fileobj.tell() if self._seekable else 0
        except (AttributeError, OSError):
            self._seekable, self._origin = False, 0
        self._header = pcap_header
        if fmt == "pcap" and pcap_header is not None:
            self._start_pcap(bytes(pcap_header))
        self._structs = _STRUCTS["<"]
        self._patch = None          # (position of the section length field, section start, endian)

    @property
    def bytes_written(self) -> int:
        return self._flushed + len(self._out)

    @property
    def bytes_flushed(self) -> int:
        """Bytes handed to the file object so far."""
        return self._flushed

    def _start_pcap(self, header: bytes) -> None:
        if len(header) != 24 or header[:4] not in _PCAP_MAGICS:
            raise ValueError("pcap_header must be the 24-byte header of a pcap file")
        e, self._unit, hl = _PCAP_MAGICS[header[:4]]
        self._modified = hl == 24
        self._rec_pack = _STRUCTS[e].pcap_rec.pack
        self._out += header
        self._header = header

    def write_batch(self, records, source=None) -> None:
        """Append records. ``source``: the reader's batch these records came from (through stages that
        keep the order); those of them passed on unchanged are copied as the reader's bytes."""
        if self._closed:
            raise ValueError("write to a closed CaptureWriter")
        if self.format == "pcap":
            if not (source is not None and getattr(source, "raw", None) is not None
                    and source.header == self._header and self._copy_spans(records, source)):
                self._write_pcap(records)
        else:
            self._write_pcapng(records)
        if len(self._out) >= FLUSH:
            self._flush()

    def _write_pcap(self, records) -> None:
        if self._header is None:
            if not records:
                return
            self._start_pcap(make_pcap_header(records[0][LINKTYPE]))
        out, unit, pack = self._out, self._unit, self._rec_pack
        try:
            if self._modified:
                for data, _lt, ts, origlen, _if, block in records:
                    sec, frac = divmod(ts, unit)
                    out += pack(sec, frac, len(data), origlen)
                    out += block[1] if block and block[0] == 0 else b"\0" * 8
                    out += data
            else:
                for data, _lt, ts, origlen, _if, _b in records:
                    sec, frac = divmod(ts, unit)
                    out += pack(sec, frac, len(data), origlen)
                    out += data
        except struct.error as exc:
            raise ValueError(f"a record does not fit a pcap record header: {exc}") from None

    def _copy_spans(self, records, source) -> bool:
        """Write ``records`` as runs of the source's bytes, if every one of them is a record of ``source``
        (the same object, in order; others dropped): else write nothing and return False."""
        raw, pos = source.raw, source.start
        hl = 24 if self._modified else 16           # record header length
        spans = []
        run = pos
        k, n = 0, len(source)
        drops = n - len(records)                    # source records missing from the output
        for rec in records:
            while k < n:
                s = source[k]
                k += 1
                size = hl + len(s[0])
                if s is rec:
                    pos += size
                    break
                drops -= 1
                if drops < 0:
                    return False                    # more missing than dropped: rec is new (rewritten)
                if run < pos:                       # s was dropped: the run before it ends here
                    spans.append((run, pos))
                pos += size
                run = pos
            else:
                return False                        # a new or reordered record
        if run < pos:
            spans.append((run, pos))
        view = memoryview(raw)
        out = self._out
        for a, b in spans:
            out += view[a:b]
        view.release()
        return True

    def _write_pcapng(self, records) -> None:
        if self._patch is None and not self._flushed and not self._out and records \
                and records[0][BLOCK] != SHB:
            raise ValueError("a pcapng output must start with a section header block (SHB) record")
        out = self._out
        s = self._structs
        epb_pack, u32_pack = s.epb_out.pack, s.u32.pack
        for data, linktype, ts, origlen, iface, block in records:
            if linktype >= 0:
                btype = block[0] if block else EPB
                caplen = len(data)
                pad = _ZEROS[-caplen & 3]
                options = block[1] if block else b""
                if btype == EPB or btype == 0:
                    blen = 32 + caplen + len(pad) + len(options)
                    out += epb_pack(EPB, blen, iface, ts >> 32, ts & 0xFFFFFFFF, caplen, origlen)
                elif btype == SPB:
                    blen = 16 + caplen + len(pad) + len(options)
                    out += s.spb_out.pack(SPB, blen, origlen)
                elif btype == PB:
                    blen = 32 + caplen + len(pad) + len(options)
                    out += s.pb_out.pack(PB, blen, iface, block[2], ts >> 32, ts & 0xFFFFFFFF, caplen,
                                         origlen)
                else:
                    raise ValueError(f"unknown packet block type {btype}")
                out += data
                out += pad
                out += options
                out += u32_pack(blen)
            else:
                body = data
                pad = _ZEROS[-len(body) & 3]
                if block == SHB:
                    self._end_section()
                    out = self._out             # _end_section may have flushed: a new buffer
                    e = section_endian(body)
                    s = self._structs = _STRUCTS[e]
                    epb_pack, u32_pack = s.epb_out.pack, s.u32.pack
                    if s.u64.unpack_from(body, 8)[0] != _SECTION_LENGTH_UNKNOWN:
                        field = self.bytes_written + 16         # the field sits 16 bytes into the SHB
                        if self._seekable:
                            self._patch = (field, field - 4 + len(body) + len(pad), e)
                        else:   # cannot seek back to patch it: say "unknown", as the format allows
                            body = body[:8] + s.i64.pack(-1) + body[16:]
                blen = 12 + len(body) + len(pad)
                out += s.head.pack(block, blen)
                out += body
                out += pad
                out += u32_pack(blen)

    def _end_section(self) -> None:
        """Write the real length of the section that ends here, where the input had one."""
        if self._patch is None:
            return
        field, start, e = self._patch
        self._patch = None
        value = _STRUCTS[e].i64.pack(self.bytes_written - start)
        if field >= self._flushed:
            at = field - self._flushed
            self._out[at:at + 8] = value
        else:
            self._flush()
            self._fh.seek(self._origin + field)
            self._fh.write(value)
            self._fh.seek(self._origin + self._flushed)

    def _flush(self) -> None:
        if self._out:
            self._fh.write(self._out)
            self._flushed += len(self._out)
            self._out = bytearray()

    def close(self) -> None:
        """Finish the output (section length, buffered data); ``fileobj`` stays open."""
        if self._closed:
            return
        if self.format == "pcap" and self._header is None:
            self._start_pcap(make_pcap_header())
        if self.format == "pcapng":
            self._end_section()
        self._flush()
        self._closed = True
