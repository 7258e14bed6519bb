"""The hand-off after a run: "Open in Wireshark", "Show in Folder" and "Inspect…" for a finished output.

Wireshark is the program named in the settings (``wireshark_path``), else the one on the PATH or in its
usual install folder; when there is none, the action says where to set it instead of doing nothing.
"Show in Folder" asks the file manager to select the file (freedesktop.org FileManager1 over D-Bus,
Explorer's /select, Finder's -R), and falls back to opening the folder.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from PySide6.QtCore import QProcess, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QMenu, QMessageBox, QStyle

_USUAL_PLACES = {
    "win32": [r"%ProgramFiles%\Wireshark\Wireshark.exe", r"%ProgramFiles(x86)%\Wireshark\Wireshark.exe"],
    "darwin": ["/Applications/Wireshark.app/Contents/MacOS/Wireshark"],
}


def find_wireshark(configured: str = "") -> str | None:
    """The Wireshark program to start: the configured one (if it exists), else one found; None if none."""
    if configured:
        return configured if Path(configured).is_file() else None
    found = shutil.which("wireshark")
    if found:
        return found
    for place in _USUAL_PLACES.get(sys.platform, []):
        path = Path(os.path.expandvars(place))
        if path.is_file():
            return str(path)
    return None


def open_in_wireshark(parent, output: Path, settings, open_settings=None) -> bool:
    """Start Wireshark on ``output`` (detached: it outlives this window). False, after saying why, if not."""
    program = find_wireshark(settings.wireshark_path)
    if program is None:
        box = QMessageBox(QMessageBox.Information, "Open in Wireshark",
                          "Wireshark was not found." if not settings.wireshark_path else
                          f"The Wireshark program set in the settings, {settings.wireshark_path}, does not exist.",
                          QMessageBox.Close, parent)
        box.setObjectName("wiresharkMissing")
        box.setInformativeText("Install Wireshark, or set where its program is in Edit → Settings… → General → "
                               "Wireshark. Until then, open the output from its folder.")
        settings_button = box.addButton("Open Settings…", QMessageBox.AcceptRole) if open_settings else None
        box.exec()
        if settings_button is not None and box.clickedButton() is settings_button:
            open_settings()
        return False
    started = QProcess.startDetached(program, [str(output)])
    ok = started[0] if isinstance(started, tuple) else bool(started)
    if not ok:
        QMessageBox.warning(parent, "Open in Wireshark", f"{program} could not be started.")
    return ok


def show_in_folder(path: Path) -> bool:
    """Show the file selected in the file manager; open its folder where selecting is not offered."""
    path = Path(path)
    if sys.platform == "win32":
        return _detached("explorer", [f"/select,{os.path.normpath(path)}"])
    if sys.platform == "darwin":
        return _detached("open", ["-R", str(path)])
    if _freedesktop_show(path):
        return True
    return QDesktopServices.openUrl(QUrl.fromLocalFile(str(path.parent)))


def _detached(program: str, args: list[str]) -> bool:
    started = QProcess.startDetached(program, args)
    return started[0] if isinstance(started, tuple) else bool(started)


def _freedesktop_show(path: Path) -> bool:
    try:
        from PySide6.QtDBus import QDBusConnection, QDBusInterface
    except ImportError:
        return False
    bus = QDBusConnection.sessionBus()
    if not bus.isConnected():
        return False
    manager = QDBusInterface("org.freedesktop.FileManager1", "/org/freedesktop/FileManager1",
                             "org.freedesktop.FileManager1", bus)
    if not manager.isValid():
        return False
    reply = manager.call("ShowItems", [QUrl.fromLocalFile(str(path)).toString()], "")
    return not reply.errorName()


def add_output_actions(menu: QMenu, parent, output: Path | None, settings, open_settings, inspect) -> None:
    """The hand-off entries of a finished row's menu (disabled when the row has no output)."""
    style = parent.style()
    act = menu.addAction("Inspect…")
    act.setToolTip("Compare the output with the input, frame by frame and byte by byte")
    act.setEnabled(output is not None)
    act.triggered.connect(inspect)
    act = menu.addAction("Open in Wireshark")
    act.setEnabled(output is not None)
    act.triggered.connect(lambda: open_in_wireshark(parent, output, settings, open_settings))
    act = menu.addAction(style.standardIcon(QStyle.SP_DirOpenIcon), "Show in Folder")
    act.setEnabled(output is not None)
    act.triggered.connect(lambda: show_in_folder(output))
