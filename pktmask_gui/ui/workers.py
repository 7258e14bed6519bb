"""Job workers: one worker object per job, run on a thread of its own, calling ``jobs.run_job_process``.

The job runs in a worker process of the run's ``WorkerPool`` (started with the run's first job, its
workers reused job after job, closed once the run's last thread has ended); the thread only waits for
it and relays progress and log records (batched by the worker) as signals. A plain ``threading.Thread``:
it runs no Qt event loop (its signals reach the UI thread queued) and starts in a tenth of a QThread's
time, which counts with hundreds of small files. Cancelling sets the job's
``threading.Event``: the worker stops within ~0.5 s (or is killed and replaced) and nothing of the job
is left. Nothing here ever kills a thread.

Quitting goes through ``JobRunner.cancel_all_and_wait``: set every cancel event, then wait, bounded,
while pumping the UI event loop so that queued results still arrive. A thread ends when its job's
run() returns, so the wait never depends on a queued hop through a blocked UI thread.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback

from PySide6.QtCore import QCoreApplication, QEventLoop, QObject, Signal, Slot

log = logging.getLogger(__name__)


# Byte and packet counts pass as 64-bit: a plain ``int`` signal argument is a C int, which would
# silently wrap for captures above 2 GiB.
COUNTS = ("qlonglong", "qlonglong", "qlonglong")


class JobWorker(QObject):
    progress = Signal(int, str, *COUNTS)         # row id, phase, bytes done, bytes total, packets done
    finished = Signal(int, object)               # row id, pipeline.JobResult
    failed = Signal(int, str)                    # row id, error (the worker itself failed)
    ended = Signal(int)                          # row id: run() has returned (its thread ends now)

    def __init__(self, row_id: int, job, settings, pool=None, split: int = 1):
        super().__init__()
        self.row_id = row_id
        self.job = job
        self.settings = settings
        self.pool = pool
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
                                              cancel=self.cancel_event, pool=self.pool)
        except BaseException as exc:  # an engine bug must surface as a failed row, not a dead thread
            job_log = logging.LoggerAdapter(log, {"job": self.job.input.name})
            job_log.error("the job stopped with an internal error: %s", exc)
            job_log.debug("%s", traceback.format_exc())
            self.failed.emit(self.row_id, f"Internal error: {exc}")
        else:
            self.finished.emit(self.row_id, result)
        finally:
            self.done.set()
            self.ended.emit(self.row_id)


class JobRunner(QObject):
    """Runs jobs on worker threads, never more at once than the caller allows."""

    progress = Signal(int, str, *COUNTS)
    finished = Signal(int, object)
    failed = Signal(int, str)
    idle = Signal()          # the last running job has reported and its thread has ended

    def __init__(self, parent=None):
        super().__init__(parent)
        self._active: dict[int, tuple[threading.Thread, JobWorker]] = {}   # jobs whose thread still runs
        self._reported: set[int] = set()                             # jobs whose result arrived
        self.pool = None                    # the WorkerPool of the jobs running now (None: nothing runs)
        self._closing_pools: list[threading.Thread] = []

    # --- state -----------------------------------------------------------------------------------
    def running_ids(self) -> list[int]:
        """Jobs that have not reported a result yet."""
        return [rid for rid in self._active if rid not in self._reported]

    def running_count(self) -> int:
        return len(self.running_ids())

    def threads_alive(self) -> int:
        return len(self._active)

    # --- start / cancel --------------------------------------------------------------------------
    def start(self, row_id: int, job, settings, slots: int = 1, split: int = 1) -> None:
        """Run ``job`` on a thread of its own and a worker process of the pool (``slots``: how many jobs
        may run at once, the pool's size); with ``split`` > 1 (a file that runs alone) on up to that many
        processes of its own instead (segments.py)."""
        if split > 1:                   # no pool for it: the segments' processes are the file's own
            worker = JobWorker(row_id, job, settings, split=split)
        else:
            worker = JobWorker(row_id, job, settings, pool=self._pool_of(slots))
        worker.progress.connect(self.progress)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        worker.ended.connect(self._on_thread_finished)
        thread = threading.Thread(target=worker.run, name=f"pktmask-job-{row_id}", daemon=True)
        self._active[row_id] = (thread, worker)
        thread.start()

    def _pool_of(self, slots: int):
        """The run's pool, made (and warmed off the UI thread) at its first job, resized to ``slots``."""
        if self.pool is None:
            from ..workerpool import WorkerPool

            self.pool = WorkerPool(slots)
            # Starting the processes takes a few ms each: off the UI thread. A job that finds none
            # idle yet starts its own.
            threading.Thread(target=self.pool.warm, name="pktmask-pool-warm", daemon=True).start()
        elif self.pool.size != slots:
            self.pool.resize(slots)
        return self.pool

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

    def _on_thread_finished(self, row_id: int) -> None:
        entry = self._active.pop(row_id, None)
        if entry is None:
            return
        entry[0].join(1.0)   # returns at once: run() has returned, the thread ends with it
        self._reported.discard(row_id)
        if not self._active:
            self._close_pool()
            self.idle.emit()

    def _close_pool(self) -> None:
        """Nothing runs: let the pool's workers go (they exit in moments; off the UI thread)."""
        pool, self.pool = self.pool, None
        if pool is not None:
            closer = threading.Thread(target=pool.close, name="pktmask-pool-close", daemon=True)
            closer.start()
            self._closing_pools = [t for t in self._closing_pools if t.is_alive()] + [closer]

    def wait_for_pools(self, timeout_s: float = 3.0) -> bool:
        """Wait (bounded) until every closed pool's workers have exited; True when they have."""
        deadline = time.monotonic() + timeout_s
        for closer in self._closing_pools:
            closer.join(max(0.0, deadline - time.monotonic()))
        self._closing_pools = [t for t in self._closing_pools if t.is_alive()]
        return not self._closing_pools

    def cancel_all_and_wait(self, timeout_s: float = 10.0) -> bool:
        """Cancel every job and wait for their threads (bounded), delivering their results.

        Returns True when every thread has ended. Pumps the event loop so that results, log records
        and the workers' ``ended`` signals are handled while waiting.
        """
        for _thread, worker in list(self._active.values()):
            worker.cancel_event.set()
        deadline = time.monotonic() + timeout_s
        while self._active and time.monotonic() < deadline:
            QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
            entries = list(self._active.values())
            finishing = [thread for thread, worker in entries if worker.done.is_set()]
            if finishing:
                finishing[0].join(0.05)        # its run() returned: the thread ends within moments
            elif entries:
                entries[0][1].done.wait(0.02)  # sleep briefly instead of spinning
        # Results and thread-finished notifications posted in the last moments.
        QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
        for rid, (thread, _worker) in list(self._active.items()):
            thread.join(0.1)
            if not thread.is_alive():
                self._on_thread_finished(rid)
        if not self._active:
            self.wait_for_pools(max(0.5, deadline - time.monotonic()))
        return not self._active
