"""``run_gui``: the window opens with the given paths queued and sweeps what a crashed run left behind."""
from __future__ import annotations

import json
import subprocess
import sys

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from pktmask_gui.samplegen import generate
from pktmask_gui.ui.app import run_gui
from pktmask_gui.ui.main_window import MainWindow


def test_run_gui_queues_paths_sweeps_stale_dirs_and_returns_on_close(ui_env, qtbot):
    stale = ui_env.temp_root / "pktmask_pipeline_crashed"
    stale.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (stale / "pktmask-owner.json").write_text(json.dumps({"owners": [{"pid": dead.pid, "created": 1.0}],
                                                          "started": 1.0, "staging": []}))
    capture = ui_env.inputs / "queued.pcap"
    generate(capture, packets=20, seed=1)
    seen = {}

    def inspect_and_close():
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        window = windows[-1]
        seen["rows"] = [r.path for r in window.model.rows]
        seen["log"] = window.log_panel.text()
        seen["icon"] = not window.windowIcon().isNull()
        window.close()

    QTimer.singleShot(300, inspect_and_close)
    assert run_gui([str(capture)]) == 0
    assert seen["rows"] == [capture]
    assert "Removed a temp folder left by an earlier run" in seen["log"]
    assert seen["icon"]
    assert not stale.exists()
