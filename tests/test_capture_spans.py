"""pcap records copied as spans of the reader's buffer, and the reader's frame spans.

The writer copies a batch's records straight from the buffer they were read into (``write_batch(records,
source)``) when they lie there unchanged; the reference for "byte-identical" is the packing path
(``write_batch`` without ``source``), which is what the writer did for every record before the span copy.
``CaptureReader.frame_spans()`` (what the self-check reads the output back with) must give the frames, count,
notes and errors of ``batches()``.
"""
from __future__ import annotations

import io
import os
import random
import struct
from pathlib import Path

import pytest
from helpers import GOOD_PCAPNG, KINDS, leftovers, make_kind, pcap_bytes, settings_for
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pktmask_gui import capture
from pktmask_gui.capture import DATA, CaptureError, CaptureReader
from pktmask_gui.capturewriter import CaptureWriter
from pktmask_gui.pipeline import Job, run_job

ALL = ["dedup", "anonymize", "mask"]
FUZZ = hsettings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_write_batch = CaptureWriter.write_batch


def packing_only(self, records, source=None):
    return _write_batch(self, records)


# --- the writer's span copies: the packed bytes, on every kind of pcap ------------------------------------

def frame(n: int, size: int = 60) -> bytes:
    return (n.to_bytes(4, "big") * (size // 4 + 1))[:size]


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _spans_vs_packed(path, transform):
    """The writer's output with ``source`` (spans) and without it (packed): both, for comparison."""
    outs = []
    for with_source in (True, False):
        buf = io.BytesIO()
        with CaptureReader(path) as reader:
            writer = CaptureWriter(buf, reader.format, reader.pcap_header)
            for batch in reader.batches(max_records=300):
                writer.write_batch(transform(batch), batch if with_source else None)
            writer.close()
        outs.append(buf.getvalue())
    return outs


@pytest.mark.parametrize("kind", ["plain", "modified", "big-endian-nanos"])
def test_spans_of_unchanged_records_equal_the_packed_output(workdir, monkeypatch, kind):
    if kind == "modified":
        header = struct.pack("<IHHiIII", 0xA1B2CD34, 2, 4, 0, 0, 65535, 1)
        body = b"".join(struct.pack("<IIII", 10, i, 60 + i % 7, 60 + i % 7) + struct.pack("<IHBx", 2, 0x0800, i & 255)
                        + frame(i, 60 + i % 7) for i in range(2000))
        path = write(workdir, "k.pcap", header + body)
    else:
        e, nanos = (">", True) if kind == "big-endian-nanos" else ("<", False)
        path = write(workdir, "x.pcap", pcap_bytes([(1 + i // 100, i * 7, frame(i, 60 + i % 50), 1500)
                                                    for i in range(2000)], e=e, nanos=nanos, snaplen=65535))
    copied = []
    real = CaptureWriter._copy_spans

    def spy(self, records, source):
        ok = real(self, records, source)
        copied.append(ok)
        return ok
    monkeypatch.setattr(CaptureWriter, "_copy_spans", spy)
    def every_third(batch):                                                     # drops, order kept
        return [r for i, r in enumerate(batch) if i % 3]
    spans, packed = _spans_vs_packed(path, every_third)
    assert spans == packed and all(copied) and copied
    assert _spans_vs_packed(path, lambda b: b)[0] == path.read_bytes()
    # a new record (a stage rewrote it) or a reordered batch: packed as before, same bytes
    copied.clear()
    def rewritten(batch):
        return [r if i != 5 else (b"\1" * 40,) + r[1:] for i, r in enumerate(batch)]
    spans, packed = _spans_vs_packed(path, rewritten)
    assert spans == packed and not any(copied)
    spans, packed = _spans_vs_packed(path, lambda b: b[::-1])
    assert spans == packed


def test_a_batch_lies_in_one_buffer_even_across_chunks(workdir, monkeypatch):
    monkeypatch.setattr(capture, "CHUNK", 4096)
    path = write(workdir, "x.pcap", pcap_bytes([(1, i, frame(i, 60 + i % 900), 2000) for i in range(3000)],
                                               snaplen=65535))
    with CaptureReader(path) as reader:
        n = 0
        for batch in reader.batches(max_records=500):
            at = batch.start
            for rec in batch:                         # each record's header and data sit at its place
                sec, frac, caplen, origlen = struct.unpack_from("<IIII", batch.raw, at)
                assert batch.raw[at + 16:at + 16 + caplen] == rec[DATA]
                at += 16 + caplen
            n += len(batch)
    assert n == 3000


@pytest.mark.parametrize("kind", KINDS)
def test_span_copies_give_the_packed_bytes_through_the_pipeline(work, monkeypatch, kind):
    settings = settings_for(work)
    monkeypatch.setattr(capture, "CHUNK", 64 * 1024)        # many buffer ends: batches end at odd places
    src = make_kind(work, kind)
    before = src.read_bytes()
    copied = []
    real_copy = CaptureWriter._copy_spans

    def spy(self, records, source):
        ok = real_copy(self, records, source)
        copied.append(ok)
        return ok
    monkeypatch.setattr(CaptureWriter, "_copy_spans", spy)
    for ops in (["dedup"], ALL):
        spans = run_job(Job(src, work / "spans", ops), settings)
        assert spans.status == "ok", spans.error
        with monkeypatch.context() as m:           # the reference: every record packed, as before spans
            m.setattr(CaptureWriter, "write_batch", packing_only)
            packed = run_job(Job(src, work / "packed", ops), settings)
        assert packed.status == "ok", packed.error
        assert Path(spans.output).read_bytes() == Path(packed.output).read_bytes(), (kind, ops)
        assert (spans.packets_in, spans.packets_out, spans.warnings) == \
               (packed.packets_in, packed.packets_out, packed.warnings)
        os.unlink(spans.output)
        os.unlink(packed.output)
    if kind != "header_only":
        assert any(copied)                                  # the span path did run
    assert src.read_bytes() == before
    assert leftovers(work / "temp", work / "spans", work / "packed") == []


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


def test_copying_spans_never_differs_from_packing(workdir):
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


# --- the reader's frame spans: the same frames, notes and errors as batches() -----------------------------

def spans_of(path, max_records=512):
    with CaptureReader(path) as reader:
        frames = [buf[a:b] for buf, starts, ends in reader.frame_spans(max_records) for a, b in zip(starts, ends)]
        return frames, reader


@pytest.mark.parametrize("e, nanos", [("<", False), (">", True)])
def test_frame_spans_give_the_frames_batches_give(workdir, monkeypatch, e, nanos):
    """Across buffer refills (a small read chunk), records larger than a chunk, both byte orders."""
    monkeypatch.setattr(capture, "CHUNK", 4096)
    sizes = [60, 1514, 9000, 17, 0, 300] * 40
    recs = [(i, i, bytes([i & 0xFF]) * n, n) for i, n in enumerate(sizes)]
    path = write(workdir, "spans.pcap", pcap_bytes(recs, e=e, nanos=nanos, snaplen=65535))
    frames, reader = spans_of(path, max_records=7)
    assert frames == [r[2] for r in recs]
    assert reader.packets == len(recs) and reader.warnings == []


def test_frame_spans_of_a_modified_pcap(workdir):
    header = struct.pack("<IHHiIII", 0xA1B2CD34, 2, 4, 0, 0, 65535, 1)
    recs = b"".join(struct.pack("<IIII", 10, i, 60, 60) + struct.pack("<IHBx", 2, 0x0800, i) + frame(i)
                    for i in range(3))
    frames, _ = spans_of(write(workdir, "kuznetsov.pcap", header + recs))
    assert frames == [frame(i) for i in range(3)]


THREE_FRAMES = pcap_bytes([(i, 0, frame(i), 60) for i in (1, 2, 3)], snaplen=65535)   # records at 24, 100, 176


@pytest.mark.parametrize("cut", [1, 16, 40])
def test_frame_spans_stop_at_a_record_cut_short_and_say_so(workdir, cut):
    frames, reader = spans_of(write(workdir, "cut.pcap", THREE_FRAMES[:176 + cut]))
    assert frames == [frame(1), frame(2)]
    assert reader.warnings == [
        "file is cut short inside its last packet at offset 176: 2 complete packets kept"]


def test_frame_spans_refuse_an_absurd_length_and_pcapng(workdir):
    huge = bytearray(pcap_bytes([(1, 0, frame(1), 60), (2, 0, frame(2), 60)], snaplen=65535))
    struct.pack_into("<I", huge, 100 + 8, capture.MAX_CAPLEN + 1)          # the second record's caplen
    with pytest.raises(CaptureError, match="above the 262144-byte limit"):
        spans_of(write(workdir, "huge.pcap", bytes(huge) + bytes(100)))
    ng = write(workdir, "x.pcapng", GOOD_PCAPNG)
    with CaptureReader(ng) as reader, pytest.raises(ValueError):
        reader.frame_spans()


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


def _numbered(frames: list) -> list:
    """(data, bytes beyond the capture) pairs as pcap_bytes records, numbered by their timestamps."""
    return [(1000 + i, i % 1000, data, len(data) + extra) for i, (data, extra) in enumerate(frames)]


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
    data = pcap_bytes(_numbered(frames), e=e, nanos=kind == "ns", modified=kind == "modified", snaplen=0)
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
    data = bytearray(pcap_bytes(_numbered(good), snaplen=0))
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
    data = pcap_bytes(_numbered(frames), snaplen=0)
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
