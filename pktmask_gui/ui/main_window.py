"""The main window: queue captures, pick operations and an output folder, run, watch, cancel, summarise.

The window holds the widgets, menus and dialogs; the run itself (which rows start on which job slot,
their results, the end of the run, cancel) belongs to the run controller (run_controller.py), which the
window asks and listens to. The UI thread only handles names, sizes and signals: it never reads or writes
capture data. Closing the window (or Ctrl+Q, or ``aboutToQuit``) while jobs run goes through
``shutdown``: cancel, wait bounded while showing it, then close.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter, deque
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, QSize, Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (QApplication, QFileDialog, QHBoxLayout, QLabel, QMainWindow, QMenu,
                               QMessageBox, QProgressBar, QProgressDialog, QPushButton, QSizePolicy, QSplitter,
                               QStyle, QToolBar, QVBoxLayout, QWidget)

from .. import __version__
from .. import settings as settings_mod
from . import handoff
from .app import settle_heap
from .format import human_duration, human_size, plural
from .log_panel import LogPanel
from .queue import CANCELLED, CANCELLING, DONE, FAILED, FINISHED, QUEUED, RUNNING, QueueModel, QueueView
from .resources import app_icon, style_sheet
from .presets import install as install_presets
from .run_controller import Run, RunController
from .run_options import NoticeBar, RunOptions
from .settings_dialog import SettingsDialog
from .summary import SummaryDialog

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 10.0
ADD_SLICE_S = 0.008         # adding a large folder: at most this long at a time, then the window repaints
ADD_FIRST_MIN = 32          # ...but a first slice of a few files takes them all (add_paths returns them)
MAX_RECENT = 8
SUMMARY_SHOW_MS = 40       # the summary is shown this long after it is made (see _summary_show)
CAPTURE_FILTER = ("Packet captures (*.pcap *.pcapng *.cap *.gz *.zst *.zstd *.lz4);;"
                  "Compressed captures (*.gz *.zst *.zstd *.lz4);;All files (*)")


def ui_state() -> QSettings:
    """Window geometry, last folders and similar UI state: an ini file beside the engine's settings,
    so that PKTMASK_CONFIG_DIR / XDG_CONFIG_HOME move both (tests never touch a user's files)."""
    return QSettings(str(settings_mod.config_dir() / "ui-state.ini"), QSettings.IniFormat)


class MainWindow(QMainWindow):
    def __init__(self):
        super().__init__()
        self.setObjectName("mainWindow")
        self.setWindowTitle("PktMask GUI")
        self.setWindowIcon(app_icon())
        app = QApplication.instance()
        if app is not None and not app.styleSheet():
            app.setStyleSheet(style_sheet())
        self.model = QueueModel(self)
        self.controller = RunController(self.model, settings_mod.load_settings(), self)
        self.summary_dialog: SummaryDialog | None = None
        self._shut_down = False

        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self._build_central()
        self._build_status_bar()
        install_presets(self)           # the Presets menu, the options they set, Tools → Reveal…
        self._attach_log()

        self.controller.started.connect(self._on_run_started)
        self._last_remembered = ""                # the output folder last put first in the recent list
        self._adds: deque = deque()               # model.scan iterators still being added (add_paths)
        self._added, self._refused = 0, []
        # The next slice of an add comes from a timer, not a posted call: a chain of posted calls goes before
        # every timer (Qt runs timers after the posted events), so other timers would wait for two slices.
        self._add_timer = QTimer(self)
        self._add_timer.setSingleShot(True)
        self._add_timer.setInterval(0)
        self._add_timer.timeout.connect(self._add_slice)
        self._warm_due = QTimer(self)
        self._warm_due.setSingleShot(True)
        self._warm_due.setInterval(0)
        self._warm_due.timeout.connect(lambda: self.controller.warm())
        self._actions_due = QTimer(self)          # while a run goes on: the actions follow at most 10x a second
        self._actions_due.setSingleShot(True)
        self._actions_due.setInterval(100)
        self._actions_due.timeout.connect(self._update_actions)
        self.controller.changed.connect(self._run_changed)
        self.controller.row_finished.connect(self._on_row_finished)
        self.controller.cancelling.connect(
            lambda words: self.statusBar().showMessage(f"Cancelling: {words}…", 5000))
        self.controller.finished.connect(self._on_run_finished)
        self.model.rowsInserted.connect(self._schedule_actions)
        self.model.rowsRemoved.connect(self._schedule_actions)
        self.queue_view.selectionModel().selectionChanged.connect(self._update_actions)

        self.clock = QTimer(self)
        self.clock.setInterval(500)
        self.clock.timeout.connect(self._update_overall)
        # At the run's end the summary opens in two more turns of the event loop, the dialog made in one, shown
        # (painted) in another: the last result, the new dialog and its first paint are three short pieces of
        # work, not one long one. The show waits SUMMARY_SHOW_MS: the work Qt defers from the making (layout
        # and style requests) runs in the turns between; shown at once, it ran in the show's turn, and the
        # dialog was then painted twice (~45 ms in one turn, here, against ~20 ms).
        self._summary_due = QTimer(self)
        self._summary_due.setSingleShot(True)
        self._summary_due.setInterval(0)
        self._summary_due.timeout.connect(lambda: self._make_summary() and self._summary_show.start())
        self._summary_show = QTimer(self)
        self._summary_show.setSingleShot(True)
        self._summary_show.setInterval(SUMMARY_SHOW_MS)
        self._summary_show.timeout.connect(lambda: self.summary_dialog is not None and self.summary_dialog.show())

        self._restore_state()
        self._update_actions()
        self._update_overall()
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self._on_about_to_quit)
        settle_heap()

    @property
    def settings(self) -> settings_mod.Settings:
        """The settings in force (the run controller starts each job with a copy of them)."""
        return self.controller.settings

    @property
    def state(self) -> QSettings:
        """A fresh QSettings per use: written to disk as soon as it goes away, so that no object lives on
        to write late (a late write would recreate a config folder that a test or script removed)."""
        return ui_state()

    # ============================================================================ construction ===
    def _action(self, text, slot, shortcut=None, tip="", icon=None) -> QAction:
        action = QAction(text, self)
        if icon is not None:
            action.setIcon(self.style().standardIcon(icon))
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(f"{tip} ({action.shortcut().toString(QKeySequence.NativeText)})"
                              if shortcut is not None else tip)
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        S = QStyle
        self.act_add_files = self._action("Add &Files…", self.add_files_dialog, QKeySequence.Open,
                                          "Queue capture files", S.SP_FileIcon)
        self.act_add_folder = self._action("Add F&older…", self.add_folder_dialog, "Ctrl+Shift+O",
                                           "Queue every capture in a folder and its subfolders", S.SP_DirIcon)
        self.act_open_output = self._action("Open &Output Folder", self.open_output_folder, "Ctrl+Shift+E",
                                            "Open the folder where the outputs are saved", S.SP_DirOpenIcon)
        self.act_quit = self._action("&Quit", self.close, "Ctrl+Q", "Quit PktMask GUI")
        self.act_remove = self._action("&Remove from Queue", self.remove_selected, QKeySequence.Delete,
                                       "Remove the selected files from the queue (not from the disk)",
                                       S.SP_TrashIcon)
        self.act_clear = self._action("&Clear Finished", self.clear_finished, "Ctrl+Shift+K",
                                      "Remove every finished, failed or cancelled row from the queue",
                                      S.SP_DialogResetButton)
        self.act_settings = self._action("&Settings…", self.open_settings, "Ctrl+,",
                                         "Thresholds, temp folder, parallel jobs, naming and operation options",
                                         S.SP_FileDialogDetailedView)
        self.act_start = self._action("&Start", self.start, "Ctrl+Return",
                                      "Process every queued file with the chosen operations", S.SP_MediaPlay)
        self.act_cancel = self._action("&Cancel All", self.cancel_all, "Ctrl+.",
                                       "Stop every running file and drop the queued ones; nothing partial is kept",
                                       S.SP_MediaStop)
        self.act_summary = self._action("Show Last &Summary", self.show_summary, "Ctrl+R",
                                        "Show the summary of the last batch")
        self.act_about = self._action("&About PktMask GUI", self.show_about, None, "Versions and what this is")
        self.act_about_qt = self._action("About &Qt", QApplication.aboutQt, None, "")

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addAction(self.act_add_files)
        file_menu.addAction(self.act_add_folder)
        file_menu.addSeparator()
        file_menu.addAction(self.act_open_output)
        self.recent_menu = file_menu.addMenu("Recent Output &Folders")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addSeparator()
        file_menu.addAction(self.act_quit)
        edit_menu = bar.addMenu("&Edit")
        edit_menu.addAction(self.act_remove)
        edit_menu.addAction(self.act_clear)
        edit_menu.addSeparator()
        edit_menu.addAction(self.act_settings)
        run_menu = bar.addMenu("&Run")
        run_menu.addAction(self.act_start)
        run_menu.addAction(self.act_cancel)
        run_menu.addSeparator()
        run_menu.addAction(self.act_summary)
        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self.act_about)
        help_menu.addAction(self.act_about_qt)

    def _build_toolbar(self) -> None:
        tb = QToolBar("Main toolbar")
        tb.setObjectName("mainToolbar")
        tb.setMovable(False)
        tb.setIconSize(QSize(20, 20))
        tb.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        for action in (self.act_add_files, self.act_add_folder):
            tb.addAction(action)
        tb.addSeparator()
        tb.addAction(self.act_remove)
        tb.addAction(self.act_clear)
        spacer = QWidget()
        spacer.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        tb.addWidget(spacer)
        tb.addAction(self.act_settings)
        self.addToolBar(tb)

    def _build_central(self) -> None:
        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(8, 6, 8, 6)
        outer.setSpacing(6)

        # Operations (one checkbox per stage the engine offers), the output folder, the notice bar.
        self.options = RunOptions(self.settings.output_suffix)
        self.options.changed.connect(self._output_mode_changed)
        self.options.folder_chosen.connect(lambda folder: self.state.setValue("recent/outputDir", folder))
        self.op_boxes = self.options.op_boxes
        self.out_beside, self.out_folder = self.options.out_beside, self.options.out_folder
        self.out_path, self.out_browse = self.options.out_path, self.options.out_browse
        outer.addWidget(self.options)
        self.notice = NoticeBar()
        self.notice_text = self.notice.text
        outer.addWidget(self.notice)

        # Queue (also the drop area) over the log panel.
        self.queue_view = QueueView()
        self.queue_view.setModel(self.model)
        self.queue_view.setup_columns()
        self.queue_view.paths_dropped.connect(self.add_paths)
        self.queue_view.customContextMenuRequested.connect(self._queue_menu)
        self.queue_view.doubleClicked.connect(lambda index: self._row_activated(self.model.rows[index.row()]))
        self.log_panel = LogPanel()
        self.splitter = QSplitter(Qt.Vertical)
        self.splitter.setObjectName("mainSplitter")
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(self.queue_view)
        self.splitter.addWidget(self.log_panel)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([360, 200])
        outer.addWidget(self.splitter, 1)

        # Overall progress and the run buttons.
        bottom = QHBoxLayout()
        bottom.setSpacing(8)
        self.overall = QProgressBar()
        self.overall.setObjectName("overallProgress")
        self.overall.setRange(0, 1000)
        self.overall.setTextVisible(True)
        self.overall.setFormat("")
        self.overall.setMinimumWidth(160)
        self.time_label = QLabel("")
        self.time_label.setObjectName("timeLabel")
        self.time_label.setMinimumWidth(200)
        self.open_button = QPushButton(self.style().standardIcon(QStyle.SP_DirOpenIcon), "Open Output Folder")
        self.open_button.setToolTip(self.act_open_output.toolTip())
        self.open_button.clicked.connect(self.open_output_folder)
        self.cancel_button = QPushButton(self.style().standardIcon(QStyle.SP_MediaStop), "Cancel")
        self.cancel_button.setObjectName("cancelButton")
        self.cancel_button.setToolTip(self.act_cancel.toolTip())
        self.cancel_button.clicked.connect(self.cancel_all)
        self.start_button = QPushButton(self.style().standardIcon(QStyle.SP_MediaPlay), "Start")
        self.start_button.setObjectName("startButton")
        self.start_button.setToolTip(self.act_start.toolTip())
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        bottom.addWidget(self.overall, 1)
        bottom.addWidget(self.time_label)
        bottom.addWidget(self.open_button)
        bottom.addWidget(self.cancel_button)
        bottom.addWidget(self.start_button)
        outer.addLayout(bottom)
        self.setCentralWidget(central)
        self.setAcceptDrops(True)

    def _build_status_bar(self) -> None:
        self.counts_label = QLabel("")
        self.counts_label.setObjectName("countsLabel")
        self.statusBar().addPermanentWidget(self.counts_label)
        self.statusBar().showMessage("Ready. Drop captures or folders on the queue to begin.")

    def _attach_log(self) -> None:
        # The level the engine's loggers let through is the app's to set (app.log_everything), not a widget's.
        logging.getLogger("pktmask_gui").addHandler(self.log_panel.handler)

    def _detach_log(self) -> None:
        logging.getLogger("pktmask_gui").removeHandler(self.log_panel.handler)

    # ================================================================================ UI state ===
    def _restore_state(self) -> None:
        s = self.state
        geometry = s.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            screen = QApplication.primaryScreen()
            avail = screen.availableGeometry() if screen is not None else None
            width, height = 1240, 760      # the queue's columns read in full at 1280x800
            if avail is not None and avail.width() > 0:
                width = min(width, int(avail.width() * 0.97))
                height = min(height, int(avail.height() * 0.92))
            self.resize(width, height)
        self.setMinimumSize(900, 580)
        splitter = s.value("window/splitter")
        if isinstance(splitter, QByteArray) and not splitter.isEmpty():
            self.splitter.restoreState(splitter)
        checked = s.value("run/operations")
        if isinstance(checked, str):
            checked = [checked] if checked else []
        if isinstance(checked, list):
            self.options.set_operations(checked)
        self.out_path.setText(str(s.value("run/outputFolder", "") or ""))
        self.options.last_browse_dir = self._last_dir("recent/outputDir")
        self.log_panel.last_save_dir = str(s.value("recent/logDir", "") or "")
        if s.value("run/outputMode", "beside") == "folder":
            self.out_folder.setChecked(True)
        level = s.value("log/level")
        if level is not None:
            for i in range(self.log_panel.filter_box.count()):
                if str(self.log_panel.filter_box.itemData(i)) == str(level):
                    self.log_panel.filter_box.setCurrentIndex(i)
        self._output_mode_changed()

    def _save_state(self) -> None:
        s = self.state
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/splitter", self.splitter.saveState())
        s.setValue("run/operations", [n for n, b in self.op_boxes.items() if b.isChecked()])
        s.setValue("run/outputMode", "folder" if self.out_folder.isChecked() else "beside")
        s.setValue("run/outputFolder", self.out_path.text())
        s.setValue("log/level", self.log_panel.filter_box.currentData())
        s.setValue("recent/logDir", self.log_panel.last_save_dir)
        s.sync()

    def _list_value(self, key: str) -> list[str]:
        value = self.state.value(key)
        if isinstance(value, str):
            return [value] if value else []
        return [str(v) for v in value] if isinstance(value, list) else []

    def recent_outputs(self) -> list[str]:
        return self._list_value("recent/outputs")

    def _remember_output_dir(self, folder: Path) -> None:
        if self._last_remembered == str(folder):
            return                  # a batch's files share their folder: one write of the settings file
        self._last_remembered = str(folder)
        items = [str(folder)] + [p for p in self.recent_outputs() if p != str(folder)]
        self.state.setValue("recent/outputs", items[:MAX_RECENT])

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.recent_outputs()
        for i, folder in enumerate(recent):
            action = self.recent_menu.addAction(f"&{i + 1}  {folder}" if i < 9 else folder)
            action.setEnabled(Path(folder).is_dir())
            action.triggered.connect(lambda _checked=False, f=folder: self._open_folder(Path(f)))
        if not recent:
            empty = self.recent_menu.addAction("No outputs yet")
            empty.setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear Menu", lambda: self.state.setValue("recent/outputs", []))

    def _last_dir(self, key: str) -> str:
        value = str(self.state.value(key, "") or "")
        return value if value and Path(value).is_dir() else str(Path.home())

    # =============================================================================== queueing ===
    def add_files_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add Capture Files", self._last_dir("recent/addDir"),
                                                CAPTURE_FILTER)
        if files:
            self.state.setValue("recent/addDir", str(Path(files[0]).parent))
            self.add_paths(files)

    def add_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a Folder of Captures", self._last_dir("recent/addDir"))
        if folder:
            self.state.setValue("recent/addDir", str(Path(folder).parent))
            self.add_paths([folder])

    def add_paths(self, paths) -> tuple[int, list[tuple[str, str]]]:
        """Queue captures named or found under ``paths``; refuse the rest with a visible reason.

        A large folder is queued a slice at a time (``ADD_SLICE_S``), so that the window stays responsive;
        ``adding()`` says whether some is still to come. Returns (number queued, [(name, reason), ...]
        refused) by the first slice (all of a small folder).
        """
        self._adds.append(self.model.scan(paths))
        if len(self._adds) > 1:
            return 0, []                    # queued after the add going on
        return self._add_slice(minimum=ADD_FIRST_MIN)

    def adding(self) -> bool:
        return bool(self._adds)

    def is_idle(self) -> bool:
        """Nothing runs, nothing is being added, no summary is about to open."""
        return self.controller.is_idle() and not self._adds and not self._summary_due.isActive() \
            and not self._summary_show.isActive()

    def _add_slice(self, minimum: int = 1) -> tuple[int, list[tuple[str, str]]]:
        added, refused = [], []
        deadline = time.monotonic() + ADD_SLICE_S
        while self._adds and self.model.take(self._adds[0], added, refused, deadline, minimum):
            self._adds.popleft()
        self._added += len(added)
        self._refused += refused
        if self._adds:
            self.statusBar().showMessage(f"Adding files… {plural(self._added, 'file')} queued so far.")
            self._add_timer.start()
            return len(added), refused
        total, all_refused = self._added, self._refused
        self._added, self._refused = 0, []
        if all_refused:
            self._show_refused(all_refused)
        else:
            self.notice.hide()
        if total:
            self.statusBar().showMessage(f"Queued {plural(total, 'file')}.", 5000)
            self.controller.fill_slots()   # a run going on takes in what was just queued
            # Files are queued: the worker processes start while the user looks (once the add is done, at a
            # turn of the event loop of its own: their start-up competes for the CPU and the GIL).
            self._warm_due.start()
        self._update_actions()
        return len(added), refused

    def _show_refused(self, refused) -> None:
        for name, reason in refused:
            self.log_panel.add_message(logging.WARNING, f"Not queued: {reason}.", job=name)
        if len(refused) == 1:
            name, reason = refused[0]
            text = f"<b>{_esc(name)}</b> was not queued: {_esc(reason)}."
        else:
            shown = ", ".join(f"<b>{_esc(n)}</b> ({_esc(r)})" for n, r in refused[:4])
            more = f" and {len(refused) - 4} more (see the log)" if len(refused) > 4 else ""
            text = f"{len(refused)} items were not queued: {shown}{more}."
        self.notice.show_html(text)
        self.statusBar().showMessage(f"{plural(len(refused), 'item')} not queued; see the notice above the queue.",
                                     8000)

    def remove_selected(self) -> None:
        rows = self.controller.release([r for r in self._selected_rows() if r.status not in (RUNNING, CANCELLING)])
        self.model.remove_rows([r for r in rows if r.status not in (RUNNING, CANCELLING)])
        self._update_actions()

    def clear_finished(self) -> None:
        self.model.remove_rows([r for r in self.model.rows if r.status in FINISHED])
        self._update_actions()

    def _selected_rows(self):
        indexes = self.queue_view.selectionModel().selectedRows()
        return [self.model.rows[i.row()] for i in sorted(indexes, key=lambda i: i.row())]

    def _queue_menu(self, pos) -> None:
        index = self.queue_view.indexAt(pos)
        if index.isValid() and not self.queue_view.selectionModel().isRowSelected(index.row()):
            self.queue_view.selectRow(index.row())
        rows = self._selected_rows()
        if not rows:
            return
        menu = QMenu(self)
        cancellable = [r for r in rows if r.status in (QUEUED, RUNNING)]
        act = menu.addAction(self.style().standardIcon(QStyle.SP_MediaStop),
                             "Cancel" if len(cancellable) <= 1 else f"Cancel {len(cancellable)} Files")
        act.setEnabled(bool(cancellable))
        act.triggered.connect(lambda: [self.cancel_row(r) for r in cancellable])
        removable = [r for r in rows if r.status not in (RUNNING, CANCELLING)]
        act = menu.addAction(self.style().standardIcon(QStyle.SP_TrashIcon), "Remove from Queue")
        act.setEnabled(bool(removable))
        act.triggered.connect(self.remove_selected)
        again = [r for r in rows if r.status in FINISHED]
        act = menu.addAction("Queue Again")
        act.setEnabled(bool(again))
        act.triggered.connect(lambda: self._requeue(again))
        menu.addSeparator()
        done = [r for r in rows if r.status == DONE and r.result is not None and r.result.output]
        output = Path(done[0].result.output) if done else None
        handoff.add_output_actions(menu, self, output, self.settings, self.open_settings,
                                   lambda: self.inspect_result(done[0].result))
        menu.addSeparator()
        act = menu.addAction("Open Input Folder")
        act.triggered.connect(lambda: self._open_folder(rows[0].path.parent))
        act = menu.addAction("Copy Path")
        act.triggered.connect(lambda: QApplication.clipboard().setText("\n".join(str(r.path) for r in rows)))
        menu.exec(self.queue_view.viewport().mapToGlobal(pos))

    def _requeue(self, rows) -> None:
        self.model.requeue(rows)
        self.controller.fill_slots()
        self._update_actions()

    # ================================================================================ running ===
    def selected_operations(self) -> list[str]:
        return self.options.selected_operations()

    def output_dir(self) -> Path | None:
        return self.options.output_dir()

    def start(self) -> bool:
        """Start the queued files. Returns False (and says why) when nothing can start."""
        if self.controller.closing:
            return False
        ops = self.selected_operations()
        if not ops:
            self._warn("Start", "Choose at least one operation (Remove Dupes, Anonymize IPs, …) first.")
            return False
        if not any(r.status == QUEUED for r in self.model.rows):
            self.statusBar().showMessage("Nothing is queued. Drop captures or folders on the queue first.", 6000)
            return False
        problems = self.settings.validate()
        if problems:
            box = QMessageBox(QMessageBox.Warning, "Start", "The settings need a correction before files can run:\n\n"
                              + "\n".join(f"• {p}" for p in problems), QMessageBox.Ok, self)
            fix = box.addButton("Open Settings…", QMessageBox.AcceptRole)
            box.exec()
            if box.clickedButton() is fix:
                self.open_settings()
            return False
        output_dir = None
        if self.out_folder.isChecked():
            output_dir = self.output_dir()
            if output_dir is None:
                self._warn("Start", "Choose the output folder, or pick “Beside each input”.")
                return False
            try:
                output_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self._warn("Start", f"The output folder {output_dir} cannot be created: {exc.strerror or exc}.")
                return False
            if not os.access(output_dir, os.W_OK | os.X_OK):
                self._warn("Start", f"The output folder {output_dir} is not writable.")
                return False
        self.controller.start(ops, output_dir)
        self._update_actions()
        return True

    def _on_run_started(self, run: Run, what: str) -> None:
        self._summary_due.stop()
        self._summary_show.stop()
        if self.summary_dialog is not None:
            self.summary_dialog.close()
        self.clock.start()
        self._update_overall()          # "Elapsed 0:00", not the queue's words until the clock's first tick
        self.statusBar().showMessage(f"Running: {what}. Outputs go "
                                     + (f"to {run.output_dir}." if run.output_dir else "beside each input."))

    def _on_row_finished(self, row) -> None:
        if row.result.output:
            self._remember_output_dir(Path(row.result.output).parent)

    def _on_run_finished(self, run: Run) -> None:
        self.log_panel.take_pending()           # every line of the run is in the panel when it ends
        self.clock.stop()
        self._update_overall(finished=run)
        if not run.results:
            return
        ok, failed, _cancelled = run.counts()
        self.statusBar().showMessage(f"Finished: {run.outcome()}.", 15000)
        if not self.controller.closing and (ok or failed):
            self._summary_due.start()
        self._update_actions()

    def cancel_all(self) -> None:
        self.controller.cancel_all()

    def cancel_row(self, row) -> None:
        self.controller.cancel_row(row)

    # ============================================================================ presentation ===
    def _update_overall(self, finished: Run | None = None, queued: int | None = None) -> None:
        run = self.controller.run
        if run is None:
            if finished is not None:
                self.overall.setValue(1000)
                self.overall.setFormat("Finished")
                self.time_label.setText(f"Finished in {human_duration(finished.elapsed())}")
            elif not self.model.rows:
                self.overall.setValue(0)
                self.overall.setFormat("")
                self.time_label.setText("Drop captures to begin")
            else:
                if queued is None:
                    queued = sum(r.status == QUEUED for r in self.model.rows)
                if queued:
                    self.overall.setValue(0)
                    self.overall.setFormat("")
                    size = sum(r.size for r in self.model.rows if r.status == QUEUED)
                    self.time_label.setText(f"{plural(queued, 'file')} queued ({human_size(size)})")
            return
        fraction, finished_n, files = self.controller.progress()
        self.overall.setValue(int(fraction * 1000))
        self.overall.setFormat(f"{finished_n} of {files} files · {fraction * 100:.0f}%")
        elapsed = run.elapsed()
        text = f"Elapsed {human_duration(elapsed)}"
        if fraction > 0.01 and elapsed > 1.0:
            left = elapsed * (1.0 - fraction) / fraction
            text += f" · about {human_duration(left)} left"
        elif fraction < 1.0:
            text += " · estimating…"
        self.time_label.setText(text)

    def _update_counts(self, by: Counter | None = None) -> None:
        by = Counter(r.status for r in self.model.rows) if by is None else by
        parts = [f"{by[s]} {s.lower().rstrip('…')}" for s in (QUEUED, RUNNING, CANCELLING, DONE, FAILED, CANCELLED)
                 if by.get(s)]
        self.counts_label.setText("  ·  ".join(parts) if parts else "Queue empty")

    def _run_changed(self) -> None:
        """A row's state or the run's changed: follow at once, or at most 10 times a second in a busy run."""
        if self.controller.run is None:
            self._update_actions()
        else:
            self._schedule_actions()

    def _schedule_actions(self, *_args) -> None:
        """Update the actions within 100 ms: changes that keep coming cost one update per 100 ms."""
        if not self._actions_due.isActive():
            self._actions_due.start()

    def _update_actions(self, *_args) -> None:
        running = self.controller.running_count()
        run, closing = self.controller.run, self.controller.closing
        by = Counter(r.status for r in self.model.rows)       # one pass: the queue may hold 10,000 rows
        queued = by[QUEUED] > 0
        ops = bool(self.selected_operations())
        can_start = queued and ops and not closing and run is None   # a run going on takes new files itself
        self.act_start.setEnabled(can_start)
        self.start_button.setEnabled(can_start)
        if run is not None:
            self.start_button.setToolTip("Running; files you add now join this run")
        elif not ops:
            self.start_button.setToolTip("Choose at least one operation first")
        elif not queued:
            self.start_button.setToolTip("Queue capture files first")
        else:
            self.start_button.setToolTip(self.act_start.toolTip())
        can_cancel = (running > 0 or (run is not None and queued)) and not closing
        self.act_cancel.setEnabled(can_cancel)
        self.cancel_button.setEnabled(can_cancel)
        selected = self._selected_rows() if self.queue_view.selectionModel() is not None else []
        self.act_remove.setEnabled(any(r.status not in (RUNNING, CANCELLING) for r in selected))
        self.act_clear.setEnabled(any(by[s] for s in FINISHED))
        self.act_open_output.setEnabled(self._output_folder_to_open() is not None)
        self.open_button.setEnabled(self.act_open_output.isEnabled())
        self.act_summary.setEnabled(bool(self.controller.last_results))
        self.options.set_busy(run is not None)
        self.preset_bar.set_busy(run is not None)
        self._update_counts(by)
        if run is None:
            self._update_overall(queued=by[QUEUED])
        title = "PktMask GUI"
        if running:
            title = f"PktMask GUI — running {plural(running, 'file')}"
        self.setWindowTitle(title)

    def _output_mode_changed(self) -> None:
        self.model.set_destination(self.settings, self.output_dir())   # the "Will be saved as" words follow it
        self._update_actions()

    # ================================================================================ folders ===
    def _output_folder_to_open(self) -> Path | None:
        if self.out_folder.isChecked():
            folder = self.output_dir()
            if folder is not None and folder.is_dir():
                return folder
        rows = self._selected_rows() if self.queue_view.selectionModel() is not None else []
        for row in rows + list(reversed(self.model.rows)):
            if row.result is not None and row.result.output:
                return Path(row.result.output).parent
        for folder in self.recent_outputs():
            if Path(folder).is_dir():
                return Path(folder)
        return None

    def open_output_folder(self) -> None:
        folder = self._output_folder_to_open()
        if folder is not None:
            self._open_folder(folder)

    def _row_activated(self, row) -> None:
        """Double-click on a finished row opens its before/after view."""
        if row.status == DONE and row.result is not None and row.result.output:
            self.inspect_result(row.result)

    def inspect_result(self, result) -> None:
        from .inspect import InspectDialog

        dialog = InspectDialog(Path(result.input), Path(result.output), result, self)
        dialog.show()

    def _open_folder(self, folder: Path) -> None:
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            self.statusBar().showMessage(f"Could not open {folder} in the file manager.", 6000)

    # ========================================================================== dialogs, about ===
    def open_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self)
        if dialog.exec() and dialog.result_settings is not None:
            self.apply_settings(dialog.result_settings)

    def apply_settings(self, new: settings_mod.Settings) -> None:
        self.controller.settings = new
        self.preset_bar.load(new)
        self.options.set_suffix(new.output_suffix)
        self.model.set_destination(new, self.output_dir())
        note = " Running files keep the settings they started with." if self.controller.running_count() else ""
        self.statusBar().showMessage("Settings saved; they apply to the next file that starts." + note, 8000)
        log.info("Settings saved; they apply from the next file that starts.")
        self.controller.settings_changed()
        self.controller.fill_slots()   # more parallel jobs may start now

    def show_summary(self) -> None:
        if self._make_summary():
            self.summary_dialog.show()

    def _make_summary(self) -> bool:
        """The last run's summary dialog, made and not yet shown (at the run's end ``_summary_show`` shows it
        at the next turn of the event loop). False when there is nothing to summarise."""
        if not self.controller.last_results or self.controller.closing:
            return False
        if self.summary_dialog is not None:
            self.summary_dialog.close()
            self.summary_dialog.deleteLater()
        self.summary_dialog = SummaryDialog(self.controller.last_results, self.controller.last_elapsed, self,
                                            last_dir=str(self.state.value("recent/summaryDir", "") or ""),
                                            handoff=self)
        self.summary_dialog.setModal(False)
        dialog = self.summary_dialog
        dialog.finished.connect(lambda _code: self.state.setValue("recent/summaryDir", dialog.last_dir))
        return True

    def show_about(self) -> None:
        QMessageBox.about(self, "About PktMask GUI", about_html())

    def _warn(self, title: str, text: str) -> None:
        QMessageBox.warning(self, title, text)

    # ================================================================================ startup ===
    def sweep_stale(self) -> list:
        """Remove temp folders and partial outputs left by an earlier run that ended abnormally."""
        from ..workspace import sweep_stale

        try:
            removed = sweep_stale(self.settings.temp_root_path(),
                                  extra_dirs=[p for p in self.recent_outputs() if Path(p).is_dir()])
        except OSError as exc:
            log.warning("Could not check the temp folder for leftovers: %s", exc)
            return []
        if removed:
            self.statusBar().showMessage(f"Removed {plural(len(removed), 'leftover temp folder')} "
                                         "from an earlier run.", 8000)
        return removed

    # =============================================================================== shutdown ===
    def confirm_quit(self, running: int) -> bool:
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Question)
        box.setWindowTitle("Quit PktMask GUI")
        if running == 1:
            box.setText("1 job is running — cancel it and quit?")
        else:
            box.setText(f"{running} jobs are running — cancel them and quit?")
        box.setInformativeText("Cancelled files leave no partial output and no temp files behind.")
        quit_button = box.addButton("Cancel Jobs and Quit", QMessageBox.DestructiveRole)
        keep = box.addButton("Keep Running", QMessageBox.RejectRole)
        box.setDefaultButton(keep)
        box.exec()
        return box.clickedButton() is quit_button

    def shutdown(self, show_progress: bool = True) -> bool:
        """Cancel every job and wait (bounded) for the workers to end and clean up. Idempotent."""
        if self._shut_down:
            return True
        running = self.controller.begin_shutdown()
        # The window says it is cleaning up (and Cancel / Start are off) before the dialog paints.
        self.clock.stop()
        self._update_actions()
        if running:
            self.time_label.setText("Cleaning up…")
            self.statusBar().showMessage("Cleaning up: cancelling running jobs…")
        progress = None
        if running and show_progress:
            progress = QProgressDialog(f"Cancelling {plural(running, 'job')} and removing their temporary files…",
                                       "", 0, 0, self)
            progress.setWindowTitle("Cleaning Up")
            progress.setCancelButton(None)
            progress.setWindowModality(Qt.WindowModal)
            progress.setMinimumDuration(0)
            progress.show()
            QApplication.processEvents()
        stopped = self.controller.wait_for_jobs(SHUTDOWN_TIMEOUT_S)
        if progress is not None:
            progress.close()
            progress.deleteLater()
        if not stopped:
            message = (f"{plural(self.controller.threads_alive(), 'job')} did not stop within "
                       f"{SHUTDOWN_TIMEOUT_S:.0f} s; their child processes are killed when this program exits.")
            log.error(message)
            sys.stderr.write(f"pktmask-gui: {message}\n")
        self._shut_down = stopped
        return stopped

    def closeEvent(self, event) -> None:
        running = self.controller.running_count()
        if running and not self._shut_down and not self.confirm_quit(running):
            event.ignore()
            return
        if self.controller.threads_alive() and not self.shutdown(show_progress=True):
            # A thread still runs: keep the window (and its job objects) alive rather than abort.
            self.controller.wait_for_jobs(SHUTDOWN_TIMEOUT_S)
        self.controller.closing = True
        self.controller.close_pool()    # the warm worker processes go with the window
        self.clock.stop()
        self._summary_due.stop()
        self._summary_show.stop()
        self._warm_due.stop()
        try:
            self._save_state()
        except Exception:  # UI state is a nicety; never block closing on it
            pass
        if self.summary_dialog is not None:
            self.summary_dialog.close()
        self._detach_log()
        event.accept()

    def _on_about_to_quit(self) -> None:
        if self.controller.threads_alive():
            self.shutdown(show_progress=False)
        self.controller.close_pool()
        self._detach_log()

    # ============================================================================ drops on the window
    def dragEnterEvent(self, event):
        self.queue_view.dragEnterEvent(event)

    def dragMoveEvent(self, event):
        self.queue_view.dragMoveEvent(event)

    def dragLeaveEvent(self, event):
        self.queue_view.dragLeaveEvent(event)

    def dropEvent(self, event):
        self.queue_view.dropEvent(event)


def _esc(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def about_html() -> str:
    import platform

    import PySide6
    from PySide6 import QtCore

    versions = [("PktMask GUI", __version__), ("Python", platform.python_version()),
                ("PySide6", PySide6.__version__), ("Qt", QtCore.qVersion())]
    for name, module in (("psutil", "psutil"), ("cryptography", "cryptography")):
        try:
            versions.append((name, __import__(module).__version__))
        except Exception:
            pass
    rows = "".join(f"<tr><td>{_esc(n)}</td><td>&nbsp;&nbsp;{_esc(v)}</td></tr>" for n, v in versions)
    return (f"<h3>PktMask GUI {__version__}</h3>"
            "<p>Makes packet captures safe to share: removes duplicate frames, anonymizes IP addresses "
            "with a keyed prefix-preserving mapping, and masks payloads while keeping TLS handshakes.</p>"
            "<p>Inputs are never modified; every output is a new file; nothing is left behind in the "
            "temp folder.</p>"
            f"<table>{rows}</table>"
            f"<p>Settings folder: {_esc(str(settings_mod.config_dir()))}<br>"
            f"Platform: {_esc(platform.platform(terse=True))}</p>")
