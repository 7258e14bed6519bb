"""The pcapng metadata scrub: every item removed where asked, kept where not, reading-relevant options kept."""
from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest
from helpers import CORPUS

from pktmask_gui.capture import (CB_COPY, CB_NOCOPY, DSB, EPB, IDB, ISB, META, NRB, PB, SHB, CaptureReader,
                                 build_options, make_idb_body, make_shb_body, parse_options)
from pktmask_gui.capturewriter import CaptureWriter
from pktmask_gui.pipeline import Job, run_job
from pktmask_gui.samplegen import tcp4_frame, udp4_frame
from pktmask_gui.settings import SCRUB_ITEMS, Settings
from pktmask_gui.stages import StageContext
from pktmask_gui.stages.scrub import ScrubStage


# Every string below must vanish from the output bytes when its item is scrubbed.
SECRETS = {
    "comments": [b"SECRET-SHB-COMMENT", b"SECRET-IDB-COMMENT", b"SECRET-EPB-COMMENT", b"SECRET-PB-COMMENT",
                 b"SECRET-ISB-COMMENT", b"SECRET-CUSTOM-OPTION"],
    "name_resolution": [b"intranet.corp.example"],
    "decryption_secrets": [b"CLIENT_RANDOM 0011223344"],
    "custom_blocks": [b"VENDOR-COPY-BLOCK", b"VENDOR-NOCOPY-BLOCK"],
    "section_strings": [b"SECRET-HARDWARE", b"SECRET-OS-NAME", b"SECRET-APPLICATION"],
    "interface_strings": [b"SECRET-IFNAME", b"SECRET-IFDESC", b"SECRET-FILTER", b"SECRET-IF-OS",
                          b"SECRET-IF-HARDWARE", b"\xc0\x00\x02\x99\xff\xff\xff\x00",
                          b"\x02\x42\xac\x11\x00\x99"],
}


@pytest.fixture
def wd(monkeypatch):
    with tempfile.TemporaryDirectory(prefix="pktmask_test_") as d:
        path = Path(d)
        monkeypatch.setenv("PKTMASK_CONFIG_DIR", str(path / "config"))
        yield path


def _nrb(e: str) -> bytes:
    value = bytes((10, 1, 2, 3)) + b"intranet.corp.example\0"
    return struct.pack(e + "HH", 1, len(value)) + value + b"\0" * (-len(value) & 3) + struct.pack(e + "HH", 0, 0)


def _section(e: str, tag: str) -> list:
    """One pcapng section in byte order ``e`` holding every kind of metadata (``tag`` marks its packets)."""
    o = lambda opts: build_options(opts, e)           # noqa: E731
    ts_pack = struct.Struct(e + "II").pack
    shb = make_shb_body(e, o([(1, b"SECRET-SHB-COMMENT"), (2, b"SECRET-HARDWARE"), (3, b"SECRET-OS-NAME"),
                              (4, b"SECRET-APPLICATION"), (2988, b"\0\0\x7f\x00SECRET-CUSTOM-OPTION")]))
    idb = make_idb_body(1, 65535, e, o([
        (1, b"SECRET-IDB-COMMENT"), (2, b"SECRET-IFNAME"), (3, b"SECRET-IFDESC"),
        (4, b"\xc0\x00\x02\x99\xff\xff\xff\x00"), (5, bytes(16) + b"\x40"), (6, b"\x02\x42\xac\x11\x00\x99"),
        (7, b"\x02\x42\xac\xff\xfe\x11\x00\x99"), (8, struct.pack(e + "Q", 10 ** 9)), (9, b"\x09"),
        (11, b"\x00SECRET-FILTER"), (12, b"SECRET-IF-OS"), (13, b"\x04"), (14, struct.pack(e + "q", 3600)),
        (15, b"SECRET-IF-HARDWARE")]))
    idb2 = make_idb_body(101, 0, e)                   # a second interface, raw IP, no options at all
    f1 = tcp4_frame("192.0.2.1", "198.51.100.2", 40000, 443, 1, 0, 0x02, payload=tag.encode())
    f2 = udp4_frame("192.0.2.1", "198.51.100.2", 5353, 53, payload=b"q" + tag.encode())
    epb_opts = o([(1, b"SECRET-EPB-COMMENT"), (2, struct.pack(e + "I", 1)), (19372, b"\0\0\x7f\x00x")])
    pb_opts = o([(1, b"SECRET-PB-COMMENT"), (2, struct.pack(e + "I", 2))])
    isb = struct.pack(e + "III", 0, 0, 5) + o([(1, b"SECRET-ISB-COMMENT"), (2, ts_pack(0, 1)),
                                               (4, struct.pack(e + "Q", 3))])
    dsb = struct.pack(e + "II", 0x544C534B, 24) + b"CLIENT_RANDOM 0011223344"
    return [
        (shb, META, 0, 0, 0, SHB),
        (idb, META, 0, 0, 0, IDB),
        (idb2, META, 0, 0, 0, IDB),
        (_nrb(e), META, 0, 0, 0, NRB),
        (dsb, META, 0, 0, 0, DSB),
        (b"\0\0\x7f\x00VENDOR-COPY-BLOCK\0\0\0", META, 0, 0, 0, CB_COPY),
        (f1, 1, 1_700_000_000_123_456_789, len(f1), 0, (EPB, epb_opts)),
        (f2, 1, 1_700_000_000_223_456_789, len(f2) + 10, 0, (PB, pb_opts, 7)),
        (f2[14:], 101, 1_700_000_001, len(f2) - 14, 1, (EPB, b"")),
        (b"\0\0\x7f\x00VENDOR-NOCOPY-BLOCK\0", META, 0, 0, 0, CB_NOCOPY),
        (b"opaque unknown block", META, 0, 0, 0, 0x00012345),
        (isb, META, 0, 0, 0, ISB),
    ]


def write_capture(path: Path, records: list) -> None:
    with open(path, "wb") as fh:
        writer = CaptureWriter(fh, "pcapng")
        writer.write_batch(records)
        writer.close()


def read_all(path: Path) -> list:
    with CaptureReader(path) as reader:
        return [rec for batch in reader.batches() for rec in batch]


def packets(records: list) -> list:
    return [(r[0], r[1], r[2], r[3], r[4]) for r in records if r[1] >= 0]


def scrub(records: list, **options) -> tuple[list, ScrubStage]:
    stage = ScrubStage(options, StageContext())
    out = []
    for i in range(0, len(records), 5):           # several batches: the section byte order carries over
        out += stage.process(records[i:i + 5])
    return out, stage


@pytest.fixture
def rich(wd):
    path = wd / "rich.pcapng"
    write_capture(path, _section("<", "a") + _section(">", "b"))
    return path


def test_everything_removed_by_default_and_reading_options_kept(wd, rich):
    records = read_all(rich)
    out, stage = scrub(records)
    dest = wd / "out.pcapng"
    write_capture(dest, out)
    data = dest.read_bytes()
    for item, needles in SECRETS.items():
        for needle in needles:
            assert needle not in data, (item, needle)
    back = read_all(dest)
    assert packets(back) == packets(records)           # frames, link types, timestamps, lengths, interfaces
    kinds = [r[5] for r in back if r[1] == META]
    assert kinds == [SHB, IDB, IDB, 0x00012345, ISB] * 2
    with CaptureReader(dest) as reader:
        list(reader.batches())
        assert reader.interface_table == [[(1, 65535, 9, 3600), (101, 0, 6, 0)]] * 2
    for rec, e in zip([r for r in back if r[5] == IDB and r[1] == META][::2], "<>"):
        codes = [c for c, _ in parse_options(rec[0][8:], e)]
        assert codes == [8, 9, 13, 14]
    pkt_opts = [r[5] for r in back if r[1] >= 0]
    assert [parse_options(b[1], e) for b, e in zip(pkt_opts, "<<<>>>")] == [
        [(2, struct.pack(e, 1))] if i % 3 == 0 else [(2, struct.pack(e, 2))] if i % 3 == 1 else []
        for i, e in enumerate(["<I"] * 3 + [">I"] * 3)]
    assert pkt_opts[1][2] == 7                           # PB drops count kept
    assert stage.report() == {"comments": 10, "custom_options": 4, "custom_blocks": 4,
                              "decryption_secrets_blocks": 2, "interface_strings": 18,
                              "name_resolution_blocks": 2, "section_strings": 6}


@pytest.mark.parametrize("kept", sorted(SCRUB_ITEMS))
def test_each_item_off_keeps_exactly_its_metadata(wd, rich, kept):
    options = {k: k != kept for k in SCRUB_ITEMS}
    out, stage = scrub(read_all(rich), **options)
    dest = wd / "out.pcapng"
    write_capture(dest, out)
    data = dest.read_bytes()
    for item, needles in SECRETS.items():
        for needle in needles:
            if needle == b"SECRET-CUSTOM-OPTION":
                continue                                  # custom options go with comments or custom blocks
            assert (needle in data) == (item == kept), (item, needle)
    assert packets(read_all(dest)) == packets(read_all(rich))


def test_all_items_off_is_an_identity_without_hashes(rich):
    records = read_all(rich)
    out, stage = scrub(records, **{k: False for k in SCRUB_ITEMS})
    assert out == records and all(a is b for a, b in zip(out, records))
    assert stage.report() == {}


def test_nothing_to_scrub_passes_the_same_tuples(wd):
    e = "<"
    f = udp4_frame("192.0.2.1", "192.0.2.2", 1, 2, payload=b"x")
    records = [(make_shb_body(e), META, 0, 0, 0, SHB), (make_idb_body(1, 0, e, build_options([(9, b"\x06")], e)),
               META, 0, 0, 0, IDB), (f, 1, 5, len(f), 0, (EPB, build_options([(2, b"\1\0\0\0")], e))),
               (f, 1, 6, len(f), 0, (3, b""))]
    out, stage = scrub(records)
    assert all(a is b for a, b in zip(out, records)) and len(out) == 4
    assert stage.report() == {}


def test_packet_hashes_dropped_whatever_the_items():
    e = "<"
    f = b"\x11" * 40
    digest = b"\x02" + bytes(16)                             # hash algorithm 2 (MD5) + the original's digest
    recs = [(make_shb_body(e), META, 0, 0, 0, SHB),
            (f, 1, 1, 40, 0, (EPB, build_options([(2, b"\1\0\0\0"), (3, digest)], e))),
            (f, 1, 2, 40, 0, (PB, build_options([(3, digest)], e), 0))]
    for items in ({}, {k: False for k in SCRUB_ITEMS}):
        out, stage = scrub(recs, **items)
        assert parse_options(out[1][5][1], e) == [(2, b"\1\0\0\0")]
        assert out[2][5] == (PB, b"", 0)
        assert stage.report() == {"packet_hashes": 2}


def test_option_codes_the_spec_does_not_define_are_dropped_with_custom_data(wd):
    e = "<"
    f = b"\x22" * 30
    recs = [(make_shb_body(e, build_options([(0x8001, b"LOCAL-SHB"), (4, b"app")], e)), META, 0, 0, 0, SHB),
            (make_idb_body(1, 0, e, build_options([(9, b"\x06"), (40, b"FUTURE-IDB")], e)), META, 0, 0, 0, IDB),
            (f, 1, 1, 30, 0, (EPB, build_options([(291, b"try this one"), (2, b"\0\0\0\0"),
                                                  (33059, b"and this one")], e)))]
    out, stage = scrub(recs, section_strings=False)
    dest = wd / "o.pcapng"
    write_capture(dest, out)
    data = dest.read_bytes()
    for needle in (b"LOCAL-SHB", b"FUTURE-IDB", b"try this one", b"and this one"):
        assert needle not in data
    assert b"app" in data
    assert parse_options(out[2][5][1], e) == [(2, b"\0\0\0\0")]
    assert stage.report() == {"unknown_options": 4}
    kept, stage = scrub(recs, comments=False, custom_blocks=False, section_strings=False)
    assert kept == recs and stage.report() == {}


def test_pcap_and_modified_pcap_records_untouched():
    recs = [(b"abc", 1, 1, 3, 0, None), (b"abcd", 1, 2, 4, 0, (0, b"\1\0\0\0SECR"))]
    out, stage = scrub(recs)
    assert out == recs and stage.report() == {}


def test_malformed_option_lengths_do_not_crash_and_comment_still_goes():
    e = "<"
    # a comment, then an option whose length runs past the end of the buffer
    opts = struct.pack("<HH", 1, 6) + b"SECRET\0\0" + struct.pack("<HH", 2, 400) + b"\1\0"
    f = b"\0" * 20
    recs = [(make_shb_body(e), META, 0, 0, 0, SHB), (f, 1, 1, 20, 0, (EPB, opts))]
    out, stage = scrub(recs)
    assert b"SECRET" not in out[1][5][1]
    assert stage.report() == {"comments": 1}


def test_run_job_adds_scrub_by_default_and_keep_metadata_turns_it_off(wd, rich):
    temp = wd / "temp"
    temp.mkdir()
    settings = Settings(temp_root=str(temp), parallel_jobs=1)
    result = run_job(Job(rich, wd / "out", ["dedup"]), settings)
    assert result.status == "ok", result.error
    assert result.stages["scrub"]["name_resolution_blocks"] == 2
    data = Path(result.output).read_bytes()
    assert all(n not in data for needles in SECRETS.values() for n in needles)

    settings.keep_metadata = True
    kept = run_job(Job(rich, wd / "kept", ["dedup"]), settings)
    assert kept.status == "ok", kept.error
    assert "scrub" not in kept.stages
    assert Path(kept.output).read_bytes() == rich.read_bytes()      # no duplicates, no scrub: byte-exact

    settings.keep_metadata = False
    settings.scrub = {**settings.scrub, "comments": False}
    partial = run_job(Job(rich, wd / "partial", ["dedup"]), settings)
    data = Path(partial.output).read_bytes()
    assert b"SECRET-EPB-COMMENT" in data and b"intranet.corp.example" not in data
    assert [p for p in temp.iterdir()] == []


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_reads_the_scrubbed_file_and_sees_no_comment(wd, rich):
    out, _ = scrub(read_all(rich))
    dest = wd / "out.pcapng"
    write_capture(dest, out)
    proc = subprocess.run(["tshark", "-r", str(dest), "-T", "fields", "-e", "frame.comment",
                           "-e", "frame.len"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert len(rows) == 6 and all(r[0] == "" for r in rows)


@pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is absent (fresh clone)")
@pytest.mark.parametrize("name, removed", [
    ("pcapngtest__le_basic_test009.pcapng", "comments"),
    ("pcapngtest__le_advanced_test100.pcapng", "name_resolution_blocks"),
    ("pcapngtest__be_basic_test018.pcapng", "custom_blocks"),
])
def test_corpus_metadata_removed_packets_intact(wd, name, removed):
    src = wd / name
    shutil.copyfile(CORPUS / name, src)
    records = read_all(src)
    out, stage = scrub(records)
    assert stage.report().get(removed, 0) > 0
    dest = wd / "out.pcapng"
    write_capture(dest, out)
    back = read_all(dest)
    assert packets(back) == packets(records)
    assert not [r for r in back if r[1] == META and r[5] in (NRB, DSB, CB_COPY, CB_NOCOPY)]
    assert not any(code == 1 for r in back if r[1] >= 0 and r[5] and r[5][0] in (EPB, PB)
                   for code, _ in parse_options(r[5][1], "<" if "le_" in name else ">"))
    data = dest.read_bytes()
    for needle in (b"test009-1", b"try this one", b"and this one", b"fake"):
        assert needle not in data


def test_comments_in_kept_nrb_and_dsb_are_removed(wd):
    e = ">"
    nrb = _nrb(e) + build_options([(1, b"SECRET-NRB-COMMENT"), (2, b"dns.example")], e)
    secrets = b"CLIENT_RANDOM aa bb\n"
    dsb = struct.pack(e + "II", 0x544C534B, len(secrets)) + secrets + build_options([(1, b"SECRET-DSB-COMMENT")], e)
    records = [(make_shb_body(e), META, 0, 0, 0, SHB), (nrb, META, 0, 0, 0, NRB), (dsb, META, 0, 0, 0, DSB)]
    out, stage = scrub(records, name_resolution=False, decryption_secrets=False)
    dest = wd / "out.pcapng"
    write_capture(dest, out)
    data = dest.read_bytes()
    assert b"SECRET-NRB-COMMENT" not in data and b"SECRET-DSB-COMMENT" not in data
    assert b"intranet.corp.example" in data and b"dns.example" in data and secrets in data
    back = [r for r in read_all(dest)]
    assert [r[5] for r in back] == [SHB, NRB, DSB]
    assert back[1][0] == _nrb(e) + build_options([(2, b"dns.example")], e)
    assert stage.report() == {"comments": 2}


def test_damaged_nrb_and_dsb_bodies_pass_without_crash():
    e = "<"
    records = [(make_shb_body(e), META, 0, 0, 0, SHB),
               (struct.pack("<HH", 1, 400) + b"\1\2", META, 0, 0, 0, NRB),            # record runs past the end
               (struct.pack("<II", 1, 0xFFFFFFF0) + b"x", META, 0, 0, 0, DSB),        # secrets length too big
               (b"\1\0", META, 0, 0, 0, DSB)]
    out, stage = scrub(records, name_resolution=False, decryption_secrets=False)
    assert out == records and stage.report() == {}
