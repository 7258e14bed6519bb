"""The window on a batch of many small captures: one worker pool (two processes for every file), warm from the
moment files are queued and kept between runs until the window closes, a worker killed mid-run fails only
its row, cancel within 0.5 s, a large folder queued in slices — real widgets, real engine, real worker
processes."""
from __future__ import annotations

import json
import logging
import os
import signal
import time

import psutil
from helpers import owner_pid

from pktmask_gui.samplegen import generate
from pktmask_gui.workspace import MARKER
from ui_helpers import wait_idle, wait_running

OPS = ("dedup", "anonymize", "mask")


def small_files(folder, n):
    files = []
    for i in range(n):
        files.append(folder / f"small-{i:02d}.pcap")
        generate(files[-1], packets=60, seed=i, dup_ratio=0.2)
    return files


def tick(window, names):
    for name, box in window.op_boxes.items():
        box.setChecked(name in names)


class Processes(logging.Handler):
    """The processes the engine's log lines came from."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.pids = set()

    def emit(self, record):
        self.pids.add(record.process)


def test_a_batch_runs_on_one_pool_of_two_workers_and_leaves_nothing(qtbot, window, ui_env):
    files = small_files(ui_env.inputs, 30)
    tick(window, OPS)
    window.out_folder.setChecked(True)
    window.out_path.setText(str(ui_env.out))
    added, refused = window.add_paths([ui_env.inputs])
    assert added == 30 and refused == [] and not window.adding()
    pools = set()
    window.controller.row_finished.connect(lambda _row: pools.add(window.controller.runner.pool))
    processes = Processes()
    engine = logging.getLogger("pktmask_gui")
    engine.addHandler(processes)
    try:
        assert window.start()
        wait_idle(qtbot, window, timeout=120000)
    finally:
        engine.removeHandler(processes)
    assert [r.status for r in window.model.rows] == ["Done"] * 30
    (pool,) = pools                                  # one pool for the whole run
    assert pool.started == 2                         # two processes for thirty files
    workers = processes.pids - {os.getpid()}
    assert 1 <= len(workers) <= 2                    # the jobs' lines came from those workers
    assert workers <= set(pool.worker_pids())
    assert sorted(p.name for p in ui_env.out.iterdir()) == sorted(f"{f.stem}-sanitized.pcap" for f in files)
    assert ui_env.leftovers() == []
    # The summary lists every file.
    qtbot.waitUntil(lambda: window.summary_dialog is not None and window.summary_dialog.isVisible())
    summary = window.summary_dialog.table.model()
    assert summary.rowCount() == 30
    assert sorted(summary.index(i, 0).data() for i in range(30)) == sorted(f.name for f in files)
    # The pool stays warm for the next run, and goes with the window.
    assert window.controller.runner.pool is pool
    window.close()
    assert window.controller.runner.pool is None
    assert not alive(workers) and ui_env.leftovers() == []


def test_a_worker_killed_mid_run_fails_only_its_row(qtbot, window, ui_env, big_capture):
    window.apply_settings(ui_env.settings(parallel_jobs=2))
    big = ui_env.inputs / "big.pcap"
    os.link(big_capture, big)
    (ui_env.inputs / "more").mkdir()
    small_files(ui_env.inputs / "more", 8)
    window.add_paths([big, ui_env.inputs / "more"])
    assert window.start()
    wait_running(qtbot, window, "big.pcap")
    found = []
    qtbot.waitUntil(lambda: found.extend(p for p in ui_env.temp_root.glob("pktmask_pipeline_*")
                                         if _job_of(p) == "big.pcap") or bool(found), timeout=10000)
    os.kill(owner_pid(found[0]), signal.SIGKILL)
    wait_idle(qtbot, window, timeout=120000)
    statuses = {r.path.name: r.status for r in window.model.rows}
    assert statuses.pop("big.pcap") == "Failed"
    assert set(statuses.values()) == {"Done"} and len(statuses) == 8
    big_row = next(r for r in window.model.rows if r.path.name == "big.pcap")
    assert "worker process ended unexpectedly" in big_row.error
    assert ui_env.leftovers() == []


def _job_of(pipeline_dir):
    """The job a pipeline dir belongs to, by the output name staged in it or in the staging dir its marker
    names (none yet: unknown)."""
    try:
        places = [pipeline_dir] + (json.loads((pipeline_dir / MARKER).read_text()).get("staging") or [])
    except (OSError, ValueError):
        places = [pipeline_dir]
    for place in places:
        try:
            if any(p.startswith("big-") for p in os.listdir(place)):
                return "big.pcap"
        except OSError:
            pass
    return None


def test_cancel_during_a_pooled_run_takes_effect_within_half_a_second(qtbot, window, ui_env, big_capture):
    big = ui_env.inputs / "big.pcap"
    os.link(big_capture, big)
    (ui_env.inputs / "more").mkdir()
    small_files(ui_env.inputs / "more", 6)
    window.add_paths([big, ui_env.inputs / "more"])
    assert window.start()
    wait_running(qtbot, window, "big.pcap")
    t0 = time.monotonic()
    window.cancel_button.click()
    qtbot.waitUntil(lambda: not window.controller.running_count(), timeout=5000)
    elapsed = time.monotonic() - t0
    wait_idle(qtbot, window)
    assert elapsed < 0.5, f"cancel took {elapsed:.3f} s"
    assert next(r for r in window.model.rows if r.path.name == "big.pcap").status == "Cancelled"
    assert ui_env.leftovers() == []


def test_a_large_folder_is_queued_in_slices_while_the_window_stays_live(qtbot, window, ui_env):
    folder = ui_env.inputs / "many"
    folder.mkdir()
    src = small_files(ui_env.inputs, 1)[0]
    for i in range(1500):
        os.link(src, folder / f"f{i:04d}.pcap")
    first, refused = window.add_paths([folder])
    assert refused == [] and 0 < first < 1500 and window.adding()
    qtbot.waitUntil(lambda: not window.adding(), timeout=30000)
    assert len(window.model.rows) == 1500
    assert [r.path.name for r in window.model.rows[:3]] == ["f0000.pcap", "f0001.pcap", "f0002.pcap"]
    assert window.start_button.isEnabled()
    assert "1500 queued" in window.counts_label.text()
    # The same folder again: every file is refused as already queued, in one notice.
    window.add_paths([folder])
    qtbot.waitUntil(lambda: not window.adding(), timeout=30000)
    assert len(window.model.rows) == 1500
    assert window.notice.isVisible()


def alive(pids) -> list[int]:
    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_queued_files_warm_the_pool_the_next_run_reuses_it_and_closing_leaves_nothing(qtbot, window, ui_env):
    """Files queued: the workers start while the user looks; two runs share them; a settings change of the
    parallel jobs resizes the pool; closing the window ends every worker and leaves no pktmask_* behind."""
    small_files(ui_env.inputs, 6)
    tick(window, OPS)
    window.out_folder.setChecked(True)
    window.out_path.setText(str(ui_env.out))
    runner = window.controller.runner
    assert runner.pool is None
    window.add_paths([ui_env.inputs])
    qtbot.waitUntil(lambda: runner.pool is not None, timeout=2000)     # the files queued, before Start
    pool = runner.pool
    assert pool.size == 2
    qtbot.waitUntil(lambda: len(pool.worker_pids()) == 2, timeout=10000)
    assert runner.job_threads() == 2                  # and the job threads that will take the jobs
    warm = set(pool.worker_pids())
    assert window.start()
    wait_idle(qtbot, window, timeout=60000)
    assert [r.status for r in window.model.rows] == ["Done"] * 6
    assert runner.pool is pool and set(pool.worker_pids()) == warm and pool.started == 2

    window.model.requeue(window.model.rows)           # a second run: the same workers, none started
    window.out_path.setText(str(ui_env.out / "again"))
    assert window.start()
    wait_idle(qtbot, window, timeout=60000)
    assert [r.status for r in window.model.rows] == ["Done"] * 6
    assert runner.pool is pool and pool.started == 2

    window.apply_settings(ui_env.settings(parallel_jobs=3))      # more parallel jobs: one more worker
    qtbot.waitUntil(lambda: len(pool.worker_pids()) == 3, timeout=10000)
    three = set(pool.worker_pids())
    assert warm < three
    window.apply_settings(ui_env.settings(parallel_jobs=1))      # fewer: the idle ones beyond it exit
    qtbot.waitUntil(lambda: len(pool.worker_pids()) == 1 and alive(three - set(pool.worker_pids())) == [],
                    timeout=10000)

    window.close()
    assert runner.pool is None
    assert alive(three) == []
    qtbot.waitUntil(lambda: runner.job_threads() == 0, timeout=5000)
    assert ui_env.leftovers() == []


def test_closing_the_window_right_after_queueing_ends_the_starting_workers(qtbot, window, ui_env):
    small_files(ui_env.inputs, 2)
    window.add_paths([ui_env.inputs])
    qtbot.waitUntil(lambda: window.controller.runner.pool is not None, timeout=2000)
    pool = window.controller.runner.pool
    qtbot.waitUntil(lambda: pool.started == 2, timeout=10000)
    pids = pool.worker_pids()                       # started; still importing the engine, most likely
    window.close()
    assert alive(pids) == [] and ui_env.leftovers() == []


def test_a_row_removed_while_it_stands_by_never_runs(qtbot, window, ui_env, big_capture):
    window.apply_settings(ui_env.settings(parallel_jobs=1))
    big = ui_env.inputs / "big.pcap"
    os.link(big_capture, big)
    (ui_env.inputs / "more").mkdir()
    small_files(ui_env.inputs / "more", 2)
    window.add_paths([big, ui_env.inputs / "more"])
    window.out_folder.setChecked(True)
    window.out_path.setText(str(ui_env.out))
    assert window.start()
    wait_running(qtbot, window, "big.pcap")
    assert window.controller.runner.held_count() == 3           # the next two rows stand by
    window.queue_view.selectRow(1)
    window.act_remove.trigger()
    assert [r.path.name for r in window.model.rows] == ["big.pcap", "small-01.pcap"]
    assert window.controller.runner.held_count() == 2
    window.cancel_row(window.model.rows[0])
    wait_idle(qtbot, window)
    assert [r.status for r in window.model.rows] == ["Cancelled", "Done"]
    assert sorted(p.name for p in ui_env.out.rglob("*") if p.is_file()) == ["small-01-sanitized.pcap"]
    assert ui_env.leftovers() == []

