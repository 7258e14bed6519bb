"""``run_gui``: the desktop entry point the CLI calls for ``pktmask-gui [FILE_OR_FOLDER ...]``."""
from __future__ import annotations

import gc
import logging
import signal
import sys

from PySide6.QtCore import QCoreApplication, QTimer
from PySide6.QtWidgets import QApplication

from .. import __version__
from .resources import app_icon, style_sheet


def log_everything() -> None:
    """The app's logging set-up (the CLI does its own): every record of the engine's loggers reaches the
    log panel, whose level filter decides what shows. Done once at start; a widget never changes it."""
    logging.getLogger("pktmask_gui").setLevel(logging.DEBUG)


_heap_settled = False


def settle_heap() -> None:
    """Once per process, when the first window is built: collect, then freeze what lives so far (modules,
    classes, the window). The garbage collector's full collections, which come now and then while rows and
    results are made, then walk only what came after: ~4 ms instead of ~17 ms with 10,000 queued rows, on top
    of the slice of work they interrupt. Refcounting still frees frozen objects; only cyclic garbage already
    dead at the freeze would stay, and the collection before it took that."""
    global _heap_settled
    if not _heap_settled:
        _heap_settled = True
        gc.collect()
        gc.freeze()


def make_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if app is None:
        QCoreApplication.setOrganizationName("pktmask-gui")
        QCoreApplication.setApplicationName("PktMask GUI")
        QCoreApplication.setApplicationVersion(__version__)
        app = QApplication([sys.argv[0] if sys.argv else "pktmask-gui"] + list(argv or []))
        app.setDesktopFileName("pktmask-gui")
    app.setWindowIcon(app_icon())
    if not app.styleSheet():
        app.setStyleSheet(style_sheet())
    log_everything()
    return app


def run_gui(paths: list[str]) -> int:
    """Open the window with ``paths`` queued, sweep temp folders left by a crashed run, run the loop.

    A window already open (single_instance) takes the paths instead: this launch then exits at once,
    before it could sweep that window's temp folders."""
    from . import single_instance

    instance = single_instance.claim(paths)
    if instance is None:
        return 0
    app = make_app()
    # Listen before building the window: a launch meanwhile connects at once and waits for the answer,
    # which the event loop gives once it runs (the paths then join the queue), instead of timing out.
    listening = instance.listen()
    early: list[str] = []           # paths handed over while the window is built (should events run then)
    instance.paths_received.connect(early.extend)
    from .main_window import MainWindow

    window = MainWindow()
    window.show()
    window.sweep_stale()          # after show: its log lines land in the panel
    instance.paths_received.disconnect(early.extend)
    if paths or early:
        window.add_paths(paths + early)
    instance.paths_received.connect(lambda received: (window.add_paths(received),
                                                      single_instance.bring_to_front(window)))
    if not listening:
        logging.getLogger(__name__).warning(
            "Captures opened while this window runs will open a second window: the local socket %s "
            "could not be created.", instance.name)
    _stop_on_signals(app, window)
    try:
        code = app.exec()
    finally:
        instance.close()
    # aboutToQuit already cancelled and waited for any job; this is the backstop for a closed window.
    if window.controller.threads_alive():
        window.shutdown(show_progress=False)
    logging.getLogger("pktmask_gui").removeHandler(window.log_panel.handler)
    return int(code)


def _stop_on_signals(app, window) -> None:
    """Ctrl-C in the terminal or SIGTERM: cancel the jobs, wait for their cleanup, quit (no question)."""
    def stop(_signum, _frame):
        window.shutdown(show_progress=False)
        window.close()
        app.quit()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, stop)
        except (ValueError, OSError):   # not the main thread, or a platform without it
            return
    # Python runs signal handlers between bytecodes: wake the interpreter now and then while Qt waits.
    ticker = QTimer(app)
    ticker.timeout.connect(lambda: None)
    ticker.start(250)
