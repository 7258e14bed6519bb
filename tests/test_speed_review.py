"""Adversarial review of the speed commits (989552a..): the anonymizer's built-frame self-check, the pcap
frame-span reader, the pipeline's read-back and early write-back, the masker's batched range sums and the
numpy probe of Remove Dupes. Each test feeds real bytes and compares with an independent model or with the
frame-by-frame behaviour the commits promise to keep."""
from __future__ import annotations

import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import leftovers
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pktmask_gui import capture
from pktmask_gui.capture import CaptureError, CaptureReader, CaptureWriter
from pktmask_gui.pipeline import Job, run_job
from pktmask_gui.samplegen import generate
from pktmask_gui.settings import Settings
from pktmask_gui.stages import StageContext, StageError
from pktmask_gui.stages import dedup as dedup_mod
from pktmask_gui.stages import mask as mask_mod
from pktmask_gui.stages.anonymize import AnonymizeStage

KEY = bytes(range(32))

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
VERIFY = REPO.parent / "shared" / "tools" / "verify.py"
FUZZ = hsettings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def frames_of(path: Path) -> list:
    with CaptureReader(path) as reader:
        return [rec for batch in reader.batches() for rec in batch if rec[1] >= 0]


@pytest.fixture
def env(workdir):
    temp_root = workdir / "temp"
    temp_root.mkdir()
    return workdir, temp_root, workdir / "out", Settings(temp_root=str(temp_root), parallel_jobs=1)


# --- 1. the anonymizer's self-check: "the output frame must be the frame built" ---------------------------

def _writer_appending_original(appended: list, change_batch: int = 2):
    """A writer fault: one output frame gets the original (input) frame appended to it (same count); the
    original goes to ``appended``."""
    real = CaptureWriter.write_batch
    calls = []

    def appending(self, records, source=None):
        calls.append(1)
        if len(calls) == change_batch and source is not None:
            records = list(records)
            originals = [r for r in source if r[1] >= 0]
            for i, rec in enumerate(records):
                if rec[1] >= 0 and rec[0] != originals[i][0]:
                    records[i] = (rec[0] + originals[i][0],) + tuple(rec[1:])
                    appended.append(originals[i][0])
                    break
            source = None                   # the records are not the reader's bytes any more
        return real(self, records, source)
    return appending


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_self_check_fails_an_output_frame_longer_than_the_frame_built(env, monkeypatch, fmt):
    """A frame written as the frame built followed by the original frame (addresses and all) fails: the
    check is equality with what was built, and no frame may come out longer than it went in (the old
    field check took the extra bytes for an Ethernet trailer)."""
    workdir, temp_root, out, settings = env
    src = workdir / f"in.{fmt}"
    generate(src, packets=6000, seed=31, fmt=fmt, metadata=fmt == "pcapng", vlan_ratio=0.0)
    appended = []
    monkeypatch.setattr(CaptureWriter, "write_batch", _writer_appending_original(appended))
    result = run_job(Job(src, out, ["anonymize"]), settings)
    assert len(appended) == 1
    if result.status == "ok":               # show what passed: an original frame, addresses and all
        assert appended[0] not in Path(result.output).read_bytes(), "self-check passed an original frame"
    assert result.status == "failed" and "self-check failed" in result.error, result.error
    assert leftovers(temp_root, out) == []


def test_check_spans_with_equal_frames_never_passes_an_original(workdir):
    """Spans: each frame is compared with its own built frame, bounded by its own end (start/end of
    startswith), even when a neighbouring span holds exactly another frame's built bytes."""
    stage = AnonymizeStage({}, StageContext(key=KEY))
    stage.will_check()
    src = workdir / "a.pcap"
    generate(src, packets=50, seed=5, vlan_ratio=0.0, ipv6_ratio=0.0, dup_ratio=0.0)
    recs = frames_of(src)
    built = [r[0] for r in stage.process(recs)]
    assert len(stage._expect) == len(recs)
    # the output: frame 0 swapped for the original of frame 1 placed right after built[0]'s bytes
    buf = b"".join([built[0], recs[1][0]] + built[2:])
    starts, ends, at = [], [], 0
    for d in [built[0], recs[1][0]] + built[2:]:
        starts.append(at)
        at += len(d)
        ends.append(at)
    with pytest.raises(StageError, match="self-check failed: frame 2"):
        stage.check_spans(recs, buf, starts, ends, 1)


def test_expectations_stay_aligned_through_metadata_uninspectable_and_dns_fallbacks(workdir):
    """process() keeps exactly one expectation per packet frame (none per metadata record), whichever path
    it takes: inline, DNS inline, DNS falling back (None), general walk, uninspected (allowed)."""
    eth4 = b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\x08\x00"

    def ipv4_udp(sport, dport, payload):
        udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                         bytes([10, 1, 2, 3]), bytes([10, 9, 8, 7]))
        return eth4 + ip + udp
    dns_ok = ipv4_udp(53, 4000, bytes.fromhex("1234818000010001000000000377777700000100010000010001"
                                              "0000003c00040a0a0a0a") + bytes(8))
    # an EDNS client subnet (a /24 prefix, not a whole address): _dns_frame returns None, the general way
    dns_ecs = ipv4_udp(53, 4000, bytes.fromhex("123481800000000000000001") +
                       bytes.fromhex("000029100000000000") + struct.pack("!H", 11) +
                       struct.pack("!HHHBB", 8, 7, 1, 24, 0) + bytes([10, 20, 30]) + bytes(8))
    plain = ipv4_udp(1234, 5678, bytes(40))
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + bytes(28) + bytes(18)
    garbage = eth4 + b"\x46" + bytes(13)                                  # IPv4 header cut short
    meta = (b"meta", -1, 0, 0, 0, (1, None))
    recs = [(d, 1, i, len(d), 0, None) for i, d in enumerate([dns_ok, dns_ecs, plain, arp, garbage])]
    recs.append((bytes(40), 147, 9, 40, 0, None))                  # link type USER0: uninspected
    stage = AnonymizeStage({"allow_uninspected": True}, StageContext(key=KEY))
    stage.will_check()
    batch = recs[:2] + [meta] + recs[2:]
    out = stage.process(batch)
    packets = [r for r in out if r[1] >= 0]
    assert len(stage._expect) == len(recs)
    assert [e != () for e in stage._expect] == [True, False, True, False, False, False]
    assert stage._uninspected == 1 and packets[1][0] != dns_ecs     # the ECS prefix mapped the general way
    stage.check(recs, packets)              # its own output passes
    assert stage._expect == []
    stage.process(recs)                     # the same frames again: numbered on, 7 to 12
    with pytest.raises(StageError, match="self-check failed: frame 8:"):
        stage.check(recs, [packets[0], recs[1]] + packets[2:])      # the original of the ECS frame fails


# --- 2. CaptureReader.frame_spans(): the same frames, notes and errors as batches() ------------------------

def _pcap_bytes(e: str, kind: str, frames: list, linktype: int = 1) -> bytes:
    magic = {"us": 0xA1B2C3D4, "ns": 0xA1B23C4D, "modified": 0xA1B2CD34}[kind]
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 0, linktype)]      # snaplen 0: no snaplen limit
    for i, (data, extra) in enumerate(frames):
        out.append(struct.pack(e + "IIII", 1000 + i, i % 1000, len(data), len(data) + extra))
        if kind == "modified":
            out.append(struct.pack(e + "IHBx", 2, 0x0800, i & 0xFF))
        out.append(data)
    return b"".join(out)


def _read_both(path: Path, max_records: int):
    """(frames, packets, warnings, error text) by batches() and by frame_spans()."""
    results = []
    for spans in (False, True):
        got, error = [], None
        reader = CaptureReader(path)
        try:
            if spans:
                for buf, starts, ends in reader.frame_spans(max_records):
                    assert len(starts) == len(ends) <= max_records
                    got += [bytes(buf[a:b]) for a, b in zip(starts, ends)]
            else:
                for batch in reader.batches(max_records):
                    got += [bytes(r[0]) for r in batch]
        except CaptureError as exc:
            error = str(exc)
        finally:
            reader.close()
        results.append((got, reader.packets, list(reader.warnings), error))
    return results


@FUZZ
@given(e=st.sampled_from("<>"), kind=st.sampled_from(["us", "ns", "modified"]),
       sizes=st.lists(st.one_of(st.integers(0, 80), st.integers(80, 3000), st.just(0), st.integers(5000, 20000)),
                      max_size=40),
       chunk=st.sampled_from([64, 100, 257, 1024, 4096]), max_records=st.integers(1, 9),
       cut=st.one_of(st.none(), st.integers(1, 30)), seed=st.integers(0, 1 << 30))
def test_frame_spans_equal_batches_on_random_pcaps(workdir, monkeypatch, e, kind, sizes, chunk, max_records,
                                                   cut, seed):
    """Records crossing buffer ends, larger than the read chunk, caplen 0, both byte orders, nanosecond and
    modified pcaps, a last record cut short: frame_spans() gives batches()' frames, count and notes."""
    rng = random.Random(seed)
    frames = [(rng.randbytes(n), rng.choice([0, 0, 7])) for n in sizes]
    data = _pcap_bytes(e, kind, frames)
    if cut is not None:
        data = data[:max(24, len(data) - cut)]
    path = workdir / "r.pcap"
    path.write_bytes(data)
    monkeypatch.setattr(capture, "CHUNK", chunk)
    by_batches, by_spans = _read_both(path, max_records)
    assert by_spans == by_batches


@pytest.mark.parametrize("caplen", [capture.MAX_CAPLEN + 1, 0xFFFFFFFF])
@pytest.mark.parametrize("where", ["first", "later", "last"])
def test_frame_spans_refuse_an_absurd_length_as_batches_do(workdir, monkeypatch, caplen, where):
    monkeypatch.setattr(capture, "CHUNK", 256)
    good = [(bytes([i]) * 100, 0) for i in range(6)]
    data = bytearray(_pcap_bytes("<", "us", good))
    index = {"first": 0, "later": 3, "last": 5}[where]
    struct.pack_into("<I", data, 24 + index * 116 + 8, caplen)
    struct.pack_into("<I", data, 24 + index * 116 + 12, caplen)
    path = workdir / "absurd.pcap"
    path.write_bytes(bytes(data))
    by_batches, by_spans = _read_both(path, 4)
    assert by_batches[3] and "limit" in by_batches[3]
    assert by_spans[3] == by_batches[3]


def test_frame_spans_follow_a_file_that_grows_while_read(workdir, monkeypatch):
    """The self-check's reader over a file being written (as _FollowFile serves it: whole reads, short
    only at the end): every frame, in order, none twice."""
    monkeypatch.setattr(capture, "CHUNK", 300)
    frames = [(bytes([i & 0xFF]) * (i * 37 % 900), 0) for i in range(200)]
    data = _pcap_bytes("<", "us", frames)
    path = workdir / "grow.pcap"
    path.write_bytes(b"")

    class Growing:
        def __init__(self):
            self.fh = open(path, "rb", buffering=0)     # noqa: SIM115 (closed by the reader)
            self.written = 0
            self.pos = 0

        def read(self, n):
            want = self.pos + n
            while self.written < min(want, len(data)):     # the "main pass" writes 97 bytes at a time
                with open(path, "ab") as out:
                    out.write(data[self.written:self.written + 97])
                self.written = min(len(data), self.written + 97)
            got = b""
            while len(got) < n:
                part = self.fh.read(n - len(got))
                if not part:
                    break
                got += part
            self.pos += len(got)
            return got

        def close(self):
            self.fh.close()
    follow = Growing()
    with CaptureReader(path, fileobj=follow) as reader:
        got = [buf[a:b] for buf, starts, ends in reader.frame_spans(7) for a, b in zip(starts, ends)]
    assert got == [f[0] for f in frames]


# --- 5. Remove Dupes' numpy probe: the decisions of frame-by-frame probing --------------------------------

@FUZZ
@given(slots=st.integers(16, 400), tail=st.sampled_from([0, 3, 32]), seed=st.integers(0, 1 << 30),
       pool=st.integers(1, 60), crcs=st.integers(1, 3), n=st.integers(0, 300))
def test_digest_table_add_answers_as_a_set_does(monkeypatch, slots, tail, seed, pool, crcs, n):
    """Keys from a small pool (many equal keys in one call, fingerprints equal with other CRCs, negative
    fingerprints, chains wrapping past the table's end): add() reports exactly the keys already known."""
    dedup_mod._numpy()
    np = dedup_mod.np
    monkeypatch.setattr(dedup_mod, "_TAIL", tail)
    rng = random.Random(seed)
    table = dedup_mod._DigestTable(slots)
    fps = [rng.choice([1, -1]) * rng.randrange(1, 1 << 62) for _ in range(pool)]
    fps += [slots * rng.randrange(1, 5) - 1 for _ in range(3)]       # homes at the last slot
    seen = set()
    for _round in range(4):
        room = table.limit - table.count
        m = min(n, room)
        if m <= 0:
            break
        keys = [(rng.choice(fps), rng.randrange(crcs)) for _ in range(m)]
        expected = []
        new = 0
        for k, key in enumerate(keys):
            if key in seen:
                expected.append(k)
            else:
                seen.add(key)
                new += 1
                if new > room:
                    break
        keys = keys[:k + 1] if new > room else keys
        expected = [k for k in expected if k < len(keys)]
        f = np.array([key[0] for key in keys], np.int64)
        c = np.array([key[1] for key in keys], np.uint32)
        assert table.add(f, c) == expected
        assert table.count == len(seen)
        assert all(table.contains(a, b) for a, b in seen)
        assert sorted(table.find(f, c)) == list(range(len(keys)))
        if new > room or m < n:
            break
    fpv = table.fpv
    assert int((fpv != 0).sum()) == len(seen)


def _dedup_model(batches, releases, window, min_slots, first_slots):
    """Frame-by-frame Remove Dupes, written from its contract: sets instead of tables, the same growth and
    generation rules (a generation ends when its table would grow at WINDOW or more unique frames)."""
    load = dedup_mod.LOAD
    cur, prev, slots, windowed = set(), None, None, False
    out = []
    for b, batch in enumerate(batches):
        if b in releases and not windowed:
            windowed = True
            if slots is not None and len(cur) >= window:
                prev, cur, slots = cur, set(), min_slots
            elif slots is not None and len(cur) * 4 < slots and slots > min_slots:
                slots = max(min_slots, int(len(cur) / load) + 1)
        if slots is None:
            slots = first_slots
        kept = []
        for rec in batch:
            if rec[1] < 0:
                kept.append(rec)
                continue
            key = (rec[1], rec[0])
            if key in cur or (prev is not None and key in prev):
                continue
            cur.add(key)
            kept.append(rec)
            if len(cur) > int(slots * load):
                if windowed and len(cur) >= window:
                    prev, cur, slots = cur, set(), min_slots
                else:
                    slots *= 2
        out.append(kept)
    return out


@FUZZ
@given(seed=st.integers(0, 1 << 30), sizes=st.lists(st.integers(0, 400), min_size=1, max_size=8),
       pool=st.integers(2, 400), meta=st.booleans(), linktypes=st.sampled_from([(1,), (1, 101), (1, 113, 0)]),
       releases=st.sets(st.integers(0, 7), max_size=2), window=st.sampled_from([60, 100, 250]))
def test_dedup_stage_decides_as_frame_by_frame_probing(monkeypatch, seed, sizes, pool, meta, linktypes,
                                                       releases, window):
    """Whole batches through the numpy probe: growth inside a batch, metadata records, mixed link types,
    window mode (two generations) switched on between batches: the same frames kept as the model."""
    monkeypatch.setattr(dedup_mod, "MIN_SLOTS", 64)
    monkeypatch.setattr(dedup_mod, "WINDOW", window)
    monkeypatch.setattr(dedup_mod._DigestTable.__init__, "__defaults__", (64,))
    rng = random.Random(seed)
    frames = [(rng.randbytes(rng.choice([1, 20, 70, 200])), rng.choice(linktypes)) for _ in range(pool)]
    batches = []
    for size in sizes:
        batch = []
        for _ in range(size):
            if meta and rng.random() < 0.05:
                batch.append((b"\x01\x02\x03\x04", -1, 0, 0, 0, (6, None)))
            data, lt = rng.choice(frames)
            batch.append((data, lt, 0, len(data), 0, None))
        batches.append(batch)
    stage = dedup_mod.DedupStage({}, None)
    got = []
    for b, batch in enumerate(batches):
        if b in releases:
            stage.release_memory()
        got.append(list(stage.process(batch)))
    expected = _dedup_model(batches, releases, window, 64, 64)
    assert [[(r[0], r[1]) for r in batch] for batch in got] == \
        [[(r[0], r[1]) for r in batch] for batch in expected]
    replay = stage.replayer()
    again = [list(replay.process(batch)) for batch in batches]
    assert [[(r[0], r[1]) for r in batch] for batch in again] == \
        [[(r[0], r[1]) for r in batch] for batch in expected]


# --- 4. Mask Payloads' batched range sums: checksums right stay right, wrong stay wrong, bytes unchanged -----

def _fold(total: int) -> int:
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _osum16(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    return _fold(sum(struct.unpack(f"!{len(data) // 2}H", data)))


def _residual(frame: bytes, o: int, v6: bool, proto: int) -> int:
    """Ones'-complement sum of pseudo-header + segment (0xFFFF when the transport checksum is right)."""
    t = o + (40 if v6 else 20)
    if v6:
        src, dst = frame[o + 8:o + 24], frame[o + 24:o + 40]
    else:
        src, dst = frame[o + 12:o + 16], frame[o + 16:o + 20]
    seg = frame[t:]
    pseudo = src + dst + struct.pack("!IxxxB", len(seg), proto) if v6 else \
        src + dst + struct.pack("!xBH", proto, len(seg) & 0xFFFF)
    total = _osum16(pseudo) + _osum16(seg)
    if not v6 and len(seg) > 0xFFFF:                  # TSO frame: the length the checksum would take
        total += len(seg) >> 16
    return _fold(total)


def _frame(rng, v6: bool, vlan: bool, proto: int, size: int, state: str, tso: bool = False) -> tuple:
    eth = b"\x02" * 6 + b"\x04" * 6 + (b"\x81\x00\x00\x07" if vlan else b"")
    o = len(eth) + 2
    body = rng.randbytes(size)
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", 40000 + rng.randrange(1000), 8080, rng.randrange(1 << 32), 0, 0x50,
                         0x18, 1000, 0, 0) + body
        cs_at = 16
    else:
        l4 = struct.pack("!HHHH", 40000 + rng.randrange(1000), 9999, 8 + len(body), 0) + body
        cs_at = 6
    if v6:
        ip = struct.pack("!IHBB", 0x60000000, len(l4), proto, 64) + rng.randbytes(32)
        frame = bytearray(eth + b"\x86\xdd" + ip + l4)
    else:
        tot = 0 if tso else 20 + len(l4)
        ip = bytearray(struct.pack("!BBHHHBBH", 0x45, 0, tot, 1, 0, 64, proto, 0) + rng.randbytes(8))
        struct.pack_into("!H", ip, 10, 0xFFFF - _osum16(bytes(ip)))
        frame = bytearray(eth + b"\x08\x00" + ip + l4)
    t = o + (40 if v6 else 20)
    if not (proto == 17 and state == "zero"):
        cs = 0xFFFF - _residual(bytes(frame), o, v6, proto)
        if proto == 17 and cs == 0:
            cs = 0xFFFF
        struct.pack_into("!H", frame, t + cs_at, cs)
        if state == "wrong":
            frame[t + cs_at + 1] ^= 0x5A
    return bytes(frame), o, t, cs_at


@pytest.mark.parametrize("mode", ["zero", "trim"])
@pytest.mark.parametrize("batch_sums", [16, 1 << 30])
def test_masked_checksums_match_a_from_scratch_sum(mode, batch_sums, monkeypatch):
    """Batches mixing IPv4 / IPv6, VLAN, TCP / UDP, odd and even payload lengths, ranges above 64 KiB (a
    TSO frame), UDP without checksum, right and wrong checksums; through the numpy reduction (16) and the
    per-range sums: every payload byte gone, a right checksum right against a from-scratch sum, a wrong one
    wrong by the same amount, a UDP 0 still 0."""
    monkeypatch.setattr(mask_mod, "_BATCH_SUMS", batch_sums)
    rng = random.Random(99)
    built = []
    for i in range(120):
        v6, vlan, proto = rng.random() < 0.4, rng.random() < 0.3, rng.choice([6, 17])
        state = rng.choice(["right", "right", "wrong"] + (["zero"] if proto == 17 else []))
        size = rng.choice([1, 2, 3, 57, 1000, 1461])
        tso = i % 40 == 7 and not v6 and proto == 6
        if tso:
            size = rng.choice([70001, 65536 + 2, 131072])
        built.append(_frame(rng, v6, vlan, proto, size, state, tso) + (v6, proto, state))
    records = [(f[0], 1, i, len(f[0]), 0, None) for i, f in enumerate(built)]
    stage = mask_mod.MaskStage({"mode": mode}, StageContext())
    stage.prescan(records)
    out = stage.process(records)
    assert len(out) == len(records)
    for (frame, o, t, cs_at, v6, proto, state), rec in zip(built, out):
        data = rec[0]
        pay = t + (20 if proto == 6 else 8)
        if mode == "trim" and len(data) < len(frame):
            assert len(data) == pay
            continue
        assert len(data) == len(frame) and not any(data[pay:])
        stored = data[t + cs_at:t + cs_at + 2]
        if state == "zero":
            assert stored == b"\0\0"
        elif state == "right":
            assert _residual(data, o, v6, proto) == 0xFFFF, (v6, proto, len(frame))
        else:
            assert _residual(data, o, v6, proto) == _residual(frame, o, v6, proto) != 0xFFFF


# --- 3. the pipeline's read-back: writer faults that keep the frame count ---------------------------------

@pytest.mark.parametrize("fault", ["swap", "drop+repeat", "original"])
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_writer_faults_with_the_same_frame_count_fail_the_job(env, monkeypatch, fault, fmt):
    """Frames swapped, one dropped and another written twice, or one original frame written in place of
    its anonymized one (in the second batch, past the first 2048-record batch of the read-back): the job
    fails with "self-check failed" and leaves nothing behind."""
    workdir, temp_root, out, settings = env
    src = workdir / f"in.{fmt}"
    generate(src, packets=5000, seed=41, fmt=fmt, metadata=fmt == "pcapng", dup_ratio=0.0)
    real = CaptureWriter.write_batch
    calls = []

    def faulty(self, records, source=None):
        calls.append(1)
        if len(calls) == 2:
            records = list(records)
            packets = [i for i, r in enumerate(records) if r[1] >= 0]
            i, j = packets[5], packets[6]
            if fault == "swap":
                records[i], records[j] = records[j], records[i]
            elif fault == "drop+repeat":
                records[i] = records[j]
            else:
                originals = [r for r in source if r[1] >= 0]
                records[i] = originals[5]
            source = None
        return real(self, records, source)
    monkeypatch.setattr(CaptureWriter, "write_batch", faulty)
    result = run_job(Job(src, out, ["dedup", "anonymize"]), settings)
    assert result.status == "failed" and "self-check failed" in result.error, result.error
    assert leftovers(temp_root, out) == [] and not list(out.glob("*.pcap*"))


CORPUS_FILES = ["pktmask__tls_1_2_single_vlan.pcap", "tcpdump__edns-opts.pcap", "zeek__tcp_ssh-dups.pcap",
                "zeek__pcapng-multi-interface.pcapng", "tcpdump__pptp.pcap", "tcpdump__tcp-handshake-nano.pcap"]


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_outputs_pass_the_independent_checker(env, name):
    """Real captures (VLAN, DNS answers, duplicates, pcapng with two interfaces, big-endian, nanosecond)
    through all three operations: the self-check passes and verify.py (tshark) finds nothing left."""
    if not CORPUS.is_dir():
        pytest.skip(f"real-capture corpus not present at {CORPUS} (a fresh clone has no ../shared)")
    if shutil.which("tshark") is None or not VERIFY.is_file():
        pytest.skip("tshark or ../shared/tools/verify.py not available")
    workdir, temp_root, out, settings = env
    src = workdir / name
    shutil.copyfile(CORPUS / name, src)
    result = run_job(Job(src, out, ["dedup", "anonymize", "mask"]), settings)
    assert result.status == "ok", result.error
    proc = subprocess.run([sys.executable, str(VERIFY), str(src), result.output, "--dedup", "--anon", "--mask"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert leftovers(temp_root) == [] and [p.name for p in out.iterdir()] == [Path(result.output).name]
