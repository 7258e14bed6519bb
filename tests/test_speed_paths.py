"""Adversarial checks of the speed paths: pcap records copied as spans of the reader's buffer, the self-check
that reads the output back while it is written, and Remove Dupes' plain path, growth and window switch.

The reference for "byte-identical" is the packing path (``write_batch`` without ``source``), which is what
the code before the span copy wrote for every record.
"""
from __future__ import annotations

import errno
import functools
import io
import os
import random
import struct
from pathlib import Path

import pytest
from conftest import leftovers

from pktmask_gui import capture
from pktmask_gui import pipeline as pipeline_mod
from pktmask_gui.capture import (EPB, IDB, SHB, CaptureReader, CaptureWriter, make_idb_body,
                                 make_shb_body)
from pktmask_gui.pipeline import Job, run_job
from pktmask_gui.samplegen import eth, ipv4, iter_frames, udp
from pktmask_gui.settings import Settings
from pktmask_gui.stages import StageContext, StageError
from pktmask_gui.stages import dedup as dedup_mod
from pktmask_gui.stages.anonymize import AnonymizeStage
from pktmask_gui.stages.dedup import DedupStage

ALL = ["dedup", "anonymize", "mask"]


# --- helpers -------------------------------------------------------------------------------------------

def sample_frames(n: int, seed: int) -> list:
    """Realistic Ethernet frames (TCP/TLS/UDP/DNS, IPv4/IPv6, VLAN) with ~20 % exact duplicates."""
    return [frame for _t, frame, _dup in iter_frames(n, seed=seed, dup_ratio=0.2)]


def big_frame(i: int, size: int) -> bytes:
    """An IPv4/UDP frame of ``size`` captured bytes (the IP datagram, then a zero trailer if larger)."""
    src = f"10.9.{i % 200}.{1 + i % 250}"
    payload = bytes((i + k) & 255 for k in range(256)) * (min(size, 65000) // 256)
    fr = eth("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800,
             ipv4(src, "192.168.7.9", 17,
                  udp(src, "192.168.7.9", 4000 + i, 53, payload[:max(0, min(size, 65000) - 42)])))
    return fr[:size] if len(fr) >= size else fr + bytes(size - len(fr))


def pcap_file(path: Path, recs, e="<", nanos=False, modified=False, snaplen=262144, cut=0) -> Path:
    """Raw pcap bytes: ``recs`` are (sec, frac, data, origlen); modified = Kuznetsov 24-byte headers."""
    magic = 0xA1B2CD34 if modified else 0xA1B23C4D if nanos else 0xA1B2C3D4
    parts = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, 1)]
    for i, (sec, frac, data, origlen) in enumerate(recs):
        parts.append(struct.pack(e + "IIII", sec, frac, len(data), origlen))
        if modified:
            parts.append(struct.pack(e + "IHBx", i, 0x0800, i & 255))
        parts.append(data)
    raw = b"".join(parts)
    path.write_bytes(raw[:len(raw) - cut] if cut else raw)
    return path


def make_kind(workdir: Path, kind: str) -> Path:
    frames = sample_frames(700, seed=len(kind))
    recs = [(1_700_000_000 + i // 50, (i * 997) % 1_000_000, f, len(f)) for i, f in enumerate(frames)]
    path = workdir / f"{kind}.pcap"
    if kind == "le_us":
        return pcap_file(path, recs)
    if kind == "be_ns":
        return pcap_file(path, [(s, f * 999, d, o) for s, f, d, o in recs], e=">", nanos=True)
    if kind in ("modified_le", "modified_be"):
        return pcap_file(path, recs, e="<" if kind.endswith("le") else ">", modified=True)
    if kind == "bad_fraction":          # RawPcapTime on every 7th record, in both units
        return pcap_file(path, [(s, f + 1_000_000 + i if i % 7 == 0 else f, d, o)
                                for i, (s, f, d, o) in enumerate(recs)])
    if kind == "bad_fraction_ns":
        return pcap_file(path, [(s, 0xF0000000 + i if i % 5 == 0 else f, d, o)
                                for i, (s, f, d, o) in enumerate(recs)], nanos=True)
    if kind == "snaplen_odd":           # snaplen 96 below most caplens, caplen > origlen, origlen huge
        return pcap_file(path, [(s, f, d, len(d) - 3 if i % 4 == 0 else len(d) + 70000 if i % 4 == 1 else o)
                                for i, (s, f, d, o) in enumerate(recs)], snaplen=96)
    if kind == "cut_mid_record":
        return pcap_file(path, recs, cut=37)
    if kind == "cut_mid_header":
        return pcap_file(path, recs, cut=len(recs[-1][2]) + 9)
    if kind == "one_packet":
        return pcap_file(path, recs[:1])
    if kind == "header_only":
        return pcap_file(path, [])
    if kind == "big_records":           # records up to the 256 KiB limit, crossing every chunk boundary
        rng = random.Random(4)
        out = []
        for i, (s, f, d, o) in enumerate(recs[:300]):
            out.append((s, f, d, o))
            if i % 11 == 0:
                b = big_frame(i, rng.choice([262144, 262143, 131073, 70001, 65536]))
                out += [(s, f + 1, b, len(b))] * (2 if i % 33 == 0 else 1)      # some big duplicates
        return pcap_file(path, out)
    raise ValueError(kind)


KINDS = ["le_us", "be_ns", "modified_le", "modified_be", "bad_fraction", "bad_fraction_ns", "snaplen_odd",
         "cut_mid_record", "cut_mid_header", "one_packet", "header_only", "big_records"]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


@pytest.fixture
def env(workdir):
    temp_root = workdir / "temp"
    temp_root.mkdir()
    key = workdir / "key"
    key.write_bytes(bytes(range(32)))
    settings = Settings(temp_root=str(temp_root), parallel_jobs=1)
    return workdir, temp_root, settings, key


def job(src, out, ops, key):
    return Job(src, out, ops, key_file=key)


# --- spans: the same bytes as packing, on every kind of pcap -------------------------------------------

_write_batch = CaptureWriter.write_batch


def packing_only(self, records, source=None):
    return _write_batch(self, records)


@pytest.mark.parametrize("kind", KINDS)
def test_span_copies_give_the_packed_bytes_through_the_pipeline(env, monkeypatch, kind):
    workdir, temp_root, settings, key = env
    monkeypatch.setattr(capture, "CHUNK", 64 * 1024)        # many buffer ends: batches end at odd places
    src = make_kind(workdir, kind)
    before = src.read_bytes()
    copied = []
    real_copy = CaptureWriter._copy_spans

    def spy(self, records, source):
        ok = real_copy(self, records, source)
        copied.append(ok)
        return ok
    monkeypatch.setattr(CaptureWriter, "_copy_spans", spy)
    for ops in (["dedup"], ALL):
        spans = run_job(job(src, workdir / "spans", ops, key), settings)
        assert spans.status == "ok", spans.error
        with monkeypatch.context() as m:           # the reference: every record packed, as before spans
            m.setattr(CaptureWriter, "write_batch", packing_only)
            packed = run_job(job(src, workdir / "packed", ops, key), settings)
        assert packed.status == "ok", packed.error
        assert Path(spans.output).read_bytes() == Path(packed.output).read_bytes(), (kind, ops)
        assert (spans.packets_in, spans.packets_out, spans.warnings) == \
               (packed.packets_in, packed.packets_out, packed.warnings)
        os.unlink(spans.output)
        os.unlink(packed.output)
    if kind != "header_only":
        assert any(copied)                                  # the span path did run
    assert src.read_bytes() == before
    assert leftovers(temp_root, workdir / "spans", workdir / "packed") == []


@pytest.mark.parametrize("kind", ["modified_be", "big_records", "cut_mid_record", "bad_fraction_ns"])
@pytest.mark.parametrize("chunk", [4096, 65536, 300_000])
def test_every_batch_lies_back_to_back_in_its_buffer(workdir, monkeypatch, kind, chunk):
    monkeypatch.setattr(capture, "CHUNK", chunk)
    src = make_kind(workdir, kind)
    hl = 24 if kind.startswith("modified") else 16
    e = ">" if kind.endswith("be") else "<"
    total = 0
    with CaptureReader(src) as reader:
        for batch in reader.batches(max_records=97):
            at = batch.start
            for rec in batch:
                caplen = struct.unpack_from(e + "I", batch.raw, at + 8)[0]
                assert caplen == len(rec[0]) and batch.raw[at + hl:at + hl + caplen] == rec[0]
                at += hl + caplen
            assert at <= len(batch.raw)
            total += len(batch)
    assert total == reader.packets > 0


def test_copy_spans_never_differs_from_packing(workdir):
    """Random selections, repeats, reorders, foreign and equal-but-new records: always the packed bytes."""
    src = make_kind(workdir, "modified_le")
    rng = random.Random(9)
    with CaptureReader(src) as reader:
        batches = list(reader.batches(max_records=60))
        header = reader.pcap_header
    foreign = batches[0][3]
    for trial in range(400):
        source = batches[trial % len(batches)]
        records = [r for r in source if rng.random() < 0.7]
        how = trial % 6
        if how == 1 and records:
            records.insert(rng.randrange(len(records)), rng.choice(records))          # a repeat
        elif how == 2 and len(records) > 1:
            i = rng.randrange(len(records) - 1)
            records[i], records[i + 1] = records[i + 1], records[i]                    # a swap
        elif how == 3:
            records.insert(rng.randrange(len(records) + 1), foreign)                   # another batch's
        elif how == 4 and records:
            i = rng.randrange(len(records))
            records[i] = (records[i][0],) + records[i][1:]       # an equal record, a new object
        elif how == 5:
            records = records + [source[-1]] if records and records[-1] is not source[-1] else records
        outs = []
        for with_source in (True, False):
            buf = io.BytesIO()
            w = CaptureWriter(buf, "pcap", header)
            w.write_batch(records, source if with_source else None)
            w.close()
            outs.append(buf.getvalue())
        assert outs[0] == outs[1], (trial, how)


# --- the self-check that reads the output back while it is written --------------------------------------

@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_self_check_catches_a_writer_that_copies_the_original_batch(env, monkeypatch, fmt):
    """The span path makes writing the reader's bytes back cheap: the read-back check must still see it."""
    workdir, temp_root, settings, key = env
    monkeypatch.setattr(pipeline_mod, "BATCH", 256)            # several batches in a small file
    src = workdir / f"in.{fmt}"
    from pktmask_gui.samplegen import generate
    generate(src, packets=3000, seed=5, fmt=fmt)
    real = CaptureWriter.write_batch
    calls = []

    def leaky(self, records, source=None):
        calls.append(1)
        if len(calls) == 3 and source is not None:
            records = source                       # everything as it was read: originals
        return real(self, records, source)
    monkeypatch.setattr(CaptureWriter, "write_batch", leaky)
    result = run_job(job(src, workdir / "out", ["anonymize"], key), settings)
    assert result.status == "failed" and "self-check failed" in result.error, result.error
    assert leftovers(temp_root, workdir / "out") == [] and not list((workdir / "out").glob("*"))


class CancelAfter:
    def __init__(self, n: int):
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        return self.n < 0


@pytest.mark.parametrize("at", [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_cancel_at_any_moment_of_the_fused_check_leaves_nothing(env, at):
    workdir, temp_root, settings, key = env
    src = make_kind(workdir, "big_records")
    counter = CancelAfter(1 << 30)
    whole = run_job(job(src, workdir / "count", ALL, key), settings, cancel=counter)
    assert whole.status == "ok", whole.error
    calls = (1 << 30) - counter.n                   # cancel checks in a whole run
    assert calls > 10
    fds = open_fds()
    result = run_job(job(src, workdir / "out", ALL, key), settings, cancel=CancelAfter(int(calls * at) - 1))
    assert result.status == "cancelled", (result.status, result.error)
    assert leftovers(temp_root, workdir / "out") == []
    assert not (workdir / "out").exists() or not list((workdir / "out").iterdir())
    assert open_fds() == fds                     # both readers, the writer and the follow file closed


@pytest.mark.parametrize("where", ["check_spans", "process", "writer"])
def test_a_failure_inside_the_fused_check_is_clear_and_leaves_nothing(env, monkeypatch, where):
    workdir, temp_root, settings, key = env
    monkeypatch.setattr(pipeline_mod, "BATCH", 128)            # several batches in a small file
    src = make_kind(workdir, "le_us")
    calls = []
    if where == "writer":
        real = CaptureWriter.write_batch

        def broken(self, records, source=None):
            calls.append(1)
            if len(calls) == 2:
                raise StageError("boom in the writer")
            return real(self, records, source)
        monkeypatch.setattr(CaptureWriter, "write_batch", broken)
    else:
        real = getattr(AnonymizeStage, where)

        def broken(self, *args):
            calls.append(1)
            if len(calls) == 2:
                raise StageError(f"boom in {where}")
            return real(self, *args)
        monkeypatch.setattr(AnonymizeStage, where, broken)
    fds = open_fds()
    result = run_job(job(src, workdir / "out", ALL, key), settings)
    assert result.status == "failed" and result.error.startswith("boom in"), result.error
    assert leftovers(temp_root, workdir / "out") == [] and not list((workdir / "out").glob("*"))
    assert open_fds() == fds


def test_disk_full_during_the_fused_check_says_so(env, monkeypatch):
    workdir, temp_root, settings, key = env
    src = make_kind(workdir, "big_records")
    real = CaptureWriter._flush

    def full(self):
        if self._flushed > 256 * 1024:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self)
    monkeypatch.setattr(CaptureWriter, "_flush", full)
    plain = run_job(job(src, workdir / "out", ["dedup"], key), settings)
    assert plain.status == "failed" and plain.error.startswith("the disk is full"), plain.error
    checked = run_job(job(src, workdir / "out", ALL, key), settings)
    assert leftovers(temp_root, workdir / "out") == []
    assert checked.status == "failed" and checked.error.startswith("the disk is full"), checked.error


def test_self_check_backlog_is_a_few_mib_with_large_frames(env, monkeypatch):
    workdir, _temp_root, settings, key = env
    src = pcap_file(workdir / "large.pcap", [(1, i, big_frame(i, 30000), 30000) for i in range(700)])
    held = []
    passes = []
    real_check = AnonymizeStage.check_spans
    real_init = pipeline_mod._MainPass.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        passes.append(self)

    def watching(self, before, buf, starts, ends, linktype):
        held.append(sum(len(r[0]) for p in passes[-1].entering for r in p)
                    + sum(len(r[0]) for r in before) + len(buf))
        return real_check(self, before, buf, starts, ends, linktype)
    monkeypatch.setattr(pipeline_mod._MainPass, "__init__", init)
    monkeypatch.setattr(AnonymizeStage, "check_spans", watching)
    result = run_job(job(src, workdir / "out", ["anonymize"], key), settings)
    assert result.status == "ok", result.error
    assert max(held) < 6 << 20, max(held)


# --- pcapng with several sections whose lengths are known ------------------------------------------------

def _section(e: str, frames: list, first: int) -> list:
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


# --- Remove Dupes: plain path, growth and the window switch inside a batch -------------------------------

@functools.lru_cache(maxsize=4)
def _pool(unique: int) -> list:
    rng = random.Random(unique)
    return [rng.randbytes(rng.choice([20, 60, 64, 65, 200])) for _ in range(unique)]


def _records(n: int, seed: int, unique: int) -> list:
    """Frames from a pool (so: duplicates, across batches too); every third batch mixes in a second link type
    (the general path), the others have one (the plain path), so frames inserted by one path are looked up
    by the other."""
    rng = random.Random(seed)
    pool = _pool(unique)
    mixed = seed % 3 == 0
    return [(pool[rng.randrange(unique)], 101 if mixed and rng.random() < 0.3 else 1, i, 0, 0, None)
            for i in range(n)]


@pytest.fixture
def plain_calls(monkeypatch):
    calls = []
    real = DedupStage._process_plain

    def spy(self, batch, lt):
        calls.append(len(batch))
        return real(self, batch, lt)
    monkeypatch.setattr(DedupStage, "_process_plain", spy)
    return calls


def _replayed(stage: DedupStage, batches: list) -> list:
    replay = stage.replayer(StageContext())
    out = [r for b in batches for r in replay.process(b)]
    replay.finish()
    return out


def test_presize_far_too_small_grows_inside_batches_and_replays_the_same(plain_calls):
    batches = [_records(512, seed=s, unique=40000) for s in range(120)]      # ~61k frames, 40k distinct
    stage = DedupStage({}, StageContext(extra={"input_size": 10}))         # presized to the minimum
    out, seen, want = [], set(), []
    for b in batches:
        out += stage.process(b)
        for r in b:
            if (r[0], r[1]) not in seen:
                seen.add((r[0], r[1]))
                want.append(r)
    assert [id(r) for r in out] == [id(r) for r in want]
    assert stage._table.slots > dedup_mod.MIN_SLOTS
    assert 0 < len(plain_calls) < len(batches)             # both paths ran
    assert [id(r) for r in _replayed(stage, batches)] == [id(r) for r in want]


def test_window_switch_inside_a_batch_keeps_unique_frames_and_replays_the_same(monkeypatch, plain_calls):
    monkeypatch.setattr(dedup_mod, "WINDOW", 3000)
    window_batches = []
    real_window = DedupStage._process_window

    def spy(self, batch):
        window_batches.append(len(batch))
        return real_window(self, batch)
    monkeypatch.setattr(DedupStage, "_process_window", spy)
    # more distinct frames than the smallest table holds: a generation ends inside a batch
    batches = [_records(512, seed=100 + s, unique=40000) for s in range(100)]
    stage = DedupStage({}, StageContext(extra={"input_size": 10}))
    out = []
    for k, b in enumerate(batches):
        out += stage.process(b)
        if k == 1:
            assert stage.release_memory()                   # pressure: window mode from here on
    assert stage.report()["mode"].startswith("window")
    assert plain_calls                                      # the plain path ran before the window
    assert any(0 < n < 512 for n in window_batches)         # the switch came inside a batch
    kept = {id(r) for r in out}
    seen_at = {}                                            # frame -> index among unique frames seen
    uniques = 0
    for r in (r for b in batches for r in b):
        key = (r[0], r[1])
        if id(r) in kept:
            uniques += 1
            seen_at[key] = uniques
        else:   # dropped: a real duplicate of a frame kept recently enough
            assert key in seen_at
    first = {}
    for r in (r for b in batches for r in b):
        first.setdefault((r[0], r[1]), r)
    assert all(id(r) in kept for r in first.values())      # no first occurrence is ever dropped
    assert [id(r) for r in _replayed(stage, batches)] == [id(r) for r in out]


def test_remove_dupes_keeps_every_section_of_a_multi_section_pcapng(env):
    workdir, temp_root, settings, key = env
    frames = sample_frames(4000, seed=3)
    recs = _section("<", frames[:2500], 0) + _section(">", frames[2500:], 10 ** 6)
    src = workdir / "sections.pcapng"
    with open(src, "wb") as fh:
        writer = CaptureWriter(fh, "pcapng")
        writer.write_batch(recs)                     # one batch: the section length is patched in memory
        writer.close()
    with CaptureReader(src) as reader:               # the input itself is sound
        assert sum(1 for b in reader.batches() for r in b if r[1] >= 0) == len(frames)
    result = run_job(job(src, workdir / "out", ["dedup"], key), settings)
    assert result.status == "ok", result.error
    with CaptureReader(result.output) as reader:
        got = [r[0] for b in reader.batches() for r in b if r[1] >= 0]
    assert got == list(dict.fromkeys(frames))
    assert leftovers(temp_root, workdir / "out") == []
