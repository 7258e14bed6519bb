"""Helpers shared by the GUI tests (fixtures live in conftest.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication


def make_window(qtbot, size=(1280, 760), operations=("dedup",)):
    """A shown MainWindow. Only Remove Dupes is ticked by default: these tests are about the window, and
    the one stage every build has keeps them independent of the other stages' state."""
    from pktmask_gui.ui import MainWindow

    window = MainWindow()
    for name, box in window.op_boxes.items():
        box.setChecked(name in operations)
    qtbot.addWidget(window)
    window.resize(*size)
    window.confirm_quit = lambda running: True   # a test never blocks on the quit question
    window.show()
    qtbot.waitExposed(window)
    return window


def drop(widget, paths):
    """Send a real drag-enter + drop with file URLs to ``widget``; returns (enter, drop, mime), which the
    caller keeps alive while Qt uses them."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    centre = widget.rect().center()
    # QDragEnterEvent takes a QPoint up to PySide6 6.11 and a QPointF from 6.12 on.
    try:
        enter = QDragEnterEvent(centre, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    except TypeError:
        enter = QDragEnterEvent(QPointF(centre), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(widget, enter)
    event = QDropEvent(QPointF(centre), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(widget, event)
    return enter, event, mime


def wait_idle(qtbot, window, timeout=60000):
    """Until nothing runs and the summary of the run (if any) is open."""
    qtbot.waitUntil(window.is_idle, timeout=timeout)


def wait_running(qtbot, window, name, min_fraction=0.02, timeout=30000):
    def running():
        row = next(r for r in window.model.rows if r.path.name == name)
        assert row.status == "Running" and row.phase and row.fraction() >= min_fraction
    qtbot.waitUntil(running, timeout=timeout)
    return next(r for r in window.model.rows if r.path.name == name)


def copy_in(src: Path, dst_dir: Path, name: str | None = None) -> Path:
    dst = dst_dir / (name or src.name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst
