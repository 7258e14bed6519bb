"""The seed's promises for temp dirs: context-managed, exception-safe, swept when stale, never another's."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pktmask_gui.pipeline import _publish
from pktmask_gui.workspace import (
    MARKER,
    JobWorkspace,
    MemoryMonitor,
    _logged,
    keep_spare_dir,
    owner_from_name,
    owner_tag,
    process_identity,
    sweep_stale,
)


def test_workspace_removed_on_success_and_exception(workdir):
    with JobWorkspace(workdir) as ws:
        path = ws.path
        # the name says whose it is (no marker file: one inode fewer per job)
        assert path.name.startswith(f"pktmask_pipeline_{owner_tag(process_identity(os.getpid()))}_")
        assert owner_from_name(path.name, "pktmask_pipeline_")["pid"] == os.getpid()
        assert not (path / MARKER).exists()
        assert oct(path.stat().st_mode & 0o777) == oct(0o700)
        stage = ws.stage_dir()
        assert stage.name.startswith("pktmask_stage_") and stage.parent == path
        (stage / "scratch").write_bytes(b"x" * 100)
    assert not path.exists()
    with pytest.raises(ValueError), JobWorkspace(workdir) as ws:
        path = ws.path
        staging = ws.output_staging(workdir)
        assert staging == path          # the output folder is on the temp folder's file system: staged here
        (staging / "half-written.pcap").write_bytes(b"partial")
        raise ValueError("stage failed")
    assert not path.exists() and not staging.exists()


def test_a_process_running_job_after_job_keeps_its_emptied_dirs_until_told_none_follows(workdir):
    """keep_spare_dir: no inode made and freed per job, also when two jobs overlap (on ext4 without a
    journal, freed inodes slow every later allocation for a minute); a spare is emptied, named like any
    workspace, never another temp root's or another process's, and removed when no job follows."""
    import multiprocessing

    other_root = workdir / "other"
    other_root.mkdir()
    keep_spare_dir(True)
    try:
        with pytest.raises(ValueError), JobWorkspace(workdir) as ws:
            first = ws.path
            ws.stage_dir()
            (first / "half-written.pcap").write_bytes(b"partial")
            raise ValueError("stage failed")
        assert first.is_dir() and list(first.iterdir()) == []       # emptied, kept for the next job
        with JobWorkspace(workdir) as ws:
            assert ws.path == first
        with JobWorkspace(workdir) as ws:
            ws.add_owner(os.getpid())   # a marker (more owners): removed as always, never reused
            assert ws.path == first
        assert not first.exists()
        with JobWorkspace(workdir) as ws:
            second = ws.path
        assert second.is_dir()
        # two at once (a worker publishes one job while the next runs): both kept, both reused
        with JobWorkspace(workdir) as a, JobWorkspace(workdir) as b:
            pair = {a.path, b.path}
        assert second in pair and all(p.is_dir() for p in pair)
        with JobWorkspace(workdir) as a, JobWorkspace(workdir) as b:
            assert {a.path, b.path} == pair
        third = (pair - {second}).pop()
        with JobWorkspace(workdir) as ws:
            assert ws.path in pair
        # a forked child (a worker forked while the parent keeps a spare) makes its own
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_child_workspace, args=(workdir, queue))
        child.start()
        child_path = queue.get(timeout=30)
        child.join(30)
        assert child_path != str(second) and second.is_dir() and not Path(child_path).exists()
        with JobWorkspace(other_root) as ws:        # another temp root: the old spares go
            assert ws.path.parent == other_root
        assert not second.exists() and not third.exists()
    finally:
        keep_spare_dir(False)
    assert list(other_root.iterdir()) == []
    assert [p for p in workdir.iterdir() if p.name.startswith("pktmask_")] == []


def _child_workspace(root, queue):
    with JobWorkspace(root) as ws:
        queue.put(str(ws.path))


def test_output_on_another_file_system_is_staged_beside_it_under_a_marker(workdir, other_fs):
    with pytest.raises(ValueError), JobWorkspace(other_fs) as ws:
        path = ws.path
        staging = ws.output_staging(workdir)
        assert staging.parent == workdir and staging.name.startswith("pktmask_output_")
        marker = json.loads((path / MARKER).read_text())
        assert marker["staging"] == [str(staging)] and marker["owners"][0]["pid"] == os.getpid()
        assert json.loads((staging / MARKER).read_text())["pipeline"] == str(path)
        (staging / "half-written.pcap").write_bytes(b"partial")
        raise ValueError("stage failed")
    assert not path.exists() and not staging.exists()


def test_a_link_across_mounts_is_restaged_beside_the_target(workdir, monkeypatch):
    """st_dev can be equal across a bind mount, where link() still fails with EXDEV: the output is then
    copied into a staging dir in the output folder and linked from there."""
    real_link = os.link
    calls = []

    def link(src, dst, *a, **kw):
        calls.append(Path(src))
        if len(calls) == 1:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_link(src, dst, *a, **kw)

    out = workdir / "out"
    out.mkdir()
    (workdir / "temp").mkdir()
    with JobWorkspace(workdir / "temp") as ws:
        staged = ws.output_staging(out) / "x.pcap"
        staged.write_bytes(b"data")
        monkeypatch.setattr(os, "link", link)
        final, renamed = _publish(staged, out / "x.pcap", workdir / "in.pcap",
                                  restage=lambda path: ws.restage(path, out))
    assert final == out / "x.pcap" and final.read_bytes() == b"data" and not renamed
    assert calls[1].parent.name.startswith("pktmask_output_") and calls[1].parent.parent == out
    assert sorted(p.name for p in out.iterdir()) == ["x.pcap"] and list((workdir / "temp").iterdir()) == []


def test_cleanup_steps_run_newest_first_once_and_all_of_them_even_when_one_fails(workdir, caplog):
    order = []
    with JobWorkspace(workdir) as ws:
        big = workdir / "big.bin"
        big.write_bytes(b"x" * 100)
        link = ws.link_input(big, 10)                   # a hard link: removed on exit
        ws.cleanups.callback(order.append, "first")
        ws.cleanups.callback(_logged, ws.log, "broken", lambda: 1 / 0)
        ws.cleanups.callback(order.append, "last")
        assert link.exists()
    assert order == ["last", "first"] and not link.exists() and big.exists()
    assert "Cleanup step failed (broken)" in caplog.text
    ws.close()                                          # idempotent: nothing runs twice
    assert order == ["last", "first"]


def test_sweep_removes_dead_owner_dirs_only(workdir):
    # A real process that has exited: its pid is dead (or reused with another start time).
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = workdir / "pktmask_pipeline_stale"
    stale.mkdir()
    staging = workdir / "outdir" / "pktmask_output_stale"
    staging.mkdir(parents=True)
    (staging / "partial.pcap").write_bytes(b"x")
    (stale / MARKER).write_text(json.dumps({"owners": [{"pid": dead.pid, "created": 1.0}],
                                            "staging": [str(staging)]}))
    with JobWorkspace(workdir) as live:
        removed = sweep_stale(workdir)
        assert live.path.exists(), "a live instance's dir must never be swept"
    assert stale in removed and not stale.exists()
    assert staging in removed and not staging.exists()


def test_sweep_keeps_dirs_of_another_live_process(workdir):
    code = ("import sys, time; from pktmask_gui.workspace import JobWorkspace\n"
            "with JobWorkspace(sys.argv[1]) as ws:\n"
            "    print(ws.path, flush=True); time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(workdir)], stdout=subprocess.PIPE, text=True)
    try:
        path = Path(proc.stdout.readline().strip())
        assert path.exists()
        assert sweep_stale(workdir) == []
        assert path.exists()
        proc.kill()                 # SIGKILL: no cleanup ran, the dir is left behind ...
        proc.wait()
        assert path.exists()
        assert path in sweep_stale(workdir)     # ... and the next start sweeps it
        assert not path.exists()
    finally:
        proc.kill()
        proc.wait()


def test_sweep_of_markerless_dir_waits_for_age(workdir):
    fresh = workdir / "pktmask_pipeline_nomarker"
    fresh.mkdir()
    assert sweep_stale(workdir) == []          # may be being set up right now
    old = time.time() - 3600
    os.utime(fresh, (old, old))
    assert sweep_stale(workdir) == [fresh]


def test_memory_monitor_thresholds():
    assert MemoryMonitor(rss_mb=0, available_pct=0).pressure() is None
    hot = MemoryMonitor(rss_mb=1, available_pct=0)
    hot.rss_limit = 1                           # any process is above one byte
    assert "memory" in hot.pressure()
    assert hot.pressure() is None               # sampled at most every interval
    assert hot.events == 1
