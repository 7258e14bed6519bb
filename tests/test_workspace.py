"""The seed's promises for temp dirs: context-managed, exception-safe, swept when stale, never another's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pktmask_gui.workspace import MARKER, JobWorkspace, MemoryMonitor, _logged, sweep_stale


def test_workspace_removed_on_success_and_exception(workdir):
    with JobWorkspace(workdir) as ws:
        path = ws.path
        assert path.name.startswith("pktmask_pipeline_")
        assert (path / MARKER).is_file()
        assert oct(path.stat().st_mode & 0o777) == oct(0o700)
        stage = ws.stage_dir()
        assert stage.name.startswith("pktmask_stage_") and stage.parent == path
        (stage / "scratch").write_bytes(b"x" * 100)
    assert not path.exists()
    with pytest.raises(ValueError), JobWorkspace(workdir) as ws:
        path = ws.path
        staging = ws.output_staging(workdir)
        (staging / "half-written.pcap").write_bytes(b"partial")
        raise ValueError("stage failed")
    assert not path.exists() and not staging.exists()


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
