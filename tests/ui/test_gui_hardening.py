"""Hardening of the GUI (issue 6, GUI side): cancels at random moments, damaged inputs, SIGKILL and
restart, every operation on real captures. Real clicks, the real engine, real child processes.
"""
from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from PySide6.QtCore import QElapsedTimer, Qt, QTimer
from PySide6.QtGui import QContextMenuEvent
from PySide6.QtWidgets import QApplication

from pktmask_gui.capture import CaptureReader
from pktmask_gui.samplegen import generate

from ui_helpers import copy_in, make_window, wait_idle

REPO = Path(__file__).resolve().parents[2]
VERIFY = REPO.parent / "shared" / "tools" / "verify.py"


# ============================================================================================ helpers ===
def reread(path: Path) -> int:
    """Packets in a capture that must re-read cleanly from its first byte to its last (CaptureError fails)."""
    n = 0
    with CaptureReader(path) as reader:
        for batch in reader.batches():
            n += sum(1 for rec in batch if rec[1] >= 0)
        assert not [w for w in reader.warnings if "cut short" in w], f"{path.name} is cut short: {reader.warnings}"
    return n


def job_children() -> list[psutil.Process]:
    """Our job child processes (multiprocessing spawn children) still alive."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.Error:
            pass
    return found


def only_warm_workers(window) -> bool:
    """The job processes left between runs are the window's warm pool's, idle, no more than its size."""
    pool = window.controller.local_runner.pool
    warm = set(pool.worker_pids()) if pool is not None else set()
    return {p.pid for p in job_children()} <= warm and len(warm) <= window.settings.parallel_jobs


class StallMeter:
    """The longest gap between ticks of a 20 ms UI timer: a frozen event loop shows as a long gap."""

    def __init__(self):
        self.clock = QElapsedTimer()
        self.clock.start()
        self.last = 0
        self.worst = 0
        self.timer = QTimer()
        self.timer.setInterval(20)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self):
        now = self.clock.elapsed()
        self.worst = max(self.worst, now - self.last)
        self.last = now

    def stop(self):
        self.timer.stop()


def context_menu_cancel(window, row) -> bool:
    """Right-click the row (a real QContextMenuEvent on the queue's viewport) and click the menu's Cancel
    item with the mouse. Returns True when the item was enabled (the click cancelled something)."""
    view = window.queue_view
    index = window.model.index(window.model.position(row), 0)
    view.scrollTo(index)                     # as a user would: the row may be below the visible ones
    pos = view.visualRect(index).center()
    clicked = []
    tries = [0]
    sent = [False]

    def click_in_menu():
        if sent[0]:
            return                           # the event came back without a menu: see below
        menu = QApplication.activePopupWidget()
        if menu is None:
            tries[0] += 1
            if tries[0] < 400:
                QTimer.singleShot(5, click_in_menu)
            return
        action = next(a for a in menu.actions() if a.text().startswith("Cancel"))
        clicked.append(action.isEnabled())
        from PySide6.QtTest import QTest
        QTest.mouseClick(menu, Qt.LeftButton, Qt.NoModifier, menu.actionGeometry(action).center())
        if menu.isVisible():
            menu.close()                     # a disabled item leaves the menu open

    QTimer.singleShot(0, click_in_menu)
    event = QContextMenuEvent(QContextMenuEvent.Mouse, pos, view.viewport().mapToGlobal(pos))
    QApplication.sendEvent(view.viewport(), event)    # returns once the menu is closed
    sent[0] = True
    if not clicked:
        # No menu: the row moved between the rectangle read and the event (the queue repaints and reorders
        # while rows finish). Counted; the caller's test allows a few such misses among its 100 presses.
        MENU_MISSES[0] += 1
    return bool(clicked and clicked[0])


MENU_MISSES = [0]


# ============================================================================ 1. cancel at random moments ===
def test_cancel_at_100_random_moments_leaves_no_temp_dir_and_no_partial_output(window, ui_env, qtbot):
    """100 presses of Cancel (the row context menu's Cancel, sometimes the Cancel button) at seeded random
    moments across batches of small captures, with Remove Dupes alone (one pass) or all three operations
    (pre-scan, main pass, self-check). After each press the row settles Cancelled or Done, a cancelled
    row has no output; after each batch nothing pktmask_* is left, every output re-reads completely and
    belongs to a Done row, no job process is left but the window's idle warm workers (none once it closes),
    and the UI timer never stalled."""
    MENU_MISSES[0] = 0
    rng = random.Random(20261127)
    ui_env.settings(parallel_jobs=3)
    window.apply_settings(window.settings.__class__(**{**window.settings.__dict__, "parallel_jobs": 3}))
    inputs = []
    for i in range(10):
        fmt = "pcapng" if i % 3 == 1 else "pcap"
        path = ui_env.inputs / f"cap{i}.{fmt}"
        generate(path, packets=rng.randint(600, 1600), seed=100 + i, fmt=fmt, dup_ratio=0.1)
        inputs.append(path)
    meter = StallMeter()
    presses = {"Running": 0, "Queued": 0, "button": 0}
    cancelled = done = batches = 0
    try:
        while sum(presses.values()) < 100:
            batches += 1
            out = ui_env.out / f"batch{batches}"
            window.clear_finished()
            window.add_paths(inputs)
            ops = ("dedup",) if batches % 2 else tuple(window.op_boxes)
            for name, box in window.op_boxes.items():
                box.setChecked(name in ops)
            window.out_folder.setChecked(True)
            window.out_path.setText(str(out))
            qtbot.mouseClick(window.start_button, Qt.LeftButton)
            assert window.controller.run is not None
            started = time.monotonic()
            moments = sorted(rng.uniform(0.0, 1.5) for _ in range(min(12, 100 - sum(presses.values()))))
            for moment in moments:
                qtbot.waitUntil(lambda s=started, m=moment: time.monotonic() - s >= m or window.controller.run is None,
                                timeout=10000)
                live = [r for r in window.model.rows if r.status in ("Queued", "Running")]
                if not live or window.controller.run is None:
                    break                                      # the rest of the presses go to the next batch
                if rng.random() < 0.06 and window.cancel_button.isEnabled():
                    qtbot.mouseClick(window.cancel_button, Qt.LeftButton)    # Cancel All: the batch ends
                    presses["button"] += 1
                    assert not [r for r in window.model.rows if r.status in ("Queued", "Running")]
                    break
                running = [r for r in live if r.status == "Running"]
                row = rng.choice(running if running and rng.random() < 0.75 else live)
                was = row.status
                if context_menu_cancel(window, row):
                    presses[was] += 1
                    assert row.status in ("Cancelling…", "Cancelled", "Done"), (row.path.name, row.status)
            wait_idle(qtbot, window, timeout=30000)

            # After the batch: rows, temp root, outputs, processes, the UI.
            statuses = [r.status for r in window.model.rows]
            assert set(statuses) <= {"Cancelled", "Done"}, [(r.path.name, r.status, r.error)
                                                           for r in window.model.rows]
            cancelled += statuses.count("Cancelled")
            done_rows = {Path(r.result.output): r for r in window.model.rows if r.status == "Done"}
            done += len(done_rows)
            # Nothing left: at once, or within a second when a cancelled job's cleanup ends after its row
            # settled (seen about once in ten runs of this test under load; see the note on issue 16).
            if ui_env.leftovers():
                qtbot.waitUntil(lambda: ui_env.leftovers() == [], timeout=1000)
            assert [p.name for p in ui_env.temp_root.iterdir()] == []
            written = sorted(p for p in out.rglob("*") if p.is_file()) if out.exists() else []
            assert sorted(done_rows) == written, "an output without a Done row, or a Done row without output"
            for path, row in done_rows.items():
                assert reread(path) == row.result.packets_out
            for row in window.model.rows:
                if row.status == "Cancelled":
                    assert row.result is None or not row.result.output
                    assert not (out / f"{row.path.stem}-sanitized{row.path.suffix}").exists()
            qtbot.waitUntil(lambda: only_warm_workers(window), timeout=5000)
            assert window.isVisible() and not window.controller.threads_alive()
            assert not window.start_button.isEnabled() and not window.cancel_button.isEnabled()
    finally:
        meter.stop()
    window.close()                      # the warm workers go with the window
    assert not job_children()
    assert sum(presses.values()) == 100
    assert presses["Running"] >= 50, presses
    assert MENU_MISSES[0] <= 3, f"the row's context menu did not open {MENU_MISSES[0]} times"
    # Not a speed check: a UI loop that stops for seconds is frozen, whatever the machine.
    assert meter.worst < 5000, f"the UI event loop stalled for {meter.worst} ms"
    print(f"\n{batches} batches, 100 presses: {presses['Running']} on running rows, {presses['Queued']} on "
          f"queued rows (row menu), {presses['button']} Cancel button; {cancelled} rows cancelled, {done} done; "
          f"longest UI stall {meter.worst} ms")


# =================================================================================== 2. bad input ===
def damaged_inputs(folder: Path) -> dict[str, str]:
    """name -> the words the reason must hold."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "_seed.pcap"
    generate(good, packets=50, seed=9)
    data = good.read_bytes()
    good.unlink()
    (folder / "empty.pcap").write_bytes(b"")
    (folder / "notes.pcap").write_text("Meeting notes: do not share.\n" * 20)
    (folder / "cut-header.pcap").write_bytes(data[:17])
    packed = bytearray(gzip.compress(data))             # a compressed capture is read; a corrupt one fails
    packed[len(packed) // 2] ^= 0xFF
    (folder / "packed.pcap").write_bytes(bytes(packed))
    ng = folder / "_seed.pcapng"
    generate(ng, packets=20, seed=9, fmt="pcapng")
    (folder / "cut-section.pcapng").write_bytes(ng.read_bytes()[:20])
    ng.unlink()
    return {"empty.pcap": "empty", "notes.pcap": "not a pcap or pcapng capture",
            "cut-header.pcap": "cut short", "packed.pcap": "gzip data is corrupt", "cut-section.pcapng": "cut short"}


def test_damaged_inputs_fail_with_one_sentence_each_while_the_good_ones_finish(window, ui_env, qtbot):
    bad = damaged_inputs(ui_env.inputs)
    good = {}
    for i, fmt in enumerate(("pcap", "pcapng")):
        path = ui_env.inputs / f"good{i}.{fmt}"
        good[path.name] = generate(path, packets=400, seed=30 + i, fmt=fmt)
    window.add_paths([ui_env.inputs])
    assert len(window.model.rows) == len(bad) + len(good)
    window.out_folder.setChecked(True)
    window.out_path.setText(str(ui_env.out))
    qtbot.mouseClick(window.start_button, Qt.LeftButton)
    wait_idle(qtbot, window)

    log_text = window.log_panel.text()
    rows = {r.path.name: r for r in window.model.rows}
    for name, words in bad.items():
        row = rows[name]
        assert row.status == "Failed", (name, row.status)
        shown = window.model.result_text(row)
        assert words in shown.lower(), (name, shown)
        assert "\n" not in shown and "Traceback" not in shown and "internal error" not in shown.lower()
        assert shown[0].isupper() and shown.count(". ") == 0, shown      # one sentence
        assert f"[{name}]" in log_text and row.error in log_text, f"{name}: the log does not say why"
    for name, stats in good.items():
        row = rows[name]
        assert row.status == "Done", (name, row.error)
        assert reread(Path(row.result.output)) == row.result.packets_out == stats["packets"] - stats["duplicates"]
    assert sorted(p.name for p in ui_env.out.iterdir()) == ["good0-sanitized.pcap", "good1-sanitized.pcapng"]
    assert ui_env.leftovers() == []

    dialog = window.summary_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.title.text().startswith(f"2 files sanitized, {len(bad)} failed")
    summary = dialog.table.model()
    listed = {summary.index(i, 0).data(): (summary.index(i, 1).data(), summary.index(i, 5).data())
              for i in range(summary.rowCount())}
    for name, words in bad.items():
        status, reason = listed[name]
        assert status == "Failed" and words in reason.lower()
    dialog.export_to(ui_env.root / "summary.html", "html")
    page = (ui_env.root / "summary.html").read_text().lower()
    for name in bad:
        assert name in page and rows[name].error.split(" (")[0].lower() in page
    assert all(r.status == "failed" for r in dialog.results if Path(r.input).name in bad)


# ====================================================================== 3. SIGKILL of the app, restart ===
DRIVER = r'''
"""Start the real app on the files given, press Start as soon as they are queued (the app has no
auto-start option)."""
import sys

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from pktmask_gui.ui.app import make_app, run_gui


def press_start():
    for widget in QApplication.topLevelWidgets():
        if widget.objectName() == "mainWindow" and widget.model.rows and widget.start_button.isEnabled():
            widget.start_button.click()
            print("started", flush=True)
            return
    QTimer.singleShot(50, press_start)


if __name__ == "__main__":
    make_app()
    QTimer.singleShot(0, press_start)
    sys.exit(run_gui(sys.argv[1:]))
'''

LIVE_HOLDER = r'''
import sys
from pktmask_gui.workspace import JobWorkspace

if __name__ == "__main__":
    with JobWorkspace(sys.argv[1]) as ws:
        staging = ws.output_staging(__import__("pathlib").Path(sys.argv[2]))
        print(ws.path, staging, flush=True)
        sys.stdin.read()          # alive until the test closes our stdin
'''


def _marker(path: Path) -> dict:
    try:
        return json.loads((path / "pktmask-owner.json").read_text())
    except (OSError, ValueError):
        return {}


def test_sigkill_mid_run_then_restart_sweeps_the_stale_dirs_but_not_a_live_instances(
        qtbot, ui_env, big_capture, other_fs):
    # The temp folder on another file system (a tmpfs, as on many desktops): the output is staged in a
    # pktmask_output_ dir beside the input, which only the pipeline dir's marker leads the restart to.
    temp_root = other_fs
    ui_env.settings(parallel_jobs=1, temp_root=str(temp_root))
    big = ui_env.inputs / "big.pcap"
    os.link(big_capture, big)
    (ui_env.root / "driver.py").write_text(DRIVER)
    (ui_env.root / "holder.py").write_text(LIVE_HOLDER)
    env = dict(os.environ, PYTHONPATH=str(REPO), QT_QPA_PLATFORM="offscreen")
    app = subprocess.Popen([sys.executable, str(ui_env.root / "driver.py"), str(big)], env=env, cwd=ui_env.root,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    holder = None
    try:
        # Wait until the job runs: its pipeline dir names the app's worker process, and its staging dir exists.
        deadline = time.monotonic() + 60
        stale = None
        while time.monotonic() < deadline and stale is None:
            for d in temp_root.glob("pktmask_pipeline_*"):
                m = _marker(d)
                if m.get("owners") and m.get("staging"):
                    stale = d
            assert app.poll() is None, app.stderr.read()
            time.sleep(0.05)
        assert stale is not None, "the app never started its job"
        marker = _marker(stale)
        staging = Path(marker["staging"][0])
        assert staging.parent == ui_env.inputs and staging.is_dir()
        owners = [o["pid"] for o in marker["owners"]]
        workers = {p.pid for p in psutil.Process(app.pid).children(recursive=True)}
        assert len(owners) == 1 and owners[0] in workers          # the app's worker runs the whole job
        child = psutil.Process(owners[0])

        os.kill(app.pid, signal.SIGKILL)
        assert app.wait(10) == -signal.SIGKILL
        gone, alive = psutil.wait_procs([child], timeout=10)
        assert not alive, "the job's child process outlived the killed app"
        assert stale.is_dir() and staging.is_dir()           # a SIGKILL leaves them: the restart's job

        # Another live instance's workspace and staging dir, in the same places.
        holder = subprocess.Popen([sys.executable, str(ui_env.root / "holder.py"), str(temp_root),
                                   str(ui_env.inputs)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
        live_dir, live_staging = (Path(p) for p in holder.stdout.readline().split())
        assert live_dir.is_dir() and live_staging.is_dir()

        # Restart: a new window, as run_gui starts it (show, then sweep).
        window = make_window(qtbot)
        removed = window.sweep_stale()
        assert set(removed) == {stale, staging}
        assert not stale.exists() and not staging.exists()
        assert live_dir.is_dir() and live_staging.is_dir()
        log_text = window.log_panel.text()
        assert "temp folder left by an earlier run" in log_text and stale.name in log_text
        assert "partial output left by an earlier run" in log_text and staging.name in log_text
        assert live_dir.name not in log_text
        assert "2 leftover temp folders" in window.statusBar().currentMessage()
        assert sorted(p.name for p in ui_env.inputs.iterdir()) == ["big.pcap", live_staging.name]
        window.close()
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
        if holder is not None:
            holder.stdin.close()
            holder.wait(10)
    assert ui_env.leftovers(temp_root) == []                   # the live holder cleaned up after itself
    assert big.read_bytes()[:24] == big_capture.read_bytes()[:24]


# ============================================================================= 4. every operation ===
def verify(src: Path, out: Path) -> None:
    if shutil.which("tshark") is None or not VERIFY.is_file():
        return
    proc = subprocess.run([sys.executable, str(VERIFY), str(src), str(out), "--dedup", "--anon", "--mask"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"verify.py failed on {out.name}:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"


@pytest.mark.parametrize("source", ["corpus", "generated"])
def test_every_operation_on_a_tls_capture_and_the_summary_says_what_each_did(
        qtbot, ui_env, source, request, tmp_path_factory):
    if source == "corpus":
        corpus = request.getfixturevalue("corpus_dir")
        src = copy_in(corpus / "pktmask__tls_1_2_single_vlan.pcap", ui_env.inputs, "tls-vlan.pcap")
    else:
        src = ui_env.inputs / "generated.pcapng"
        generate(src, packets=1500, seed=77, fmt="pcapng", dup_ratio=0.1, metadata=True)
    window = make_window(qtbot, operations=("dedup", "anonymize", "mask"))
    window.add_paths([src])
    window.out_folder.setChecked(True)
    window.out_path.setText(str(ui_env.out))
    qtbot.mouseClick(window.start_button, Qt.LeftButton)
    wait_idle(qtbot, window, timeout=120000)
    row = window.model.rows[0]
    assert row.status == "Done", row.error
    res = row.result
    stages = res.stages
    assert {"dedup", "anonymize", "mask"} <= set(stages)
    out = Path(res.output)
    assert reread(out) == res.packets_out

    dialog = window.summary_dialog
    text = dialog.details_text(res)
    dedup, anon, mask = stages["dedup"], stages["anonymize"], stages["mask"]
    assert f"Remove Dupes: {dedup['duplicates_removed']:,} duplicate frame" in text
    assert f"Anonymize IPs: {anon['addresses_mapped']:,} addresses anonymized" in text
    assert f"Mask Payloads: {mask['frames_masked']:,} frames masked" in text
    assert "_" not in text.replace(str(ui_env.root), "").replace(out.name, "").replace(src.name, ""), \
        f"a raw report key reached the user: {text}"
    assert anon["addresses_mapped"] > 0 and mask["frames_masked"] > 0
    # In the order the user sees the operations, whatever order the engine ran them in.
    order = [text.index(words) for words in ("Remove Dupes:", "Anonymize IPs:", "Mask Payloads:")]
    assert order == sorted(order), text
    assert dialog.title.text() == f"1 file sanitized · took {dialog.title.text().rsplit(' ', 1)[-1]}"
    if source == "generated":
        assert dedup["duplicates_removed"] > 0
        assert "pcapng metadata removed: " in text        # the hidden scrub says what it took out
    dialog.export_to(ui_env.root / "summary.html", "html")
    page = (ui_env.root / "summary.html").read_text()
    for line in text.splitlines()[2:5]:
        assert line.replace("&", "&amp;") in page
    verify(src, out)
    assert ui_env.leftovers() == []
    window.close()
