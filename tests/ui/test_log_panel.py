"""The log panel: engine decisions in words (hard link, fallback), level filter, Copy and Save."""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication

from pktmask_gui.samplegen import generate
from pktmask_gui.ui.log_panel import JOB, MESSAGE, LogPanel

from ui_helpers import wait_idle


def run_one(window, qtbot, path):
    window.add_paths([path])
    for name, box in window.op_boxes.items():
        box.setChecked(name == "dedup")
    assert window.start()
    wait_idle(qtbot, window)
    return window.model.rows[-1]


def test_log_shows_the_hard_link_decision(window, ui_env, qtbot):
    window.apply_settings(ui_env.settings(large_file_threshold_mb=0))   # temp root on the inputs' filesystem
    src = ui_env.inputs / "linked.pcap"
    generate(src, packets=300, seed=1)
    row = run_one(window, qtbot, src)
    assert row.status == "Done"
    lines = [line for line in window.log_panel.visible_lines() if "hard-linked into the temp folder" in line]
    assert lines and "[linked.pcap]" in lines[0] and "Info" in lines[0]
    assert ui_env.leftovers() == []


def test_log_shows_the_fallback_when_the_temp_root_is_another_filesystem(window, ui_env, qtbot):
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm on this machine: no second filesystem to fall back from")
    with tempfile.TemporaryDirectory(prefix="pktmask_test_", dir="/dev/shm") as shm:
        if os.stat(shm).st_dev == os.stat(ui_env.inputs).st_dev:
            pytest.skip("/dev/shm is on the same filesystem as the test inputs here")
        window.apply_settings(ui_env.settings(large_file_threshold_mb=0, temp_root=shm))
        src = ui_env.inputs / "far.pcap"
        generate(src, packets=300, seed=2)
        row = run_one(window, qtbot, src)
        assert row.status == "Done"
        lines = [line for line in window.log_panel.visible_lines() if "could not be hard-linked" in line]
        assert lines and "falling back to reading the original file" in lines[0] and "Warning" in lines[0]
        assert os.listdir(shm) == []
    assert ui_env.leftovers() == []


def test_filter_copy_and_save(qtbot, tmp_path_factory):
    panel = LogPanel()
    qtbot.addWidget(panel)
    log = logging.getLogger("pktmask_gui.test_panel")
    log.setLevel(logging.DEBUG)
    log.addHandler(panel.handler)
    try:
        log.debug("a debug line")
        log.info("an info line")
        log.warning("a warning line", extra={"job": "x.pcap"})
        log.error("an error line\nwith a second line")
        qtbot.waitUntil(lambda: len(panel.model.entries) == 4)
    finally:
        log.removeHandler(panel.handler)
    assert [line.split("  ", 1)[1].strip().split()[0] for line in panel.visible_lines()] == ["Info", "Warning", "Error"]
    assert "[x.pcap] A warning line" in panel.text()          # a job's line starts with a capital
    assert panel.counts.text() == "1 error · 1 warning"
    panel.filter_box.setCurrentIndex(0)                       # errors only
    assert len(panel.visible_lines()) == 1 and "an error line" in panel.visible_lines()[0]
    panel.filter_box.setCurrentIndex(3)                       # everything
    assert len(panel.visible_lines()) == 4
    panel.copy_to_clipboard()
    assert "a debug line" in QApplication.clipboard().text()
    with tempfile.TemporaryDirectory(prefix="pktmask_test_") as d:
        target = Path(d) / "log.txt"
        panel.save_to(target)
        saved = target.read_text().splitlines()
        assert len(saved) == 5 and "A warning line" in saved[2]
        assert saved[4] == " " * 19 + "with a second line"     # a continuation line stays under its entry
    # Entries from a worker thread arrive through the signal, in order.
    import threading

    log.addHandler(panel.handler)
    try:
        t = threading.Thread(target=lambda: [log.info("from a thread %d", i) for i in range(50)])
        t.start()
        t.join()
        qtbot.waitUntil(lambda: len(panel.model.entries) == 54)
    finally:
        log.removeHandler(panel.handler)
    assert panel.model.entries[-1][4] == "from a thread 49"
    panel.clear()
    assert panel.visible_lines() == [] and panel.counts.text() == ""


def test_log_shows_the_read_in_place_decision_below_the_threshold(window, ui_env, qtbot):
    src = ui_env.inputs / "small.pcap"
    generate(src, packets=100, seed=3)
    row = run_one(window, qtbot, src)                      # default threshold: 200 MB
    assert row.status == "Done"
    lines = [line for line in window.log_panel.visible_lines() if "below the hard-link threshold" in line]
    assert lines and "Info" in lines[0] and "reading it in place" in lines[0]


def test_a_job_s_lines_name_its_file_in_the_file_column_and_read_as_sentences(window, ui_env, qtbot):
    from test_logging import UNREADABLE, compressed_capture, unreadable_capture

    window.apply_settings(ui_env.settings(large_file_threshold_mb=0))
    odd = unreadable_capture(ui_env.inputs / "odd.pcap")
    packed = compressed_capture(ui_env.inputs / "packed.pcapng.gz")
    bad = ui_env.inputs / "bad.pcap"
    bad.write_bytes(b"not a capture at all" * 10)
    window.add_paths([odd, packed, bad])
    for name, box in window.op_boxes.items():
        box.setChecked(name in ("dedup", "mask"))
    assert window.start()
    wait_idle(qtbot, window)
    entries = [(entry[JOB], entry[MESSAGE]) for entry in window.log_panel.model.entries]
    # The child's line and the result's warning, each under its file.
    assert entries.count(("odd.pcap", UNREADABLE)) == 2
    assert ("bad.pcap", "Failed: not a pcap or pcapng capture (it starts with the bytes 6e 6f 74 20), "
                        "at file offset 0") in entries
    assert ("packed.pcapng.gz", "The output is gzip-compressed (level 1) as it is written.") in entries
    assert any(job == "packed.pcapng.gz" and message.startswith("Gzip-compressed input (") for job, message in entries)
    jobs = {job for job, _message in entries if job}
    assert jobs == {"odd.pcap", "packed.pcapng.gz", "bad.pcap"}
    for job, message in entries:
        assert job not in message if job else True
        assert message[:1].isupper() or message[:1].isdigit(), message
    assert sum("hard-linked into the temp folder" in m for j, m in entries) == 3
    assert ui_env.leftovers() == []


def test_a_window_leaves_the_level_of_the_engine_s_loggers_to_the_app(qtbot):
    from pktmask_gui.ui.main_window import MainWindow

    engine = logging.getLogger("pktmask_gui")
    engine.setLevel(logging.WARNING)
    window = MainWindow()
    qtbot.addWidget(window)
    assert engine.level == logging.WARNING
    assert window.log_panel.handler in engine.handlers
    window.close()
    assert window.log_panel.handler not in engine.handlers
