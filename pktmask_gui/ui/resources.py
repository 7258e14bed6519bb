"""Where the GUI finds its icon and style sheet: the repository's resources/ folder (source checkout)
or the copy installed beside the package (wheel installs ship it as package data)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap

_HERE = Path(__file__).resolve().parent


def resources_dir() -> Path | None:
    for candidate in (_HERE.parents[1] / "resources", _HERE.parent / "resources", _HERE / "resources"):
        if (candidate / "icons").is_dir():
            return candidate
    return None


def app_icon() -> QIcon:
    root = resources_dir()
    icon = QIcon()
    if root is not None:
        icons = root / "icons"
        for png in sorted(icons.glob("pktmask*.png")):
            icon.addFile(str(png))
        svg = icons / "pktmask.svg"
        if icon.isNull() and svg.exists():
            icon.addFile(str(svg))
    if icon.isNull():  # an installed copy without resources still gets a recognisable icon
        pix = QPixmap(QSize(64, 64))
        pix.fill(Qt.transparent)
        p = QPainter(pix)
        p.setRenderHint(QPainter.Antialiasing)
        p.setBrush(QColor("#2566c2"))
        p.setPen(Qt.NoPen)
        p.drawRoundedRect(4, 4, 56, 56, 12, 12)
        p.end()
        icon.addPixmap(pix)
    return icon


def style_sheet() -> str:
    root = resources_dir()
    if root is None:
        return ""
    qss = root / "style.qss"
    try:
        return qss.read_text(encoding="utf-8")
    except OSError:
        return ""
