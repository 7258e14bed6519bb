"""Damaged and odd inputs: every kind of damage gives the file one clear line naming where it is, the batch goes
on with the other files, the input is never modified and nothing is left behind; valid oddities (a last packet
cut short, unknown link types and blocks, lengths above the snap length) are kept, with a warning."""
from __future__ import annotations

import gzip
import io
import json
import os
import struct
from pathlib import Path

import pytest
from helpers import (EPB_RECORDS, FRAMES, GOOD_PCAP, GOOD_PCAPNG, PCAP_RECORDS, assert_clean_failure, cli,
                      leftovers, packets_of, settings_for, written_pcap, written_pcapng)

from pktmask_gui.capture import EPB, IDB, META, SHB, SPB, CaptureReader, make_idb_body, make_shb_body
from pktmask_gui.capturewriter import CaptureWriter
from pktmask_gui.pipeline import Job, run_job


# --- damaged captures, built from a sound one ----------------------------------------------------------

SHB_LEN, IDB_LEN = 28, 20          # the sizes of the minimal SHB and IDB of GOOD_PCAPNG
EPB0 = SHB_LEN + IDB_LEN           # offset of the first EPB
REC0 = 24                          # offset of the first pcap record


def _patch(data: bytes, offset: int, fmt: str, value) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def _patch2(data: bytes, offset: int, fmt: str, *values) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, *values)
    return bytes(b)


def _epb_before_idb() -> bytes:
    shb = GOOD_PCAPNG[:SHB_LEN]
    epb = GOOD_PCAPNG[EPB0:EPB0 + struct.unpack_from("<I", GOOD_PCAPNG, EPB0 + 4)[0]]
    return shb + epb + GOOD_PCAPNG[SHB_LEN:EPB0] + GOOD_PCAPNG[EPB0:]


def _spb_before_idb() -> bytes:
    buf = io.BytesIO()
    w = CaptureWriter(buf, "pcapng")
    w.write_batch([(make_shb_body("<"), META, 0, 0, 0, SHB), (FRAMES[0], 1, 0, len(FRAMES[0]), 0, (SPB, b""))])
    w.close()
    return buf.getvalue()


def _deep_damage() -> tuple[bytes, int]:
    """A 5000-packet pcap whose packet 3001 claims more bytes than its original length and the file hold."""
    recs = [(FRAMES[i % 3] + struct.pack(">I", i), 1, 10 ** 15 + i, len(FRAMES[i % 3]) + 4, 0, None)
            for i in range(5000)]
    data = written_pcap(recs)
    off = REC0
    for _ in range(3000):
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
    return _patch2(data, off + 8, "<II", 200000, 100), off


DEEP, DEEP_OFFSET = _deep_damage()


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x55]) + data[at + 1:]


# name -> (file name, bytes, words the one-line error must contain)
DAMAGED = {
    "zero-byte": ("zero.pcap", b"", ["empty"]),
    "text renamed .pcap": ("notes.pcap", b"Meeting notes, not a capture.\n" * 20, ["not a pcap", "offset 0"]),
    "bad magic": ("badmagic.pcapng", b"\x0b\x0d\x0d\x0a" + GOOD_PCAPNG[4:], ["not a pcap", "offset 0"]),
    "truncated pcap header": ("hdr.pcap", GOOD_PCAP[:17], ["header", "cut short", "offset 0"]),
    "truncated section header": ("shb.pcapng", GOOD_PCAPNG[:20], ["section header", "cut short"]),
    "section header longer than file": ("shblong.pcapng", _patch(GOOD_PCAPNG[:60], 4, "<I", 4096),
                                        ["section header", "cut short"]),
    "bad byte-order magic": ("bom.pcapng", _patch(GOOD_PCAPNG, 8, "<I", 0x11223344), ["byte-order", "offset 0"]),
    "block lengths disagree": ("lens.pcapng", _patch(GOOD_PCAPNG, EPB0 + 4, "<I",
                                                     struct.unpack_from("<I", GOOD_PCAPNG, EPB0 + 4)[0] + 4),
                               ["does not match", f"offset {EPB0}"]),
    "block length not a multiple of 4": ("odd.pcapng", _patch(GOOD_PCAPNG, SHB_LEN + 4, "<I", 21),
                                         ["invalid length", f"offset {SHB_LEN}"]),
    "block length above 16 MiB": ("huge.pcapng", _patch(GOOD_PCAPNG, SHB_LEN + 4, "<I", 1 << 26),
                                  ["limit", f"offset {SHB_LEN}"]),
    "pcap caplen beyond the rest of the file": ("rest.pcap", _patch(GOOD_PCAP, REC0 + 8, "<I", 5000),
                                                ["packet 1", "beyond the end", f"offset {REC0}"]),
    "pcapng caplen beyond its block": ("rest.pcapng", _patch(GOOD_PCAPNG, EPB0 + 20, "<I", 5000),
                                       ["packet 1", "block", f"offset {EPB0}"]),
    "pcap caplen above 256 KiB": ("big.pcap", _patch2(GOOD_PCAP, REC0 + 8, "<II", 300000, 300000),
                                  ["262144", f"offset {REC0}"]),
    "pcapng caplen above 256 KiB": ("big.pcapng", _patch2(GOOD_PCAPNG, EPB0 + 20, "<II", 300000, 300000),
                                    ["262144", f"offset {EPB0}"]),
    "interface used before defined (EPB)": ("early.pcapng", _epb_before_idb(), ["interface", f"offset {SHB_LEN}"]),
    "interface id never defined": ("iface.pcapng", _patch(GOOD_PCAPNG, EPB0 + 8, "<I", 5),
                                   ["interface 5", f"offset {EPB0}"]),
    "interface used before defined (SPB)": ("spb.pcapng", _spb_before_idb(), ["before any interface"]),
    # a compressed capture is read (tests/test_compression.py); corrupt compressed data fails
    "corrupt gzip data": ("zipped.pcap", _flip(gzip.compress(GOOD_PCAP), 30),
                          ["gzip data is corrupt", "of the compressed file"]),
    "gzip holding text": ("zipped.pcapng", gzip.compress(b"Meeting notes, not a capture.\n" * 20),
                          ["gzip-compressed file does not hold a pcap or pcapng capture"]),
    "damage deep in a large file": ("deep.pcap", DEEP, ["packet 3001", f"offset {DEEP_OFFSET}"]),
}


@pytest.mark.parametrize("kind", sorted(DAMAGED))
def test_damaged_input_fails_with_one_clear_line(work, kind):
    name, data, words = DAMAGED[kind]
    src = work / name
    src.write_bytes(data)
    out = work / "out"
    result = run_job(Job(src, out, ["dedup"]), settings_for(work))
    assert_clean_failure(result, work, out, words)
    assert src.read_bytes() == data


def test_a_text_file_and_an_empty_file_fail_cleanly(work):
    out, settings = work / "out", settings_for(work)
    bad = work / "bad.pcap"
    bad.write_bytes(b"this is not a capture at all, just text" * 10)
    empty = work / "empty.pcap"
    empty.write_bytes(b"")
    for path in (bad, empty):
        result = run_job(Job(path, out, ["dedup"]), settings)
        assert result.status == "failed"
        assert result.error and "\n" not in result.error
    assert "empty" in run_job(Job(empty, out, ["dedup"]), settings).error
    assert not out.exists() or list(out.iterdir()) == []
    assert leftovers(work / "temp") == []


def test_a_cli_batch_of_damaged_files_gives_one_line_each_and_the_rest_continues(work):
    inputs = work / "in"
    inputs.mkdir()
    for name, data, _ in DAMAGED.values():
        (inputs / name).write_bytes(data)
    (inputs / "good.pcap").write_bytes(GOOD_PCAP)
    (inputs / "good.pcapng").write_bytes(GOOD_PCAPNG)
    os.mkfifo(inputs / "fifo.pcap")                     # named like a capture: must not hang the batch
    (inputs / "dangling.pcap").symlink_to(work / "gone.pcap")
    (inputs / "device.pcap").symlink_to("/dev/zero")     # endless zeros: refused, not read forever
    (inputs / "folder.pcap").mkdir()                     # a folder named like a capture: searched, empty
    out = work / "out"
    proc = cli("process", inputs, "-o", out, "--dedup", "--json", "--jobs", "3", "--temp-dir", work / "temp",
               timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    files = {Path(f["input"]).name: f for f in json.loads(proc.stdout)["files"]}
    bad_names = [n for n, _, _ in DAMAGED.values()] + ["fifo.pcap", "dangling.pcap", "device.pcap"]
    assert set(files) == set(bad_names) | {"good.pcap", "good.pcapng"}
    lines = proc.stderr.splitlines()
    for name in bad_names:
        assert files[name]["status"] == "failed" and files[name]["output"] is None
        mine = [line for line in lines if f"/{name}:" in line or f"/{name} " in line]
        assert len(mine) == 1 and mine[0].startswith("FAILED: "), (name, mine)
    assert files["good.pcap"]["status"] == files["good.pcapng"]["status"] == "ok"
    assert sorted(p.name for p in out.iterdir()) == ["good-sanitized.pcap", "good-sanitized.pcapng"]
    assert leftovers(work / "temp", out) == []


# --- valid oddities --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
@pytest.mark.parametrize("cut", [1, 7, 17])
def test_a_cut_inside_the_last_packet_keeps_the_complete_ones_with_a_warning(work, fmt, cut):
    data = GOOD_PCAP if fmt == "pcap" else GOOD_PCAPNG
    src = work / f"cut.{fmt}"
    src.write_bytes(data[:-cut])
    result = run_job(Job(src, work / "out", ["dedup"]), settings_for(work))
    assert result.status == "ok", result.error
    assert any("cut short" in w for w in result.warnings)
    assert [r[0] for r in packets_of(Path(result.output))] == FRAMES[:2]
    assert leftovers(work / "temp", work / "out") == []


def test_frames_of_an_unknown_link_type_pass_remove_dupes(work):
    out, settings = work / "out", settings_for(work)
    src = work / "odd.pcap"
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 147)   # LINKTYPE_USER0
    with open(src, "wb") as fh:
        writer = CaptureWriter(fh, "pcap", header)
        recs = [(b"\x01\x02\x03" * 10, 147, 1000 + i, 30, 0, None) for i in range(3)]
        recs.append((b"\x09" * 40, 147, 2000, 40, 0, None))
        writer.write_batch(recs)
        writer.close()
    result = run_job(Job(src, out, ["dedup"]), settings)
    assert result.status == "ok", result.error
    assert [r[0] for r in packets_of(Path(result.output))] == [b"\x01\x02\x03" * 10, b"\x09" * 40]


def test_frames_of_unknown_link_types_are_deduplicated_per_link_type(work):
    # Two interfaces with link types the engine does not know; the same bytes on both are not duplicates.
    e = "<"
    payload = b"\xde\xad\xbe\xef" * 8
    recs = [(make_shb_body(e), META, 0, 0, 0, SHB), (make_idb_body(4242, 0, e), META, 0, 0, 0, IDB),
            (make_idb_body(65000, 0, e), META, 0, 0, 0, IDB),
            (payload, 4242, 1, 32, 0, (EPB, b"")), (payload, 65000, 2, 32, 1, (EPB, b"")),
            (payload, 4242, 3, 32, 0, (EPB, b"")), (payload + b"x", 65000, 4, 33, 1, (EPB, b""))]
    buf = io.BytesIO()
    w = CaptureWriter(buf, "pcapng")
    w.write_batch(recs)
    w.close()
    src = work / "unknown.pcapng"
    src.write_bytes(buf.getvalue())
    result = run_job(Job(src, work / "out", ["dedup"]), settings_for(work))
    assert result.status == "ok", result.error
    got = [(r[0], r[1], r[4]) for r in packets_of(Path(result.output))]
    assert got == [(payload, 4242, 0), (payload, 65000, 1), (payload + b"x", 65000, 1)]


def test_unknown_and_custom_pcapng_blocks_keep_working(work):
    recs = list(EPB_RECORDS)
    recs.insert(1, (b"\x00\x00\x7f\x00vendor data", META, 0, 0, 0, 0x00000BAD))
    recs.insert(2, (b"opaque future block body", META, 0, 0, 0, 0x0000ABCD))
    src = work / "blocks.pcapng"
    src.write_bytes(written_pcapng(recs))
    scrubbed = run_job(Job(src, work / "a", ["dedup"]), settings_for(work))
    assert scrubbed.status == "ok", scrubbed.error
    with CaptureReader(scrubbed.output) as r:
        kinds = [rec[5] for b in r.batches() for rec in b if rec[1] == META]
    assert kinds == [SHB, IDB, 0x0000ABCD]
    assert [r[0] for r in packets_of(Path(scrubbed.output))] == FRAMES
    kept = run_job(Job(src, work / "b", ["dedup"]), settings_for(work, keep_metadata=True))
    assert kept.status == "ok" and Path(kept.output).read_bytes() == src.read_bytes()


def test_a_caplen_above_the_origlen_or_the_snaplen_is_kept_with_a_warning(work):
    big = FRAMES[2] + b"\0" * 100
    recs = [PCAP_RECORDS[0], (FRAMES[1], 1, 5, len(FRAMES[1]) - 10, 0, None), (big, 1, 6, len(big) + 50, 0, None)]
    src = work / "odd.pcap"
    src.write_bytes(written_pcap(recs, snaplen=64))
    result = run_job(Job(src, work / "out", ["dedup"]), settings_for(work))
    assert result.status == "ok", result.error
    text = " ".join(result.warnings)
    assert "above their original length" in text and "above the snap length" in text
    assert [(r[0], r[3]) for r in packets_of(Path(result.output))] == [(r[0], r[3]) for r in recs]
    ng = [(FRAMES[1], 1, 5, len(FRAMES[1]) - 10, 0, (EPB, b""))]
    src2 = work / "odd.pcapng"
    src2.write_bytes(written_pcapng(ng))
    result = run_job(Job(src2, work / "out", ["dedup"]), settings_for(work))
    assert result.status == "ok" and "above their original length" in " ".join(result.warnings)
