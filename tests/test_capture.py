"""capture.py: streaming pcap / pcapng reading and writing, damage, warnings, memory."""
from __future__ import annotations

import io
import os
import shutil
import signal
import struct
import subprocess
import tracemalloc

import pytest
from helpers import CORPUS, leftovers, sample_frames, settings_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pktmask_gui import capture
from pktmask_gui.capture import (BLOCK, DATA, EPB, IDB, IFACE, LINKTYPE, META, ORIGLEN, SHB, TS, CaptureError,
                                 CaptureReader, Interface, RawPcapTime, build_options, idb_info, make_idb_body,
                                 make_pcap_header, make_shb_body, parse_options, section_endian, ts_to_ns)
from pktmask_gui.capturewriter import CaptureWriter
from pktmask_gui.pipeline import Job, run_job
from pktmask_gui.samplegen import generate

TSHARK = shutil.which("tshark")
CORPUS_FILES = sorted(p.name for p in CORPUS.glob("*.pcap*")) if CORPUS.is_dir() else []


# --- helpers: captures built by hand, independent of the writer -------------------------------------

def pcap_file(records, e="<", nanos=False, linktype=1, snaplen=65535, magic=None):
    """records: (sec, frac, data, origlen) or (sec, frac, data, origlen, caplen_override)."""
    if magic is None:
        magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for rec in records:
        sec, frac, data, origlen = rec[:4]
        caplen = rec[4] if len(rec) > 4 else len(data)
        out.append(struct.pack(e + "IIII", sec, frac, caplen, origlen) + data)
    return b"".join(out)


def opt(e, code, value):
    return struct.pack(e + "HH", code, len(value)) + value + b"\0" * (-len(value) & 3)


def opts(e, *pairs):
    return b"".join(opt(e, c, v) for c, v in pairs) + struct.pack(e + "HH", 0, 0) if pairs else b""


def block(e, btype, body):
    body += b"\0" * (-len(body) & 3)
    return struct.pack(e + "II", btype, len(body) + 12) + body + struct.pack(e + "I", len(body) + 12)


def shb(e, section_length=-1, options=b""):
    return block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, section_length) + options)


def idb(e, linktype=1, snaplen=0, options=b""):
    return block(e, 1, struct.pack(e + "HHI", linktype, 0, snaplen) + options)


def epb(e, iface, ts, data, origlen=None, options=b""):
    pad = b"\0" * (-len(data) & 3)
    return block(e, 6, struct.pack(e + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data),
                                   len(data) if origlen is None else origlen) + data + pad + options)


def spb(e, data, origlen):
    return block(e, 3, struct.pack(e + "I", origlen) + data)


def pb(e, iface, drops, ts, data, options=b""):
    pad = b"\0" * (-len(data) & 3)
    return block(e, 2, struct.pack(e + "HHIIII", iface, drops, ts >> 32, ts & 0xFFFFFFFF, len(data),
                                   len(data)) + data + pad + options)


def frame(n, size=60):
    return (n.to_bytes(4, "big") * (size // 4 + 1))[:size]


def read_all(path):
    with CaptureReader(path) as reader:
        records = [r for batch in reader.batches() for r in batch]
        return records, reader


def round_trip(path, out_path=None, keep=lambda r: True):
    out = io.BytesIO() if out_path is None else open(out_path, "w+b")  # noqa: SIM115 (closed below, or a BytesIO)
    with CaptureReader(path) as reader:
        writer = CaptureWriter(out, reader.format, reader.pcap_header)
        for batch in reader.batches():
            writer.write_batch([r for r in batch if keep(r)])
        writer.close()
    out.seek(0)
    data = out.read()
    out.close()
    return data


def write(workdir, name, data):
    path = workdir / name
    path.write_bytes(data)
    return path


def ns_text(ns):
    return f"{ns // 10 ** 9}.{ns % 10 ** 9:09d}"


def tshark_rows(path):
    """(time text, len, cap_len, interface id) of every packet tshark shows (non-packet rows dropped)."""
    proc = subprocess.run([TSHARK, "-n", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch",
                           "-e", "frame.len", "-e", "frame.cap_len", "-e", "frame.interface_id",
                           "-e", "frame.encap_type"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    return [tuple(r[:4]) for r in rows if r[4]]


def reader_rows(path):
    """The same four columns from our reader, computed with ts_to_ns and the interface table."""
    rows = []
    section = -1
    with CaptureReader(path) as reader:
        for batch in reader.batches():
            for rec in batch:
                if rec[LINKTYPE] == META:
                    section += rec[BLOCK] == capture.SHB
                    continue
                itf = reader.interfaces(max(section, 0))[rec[IFACE]]
                spb_rec = rec[BLOCK] is not None and rec[BLOCK][0] == 3
                when = "" if spb_rec else ns_text(ts_to_ns(rec[TS], itf.tsresol, itf.tsoffset))
                iface = "" if reader.format == "pcap" else str(rec[IFACE])
                rows.append((when, str(rec[ORIGLEN]), str(len(rec[DATA])), iface))
    return rows


# --- multi-section pcapng with every block kind ------------------------------------------------------

IPV4_ADDR = bytes((192, 0, 2, 7))


def multi_section(section_a_length=-1):
    """Section A little-endian, three interfaces, every block type; section B big-endian, SPBs."""
    a = "<"
    a_blocks = [
        idb(a, 1, 0, opts(a, (2, b"eth0"))),
        idb(a, 101, 128, opts(a, (9, b"\x09"), (4, IPV4_ADDR + b"\xff\xff\xff\0"))),
        idb(a, 1, 0, opts(a, (9, b"\x94"), (14, struct.pack("<q", 1000)))),     # 2^-20 s, +1000 s
        epb(a, 0, 1_700_000_000_123_456, frame(1)),
        epb(a, 1, 1_700_000_000_123_456_789, frame(2, 70), options=opts(a, (1, b"a comment"))),
        epb(a, 2, 1_700_000_000 << 20 | 1 << 19, frame(3, 61), origlen=1500),
        block(a, 4, opts(a, (1, IPV4_ADDR + b"host.example\0"))),            # NRB records: same layout
        block(a, 5, struct.pack("<III", 0, 1, 2) + opts(a, (4, struct.pack("<Q", 3)))),
        block(a, 10, struct.pack("<II", 0x544C534B, 11) + b"CLIENT_RAND"),
        block(a, 0xBAD, struct.pack("<I", 32473) + b"custom data"),
        block(a, 0x40000BAD, struct.pack("<I", 32473) + b"do not copy"),
        block(a, 0x00000123, b"unknown body"),
        pb(a, 0, 7, 1_700_000_001_000_000, frame(4, 63), options=opts(a, (2, b"\0\0\0\1"))),
    ]
    b = ">"
    b_blocks = [
        idb(b, 113, 64),
        spb(b, frame(5, 64), 100),          # caplen = snaplen 64
        spb(b, frame(6, 30), 30),           # caplen = origlen 30 (2 padding bytes)
        epb(b, 0, 1_700_000_002_000_000, frame(7, 64), origlen=90),
    ]
    if section_a_length is None:
        section_a_length = sum(map(len, a_blocks))
    body_b = b"".join(b_blocks)
    return (shb(a, section_a_length, opts(a, (4, b"test app"))) + b"".join(a_blocks)
            + shb(b, len(body_b)) + body_b)


def test_multi_section_records(workdir):
    path = write(workdir, "multi.pcapng", multi_section())
    records, reader = read_all(path)
    assert reader.format == "pcapng" and reader.pcap_header is None
    metas = [r[BLOCK] for r in records if r[LINKTYPE] == META]
    assert metas == [capture.SHB, 1, 1, 1, 4, 5, 10, 0xBAD, 0x40000BAD, 0x123, capture.SHB, 1]
    packets = [r for r in records if r[LINKTYPE] != META]
    assert [(r[LINKTYPE], r[IFACE], r[TS], r[ORIGLEN], len(r[DATA])) for r in packets] == [
        (1, 0, 1_700_000_000_123_456, 60, 60),
        (101, 1, 1_700_000_000_123_456_789, 70, 70),
        (1, 2, 1_700_000_000 << 20 | 1 << 19, 1500, 61),
        (1, 0, 1_700_000_001_000_000, 63, 63),
        (113, 0, 0, 100, 64),
        (113, 0, 0, 30, 30),
        (113, 0, 1_700_000_002_000_000, 90, 64),
    ]
    assert packets[0][DATA] == frame(1)
    assert packets[4][DATA] == frame(5, 64) and packets[5][DATA] == frame(6, 30)
    assert packets[1][BLOCK] == (6, opts("<", (1, b"a comment")))
    assert packets[3][BLOCK] == (2, opts("<", (2, b"\0\0\0\1")), 7)
    assert packets[4][BLOCK] == (3, b"") and packets[0][BLOCK] == (6, b"")
    assert reader.interfaces(0) == [Interface(1, 0, 6, 0), Interface(101, 128, 9, 0),
                                    Interface(1, 0, 0x94, 1000)]
    assert reader.interfaces(1) == [Interface(113, 64, 6, 0)]
    assert reader.packets == 7 and reader.offset == reader.size == path.stat().st_size
    assert reader.warnings == []
    # the DSB body and the unknown block come through untouched
    assert [r[DATA] for r in records if r[BLOCK] == 0x123] == [b"unknown body"]


@pytest.mark.parametrize("a_length", [-1, None])
def test_multi_section_round_trip_is_byte_identical(workdir, a_length):
    data = multi_section(a_length)
    assert round_trip(write(workdir, "multi.pcapng", data)) == data


def section_lengths(data):
    """[(offset of SHB, section length field, real length)] of a pcapng file."""
    found, off, e = [], 0, "<"
    while off < len(data):
        if data[off:off + 4] == b"\n\r\r\n":
            e = section_endian(data[off + 8:off + 12])
        btype, blen = struct.unpack_from(e + "II", data, off)
        if btype == capture.SHB:
            found.append([off, struct.unpack_from(e + "q", data, off + 16)[0], off + blen, None])
        off += blen
    for i, item in enumerate(found):
        end = found[i + 1][0] if i + 1 < len(found) else len(data)
        item[3] = end - item[2]
    return [(o, field, real) for o, field, _, real in found]


def test_dropped_records_patch_the_section_length(workdir):
    path = write(workdir, "multi.pcapng", multi_section(None))
    dropped = {4, 10, 0xBAD, 0x40000BAD}        # what the metadata scrub drops
    out = round_trip(path, keep=lambda r: not (r[LINKTYPE] == META and r[BLOCK] in dropped))
    (a_off, a_field, a_real), (b_off, b_field, b_real) = section_lengths(out)
    assert a_field == a_real and a_real < section_lengths(path.read_bytes())[0][2]
    assert b_field == b_real
    records, _ = read_all(write(workdir, "out.pcapng", out))
    assert sum(r[LINKTYPE] != META for r in records) == 7


def test_unknown_section_length_stays_unknown(workdir):
    path = write(workdir, "multi.pcapng", multi_section(-1))
    out = round_trip(path, keep=lambda r: r[BLOCK] != 4)
    assert section_lengths(out)[0][1] == -1


def test_section_length_patched_after_flush_and_unknown_on_pipes(workdir):
    e = "<"
    packets = [epb(e, 0, i, frame(i, 1400)) for i in range(2000)]        # ~2.8 MB: flushed before the end
    body = idb(e) + b"".join(packets)
    path = write(workdir, "big.pcapng", shb(e, len(body)) + body + shb(e, 4 * 12) + block(e, 0x123, b"")
                 * 4)
    data = path.read_bytes()
    assert round_trip(path, workdir / "same.pcapng") == data
    out = round_trip(path, workdir / "odd.pcapng", keep=lambda r: r[LINKTYPE] == META or r[TS] % 2)
    (_, f1, r1), (_, f2, r2) = section_lengths(out)
    assert (f1, f2) == (r1, r2) and r1 < len(body)

    class Pipe(io.BytesIO):
        def seekable(self):
            return False

    pipe = Pipe()
    with CaptureReader(path) as reader:
        writer = CaptureWriter(pipe, "pcapng")
        for batch in reader.batches():
            writer.write_batch(batch)
        writer.close()
    assert [f for _, f, _ in section_lengths(pipe.getvalue())] == [-1, -1]


def _section(e: str, frames: list, first: int) -> list:
    """The records of one pcapng section (byte order ``e``, one Ethernet interface) holding ``frames``."""
    recs = [(make_shb_body(e, b"", 0), -1, 0, 0, 0, SHB), (make_idb_body(1, 0, e), -1, 0, 0, 0, IDB)]
    return recs + [(f, 1, first + i, len(f), 0, (EPB, b"")) for i, f in enumerate(frames)]


def test_a_later_pcapng_section_with_a_known_length_is_kept(workdir):
    frames = sample_frames(4000, seed=3)
    recs = _section("<", frames[:2500], 0) + _section(">", frames[2500:], 10 ** 6)
    src = workdir / "sections.pcapng"
    with open(src, "wb") as fh:
        writer = CaptureWriter(fh, "pcapng")
        for i in range(0, len(recs), 512):          # as the pipeline writes: batch by batch
            writer.write_batch(recs[i:i + 512])
        writer.close()
    with CaptureReader(src) as reader:
        assert sum(1 for b in reader.batches() for r in b if r[1] >= 0) == len(frames)


def test_remove_dupes_keeps_every_section_of_a_multi_section_pcapng(work):
    frames = sample_frames(4000, seed=3)
    recs = _section("<", frames[:2500], 0) + _section(">", frames[2500:], 10 ** 6)
    src = work / "sections.pcapng"
    with open(src, "wb") as fh:
        writer = CaptureWriter(fh, "pcapng")
        writer.write_batch(recs)                     # one batch: the section length is patched in memory
        writer.close()
    with CaptureReader(src) as reader:               # the input itself is sound
        assert sum(1 for b in reader.batches() for r in b if r[1] >= 0) == len(frames)
    result = run_job(Job(src, work / "out", ["dedup"]), settings_for(work))
    assert result.status == "ok", result.error
    with CaptureReader(result.output) as reader:
        got = [r[0] for b in reader.batches() for r in b if r[1] >= 0]
    assert got == list(dict.fromkeys(frames))
    assert leftovers(work / "temp", work / "out") == []


# --- classic pcap ---------------------------------------------------------------------------------

@pytest.mark.parametrize("e", ["<", ">"])
@pytest.mark.parametrize("nanos", [False, True])
def test_pcap_byte_orders_and_units(workdir, e, nanos):
    unit = 10 ** 9 if nanos else 10 ** 6
    recs = [(1_700_000_000 + i, (i * 7919) % unit, frame(i, 40 + i), 40 + i + (i % 3) * 100)
            for i in range(50)]
    data = pcap_file(recs, e=e, nanos=nanos, linktype=0x1C000001)      # FCS bits in the link type field
    path = write(workdir, "x.pcap", data)
    records, reader = read_all(path)
    assert reader.pcap_header == data[:24]
    assert [(r[TS], r[ORIGLEN], r[DATA], r[LINKTYPE], r[IFACE], r[BLOCK]) for r in records] == [
        (sec * unit + frac, origlen, d, 1, 0, None) for sec, frac, d, origlen in recs]
    assert reader.interfaces(0) == [Interface(1, 65535, 9 if nanos else 6, 0)]
    assert round_trip(path) == data


def test_batches_are_bounded_and_progress_reaches_the_size(workdir):
    path = write(workdir, "x.pcap", pcap_file([(1, i, frame(i), 60) for i in range(5000)]))
    with CaptureReader(path) as reader:
        sizes = []
        for batch in reader.batches(max_records=1000):
            sizes.append(len(batch))
            assert 0 < reader.offset <= reader.size
        assert sizes == [1000] * 5 and reader.offset == reader.size and reader.packets == 5000


def test_modified_pcap_round_trip(workdir):
    header = struct.pack("<IHHiIII", 0xA1B2CD34, 2, 4, 0, 0, 65535, 1)
    recs = b"".join(struct.pack("<IIII", 10, i, 60, 60) + struct.pack("<IHBx", 2, 0x0800, i) + frame(i)
                    for i in range(3))
    path = write(workdir, "kuznetsov.pcap", header + recs)
    records, _ = read_all(path)
    assert [r[DATA] for r in records] == [frame(i) for i in range(3)]
    assert records[2][BLOCK] == (0, struct.pack("<IHBx", 2, 0x0800, 2))
    assert round_trip(path) == header + recs


def test_invalid_fraction_is_kept_byte_exact_with_one_warning(workdir):
    data = pcap_file([(100, 999_999, frame(1), 60), (100, 1_000_000, frame(2), 60),
                      (100, 0x80000000, frame(3), 60)])
    path = write(workdir, "ts.pcap", data)
    records, reader = read_all(path)
    assert [int(r[TS]) for r in records] == [100_999_999, 101_000_000, 100 * 10 ** 6 + 0x80000000]
    assert isinstance(records[1][TS], RawPcapTime) and divmod(records[1][TS], 10 ** 6) == (100, 1_000_000)
    assert [w for w in reader.warnings if "invalid timestamp" in w] == [
        "2 packet(s) have an invalid timestamp (fraction of a second of one second or more); "
        "kept as they are"]
    assert round_trip(path) == data


def test_writer_without_header_uses_the_first_link_type():
    out = io.BytesIO()
    writer = CaptureWriter(out, "pcap")
    writer.write_batch([(b"\x45" + bytes(19), 101, 5_000_001, 20, 0, None)])
    writer.close()
    assert out.getvalue()[:24] == make_pcap_header(101)
    assert out.getvalue()[24:40] == struct.pack("<IIII", 5, 1, 20, 20)


def test_pcapng_writer_accepts_plain_records():
    """A packet record without pcapng block info is written as an EPB."""
    out = io.BytesIO()
    writer = CaptureWriter(out, "pcapng")
    writer.write_batch([(capture.make_shb_body(">"), META, 0, 0, 0, capture.SHB),
                        (capture.make_idb_body(1, 0, ">"), META, 0, 0, 0, 1),
                        (frame(1, 61), 1, 123, 61, 0, None)])
    writer.close()
    assert out.getvalue().endswith(epb(">", 0, 123, frame(1, 61)))


def test_pcapng_writer_refuses_output_without_a_section_header():
    with pytest.raises(ValueError, match="section header"):
        CaptureWriter(io.BytesIO(), "pcapng").write_batch([(frame(1), 1, 0, 60, 0, (6, b""))])


# --- round trips of real and generated captures -------------------------------------------------------

@pytest.mark.parametrize("name", CORPUS_FILES or ["(no corpus)"])
def test_corpus_round_trip_is_byte_identical(corpus_dir, workdir, name):
    src = corpus_dir / name
    copy = workdir / name
    shutil.copyfile(src, copy)
    records, reader = read_all(copy)
    assert reader.offset == reader.size
    assert round_trip(copy) == src.read_bytes()
    if "timestamp_invalid" in name:
        assert any("invalid timestamp" in w for w in reader.warnings)


TSHARK_CHECKED = ["zeek__pcapng-multi-interface.pcapng", "pcapngtest__be_basic_test018.pcapng",
                  "pcapngtest__le_advanced_test100.pcapng", "tcpdump__tcp-handshake-nano.pcap",
                  "tcpdump__pptp.pcap", "tcpdump__ip6_frag_asan.pcap", "tcpdump__dhcp-option-108.pcapng"]


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
@pytest.mark.parametrize("name", TSHARK_CHECKED)
def test_reader_agrees_with_tshark_on_corpus(corpus_dir, workdir, name):
    """Times, lengths and interfaces as tshark sees them, in the input and in our output."""
    if not (corpus_dir / name).exists():
        pytest.skip(f"{name} not in the corpus")
    src = shutil.copyfile(corpus_dir / name, workdir / name)
    expected = tshark_rows(src)
    assert reader_rows(src) == expected
    out = workdir / ("out-" + name)
    out.write_bytes(round_trip(src))
    assert tshark_rows(out) == expected


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_reader_agrees_with_tshark_on_multi_section(workdir):
    path = write(workdir, "multi.pcapng", multi_section(None))
    ours, theirs = reader_rows(path), tshark_rows(path)
    assert len(ours) == len(theirs) == 7
    for mine, tshark in zip(ours, theirs):
        assert mine[1:] == tshark[1:]
        if mine[0] or tshark[0]:                    # SPBs have no time
            assert abs(int(mine[0].replace(".", "")) - int(tshark[0].replace(".", ""))) <= 1
    out = write(workdir, "out.pcapng", round_trip(path, keep=lambda r: r[BLOCK] not in (4, 10, 0xBAD)))
    assert tshark_rows(out) == theirs


@pytest.mark.parametrize("fmt,endian,nanos", [("pcap", "<", False), ("pcap", ">", True),
                                              ("pcapng", "<", True), ("pcapng", ">", False)])
def test_generated_captures_round_trip(workdir, fmt, endian, nanos):
    path = workdir / f"gen.{fmt}"
    stats = generate(path, packets=600, seed=3, fmt=fmt, endian=endian, nanos=nanos)
    records, reader = read_all(path)
    assert reader.packets == stats["packets"] == 600 and reader.warnings == []
    assert round_trip(path) == path.read_bytes()
    if fmt == "pcapng":
        assert section_endian(records[0][DATA]) == endian
        assert reader.interfaces(0)[0].tsresol == (9 if nanos else 6)
    else:
        assert reader.pcap_header[:4] == make_pcap_header(nanos=nanos, endian=endian)[:4]


# --- damage -------------------------------------------------------------------------------------------

# records at offsets 24, 100 and 176
GOOD_PCAP = pcap_file([(1, 0, frame(1), 60), (2, 0, frame(2), 60), (3, 0, frame(3), 60)])


def damaged(data, at, value, fmt="<I"):
    data = bytearray(data)
    struct.pack_into(fmt, data, at, value)
    return bytes(data)


PCAPNG = shb("<") + idb("<") + epb("<", 0, 1, frame(1)) + epb("<", 0, 2, frame(2)) + epb("<", 0, 3, frame(3))
EPB2 = len(shb("<") + idb("<") + epb("<", 0, 1, frame(1)))        # offset of the second EPB

DAMAGE = {
    "empty": (b"", 0, "empty"),
    "bad magic": (b"hello world, this is text" * 2, 0,
                  "not a pcap or pcapng capture (it starts with the bytes 68 65 6c 6c)"),
    "gzip header, then no deflate data": (b"\x1f\x8b\x08\x00" + bytes(40), 0,
                                          "the gzip data is corrupt near byte 0 of the compressed file"),
    "short pcap header": (GOOD_PCAP[:20], 0, "pcap file header is cut short"),
    "three bytes of a magic": (GOOD_PCAP[:3], 0, "file header is cut short"),
    "short section header": (PCAPNG[:20], 0, "section header is cut short"),
    "pcap caplen above 256 KiB": (damaged(GOOD_PCAP, 100 + 8, 300000), 100, "above the 262144-byte limit"),
    "pcap caplen beyond the file": (damaged(damaged(GOOD_PCAP, 176 + 8, 1000), 176 + 12, 10), 176,
                                    "beyond the end"),
    "block length below 12": (damaged(PCAPNG, EPB2 + 4, 8), EPB2, "invalid length of 8"),
    "block length not a multiple of 4": (damaged(PCAPNG, EPB2 + 4, 94), EPB2, "invalid length of 94"),
    "block length above 16 MiB": (damaged(PCAPNG, EPB2 + 4, 20 << 20), EPB2, "above the 16777216-byte limit"),
    "trailing length mismatch": (damaged(PCAPNG, EPB2 + 88, 96), EPB2, "trailing length of 96"),
    "caplen larger than the block": (damaged(PCAPNG, EPB2 + 20, 64), EPB2,
                                     "more than its 92-byte block holds"),
    "pcapng caplen above 256 KiB": (damaged(PCAPNG, EPB2 + 20, 300000), EPB2, "above the 262144-byte limit"),
    "undefined interface": (damaged(PCAPNG, EPB2 + 8, 1), EPB2, "packet 2 refers to interface 1"),
    "bad byte-order magic": (PCAPNG + damaged(shb("<"), 8, 0x01020304), len(PCAPNG), "bad byte-order magic"),
    "later section header cut short": (PCAPNG + shb("<")[:24], len(PCAPNG), "section header is cut short"),
    "SPB before any IDB": (shb(">") + spb(">", frame(1), 60), 28, "before any interface"),
    "IDB too short": (shb("<") + block("<", 1, b"\1\0"), 28, "interface description block is too short"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damage_raises_capture_error_with_offset(workdir, case):
    data, offset, words = DAMAGE[case]
    path = write(workdir, "bad.pcapng", data)
    with pytest.raises(CaptureError) as info, CaptureReader(path) as reader:
        for _ in reader.batches():
            pass
    assert info.value.offset == offset
    assert words in info.value.reason
    assert str(info.value).endswith(f"at file offset {offset}") or not info.value.located \
        or "compressed file" in str(info.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no fifos on this platform")
def test_fifo_directory_and_unreadable_paths_are_refused(workdir, monkeypatch):
    fifo = workdir / "fifo.pcap"
    os.mkfifo(fifo)
    old = signal.signal(signal.SIGALRM, lambda *a: pytest.fail("opening a fifo hung"))
    signal.alarm(5)
    try:
        with pytest.raises(CaptureError, match="the path is a fifo"):
            CaptureReader(fifo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    with pytest.raises(CaptureError, match="the path is a directory"):
        CaptureReader(workdir)
    with pytest.raises(CaptureError, match="No such file"):
        CaptureReader(workdir / "missing.pcap")
    path = write(workdir, "ok.pcap", GOOD_PCAP)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    with monkeypatch.context() as patched, pytest.raises(CaptureError, match="Permission denied") as info:
        patched.setattr(capture.os, "open", denied)
        CaptureReader(path)
    assert info.value.offset == 0


# --- cut short in the last packet, odd lengths -------------------------------------------------------------

@pytest.mark.parametrize("cut", [1, 10, 16, 40, 75])
def test_pcap_cut_inside_last_packet_keeps_complete_packets(workdir, cut):
    path = write(workdir, "cut.pcap", GOOD_PCAP[:176 + cut])
    records, reader = read_all(path)
    assert [r[DATA] for r in records] == [frame(1), frame(2)]
    assert reader.warnings == [
        "file is cut short inside its last packet at offset 176: 2 complete packets kept"]


@pytest.mark.parametrize("cut", [4, 11, 12, 50, 91])
def test_pcapng_cut_inside_last_block_keeps_complete_packets(workdir, cut):
    start = len(PCAPNG) - 92
    path = write(workdir, "cut.pcapng", PCAPNG[:start + cut])
    records, reader = read_all(path)
    assert [r[DATA] for r in records if r[LINKTYPE] != META] == [frame(1), frame(2)]
    assert reader.warnings == [
        f"file is cut short inside its last block at offset {start}: 2 complete packets kept"]


def test_caplen_above_snaplen_or_origlen_is_kept_with_one_warning_each(workdir):
    data = pcap_file([(1, 0, frame(1, 100), 100), (1, 1, frame(2, 80), 80), (1, 2, frame(3), 50),
                      (1, 3, frame(4), 40), (1, 4, frame(5, 30), 30)], snaplen=64)
    path = write(workdir, "odd.pcap", data)
    records, reader = read_all(path)
    assert [len(r[DATA]) for r in records] == [100, 80, 60, 60, 30]
    assert reader.warnings == [
        "2 packet(s) have a captured length above the snap length of their interface; kept as they are",
        "2 packet(s) have a captured length above their original length; kept as they are"]
    assert round_trip(path) == data
    ng = shb("<") + idb("<", 1, 64) + epb("<", 0, 1, frame(1, 100)) + epb("<", 0, 2, frame(2), origlen=50)
    records, reader = read_all(write(workdir, "odd.pcapng", ng))
    assert [len(r[DATA]) for r in records if r[LINKTYPE] != META] == [100, 60]
    assert len(reader.warnings) == 2


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.sampled_from(["pcap", "pcapng"]), flips=st.lists(st.tuples(st.integers(0, 10 ** 6),
                                                                          st.integers(0, 255)),
                                                                min_size=1, max_size=4),
       cut=st.integers(0, 10 ** 6))
def test_random_damage_gives_records_or_capture_error_only(workdir, base, flips, cut):
    data = bytearray(GOOD_PCAP if base == "pcap" else multi_section(None))
    for at, value in flips:
        data[at % len(data)] = value
    path = write(workdir, "fuzz", bytes(data[:max(1, cut % (len(data) + 1))]))
    try:
        records, reader = read_all(path)
    except CaptureError as exc:
        assert 0 <= exc.offset <= len(data) and str(exc)
        return
    copy = write(workdir, "copy", round_trip(path))     # whatever was read is written back as it was

    def same_but_section_length(recs):               # the writer patches it to what it really wrote
        return [r[:1] + r[1:] if r[BLOCK] != capture.SHB else (r[DATA][:8] + r[DATA][16:],) + r[1:]
                for r in recs]
    assert same_but_section_length(read_all(copy)[0]) == same_but_section_length(records)


# --- memory -----------------------------------------------------------------------------------------

def test_memory_stays_bounded_on_a_50_mb_file(workdir):
    chunk = b"".join(struct.pack("<IIII", 1, i, 1400, 1400) + frame(i, 1400) for i in range(1000))
    path = workdir / "big.pcap"
    with open(path, "wb") as fh:
        fh.write(make_pcap_header())
        for _ in range(36):
            fh.write(chunk)
    assert path.stat().st_size > 50_000_000
    tracemalloc.start()
    try:
        count = 0
        with CaptureReader(path) as reader, open(os.devnull, "wb") as sink:
            writer = CaptureWriter(sink, reader.format, reader.pcap_header)
            for batch in reader.batches():
                count += len(batch)
                writer.write_batch(batch)
            writer.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 36_000
    assert peak < 16_000_000, f"peak {peak} bytes while streaming a {path.stat().st_size}-byte file"


# --- helpers ------------------------------------------------------------------------------------------

def test_options_helpers_round_trip():
    for e in "<>":
        pairs = [(1, b"comment"), (2, b"eth0"), (9, b"\x09"), (14, struct.pack(e + "q", -5))]
        raw = build_options(pairs, e)
        assert len(raw) % 4 == 0 and raw == opts(e, *pairs)
        assert parse_options(raw, e) == pairs
    assert build_options([], "<") == b""
    assert parse_options(b"", "<") == []


def test_idb_info_and_section_endian():
    body = struct.pack(">HHI", 228, 0, 1500) + opts(">", (9, b"\x83"), (14, struct.pack(">q", -3)))
    assert idb_info(body, ">") == Interface(228, 1500, 0x83, -3)
    assert section_endian(capture.make_shb_body(">")) == ">"
    assert section_endian(capture.make_shb_body("<")) == "<"
    with pytest.raises(ValueError):
        section_endian(b"\0\0\0\0")


def test_ts_to_ns_is_exact():
    assert ts_to_ns(1_700_000_000_123_456, 6) == 1_700_000_000_123_456_000
    assert ts_to_ns(1_700_000_000_123_456_789, 9) == 1_700_000_000_123_456_789
    assert ts_to_ns(12_345_678_901, 10) == 1_234_567_890                  # 10^-10: rounded, half up
    assert ts_to_ns(15, 10) == 2 and ts_to_ns(14, 10) == 1
    assert ts_to_ns(3 << 19, 0x94) == 1_500_000_000                     # 2^-20 s
    assert ts_to_ns(1, 0x94) == 954                                      # 953.67 ns -> 954
    assert ts_to_ns(1, 0x80) == 10 ** 9                                  # 2^0 = seconds
    assert ts_to_ns(5, 6, tsoffset=10) == 10_000_005_000
    assert isinstance(ts_to_ns(2 ** 70, 0x9F), int)

