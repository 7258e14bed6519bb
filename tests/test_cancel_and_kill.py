"""Cancel and kill: jobs cancelled at random moments, the CLI interrupted (SIGINT, SIGTERM) and killed
(SIGKILL). What exists afterwards is complete, the inputs are unchanged, no job child outlives its job, and
the next start sweeps what a killed run left behind without touching a live instance's folders."""
from __future__ import annotations

import json
import os
import random
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
from helpers import GOOD_PCAP, REPO, cli, cli_popen, leftovers, settings_for, sha

from pktmask_gui.jobs import run_job_process
from pktmask_gui.pipeline import Job, run_job
from pktmask_gui.samplegen import generate
from pktmask_gui.workspace import MARKER


def job_children() -> list:
    """Live job child processes of this process (multiprocessing's resource tracker is not one)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.Error:
            pass
    return found


def test_cancel_at_100_random_moments_leaves_a_complete_output_or_none(work):
    """100 jobs in child processes, 4 at a time (as the CLI runs them), each cancelled at a seeded random
    moment: already cancelled when it starts (10), when the relayed progress passes a random fraction of the
    work in any pass (60), at a random wall-clock moment 0-0.3 s in (20: before the child reports, while
    publishing, ...), or never (10). Moments tied to progress keep the mix the same on a loaded machine.
    Every result is either cancelled with no output, or ok with the complete output."""
    rng = random.Random(20261127)
    files = []
    for i in range(4):
        src = work / f"in{i}.pcap{'ng' if i % 2 else ''}"
        generate(src, packets=800 + 600 * i, seed=i, fmt="pcapng" if i % 2 else "pcap", dup_ratio=0.1)
        files.append(src)
    stages = ["dedup", "mask"]
    reference = {}
    for src in files:
        ref = run_job(Job(src, work / "ref", stages), settings_for(work))
        assert ref.status == "ok", ref.error
        reference[src] = Path(ref.output).read_bytes()
    before = {src: sha(src) for src in files}
    settings = settings_for(work)
    plan = ["before"] * 10 + ["progress"] * 60 + ["clock"] * 20 + ["never"] * 10
    rng.shuffle(plan)
    moments = [(kind, rng.uniform(0.0, 1.0) if kind == "progress" else rng.uniform(0.0, 0.3)) for kind in plan]

    def one(i):
        src = files[i % len(files)]
        kind, at = moments[i]
        cancel = threading.Event()
        timer = threading.Timer(at, cancel.set) if kind == "clock" else None
        if kind == "before":
            cancel.set()

        def progress(phase, done, total, packets):
            if kind == "progress" and done >= at * total:
                cancel.set()

        if timer:
            timer.start()
        try:
            return src, run_job_process(Job(src, work / "out" / str(i), stages), settings, progress=progress,
                                        cancel=cancel)
        finally:
            if timer:
                timer.cancel()

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, range(100)))
    counts = {"ok": 0, "cancelled": 0}
    for i, (src, result) in enumerate(results):
        assert result.status in counts, (result.status, result.error)
        counts[result.status] += 1
        out = work / "out" / str(i)
        written = [p for p in out.rglob("*")] if out.exists() else []
        if result.status == "cancelled":
            assert written == [], (i, written)
        else:
            assert written == [Path(result.output)]
            assert Path(result.output).read_bytes() == reference[src]
        if moments[i][0] == "never":
            assert result.status == "ok", result.error
        if moments[i][0] == "before":
            assert result.status == "cancelled"
    print(f"random cancel outcomes: {counts}")
    # How many mid-run moments land before a small job ends depends on the machine's speed and load; the
    # invariants above hold for every one of the 100. At least the 10 "before" and some mid-run ones cancel.
    assert counts["cancelled"] >= 15, counts
    assert leftovers(work / "temp", work / "out") == []
    assert {src: sha(src) for src in files} == before
    assert job_children() == []                             # no child outlived its job


def test_sigint_and_sigterm_to_the_cli_at_random_moments_leave_complete_outputs_only(work):
    rng = random.Random(7)
    inputs = work / "in"
    inputs.mkdir()
    for i in range(6):     # big enough that a batch outlasts the random moment (workers start in ms now)
        generate(inputs / f"c{i}.pcap", packets=16000, seed=i, dup_ratio=0.05)
    expected = {}
    for i in range(6):
        ref = run_job(Job(inputs / f"c{i}.pcap", work / "ref", ["dedup"]), settings_for(work))
        expected[f"c{i}-sanitized.pcap"] = Path(ref.output).read_bytes()
    codes = []
    for attempt, sig in enumerate([signal.SIGINT] * 5 + [signal.SIGTERM]):     # SIGTERM: a polite kill
        out = work / f"out{attempt}"
        proc = cli_popen("process", inputs, "-o", out, "--dedup", "--jobs", "2", "--temp-dir", work / "temp")
        # Wait until the command runs its first job (Ctrl-C during the interpreter's own start-up is
        # Python's business, see docs/RELIABILITY.md), then interrupt at a random moment of the batch.
        deadline = time.monotonic() + 30
        while not any((work / "temp").iterdir()) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
        codes.append(proc.returncode)
        assert proc.returncode in (0, 130), stderr
        assert "Traceback" not in stderr
        for p in (out.iterdir() if out.exists() else []):
            assert p.read_bytes() == expected[p.name], p       # what exists is complete
        assert leftovers(work / "temp", out) == []
    print(f"SIGINT x5, SIGTERM exit codes: {codes}")
    assert 130 in codes


def _running(pipeline_dir: Path) -> bool:
    """A job's output is being written: in a staging dir its marker names (temp folder on another file
    system), or in the pipeline dir itself."""
    try:
        if json.loads((pipeline_dir / MARKER).read_text()).get("staging"):
            return True
    except (OSError, ValueError):
        pass                                    # no marker (staged in place), or it is being written
    try:
        return any("-sanitized" in p.name for p in pipeline_dir.iterdir())
    except OSError:
        return False


@pytest.mark.parametrize("temp_elsewhere", [False, True], ids=["same-fs", "temp-on-another-fs"])
def test_a_restart_after_a_sigkill_of_the_cli_sweeps_its_leftovers_but_spares_a_live_instance(
        work, request, temp_elsewhere):
    big = work / "big.pcap"
    generate(big, packets=150000, seed=3)
    big2 = work / "big2.pcap"
    shutil.copyfile(big, big2)
    small = work / "small.pcap"
    small.write_bytes(GOOD_PCAP)
    out, temp = work / "out", (request.getfixturevalue("other_fs") if temp_elsewhere else work / "temp")
    # A live instance: holds a workspace and an output staging dir in the same temp root and output folder.
    code = ("import sys, time; from pathlib import Path; from pktmask_gui.workspace import JobWorkspace\n"
            "with JobWorkspace(sys.argv[1]) as ws:\n"
            "    st = ws.output_staging(Path(sys.argv[2]))\n"
            "    print(ws.path, st, flush=True); time.sleep(60)\n")
    out.mkdir()
    live = subprocess.Popen([sys.executable, "-c", code, str(temp), str(out)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    victim = None
    try:
        live_dirs = [Path(p) for p in live.stdout.readline().split()]
        # two jobs side by side: each runs in a worker process (one job at a time would run in the CLI itself)
        victim = cli_popen("process", big, big2, "-o", out, "--dedup", "--temp-dir", temp, "--jobs", "2")
        deadline = time.monotonic() + 30
        mine = []
        while time.monotonic() < deadline:
            mine = [p for p in temp.iterdir() if p not in live_dirs and p.name.startswith("pktmask_pipeline_")]
            if mine and _running(mine[0]):
                break                                   # the job (in a pool's worker) writes its output: it runs
            time.sleep(0.02)
        assert mine, "the CLI never started its job"
        children = psutil.Process(victim.pid).children(recursive=True)
        victim.kill()                                   # SIGKILL: no cleanup code runs
        victim.wait()
        gone, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, "a job child outlived the killed CLI"
        stale = [p for p in temp.iterdir() if p not in live_dirs] + \
                [p for p in out.iterdir() if p.name.startswith("pktmask_output_") and p not in live_dirs]
        # its pipeline dirs, and with the temp folder elsewhere its staging dirs in the output folder
        assert len(stale) >= (2 if temp_elsewhere else 1), stale
        # The restart writes elsewhere: a staging dir of the killed run is found through its pipeline marker.
        restart = cli("process", small, "-o", work / "out2", "--dedup", "--temp-dir", temp, "-v")
        assert restart.returncode == 0, restart.stderr
        assert "left by an earlier run" in restart.stderr
        assert all(not p.exists() for p in stale)
        assert all(p.exists() for p in live_dirs), "a live instance's dirs were swept"
        assert [p.name for p in out.iterdir() if p not in live_dirs] == []      # no partial output
        assert [p.name for p in (work / "out2").iterdir()] == ["small-sanitized.pcap"]
    finally:
        for proc in (live, victim):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    # the live instance was killed by us too: a final sweep leaves nothing
    from pktmask_gui.workspace import sweep_stale

    sweep_stale(temp, extra_dirs=[out])
    assert leftovers(temp, out) == []
