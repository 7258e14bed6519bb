"""The job queue: one row per capture, its table model, the per-row progress bar and the drop area.

The rows are plain Python objects owned by the UI thread; workers never touch them (they send
signals, and the run controller updates the row). The model words each row's Result itself: where a
queued file will be saved (the window tells it the output choice and settings of the moment,
``set_destination``), what a finished job did.
"""
from __future__ import annotations

import itertools
import operator
import os
import time
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPointF, QRect, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetrics, QPainter, QPen, QStaticText
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QStyle, QStyledItemDelegate

from .. import pipeline
from ..compression import output_kind, sniff
from .format import count, duplicates_removed, human_size, plural
from .tables import CalmTableView, TextDelegate, laid_out

QUEUED, RUNNING, CANCELLING, DONE, FAILED, CANCELLED = (
    "Queued", "Running", "Cancelling…", "Done", "Failed", "Cancelled")
FINISHED = (DONE, FAILED, CANCELLED)
NOT_STARTED = "cancelled before it started"     # the error of a cancelled row that never ran
PHASE_WORDS = {"prescan": "Pre-scan", "process": "Processing"}     # the self-check runs within "process"


@dataclass(slots=True)     # no __dict__: one object fewer per row for the garbage collector to walk
class QueueRow:
    id: int
    path: Path
    rel_dir: Path = Path("")
    size: int = 0
    status: str = QUEUED
    phase: str = ""
    bytes_done: int = 0
    bytes_total: int = 0
    packets_done: int = 0
    result: object = None          # pipeline.JobResult once finished
    error: str = ""
    compression: str | None = None  # "gzip" | "zstd" | "lz4", by the file's first bytes; None: plain
    output: Path | None = None      # where its job writes, set when the job starts
    key: str = ""                   # the file's real path (_path_key): the same file is not queued twice

    @property
    def display_name(self) -> str:
        return str(self.rel_dir / self.path.name) if str(self.rel_dir) not in ("", ".") else self.path.name

    def fraction(self) -> float:
        """0..1 of this job's work; the engine's byte count already spans all its passes over the input
        (pre-scan, main pass, self-check)."""
        if self.status == DONE:
            return 1.0
        if self.status in (QUEUED, FAILED, CANCELLED) or not self.bytes_total:
            return 0.0
        return max(0.0, min(1.0, self.bytes_done / self.bytes_total))

    def planned_output(self, output_dir: Path | None, settings) -> Path:
        """Where a job of this file writes with ``output_dir`` (None: beside the input) and ``settings``: the
        engine's naming rule, with the compression the file's first bytes told when it was queued."""
        job = pipeline.Job(input=self.path, output_dir=output_dir, rel_dir=self.rel_dir)
        plan = (self.compression, output_kind(settings.compress, self.compression))
        return pipeline.planned_output(job, settings, plan)


def _walk_captures(folder: Path):
    """pipeline.find_captures for one folder, one capture at a time: (file, its folder relative to ``folder``,
    its key), in os.walk's order (a folder's files by name, then its subfolders, linked ones not followed).
    A folder is listed and sorted at once, its entries looked at as the caller asks (a folder of 10,000
    files is queued slice by slice, not looked at whole first); its real path is worked out once."""
    pending = [(Path(folder), Path(""))]
    while pending:
        here, rel_dir = pending.pop()
        try:
            with os.scandir(here) as listing:
                entries = sorted(listing, key=_entry_name)
        except OSError:
            continue
        real = os.path.realpath(here)
        subdirs = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not entry.name.startswith("pktmask_") and not entry.is_symlink():
                    subdirs.append(entry.name)
            elif pipeline.is_capture_file(entry.path):
                key = _path_key(entry.path) if entry.is_symlink() else os.path.normcase(os.path.join(real, entry.name))
                yield here / entry.name, rel_dir, key
        pending.extend((here / name, rel_dir / name) for name in reversed(subdirs))


_entry_name = operator.attrgetter("name")


def _path_key(path: Path) -> str:
    """The same file gives the same key, whatever the spelling of its path."""
    try:
        return os.path.normcase(str(Path(path).resolve()))
    except OSError:
        return os.path.normcase(str(path))


COLUMNS = ("File", "Size", "Status", "Progress", "Packets in", "Packets out", "Result")
COL_FILE, COL_SIZE, COL_STATUS, COL_PROGRESS, COL_IN, COL_OUT, COL_RESULT = range(len(COLUMNS))

STATUS_COLOURS = {DONE: "#1b7f3b", FAILED: "#b71c1c", CANCELLED: "#8a5300", CANCELLING: "#8a5300",
                  RUNNING: "#1a4f9c"}


# Roles as plain ints: data() runs for every role of every cell at each repaint, and comparing with a Qt
# enum member costs microseconds, a plain int nanoseconds.
DISPLAY, TOOLTIP, ALIGNMENT, FOREGROUND, FONT, USER = (
    int(Qt.DisplayRole), int(Qt.ToolTipRole), int(Qt.TextAlignmentRole), int(Qt.ForegroundRole), int(Qt.FontRole),
    int(Qt.UserRole))
RIGHT = int(Qt.AlignRight | Qt.AlignVCenter)
NUMERIC = (COL_SIZE, COL_IN, COL_OUT)


def _brushes() -> dict[str, tuple]:
    """Per status, each column's text colour (None: the palette's)."""
    brush = {status: QBrush(QColor(colour)) for status, colour in STATUS_COLOURS.items()}
    grey = QBrush(QColor("#6b6b6b"))
    table = {}
    for status in (QUEUED, RUNNING, CANCELLING, DONE, FAILED, CANCELLED):
        cells = [None] * len(COLUMNS)
        cells[COL_STATUS] = brush.get(status)
        cells[COL_RESULT] = brush[FAILED] if status == FAILED else grey if status == QUEUED else None
        table[status] = tuple(cells)
    return table


class QueueModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[QueueRow] = []
        self._pos: dict[int, int] = {}     # row id -> its index in rows (row_by_id and changed are per event)
        self._planned: dict[int, str] = {}  # row id -> its "Will be saved as" words (set_destination clears)
        # row id -> (status, packets, its cells' words): a repaint asks each cell several times; the words are
        # worked out once per change of the row (``changed``), and again if its status or count moved on.
        self._cells: dict[int, tuple] = {}
        self._brushes = _brushes()
        self._colours = {status: tuple(b.color() if b is not None else None for b in cells)
                         for status, cells in self._brushes.items()}
        self._bold: QFont | None = None
        self._queued_from = 0              # no row before this position is queued (queued_rows starts here)
        self._next_id = 1
        self.settings = None               # where queued rows would be saved now (set_destination)
        self.output_dir: Path | None = None

    # --- Qt model API ----------------------------------------------------------------------------
    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=DISPLAY):
        if role == DISPLAY:
            return COLUMNS[section] if orientation == Qt.Horizontal else None
        if role == ALIGNMENT and section in NUMERIC:
            return RIGHT if orientation == Qt.Horizontal else None
        return None

    def data(self, index, role=DISPLAY):
        if not index.isValid():
            return None
        if role == DISPLAY:
            return self.cells(self.rows[index.row()])[index.column()]
        if role == USER:
            return self.rows[index.row()]
        if role == ALIGNMENT:
            return RIGHT if index.column() in NUMERIC else None
        if role == FOREGROUND:
            return self._brushes[self.rows[index.row()].status][index.column()]
        if role == FONT:
            if index.column() == COL_STATUS and self.rows[index.row()].status in (RUNNING, FAILED):
                if self._bold is None:
                    self._bold = QFont()
                    self._bold.setBold(True)
                return self._bold
            return None
        if role == TOOLTIP:
            return self.tooltip(self.rows[index.row()], index.column())
        return None

    def look(self, index) -> tuple:
        """A cell as ``tables.TextDelegate`` paints it: what ``data`` gives for its roles, in one call."""
        row = self.rows[index.row()]
        col = index.column()
        return (self.cells(row)[col], self._colours[row.status][col],
                col == COL_STATUS and row.status in (RUNNING, FAILED), col in NUMERIC, None)

    def cells(self, row: QueueRow) -> tuple:
        """The words of the row's cells, by column (None for the Progress column: its delegate paints it)."""
        cached = self._cells.get(row.id)
        if cached is not None and cached[0] == row.status and cached[1] == row.packets_done:
            return cached[2]
        result = row.result
        done = result is not None and row.status == DONE
        if done:
            packets_in = count(result.packets_in)
        elif row.packets_done and row.status in (RUNNING, CANCELLING):
            packets_in = count(row.packets_done)
        else:
            packets_in = ""
        # Size on disk: compressed; the capture inside is known by its packets.
        words = (row.display_name,
                 f"{human_size(row.size)} ({row.compression})" if row.compression else human_size(row.size),
                 row.status, None, packets_in, count(result.packets_out) if done else "", self.result_text(row))
        self._cells[row.id] = (row.status, row.packets_done, words)
        return words

    def tooltip(self, row: QueueRow, col: int) -> str | None:
        if col == COL_FILE:
            return str(row.path)
        if col == COL_RESULT:
            return self.result_text(row) or None
        if col == COL_STATUS and row.error:
            return row.error
        if col == COL_SIZE and row.compression:
            return (f"{human_size(row.size)} on disk, {row.compression}-compressed: the capture inside is "
                    f"larger; progress follows the compressed bytes read")
        return None

    # --- rows ------------------------------------------------------------------------------------
    def add(self, path: Path, rel_dir: Path, size: int) -> QueueRow:
        row = self._new_row(path, rel_dir, size, _path_key(path))
        self.insert([row])
        return row

    def _new_row(self, path: Path, rel_dir: Path, size: int, key: str) -> QueueRow:
        row = QueueRow(self._next_id, path, rel_dir, size, compression=sniff(path), key=key)
        self._next_id += 1
        return row

    def insert(self, rows: list[QueueRow]) -> None:
        """Append rows, in one insertion (one repaint, one update of the window's actions)."""
        if not rows:
            return
        pos = len(self.rows)
        self.beginInsertRows(QModelIndex(), pos, pos + len(rows) - 1)
        for i, row in enumerate(rows):
            self._pos[row.id] = pos + i
        self.rows.extend(rows)
        self.endInsertRows()

    def add_paths(self, paths) -> tuple[list[QueueRow], list[tuple[str, str]]]:
        """Queue the captures named or found under ``paths`` (recognised as the engine does); refuse the rest.

        Returns (the rows added, [(name, reason), ...] refused).
        """
        added: list[QueueRow] = []
        refused: list[tuple[str, str]] = []
        self.take(self.scan(paths), added, refused)
        return added, refused

    def take(self, items, added: list, refused: list, deadline: float | None = None, minimum: int = 1) -> bool:
        """Pull rows and refusals from ``items`` (``scan``) and queue the rows, in one insertion; stop at
        ``deadline`` (``time.monotonic()``; after ``minimum`` items at least). True when ``items`` is done."""
        rows: list[QueueRow] = []
        done = True
        for n, item in enumerate(items, 1):
            if isinstance(item, QueueRow):
                rows.append(item)
            else:
                refused.append(item)
            if deadline is not None and n >= minimum and time.monotonic() >= deadline:
                done = False
                break
        self.insert(rows)
        added.extend(rows)
        return done

    def scan(self, paths):
        """Yield, one by one, a new (not yet inserted) QueueRow for each capture named or found under
        ``paths`` and a (name, reason) for each refusal: a caller can spread a large folder over time."""
        already = {row.key for row in self.rows if row.status not in FINISHED}
        for raw in paths:
            path = Path(raw)
            if path.is_dir():
                found = _walk_captures(path)
                first = next(found, None)
                if first is None:
                    yield (path.name or str(path), "the folder holds no .pcap, .pcapng or .cap file, "
                                                   "plain or compressed")
                    continue
                found = itertools.chain([first], found)
            elif not path.exists():
                yield (path.name or str(path), "it does not exist")
                continue
            elif not path.is_file():
                yield (path.name, "it is not a regular file")
                continue
            elif not pipeline.is_capture_file(path):
                yield (path.name, "not a capture file (only .pcap, .pcapng and .cap are accepted, "
                                  "also gzip, zstd or lz4 compressed)")
                continue
            else:
                found = iter([(path, Path(""), _path_key(path))])
            for file, rel_dir, key in found:
                if key in already:
                    yield (file.name, "it is already in the queue")
                    continue
                try:
                    size = os.stat(file).st_size
                except OSError as exc:
                    yield (file.name, f"it cannot be read ({exc.strerror or exc})")
                    continue
                already.add(key)
                yield self._new_row(file, rel_dir, size, key)

    def requeue(self, rows) -> None:
        """Finished rows wait in the queue again, as if just added."""
        for row in rows:
            if row.status in FINISHED:
                row.status, row.result, row.error, row.output = QUEUED, None, "", None
                row.phase, row.bytes_done, row.bytes_total, row.packets_done = "", 0, 0, 0
                self._queued_from = min(self._queued_from, self.position(row))
                self.changed(row)

    def queued_rows(self):
        """The queued rows, in queue order. A run asks at every result: the rows before the first queued one
        are not looked at again (only ``requeue`` and ``remove`` move that point back)."""
        rows = self.rows
        first = self._queued_from
        while first < len(rows) and rows[first].status != QUEUED:
            first += 1
        self._queued_from = first
        for i in range(first, len(rows)):
            if rows[i].status == QUEUED:
                yield rows[i]

    def has_queued(self) -> bool:
        return next(self.queued_rows(), None) is not None

    def row_by_id(self, row_id: int) -> QueueRow | None:
        pos = self._pos.get(row_id)
        return self.rows[pos] if pos is not None else None

    def position(self, row: QueueRow) -> int:
        return self._pos[row.id]

    def changed(self, row: QueueRow, first: int = 0, last: int = len(COLUMNS) - 1) -> None:
        self._cells.pop(row.id, None)
        pos = self.position(row)
        self.dataChanged.emit(self.index(pos, first), self.index(pos, last))

    def remove(self, row: QueueRow) -> None:
        self.remove_rows([row])

    def remove_rows(self, rows) -> None:
        """Take ``rows`` out of the queue: one removal per run of neighbouring rows, the positions worked out
        again once (Clear Finished on ten thousand rows is one pass, not one per row)."""
        positions = sorted({self._pos[row.id] for row in rows}, reverse=True)
        if not positions:
            return
        i = 0
        while i < len(positions):           # from the bottom up: the positions above stay valid
            last = first = positions[i]
            while i + 1 < len(positions) and positions[i + 1] == first - 1:
                i += 1
                first = positions[i]
            self.beginRemoveRows(QModelIndex(), first, last)
            for row in self.rows[first:last + 1]:
                del self._pos[row.id]
                self._cells.pop(row.id, None)
                self._planned.pop(row.id, None)
            del self.rows[first:last + 1]
            self.endRemoveRows()
            i += 1
        low = positions[-1]
        self._queued_from = min(self._queued_from, low)
        for i in range(low, len(self.rows)):
            self._pos[self.rows[i].id] = i

    def refresh_all(self) -> None:
        if self.rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.rows) - 1, len(COLUMNS) - 1))

    def set_destination(self, settings, output_dir: Path | None) -> None:
        """The output choice and settings a queued row would start with now: its "Will be saved as" words."""
        self.settings, self.output_dir = settings, output_dir
        self._planned.clear()
        self._cells.clear()
        self.refresh_all()

    # --- the Result column ---------------------------------------------------------------------
    def result_text(self, row: QueueRow) -> str:
        """A row's Result words: where it will be or is being saved, what its job did, or why it did not."""
        if row.status == QUEUED:
            if self.settings is None:
                return ""
            words = self._planned.get(row.id)
            if words is None:       # asked at every repaint: worked out once per destination
                words = f"Will be saved as {row.planned_output(self.output_dir, self.settings).name}"
                self._planned[row.id] = words
            return words
        if row.status == RUNNING:
            return f"Writing {row.output.name}" if row.output is not None else ""
        if row.status == CANCELLING:
            return "Stopping; removing its temp files…"
        result = row.result
        if row.status == DONE and result is not None:
            parts = [f"Saved {Path(result.output).name}" if result.output else "Done"]
            dupes = duplicates_removed(result)
            if dupes is not None:
                parts.append(f"{plural(dupes, 'duplicate')} removed")
            if result.warnings:
                parts.append(plural(len(result.warnings), "warning"))
            return " · ".join(parts)
        if row.status == CANCELLED:
            if row.error == NOT_STARTED:
                return "Cancelled before it started"
            return "Cancelled; nothing was written"
        if row.status == FAILED:
            text = " ".join((row.error or "failed").split())
            return text[:1].upper() + text[1:]
        return ""


class ProgressDelegate(QStyledItemDelegate):
    """Paints the Progress column: a flat bar in light colours with dark text over it, so that the text
    reads the same on both sides of the fill edge (a native bar draws it in two colours, cut at the edge)."""

    TRACK, FILL, DONE_FILL, TEXT = QColor("#e3e8ee"), QColor("#a8cdf7"), QColor("#b4e2c0"), QColor("#1d2329")
    FAILED_TEXT = QColor(STATUS_COLOURS[FAILED])

    @staticmethod
    def text(row, compact: bool = False) -> str:
        """The bar's words; ``compact``: the percentage alone (the packets have a column of their own)."""
        if row.status == RUNNING:
            pct = f"{row.fraction() * 100:.0f}%"
            if not row.phase:
                return "Starting…"
            if row.phase == "waiting":          # sent to a Dask scheduler, no worker has taken it yet
                return "Waiting for a worker"
            if row.phase == "process" or compact:
                return f"{pct} · {row.packets_done:,} packets" if row.packets_done and not compact else pct
            return f"{PHASE_WORDS.get(row.phase, row.phase.title())} · {pct}"
        return {CANCELLING: "Stopping…", DONE: "100%", FAILED: "Failed", CANCELLED: "Cancelled"}.get(row.status, "")

    def __init__(self, parent=None):
        super().__init__(parent)
        self._font: QFont | None = None
        # (words, bar width, bar height) -> (the words shown, laid out; their place in the bar), as
        # tables.TextDelegate keeps them: laying text out at each paint was most of a paint's cost.
        self._laid_out: dict[tuple, tuple[QStaticText, float, float]] = {}

    def paint(self, painter: QPainter, option, index):
        row = index.data(Qt.UserRole)
        if row is None:
            return super().paint(painter, option, index)
        if option.state & QStyle.State_Selected:
            painter.fillRect(option.rect, option.palette.highlight())
        if row.status == QUEUED:
            return
        rect = option.rect.adjusted(3, 4, -3, -4)
        fraction = row.fraction() if row.status in (RUNNING, CANCELLING, DONE) else 0.0
        painter.save()
        painter.setRenderHint(QPainter.Antialiasing)
        painter.setPen(Qt.NoPen)
        painter.setBrush(self.TRACK)
        painter.drawRoundedRect(rect, 3, 3)
        if fraction > 0:
            filled = QRect(rect.left(), rect.top(), max(6, int(rect.width() * fraction)), rect.height())
            painter.setBrush(self.DONE_FILL if row.status == DONE else self.FILL)
            painter.drawRoundedRect(filled, 3, 3)
        painter.setPen(self.FAILED_TEXT if row.status == FAILED else self.TEXT)
        if option.font != self._font:
            self._font = QFont(option.font)
            self._laid_out.clear()
        text = self.text(row)
        key = (text, rect.width(), rect.height())
        laid = self._laid_out.get(key)
        if laid is None:
            laid = self._lay_out(painter, row, key)
        static, x, y = laid
        painter.setFont(self._font)
        painter.drawStaticText(QPointF(rect.left() + x, rect.top() + y), static)
        painter.restore()

    def _lay_out(self, painter, row, key):
        text, width, height = key
        metrics = QFontMetrics(self._font)
        if metrics.horizontalAdvance(text) > width - 6:
            text = self.text(row, compact=True)     # the same for every row with these words
        shown = metrics.elidedText(text, Qt.ElideRight, width - 4)
        static, natural, tall, _ascent = laid_out(shown, self._font, painter, width)
        laid = (static, (width - natural) / 2, (height - tall) / 2)     # centred, as drawText(AlignCenter) puts it
        if len(self._laid_out) >= 4096:
            self._laid_out.clear()
        self._laid_out[key] = laid
        return laid


FIT_ROWS = 60


class QueueView(CalmTableView):
    """The queue table, which is also the drop area: files and folders dropped here are queued."""

    paths_dropped = Signal(list)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("queueView")
        self.setAcceptDrops(True)
        self.viewport().setAcceptDrops(True)
        self.setDragDropMode(QAbstractItemView.DropOnly)
        self.setDropIndicatorShown(False)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.setShowGrid(False)
        self.setWordWrap(False)
        self.setContextMenuPolicy(Qt.CustomContextMenu)
        self.setTextElideMode(Qt.ElideMiddle)
        self.verticalHeader().hide()
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 12)
        self._drag_active = False

    def setup_columns(self) -> None:
        hh = self.horizontalHeader()
        hh.setHighlightSections(False)
        hh.setDefaultAlignment(Qt.AlignLeft | Qt.AlignVCenter)
        hh.setMinimumSectionSize(40)
        for col in range(len(COLUMNS)):
            hh.setSectionResizeMode(col, QHeaderView.Interactive)
        hh.setStretchLastSection(True)
        self.setItemDelegateForColumn(COL_PROGRESS, ProgressDelegate(self))
        words = TextDelegate(self, self.model().look, Qt.ElideMiddle)     # a name keeps its start and its end
        for col in range(len(COLUMNS)):
            if col != COL_PROGRESS:
                self.setItemDelegateForColumn(col, words)
        # the Result column's start ("Saved …", "Will be saved as …") always reads
        self.setItemDelegateForColumn(COL_RESULT, TextDelegate(self, self.model().look, Qt.ElideRight))
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self._fitting = False
        self.user_sized = False         # once the user drags a column border, the widths are theirs
        hh.sectionResized.connect(self._section_resized)
        # Rows come and go and their result words change: fit again, at most ~3 times a second.
        self._fit_timer = QTimer(self)
        self._fit_timer.setSingleShot(True)
        self._fit_timer.setInterval(300)
        self._fit_timer.timeout.connect(self.fit_columns)
        model = self.model()
        for signal in (model.rowsInserted, model.rowsRemoved, model.modelReset):
            signal.connect(lambda *_: self._fit_timer.isActive() or self._fit_timer.start(300))
        # A result's words change the widths less often than rows come and go: fit at most once a second.
        model.dataChanged.connect(lambda *_: self._fit_timer.isActive() or self._fit_timer.start(1000))
        self.fit_columns()

    def _section_resized(self, col: int, _old: int, _new: int) -> None:
        if not self._fitting and col != len(COLUMNS) - 1 and self.isVisible():
            self.user_sized = True

    def fit_columns(self) -> None:
        """Share the width so that a file's name, status, progress and result read in full when they can
        (1280 px), and the name and the result share what is left when they cannot (900 px): fixed columns
        at their content's width, the name at most 45 % of the rest, the result the remainder."""
        if self.user_sized or self.model() is None:
            return
        fm = self.fontMetrics()
        pad = 18
        model = self.model()
        # The rows in view (at most FIT_ROWS): measuring thousands of names would stall the window, and even the
        # 60 rows below the top took 5-8 ms, as long as a slice of an add.
        top = max(0, self.rowAt(0))
        bottom = self.rowAt(self.viewport().height() - 1)
        end = model.rowCount() if bottom < 0 else bottom + 1
        rows = range(top, min(end, top + FIT_ROWS))
        packed = any(getattr(r, "compression", None) for r in getattr(model, "rows", ())[top:rows.stop])
        fixed = {COL_SIZE: fm.horizontalAdvance("1023.9 MB (gzip)" if packed else "1023.9 MB") + pad,
                 COL_STATUS: fm.horizontalAdvance("Cancelling…") + pad,
                 COL_PROGRESS: fm.horizontalAdvance("100% · 1,000,000 packets") + pad,
                 COL_IN: fm.horizontalAdvance("Packets out") + pad, COL_OUT: fm.horizontalAdvance("Packets out") + pad}
        names = [fm.horizontalAdvance(str(model.data(model.index(r, COL_FILE)) or "")) for r in rows]
        results = [fm.horizontalAdvance(str(model.data(model.index(r, COL_RESULT)) or "")) for r in rows]
        need_name = max([fm.horizontalAdvance("sample-capture.pcapng")] + names) + pad
        need_result = max([fm.horizontalAdvance("Will be saved as sample-capture-sanitized.pcapng")] + results) + pad
        free = self.viewport().width() - sum(fixed.values())
        if free < need_name + need_result:
            # Narrow: the progress text gives way first (its bar still shows), then the name and the result
            # share the rest, the name eliding in the middle.
            fixed[COL_PROGRESS] = fm.horizontalAdvance("Starting…") + pad
            free = self.viewport().width() - sum(fixed.values())
        name = need_name if need_name + need_result <= free else max(120, min(need_name, int(free * 0.45)))
        self._fitting = True
        try:
            for col, width in fixed.items():
                self.setColumnWidth(col, width)
            self.setColumnWidth(COL_FILE, name)
        finally:
            self._fitting = False

    def resizeEvent(self, event):
        super().resizeEvent(event)
        # A moment later: the first rows of an add resize the viewport (its scroll bar appears), and measuring
        # their words belongs in a turn of the event loop of its own, not in the add's slice or its first
        # paint (a 0 ms timer still fired in the same pass of the timers as the slice's).
        if getattr(self, "_fit_timer", None) is not None:
            self._fit_timer.start(30)

    # --- drag and drop ---------------------------------------------------------------------------
    @staticmethod
    def _local_paths(mime) -> list[str]:
        if mime is None or not mime.hasUrls():
            return []
        return [url.toLocalFile() for url in mime.urls() if url.isLocalFile()]

    def dragEnterEvent(self, event):
        if self._local_paths(event.mimeData()):
            event.acceptProposedAction()
            self._drag_active = True
            self.viewport().update()
        else:
            event.ignore()

    def dragMoveEvent(self, event):
        if self._local_paths(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragLeaveEvent(self, event):
        self._drag_active = False
        self.viewport().update()
        event.accept()

    def dropEvent(self, event):
        self._drag_active = False
        self.viewport().update()
        paths = self._local_paths(event.mimeData())
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        self.paths_dropped.emit(paths)

    # --- empty state: the drop hint --------------------------------------------------------------
    def paintEvent(self, event):
        super().paintEvent(event)
        model = self.model()
        empty = model is None or model.rowCount() == 0
        if not empty and not self._drag_active:
            return
        painter = QPainter(self.viewport())
        painter.setRenderHint(QPainter.Antialiasing)
        area = self.viewport().rect().adjusted(12, 12, -12, -12)
        accent = QColor("#2f7de1")
        if self._drag_active:
            painter.setPen(QPen(accent, 2, Qt.DashLine))
            painter.setBrush(QColor(47, 125, 225, 24))
            painter.drawRoundedRect(area, 10, 10)
        if not empty:
            painter.end()
            return
        if not self._drag_active:
            painter.setPen(QPen(QColor("#b8c2cc"), 2, Qt.DashLine))
            painter.setBrush(Qt.NoBrush)
            painter.drawRoundedRect(area, 10, 10)
        title = QFont(self.font())
        title.setPointSizeF(title.pointSizeF() * 1.35)
        title.setBold(True)
        painter.setFont(title)
        painter.setPen(QColor("#3c4650"))
        mid = area.center().y()
        painter.drawText(QRect(area.left(), mid - 34, area.width(), 30), Qt.AlignCenter,
                         "Drop capture files or folders here")
        painter.setFont(self.font())
        painter.setPen(QColor("#6b7580"))
        painter.drawText(QRect(area.left(), mid + 2, area.width(), 44), Qt.AlignHCenter | Qt.AlignTop,
                         ".pcap, .pcapng and .cap files, also gzip, zstd or lz4 compressed; folders are "
                         "searched for captures.\n"
                         "Or use File → Add Files… (Ctrl+O) or Add Folder… (Ctrl+Shift+O).")
        painter.end()
