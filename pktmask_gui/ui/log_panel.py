"""The live log panel: engine log records (from any thread) -> a Qt signal -> a filterable table.

``QtLogHandler`` is a plain ``logging.Handler``: attached to the ``pktmask_gui`` logger, and fed the
records that the worker pool relays from its worker processes. ``emit`` may run in any thread;
it only formats the record and adds it to a pending list; the UI thread takes the whole list at once
(one signal per batch, one insertion into the table), so a burst of lines costs one repaint.

A line about a job carries the job's file name as ``record.job`` (the engine logs it through a
``logging.LoggerAdapter`` with ``extra={"job": name}``) and never in its message, which is worded to
follow "name: " (the CLI prints it so); the panel shows the name in its File column and starts the
message with a capital.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from PySide6.QtCore import (QAbstractTableModel, QModelIndex, QObject, QSortFilterProxyModel, Qt,
                            QTimer, Signal)
from PySide6.QtGui import QBrush, QColor, QGuiApplication
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QHBoxLayout, QHeaderView,
                               QLabel, QMessageBox, QPushButton, QStyle, QVBoxLayout,
                               QWidget)

from .tables import CalmTableView, TextDelegate

MAX_ENTRIES = 20000
TAKE_INTERVAL_MS = 200
WORKSPACE_LOGGER = "pktmask_gui.workspace"   # temp dirs, hard links, sweeps

# (created, levelno, job, logger name, message)
CREATED, LEVELNO, JOB, NAME, MESSAGE = range(5)

DISPLAY, TOOLTIP, DECORATION, FOREGROUND, BACKGROUND = (
    int(Qt.DisplayRole), int(Qt.ToolTipRole), int(Qt.DecorationRole), int(Qt.ForegroundRole), int(Qt.BackgroundRole))

FILTERS = (("Errors only", logging.ERROR), ("Warnings and errors", logging.WARNING),
           ("Info, warnings and errors", logging.INFO), ("Everything (debug too)", logging.DEBUG))


def level_word(levelno: int) -> str:
    if levelno >= logging.ERROR:
        return "Error"
    if levelno >= logging.WARNING:
        return "Warning"
    if levelno >= logging.INFO:
        return "Info"
    return "Debug"


class _Bridge(QObject):
    ready = Signal()


class QtLogHandler(logging.Handler):
    """A logging.Handler that hands records to the UI thread in batches (thread-safe): ``ready`` is emitted
    when the first entry of a batch arrives; ``take()`` returns the batch."""

    def __init__(self, level=logging.DEBUG):
        super().__init__(level)
        self.bridge = _Bridge()
        self.ready = self.bridge.ready
        self._pending: list = []
        self._pending_lock = threading.Lock()

    def take(self) -> list:
        with self._pending_lock:
            batch, self._pending = self._pending, []
        return batch

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message = f"{message}: {record.exc_info[1]}"
            levelno = record.levelno
            if record.name == WORKSPACE_LOGGER and levelno < logging.INFO:
                levelno = logging.INFO   # every hard-link decision is shown, "read in place" included
            job = str(getattr(record, "job", "") or "")
            if job:
                message = message[:1].upper() + message[1:]
            with self._pending_lock:
                self._pending.append((record.created, levelno, job, record.name, message))
                first = len(self._pending) == 1
            if first:
                self.bridge.ready.emit()
        except RuntimeError:
            pass  # the panel is gone (window closed); a late record has nowhere to go
        except Exception:  # a logging handler must never raise into the engine
            self.handleError(record)


def format_entry(entry) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(entry[CREATED]))
    job = f"[{entry[JOB]}] " if entry[JOB] else ""
    # Continuation lines (a traceback, a multi-line reason) are indented under their entry.
    message = entry[MESSAGE].rstrip("\n").replace("\n", "\n" + " " * 19)
    return f"{stamp}  {level_word(entry[LEVELNO]):<7}  {job}{message}"


class LogModel(QAbstractTableModel):
    HEADERS = ("Time", "Level", "File", "Message")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.entries: list = []
        style = QGuiApplication.instance().style() if hasattr(QGuiApplication.instance(), "style") else None
        self._icons = {}
        if style is not None:
            self._icons = {"Error": style.standardIcon(QStyle.SP_MessageBoxCritical),
                           "Warning": style.standardIcon(QStyle.SP_MessageBoxWarning),
                           "Info": style.standardIcon(QStyle.SP_MessageBoxInformation)}
        self._foreground = {"Error": QBrush(QColor("#b71c1c")), "Warning": QBrush(QColor("#8a5300")),
                            "Debug": QBrush(QColor("#757575"))}
        self._background = {"Error": QBrush(QColor("#fdecea")), "Warning": QBrush(QColor("#fff6e0"))}

    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.entries)

    def columnCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section, orientation, role=DISPLAY):
        if role == DISPLAY and orientation == Qt.Horizontal:
            return self.HEADERS[section]
        return None

    def data(self, index, role=DISPLAY):
        # Roles as plain ints (a Qt enum comparison costs microseconds, and this runs per role per cell).
        if not index.isValid():
            return None
        entry = self.entries[index.row()]
        col = index.column()
        if role == DISPLAY:
            if col == 0:
                return time.strftime("%H:%M:%S", time.localtime(entry[CREATED]))
            if col == 1:
                return level_word(entry[LEVELNO])
            if col == 2:
                return entry[JOB]
            return " ".join(entry[MESSAGE].split())   # one line per entry; the tooltip keeps the layout
        if role == FOREGROUND:
            return self._foreground.get(level_word(entry[LEVELNO]))
        if role == BACKGROUND:
            return self._background.get(level_word(entry[LEVELNO]))
        if role == DECORATION and col == 1:
            return self._icons.get(level_word(entry[LEVELNO]))
        if role == TOOLTIP:
            return format_entry(entry)
        return None

    def look(self, index) -> tuple:
        """A cell as ``tables.TextDelegate`` paints it: what ``data`` gives for its roles, in one call."""
        if not index.isValid():
            return None
        level = level_word(self.entries[index.row()][LEVELNO])
        brush = self._foreground.get(level)
        return (self.data(index), brush.color() if brush is not None else None, False, False,
                self._background.get(level))

    def append(self, entry) -> None:
        self.extend([entry])

    def extend(self, entries: list) -> list:
        """Add entries in one insertion (the oldest go beyond MAX_ENTRIES); returns the entries dropped."""
        entries = entries[-MAX_ENTRIES:]
        dropped = []
        if len(self.entries) + len(entries) > MAX_ENTRIES:
            drop = len(self.entries) + len(entries) - MAX_ENTRIES
            self.beginRemoveRows(QModelIndex(), 0, drop - 1)
            dropped = self.entries[:drop]
            del self.entries[:drop]
            self.endRemoveRows()
        row = len(self.entries)
        self.beginInsertRows(QModelIndex(), row, row + len(entries) - 1)
        self.entries.extend(entries)
        self.endInsertRows()
        return dropped

    def clear(self) -> None:
        self.beginResetModel()
        self.entries.clear()
        self.endResetModel()


class LevelFilter(QSortFilterProxyModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.min_level = logging.INFO

    def set_min_level(self, level: int) -> None:
        if hasattr(self, "beginFilterChange"):   # Qt >= 6.9; invalidateFilter() is deprecated there
            self.beginFilterChange()
            self.min_level = level
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self.min_level = level
            self.invalidateFilter()

    def filterAcceptsRow(self, row, _parent):
        return self.sourceModel().entries[row][LEVELNO] >= self.min_level


class LogPanel(QWidget):
    """Header (title, counts, level filter, Copy, Save, Clear) over the log table."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("logPanel")
        self.model = LogModel(self)
        self.proxy = LevelFilter(self)
        self.proxy.setSourceModel(self.model)
        self.handler = QtLogHandler()
        # Lines come in bursts from every job: the table takes them (and repaints) at most 5 times a second;
        # whoever reads the panel (visible_lines, the end of a run) takes what is pending first.
        self._take_timer = QTimer(self)
        self._take_timer.setSingleShot(True)
        self._take_timer.setInterval(TAKE_INTERVAL_MS)
        self._take_timer.timeout.connect(self.take_pending)
        self.handler.ready.connect(self._on_ready)
        self.errors = self.warnings = 0
        self.last_save_dir = ""

        title = QLabel("Log")
        title.setObjectName("sectionTitle")
        self.counts = QLabel("")
        self.counts.setObjectName("logCounts")
        self.filter_box = QComboBox()
        for label, level in FILTERS:
            self.filter_box.addItem(label, level)
        self.filter_box.setCurrentIndex(2)
        self.filter_box.setToolTip("Show only log lines at or above this level")
        self.filter_box.currentIndexChanged.connect(
            lambda i: self.proxy.set_min_level(self.filter_box.itemData(i)))
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the selected log lines (all shown lines when none is selected)")
        self.copy_button.clicked.connect(self.copy_to_clipboard)
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Save the shown log lines to a text file")
        self.save_button.clicked.connect(self.save_dialog)
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Remove every line from the log panel")
        self.clear_button.clicked.connect(self.clear)

        header = QHBoxLayout()
        header.setContentsMargins(0, 0, 0, 0)
        header.addWidget(title)
        header.addSpacing(8)
        header.addWidget(self.counts)
        header.addStretch(1)
        header.addWidget(QLabel("Show:"))
        header.addWidget(self.filter_box)
        header.addWidget(self.copy_button)
        header.addWidget(self.save_button)
        header.addWidget(self.clear_button)

        self.view = CalmTableView()
        self.view.setObjectName("logView")
        self.view.setModel(self.proxy)
        self.view.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.view.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.view.setShowGrid(False)
        self.view.setWordWrap(False)
        self.view.verticalHeader().hide()
        self.view.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        hh = self.view.horizontalHeader()
        hh.setHighlightSections(False)
        # Fixed widths: ResizeToContents would measure up to a thousand rows at every insertion.
        hh.setSectionResizeMode(0, QHeaderView.Fixed)
        hh.setSectionResizeMode(1, QHeaderView.Fixed)
        hh.setSectionResizeMode(2, QHeaderView.Interactive)
        hh.setStretchLastSection(True)
        self.view.setColumnWidth(0, self.fontMetrics().horizontalAdvance("00:00:00") + 12)
        self.view.setColumnWidth(1, self.fontMetrics().horizontalAdvance("Warning") + 40)
        self.view.setColumnWidth(2, 200)
        # The Level column has an icon: Qt's delegate paints it.
        words = TextDelegate(self.view, lambda index: self.model.look(self.proxy.mapToSource(index)))
        for col in (0, 2, 3):
            self.view.setItemDelegateForColumn(col, words)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(header)
        layout.addWidget(self.view, 1)
        self._update_counts()

    # --- entries -------------------------------------------------------------------------------
    def _on_ready(self) -> None:
        if not self._take_timer.isActive():
            self._take_timer.start()

    def take_pending(self) -> None:
        entries = self.handler.take()
        if entries:
            self.add_entries(entries)

    def add_entry(self, entry) -> None:
        self.add_entries([entry])

    def add_entries(self, entries: list) -> None:
        bar = self.view.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 2
        dropped = self.model.extend(entries)
        if at_bottom:
            self.view.scrollToBottom()
        before = (self.errors, self.warnings)
        for sign, batch in ((1, entries[-MAX_ENTRIES:]), (-1, dropped)):
            for entry in batch:
                if entry[LEVELNO] >= logging.ERROR:
                    self.errors += sign
                elif entry[LEVELNO] >= logging.WARNING:
                    self.warnings += sign
        if (self.errors, self.warnings) != before:
            self._update_counts()

    def add_message(self, levelno: int, message: str, job: str = "") -> None:
        """A line from the GUI itself (refused drops, cancel requests), shown like engine lines."""
        self.add_entry((time.time(), levelno, job, __name__, message))

    def clear(self) -> None:
        self.model.clear()
        self.errors = self.warnings = 0
        self._update_counts()

    def _update_counts(self) -> None:
        errors, warnings = self.errors, self.warnings
        parts = []
        if errors:
            parts.append(f"{errors} error{'s' if errors != 1 else ''}")
        if warnings:
            parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
        self.counts.setText(" · ".join(parts))

    def visible_lines(self, selected_only: bool = False) -> list[str]:
        self.take_pending()
        rows = range(self.proxy.rowCount())
        if selected_only:
            rows = sorted({i.row() for i in self.view.selectionModel().selectedRows()})
        return [format_entry(self.model.entries[self.proxy.mapToSource(self.proxy.index(r, 0)).row()])
                for r in rows]

    def text(self) -> str:
        return "\n".join(self.visible_lines())

    # --- Copy / Save ---------------------------------------------------------------------------
    def copy_to_clipboard(self) -> None:
        lines = self.visible_lines(selected_only=True) or self.visible_lines()
        QGuiApplication.clipboard().setText("\n".join(lines) + ("\n" if lines else ""))

    def save_to(self, path: Path) -> None:
        lines = self.visible_lines()
        Path(path).write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")

    def save_dialog(self) -> None:
        start = str(Path(self.last_save_dir or Path.home()) / "pktmask-gui-log.txt")
        path, _ = QFileDialog.getSaveFileName(self, "Save Log", start, "Text files (*.txt *.log);;All files (*)")
        if not path:
            return
        try:
            self.save_to(Path(path))
            self.last_save_dir = str(Path(path).parent)
        except OSError as exc:
            QMessageBox.warning(self, "Save Log", f"The log could not be saved to {path}: {exc.strerror or exc}.")
