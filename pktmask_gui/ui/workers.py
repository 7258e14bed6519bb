"""Job workers: one worker object per job, run on a job thread, in a lane of the ``WorkerPool``.

The job runs in a worker process of the ``WorkerPool`` (started with the first job, or earlier by
``JobRunner.warm``; its workers reused job after job; the window's pool stays warm between runs until the
window closes); the job thread only waits for it and relays progress and log records (batched by the
worker) as signals. Job threads are plain ``threading.Thread``s, kept from job to job: they run no Qt
event loop (their signals reach the UI thread queued), and a batch of hundreds of small files pays for
two thread starts, not hundreds. Cancelling sets the job's
``threading.Event``: the worker stops within ~0.5 s (or is killed and replaced) and nothing of the job
is left. Nothing here ever kills a thread.

Quitting goes through ``JobRunner.cancel_all_and_wait``: set every cancel event, then wait, bounded,
while pumping the UI event loop so that queued results still arrive. A job has ended when its ``done`` event
is set (its lane or its run() is through with it), so the wait never depends on a queued hop through a
blocked UI thread; then ``close_pool`` lets the worker processes go and waits for them.
"""
from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
import traceback
from collections import deque

from PySide6.QtCore import QCoreApplication, QEventLoop, QObject, QTimer, Signal, Slot

# At import, not at the first job or warm(): the import (~10-50 ms) would hold the GIL in the middle of a
# turn of the event loop.
from ..workerpool import LaneJob, WorkerPool

log = logging.getLogger(__name__)


# Byte and packet counts pass as 64-bit: a plain ``int`` signal argument is a C int, which would
# silently wrap for captures above 2 GiB.
COUNTS = ("qlonglong", "qlonglong", "qlonglong")


class JobWorker:
    """One job: what it runs and its cancel event. Its thread reports through the runner's signals (``to``):
    they reach the UI thread queued, in the order they were sent. A plain object, not a QObject with
    signals of its own: a batch of small files makes one per file."""

    def __init__(self, row_id: int, job, settings, pool=None, split: int = 1, to: JobRunner | None = None):
        self.row_id = row_id
        self.job = job
        self.settings = settings
        self.pool = pool
        self.split = split              # > 1: the file's main pass may run on that many processes
        self.to = to
        self.serial = 0                 # set by the runner: tells this job from another of the same row
        self.cancel_event = threading.Event()
        self.done = threading.Event()

    def _progress(self, phase, bytes_done, bytes_total, packets_done):
        self.to.progress.emit(self.row_id, str(phase), int(bytes_done), int(bytes_total), int(packets_done))

    def run(self):
        to = self.to
        try:
            if self.cancel_event.is_set():      # cancelled while it waited for a thread: nothing to stop
                from ..pipeline import JobResult
                to._job_finished.emit(self.row_id, self.serial, JobResult(input=str(self.job.input),
                                                                          status="cancelled", error="cancelled"))
                return
            # A file that runs alone (split > 1): the work in child processes either way, segments or one child
            # when the file stays whole. (A pool's job runs in its runner's lane: JobRunner._run_lane.) Log
            # records reach the panel through the pktmask_gui logger, which carries the window's QtLogHandler.
            from .. import pipeline, segments
            result = pipeline.run_job(self.job, self.settings, progress=self._progress, cancel=self.cancel_event,
                                      executor=segments.executor(
                                          self.split, functools.partial(segments.in_child, background=True),
                                          background=True))      # its processes run below the window
        except BaseException as exc:  # an engine bug must surface as a failed row, not a dead thread
            job_log = logging.LoggerAdapter(log, {"job": self.job.input.name})
            job_log.error("the job stopped with an internal error: %s", exc)
            job_log.debug("%s", traceback.format_exc())
            to._job_failed.emit(self.row_id, self.serial, f"Internal error: {exc}")
        else:
            to._job_finished.emit(self.row_id, self.serial, result)
        finally:
            self.done.set()
            to._job_ended.emit(self.row_id, self.serial)


class JobRunner(QObject):
    """Runs jobs on job threads, never more at once than the caller allows.

    ``start`` hands a job over; at most ``slots`` job threads take the jobs in the order they were handed
    (a thread per job made the UI thread wait for each start while the other jobs' threads held the GIL).
    A job handed while every thread is busy waits, and the first thread to finish takes it at once,
    without a round trip through the UI thread (``began`` says when; ``withdraw`` takes back a job that has
    not begun). A thread ends after ``THREAD_LINGER_S`` without a job. The pool of worker processes is made
    at the first job (or by ``warm``); with ``keep_warm`` (the window's runner) it outlives the run, so that
    the next run starts on warm workers, until ``close_pool`` (the window closes) or ``POOL_IDLE_S``
    without a job.
    """

    progress = Signal(int, str, *COUNTS)
    finished = Signal(int, object)
    failed = Signal(int, str)
    began = Signal(int)      # a job thread took a job (a job handed while every thread was busy: now)
    idle = Signal()          # the last running job has reported and its run() has returned
    # From the job threads (JobWorker.run), queued to this object's slots in the UI thread: (row id, the job's
    # serial, …). A row queued again runs as a new job before the old one's ``ended`` may have arrived: the
    # serial tells them apart.
    _job_finished = Signal(int, int, object)
    _job_failed = Signal(int, int, str)
    _job_ended = Signal(int, int)

    THREAD_LINGER_S = 5.0
    POOL_IDLE_S = 600.0

    def __init__(self, parent=None):
        super().__init__(parent)
        self._active: dict[int, JobWorker] = {}     # jobs handed over whose run() has not returned
        self._reported: set[int] = set()            # the serials of the jobs whose result arrived
        self._serials = itertools.count(1)
        self._waiting: deque[JobWorker] = deque()   # jobs no thread has taken yet
        self._cond = threading.Condition()          # guards _waiting, _threads, _idle_threads, _busy, _slots
        self._threads: set[threading.Thread] = set()
        self._idle_threads = 0                      # threads waiting for a job
        self._busy = 0                              # threads running a job
        self._slots = 1                             # at most this many job threads (the caller's limit)
        self._stop_threads = False                  # close_pool: idle threads end
        self.pool = None                    # the WorkerPool (None: not made yet, or closed)
        self.keep_warm = False              # True: the pool outlives the run (``warm``)
        self._closing_pools: list[threading.Thread] = []
        self._pool_idle = QTimer(self)      # a warm pool unused this long is closed (workers hold memory)
        self._pool_idle.setSingleShot(True)
        self._pool_idle.setInterval(int(self.POOL_IDLE_S * 1000))
        self._pool_idle.timeout.connect(lambda: self._active or self.close_pool(0))
        self._job_finished.connect(self._on_finished)
        self._job_failed.connect(self._on_failed)
        self._job_ended.connect(self._on_thread_finished)

    # --- state -----------------------------------------------------------------------------------
    def running_ids(self) -> list[int]:
        """Jobs handed over that have not reported a result yet."""
        return [rid for rid, worker in self._active.items() if worker.serial not in self._reported]

    def running_count(self) -> int:
        """Jobs on a job thread right now (never more than the caller's limit)."""
        return self._busy

    def held_count(self) -> int:
        """Jobs handed over that have not reported (running, or waiting for a thread)."""
        return sum(worker.serial not in self._reported for worker in self._active.values())

    def threads_alive(self) -> int:
        """Jobs handed over whose run() has not returned (their cleanup may still be going on)."""
        return len(self._active)

    def worker(self, row_id: int) -> JobWorker | None:
        return self._active.get(row_id)

    def job_threads(self) -> int:
        """Job threads alive (running a job or waiting for one)."""
        with self._cond:
            return len(self._threads)

    # --- start / cancel --------------------------------------------------------------------------
    def start(self, row_id: int, job, settings, slots: int = 1, split: int = 1) -> None:
        """Hand ``job`` over: it runs on a job thread and a worker process of the pool (``slots``: how many
        jobs may run at once, the pool's size and the number of job threads) as soon as a thread is free;
        with ``split`` > 1 (a file that runs alone) on up to that many processes of its own instead
        (segments.py)."""
        if split > 1:                   # no pool for it: the segments' processes are the file's own
            worker = JobWorker(row_id, job, settings, split=split, to=self)
        else:
            worker = JobWorker(row_id, job, settings, pool=self._pool_of(slots), to=self)
        worker.serial = next(self._serials)
        self._active[row_id] = worker
        self._pool_idle.stop()
        thread = None
        with self._cond:
            self._slots = max(1, int(slots))
            self._stop_threads = False
            self._waiting.append(worker)
            if self._idle_threads:
                self._cond.notify()
            # More jobs waiting than threads waiting to take them (a notified thread takes its job only when
            # it runs again): one more thread, within the limit.
            if len(self._waiting) > self._idle_threads and len(self._threads) < self._slots:
                thread = self._new_thread()
        if thread is not None:
            thread.start()

    def _new_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self._thread_main, name="pktmask-job", daemon=True)
        self._threads.add(thread)
        return thread

    def withdraw(self, row_id: int) -> bool:
        """Take back a job that no thread has taken yet: True when it was waiting (it never runs, nothing
        of it is reported); False when it has begun (or is not known)."""
        worker = self._active.get(row_id)
        if worker is None:
            return False
        with self._cond:
            try:
                self._waiting.remove(worker)
            except ValueError:
                return False
        del self._active[row_id]
        if not self._active:
            self._went_idle()
        return True

    def _thread_main(self) -> None:
        """A job thread: run the handed jobs one after another; end after THREAD_LINGER_S without one, or
        when the caller now allows fewer threads."""
        me = threading.current_thread()
        while True:
            with self._cond:
                while True:
                    if len(self._threads) > self._slots:    # fewer parallel jobs now: one thread fewer
                        self._threads.discard(me)
                        if self._waiting and self._idle_threads:
                            self._cond.notify()             # the job it would have taken
                        return
                    if self._waiting:
                        break
                    if self._stop_threads:
                        self._threads.discard(me)
                        return
                    # Kept while the pool is kept warm (the next run's jobs find their threads), else a while.
                    self._idle_threads += 1
                    waited = self._cond.wait(None if self.keep_warm else self.THREAD_LINGER_S)
                    self._idle_threads -= 1
                    if not waited and not self._waiting:
                        self._threads.discard(me)
                        return
                worker = self._waiting.popleft()
                self._busy += 1
            self.began.emit(worker.row_id)
            last: list[JobWorker] = []
            try:
                if worker.pool is not None:
                    self._run_lane(worker, last)
                else:
                    worker.run()
            finally:
                with self._cond:
                    self._busy -= 1
                self._end(last)         # the lane's last job ends once the lane has (its temp dir removed)

    def _end(self, workers: list[JobWorker]) -> None:
        for worker in workers:
            worker.done.set()
            self._job_ended.emit(worker.row_id, worker.serial)

    def _run_lane(self, first: JobWorker, last: list[JobWorker]) -> None:
        """``first`` and the pool jobs handed after it, one after another on one worker process, each next one
        sent while the one before runs (``WorkerPool.run_lane``): the worker need not wait for this thread,
        which shares the GIL with the UI thread, between small files. A job taken this way still begins (the
        ``began`` signal) only when the one before it has ended, and a cancel reaches it on the worker. Each
        job's end (``done``, ``_job_ended``) is told when the next one's result comes, the last one's by the
        caller once the lane is over: the runner is idle only when the worker has removed its spare dir."""
        pool = first.pool
        unfinished: dict[int, JobWorker] = {}

        def lane_job(worker: JobWorker, begin) -> LaneJob:
            unfinished[worker.serial] = worker
            try:
                size = os.stat(worker.job.input).st_size
            except OSError:
                size = 0
            return LaneJob(worker.job, worker.settings, progress=worker._progress, cancel=worker.cancel_event,
                           size=size, begin=begin, tag=worker)

        def take() -> LaneJob | None:
            nonlocal first
            if first is not None:
                worker, first = first, None
                return lane_job(worker, None)
            with self._cond:
                if not self._waiting or self._waiting[0].pool is not pool or self._stop_threads or \
                        len(self._threads) > self._slots:
                    return None
                worker = self._waiting.popleft()
            return lane_job(worker, lambda: self.began.emit(worker.row_id))

        def finish(item: LaneJob, result) -> None:
            worker = item.tag
            unfinished.pop(worker.serial, None)
            self._job_finished.emit(worker.row_id, worker.serial, result)
            self._end(last)
            last[:] = [worker]

        try:
            pool.run_lane(take, finish)
        except BaseException as exc:  # an engine bug must surface as failed rows, not a dead thread
            for worker in unfinished.values():
                job_log = logging.LoggerAdapter(log, {"job": worker.job.input.name})
                job_log.error("the job stopped with an internal error: %s", exc)
                job_log.debug("%s", traceback.format_exc())
                self._job_failed.emit(worker.row_id, worker.serial, f"Internal error: {exc}")
                last.append(worker)

    def warm(self, slots: int) -> None:
        """Make the job threads and the pool now (its ``slots`` workers start off the UI thread) and keep them
        between runs: Start then only hands jobs over (a thread's start waits for the GIL, which the workers'
        start-up holds now and then)."""
        self.keep_warm = True
        slots = max(1, int(slots))
        with self._cond:
            self._slots, self._stop_threads = slots, False
        if self.pool is None:
            self._pool_of(slots, first=self._start_threads)     # both on the pool's warming thread
        else:
            self._pool_of(slots)
            threading.Thread(target=self._start_threads, name="pktmask-job-threads", daemon=True).start()
        if not self._active:
            self._pool_idle.start()

    def _start_threads(self) -> None:
        """Job threads up to the limit (off the UI thread: a thread's start waits until it runs)."""
        threads = []
        with self._cond:
            while len(self._threads) < self._slots:
                threads.append(self._new_thread())
        for thread in threads:
            thread.start()

    def _pool_of(self, slots: int, first=None):
        """The pool, made (and warmed off the UI thread, after ``first()``) at its first use, resized to
        ``slots``."""
        slots = max(1, int(slots))
        if self.pool is None:
            pool = self.pool = WorkerPool(slots, background=True)     # the window stays smooth

            def warm():
                if first is not None:
                    first()
                pool.warm()
                # the stage registry (titles and order of the results' stages, ui/format.py): imported
                # here, not in the UI thread at the first result (~45 ms of imports)
                from ..stages import all_stages
                all_stages()
            # Starting the processes takes a few ms each: off the UI thread. A job that finds none
            # idle yet starts its own.
            threading.Thread(target=warm, name="pktmask-pool-warm", daemon=True).start()
        elif self.pool.size != slots:
            pool = self.pool            # fewer: idle workers exit (bounded wait); more: started ahead of need

            def resize():
                pool.resize(slots)
                pool.warm()
            threading.Thread(target=resize, name="pktmask-pool-resize", daemon=True).start()
        return self.pool

    def cancel(self, row_id: int) -> bool:
        worker = self._active.get(row_id)
        if worker is None or worker.serial in self._reported:
            return False
        worker.cancel_event.set()
        return True

    def cancel_all(self) -> int:
        n = 0
        for rid in self.running_ids():
            n += self.cancel(rid)
        return n

    # --- results ---------------------------------------------------------------------------------
    @Slot(int, int, object)
    def _on_finished(self, row_id: int, serial: int, result) -> None:
        self._reported.add(serial)
        self.finished.emit(row_id, result)

    @Slot(int, int, str)
    def _on_failed(self, row_id: int, serial: int, error: str) -> None:
        self._reported.add(serial)
        self.failed.emit(row_id, error)

    def _on_thread_finished(self, row_id: int, serial: int) -> None:
        self._reported.discard(serial)
        worker = self._active.get(row_id)
        if worker is None or worker.serial != serial:
            return                  # an earlier job of a row queued again, whose new job runs now
        del self._active[row_id]
        if not self._active:
            self._went_idle()
            self.idle.emit()

    def _went_idle(self) -> None:
        if self.keep_warm:
            self._pool_idle.start()
        else:
            self._close_pool()

    def _close_pool(self) -> None:
        """Let the pool's workers go (they exit in moments; off the UI thread)."""
        pool, self.pool = self.pool, None
        if pool is not None:
            closer = threading.Thread(target=pool.close, name="pktmask-pool-close", daemon=True)
            closer.start()
            self._closing_pools = [t for t in self._closing_pools if t.is_alive()] + [closer]

    def close_pool(self, timeout_s: float = 3.0) -> bool:
        """Close the pool (no job may run) and wait, bounded, until its workers have exited; True when they
        have. The idle job threads end too. The window calls it when it closes: no worker process outlives it."""
        self.keep_warm = False
        self._pool_idle.stop()
        with self._cond:
            self._stop_threads = True
            self._cond.notify_all()
        self._close_pool()
        return self.wait_for_pools(timeout_s)

    def wait_for_pools(self, timeout_s: float = 3.0) -> bool:
        """Wait (bounded) until every closed pool's workers have exited; True when they have."""
        deadline = time.monotonic() + timeout_s
        for closer in self._closing_pools:
            closer.join(max(0.0, deadline - time.monotonic()))
        self._closing_pools = [t for t in self._closing_pools if t.is_alive()]
        return not self._closing_pools

    def cancel_all_and_wait(self, timeout_s: float = 10.0) -> bool:
        """Cancel every job and wait for their run() to return (bounded), delivering their results.

        Returns True when every job has ended. Pumps the event loop so that results, log records
        and the workers' ``ended`` signals are handled while waiting.
        """
        for worker in list(self._active.values()):
            worker.cancel_event.set()
        deadline = time.monotonic() + timeout_s
        while self._active and time.monotonic() < deadline:
            QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
            waiting = [w for w in self._active.values() if not w.done.is_set()]
            if waiting:
                waiting[0].done.wait(0.02)     # sleep briefly instead of spinning
        # Results and ended notifications posted in the last moments.
        QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
        for rid, worker in list(self._active.items()):
            if worker.done.wait(0.1):
                self._on_thread_finished(rid, worker.serial)
        if not self._active and not self.keep_warm:
            self.wait_for_pools(max(0.5, deadline - time.monotonic()))
        return not self._active
