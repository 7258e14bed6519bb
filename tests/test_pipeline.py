"""The executor on real files: outputs, naming, atomicity, cleanup on success / error / cancel."""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest
from conftest import leftovers

from pktmask_gui import pipeline as pipeline_mod
from pktmask_gui.capture import CaptureReader, CaptureWriter
from pktmask_gui.pipeline import Job, find_captures, output_name, run_job
from pktmask_gui.samplegen import generate
from pktmask_gui.settings import Settings
from pktmask_gui.stages.dedup import DedupStage


def frames(path: Path) -> list:
    out = []
    with CaptureReader(path) as reader:
        for batch in reader.batches():
            out.extend(rec for rec in batch if rec[1] >= 0)
    return out


@pytest.fixture
def env(workdir):
    temp_root = workdir / "temp"
    temp_root.mkdir()
    out = workdir / "out"
    settings = Settings(temp_root=str(temp_root), parallel_jobs=1)
    return workdir, temp_root, out, settings


def test_dedup_drops_exact_duplicates_and_keeps_order(env):
    workdir, temp_root, out, settings = env
    src = workdir / "in.pcap"
    generate(src, packets=3000, seed=7, dup_ratio=0.1)
    result = run_job(Job(src, out, ["dedup"]), settings)
    assert result.status == "ok", result.error
    original = frames(src)
    expected, seen = [], set()
    for rec in original:
        key = (rec[1], rec[0])
        if key not in seen:
            seen.add(key)
            expected.append(rec)
    written = frames(Path(result.output))
    assert [r[0] for r in written] == [r[0] for r in expected]
    assert [r[2] for r in written] == [r[2] for r in expected]        # timestamps kept exactly
    assert result.packets_in == len(original)
    assert result.packets_out == len(expected) < len(original)
    assert result.stages["dedup"]["duplicates_removed"] == len(original) - len(expected)
    assert Path(result.output).name == "in-sanitized.pcap"
    assert leftovers(temp_root, out) == []


def test_no_duplicates_gives_byte_identical_copy(env):
    workdir, temp_root, out, settings = env
    for fmt in ("pcap", "pcapng"):
        src = workdir / f"clean.{fmt}"
        generate(src, packets=500, seed=3, dup_ratio=0.0, fmt=fmt)
        result = run_job(Job(src, out, ["dedup"]), settings)
        assert result.status == "ok", result.error
        assert result.stages["dedup"]["duplicates_removed"] == 0
        assert Path(result.output).read_bytes() == src.read_bytes()


def test_existing_output_is_never_overwritten(env):
    workdir, temp_root, out, settings = env
    src = workdir / "a.pcapng"
    generate(src, packets=50, seed=1, fmt="pcapng")
    out.mkdir()
    (out / "a-sanitized.pcapng").write_bytes(b"precious")
    first = run_job(Job(src, out, ["dedup"]), settings)
    second = run_job(Job(src, out, ["dedup"]), settings)
    assert (out / "a-sanitized.pcapng").read_bytes() == b"precious"
    assert Path(first.output).name == "a-sanitized-1.pcapng" and first.renamed
    assert Path(second.output).name == "a-sanitized-2.pcapng"
    assert any("already existed" in w for w in first.warnings)


def test_output_beside_input_by_default_and_folder_layout(env):
    workdir, temp_root, out, settings = env
    tree = workdir / "tree"
    (tree / "sub dir é").mkdir(parents=True)
    generate(tree / "top.pcap", packets=20, seed=1)
    generate(tree / "sub dir é" / "deep.pcapng", packets=20, seed=2, fmt="pcapng")
    (tree / "notes.txt").write_text("not a capture")
    found = find_captures([tree])
    assert [(p.name, str(rel)) for p, rel in found] == [("top.pcap", "."), ("deep.pcapng", "sub dir é")]
    for path, rel in found:
        assert run_job(Job(path, out, ["dedup"], rel_dir=rel), settings).status == "ok"
    assert (out / "top-sanitized.pcap").is_file()
    assert (out / "sub dir é" / "deep-sanitized.pcapng").is_file()
    beside = run_job(Job(tree / "top.pcap", None, ["dedup"]), settings)
    assert Path(beside.output) == tree / "top-sanitized.pcap"


def test_output_name_uses_only_the_base_name():
    assert output_name(Path("/x/../evil/cap.pcap")) == "cap-sanitized.pcap"
    assert output_name(Path("noext")) == "noext-sanitized"


def test_input_is_never_modified_and_same_file_refused(env):
    workdir, temp_root, out, settings = env
    src = workdir / "x-sanitized.pcap"
    generate(src, packets=100, seed=5)
    before = src.read_bytes()
    stat_before = os.stat(src)
    # The planned output for "x" beside the input would be this very file: refused, input intact.
    twin = workdir / "x.pcap"
    os.link(src, twin)
    result = run_job(Job(twin, None, ["dedup"]), settings)
    assert result.status == "failed" and "overwrite the input" in result.error
    assert src.read_bytes() == before and os.stat(src).st_mtime_ns == stat_before.st_mtime_ns


def test_damaged_input_fails_cleanly(env):
    workdir, temp_root, out, settings = env
    bad = workdir / "bad.pcap"
    bad.write_bytes(b"this is not a capture at all, just text" * 10)
    empty = workdir / "empty.pcap"
    empty.write_bytes(b"")
    for path in (bad, empty):
        result = run_job(Job(path, out, ["dedup"]), settings)
        assert result.status == "failed"
        assert result.error and "\n" not in result.error
    assert "empty" in run_job(Job(empty, out, ["dedup"]), settings).error
    assert not out.exists() or list(out.iterdir()) == []
    assert leftovers(temp_root) == []


def test_exception_inside_a_stage_cleans_up(env, monkeypatch):
    workdir, temp_root, out, settings = env
    src = workdir / "in.pcap"
    generate(src, packets=5000, seed=2)
    calls = {"n": 0}
    original = DedupStage.process

    def exploding(self, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return original(self, batch)

    monkeypatch.setattr(DedupStage, "process", exploding)
    result = run_job(Job(src, out, ["dedup"]), settings)
    assert result.status == "failed" and "boom" in result.error
    assert list(out.iterdir()) == []
    assert leftovers(temp_root, out) == []


def test_cancel_mid_file_leaves_nothing(env):
    workdir, temp_root, out, settings = env
    src = workdir / "big.pcap"
    generate(src, packets=20000, seed=9)
    cancel = threading.Event()
    seen = []

    def progress(phase, done, total, packets):
        seen.append(done)
        cancel.set()

    result = run_job(Job(src, out, ["dedup"]), settings, progress=progress, cancel=cancel)
    assert result.status == "cancelled"
    assert seen, "progress was never reported"
    assert list(out.iterdir()) == []
    assert leftovers(temp_root, out) == []


def test_temp_dirs_use_the_seed_prefixes(env, monkeypatch):
    workdir, temp_root, out, settings = env
    src = workdir / "in.pcap"
    generate(src, packets=200, seed=4)
    settings.large_file_threshold_mb = 0          # forces a pktmask_stage_ dir for the link
    created = []
    import tempfile

    real_mkdtemp = tempfile.mkdtemp

    def tracking(*args, **kwargs):
        path = real_mkdtemp(*args, **kwargs)
        created.append(path)
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", tracking)
    assert run_job(Job(src, out, ["dedup"]), settings).status == "ok"
    names = [Path(p).name for p in created]
    assert any(n.startswith("pktmask_pipeline_") for n in names)
    assert any(n.startswith("pktmask_stage_") for n in names)
    assert any(n.startswith("pktmask_output_") for n in names)
    assert all(not Path(p).exists() for p in created)


def test_hard_link_used_and_logged(env, caplog):
    workdir, temp_root, out, settings = env
    src = workdir / "in.pcap"
    generate(src, packets=300, seed=4)
    settings.large_file_threshold_mb = 0
    with caplog.at_level(logging.INFO, logger="pktmask_gui"):
        assert run_job(Job(src, out, ["dedup"]), settings).status == "ok"
    assert any("hard-linked" in r.getMessage() for r in caplog.records)
    assert os.stat(src).st_nlink == 1          # the link is gone again


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm tmpfs on this machine")
def test_cross_device_temp_root_falls_back(env, caplog):
    workdir, temp_root, out, settings = env
    if os.stat("/dev/shm").st_dev == os.stat(workdir).st_dev:
        pytest.skip("/dev/shm is on the same filesystem as the temp dir here")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pktmask_test_", dir="/dev/shm") as shm:
        settings.temp_root = shm
        settings.large_file_threshold_mb = 0
        src = workdir / "in.pcap"
        generate(src, packets=300, seed=4)
        with caplog.at_level(logging.INFO, logger="pktmask_gui"):
            result = run_job(Job(src, out, ["dedup"]), settings)
        assert result.status == "ok"
        assert any("falling back" in r.getMessage() for r in caplog.records)
        assert [p for p in Path(shm).iterdir()] == []


def test_memory_pressure_keeps_every_packet(env, caplog):
    workdir, temp_root, out, settings = env
    src = workdir / "in.pcap"
    generate(src, packets=4000, seed=11, dup_ratio=0.1)
    normal = run_job(Job(src, out / "a", ["dedup"]), settings)
    settings.memory_rss_mb = 64                 # this test process is always above 64 MB
    with caplog.at_level(logging.INFO, logger="pktmask_gui"):
        pressed = run_job(Job(src, out / "b", ["dedup"]), settings)
    assert pressed.status == "ok"
    assert Path(pressed.output).read_bytes() == Path(normal.output).read_bytes()
    assert any("Memory pressure" in r.getMessage() for r in caplog.records)
    assert pressed.stages["dedup"]["mode"].startswith("window")


def test_unknown_link_type_passes_dedup(env):
    workdir, temp_root, out, settings = env
    from pktmask_gui.capture import CaptureWriter
    import struct

    src = workdir / "odd.pcap"
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 147)   # LINKTYPE_USER0
    with open(src, "wb") as fh:
        writer = CaptureWriter(fh, "pcap", header)
        recs = [(b"\x01\x02\x03" * 10, 147, 1000 + i, 30, 0, None) for i in range(3)]
        recs.append((b"\x09" * 40, 147, 2000, 40, 0, None))
        writer.write_batch(recs)
        writer.close()
    result = run_job(Job(src, out, ["dedup"]), settings)
    assert result.status == "ok", result.error
    assert [r[0] for r in frames(Path(result.output))] == [b"\x01\x02\x03" * 10, b"\x09" * 40]


# --- the self-check reads the output back while it is written ----------------------------------------


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_self_check_reads_the_file_back_and_catches_a_writer_that_leaks(env, monkeypatch, fmt):
    """A writer that puts one original frame back (the bytes as read) must fail the job: the check reads
    the file, not the records in memory."""
    workdir, temp_root, out, settings = env
    src = workdir / f"in.{fmt}"
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
    bad = run_job(Job(src, workdir / "out2", ["anonymize"]), settings)
    assert bad.status == "failed" and "self-check failed" in bad.error
    assert leftovers(temp_root, workdir / "out2") == [] and not list((workdir / "out2").glob("*.pcap*"))


@pytest.mark.parametrize("change, words", [("drop", "fewer frames"), ("repeat", "more frames")])
def test_self_check_catches_a_frame_lost_or_added_by_the_writer(env, monkeypatch, change, words):
    workdir, temp_root, out, settings = env
    src = workdir / "in.pcap"
    generate(src, packets=400, seed=12)                      # one batch: its last frame is the file's last

    def wrong(self, records, source=None):
        records = records[:-1] if change == "drop" else records + records[-1:]
        return real(self, records, source)
    real = CaptureWriter.write_batch
    monkeypatch.setattr(CaptureWriter, "write_batch", wrong)
    result = run_job(Job(src, out, ["dedup", "anonymize"]), settings)
    assert result.status == "failed" and words in result.error, result.error
    assert leftovers(temp_root, out) == []


def test_self_check_holds_a_bounded_backlog(env, monkeypatch):
    """What waits to be compared is a few MiB of records, whatever the file size."""
    workdir, temp_root, out, settings = env
    src = workdir / "in.pcap"
    generate(src, packets=40000, seed=13)
    most = []
    from pktmask_gui.stages.anonymize import AnonymizeStage

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


def test_an_output_that_does_not_read_back_fails_the_self_check(env, monkeypatch):
    workdir, temp_root, out, settings = env
    src = workdir / "in.pcap"
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
    assert leftovers(temp_root, out) == []


def test_progress_is_monotonic_and_weighs_the_passes_by_their_cost(env, monkeypatch):
    workdir, temp_root, out, settings = env
    monkeypatch.setattr(pipeline_mod, "PROGRESS_INTERVAL", 0.0)
    src = workdir / "in.pcap"
    generate(src, packets=20000, seed=15)
    seen = []
    result = run_job(Job(src, out, ["dedup", "anonymize", "mask"]), settings,
                     progress=lambda phase, done, total, packets: seen.append((phase, done, total)))
    assert result.status == "ok", result.error
    dones = [d for _, d, _ in seen]
    assert dones == sorted(dones) and dones[-1] <= seen[-1][2]
    total = seen[-1][2]
    last_prescan = max(d for p, d, _ in seen if p == "prescan")
    first_main = min(d for p, d, _ in seen if p == "process")
    # pre-scan 1 : main pass with its read-back check 3.5
    assert last_prescan <= total / 4.5 + 1 and first_main >= last_prescan
    assert max(d for p, d, _ in seen if p == "process") > total * 0.9


@pytest.mark.parametrize("ops, checked", [(["anonymize"], True), (["dedup", "mask"], False)])
def test_early_writeback_spares_what_the_self_check_has_yet_to_read(env, monkeypatch, ops, checked):
    """The output's pages are handed to the kernel for write-back as the pass goes (so the final fsync is
    short); with a self-check, only the part it has read back, never pages it still has to read."""
    workdir, temp_root, out, settings = env
    src = workdir / "in.pcap"
    generate(src, packets=9000, seed=21)                     # ~6 MB: the check reads 1 MiB at a time
    calls, read_back = [], [0]
    real_read = pipeline_mod._FollowFile.read

    def reading(self, n):
        data = real_read(self, n)
        read_back[0] = self.pos
        return data

    def spy(fd, offset, length, advice):
        calls.append((offset, length, read_back[0]))
    monkeypatch.setattr(pipeline_mod._FollowFile, "read", reading)
    monkeypatch.setattr(pipeline_mod, "_FADVISE", spy)
    monkeypatch.setattr(pipeline_mod, "WRITEBACK_EVERY", 64 << 10)
    result = run_job(Job(src, out, ops), settings)
    assert result.status == "ok", result.error
    assert len(calls) >= 3
    for offset, length, done in calls:
        assert offset == 0
        if checked:
            assert 0 < length <= done          # only what the check has read back, not the whole file
        else:
            assert length == 0                 # nothing reads it back: all of it


def test_the_cycle_collector_runs_less_often_during_a_job_and_as_before_after(env, monkeypatch):
    import gc
    workdir, temp_root, out, settings = env
    src = workdir / "in.pcap"
    generate(src, packets=500, seed=22)
    seen = []
    real = DedupStage.process

    def watching(self, batch):
        seen.append(gc.get_threshold())
        return real(self, batch)
    monkeypatch.setattr(DedupStage, "process", watching)
    before = gc.get_threshold()
    assert run_job(Job(src, out, ["dedup"]), settings).status == "ok"
    assert seen and all(t == pipeline_mod._GC_THRESHOLDS for t in seen)
    assert gc.get_threshold() == before
