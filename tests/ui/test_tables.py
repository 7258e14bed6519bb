"""``tables.TextDelegate`` paints a table's text cells as Qt's own delegate does, pixel for pixel, while it keeps
each cell's laid-out text from one paint to the next (the default delegate lays it out anew at each paint,
which made a screenful of the queue cost 6.3-9 ms during a run)."""
from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QAbstractTableModel, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetrics, QStaticText
from PySide6.QtWidgets import QProxyStyle, QStyle, QStyledItemDelegate

from pktmask_gui.ui.resources import style_sheet
from pktmask_gui.ui.tables import CalmTableView, TextDelegate

RED, GREEN = QColor("#b71c1c"), QColor("#1b7f3b")
WARNING = QBrush(QColor("#fff6e0"))
# (text, colour, bold, aligned right, background): one row per case the window's tables have
ROWS = [
    ("capture.pcap", None, False, False, None),
    ("Failed", RED, True, False, None),
    ("1,234,567", None, False, True, None),
    ("a-very-long-capture-file-name-that-the-column-cannot-hold-in-full-at-any-width.pcapng", GREEN, False,
     False, None),
    ("ελληνικά-名前 · 5 packets", None, False, False, WARNING),
    ("", RED, False, False, WARNING),
    ("12", GREEN, True, True, None),
    ("Stopping; removing its temp files…", None, False, False, None),
    ("תיק 2024-05.pcap", None, False, False, None),          # right-to-left words keep the view's direction
    ("ملف_01.pcapng", None, False, True, None),
    ("first\u2028second", None, False, False, None),        # Qt's delegate makes two lines of it
]
COLUMNS = 3


class Cells(QAbstractTableModel):
    """The same words through Qt's roles (for Qt's delegate) and through ``look`` (for ours)."""

    def __init__(self, rows):
        super().__init__()
        self.rows = list(rows)
        self.bold = QFont()
        self.bold.setBold(True)

    def rowCount(self, parent=None):
        return len(self.rows)

    def columnCount(self, parent=None):
        return COLUMNS

    def data(self, index, role=Qt.DisplayRole):
        text, colour, bold, right, background = self.rows[index.row()]
        if role == Qt.DisplayRole:
            return text
        if role == Qt.ForegroundRole and colour is not None:
            return QBrush(colour)
        if role == Qt.FontRole and bold:
            return self.bold
        if role == Qt.TextAlignmentRole and right:
            return int(Qt.AlignRight | Qt.AlignVCenter)
        if role == Qt.BackgroundRole:
            return background
        return None

    def look(self, index):
        return self.rows[index.row()]


def _table(qtbot, model, elide):
    view = CalmTableView()
    view.setObjectName("queueView")         # the style sheet's selection colours apply to it
    view.setStyleSheet(style_sheet())
    qtbot.addWidget(view)
    view.setModel(model)
    view.setAlternatingRowColors(True)
    view.setShowGrid(False)
    view.setWordWrap(False)
    view.setTextElideMode(elide)
    view.verticalHeader().hide()
    for col, width in enumerate((150, 260, 90)):
        view.setColumnWidth(col, width)
    view.resize(560, 300)
    view.show()
    qtbot.waitExposed(view)
    view.selectRow(1)
    view.selectRow(4)           # the current cell has the focus frame: Qt's delegate paints that one
    view.setFocus()
    qtbot.waitUntil(view.hasFocus)
    return view


def _painted_by(view, delegate):
    view.setItemDelegate(delegate)
    view.viewport().repaint()
    return view.viewport().grab().toImage()


@pytest.mark.parametrize("elide", [Qt.ElideRight, Qt.ElideMiddle])
def test_text_cells_look_as_qts_delegate_paints_them(qtbot, elide):
    model = Cells(ROWS)
    view = _table(qtbot, model, elide)
    qts = _painted_by(view, QStyledItemDelegate(view))
    ours = TextDelegate(view, model.look, elide)
    assert _painted_by(view, ours) == qts
    assert len(ours._laid_out) >= 10        # it painted the cells itself (the text of every visible one)

    # New words, a narrower column and a larger font: what is laid out follows, still as Qt paints it.
    model.rows[2] = ("987,654,321", None, False, True, None)
    model.dataChanged.emit(model.index(2, 0), model.index(2, COLUMNS - 1))
    view.setColumnWidth(1, 120)
    font = QFont(view.font())
    font.setPointSizeF(font.pointSizeF() * 1.3)
    view.setFont(font)
    qts = _painted_by(view, QStyledItemDelegate(view))
    assert _painted_by(view, ours) == qts


class WiderMargins(QProxyStyle):
    """A style with wider text margins than Fusion's: the delegate takes the style's."""

    def pixelMetric(self, metric, option=None, widget=None):
        if metric == QStyle.PM_FocusFrameHMargin:
            return 6
        return super().pixelMetric(metric, option, widget)


class FramedSelection(QProxyStyle):
    """A style that frames a selected cell (as native styles draw their own selection): not what the delegate
    paints, so Qt's delegate paints every cell."""

    def drawPrimitive(self, element, option, painter, widget=None):
        super().drawPrimitive(element, option, painter, widget)
        if element == QStyle.PE_PanelItemViewItem and option.state & QStyle.State_Selected:
            painter.save()
            painter.setPen(QColor("#2f7de1"))
            painter.drawRect(option.rect.adjusted(0, 0, -1, -1))
            painter.restore()


@pytest.mark.parametrize("style, exact", [(WiderMargins, True), (FramedSelection, False)],
                         ids=["wider margins", "framed selection"])
def test_other_styles_are_probed_and_followed(qtbot, style, exact):
    model = Cells(ROWS)
    view = _table(qtbot, model, Qt.ElideMiddle)
    view.setStyleSheet("")
    own = style("Fusion")
    own.setParent(view)             # a widget does not own its style: deleted with the view, not before
    view.setStyle(own)
    qts = _painted_by(view, QStyledItemDelegate(view))
    ours = TextDelegate(view, model.look, Qt.ElideMiddle)
    assert _painted_by(view, ours) == qts
    assert ours.exact is exact
    assert bool(ours._laid_out) is exact       # it painted the cells itself only where it paints them as Qt


@pytest.mark.parametrize("height", [12, 15])
def test_rows_lower_than_a_line_of_text(qtbot, height):
    """The text's line is taller than the row: placed and clipped to its cell as the style does."""
    model = Cells(ROWS)
    view = _table(qtbot, model, Qt.ElideRight)
    view.verticalHeader().setDefaultSectionSize(height)
    qts = _painted_by(view, QStyledItemDelegate(view))
    ours = TextDelegate(view, model.look, Qt.ElideRight)
    assert _painted_by(view, ours) == qts
    assert ours._laid_out


def test_wrapped_text_is_left_to_qts_delegate(qtbot):
    model = Cells(ROWS)
    view = _table(qtbot, model, Qt.ElideRight)
    view.setWordWrap(True)
    view.verticalHeader().setDefaultSectionSize(40)
    qts = _painted_by(view, QStyledItemDelegate(view))
    ours = TextDelegate(view, model.look, Qt.ElideRight)
    assert _painted_by(view, ours) == qts
    assert ours.exact and not ours._laid_out


def test_the_queue_looks_as_qts_delegate_paints_it(window, ui_env, qtbot):
    from ui_helpers import copy_in

    from pktmask_gui.samplegen import generate

    seed = ui_env.root / "seed.pcap"
    generate(seed, packets=10, seed=3)
    names = ["a.pcap", "a-long-name-that-the-file-column-must-elide-in-the-middle-of-it-somewhere.pcap"]
    window.add_paths([str(copy_in(seed, ui_env.inputs, name)) for name in names * 3])
    qtbot.waitUntil(lambda: not window.adding() and len(window.model.rows) == 2)
    window.queue_view.selectRow(1)
    view = window.queue_view
    progress = view.itemDelegateForColumn(3)
    ours = [view.itemDelegateForColumn(col) for col in range(7)]
    view.viewport().repaint()
    mine = view.viewport().grab().toImage()
    qts = QStyledItemDelegate(view)
    for col in (0, 1, 2, 4, 5, 6):
        view.setItemDelegateForColumn(col, qts)
    view.setItemDelegateForColumn(6, ResultEnd(view))
    view.viewport().repaint()
    assert view.viewport().grab().toImage() == mine
    assert progress is ours[3] and isinstance(ours[0], TextDelegate)


class ResultEnd(QStyledItemDelegate):
    """Qt's delegate with the Result column's eliding (its start always reads)."""

    def initStyleOption(self, option, index):
        super().initStyleOption(option, index)
        option.textElideMode = Qt.ElideRight


@pytest.mark.parametrize("height", [26, 27, 31])
def test_the_progress_bars_words_sit_where_qts_draw_text_puts_them(qtbot, height):
    """The Progress column keeps its words laid out too: placed as QPainter.drawText(rect, AlignCenter) places
    them, at even and odd heights, with an ellipsis ("Starting…") and compacted words ("37%")."""
    from PySide6.QtCore import QRect
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtWidgets import QStyleOptionViewItem

    from pktmask_gui.ui.queue import FAILED, RUNNING, ProgressDelegate, QueueModel, QueueRow

    view = CalmTableView()
    qtbot.addWidget(view)
    model = QueueModel()
    view.setModel(model)
    delegate = ProgressDelegate(view)
    rows = [QueueRow(1, Path("a.pcap"), status=RUNNING),
            QueueRow(2, Path("b.pcap"), status=RUNNING, phase="process", bytes_done=37, bytes_total=100,
                     packets_done=123456),
            QueueRow(3, Path("c.pcap"), status=FAILED)]
    model.insert(rows)
    for i, row in enumerate(rows):
        option = QStyleOptionViewItem()
        option.initFrom(view.viewport())
        option.rect = QRect(0, 0, 170, height)
        option.font = view.font()
        images = []
        for ours in (True, False):
            image = QImage(170, height, QImage.Format_ARGB32_Premultiplied)
            image.fill(QColor("white"))
            painter = QPainter(image)
            if ours:
                delegate.paint(painter, option, model.index(i, 3))
            else:                                   # the bar as the delegate paints it, the words by drawText
                blank = ProgressDelegate(view)
                blank._lay_out = lambda p, r, key: (QStaticText(""), 0.0, 0.0)
                blank.paint(painter, option, model.index(i, 3))
                rect = option.rect.adjusted(3, 4, -3, -4)
                painter.setPen(ProgressDelegate.FAILED_TEXT if row.status == FAILED else ProgressDelegate.TEXT)
                text = ProgressDelegate.text(row)
                metrics = QFontMetrics(option.font)
                if metrics.horizontalAdvance(text) > rect.width() - 6:
                    text = ProgressDelegate.text(row, compact=True)
                painter.setFont(option.font)
                painter.drawText(rect, Qt.AlignCenter, metrics.elidedText(text, Qt.ElideRight, rect.width() - 4))
            painter.end()
            images.append(image)
        assert images[0] == images[1], ProgressDelegate.text(row)
