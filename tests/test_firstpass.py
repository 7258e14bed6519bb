"""The first pass on two cores (firstpass.py): a follower pre-scans the second half while the leader pre-scans
the first; whether the leader makes that result its own or reads the half itself, the output, the counts,
the report and the warnings are the one-core run's. Captures are made hostile at the boundary: directions
open across it, duplicates of first-half frames after it (in directions walked again and not), fragments
open across it, a connection restarted at a SYN, a capture carried in a payload where the boundary is
guessed, a damaged second half. (A follower killed while it pre-scans: tests/test_segments.py.)
"""
from __future__ import annotations

import logging
import random
import re
import struct
from pathlib import Path

import pytest
from helpers import leftovers
from test_segments import _run, _same, write_pcap, write_pcapng

from pktmask_gui import firstpass
from pktmask_gui.capture import CaptureReader, make_pcap_header
from pktmask_gui.capturewriter import CaptureWriter
from pktmask_gui.samplegen import iter_frames

LANDED = "made the leader's"
READ_ON = "The first pass reads the second half too"


@pytest.fixture
def env(split_env):
    return split_env


def _write(path: Path, frames: list) -> Path:
    with open(path, "wb") as fh:
        writer = CaptureWriter(fh, "pcap", make_pcap_header(1, 262144))
        writer.write_batch([(g, 1, 1_700_000_000_000_000 + i * 1000, len(g), 0, None) for i, g in enumerate(frames)])
        writer.close()
    return path


def _both(src: Path, workdir: Path, settings, stages, caplog, name: str = "x"):
    one = _run(src, workdir / f"{name}-one", settings, stages, 1)
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="pktmask_gui")
    two = _run(src, workdir / f"{name}-two", settings, stages, 2, fork=True)
    _same(one, two)
    assert not leftovers(workdir / "temp", workdir / f"{name}-two")
    return one, caplog.text


SETS = [["mask"], ["dedup", "mask"], ["dedup", "anonymize", "mask"]]


@pytest.mark.parametrize("stages", SETS, ids=["+".join(s) for s in SETS])
def test_the_follower_pre_scans_the_second_half_and_the_bytes_are_one_cores(env, stages, caplog):
    workdir, settings = env
    src = write_pcap(workdir / "mix.pcap", 12000)
    _, log = _both(src, workdir, settings, stages, caplog)
    assert LANDED in log and "frames walked again" in log
    assert "The main pass runs on 2 segments" in log


def test_one_progress_bar_that_moves_through_the_first_pass(env, monkeypatch):
    """While the follower pre-scans the second half, the leader's progress over its own part stands for the
    first pass: the bar reaches the first pass's end before the main pass, and never goes back."""
    from pktmask_gui import pipeline

    monkeypatch.setattr(pipeline, "PROGRESS_INTERVAL", 0.0)      # every batch reported (the fork has it too)
    workdir, settings = env
    src = write_pcap(workdir / "mix.pcap", 12000)
    seen = []
    result = _run(src, workdir / "out", settings, ["dedup", "mask"], 2, fork=True,
                  progress=lambda phase, done, total, packets: seen.append((phase, done, total)))
    assert result.status == "ok"
    first = [done / total for phase, done, total in seen if phase == "prescan"]
    # the first pass's share of the bar: 1 of 3 (pipeline._execute's weights: a pre-scan 1, the main pass
    # 2 without a self-check); without the leader's part standing for the whole it would end near 0.17
    assert first and max(first) == pytest.approx(1 / 3, abs=0.01)
    assert all(b >= a for a, b in zip(first, first[1:]))


def test_pcapng_sections_read_on_when_the_header_blocks_differ(env, caplog):
    workdir, settings = env
    src = write_pcapng(workdir / "three.pcapng", 9000)
    _, log = _both(src, workdir, settings, ["dedup", "anonymize", "mask"], caplog)
    assert READ_ON in log or LANDED in log


def test_a_one_section_pcapng_lands(env, caplog):
    workdir, settings = env
    frames = [f for _, f, _ in iter_frames(8000, seed=11)]
    src = workdir / "one.pcapng"
    from pktmask_gui.capture import EPB, IDB, META, SHB, make_idb_body, make_shb_body
    with open(src, "wb") as fh:
        writer = CaptureWriter(fh, "pcapng")
        writer.write_batch([(make_shb_body(), META, 0, 0, 0, SHB), (make_idb_body(1, 262144), META, 0, 0, 0, IDB)]
                           + [(f, 1, 1000 * i, len(f), 0, (EPB, b"")) for i, f in enumerate(frames)])
        writer.close()
    _, log = _both(src, workdir, settings, ["dedup", "mask"], caplog)
    assert LANDED in log


def _tcp(f):
    if f[12:14] != b"\x08\x00" or f[23] != 6:
        return None
    return 14 + (f[14] & 15) * 4


def test_duplicates_of_the_first_half_after_the_boundary(env, caplog):
    """Copies of first-half frames spread over the second half: ACKs and UDP (only the frame numbers move),
    data of directions open across the boundary (walked again without them)."""
    workdir, settings = env
    frames = [f for _, f, _ in iter_frames(10000, seed=21)]
    rng = random.Random(4)
    cut = len(frames) * 45 // 100
    second = frames[cut:]
    no_syn = [f for f in frames[:cut] if not (_tcp(f) and f[_tcp(f) + 13] & 2)]
    copies = rng.sample(no_syn[-300:], 60) + rng.sample(no_syn, 60)
    for f in copies:
        second.insert(rng.randrange(len(second) // 2, len(second)), f)
    src = _write(workdir / "dups.pcap", frames[:cut] + second)
    one, log = _both(src, workdir, settings, ["dedup", "anonymize", "mask"], caplog)
    assert one.packets_in - one.packets_out >= 120
    assert LANDED in log
    assert int(re.search(r"walked again, (\d+) duplicates of the first half", log)[1]) >= 100


def _sharing_a_closed_keys_bit() -> tuple[int, str]:
    """A port P and an address D: the directions 10.77.0.1:P -> 10.77.0.2:443 and 10.88.0.1:40000 -> D:443
    share a bit of Mask Payloads' closed-keys bitmap. CRC-32 is linear: keys that differ in one field only
    never meet; two fields varied, they do."""
    from zlib import crc32

    from pktmask_gui.stages.mask_prescan import CLOSED_BITS

    def bit(a: str, b: str, sport: int) -> int:
        key = bytes(map(int, a.split("."))) + bytes(map(int, b.split("."))) + struct.pack("!HH", sport, 443)
        return crc32(key) & (CLOSED_BITS - 1)

    plain = {bit("10.77.0.1", "10.77.0.2", p): p for p in range(1024, 17408)}
    dst = next(f"10.88.{a}.{b}" for a in range(64) for b in range(1, 255) if bit("10.88.0.1", f"10.88.{a}.{b}", 40000)
               in plain)
    return plain[bit("10.88.0.1", dst, 40000)], dst


def test_a_direction_closed_in_the_second_half_makes_a_later_mid_stream_start_strict(env, caplog):
    """Mask Payloads' closed-keys bitmap: a connection (SYN ... FIN) in the second half, then a direction met
    mid-stream whose key shares its bit. One core starts the latter strict (its first bytes are a record
    header only when confirmed); the leader replays the follower's closes among the records it walks again,
    so its walk starts strict too, and the file lands."""
    from pktmask_gui import samplegen as sg

    pport, dst = _sharing_a_closed_keys_bit()
    sport = 40000
    syn, psh, fin = sg.SYN, sg.PSH | sg.ACK, sg.FIN | sg.ACK
    connection = [sg.tcp4_frame("10.77.0.1", "10.77.0.2", pport, 443, 100, 0, syn),
                  sg.tcp4_frame("10.77.0.2", "10.77.0.1", 443, pport, 500, 101, syn | sg.ACK),
                  sg.tcp4_frame("10.77.0.1", "10.77.0.2", pport, 443, 101, 501, psh, b"GET / HTTP/1.1\r\n\r\n"),
                  sg.tcp4_frame("10.77.0.1", "10.77.0.2", pport, 443, 121, 501, fin),
                  sg.tcp4_frame("10.77.0.2", "10.77.0.1", 443, pport, 501, 122, fin),
                  sg.tcp4_frame("10.77.0.1", "10.77.0.2", pport, 443, 122, 502, sg.ACK)]
    # a record header at the start, and no second header after it: kept when the start is trusted, zeroed
    # when it needs confirming (strict)
    first = sg.tls_record(0x17, bytes(5)) + b"\x99" * 60
    midstream = [sg.tcp4_frame("10.88.0.1", dst, sport, 443, 7000, 9000, psh, first),
                 sg.tcp4_frame("10.88.0.1", dst, sport, 443, 7000 + len(first), 9000, psh, b"\x98" * 80)]
    workdir, settings = env
    frames = [f for _, f, _ in iter_frames(10000, seed=23)]
    at = len(frames) * 7 // 10
    src = _write(workdir / "bit.pcap", frames[:at] + connection + frames[at:at + 500] + midstream + frames[at + 500:])
    one, log = _both(src, workdir, settings, ["mask"], caplog)
    assert LANDED in log
    with CaptureReader(one.output) as reader:
        out = [rec[0] for batch in reader.batches() for rec in batch]
    assert out[at + 6 + 500][54:59] == bytes(5)         # one core started it strict: the header went too


def test_a_download_open_across_the_boundary_is_walked_again_from_the_followers_file(env, caplog, monkeypatch):
    """A long TLS download from the first half on: its second-half records are most of that half. The follower
    writes them to a file beside the staged output, not memory (the bound on what it keeps in memory, here a
    few records' worth, does not apply), and the leader walks them again from it. One of them was cut by the
    snap length (the pre-scan marks a hole there, by the frame's length on the wire, and the stream goes on;
    read back with its captured length, the rest waited behind it and a FIN could not close the direction),
    and a segment is re-sent after the FIN. The bytes and the report are one core's."""
    monkeypatch.setattr(firstpass, "RECORDS_MAX", 1000)     # (the fork inherits it)
    from pktmask_gui import samplegen as sg

    c, srv, port = "10.50.0.2", "198.51.100.7", 50001
    hello = sg.tls_client_hello("bulk.example.test", bytes(32))
    server = sg.tls_record(0x16, sg.tls_handshake(2, b"\x03\x03" + bytes(32) + b"\x00\x13\x01\x00\x00\x00"))
    start = [sg.tcp4_frame(c, srv, port, 443, 1000, 0, sg.SYN),
             sg.tcp4_frame(srv, c, 443, port, 5000, 1001, sg.SYN | sg.ACK),
             sg.tcp4_frame(c, srv, port, 443, 1001, 5001, sg.PSH | sg.ACK, hello),
             sg.tcp4_frame(srv, c, 443, port, 5001, 1001 + len(hello), sg.PSH | sg.ACK, server)]
    seq, body = 5001 + len(server), bytes(range(256)) * 4
    download = []
    for k in range(6000):
        record = sg.tls_record(0x17, body[:900 + k % 100])
        download.append(sg.tcp4_frame(srv, c, 443, port, seq, 1001 + len(hello), sg.PSH | sg.ACK, record))
        seq += len(record)
    fin = sg.tcp4_frame(srv, c, 443, port, seq, 1001 + len(hello), sg.FIN | sg.ACK)
    download += [fin, download[5995]]
    workdir, settings = env
    mix = [f for _, f, _ in iter_frames(6000, seed=24)]
    frames = start + [f for pair in zip(mix, download) for f in pair] + download[len(mix):]
    wire = [len(f) for f in frames]
    cut = frames.index(download[5990])
    frames[cut] = frames[cut][:200]                 # cut by a snap length of 200 bytes
    src = workdir / "download.pcap"
    with open(src, "wb") as fh:
        writer = CaptureWriter(fh, "pcap", make_pcap_header(1, 262144))
        writer.write_batch([(g, 1, 1_700_000_000_000_000 + i * 1000, w, 0, None)
                            for i, (g, w) in enumerate(zip(frames, wire))])
        writer.close()
    one, log = _both(src, workdir, settings, ["mask"], caplog)    # (Remove Dupes would drop the re-sent one)
    assert LANDED in log
    assert int(re.search(r"(\d+) frames walked again", log)[1]) >= 2500


def test_a_connection_open_at_the_boundary_ends_at_its_new_syn_not_before(env, caplog):
    """A connection open at the boundary whose 4-tuple comes again with a new SYN late in the second half, and
    before that SYN a direction met mid-stream whose closed-keys bit is the connection's. One core closes the
    connection at the SYN, after the mid-stream start: that start is not strict (its record header stays).
    The leader ends the connection at that frame among the records it walks again, not before them."""
    from pktmask_gui import samplegen as sg

    pport, dst = _sharing_a_closed_keys_bit()
    psh = sg.PSH | sg.ACK
    opened = [sg.tcp4_frame("10.77.0.1", "10.77.0.2", pport, 443, 100, 0, sg.SYN),
              sg.tcp4_frame("10.77.0.2", "10.77.0.1", 443, pport, 500, 101, sg.SYN | sg.ACK),
              sg.tcp4_frame("10.77.0.1", "10.77.0.2", pport, 443, 101, 501, psh, b"GET / HTTP/1.1\r\n\r\n")]
    again = [sg.tcp4_frame("10.77.0.1", "10.77.0.2", pport, 443, 90000, 0, sg.SYN),
             sg.tcp4_frame("10.77.0.2", "10.77.0.1", 443, pport, 70000, 90001, sg.SYN | sg.ACK)]
    first = sg.tls_record(0x17, bytes(5)) + b"\x99" * 60
    midstream = [sg.tcp4_frame("10.88.0.1", dst, 40000, 443, 7000, 9000, psh, first),
                 sg.tcp4_frame("10.88.0.1", dst, 40000, 443, 7000 + len(first), 9000, psh, b"\x98" * 80)]
    workdir, settings = env
    frames = [f for _, f, _ in iter_frames(10000, seed=25)]
    a, b, c = len(frames) // 10, len(frames) * 7 // 10, len(frames) * 8 // 10
    src = _write(workdir / "reuse.pcap", frames[:a] + opened + frames[a:b] + midstream + frames[b:c] + again
                 + frames[c:])
    one, log = _both(src, workdir, settings, ["mask"], caplog)
    assert LANDED in log
    with CaptureReader(one.output) as reader:
        out = [rec[0] for batch in reader.batches() for rec in batch]
    assert out[b + 3][54:59] == first[:5]           # not strict: the header was kept, as on one core


def test_a_first_half_syn_copied_after_the_boundary_reads_on(env, caplog):
    """A duplicate SYN: the follower starts a fresh direction there, the one-core run drops the frame; the
    follower's walk of that direction cannot stand, so the leader reads the half itself."""
    workdir, settings = env
    frames = [f for _, f, _ in iter_frames(10000, seed=22)]
    cut = len(frames) * 45 // 100
    syn = next(f for f in frames[:cut] if _tcp(f) and f[_tcp(f) + 13] & 2)
    at = len(frames) * 7 // 10
    late = frames[:at] + [syn] + frames[at:]
    src = _write(workdir / "syn.pcap", late)
    _, log = _both(src, workdir, settings, ["dedup", "mask"], caplog)
    assert READ_ON in log


def test_a_connection_restarted_at_a_syn_across_the_boundary(env, caplog):
    """A direction open at the boundary whose next frame after it is a SYN with a new sequence number (port
    reuse), and one whose SYN comes again with the same one (a retransmission: the leader reads on)."""
    workdir, settings = env
    frames = [f for _, f, _ in iter_frames(10000, seed=23)]
    cut = len(frames) * 47 // 100
    open_ = [f for f in frames[cut - 200:cut] if _tcp(f) and len(f) > _tcp(f) + (f[_tcp(f) + 12] >> 4) * 4]
    assert open_
    f = bytearray(open_[-1])
    t = _tcp(f)
    f[t + 13] = 0x02                                        # SYN
    f[t + 4:t + 8] = struct.pack("!I", 0x12345678)          # another sequence number
    at = len(frames) * 6 // 10
    src = _write(workdir / "reuse.pcap", frames[:at] + [bytes(f)] + frames[at:])
    _, log = _both(src, workdir, settings, ["mask"], caplog, "reuse")
    assert LANDED in log or READ_ON in log


def test_fragments_open_across_the_boundary(env, caplog):
    """wildgen's mix carries fragmented datagrams throughout: some are open at the boundary."""
    workdir, settings = env
    src = write_pcap(workdir / "mix.pcap", 16000, seed=9)
    _, log = _both(src, workdir, settings, ["dedup", "anonymize", "mask"], caplog)
    assert LANDED in log or READ_ON in log


def test_a_capture_carried_in_a_payload_where_the_boundary_is_guessed(env, caplog):
    """Frames whose payload is a pcap stream of small records, around the middle: the boundary guess may stop
    inside one; the leader's reader then ends no record there, and the leader reads on."""
    workdir, settings = env
    frames = [f for _, f, _ in iter_frames(6000, seed=24)]
    inner = b"".join(struct.pack("<IIII", 1_700_000_000, 0, 20, 20) + bytes(range(20)) for _ in range(1500))
    carrier = bytes(12) + b"\x88\xb5" + inner[:60000]
    mid = len(frames) // 2
    big = frames[:mid - 40] + [carrier] * 60 + frames[mid - 40:]
    src = _write(workdir / "carried.pcap", big)
    found = firstpass.boundary(str(src))
    with CaptureReader(str(src)) as reader:
        starts = {24}
        for _batch in reader.batches(1):
            starts.add(reader.offset)
    _, log = _both(src, workdir, settings, ["dedup", "mask"], caplog)
    if found is not None and found[0] not in starts:        # fooled: the leader's reader says so
        assert READ_ON + ": no record ends at the boundary" in log


def test_bounds_on_what_the_follower_notes_make_the_leader_read_on(env, caplog, monkeypatch):
    """Too many directions or records to keep: the follower stops, the leader reads the half itself (the
    fork has the patched bounds)."""
    workdir, settings = env
    src = write_pcap(workdir / "mix.pcap", 12000)
    monkeypatch.setattr(firstpass, "DIRECTIONS_MAX", 50)
    _, log = _both(src, workdir, settings, ["dedup", "mask"], caplog, "directions")
    assert READ_ON + ": more than 50 directions in the second half" in log
    monkeypatch.setattr(firstpass, "DIRECTIONS_MAX", 1 << 16)
    monkeypatch.setattr(firstpass, "RECORDS_MAX", 1000)
    _, log = _both(src, workdir, settings, ["mask"], caplog, "records")
    assert READ_ON + ": too many fragment records to walk again" in log


def test_no_boundary_guess_where_the_file_cannot_be_mapped(env, caplog, monkeypatch):
    """A file system without mmap: no guess, the first pass on one core, the same output."""
    workdir, settings = env

    def refuse(*args, **kwargs):
        raise OSError(19, "No such device")

    monkeypatch.setattr(firstpass.mmap, "mmap", refuse)
    assert firstpass.boundary(str(write_pcap(workdir / "mix.pcap", 6000))) is None
    _, log = _both(workdir / "mix.pcap", workdir, settings, ["dedup", "mask"], caplog)
    assert LANDED not in log and "The main pass runs on 2 segments" in log


def test_a_damaged_second_half_fails_as_on_one_core(env):
    workdir, settings = env
    src = write_pcap(workdir / "mix.pcap", 8000)
    data = bytearray(src.read_bytes())
    pos = 24
    while pos < len(data) * 3 // 4:
        pos += 16 + int.from_bytes(data[pos + 8:pos + 12], "little")
    data[pos + 8:pos + 12] = (1 << 30).to_bytes(4, "little")
    bad = workdir / "damaged.pcap"
    bad.write_bytes(bytes(data))
    for stages in (["mask"], ["dedup", "anonymize", "mask"]):
        one = _run(bad, workdir / "one", settings, stages, 1)
        two = _run(bad, workdir / "two", settings, stages, 2, fork=True)
        assert one.status == two.status == "failed"
        assert (one.error, one.error_kind) == (two.error, two.error_kind)
    # --strict and a frame Mask Payloads cannot read in the second half: the same sentence, frame number and all
    frames = [f for _, f, _ in iter_frames(8000, seed=2)]
    at = len(frames) * 5 // 6
    frames.insert(at, bytes(12) + b"\x88\xb5" + bytes(50))
    late = _write(workdir / "late.pcap", frames)
    settings.stage_options["mask"] = {"uninspected": "fail"}
    one = _run(late, workdir / "one", settings, ["dedup", "mask"], 1)
    two = _run(late, workdir / "two", settings, ["dedup", "mask"], 2, fork=True)
    assert one.status == two.status == "failed"
    assert (one.error, one.error_kind) == (two.error, two.error_kind)     # numbered after the drops, as on one core
    assert "Mask Payloads cannot inspect frame" in one.error
    assert not leftovers(workdir / "temp", workdir / "two")


def test_a_cut_short_last_packet_is_reported_at_the_files_offset(env, caplog):
    workdir, settings = env
    src = write_pcap(workdir / "mix.pcap", 8000)
    cut = workdir / "cut.pcap"
    cut.write_bytes(src.read_bytes()[:-7])
    one, log = _both(cut, workdir, settings, ["dedup", "mask"], caplog)
    assert any("cut short" in w for w in one.warnings)
    assert LANDED in log
