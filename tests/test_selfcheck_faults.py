"""The read-back self-check: the main pass reads the output back while it writes it and compares every frame
with the frame the stages built (``_MainPass.check_while_writing``). Writers that copy originals, lose, add
or reorder frames fail the job; a fault, a cancel or a full disk inside the fused check gives one clear
sentence and leaves nothing behind; what the check holds stays bounded.

The writer faults are test doubles (say so): ``CaptureWriter.write_batch`` patched to write something else
than it was given, since a working writer has no real way to do that.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from helpers import big_frame, leftovers, make_kind, pcap_file, settings_for

from pktmask_gui import pipeline as pipeline_mod
from pktmask_gui.capturewriter import CaptureWriter
from pktmask_gui.pipeline import Job, run_job
from pktmask_gui.samplegen import generate
from pktmask_gui.stages import StageError
from pktmask_gui.stages.anonymize import AnonymizeStage

ALL = ["dedup", "anonymize", "mask"]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


# --- writers that write something else than the frames built ----------------------------------------------

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
def test_the_self_check_reads_the_file_back_and_catches_a_writer_that_leaks(work, monkeypatch, fmt):
    """A writer that puts one original frame back (the bytes as read) must fail the job: the check reads
    the file, not the records in memory."""
    out, settings = work / "out", settings_for(work)
    src = work / f"in.{fmt}"
    generate(src, packets=6000, seed=11, fmt=fmt, metadata=fmt == "pcapng")
    ok = run_job(Job(src, out, ["anonymize"]), settings)
    assert ok.status == "ok", ok.error
    real = CaptureWriter.write_batch
    calls = []

    def leaky(self, records, source=None):
        calls.append(1)
        if len(calls) == 2 and source is not None:
            records = list(records)
            for i, rec in enumerate(records):
                if rec[1] >= 0:
                    records[i] = next(r for r in source if r[1] >= 0 and r[2] == rec[2])  # the original
                    break
        return real(self, records, source)
    monkeypatch.setattr(CaptureWriter, "write_batch", leaky)
    bad = run_job(Job(src, work / "out2", ["anonymize"]), settings)
    assert bad.status == "failed" and "self-check failed" in bad.error
    assert leftovers(work / "temp", work / "out2") == [] and not list((work / "out2").glob("*.pcap*"))


@pytest.mark.parametrize("change, words", [("drop", "fewer frames"), ("repeat", "more frames")])
def test_the_self_check_catches_a_frame_lost_or_added_by_the_writer(work, monkeypatch, change, words):
    out, settings = work / "out", settings_for(work)
    src = work / "in.pcap"
    generate(src, packets=400, seed=12)                      # one batch: its last frame is the file's last

    def wrong(self, records, source=None):
        records = records[:-1] if change == "drop" else records + records[-1:]
        return real(self, records, source)
    real = CaptureWriter.write_batch
    monkeypatch.setattr(CaptureWriter, "write_batch", wrong)
    result = run_job(Job(src, out, ["dedup", "anonymize"]), settings)
    assert result.status == "failed" and words in result.error, result.error
    assert leftovers(work / "temp", out) == []


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_the_self_check_fails_an_output_frame_longer_than_the_frame_built(work, monkeypatch, fmt):
    """A frame written as the frame built followed by the original frame (addresses and all) fails: the
    check is equality with what was built, and no frame may come out longer than it went in (the old
    field check took the extra bytes for an Ethernet trailer)."""
    out = work / "out"
    src = work / f"in.{fmt}"
    generate(src, packets=6000, seed=31, fmt=fmt, metadata=fmt == "pcapng", vlan_ratio=0.0)
    appended = []
    monkeypatch.setattr(CaptureWriter, "write_batch", _writer_appending_original(appended))
    result = run_job(Job(src, out, ["anonymize"]), settings_for(work))
    assert len(appended) == 1
    if result.status == "ok":               # show what passed: an original frame, addresses and all
        assert appended[0] not in Path(result.output).read_bytes(), "self-check passed an original frame"
    assert result.status == "failed" and "self-check failed" in result.error, result.error
    assert leftovers(work / "temp", out) == []


@pytest.mark.parametrize("fault", ["swap", "drop+repeat", "original"])
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_writer_faults_with_the_same_frame_count_fail_the_job(work, monkeypatch, fault, fmt):
    """Frames swapped, one dropped and another written twice, or one original frame written in place of
    its anonymized one (in the second batch, past the first 2048-record batch of the read-back): the job
    fails with "self-check failed" and leaves nothing behind."""
    out = work / "out"
    src = work / f"in.{fmt}"
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
    result = run_job(Job(src, out, ["dedup", "anonymize"]), settings_for(work))
    assert result.status == "failed" and "self-check failed" in result.error, result.error
    assert leftovers(work / "temp", out) == [] and not list(out.glob("*.pcap*"))


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_the_self_check_catches_a_writer_that_copies_the_original_batch(work, monkeypatch, fmt):
    """The span path makes writing the reader's bytes back cheap: the read-back check must still see it."""
    monkeypatch.setattr(pipeline_mod, "BATCH", 256)            # several batches in a small file
    src = work / f"in.{fmt}"
    generate(src, packets=3000, seed=5, fmt=fmt)
    real = CaptureWriter.write_batch
    calls = []

    def leaky(self, records, source=None):
        calls.append(1)
        if len(calls) == 3 and source is not None:
            records = source                       # everything as it was read: originals
        return real(self, records, source)
    monkeypatch.setattr(CaptureWriter, "write_batch", leaky)
    result = run_job(Job(src, work / "out", ["anonymize"]), settings_for(work))
    assert result.status == "failed" and "self-check failed" in result.error, result.error
    assert leftovers(work / "temp", work / "out") == [] and not list((work / "out").glob("*"))


def test_an_output_that_does_not_read_back_fails_the_self_check(work, monkeypatch):
    out, settings = work / "out", settings_for(work)
    src = work / "in.pcap"
    generate(src, packets=3000, seed=14)
    real = CaptureWriter.write_batch
    calls = []

    def garbling(self, records, source=None):
        real(self, records, source)
        calls.append(1)
        if len(calls) == 2:
            self._out += b"\xff" * 16                # a record header claiming 4 GiB
    monkeypatch.setattr(CaptureWriter, "write_batch", garbling)
    result = run_job(Job(src, out, ["anonymize"]), settings)
    assert result.status == "failed"
    assert result.error.startswith("self-check failed: the output does not read back"), result.error
    assert leftovers(work / "temp", out) == []


# --- cancel, faults and a full disk inside the fused check ------------------------------------------------

class CancelAfter:
    """A cancel flag that turns set after ``n`` looks."""

    def __init__(self, n: int):
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        return self.n < 0


@pytest.mark.parametrize("at", [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_cancel_at_any_moment_of_the_fused_check_leaves_nothing(work, at):
    settings = settings_for(work)
    src = make_kind(work, "big_records")
    counter = CancelAfter(1 << 30)
    whole = run_job(Job(src, work / "count", ALL), settings, cancel=counter)
    assert whole.status == "ok", whole.error
    calls = (1 << 30) - counter.n                   # cancel checks in a whole run
    assert calls > 10
    fds = open_fds()
    result = run_job(Job(src, work / "out", ALL), settings, cancel=CancelAfter(int(calls * at) - 1))
    assert result.status == "cancelled", (result.status, result.error)
    assert leftovers(work / "temp", work / "out") == []
    assert not (work / "out").exists() or not list((work / "out").iterdir())
    assert open_fds() == fds                     # both readers, the writer and the follow file closed


@pytest.mark.parametrize("where", ["check_spans", "process", "writer"])
def test_a_failure_inside_the_fused_check_is_clear_and_leaves_nothing(work, monkeypatch, where):
    """Test double (say so): the check, the stage or the writer patched to raise at its second call."""
    monkeypatch.setattr(pipeline_mod, "BATCH", 128)            # several batches in a small file
    src = make_kind(work, "le_us")
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
    result = run_job(Job(src, work / "out", ALL), settings_for(work))
    assert result.status == "failed" and result.error.startswith("boom in"), result.error
    assert leftovers(work / "temp", work / "out") == [] and not list((work / "out").glob("*"))
    assert open_fds() == fds


def test_a_full_disk_during_the_fused_check_says_so(work, monkeypatch):
    """Test double (say so): the writer's flush raises ENOSPC past 256 KiB (tests/test_filesystem_faults.py
    fills a real tmpfs)."""
    src = make_kind(work, "big_records")
    real = CaptureWriter._flush

    def full(self):
        if self._flushed > 256 * 1024:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self)
    monkeypatch.setattr(CaptureWriter, "_flush", full)
    plain = run_job(Job(src, work / "out", ["dedup"]), settings_for(work))
    assert plain.status == "failed" and plain.error.startswith("the disk is full"), plain.error
    checked = run_job(Job(src, work / "out", ALL), settings_for(work))
    assert leftovers(work / "temp", work / "out") == []
    assert checked.status == "failed" and checked.error.startswith("the disk is full"), checked.error


# --- what the check holds ------------------------------------------------------------------------------

def test_the_self_check_holds_a_bounded_backlog_whatever_the_file_size(work, monkeypatch):
    """What waits to be compared is a few MiB of records, whatever the file size."""
    out, settings = work / "out", settings_for(work)
    src = work / "in.pcap"
    generate(src, packets=40000, seed=13)
    most = []
    real_check = AnonymizeStage.check_spans
    passes = []

    def watching(self, before, *spans):
        main = passes[-1]
        most.append(sum(len(r[0]) for p in main.entering for r in p) + sum(len(r[0]) for r in before))
        return real_check(self, before, *spans)
    real_init = pipeline_mod._MainPass.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        passes.append(self)
    monkeypatch.setattr(AnonymizeStage, "check_spans", watching)
    monkeypatch.setattr(pipeline_mod._MainPass, "__init__", init)
    result = run_job(Job(src, out, ["dedup", "anonymize", "mask"]), settings)
    assert result.status == "ok", result.error
    assert src.stat().st_size > 20 << 20 and len(most) > 10
    assert max(most) < 6 << 20, max(most)       # bytes of frames held for the comparison


def test_the_self_check_backlog_is_a_few_mib_with_large_frames(work, monkeypatch):
    src = pcap_file(work / "large.pcap", [(1, i, big_frame(i, 30000), 30000) for i in range(700)])
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
    result = run_job(Job(src, work / "out", ["anonymize"]), settings_for(work))
    assert result.status == "ok", result.error
    assert max(held) < 6 << 20, max(held)
