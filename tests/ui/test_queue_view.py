"""The window's tables repaint only what changes when the window is (de)activated or a table loses the focus
(``queue.CalmTableView``): Qt repaints every visible row then, and when the summary opens at a run's end that
came in one turn of the event loop with the summary's own first paint."""
from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QDialog
from ui_helpers import copy_in

from pktmask_gui.samplegen import generate


class PaintLog(QObject):
    """The rectangles a widget paints."""

    def __init__(self, widget):
        super().__init__()
        self.rects = []
        widget.installEventFilter(self)

    def eventFilter(self, obj, event):
        if event.type() == QEvent.Paint:
            self.rects.append(event.rect())
        return False

    def tallest(self) -> int:
        return max((r.height() for r in self.rects), default=0)


def _queue_of(window, ui_env, qtbot, files=20):
    seed = ui_env.root / "seed.pcap"
    generate(seed, packets=10, seed=3)
    window.add_paths([str(copy_in(seed, ui_env.inputs, f"f{i:02d}.pcap")) for i in range(files)])
    qtbot.waitUntil(lambda: not window.adding() and len(window.model.rows) == files)
    view = window.queue_view
    view.setFocus()
    qtbot.waitUntil(lambda: view.hasFocus() and view.currentIndex().isValid())
    qtbot.waitUntil(lambda: not view._fit_timer.isActive())      # its columns fitted (a repaint of its own)
    view.user_sized = True      # and they stay (on a loaded machine a late fit's repaint came inside a measure)
    qtbot.wait(50)
    return view


def _another_window_takes_the_focus(window, qtbot) -> None:
    """A dialog of the window is shown and becomes the active window (closed with the test)."""
    dialog = QDialog(window)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(dialog.isActiveWindow)
    qtbot.wait(50)


def test_the_queue_repaints_one_cell_when_another_window_takes_the_focus(window, ui_env, qtbot):
    view = _queue_of(window, ui_env, qtbot)
    row_height = view.rowHeight(0)
    log = PaintLog(view.viewport())
    _another_window_takes_the_focus(window, qtbot)
    # Qt's own item view repaints the whole viewport twice (focus out, deactivation): ~15 ms per screenful.
    assert view.viewport().height() > 5 * row_height
    assert log.tallest() <= row_height, [r.getRect() for r in log.rects]


def test_the_queue_repaints_when_it_looks_different_in_an_inactive_window(window, ui_env, qtbot):
    view = _queue_of(window, ui_env, qtbot)
    palette = view.palette()        # (the style sheet sets the selection's colours: the rows' base it leaves)
    palette.setColor(QPalette.Inactive, QPalette.Base, QColor("#eeeeee"))
    view.setPalette(palette)
    qtbot.wait(50)
    log = PaintLog(view.viewport())
    _another_window_takes_the_focus(window, qtbot)
    assert log.tallest() >= view.viewport().height() - 1      # the rows now show their inactive colour


def test_the_queue_repaints_its_rows_when_it_loses_the_focus_and_they_look_different(window, ui_env, qtbot):
    """Rows of an unfocused view are painted inactive: with other colours for that, every row is repainted
    when the focus moves to another widget of the window (with the same colours, one cell: the first test)."""
    view = _queue_of(window, ui_env, qtbot)
    palette = view.palette()
    palette.setColor(QPalette.Inactive, QPalette.Base, QColor("#eeeeee"))
    view.setPalette(palette)
    qtbot.wait(50)
    log = PaintLog(view.viewport())
    window.out_path.setFocus()
    qtbot.waitUntil(window.out_path.hasFocus)
    qtbot.wait(50)
    assert log.tallest() >= view.viewport().height() - 1


def test_the_queue_taking_the_focus_repaints_one_cell_and_makes_the_first_row_current(window, ui_env, qtbot):
    """When a run starts, the focus leaves the controls it locks, often for the queue: Qt's item view repaints
    every visible row then, in the turn that repaints the locked controls. With rows that look the same with
    and without the focus, one cell; the first row still becomes current, as Qt makes it."""
    view = _queue_of(window, ui_env, qtbot)
    view.selectionModel().clearCurrentIndex()
    window.out_path.setFocus()
    qtbot.waitUntil(window.out_path.hasFocus)
    qtbot.wait(50)
    assert not view.currentIndex().isValid()
    log = PaintLog(view.viewport())
    view.setFocus(Qt.TabFocusReason)
    qtbot.waitUntil(view.hasFocus)
    qtbot.wait(50)
    assert view.currentIndex().row() == 0
    assert view.viewport().height() > 5 * view.rowHeight(0)
    assert log.rects and log.tallest() <= view.rowHeight(0), [r.getRect() for r in log.rects]


def test_the_queue_repaints_its_rows_when_it_takes_the_focus_and_they_look_different(window, ui_env, qtbot):
    view = _queue_of(window, ui_env, qtbot)
    palette = view.palette()
    palette.setColor(QPalette.Inactive, QPalette.Base, QColor("#eeeeee"))
    view.setPalette(palette)
    window.out_path.setFocus()
    qtbot.waitUntil(window.out_path.hasFocus)
    qtbot.wait(50)
    log = PaintLog(view.viewport())
    view.setFocus(Qt.TabFocusReason)
    qtbot.waitUntil(view.hasFocus)
    qtbot.wait(50)
    assert log.tallest() >= view.viewport().height() - 1
