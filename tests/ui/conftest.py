"""Fixtures for the GUI tests: offscreen Qt, a private config and temp root, real captures, real drops.

The engine is never mocked: jobs run in child processes exactly as in the app.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

# Offscreen, on a virtual 1366x768 screen (the smallest screen the window must suit). The config file
# is read once, when the QApplication starts.
if os.environ.get("QT_QPA_PLATFORM", "offscreen") == "offscreen":
    _qt_dir = tempfile.mkdtemp(prefix="pktmask_test_qt_")
    atexit.register(shutil.rmtree, _qt_dir, True)
    _screen = {"name": "laptop", "x": 0, "y": 0, "width": 1366, "height": 768, "logicalDpi": 96,
               "logicalBaseDpi": 96, "dpr": 1}
    Path(_qt_dir, "screen.json").write_text(json.dumps({"screens": [_screen]}))
    os.environ["QT_QPA_PLATFORM"] = f"offscreen:configfile={Path(_qt_dir, 'screen.json')}"

import pytest

pytest.importorskip("PySide6", reason="PySide6 is not installed: the GUI cannot be tested")

import pktmask_gui.ui  # noqa: E402,F401
from PySide6.QtCore import QSettings, QStandardPaths  # noqa: E402

from pktmask_gui import settings as settings_mod  # noqa: E402
from pktmask_gui.samplegen import generate  # noqa: E402


@pytest.fixture(autouse=True)
def _qt_private_paths(_private_config):
    """Qt's own paths (QStandardPaths, default QSettings) point at test locations too."""
    QStandardPaths.setTestModeEnabled(True)
    root = Path(os.environ["PKTMASK_CONFIG_DIR"]).parent
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(root / "qt"))
    QSettings.setPath(QSettings.NativeFormat, QSettings.UserScope, str(root / "qt"))
    yield


@pytest.fixture(autouse=True)
def _engine_logs_reach_the_panel():
    """The app's logging set-up, as ``make_app`` does it at start (a window never changes a logger's level)."""
    from pktmask_gui.ui.app import log_everything

    engine = logging.getLogger("pktmask_gui")
    before = engine.level
    log_everything()
    yield
    engine.setLevel(before)


class UiEnv:
    def __init__(self, root: Path):
        self.root = root
        self.inputs = root / "inputs"
        self.temp_root = root / "temp"
        self.out = root / "out"
        for d in (self.inputs, self.temp_root):
            d.mkdir()

    def settings(self, **changes) -> settings_mod.Settings:
        s = settings_mod.Settings(temp_root=str(self.temp_root), parallel_jobs=2)
        for key, value in changes.items():
            setattr(s, key, value)
        settings_mod.save_settings(s)
        return s

    def leftovers(self, *extra: Path) -> list[str]:
        found = []
        for d in (self.root, *extra):
            found += [str(p) for p in Path(d).rglob("pktmask_*") if not p.name.startswith("pktmask_test_")]
        return found


@pytest.fixture
def ui_env(workdir) -> UiEnv:
    env = UiEnv(workdir)
    env.settings()
    return env


@pytest.fixture(scope="session")
def big_capture():
    """A large capture (~200,000 packets, ~130 MB) made once per session from the project's generator:
    20,000 generated packets, their record section repeated, so that it is cheap to make."""
    with tempfile.TemporaryDirectory(prefix="pktmask_test_big_") as name:
        seed = Path(name) / "seed.pcap"
        generate(seed, packets=20000, seed=11, dup_ratio=0.0)
        data = seed.read_bytes()
        big = Path(name) / "big.pcap"
        with open(big, "wb") as fh:
            fh.write(data[:24])
            body = data[24:]
            for _ in range(10):
                fh.write(body)
        seed.unlink()
        yield big


@pytest.fixture
def window(qtbot, ui_env):
    from ui_helpers import make_window

    w = make_window(qtbot)
    yield w
    if w.controller.threads_alive():
        w.shutdown(show_progress=False)
    if w.summary_dialog is not None:
        w.summary_dialog.close()
