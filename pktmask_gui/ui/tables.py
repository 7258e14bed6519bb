"""Tables that stay cheap to paint while a run goes on: the queue, the log and the summary's table.

Two costs of Qt's item views show as stalls of the window's event loop during a run, when two worker
processes keep both cores busy:

- A repaint of every visible row when the window is (de)activated or a table loses the focus
  (``CalmTableView``).
- The default delegate lays out each cell's text anew at every paint (QTextLayout, through the style sheet
  and the style), and a run repaints the visible rows several times a second: a screenful of the queue took
  6.3-9 ms here, 11-16 ms of CPU with the workers running. ``TextDelegate`` keeps each cell's elided text
  laid out (``QStaticText``, by text, width and weight) and paints it at the style's margins: 4.5 ms. It
  first checks, on sample cells, that it paints them as the style does (pixel for pixel); where not (a
  native style's own selection), and for the cells it does not handle (the focused or hovered one,
  right-to-left layouts, icons, wrapped text, several lines, a disabled view), Qt's delegate paints.
"""
from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QItemSelectionModel, QPointF, QRect, Qt
from PySide6.QtGui import (QBrush, QColor, QFont, QFontMetrics, QFontMetricsF, QImage, QPainter, QPalette,
                           QStaticText, QTextLayout, QTextOption)
from PySide6.QtWidgets import (QAbstractItemView, QApplication, QStyle, QStyledItemDelegate,
                               QStyleOptionViewItem, QTableView)

_ACTIVATION = (QEvent.WindowActivate, QEvent.WindowDeactivate)
_SELECTION_ROLES = (QPalette.Highlight, QPalette.HighlightedText, QPalette.Base, QPalette.AlternateBase,
                    QPalette.Text)


def _same_when_inactive(palette: QPalette) -> bool:
    """Whether rows look the same in an inactive window (or an unfocused view) as in an active one."""
    return all(palette.brush(QPalette.Active, role) == palette.brush(QPalette.Inactive, role)
               for role in _SELECTION_ROLES)


class CalmTableView(QTableView):
    """A table that repaints only what changes when its window is (de)activated or it takes or loses the focus.

    Qt repaints every visible row of an item view then: when the summary opens at a run's end, the queue's
    and the log's (~20 ms here) came in the same turn of the event loop as the summary's first paint; when a
    run starts, the focus leaves the controls it locks for the queue, in the turn that repaints them. Rows
    are painted inactive without the focus (the palette's Inactive group); with the same colours in both
    groups (the style sheet's), only the current cell's focus frame changes. With other colours, Qt's
    repaint stays."""

    def viewportEvent(self, event):
        if event.type() in _ACTIVATION and _same_when_inactive(self.palette()):
            return False        # (the rows are painted with the view's palette, not the viewport's)
        return super().viewportEvent(event)

    def focusOutEvent(self, event):
        if not _same_when_inactive(self.palette()):
            super().focusOutEvent(event)
            return
        current = self.currentIndex()
        if current.isValid():
            self.viewport().update(self.visualRect(current))
        event.accept()

    def focusInEvent(self, event):
        if not _same_when_inactive(self.palette()):
            super().focusInEvent(event)
            return
        # QAbstractItemView.focusInEvent less its repaints (its own of the viewport, and QWidget's of the whole
        # view, as focusOutEvent skips them: no style of ours marks a focused table's frame): the first row
        # becomes current when none is (not on a click, which sets its own), and the current cell shows the focus.
        current = self.currentIndex()
        model, selection = self.model(), self.selectionModel()
        if not current.isValid() and model is not None and selection is not None \
                and event.reason() != Qt.MouseFocusReason:
            first = self.moveCursor(QAbstractItemView.MoveNext, Qt.NoModifier)
            if first.isValid() and first.flags() & Qt.ItemIsEnabled:
                scroll = self.hasAutoScroll()
                self.setAutoScroll(False)
                selection.setCurrentIndex(first, QItemSelectionModel.NoUpdate)
                self.setAutoScroll(scroll)
                current = first
        self.setAttribute(Qt.WA_InputMethodEnabled, bool(current.isValid() and current.flags() & Qt.ItemIsEditable))
        if current.isValid():
            self.viewport().update(self.visualRect(current))


# What a cell shows: its text, its colour (None: the palette's text), bold, aligned right, its background
# (None: the view's). None: Qt's delegate paints the cell.
Look = tuple[str, QColor | None, bool, bool, QBrush | None]

# As plain ints: a Python enum's & costs microseconds, and it runs for each cell at each paint.
_FOCUS, _ENABLED, _SELECTED, _ACTIVE = (QStyle.State_HasFocus.value, QStyle.State_Enabled.value,
                                        QStyle.State_Selected.value, QStyle.State_Active.value)
_WRAP = QStyleOptionViewItem.WrapText.value
_HOVER = QStyle.State_MouseOver.value
# Qt's delegate lays these out as more than one line (U+2028), or picks another of a text's variants (U+009C)
_NOT_ONE_LINE = ("\n", "\u2028", "\x9c")
_CACHE_MAX = 4096


def _left_to_right() -> QTextOption:
    option = QTextOption()
    option.setTextDirection(Qt.LeftToRight)
    return option


# As Qt's delegate lays a cell's text out in a left-to-right view: in that direction, whatever the first strong
# character (a Hebrew or Arabic file name keeps its order).
_LEFT_TO_RIGHT = _left_to_right()


def laid_out(shown: str, font: QFont, painter, width: float) -> tuple[QStaticText, float, float, float]:
    """``shown`` laid out once for ``drawStaticText`` (left to right, as a view's text is), and its line as Qt's
    text layout measures it (glyphs from a fallback font can make a line taller or wider than the font's own
    metrics say): (the laid-out text, the line's natural width, its height, its ascent)."""
    static = QStaticText(shown)
    static.setTextFormat(Qt.PlainText)
    static.setTextOption(_LEFT_TO_RIGHT)
    static.prepare(painter.transform(), font)
    layout = QTextLayout(shown, font)
    layout.setTextOption(_LEFT_TO_RIGHT)
    layout.beginLayout()
    line = layout.createLine()
    line.setLineWidth(width)
    layout.endLayout()
    return static, line.naturalTextWidth(), line.height(), line.ascent()


class TextDelegate(QStyledItemDelegate):
    """Paints a plain-text cell as Qt's delegate does (the style's text margin, the palette's selection and
    text colours, elided in ``elide`` mode), with the elided text's layout kept from one paint to the next.

    ``look(index)`` says what the cell shows (``Look``), in one call: the default delegate asks the model
    for each role of each cell. Whether the style paints cells this way is not assumed: at the first paint,
    and again when the font, the palette or the view's style changes, a few sample cells are painted both
    ways and compared pixel for pixel; where they differ (a native style's selection, say), Qt's delegate
    paints every cell."""

    PROBES = (("Probe 1,234 · a text too long for its cell", False, False), ("12,345", True, True))

    def __init__(self, parent, look: Callable[[object], Look | None], elide=Qt.ElideRight):
        super().__init__(parent)
        self.look = look
        self.elide = elide
        self._font: QFont | None = None
        self._bold: QFont | None = None
        self._palette_key = None
        self.exact = False               # this style paints cells as _draw does (probed)
        self.margin = 3                  # QCommonStyle's text margin: PM_FocusFrameHMargin + 1
        # (text, width, height, bold, right) -> (laid-out text, its position in the cell, whether it overflows)
        self._laid_out: dict[tuple, tuple[QStaticText, float, int, bool]] = {}
        parent.installEventFilter(self)      # a new style: probe again

    def eventFilter(self, _watched, event):
        if event.type() == QEvent.StyleChange:
            self._font = None
        return False

    def paint(self, painter, option, index):
        state = option.state.value
        palette = option.palette
        if option.font != self._font or palette.cacheKey() != self._palette_key:
            self._refresh(option)
        # Qt's delegate paints the focus frame, a hovered cell, a disabled view's colours, mirrored layouts and
        # wrapped text.
        look = None
        if self.exact and not state & (_FOCUS | _HOVER) and state & _ENABLED \
                and not option.features.value & _WRAP and option.direction is Qt.LeftToRight:
            try:
                look = self.look(index)
            except Exception:   # noqa: BLE001 - (a row gone mid-change): Qt's delegate asks the model itself
                look = None
        if look is None or not isinstance(look[0], str) or any(c in look[0] for c in _NOT_ONE_LINE):
            super().paint(painter, option, index)
            return
        self._draw(painter, option.rect, palette, state, *look)

    def _draw(self, painter, rect, palette, state, text, colour, bold, right, background) -> None:
        group = QPalette.Active if state & _ACTIVE else QPalette.Inactive
        if state & _SELECTED:
            painter.fillRect(rect, palette.brush(group, QPalette.Highlight))
        elif background is not None:
            painter.fillRect(rect, background)
        if not text:
            return
        key = (text, rect.width(), rect.height(), bold, right)
        laid = self._laid_out.get(key)
        if laid is None:
            laid = self._lay_out(painter, key)
        static, x, y, overflows = laid
        painter.save()
        if overflows:
            painter.setClipRect(rect, Qt.IntersectClip)    # as the style clips a cell taller than its row
        if state & _SELECTED:
            painter.setPen(palette.color(group, QPalette.HighlightedText))
        else:
            painter.setPen(colour if colour is not None else palette.color(group, QPalette.Text))
        painter.setFont(self._bold if bold else self._font)
        painter.drawStaticText(QPointF(rect.left() + x, rect.top() + y), static)
        painter.restore()

    def _lay_out(self, painter, key):
        text, width, height, bold, right = key
        font = self._bold if bold else self._font
        metrics = QFontMetrics(font)
        room = width - 2 * self.margin
        shown = metrics.elidedText(text, self.elide, room)
        static, natural, tall, ascent = laid_out(shown, font, painter, room)
        # Where Qt's delegate puts the line (QCommonStyle, QStyle.alignedRect): centred by its whole height, on
        # the right at its natural width.
        x = self.margin + (room - natural if right else 0)
        y = int((height - int(tall)) / 2)                       # (C++'s division: towards zero)
        # The style clips the text to its cell: so do we, where its ink may reach past the cell's edge.
        ink = QFontMetricsF(font).tightBoundingRect(shown).translated(x, y + ascent)
        inside = ink.top() >= 1 and ink.bottom() <= height - 1 and ink.left() >= 1 and ink.right() <= width - 1
        laid = (static, x, y, not inside)
        if len(self._laid_out) >= _CACHE_MAX:
            self._laid_out.clear()
        self._laid_out[key] = laid
        return laid

    def _refresh(self, option) -> None:
        """A new font, palette or style: forget what was laid out, and probe the style again."""
        self._font = QFont(option.font)
        self._bold = QFont(option.font)
        self._bold.setBold(True)
        self._palette_key = option.palette.cacheKey()
        widget = option.widget
        style = widget.style() if widget is not None else QApplication.style()
        self.margin = style.pixelMetric(QStyle.PM_FocusFrameHMargin, None, widget) + 1
        self.exact = all(self._same_as_qts(option, style, *probe) for probe in self.PROBES)
        self._laid_out.clear()          # (the probes' texts)

    def _same_as_qts(self, option, style, text, right, selected) -> bool:
        """One sample cell painted by the style (as QStyledItemDelegate.paint does) and by _draw: the same?"""
        opt = QStyleOptionViewItem(option)
        height = max(option.rect.height(), QFontMetrics(option.font).height() + 4)
        opt.rect = QRect(0, 0, 120, height)
        value = (option.state.value & ~(_FOCUS | _SELECTED)) | _ENABLED | (_SELECTED if selected else 0)
        opt.state = QStyle.StateFlag(value)
        opt.text = text
        opt.features = QStyleOptionViewItem.ViewItemFeature((opt.features.value & ~_WRAP)
                                                            | QStyleOptionViewItem.HasDisplay.value)
        opt.displayAlignment = (Qt.AlignRight if right else Qt.AlignLeft) | Qt.AlignVCenter
        opt.textElideMode = self.elide
        opt.direction = Qt.LeftToRight
        ratio = option.widget.devicePixelRatioF() if option.widget is not None else 1.0
        images = []
        for ours in (False, True):
            image = QImage(int(120 * ratio), int(height * ratio), QImage.Format_ARGB32_Premultiplied)
            image.setDevicePixelRatio(ratio)
            image.fill(QColor("white"))
            painter = QPainter(image)
            if ours:
                self._draw(painter, opt.rect, opt.palette, value, text, None, False, right, None)
            else:
                style.drawControl(QStyle.CE_ItemViewItem, opt, painter, option.widget)
            painter.end()
            images.append(image)
        return images[0] == images[1]
