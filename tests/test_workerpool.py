"""The worker pool: real worker processes reused job after job, a worker killed mid-job fails only its file,
cancel within 0.5 s with nothing left behind, and the CLI's --jobs 2 on many small files."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from helpers import leftovers, owner_pid
from pktmask_gui.pipeline import Job, run_job
from pktmask_gui.samplegen import generate
from pktmask_gui.settings import Settings
from pktmask_gui.workerpool import WorkerPool

REPO = Path(__file__).resolve().parents[1]
WILD = REPO.parent / "shared" / "corpus-wild"
OPS = ["dedup", "anonymize", "mask"]


@pytest.fixture(scope="module")
def big_capture():
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pktmask_test_") as d:
        path = Path(d) / "big.pcap"
        generate(path, packets=300000, seed=21)
        yield path


def small_files(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        files.append(folder / f"small-{i:02d}.pcap")
        generate(files[-1], packets=80, seed=i, dup_ratio=0.2)
    return files


def settings_for(workdir: Path) -> Settings:
    temp = workdir / "temp"
    temp.mkdir(exist_ok=True)
    return Settings(temp_root=str(temp), parallel_jobs=2)


def test_workers_are_reused_across_jobs_and_outputs_match_one_process(workdir):
    files = small_files(workdir / "in", 12)
    settings = settings_for(workdir)
    expected = {f.name: Path(run_job(Job(f, workdir / "one", OPS), settings).output).read_bytes() for f in files}
    processes = set()
    with WorkerPool(2) as pool:
        pool.warm()
        pids = set(pool.worker_pids())
        with ThreadPoolExecutor(2) as threads:
            results = list(threads.map(lambda f: pool.run_job(
                Job(f, workdir / "pool", OPS), settings, on_log=lambda r: processes.add(r.process)), files))
        assert pool.started == 2                     # two processes for twelve jobs
        assert set(pool.worker_pids()) == pids
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    assert {Path(r.input).name: Path(r.output).read_bytes() for r in results} == expected
    assert processes and processes <= pids           # the jobs' own log lines came from the two workers
    assert leftovers(workdir) == []
    assert all(not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE for p in pids)


def test_a_windows_workers_run_below_the_window_and_the_clis_do_not(workdir):
    """The window's pool (``background``) yields the cores to the window's event loop; the CLI's keeps its
    priority. The jobs' outputs are the same either way."""
    f = small_files(workdir / "in", 1)[0]
    settings = settings_for(workdir)
    owner = psutil.Process().nice()
    if sys.platform == "win32":
        lowered = psutil.BELOW_NORMAL_PRIORITY_CLASS if owner == psutil.NORMAL_PRIORITY_CLASS else owner
    else:
        lowered = min(19, owner + 4)
    outputs = []
    for background in (True, False):
        expected = lowered if background else owner
        with WorkerPool(1, background=background) as pool:
            pool.warm()
            pid = pool.worker_pids()[0]
            deadline = time.monotonic() + 20        # (a spawned worker lowers its own priority as it starts)
            while psutil.Process(pid).nice() != expected and time.monotonic() < deadline:
                time.sleep(0.02)
            niceness = psutil.Process(pid).nice()
            result = pool.run_job(Job(f, workdir / f"out-{background}", OPS), settings)
        assert result.status == "ok", result.error
        outputs.append(Path(result.output).read_bytes())
        assert niceness == expected
    assert outputs[0] == outputs[1]
    assert leftovers(workdir) == []


def test_a_worker_killed_mid_job_fails_only_its_file_and_the_batch_goes_on(workdir, big_capture):
    files = small_files(workdir / "in", 6)
    big = workdir / "in" / "big.pcap"
    os.link(big_capture, big)
    settings = settings_for(workdir)
    out = workdir / "out"
    killed = threading.Event()

    def progress(phase, done, total, packets):
        if packets > 1000 and not killed.is_set():
            # The big job's workspace names the worker that runs it (the small ones start after the kill).
            os.kill(owner_pid(next((workdir / "temp").glob("pktmask_pipeline_*"))), signal.SIGKILL)
            killed.set()

    with WorkerPool(2) as pool:
        pool.warm()
        big_result = {}
        runner = threading.Thread(target=lambda: big_result.setdefault(
            "r", pool.run_job(Job(big, out, ["dedup"]), settings, progress)))
        runner.start()
        assert killed.wait(60), "the big job never made progress"
        results = [pool.run_job(Job(f, out, OPS), settings) for f in files]
        runner.join(30)
        started = pool.started
    result = big_result["r"]
    assert result.status == "failed" and "worker process ended unexpectedly" in result.error
    assert [r.status for r in results] == ["ok"] * len(files)
    assert started == 3                              # the dead worker was replaced
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{f.stem}-sanitized.pcap" for f in files)
    assert leftovers(workdir) == []                  # its temp dir and staging dir went with it


def test_cancel_takes_effect_within_half_a_second_and_the_worker_takes_the_next_job(workdir, big_capture):
    settings = settings_for(workdir)
    out = workdir / "out"
    cancel, running = threading.Event(), threading.Event()
    holder = {}
    with WorkerPool(1) as pool:
        pool.warm()

        def progress(phase, done, total, packets):
            if packets > 1000:
                running.set()

        thread = threading.Thread(target=lambda: holder.setdefault(
            "r", pool.run_job(Job(big_capture, out, OPS), settings, progress, cancel)))
        thread.start()
        assert running.wait(60), "the job never made progress"
        t0 = time.monotonic()
        cancel.set()
        thread.join(10)
        elapsed = time.monotonic() - t0
        assert leftovers(workdir) == [] and list(out.iterdir()) == []
        small = small_files(workdir / "in", 1)[0]
        after = pool.run_job(Job(small, out, OPS), settings)
    assert holder["r"].status == "cancelled"
    assert elapsed < 0.5, f"cancel took {elapsed:.3f} s"
    assert after.status == "ok"
    assert leftovers(workdir) == []


def test_cli_jobs_2_on_many_small_captures_matches_jobs_1(workdir):
    if WILD.is_dir():
        inputs = workdir / "in"
        inputs.mkdir()
        for src in sorted(WILD.glob("*.pcap"))[:60]:
            shutil.copyfile(src, inputs / src.name)
    else:
        inputs = small_files(workdir / "in", 30)[0].parent
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(workdir))
    outputs, reported = {}, {}
    for jobs in (1, 2):
        out = workdir / f"out{jobs}"
        proc = subprocess.run([sys.executable, "-m", "pktmask_gui", "process", str(inputs), "-o", str(out), "-q",
                               "--jobs", str(jobs), "--dedup", "--anonymize", "--mask", "--json"],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode in (0, 1), proc.stderr      # 1: some wild captures fail, each on its own
        outputs[jobs] = {p.name: p.read_bytes() for p in out.iterdir()}
        reported[jobs] = [(f["input"], f["status"]) for f in json.loads(proc.stdout)["files"]]
    assert outputs[1] and outputs[1] == outputs[2]
    # side by side the largest start first, yet --json lists the files in the order given, as with one job
    assert reported[1] == reported[2] and [i for i, _ in reported[1]] == sorted(i for i, _ in reported[1])
    assert leftovers(workdir) == []


def test_jobs_side_by_side_start_largest_first_one_at_a_time_in_order(workdir):
    from pktmask_gui.cli import _dispatch_order

    sizes = [5, 700, 20, 0, 9000]
    jobs = []
    for i, size in enumerate(sizes):
        (workdir / f"f{i}.pcap").write_bytes(b"x" * size)
        jobs.append(Job(workdir / f"f{i}.pcap"))
    jobs.append(Job(workdir / "gone.pcap"))             # vanished since it was found: last, not an error
    assert _dispatch_order(jobs, 1) == [0, 1, 2, 3, 4, 5]
    assert _dispatch_order(jobs, 2) == [4, 1, 2, 0, 3, 5]


FORKED = r'''
import json, os, sys
from pathlib import Path
from pktmask_gui.pipeline import Job
from pktmask_gui.settings import Settings
from pktmask_gui.workerpool import WorkerPool, preload

if __name__ == "__main__":
    inputs, out, temp = (Path(a) for a in sys.argv[1:4])
    sys.stdout.write("said once")           # still in this process's buffer when the workers start
    preload()
    settings = Settings(temp_root=str(temp))
    with WorkerPool(2, fork=True) as pool:
        pool.warm()
        cmdlines = [" ".join(open(f"/proc/{pid}/cmdline").read().split("\0")) for pid in pool.worker_pids()]
        results = [pool.run_job(Job(p, out, ["dedup", "anonymize", "mask"], key_file=temp.parent / "k"),
                                settings) for p in sorted(inputs.iterdir())]
    print("\n" + json.dumps({"cmdlines": cmdlines, "statuses": [r.status for r in results],
                             "own": " ".join(open("/proc/self/cmdline").read().split("\0"))}))
'''


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers start by fork on Linux only")
def test_the_clis_workers_are_forks_that_repeat_no_output_and_write_what_a_spawned_worker_writes(workdir):
    import json

    inputs = workdir / "in"
    small_files(inputs, 4)
    (workdir / "k").write_bytes(bytes(range(32)))
    (workdir / "temp").mkdir()
    script = workdir / "forked.py"
    script.write_text(FORKED)
    proc = subprocess.run([sys.executable, str(script), str(inputs), str(workdir / "out"), str(workdir / "temp")],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("said once") == 1, proc.stdout     # a fork must not write the buffer again
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["statuses"] == ["ok"] * 4
    assert all(c == report["own"] for c in report["cmdlines"])   # forks: the parent's command line, no spawn
    settings = Settings(temp_root=str(workdir / "temp"))
    for path in sorted(inputs.iterdir()):                        # the same bytes as a job in this process
        expected = run_job(Job(path, workdir / "here", OPS, key_file=workdir / "k"), settings)
        assert Path(expected.output).read_bytes() == (workdir / "out" / Path(expected.output).name).read_bytes()
    assert leftovers(workdir) == []


def test_a_lane_sends_the_next_job_ahead_and_a_job_cancelled_while_it_waits_never_begins(
        workdir, big_capture, monkeypatch):
    """run_lane: the second job is on the worker while the first runs; cancelled there, the worker answers it
    without running it; the third runs as usual; every result comes in order, each begin after the result
    before it, all on one worker, and nothing is left."""
    import pktmask_gui.workerpool as workerpool
    from pktmask_gui.workerpool import LaneJob

    monkeypatch.setattr(workerpool, "PREFETCH_MAX_BYTES", 1 << 40)     # send ahead even behind the big file
    small = small_files(workdir / "in", 2)
    settings = settings_for(workdir)
    out = workdir / "out"
    waiting_cancel = threading.Event()
    events, records = [], []

    def progress(phase, done, total, packets):
        if packets > 1000:
            waiting_cancel.set()        # the big job runs: cancel the one sent behind it

    items = [LaneJob(Job(big_capture, out, ["dedup"]), settings, progress=progress, on_log=records.append),
             LaneJob(Job(small[0], out, OPS), settings, cancel=waiting_cancel, on_log=records.append),
             LaneJob(Job(small[1], out, OPS), settings, on_log=records.append)]
    for i, item in enumerate(items):
        item.tag = i
        item.begin = lambda i=i: events.append(("begin", i))
    queue = list(items)
    with WorkerPool(1) as pool:
        pool.warm()
        pid = pool.worker_pids()[0]
        pool.run_lane(lambda: queue.pop(0) if queue else None,
                      lambda item, result: events.append(("result", item.tag, result.status)))
        assert pool.started == 1
    assert events == [("begin", 0), ("result", 0, "ok"), ("result", 1, "cancelled"),
                      ("begin", 2), ("result", 2, "ok")]
    # the worker itself answered the cancelled job: it had been sent while the big job ran
    assert any("never began" in r.getMessage() and r.process == pid for r in records)
    assert sorted(p.name for p in out.iterdir()) == ["big-sanitized.pcap", "small-01-sanitized.pcap"]
    assert leftovers(workdir) == []


def test_a_job_waiting_behind_one_whose_worker_dies_runs_on_a_new_worker(workdir, big_capture, monkeypatch):
    import pktmask_gui.workerpool as workerpool
    from pktmask_gui.workerpool import LaneJob

    monkeypatch.setattr(workerpool, "PREFETCH_MAX_BYTES", 1 << 40)
    small = small_files(workdir / "in", 2)
    settings = settings_for(workdir)
    out = workdir / "out"
    killed = threading.Event()

    def progress(phase, done, total, packets):
        if packets > 1000 and not killed.is_set():
            killed.set()
            os.kill(owner_pid(next((workdir / "temp").glob("pktmask_pipeline_*"))), signal.SIGKILL)

    queue = [LaneJob(Job(big_capture, out, ["dedup"]), settings, progress=progress, tag="big"),
             LaneJob(Job(small[0], out, OPS), settings, tag="s0"),
             LaneJob(Job(small[1], out, OPS), settings, tag="s1")]
    results = {}
    with WorkerPool(1) as pool:
        pool.warm()
        pool.run_lane(lambda: queue.pop(0) if queue else None,
                      lambda item, result: results.setdefault(item.tag, result))
        started = pool.started
    assert killed.is_set()
    assert results["big"].status == "failed" and "worker process ended unexpectedly" in results["big"].error
    assert results["s0"].status == "ok" and results["s1"].status == "ok"      # s0 had not begun: run again
    assert started == 2
    assert sorted(p.name for p in out.iterdir()) == ["small-00-sanitized.pcap", "small-01-sanitized.pcap"]
    assert leftovers(workdir) == []


def test_a_job_is_published_while_the_next_one_runs_and_nothing_of_either_is_lost(workdir, monkeypatch):
    """The worker's publisher finishes job A (its fsync made slow here) while job B's passes run: B's progress
    sent meanwhile waits in the lane and reaches B's callback; A's result comes first; both outputs whole."""
    import pktmask_gui.pipeline as pipeline
    from pktmask_gui.workerpool import LaneJob

    if threading.active_count() != 1 or not sys.platform.startswith("linux"):
        pytest.skip("the slow sync reaches the worker only in a fork of this process")
    real_sync = pipeline._sync

    def slow_sync(path):
        time.sleep(1.5)         # longer than B's passes: all of B's progress comes before A's result
        real_sync(path)
    monkeypatch.setattr(pipeline, "_sync", slow_sync)
    small = small_files(workdir / "in", 1)[0]
    big = workdir / "in" / "b.pcap"
    generate(big, packets=60000, seed=4)
    settings = settings_for(workdir)
    out = workdir / "out"
    events, seen = [], []
    queue = [LaneJob(Job(small, out, OPS), settings, tag="a", begin=lambda: events.append("begin a")),
             LaneJob(Job(big, out, OPS), settings, tag="b", begin=lambda: events.append("begin b"),
                     progress=lambda phase, done, total, packets: events.append("progress b") or
                     seen.append(done / total))]
    with WorkerPool(1, fork=True) as pool:
        pool.warm()
        pool.run_lane(lambda: queue.pop(0) if queue else None,
                      lambda item, result: events.append(f"result {item.tag} {result.status}"))
    assert [e for e in events if not e.startswith("progress")] == ["begin a", "result a ok", "begin b",
                                                                     "result b ok"]
    # B's passes ran while A was being synced: its progress messages then waited for it, none was dropped
    assert events.count("progress b") >= 3 and seen[0] < 0.9
    assert sorted(p.name for p in out.iterdir()) == ["b-sanitized.pcap", "small-00-sanitized.pcap"]
    assert Path(run_job(Job(big, workdir / "ref", OPS), settings).output).read_bytes() == \
        (out / "b-sanitized.pcap").read_bytes()
    assert leftovers(workdir) == []
