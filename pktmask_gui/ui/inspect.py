"""Inspect…: the before/after view of one finished file (double-click a finished row, or its menu).

Above, one line per input frame with the output frame it became beside it (number, time, protocol summary,
length), or "dropped" for a duplicate Remove Dupes took out, and a few words on what changed. Below, for the
selected frame, the header fields the engine's walker found (down to where it stopped) with what became of
each, and both frames as hex with every differing byte highlighted.

Both files are read lazily and never written: a thread per file indexes the record offsets (compare.py), the
list grows as it does, and only the rows on screen are decoded (one pread each, a small cache).
"""
from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QRect, QSize, Qt, QTimer
from PySide6.QtGui import QBrush, QColor, QFont, QFontDatabase, QPainter
from PySide6.QtWidgets import (QAbstractItemView, QAbstractScrollArea, QDialog, QHBoxLayout, QHeaderView,
                               QLabel, QPushButton, QSplitter, QTableView, QTreeWidget, QTreeWidgetItem,
                               QVBoxLayout, QWidget)

from ..capture import CaptureError
from ..compare import CaptureIndex, Pairing, change_words, changed_offsets, explain, summary, verify
from .format import plural

CHANGED = QColor("#ffcf5c")         # a byte that differs
REMOVED = QColor("#f2a7a7")         # a byte the output no longer has (trimmed)
SELECTED = QColor("#bcd8ff")        # the bytes of the field selected below
COLUMNS = ("#", "Time", "Protocol", "Length", "#", "Time", "Protocol", "Length", "What changed")
IN_NO, IN_TIME, IN_PROTO, IN_LEN, OUT_NO, OUT_TIME, OUT_PROTO, OUT_LEN, CHANGES = range(len(COLUMNS))
CACHE_ROWS = 4096


class _Row:
    __slots__ = ("cells", "dropped", "mismatch")

    def __init__(self, cells, dropped=False, mismatch=False):
        self.cells, self.dropped, self.mismatch = cells, dropped, mismatch


class FramePairModel(QAbstractTableModel):
    """One row per input frame (as far as indexed); cells decoded when first asked for, then cached."""

    def __init__(self, before: CaptureIndex, after: CaptureIndex, pairing: Pairing, parent=None):
        super().__init__(parent)
        self.before, self.after, self.pairing = before, after, pairing
        self.rows = 0
        self.cache: dict[int, _Row] = {}
        self.t0 = {}

    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else self.rows

    def columnCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.DisplayRole):
        if orientation == Qt.Horizontal and role == Qt.DisplayRole:
            return COLUMNS[section]
        if orientation == Qt.Horizontal and role == Qt.ToolTipRole:
            return ("Input: " if section < OUT_NO else "Output: " if section < CHANGES else "") + COLUMNS[section]
        return None

    def grow(self) -> None:
        """Show the rows indexed since the last call; rows that waited for the output get decoded again."""
        count = len(self.before)
        if count > self.rows:
            self.beginInsertRows(QModelIndex(), self.rows, count - 1)
            self.rows = count
            self.endInsertRows()
        pending = [i for i, row in self.cache.items() if row is None]
        for i in pending:
            del self.cache[i]
        if pending:
            self.dataChanged.emit(self.index(min(pending), 0), self.index(max(pending), len(COLUMNS) - 1))

    def pair(self, i: int):
        """(input frame, output frame or None, state): state "ok", "dropped", "waiting"."""
        before = self.before.frame(i)
        if not self.pairing.known(i):
            return before, None, "waiting"
        j = self.pairing.output_of(i)
        if j is None:
            return before, None, "dropped"
        if j >= len(self.after):
            return before, None, "waiting" if not self.after.done else "missing"
        return before, self.after.frame(j), "ok"

    def _time(self, index: CaptureIndex, frame) -> str:
        if frame.ts_ns is None:
            return ""
        if index not in self.t0:
            first = index.frame(0).ts_ns
            self.t0[index] = first if first is not None else frame.ts_ns
        return f"{(frame.ts_ns - self.t0[index]) / 1e9:.6f}"

    def row(self, i: int) -> _Row | None:
        row = self.cache.get(i)
        if row is not None or i in self.cache:
            return row
        try:
            before, after, state = self.pair(i)
        except (OSError, ValueError, IndexError) as exc:
            row = _Row(["", "", f"Cannot read: {exc}"] + [""] * 6)
            self.cache[i] = row
            return row
        cells = [f"{before.number:,}", self._time(self.before, before), summary(before), f"{len(before.data):,}"]
        if state == "waiting":
            self.cache[i] = None                    # decoded again once the output's index gets there
            return _Row(cells + ["", "", "…", "", "reading…"])
        if state == "dropped":
            row = _Row(cells + ["", "", "—", "", "dropped: duplicate of an earlier frame (Remove Dupes)"],
                       dropped=True)
        elif state == "missing":
            row = _Row(cells + ["", "", "—", "", "no output frame: the output has fewer frames"], mismatch=True)
        else:
            mismatch = not verify(before, after)
            words = change_words(explain(before, after))
            if mismatch:
                words = "pairing does not hold: time or wire length differ · " + words
            row = _Row(cells + [f"{after.number:,}", self._time(self.after, after), summary(after),
                                f"{len(after.data):,}", words], mismatch=mismatch)
        if len(self.cache) >= CACHE_ROWS:
            self.cache.pop(next(iter(self.cache)))
        self.cache[i] = row
        return row

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid():
            return None
        col = index.column()
        if role == Qt.DisplayRole or role == Qt.ToolTipRole:
            row = self.row(index.row())
            return row.cells[col] if row is not None else None
        if role == Qt.TextAlignmentRole and col in (IN_NO, IN_TIME, IN_LEN, OUT_NO, OUT_TIME, OUT_LEN):
            return int(Qt.AlignRight | Qt.AlignVCenter)
        if role == Qt.ForegroundRole:
            row = self.cache.get(index.row())
            if row is not None and row.mismatch:
                return QBrush(QColor("#b71c1c"))
            if row is not None and row.dropped and col >= OUT_NO:
                return QBrush(QColor("#8a5300"))
            if col == CHANGES and row is not None and row.cells[CHANGES] == "unchanged":
                return QBrush(QColor("#6b6b6b"))
        return None


class HexView(QAbstractScrollArea):
    """A frame as hex and ASCII, 16 bytes a line; only the visible lines are painted."""

    def __init__(self, title: str, parent=None):
        super().__init__(parent)
        self.title = title
        self.data = b""
        self.changed: set[int] = set()      # offsets shown as changed
        self.removed_from: int | None = None    # offsets from here on are gone in the output (trimmed)
        self.selected: tuple[int, int] | None = None
        self.message = ""
        font = QFontDatabase.systemFont(QFontDatabase.FixedFont)
        self.setFont(font)
        self.viewport().setAutoFillBackground(True)
        self.setMinimumWidth(self.fontMetrics().horizontalAdvance("0" * 76) + 24)

    def set_frame(self, data: bytes, changed=(), removed_from=None, message="") -> None:
        self.data, self.changed, self.removed_from, self.message = data, set(changed), removed_from, message
        self.selected = None
        self._layout()
        self.viewport().update()

    def select(self, start: int, end: int) -> None:
        self.selected = (start, end)
        line = start // 16
        bar = self.verticalScrollBar()
        visible = max(1, self.viewport().height() // self._line_height())
        if not bar.value() <= line < bar.value() + visible - 1:
            bar.setValue(max(0, line - 2))
        self.viewport().update()

    def _line_height(self) -> int:
        return self.fontMetrics().height() + 2

    def _layout(self) -> None:
        lines = (len(self.data) + 15) // 16
        visible = max(1, self.viewport().height() // self._line_height())
        self.verticalScrollBar().setRange(0, max(0, lines - visible + 1))
        self.verticalScrollBar().setPageStep(visible)

    def resizeEvent(self, event):
        super().resizeEvent(event)
        self._layout()

    def sizeHint(self) -> QSize:
        return QSize(self.fontMetrics().horizontalAdvance("0" * 76) + 30, 200)

    def paintEvent(self, _event):
        painter = QPainter(self.viewport())
        fm = self.fontMetrics()
        lh, cw, asc = self._line_height(), fm.horizontalAdvance("0"), fm.ascent()
        painter.setPen(QColor("#4a5560"))
        if self.message:
            painter.drawText(self.viewport().rect().adjusted(8, 8, -8, -8),
                             Qt.AlignLeft | Qt.AlignTop | Qt.TextWordWrap, self.message)
        first = self.verticalScrollBar().value()
        rows = self.viewport().height() // lh + 1
        data, changed = self.data, self.changed
        sel = self.selected
        for line in range(first, min(first + rows, (len(data) + 15) // 16)):
            y = (line - first) * lh + 2
            base = line * 16
            painter.setPen(QColor("#8a949e"))
            painter.drawText(4, y + asc, f"{base:04x}")
            for k in range(min(16, len(data) - base)):
                off = base + k
                x = 4 + cw * (6 + 3 * k + (1 if k >= 8 else 0))
                ax = 4 + cw * (57 + k)
                colour = None
                if sel is not None and sel[0] <= off < sel[1]:
                    colour = SELECTED
                if off in changed:
                    colour = CHANGED if colour is None else CHANGED.darker(115)
                elif self.removed_from is not None and off >= self.removed_from:
                    colour = REMOVED
                if colour is not None:
                    painter.fillRect(QRect(x - 2, y, cw * 2 + 4, lh), colour)
                    painter.fillRect(QRect(ax, y, cw, lh), colour)
                byte = data[off]
                painter.setPen(QColor("#1d2329"))
                painter.drawText(x, y + asc, f"{byte:02x}")
                painter.drawText(ax, y + asc, chr(byte) if 32 <= byte < 127 else "·")
        painter.end()


class InspectDialog(QDialog):
    def __init__(self, input_path: Path, output_path: Path, result=None, parent=None):
        super().__init__(parent)
        self.setObjectName("inspectDialog")
        self.setAttribute(Qt.WA_DeleteOnClose)
        self.setWindowTitle(f"Inspect {Path(output_path).name} — PktMask GUI")
        self.input_path, self.output_path, self.result = Path(input_path), Path(output_path), result
        stages = (result.stages or {}) if result is not None else {}
        self.dedup_mode = (stages.get("dedup") or {}).get("mode") if "dedup" in stages else None
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.before = self.after = None
        self.error = ""
        self.detail_waiting = False
        try:
            self.before = CaptureIndex(self.input_path)
            self.after = CaptureIndex(self.output_path)
        except (OSError, CaptureError) as exc:
            self.error = f"Cannot open {getattr(exc, 'filename', None) or ''} for inspection: " \
                         f"{getattr(exc, 'strerror', None) or exc}."
        self.pairing = Pairing("dedup" in stages, self.before.size if self.before else 0)

        self.heading = QLabel()
        self.heading.setObjectName("inspectHeading")
        self.heading.setWordWrap(True)
        self.status = QLabel()
        self.status.setObjectName("note")
        self.status.setWordWrap(True)
        self.table = QTableView()
        self.table.setObjectName("inspectTable")
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.fields = QTreeWidget()
        self.fields.setObjectName("inspectFields")
        self.fields.setHeaderLabels(["Field", "Bytes", "Input", "Output", "What happened"])
        self.fields.setRootIsDecorated(True)
        self.fields.setUniformRowHeights(True)
        self.fields.itemSelectionChanged.connect(self._field_selected)
        self.hex_in = HexView("Input")
        self.hex_out = HexView("Output")
        self.hex_in.verticalScrollBar().valueChanged.connect(self._sync_scroll)
        self.hex_out.verticalScrollBar().valueChanged.connect(self._sync_scroll)
        self.in_label = QLabel("Input frame")
        self.out_label = QLabel("Output frame")
        legend = QLabel(f"<span style='background:{CHANGED.name()}'>&nbsp;changed&nbsp;</span>&nbsp; "
                        f"<span style='background:{REMOVED.name()}'>&nbsp;not in the output&nbsp;</span>&nbsp; "
                        f"<span style='background:{SELECTED.name()}'>&nbsp;selected field&nbsp;</span>")

        hexes = QWidget()
        stack = QVBoxLayout(hexes)
        stack.setContentsMargins(0, 0, 0, 0)
        for label, view in ((self.in_label, self.hex_in), (self.out_label, self.hex_out)):
            stack.addWidget(label)
            stack.addWidget(view, 1)
        lower = QSplitter(Qt.Horizontal)
        lower.addWidget(self.fields)
        lower.addWidget(hexes)
        lower.setStretchFactor(0, 1)
        lower.setStretchFactor(1, 0)
        lower.setChildrenCollapsible(False)
        upper = QSplitter(Qt.Vertical)
        upper.addWidget(self.table)
        upper.addWidget(lower)
        upper.setSizes([330, 430])
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        bottom = QHBoxLayout()
        bottom.addWidget(legend)
        bottom.addStretch(1)
        bottom.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addWidget(self.status)
        layout.addWidget(upper, 1)
        layout.addLayout(bottom)
        screen = self.screen().availableGeometry() if self.screen() is not None else None
        self.resize(min(1240, int(screen.width() * 0.95)) if screen else 1240,
                    min(820, int(screen.height() * 0.92)) if screen else 820)

        self.timer = QTimer(self)
        self.timer.setInterval(100)
        self.timer.timeout.connect(self._tick)
        if self.error:
            self.heading.setText(self.error)
            return
        self.model = FramePairModel(self.before, self.after, self.pairing, self)
        self.table.setModel(self.model)
        self._size_columns()
        self.table.selectionModel().currentRowChanged.connect(lambda current, _old: self.show_frame(current.row()))
        self._start(self.before, self.pairing.feed if self.pairing.dedup else None)
        self._start(self.after, None)
        self.timer.start()
        self._tick()

    # --- reading ---------------------------------------------------------------------------------------
    def _start(self, index: CaptureIndex, frames) -> None:
        thread = threading.Thread(target=index.scan, args=(self.stop.is_set, frames),
                                  name=f"pktmask-inspect {Path(index.path).name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def finished_reading(self) -> bool:
        return all(not t.is_alive() for t in self.threads)

    def _tick(self) -> None:
        first = self.model.rows == 0
        self.model.grow()
        if first and self.model.rows:
            self.table.selectRow(0)
        elif self.detail_waiting:       # the selected frame's output frame was not read yet: show it now
            self.show_frame(self.table.currentIndex().row())
        before, after, pairing = self.before, self.after, self.pairing
        self.heading.setText(f"<b>{self.input_path.name}</b> → <b>{self.output_path.name}</b> &nbsp; "
                             f"{len(before):,} frames in, {len(after):,} out"
                             + (f", {plural(pairing.dropped_count, 'duplicate')} dropped by Remove Dupes"
                                if pairing.dedup else ""))
        notes = []
        if not (before.done and after.done):
            done = before.bytes_scanned + after.bytes_scanned
            total = max(1, before.size + after.size)
            notes.append(f"Reading both files… {done * 100 // total}% (the list grows as they are read)")
        for index, name in ((before, "input"), (after, "output")):
            if index.error:
                notes.append(f"The {name} could be read only up to frame {len(index):,}: {index.error}.")
        if before.done and after.done and not before.error and not after.error:
            self.timer.stop()
            expected = len(before) - pairing.dropped_count
            if expected != len(after):
                notes.append(f"The output has {len(after):,} frames where the pairing expects {expected:,}: "
                             "rows whose time or length disagree are shown in red.")
            else:
                notes.append("Each output frame is shown beside the input frame it came from"
                             + (" (Remove Dupes' decisions replayed on the input)." if pairing.dedup else "."))
            if self.dedup_mode and self.dedup_mode != "whole file":
                notes.append("This run's Remove Dupes worked in a window (memory pressure); the view replays it "
                             "over the whole file, so a few pairs may disagree (shown in red).")
            self.model.grow()
            if self.detail_waiting:     # the reading ended after this tick looked: the last look is now
                self.show_frame(self.table.currentIndex().row())
        self.status.setText(" ".join(notes))

    def _size_columns(self) -> None:
        fm = self.fontMetrics()
        hh = self.table.horizontalHeader()
        for col, sample in ((IN_NO, "1,000,000"), (IN_TIME, "8640.000000"), (IN_LEN, "Length"),
                            (OUT_NO, "1,000,000"), (OUT_TIME, "8640.000000"), (OUT_LEN, "Length")):
            self.table.setColumnWidth(col, fm.horizontalAdvance(sample) + 14)
        for col in (IN_PROTO, OUT_PROTO):        # longer summaries elide; the tooltip has them whole
            self.table.setColumnWidth(col, fm.horizontalAdvance("TCP 192.168.100.200:65535 → 10.0.0.1") + 12)
        self.table.setColumnWidth(OUT_NO, self.table.columnWidth(OUT_NO) + 8)
        hh.setStretchLastSection(True)

    # --- the selected frame ----------------------------------------------------------------------------
    def show_frame(self, i: int) -> None:
        self.fields.clear()
        self.detail_waiting = False
        if i < 0:
            return
        before, after, state = self.model.pair(i)
        self.detail_waiting = state == "waiting"
        self.in_label.setText(f"Input frame {before.number:,} ({len(before.data):,} bytes)")
        if after is None:
            words = {"dropped": "Dropped by Remove Dupes: identical to an earlier frame of the input.",
                     "waiting": "Still reading the output…",
                     "missing": "No output frame: the output has fewer frames than expected."}[state]
            self.out_label.setText("Output frame: none")
            self.hex_in.set_frame(before.data)
            self.hex_out.set_frame(b"", message=words)
            QTreeWidgetItem(self.fields, ["(no output frame)", "", "", "", words])
            return
        changed = changed_offsets(before.data, after.data)
        short = len(after.data) < len(before.data)
        self.out_label.setText(f"Output frame {after.number:,} ({len(after.data):,} bytes)"
                               + (f", {len(changed):,} bytes differ" if changed else ", identical bytes")
                               + (f", {len(before.data) - len(after.data):,} trimmed" if short else ""))
        self.hex_in.set_frame(before.data, changed, removed_from=len(after.data) if short else None)
        self.hex_out.set_frame(after.data, changed)
        parents = []
        for f in explain(before, after):
            cells = [f.name, f"{f.start}–{f.end - 1}" if f.end - f.start > 1 else str(f.start), f.before, f.after,
                     f.change]
            parent = parents[f.depth - 1] if 0 < f.depth <= len(parents) else self.fields
            item = QTreeWidgetItem(parent, cells)
            item.setData(0, Qt.UserRole, (f.start, f.end))
            if f.change not in ("unchanged", "unchanged (all zero)"):
                item.setForeground(4, QBrush(QColor("#8a4b00")))
                bold = QFont(item.font(4))
                bold.setBold(True)
                item.setFont(4, bold)
            del parents[f.depth:]
            parents.append(item)
        self.fields.expandAll()
        for col in range(4):
            self.fields.resizeColumnToContents(col)

    def _field_selected(self) -> None:
        items = self.fields.selectedItems()
        span = items[0].data(0, Qt.UserRole) if items else None
        if span:
            self.hex_in.select(*span)
            self.hex_out.select(*span)

    def _sync_scroll(self, value: int) -> None:
        for view in (self.hex_in, self.hex_out):
            if view.verticalScrollBar().value() != value:
                view.verticalScrollBar().setValue(value)

    # --- closing ----------------------------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        self.stop.set()
        self.timer.stop()
        for thread in self.threads:
            thread.join(2.0)
        for index in (self.before, self.after):
            if index is not None:
                index.close()
        super().closeEvent(event)
