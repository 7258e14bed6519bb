"""Job workers: one worker object per job, moved to its own QThread, calling ``jobs.run_job_process``.

The packet work runs in a child process (the engine's jobs module); the QThread only waits for it,
owns its temp dir and relays progress and log records as signals. Cancelling sets the job's
``threading.Event``: the engine stops within ~0.5 s and cleans up. Nothing here ever calls
``QThread.terminate()``.

Quitting goes through ``JobRunner.cancel_all_and_wait``: set every cancel event, then wait, bounded,
while pumping the UI event loop so that queued results still arrive. A worker quits its own thread
from inside that thread, so the wait never depends on a queued hop through a blocked UI thread.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback

from PySide6.QtCore import QCoreApplication, QEventLoop, QObject, QThread, Signal, Slot

log = logging.getLogger(__name__)


# Byte and packet counts pass as 64-bit: a plain ``int`` signal argument is a C int, which would
# silently wrap for captures above 2 GiB.
COUNTS = ("qlonglong", "qlonglong", "qlonglong")


class JobWorker(QObject):
    progress = Signal(int, str, *COUNTS)         # row id, phase, bytes done, bytes total, packets done
    finished = Signal(int, object)               # row id, pipeline.JobResult
    failed = Signal(int, str)                    # row id, error (the worker itself failed)

    def __init__(self, row_id: int, job, settings, split: int = 1):
        super().__init__()
        self.row_id = row_id
        self.job = job
        self.settings = settings
        self.split = split              # > 1: the file's main pass may run on that many processes
        self.cancel_event = threading.Event()
        self.done = threading.Event()

    def _progress(self, phase, bytes_done, bytes_total, packets_done):
        self.progress.emit(self.row_id, str(phase), int(bytes_done), int(bytes_total), int(packets_done))

    @Slot()
    def run(self):
        try:
            from .. import jobs
            # Log records (the child's, relayed by the engine, and this thread's own workspace lines)
            # reach the panel through the pktmask_gui logger, which carries the window's QtLogHandler.
            if self.split > 1:
                from .. import pipeline, segments
                # the work in child processes either way: segments, or one child when the file stays whole
                result = pipeline.run_job(self.job, self.settings, progress=self._progress, cancel=self.cancel_event,
                                          executor=segments.executor(self.split, segments.in_child))
            else:
                result = jobs.run_job_process(self.job, self.settings, progress=self._progress,
                                              cancel=self.cancel_event)
        except BaseException as exc:  # an engine bug must surface as a failed row, not a dead thread
            job_log = logging.LoggerAdapter(log, {"job": self.job.input.name})
            job_log.error("the job stopped with an internal error: %s", exc)
            job_log.debug("%s", traceback.format_exc())
            self.failed.emit(self.row_id, f"Internal error: {exc}")
        else:
            self.finished.emit(self.row_id, result)
        finally:
            self.done.set()
            # Quit from inside the worker thread: works even while the UI thread is blocked in wait().
            QThread.currentThread().quit()


class JobRunner(QObject):
    """Runs jobs on QThread workers, never more at once than the caller allows."""

    progress = Signal(int, str, *COUNTS)
    finished = Signal(int, object)
    failed = Signal(int, str)
    idle = Signal()          # the last running job has reported and its thread has ended

    def __init__(self, parent=None):
        super().__init__(parent)
        self._active: dict[int, tuple[QThread, JobWorker]] = {}   # jobs whose thread still runs
        self._reported: set[int] = set()                             # jobs whose result arrived

    # --- state -----------------------------------------------------------------------------------
    def running_ids(self) -> list[int]:
        """Jobs that have not reported a result yet."""
        return [rid for rid in self._active if rid not in self._reported]

    def running_count(self) -> int:
        return len(self.running_ids())

    def threads_alive(self) -> int:
        return len(self._active)

    # --- start / cancel --------------------------------------------------------------------------
    def start(self, row_id: int, job, settings, split: int = 1) -> None:
        thread = QThread()
        thread.setObjectName(f"pktmask-job-{row_id}")
        worker = JobWorker(row_id, job, settings, split)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.progress.connect(self.progress)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        thread.finished.connect(self._thread_ended)
        self._active[row_id] = (thread, worker)
        thread.start()

    def cancel(self, row_id: int) -> bool:
        entry = self._active.get(row_id)
        if entry is None or row_id in self._reported:
            return False
        entry[1].cancel_event.set()
        return True

    def cancel_all(self) -> int:
        n = 0
        for rid in self.running_ids():
            n += self.cancel(rid)
        return n

    # --- results ---------------------------------------------------------------------------------
    @Slot(int, object)
    def _on_finished(self, row_id: int, result) -> None:
        self._reported.add(row_id)
        self.finished.emit(row_id, result)

    @Slot(int, str)
    def _on_failed(self, row_id: int, error: str) -> None:
        self._reported.add(row_id)
        self.failed.emit(row_id, error)

    @Slot()
    def _thread_ended(self) -> None:
        sender = self.sender()
        for rid, (thread, _worker) in list(self._active.items()):
            if thread is sender:
                self._on_thread_finished(rid)

    def _on_thread_finished(self, row_id: int) -> None:
        entry = self._active.pop(row_id, None)
        if entry is None:
            return
        entry[0].wait()   # returns at once: the thread has ended; makes its deletion safe
        self._reported.discard(row_id)
        if not self._active:
            self.idle.emit()

    def cancel_all_and_wait(self, timeout_s: float = 10.0) -> bool:
        """Cancel every job and wait for their threads (bounded), delivering their results.

        Returns True when every thread has ended. Pumps the event loop so that results, log records
        and the threads' ``finished`` signals are handled while waiting.
        """
        for _thread, worker in list(self._active.values()):
            worker.cancel_event.set()
        deadline = time.monotonic() + timeout_s
        while self._active and time.monotonic() < deadline:
            QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
            entries = list(self._active.values())
            finishing = [thread for thread, worker in entries if worker.done.is_set()]
            if finishing:
                finishing[0].wait(50)          # its run() returned: the thread ends within moments
            elif entries:
                entries[0][1].done.wait(0.02)  # sleep briefly instead of spinning
        # Results and thread-finished notifications posted in the last moments.
        QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
        for rid, (thread, _worker) in list(self._active.items()):
            if thread.wait(100):
                self._on_thread_finished(rid)
        return not self._active
