"""The desktop GUI: the only package of PktMask GUI that imports Qt.

The window (``MainWindow``) queues captures and shows progress, the engine's log and a summary; its run
controller (``run_controller.RunController``) runs each job on a job thread that hands it to a worker process
of the window's pool (``WorkerPool.run_lane``). ``app.run_gui`` is the entry point the CLI calls.
"""
from __future__ import annotations

__all__ = ["MainWindow", "run_gui"]


def __getattr__(name):
    # Lazy, so that `import pktmask_gui.ui.format` (or the CLI probing for Qt) stays cheap.
    if name == "MainWindow":
        from .main_window import MainWindow
        return MainWindow
    if name == "run_gui":
        from .app import run_gui
        return run_gui
    raise AttributeError(name)
