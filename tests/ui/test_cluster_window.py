"""The window with "Run on a Dask scheduler": Start sends the queue to a real scheduler with two real worker
processes; rows show per-file progress and results as they come back; Cancel stops the tasks there."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("distributed", reason="the optional extra 'cluster' (distributed) is not installed")

from pktmask_gui.samplegen import generate  # noqa: E402

from ui_helpers import drop, make_window, wait_idle  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
OPS = ("dedup", "anonymize", "mask")


def local_outputs(inputs: Path, out: Path) -> dict[str, bytes]:
    proc = subprocess.run([sys.executable, "-m", "pktmask_gui", "process", str(inputs), "-o", str(out),
                           "--dedup", "--anonymize", "--mask", "--jobs", "1"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_start_sends_the_queue_to_the_scheduler_rows_show_progress_and_results(qtbot, ui_env, dask_cluster):
    for i in range(3):
        generate(ui_env.inputs / f"c{i}.pcap", packets=12000, seed=40 + i)
    ui_env.settings(dask_scheduler=dask_cluster.address)
    window = make_window(qtbot, operations=OPS)
    try:
        keep = drop(window.queue_view.viewport(), [ui_env.inputs])
        window.out_folder.setChecked(True)
        window.out_path.setText(str(ui_env.out))
        assert window.start()
        runner = window.controller.runner
        assert type(runner).__name__ == "ClusterRunner"
        seen = []
        runner.progress.connect(lambda rid, phase, done, total, packets: seen.append((rid, done, total)))
        assert [r.status for r in window.model.rows] == ["Running"] * 3    # all sent at once
        qtbot.waitUntil(lambda: any(0 < done < total for _rid, done, total in seen), timeout=60000)
        from pktmask_gui.ui.queue import ProgressDelegate
        words = [ProgressDelegate.text(r) for r in window.model.rows]
        assert any(w.startswith(("Pre-scan", "Processing")) for w in words), words
        assert set(words) <= {"Waiting for a worker", "Starting…", "100%"} | {w for w in words if "·" in w}
        if os.environ.get("PKTMASK_SHOTS"):     # a folder: the window mid-run, to look at
            window.grab().save(str(Path(os.environ["PKTMASK_SHOTS"]) / "cluster_running.png"))
        wait_idle(qtbot, window)
        assert [r.status for r in window.model.rows] == ["Done"] * 3
        assert all(r.fraction() == 1.0 for r in window.model.rows)
        assert window.summary_dialog is not None and window.summary_dialog.title.text().startswith("3 files")
        expected = local_outputs(ui_env.inputs, ui_env.root / "local")
        assert {p.name: p.read_bytes() for p in ui_env.out.iterdir()} == expected
        assert ui_env.leftovers(dask_cluster.worker_tmp) == []
        window.summary_dialog.close()
        del keep
    finally:
        if window.controller.threads_alive():
            window.shutdown(show_progress=False)


def test_cancel_stops_the_tasks_on_the_workers_and_a_bad_address_fails_each_row(qtbot, ui_env, dask_cluster):
    for i in range(4):
        generate(ui_env.inputs / f"k{i}.pcap", packets=20000, seed=60 + i)
    ui_env.settings(dask_scheduler=dask_cluster.address)
    window = make_window(qtbot, operations=OPS)
    try:
        keep = drop(window.queue_view.viewport(), [ui_env.inputs])
        window.out_folder.setChecked(True)
        window.out_path.setText(str(ui_env.out))
        assert window.start()
        qtbot.waitUntil(lambda: any(r.bytes_done > 0 for r in window.model.rows), timeout=60000)
        window.controller.cancel_all()
        wait_idle(qtbot, window, timeout=30000)
        statuses = [r.status for r in window.model.rows]
        assert "Cancelled" in statuses and set(statuses) <= {"Cancelled", "Done"}
        done = {Path(r.result.output).name for r in window.model.rows if r.status == "Done"}
        assert {p.name for p in ui_env.out.iterdir()} == done       # whole outputs only, nothing staged
        assert ui_env.leftovers(dask_cluster.worker_tmp) == []
        if window.summary_dialog is not None:
            window.summary_dialog.close()

        # A scheduler that cannot be reached: every row fails with the sentence that says so.
        window.controller.settings.dask_scheduler = "tcp://127.0.0.1:9"
        for row in list(window.model.rows):
            window.model.remove(row)
        keep = drop(window.queue_view.viewport(), [ui_env.inputs / "k0.pcap"])
        assert window.start()
        wait_idle(qtbot, window, timeout=60000)
        (row,) = window.model.rows
        assert row.status == "Failed" and "Cannot reach the Dask scheduler at tcp://127.0.0.1:9" in row.error
        del keep
    finally:
        if window.controller.threads_alive():
            window.shutdown(show_progress=False)
        if window.summary_dialog is not None:
            window.summary_dialog.close()
