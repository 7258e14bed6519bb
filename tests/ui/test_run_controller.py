"""The run controller on its own, no window: real files, the real engine in child processes, parallel slots,
cancel and close mid-run, and nothing left behind."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pktmask_gui.samplegen import generate
from pktmask_gui.ui.queue import QueueModel
from pktmask_gui.ui.run_controller import RunController


def outputs(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture
def make_controller(qapp, ui_env):     # noqa: ARG001 - a QApplication for the controller's QObjects
    made = []

    def make(**settings):
        model = QueueModel()
        controller = RunController(model, ui_env.settings(**settings))
        made.append(controller)
        return model, controller

    yield make
    for controller in made:          # a failed test must not leave a job thread running
        if controller.threads_alive():
            controller.begin_shutdown()
            controller.wait_for_jobs(10.0)


def wait_running(qtbot, model, name, timeout=30000):
    def running():
        row = next(r for r in model.rows if r.path.name == name)
        assert row.status == "Running" and row.phase and row.fraction() >= 0.02
    qtbot.waitUntil(running, timeout=timeout)


def test_a_run_of_several_files_keeps_two_jobs_running_and_ends_once_with_every_output(
        qtbot, ui_env, make_controller):
    model, controller = make_controller(parallel_jobs=2)
    files = []
    for i in range(5):
        files.append(ui_env.inputs / f"f{i}.pcap")
        generate(files[-1], packets=3000, seed=i, dup_ratio=0.1)
    added, refused = model.add_paths(files)
    assert len(added) == 5 and refused == []
    running = []
    controller.runner.progress.connect(lambda *_args: running.append(controller.running_count()))
    ended = []
    controller.finished.connect(ended.append)
    with qtbot.waitSignals([controller.started, controller.finished], order="strict", timeout=120000):
        controller.start(["dedup"], ui_env.out)
        assert [r.status for r in model.rows] == ["Running", "Running", "Queued", "Queued", "Queued"]
        assert model.result_text(model.rows[0]) == "Writing f0-sanitized.pcap"
    assert max(running) == 2
    assert [r.status for r in model.rows] == ["Done"] * 5
    assert outputs(ui_env.out) == [f"f{i}-sanitized.pcap" for i in range(5)]
    (run,) = ended
    assert list(run.row_ids) == [r.id for r in model.rows] and run.counts() == (5, 0, 0)
    assert [r.input for r in controller.last_results] == [str(f) for f in files]     # queue order
    assert controller.run is None and controller.progress() == (0.0, 0, 0)
    qtbot.waitUntil(controller.is_idle, timeout=10000)      # the last thread ends just after its result
    assert model.result_text(model.rows[4]).startswith("Saved f4-sanitized.pcap · ")
    assert ui_env.leftovers() == [] and os.listdir(ui_env.temp_root) == []


def test_cancel_mid_run_stops_every_job_drops_the_queued_ones_and_leaves_nothing_behind(
        qtbot, ui_env, make_controller, big_capture):
    model, controller = make_controller(parallel_jobs=2)
    twin = ui_env.inputs / "twin.pcap"
    os.link(big_capture, twin)                               # a second large input, no copy
    small = ui_env.inputs / "small.pcap"
    generate(small, packets=100, seed=1)
    model.add_paths([big_capture, twin, small])
    controller.start(["dedup", "mask"], ui_env.out)
    wait_running(qtbot, model, "big.pcap")
    wait_running(qtbot, model, "twin.pcap")
    fraction, finished, files = controller.progress()
    assert 0 < fraction < 1 and (finished, files) == (0, 3)
    words = []
    controller.cancelling.connect(words.append)
    with qtbot.waitSignal(controller.finished, timeout=30000) as ended:
        controller.cancel_all()
        assert [r.status for r in model.rows] == ["Cancelling…", "Cancelling…", "Cancelled"]
    assert words == ["stopping 2 running files, dropped 1 queued file"]
    assert [r.status for r in model.rows] == ["Cancelled"] * 3
    assert [model.result_text(r) for r in model.rows] == ["Cancelled; nothing was written"] * 2 + [
        "Cancelled before it started"]
    assert ended.args[0].counts() == (0, 0, 2)
    controller.runner.cancel_all_and_wait(10.0)              # the threads end just after their results
    assert outputs(ui_env.out) == []
    assert ui_env.leftovers(big_capture.parent) == [] and os.listdir(ui_env.temp_root) == []


def test_closing_while_running_cancels_waits_for_the_cleanup_and_starts_nothing_more(
        qtbot, ui_env, make_controller, big_capture):
    model, controller = make_controller(parallel_jobs=1)
    late = ui_env.inputs / "late.pcap"
    generate(late, packets=100, seed=2)
    model.add_paths([big_capture, late])
    controller.start(["dedup", "anonymize", "mask"], ui_env.out)
    wait_running(qtbot, model, "big.pcap")
    assert controller.begin_shutdown() == 1
    assert [r.status for r in model.rows] == ["Cancelling…", "Cancelled"]
    controller.fill_slots()
    controller.start(["dedup"], ui_env.out)                   # closing: nothing starts any more
    assert controller.running_count() == 1 and model.rows[1].status == "Cancelled"
    assert controller.wait_for_jobs(10.0) is True
    assert controller.threads_alive() == 0 and controller.run is None
    assert [r.status for r in model.rows] == ["Cancelled", "Cancelled"]
    assert outputs(ui_env.out) == []
    assert ui_env.leftovers(big_capture.parent) == [] and os.listdir(ui_env.temp_root) == []


def test_files_queued_during_a_run_join_it_with_its_operations_and_output_folder(
        qtbot, ui_env, make_controller, big_capture):
    model, controller = make_controller(parallel_jobs=2)
    model.add_paths([big_capture])
    controller.start(["dedup", "anonymize", "mask"], ui_env.out)    # every operation: it takes seconds
    wait_running(qtbot, model, "big.pcap")
    late = ui_env.inputs / "late.pcap"
    generate(late, packets=300, seed=3)
    model.add_paths([late])
    with qtbot.waitSignal(controller.row_finished, timeout=30000,
                          check_params_cb=lambda row: row.path.name == "late.pcap"):
        controller.fill_slots()                               # what the window does after queueing
    controller.cancel_row(model.rows[0])
    qtbot.waitUntil(controller.is_idle, timeout=30000)
    assert [r.status for r in model.rows] == ["Cancelled", "Done"]
    assert outputs(ui_env.out) == ["late-sanitized.pcap"]
    assert [r.status for r in controller.last_results] == ["cancelled", "ok"]
    assert ui_env.leftovers(big_capture.parent) == []


def test_a_running_row_names_the_file_its_job_writes_after_the_settings_change(
        qtbot, ui_env, make_controller, big_capture):
    import dataclasses

    model, controller = make_controller(parallel_jobs=1)
    second = ui_env.inputs / "second.pcap"
    generate(second, packets=200, seed=3)
    model.add_paths([big_capture, second])
    model.set_destination(controller.settings, ui_env.out)
    assert model.result_text(model.rows[1]) == "Will be saved as second-sanitized.pcap"
    controller.start(["dedup", "anonymize", "mask"], ui_env.out)
    wait_running(qtbot, model, "big.pcap")
    changed = dataclasses.replace(controller.settings, output_suffix="-v2")
    controller.settings = changed                             # what the window does when settings are saved
    model.set_destination(changed, ui_env.out)
    assert model.result_text(model.rows[0]) == "Writing big-sanitized.pcap"
    assert model.result_text(model.rows[1]) == "Will be saved as second-v2.pcap"
    controller.cancel_row(model.rows[0])
    qtbot.waitUntil(controller.is_idle, timeout=30000)
    assert Path(model.rows[1].result.output).name == "second-v2.pcap"
    assert ui_env.leftovers(big_capture.parent) == []


def test_a_lone_file_gets_every_slot_and_files_side_by_side_one_each(qtbot, ui_env, make_controller, monkeypatch,
                                                                      caplog):
    """parallel_jobs 2: a run of one file runs its main pass on two processes (segments.py); a run of two
    files runs them side by side, one process each."""
    import logging

    from pktmask_gui import segments

    monkeypatch.setattr(segments, "MIN_SPLIT_BYTES", 0)
    monkeypatch.setattr(segments, "MIN_SEGMENT_BYTES", 1)
    caplog.set_level(logging.DEBUG, logger="pktmask_gui")
    model, controller = make_controller(parallel_jobs=2)
    splits = []
    start = controller.runner.start
    monkeypatch.setattr(controller.runner, "start", lambda row, job, settings, slots=1, split=1: (
        splits.append(split), start(row, job, settings, slots=slots, split=split)))
    lone = ui_env.inputs / "lone.pcap"
    generate(lone, packets=8000, seed=3)
    model.add_paths([lone])
    with qtbot.waitSignal(controller.finished, timeout=120000):
        controller.start(["dedup", "anonymize", "mask"], ui_env.out)
    assert splits == [2]
    assert "The main pass runs on 2 segments" in caplog.text
    assert model.rows[0].status == "Done"
    pair = [ui_env.inputs / "a.pcap", ui_env.inputs / "b.pcap"]
    for i, path in enumerate(pair):
        generate(path, packets=2000, seed=i)
    model.add_paths(pair)
    with qtbot.waitSignal(controller.finished, timeout=120000):
        controller.start(["dedup"], ui_env.out)
    assert splits == [2, 1, 1]


def test_rows_queued_again_or_left_between_removed_ones_still_run(qtbot, ui_env, make_controller):
    """The controller looks for queued rows from the first one that may be queued: a row queued again above
    it, or rows that moved up when finished ones above them were removed, are still found and run."""
    model, controller = make_controller(parallel_jobs=2)
    files = []
    for i in range(6):
        files.append(ui_env.inputs / f"q{i}.pcap")
        generate(files[-1], packets=200, seed=i)
    model.add_paths(files[:4])
    with qtbot.waitSignal(controller.finished, timeout=60000):
        controller.start(["dedup"], ui_env.out)
    assert [r.status for r in model.rows] == ["Done"] * 4
    model.add_paths(files[4:])
    model.requeue([model.rows[1]])                          # above the new ones: the scan goes back for it
    model.remove_rows([model.rows[0], model.rows[2]])       # scattered: the rows below move up
    assert [r.path.name for r in model.rows] == ["q1.pcap", "q3.pcap", "q4.pcap", "q5.pcap"]
    assert [model.position(r) for r in model.rows] == [0, 1, 2, 3]
    assert all(model.row_by_id(r.id) is r for r in model.rows)
    assert [r.path.name for r in model.queued_rows()] == ["q1.pcap", "q4.pcap", "q5.pcap"]
    with qtbot.waitSignal(controller.finished, timeout=60000) as ended:
        controller.start(["dedup"], ui_env.out / "again")
    assert [r.status for r in model.rows] == ["Done"] * 4
    assert sorted(Path(r.input).name for r in ended.args[0].results) == ["q1.pcap", "q4.pcap", "q5.pcap"]
    assert outputs(ui_env.out / "again") == ["q1-sanitized.pcap", "q4-sanitized.pcap", "q5-sanitized.pcap"]
    qtbot.waitUntil(controller.is_idle, timeout=10000)
    assert ui_env.leftovers() == []


def test_a_row_standing_by_is_taken_back_when_cancelled_or_when_the_settings_change(
        qtbot, ui_env, make_controller, big_capture):
    """One slot: the next two rows are handed to the runner ahead of need (still Queued), so that each begins the
    moment the job before it ends. Cancelled, it never runs; after a settings change it runs with the new
    settings, like any row that had not started."""
    import dataclasses

    model, controller = make_controller(parallel_jobs=1)
    s1, s2 = ui_env.inputs / "s1.pcap", ui_env.inputs / "s2.pcap"
    generate(s1, packets=200, seed=1)
    generate(s2, packets=200, seed=2)
    model.add_paths([big_capture, s1, s2])
    controller.start(["dedup", "anonymize", "mask"], ui_env.out)
    wait_running(qtbot, model, "big.pcap")
    assert [r.status for r in model.rows] == ["Running", "Queued", "Queued"]
    # s1 and s2 stand by (two rows per slot); behind a big file neither is sent to the worker yet
    assert controller.running_count() == 1 and controller.runner.held_count() == 3
    controller.cancel_row(model.rows[1])
    assert model.rows[1].status == "Cancelled" and controller.runner.held_count() == 2
    controller.fill_slots()                                   # nothing more to hand over
    assert controller.runner.held_count() == 2 and model.rows[2].status == "Queued"
    controller.settings = dataclasses.replace(controller.settings, output_suffix="-v2")
    assert controller.runner.held_count() == 1                # taken back: it had the old settings
    controller.fill_slots()
    assert controller.runner.held_count() == 2
    controller.cancel_row(model.rows[0])
    with qtbot.waitSignal(controller.finished, timeout=60000):
        pass
    assert [r.status for r in model.rows] == ["Cancelled", "Cancelled", "Done"]
    assert model.result_text(model.rows[1]) == "Cancelled before it started"
    assert outputs(ui_env.out) == ["s2-v2.pcap"]
    qtbot.waitUntil(controller.is_idle, timeout=10000)
    assert ui_env.leftovers(big_capture.parent) == []
