"""Cancel and close while real jobs run: job threads, the engine's cancel token, nothing left behind;
the order of the runner's signals."""
from __future__ import annotations

import os
import threading
import time

from pktmask_gui.pipeline import Job
from pktmask_gui.samplegen import generate
from pktmask_gui.ui.workers import JobRunner

from ui_helpers import make_window, wait_idle, wait_running


def outputs(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_cancel_stops_a_large_job_within_half_a_second_and_leaves_nothing(window, ui_env, qtbot, big_capture):
    ui_env.settings(parallel_jobs=1)
    window.apply_settings(window.settings.__class__(**{**window.settings.__dict__, "parallel_jobs": 1}))
    small = ui_env.inputs / "small.pcap"
    generate(small, packets=100, seed=1)
    window.add_paths([big_capture, small])
    window.out_folder.setChecked(True)
    window.out_path.setText(str(ui_env.out))
    assert window.start()
    row = wait_running(qtbot, window, "big.pcap")
    assert 0 < row.fraction() < 1 and row.packets_done > 0
    worker = window.controller.runner.worker(row.id)

    started = time.monotonic()
    window.cancel_all()
    assert worker.done.wait(5)
    stopped_after = time.monotonic() - started
    assert stopped_after <= 0.5, f"the job took {stopped_after:.2f} s to stop"

    wait_idle(qtbot, window)
    statuses = {r.path.name: r.status for r in window.model.rows}
    assert statuses == {"big.pcap": "Cancelled", "small.pcap": "Cancelled"}
    assert window.model.result_text(window.model.rows[0]) == "Cancelled; nothing was written"
    assert window.model.result_text(window.model.rows[1]) == "Cancelled before it started"
    assert outputs(ui_env.out) == []                         # no partial output
    assert ui_env.leftovers(big_capture.parent) == []         # no pktmask_* dir anywhere
    assert os.listdir(ui_env.temp_root) == []
    assert "cancelled" in window.log_panel.text()


def test_a_file_run_alone_on_two_cores_runs_below_the_window(qtbot, ui_env, big_capture):
    """One big file and two parallel jobs: the processes the window's job thread starts for it (segments, or
    one child when the file stays whole) run below the window, as the pool's workers do: the window's event
    loop gets a core when it needs one."""
    import psutil

    window = make_window(qtbot, operations=("dedup", "anonymize", "mask"))
    window.add_paths([big_capture])
    window.out_folder.setChecked(True)
    window.out_path.setText(str(ui_env.out))
    assert window.start()
    wait_running(qtbot, window, "big.pcap")
    owner = psutil.Process().nice()
    runner = window.controller.runner

    def its_own_processes_run_below():
        pool = set(runner.pool.worker_pids()) if runner.pool is not None else set()
        own = []
        for child in psutil.Process().children(recursive=True):
            try:
                if child.pid not in pool and "resource_tracker" not in " ".join(child.cmdline()):
                    own.append(child.nice())
            except psutil.Error:
                pass
        assert own and set(own) == {min(19, owner + 4)}, own
    qtbot.waitUntil(its_own_processes_run_below, timeout=15000)
    assert next(r for r in window.model.rows).status == "Running"      # (seen while it ran)
    window.cancel_all()
    wait_idle(qtbot, window)
    window.close()
    assert ui_env.leftovers(big_capture.parent) == []


def test_cancel_one_row_from_its_context_action_keeps_the_others(window, ui_env, qtbot, big_capture):
    other = ui_env.inputs / "other.pcap"
    generate(other, packets=2000, seed=4)
    window.add_paths([big_capture, other])
    window.out_folder.setChecked(True)
    window.out_path.setText(str(ui_env.out))
    assert window.start()
    row = wait_running(qtbot, window, "big.pcap")
    window.cancel_row(row)
    assert row.status == "Cancelling…"
    wait_idle(qtbot, window)
    statuses = {r.path.name: r.status for r in window.model.rows}
    assert statuses == {"big.pcap": "Cancelled", "other.pcap": "Done"}
    assert outputs(ui_env.out) == ["other-sanitized.pcap"]
    assert ui_env.leftovers(big_capture.parent) == []


def test_closing_mid_run_cancels_waits_and_cleans_up(qtbot, ui_env, big_capture, qtlog):
    window = make_window(qtbot)
    twin = ui_env.inputs / "twin.pcap"
    os.link(big_capture, twin)                               # a second large input, no copy
    window.add_paths([big_capture, twin])
    window.out_folder.setChecked(True)
    window.out_path.setText(str(ui_env.out))
    asked = []
    window.confirm_quit = lambda running: asked.append(running) or True
    assert window.start()
    wait_running(qtbot, window, "big.pcap")
    wait_running(qtbot, window, "twin.pcap")

    assert window.close()
    assert asked == [2]
    assert not window.isVisible()
    assert window.controller.threads_alive() == 0
    assert {r.status for r in window.model.rows} == {"Cancelled"}
    assert outputs(ui_env.out) == []
    assert ui_env.leftovers(big_capture.parent) == []
    assert not any("QThread" in rec.message for rec in qtlog.records)


def test_answering_no_to_the_quit_question_changes_nothing(qtbot, ui_env, big_capture):
    window = make_window(qtbot)
    window.add_paths([big_capture])
    window.out_folder.setChecked(True)
    window.out_path.setText(str(ui_env.out))
    window.confirm_quit = lambda running: False
    assert window.start()
    row = wait_running(qtbot, window, "big.pcap")
    window.act_quit.trigger()                                # Ctrl+Q
    assert window.isVisible() and row.status == "Running"
    assert window.close() is False
    window.cancel_all()
    wait_idle(qtbot, window)
    assert row.status == "Cancelled" and ui_env.leftovers(big_capture.parent) == []
    window.confirm_quit = lambda running: True


def test_about_to_quit_takes_the_same_cleanup_path(qtbot, ui_env, big_capture):
    window = make_window(qtbot)
    window.add_paths([big_capture])
    window.out_folder.setChecked(True)
    window.out_path.setText(str(ui_env.out))
    assert window.start()
    wait_running(qtbot, window, "big.pcap")
    window._on_about_to_quit()                               # what QApplication.aboutToQuit runs
    assert window.controller.threads_alive() == 0
    assert window.model.rows[0].status == "Cancelled"
    assert outputs(ui_env.out) == [] and ui_env.leftovers(big_capture.parent) == []


def test_parallel_jobs_limit_is_respected(window, ui_env, qtbot):
    files = []
    for i in range(4):
        files.append(ui_env.inputs / f"p{i}.pcap")
        generate(files[-1], packets=3000, seed=i)
    window.apply_settings(window.settings.__class__(**{**window.settings.__dict__, "parallel_jobs": 2}))
    window.add_paths(files)
    peak = []
    window.controller.runner.progress.connect(lambda *a: peak.append(window.controller.runner.running_count()))
    assert window.start()
    assert window.controller.running_count() == 2
    assert [r.status for r in window.model.rows] == ["Running", "Running", "Queued", "Queued"]
    wait_idle(qtbot, window)
    assert max(peak or [0]) <= 2
    assert [r.status for r in window.model.rows] == ["Done"] * 4


def test_files_added_during_a_run_join_it(window, ui_env, qtbot, big_capture):
    window.add_paths([big_capture])
    window.out_folder.setChecked(True)
    window.out_path.setText(str(ui_env.out))
    assert window.start()
    row = wait_running(qtbot, window, "big.pcap")
    assert not window.start_button.isEnabled()              # the run takes new files by itself
    late = ui_env.inputs / "late.pcap"
    generate(late, packets=300, seed=8)
    window.add_paths([late])
    qtbot.waitUntil(lambda: window.model.rows[1].status in ("Running", "Done"), timeout=20000)
    window.cancel_row(row)
    wait_idle(qtbot, window)
    assert [r.status for r in window.model.rows] == ["Cancelled", "Done"]
    assert [r.status for r in window.controller.last_results] == ["cancelled", "ok"]


def test_the_quit_question_names_the_running_jobs(window, qtbot):
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from pktmask_gui.ui.main_window import MainWindow

    seen = []

    def answer(button_text):
        box = QApplication.activeModalWidget()
        seen.append(box.text())
        next(b for b in box.buttons() if b.text() == button_text).click()

    QTimer.singleShot(100, lambda: answer("Keep Running"))
    assert MainWindow.confirm_quit(window, 2) is False
    QTimer.singleShot(100, lambda: answer("Cancel Jobs and Quit"))
    assert MainWindow.confirm_quit(window, 1) is True
    assert seen == ["2 jobs are running — cancel them and quit?", "1 job is running — cancel it and quit?"]


def test_progress_of_captures_above_2_gib_is_not_truncated(qtbot):
    from pktmask_gui.ui.workers import JobRunner, JobWorker

    runner = JobRunner()
    worker = JobWorker(7, None, None, to=runner)
    seen = []
    runner.progress.connect(lambda *args: seen.append(args))
    done = threading.Thread(target=worker._progress, args=("process", 5_000_000_000, 6_000_000_000, 40_000_000))
    done.start()                                  # from a job thread, as in a run
    done.join()
    qtbot.waitUntil(lambda: bool(seen), timeout=2000)
    assert seen == [(7, "process", 5_000_000_000, 6_000_000_000, 40_000_000)]


def _ok(row_id):
    return lambda rid, result: rid == row_id and result.status == "ok"


def test_a_job_reports_its_result_then_the_runner_says_it_is_idle(qtbot, ui_env):
    src = ui_env.inputs / "one.pcap"
    generate(src, packets=500, seed=1)
    runner = JobRunner()
    seen = []
    for name in ("progress", "finished", "idle"):
        getattr(runner, name).connect(lambda *_args, name=name: seen.append(name))
    with qtbot.waitSignals([runner.finished, runner.idle], order="strict", timeout=30000,
                           check_params_cbs=[_ok(1), None]):
        runner.start(1, Job(src, ui_env.out, ["dedup"]), ui_env.settings())
    assert runner.threads_alive() == 0 and runner.running_count() == 0
    # Progress (queued from the worker's thread before its result) never comes after the result.
    assert seen[-2:] == ["finished", "idle"] and "progress" in seen
    assert (ui_env.out / "one-sanitized.pcap").is_file() and ui_env.leftovers() == []


def test_jobs_report_in_the_order_they_end_and_the_runner_is_idle_once_after_the_last(qtbot, ui_env, big_capture):
    small = ui_env.inputs / "small.pcap"
    generate(small, packets=300, seed=2)
    runner = JobRunner()
    settings = ui_env.settings()
    # The small job ends first; its result cancels the large one, which then reports as cancelled.
    runner.finished.connect(lambda rid, _result: rid == 1 and runner.cancel(2))
    cancelled = lambda rid, result: rid == 2 and result.status == "cancelled"   # noqa: E731
    with qtbot.waitSignal(runner.progress, timeout=30000):    # every operation: the large job takes seconds
        runner.start(2, Job(big_capture, ui_env.out, ["dedup", "anonymize", "mask"]), settings, slots=2)
    with qtbot.waitSignals([runner.finished, runner.finished, runner.idle], order="strict", timeout=60000,
                           check_params_cbs=[_ok(1), cancelled, None]):
        runner.start(1, Job(small, ui_env.out, ["dedup"]), settings, slots=2)
    assert outputs(ui_env.out) == ["small-sanitized.pcap"]
    assert ui_env.leftovers(big_capture.parent) == []


def test_a_job_handed_while_the_threads_are_busy_waits_begins_when_one_is_free_or_is_taken_back(
        qtbot, ui_env, big_capture):
    """One slot: a second job waits (it does not run beside the first), can be taken back untouched, and
    when handed again begins the moment the first job ends, without anyone starting it."""
    small = ui_env.inputs / "small.pcap"
    generate(small, packets=300, seed=2)
    runner = JobRunner()
    settings = ui_env.settings()
    began = []
    runner.began.connect(began.append)
    with qtbot.waitSignal(runner.progress, timeout=30000):
        runner.start(2, Job(big_capture, ui_env.out, ["dedup", "anonymize", "mask"]), settings, slots=1)
    runner.start(1, Job(small, ui_env.out, ["dedup"]), settings, slots=1)
    qtbot.wait(200)
    assert runner.running_count() == 1 and runner.held_count() == 2 and began == [2]
    assert runner.withdraw(1) is True                          # never ran: nothing of it is reported
    assert runner.held_count() == 1 and runner.withdraw(1) is False and runner.withdraw(2) is False
    runner.start(1, Job(small, ui_env.out, ["dedup"]), settings, slots=1)
    cancelled = lambda rid, result: rid == 2 and result.status == "cancelled"   # noqa: E731
    with qtbot.waitSignals([runner.finished, runner.began, runner.finished, runner.idle], order="strict",
                           timeout=60000, check_params_cbs=[cancelled, lambda rid: rid == 1, _ok(1), None]):
        runner.cancel(2)
    assert began == [2, 1]
    assert outputs(ui_env.out) == ["small-sanitized.pcap"]
    assert runner.threads_alive() == 0 and ui_env.leftovers(big_capture.parent) == []


def test_a_job_that_cannot_start_reports_a_failed_result_then_idle(qtbot, ui_env):
    runner = JobRunner()
    failed = lambda rid, result: rid == 5 and result.status == "failed" and "does not exist" in result.error  # noqa: E731
    with qtbot.waitSignals([runner.finished, runner.idle], order="strict", timeout=30000,
                           check_params_cbs=[failed, None]):
        runner.start(5, Job(ui_env.inputs / "missing.pcap", ui_env.out, ["dedup"]), ui_env.settings())
    assert runner.threads_alive() == 0 and ui_env.leftovers() == []


def test_cancel_and_wait_delivers_the_cancelled_result_before_it_returns(qtbot, ui_env, big_capture):
    runner = JobRunner()
    with qtbot.waitSignal(runner.progress, timeout=30000):
        runner.start(3, Job(big_capture, ui_env.out, ["dedup"]), ui_env.settings())
    with qtbot.waitSignals([runner.finished, runner.idle], order="strict", timeout=1000,
                           check_params_cbs=[lambda _rid, result: result.status == "cancelled", None]):
        assert runner.cancel_all_and_wait(10.0)     # pumps events: both signals arrive inside it
    assert runner.threads_alive() == 0 and outputs(ui_env.out) == []
    assert ui_env.leftovers(big_capture.parent) == []


def test_a_row_started_again_before_its_last_jobs_end_arrived_is_still_counted(qtbot, ui_env):
    """The result of a row's job comes before the signal that its run() returned: a row queued again and
    started at once runs beside that late signal, which must not count the new job as ended."""
    first, second = ui_env.inputs / "first.pcap", ui_env.inputs / "second.pcap"
    generate(first, packets=200, seed=1)
    generate(second, packets=20000, seed=2)
    runner = JobRunner()
    settings = ui_env.settings()
    again = []

    def start_again(rid, result):          # as the run controller does: in the result's handler
        if result.input == str(first):
            runner.start(1, Job(second, ui_env.out, ["dedup"]), settings, slots=2)
            again.append(runner.held_count())

    runner.finished.connect(start_again)
    with qtbot.waitSignals([runner.finished, runner.finished, runner.idle], order="strict", timeout=60000,
                           check_params_cbs=[None, lambda rid, result: result.input == str(second), None]):
        runner.start(1, Job(first, ui_env.out, ["dedup"]), settings, slots=2)
    assert again == [1]
    assert runner.threads_alive() == 0 and outputs(ui_env.out) == ["first-sanitized.pcap", "second-sanitized.pcap"]
