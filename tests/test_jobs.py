"""Jobs in child processes: results, log relay, cancel within 0.5 s, killed children, orphaned children."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from helpers import REPO, owner_pid

from pktmask_gui.jobs import run_job_process
from pktmask_gui.pipeline import Job
from pktmask_gui.samplegen import generate
from pktmask_gui.settings import Settings



@pytest.fixture(scope="module")
def big_capture(tmp_path_factory):
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pktmask_test_") as d:
        path = Path(d) / "big.pcap"
        generate(path, packets=400000, seed=21)
        yield path


def settings_for(temp_root: Path, **kw) -> Settings:
    return Settings(temp_root=str(temp_root), parallel_jobs=1, **kw)


def test_child_job_matches_in_process_job(workdir):
    from pktmask_gui.pipeline import run_job

    src = workdir / "in.pcapng"
    generate(src, packets=2000, seed=4, fmt="pcapng", dup_ratio=0.2)
    a = run_job(Job(src, workdir / "a", ["dedup"]), settings_for(workdir))
    b = run_job_process(Job(src, workdir / "b", ["dedup"]), settings_for(workdir))
    assert a.status == b.status == "ok", (a.error, b.error)
    assert Path(a.output).read_bytes() == Path(b.output).read_bytes()
    assert a.stages == b.stages and a.packets_out == b.packets_out


def test_child_log_records_reach_the_parent(workdir, caplog):
    src = workdir / "in.pcap"
    generate(src, packets=5000, seed=4)
    settings = settings_for(workdir, memory_rss_mb=1)      # any process is above 1 MB: pressure in the child
    seen = []
    with caplog.at_level(logging.INFO, logger="pktmask_gui"):
        result = run_job_process(Job(src, workdir / "out", ["dedup"]), settings, on_log=seen.append)
    assert result.status == "ok"
    assert any("Memory pressure" in r.getMessage() and r.job == "in.pcap" and r.process != os.getpid()
               for r in seen)
    assert any("Memory pressure" in r.getMessage() for r in caplog.records)


def test_cancel_takes_effect_within_half_a_second(workdir, big_capture):
    cancel = threading.Event()
    started = threading.Event()
    out = workdir / "out"

    def progress(phase, done, total, packets):
        if packets > 1000:
            started.set()

    holder = {}
    thread = threading.Thread(target=lambda: holder.setdefault(
        "r", run_job_process(Job(big_capture, out, ["dedup"]), settings_for(workdir), progress, cancel)))
    thread.start()
    assert started.wait(60), "the job never made progress"
    t0 = time.monotonic()
    cancel.set()
    thread.join(10)
    elapsed = time.monotonic() - t0
    assert not thread.is_alive()
    assert holder["r"].status == "cancelled"
    assert elapsed < 0.5, f"cancel took {elapsed:.3f} s"
    assert [p for p in workdir.iterdir() if p.name.startswith("pktmask_")] == []
    assert list(out.iterdir()) == []


def test_killed_child_fails_the_job_cleanly(workdir, big_capture):
    out = workdir / "out"
    killed = threading.Event()

    def progress(phase, done, total, packets):
        if packets > 1000 and not killed.is_set():
            pid = owner_pid(next(workdir.glob("pktmask_pipeline_*")))
            assert pid != os.getpid()                           # the worker runs the whole job
            os.kill(pid, signal.SIGKILL)
            killed.set()

    result = run_job_process(Job(big_capture, out, ["dedup"]), settings_for(workdir), progress)
    assert killed.is_set()
    assert result.status == "failed" and "worker process ended unexpectedly" in result.error
    assert [p for p in workdir.iterdir() if p.name.startswith("pktmask_")] == []
    assert list(out.iterdir()) == []


def test_child_dies_with_its_parent_and_restart_sweeps(workdir, big_capture):
    out = workdir / "out"
    code = ("import sys; from pathlib import Path\n"
            "from pktmask_gui.jobs import run_job_process\n"
            "from pktmask_gui.pipeline import Job\n"
            "from pktmask_gui.settings import Settings\n"
            "def progress(*a):\n"
            "    print('running', flush=True)\n"
            "run_job_process(Job(Path(sys.argv[1]), Path(sys.argv[2]), ['dedup']),\n"
            "                Settings(temp_root=sys.argv[3]), progress)\n")
    owner = subprocess.Popen([sys.executable, "-c", code, str(big_capture), str(out), str(workdir)],
                             stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert owner.stdout.readline().strip() == "running"
        children = psutil.Process(owner.pid).children(recursive=True)
        assert children
        owner.kill()                                    # SIGKILL: no cleanup code runs in the owner
        owner.wait()
        gone, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, "the job's child outlived its parent"
    finally:
        owner.kill()
        owner.wait()
    left = [p for p in workdir.iterdir() if p.name.startswith("pktmask_")]
    assert left, "a killed owner leaves its dir behind (that is what the sweep is for)"
    from pktmask_gui.workspace import sweep_stale

    removed = sweep_stale(workdir)
    assert set(left) <= set(removed)
    assert [p for p in workdir.iterdir() if p.name.startswith("pktmask_")] == []
    assert not out.exists() or [p for p in out.rglob("*")] == []
