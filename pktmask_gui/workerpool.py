"""Worker processes that outlive a job: many jobs, one after another, in each.

Why: a fresh ``spawn`` child per job costs a Python start and the engine's imports (numpy among them),
~0.2 s of CPU — more than the whole job on a small capture (681 IDS captures: 3 s in one process, 150 s
with a child each). A pool starts its workers once (``warm``) and hands each job to an idle one.

A worker runs whole jobs: each one's workspace (whose name names the worker), its passes, and its publish
(``pipeline.start_job``: the fsync and the link into place, on the worker's publisher thread while the next
job's passes run). The owner (the calling thread) does no file work, so jobs side by side scale with the
cores even when each is only milliseconds of work; a lane (``run_lane``) sends a worker its next small job
while it runs one, so the worker never waits for its owner. The guarantees of a child per job stay:
- cancel: the owner sends ``stop`` for that job; the worker stops within one batch, removes the temp dir
  and the partial output, and takes the next job (one not begun yet is answered without running). A worker
  that has not answered within ``CANCEL_GRACE_S`` is killed (a new one starts in its place), so cancel takes
  effect within half a second; the jobs sent behind its job had not begun and go to another worker;
- a worker that dies (killed, out of memory, a crash in a codec) fails its job with one sentence; the
  owner removes the dirs whose markers name that worker (``workspace.sweep_owned_by``), the pool starts a
  replacement and the batch goes on;
- a worker ignores Ctrl-C (its owner decides), and exits by itself when the process that started it dies
  (its dirs are then stale by their markers: the sweep at the next start removes them).

Traffic is batched: a worker sends one message per ``FLUSH_INTERVAL`` at most (the latest progress and the
log records since the last message), and a job that ends sooner sends one message in all, its result with
whatever came before it. The connection carries our own objects between our own processes only.

Standard library only (``multiprocessing`` with the ``spawn`` context, which frozen bundles and every
platform support; ``concurrent.futures.ProcessPoolExecutor`` has no per-task cancel of a running task and
breaks the whole pool when one worker dies).
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .workspace import process_identity, sweep_owned_by

if TYPE_CHECKING:       # pipeline is imported where it is used: a worker imports it once, when it starts
    from .pipeline import CancelToken, Job, JobResult, ProgressCallback
    from .settings import Settings

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 0.25       # then the worker is killed: cancel must take effect within 0.5 s
PREFETCH_MAX_BYTES = 8 << 20    # a job is sent behind a running one this small (one that waits behind a big
                                # job would wait long, and a cancel of it would wait for that job too)
SPARE_LINGER_S = 0.5        # a worker keeps a spare temp dir this long for a next job that was announced
FLUSH_INTERVAL = 0.1        # seconds between a worker's messages while a job runs
_CONTEXT = multiprocessing.get_context("spawn")
_POLL_S = 0.02              # how often a waiting owner looks at its cancel flag
# A window's workers run this much below the window (Unix niceness; Windows: below normal), as a desktop
# app's background work should: its event loop gets a core when it has work, the jobs take all the rest.
# With two workers busy on two cores (bench/ui_batch.py, the 681 wild captures, 20 runs each, alternated),
# the median of the runs' longest stalls went from 33 to 29 ms; the run took as long.
BACKGROUND_NICE = 4


class WorkerDied(Exception):
    """The worker process running a job ended (killed, crashed) before it reported an outcome."""

    def __init__(self, exitcode):
        super().__init__(f"the worker process ended unexpectedly (exit code {exitcode})")
        self.exitcode = exitcode


def _context(fork: bool):
    """``fork`` (Linux, asked for, and no other thread yet: a forked child inherits the engine's imports and
    starts in ~10 ms instead of ~0.35 s) or ``spawn`` (everywhere else: a fork beside threads, a Qt window's
    for one, may copy a lock some thread holds)."""
    if fork and sys.platform.startswith("linux") and threading.active_count() == 1:
        return multiprocessing.get_context("fork")      # (it flushes stdout first: nothing is written twice)
    return _CONTEXT


class _Worker:
    """One worker process and the owner's end of its connection."""

    def __init__(self, fork: bool = False, background: bool = False):
        context = _context(fork)
        self.conn, child_conn = context.Pipe(duplex=True)
        self.proc = context.Process(target=_worker_main, args=(child_conn, os.getpid(), background),
                                    name="pktmask-worker", daemon=True)
        self.proc.start()
        child_conn.close()
        self.pid = self.proc.pid
        self.identity = process_identity(self.pid)     # as the markers of its jobs' workspaces name it
        self.jobs = 0

    def alive(self) -> bool:
        return self.proc.is_alive()

    def kill(self) -> None:
        try:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(5)
        finally:
            self.conn.close()

    def exit(self, timeout: float) -> None:
        """Ask an idle worker to exit; kill it if it has not within ``timeout``."""
        try:
            self.conn.send(("exit",))
        except OSError:
            pass
        self.proc.join(timeout)
        self.kill()


class WorkerPool:
    """Worker processes for jobs (``pipeline.run_job``), reused from job to job.

    ``size``: how many to keep (``warm`` starts them ahead of need; a worker beyond ``size`` that becomes
    idle exits). ``fork``: see ``_context``; the caller imports the engine first (``preload()``), so that
    the workers inherit it. ``run_job`` never waits for a free worker: the caller limits how many jobs run
    at once, and a job finding none idle starts one. Thread-safe.
    """

    def __init__(self, size: int = 1, fork: bool = False, background: bool = False):
        self.size = max(1, int(size))
        self.fork = fork            # start workers by fork while the process has no other thread (the CLI)
        self.background = background    # the workers yield to the owner's other work (a window's event loop)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.started = 0            # worker processes started, replacements included (tests, bench)

    # --- workers ---------------------------------------------------------------------------------
    def warm(self, count: int | None = None) -> None:
        """Start workers until ``count`` (default: ``size``) exist: their start-up overlaps other work."""
        want = self.size if count is None else count
        with self._lock:
            while not self._closed and len(self._idle) + len(self._busy) < want:
                self._idle.append(self._start())

    def resize(self, size: int) -> None:
        """Keep at most ``size`` workers from now on (idle ones beyond it exit now)."""
        with self._lock:
            self.size = max(1, int(size))
            extra = []
            while self._idle and len(self._idle) + len(self._busy) > self.size:
                extra.append(self._idle.pop())
        for worker in extra:
            worker.exit(1.0)

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in list(self._idle) + list(self._busy)]

    def _start(self) -> _Worker:
        self.started += 1
        return _Worker(self.fork, self.background)

    def _acquire(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            worker = None
            while self._idle:
                candidate = self._idle.pop()
                if candidate.alive():
                    worker = candidate
                    break
                candidate.kill()        # died while idle (killed from outside): replace it
            if worker is None:
                worker = self._start()
            self._busy.add(worker)
            return worker

    def _release(self, worker: _Worker, healthy: bool) -> None:
        with self._lock:
            self._busy.discard(worker)
            keep = healthy and not self._closed and len(self._idle) + len(self._busy) < self.size
            if keep:
                self._idle.append(worker)
            replace = not healthy and not self._closed and len(self._idle) + len(self._busy) < self.size
        if not keep:
            if healthy:
                worker.exit(1.0)
            else:
                worker.kill()
        if replace:
            self.warm()             # the next job need not wait for a worker's start-up

    def close(self, timeout: float = 2.0) -> None:
        """Stop every idle worker (bounded); a busy one is killed when its job's owner lets it go."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            try:
                worker.conn.send(("exit",))
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for worker in idle:
            worker.proc.join(max(0.0, deadline - time.monotonic()))
            worker.kill()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- jobs ------------------------------------------------------------------------------------
    def run_job(self, job: Job, settings: Settings, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None,
                on_log: Callable[[logging.LogRecord], None] | None = None) -> JobResult:
        """``pipeline.run_job(job, settings)`` on a worker; blocking; never raises for a problem with the
        file: the ``JobResult`` says what happened (a dead worker: failed, with one sentence)."""
        items = [LaneJob(job, settings, progress, cancel, on_log)]
        results: list = []
        self.run_lane(lambda: items.pop() if items else None, lambda _item, result: results.append(result),
                      more=False)
        return results[0]

    def run_lane(self, take: Callable[[], LaneJob | None], finish: Callable[[LaneJob, JobResult], None],
                 more: bool = True) -> None:
        """Run the jobs ``take()`` gives (None: none now) one after another on one worker; ``finish(item,
        result)`` gets each result, in order. Blocking; never raises for a problem with a file.

        While a small job runs (``PREFETCH_MAX_BYTES``), the next one is already sent: the worker goes from
        job to job without waiting for this process, whose threads may be slow to wake (the window's share the
        GIL with its UI thread: ~1.6 ms a job, a third of a small capture's). A job sent behind one whose worker
        dies or is killed has not begun: it goes to a new worker. ``more``: the worker keeps its emptied temp
        dir from job to job (``workspace.keep_spare_dir``) and removes it when the lane ends.
        """
        pending: deque[LaneJob] = deque()       # sent to the worker, in order; the first one runs
        while True:
            for item in [i for i in pending if i.cancel is not None and i.cancel.is_set()]:
                pending.remove(item)            # never begun: nothing to stop
                finish(item, _cancelled(item))
            if not pending:                     # (no worker is taken for a lane with nothing to run)
                item = take()
                if item is None:
                    return
                pending.append(item)
                continue
            worker = self._acquire()
            healthy = False
            try:
                healthy = self._lane(worker, pending, take, finish, more)
            finally:
                self._release(worker, healthy)
            if healthy:
                return

    def _lane(self, worker: _Worker, pending: deque, take, finish, more: bool) -> bool:
        """The lane on one worker; True when it ended with the worker fit for more (nothing sent and nothing
        to take), False when the worker died or was killed (the job it ran has its result; ``pending`` holds
        the jobs sent behind it)."""
        try:
            for item in pending:
                self._send(worker, item, more)
            while True:
                while not pending or (len(pending) == 1 and pending[0].size <= PREFETCH_MAX_BYTES):
                    item = take()
                    if item is None:
                        break
                    if item.cancel is not None and item.cancel.is_set():
                        finish(item, _cancelled(item))
                        continue
                    pending.append(item)
                    self._send(worker, item, more)
                if not pending:
                    if more:
                        self._release_spare(worker)
                    return True
                head = pending[0]
                if not head.started:
                    head.started = time.monotonic()
                    if head.begin is not None and not (head.cancel is not None and head.cancel.is_set()):
                        head.begin()            # (one cancelled while it waited is answered, never begun)
                final, alive = self._relay(worker, pending)
                pending.popleft()
                finish(head, self._outcome(worker, head, final))
                if not alive:
                    return False
        except WorkerDied as died:
            head = pending.popleft()
            head.started = head.started or time.monotonic()
            finish(head, self._outcome(worker, head, ("died", died)))
            return False

    @staticmethod
    def _send(worker: _Worker, item: LaneJob, more: bool) -> None:
        worker.jobs += 1
        item.job_id = worker.jobs
        item.stop_sent = False
        item.backlog = []
        try:
            worker.conn.send(("job", item.job_id, item.job, item.settings, more))
        except OSError:
            worker.proc.join(1)
            raise WorkerDied(worker.proc.exitcode) from None

    @staticmethod
    def _release_spare(worker: _Worker) -> None:
        """Have the worker remove the temp dir it kept for a next job, and wait (bounded) until it has."""
        try:
            worker.conn.send(("release",))
            deadline = time.monotonic() + 1.0
            while worker.conn.poll(max(0.0, deadline - time.monotonic())):
                if worker.conn.recv()[0] == "released":
                    return
        except (EOFError, OSError):
            pass

    @staticmethod
    def _outcome(worker: _Worker, item: LaneJob, final) -> JobResult:
        from .pipeline import JobResult

        if final[0] == "done":
            return final[1]
        # The worker was killed (cancel not answered in time) or died: remove what its job left.
        sweep_owned_by(worker.identity, item.settings.temp_root_path(), [_output_folder(item.job)])
        result = JobResult(input=str(item.job.input), elapsed_s=time.monotonic() - item.started)
        if final[0] == "cancelled":
            result.status = result.error = "cancelled"
        else:
            result.error_kind, result.error = "internal", str(final[1])
            logging.LoggerAdapter(log, {"job": Path(item.job.input).name}).error("%s", final[1])
        return result

    def _relay(self, worker: _Worker, pending: deque):
        """Hand the worker's messages for the running job (``pending[0]``) to its callbacks until its final
        one; pass a cancel of a job sent behind it on. Returns (final message, whether the worker lives on)."""
        head = pending[0]
        for message in head.backlog:        # what came while the job before it was being finished
            final = _deliver(message, head.job_id, head.progress, head.on_log)
            if final is not None:
                return final, True
        head.backlog = []
        conn, sentinel = worker.conn, worker.proc.sentinel
        while True:
            if head.cancel is not None and head.cancel.is_set():
                return self._stop(worker, pending)
            _send_stops(worker, pending, 1)
            ready = wait_for([conn, sentinel], _POLL_S)
            if conn in ready or (sentinel in ready and conn.poll(0)):
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    worker.proc.join(1)
                    raise WorkerDied(worker.proc.exitcode) from None
                if _keep_for_later(message, pending):
                    continue
                final = _deliver(message, head.job_id, head.progress, head.on_log)
                if final is not None:
                    return final, True
            elif sentinel in ready:
                worker.proc.join(1)
                raise WorkerDied(worker.proc.exitcode)

    def _stop(self, worker: _Worker, pending: deque):
        """Cancel: ask the worker to stop the running job (its run_job removes what the job made); kill it when
        it has not answered within the grace. Returns (final message, whether the worker lives on)."""
        head = pending[0]
        _send_stops(worker, pending, 0)
        deadline = time.monotonic() + CANCEL_GRACE_S
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0 or not worker.conn.poll(left):
                    break
                message = worker.conn.recv()
            except (EOFError, OSError):
                break
            if _keep_for_later(message, pending):
                continue
            final = _deliver(message, head.job_id, None, head.on_log)
            if final is not None:
                return final, True
        # Not stopped in time (or died): kill it, so that nothing of the job writes on after its cleanup.
        worker.kill()
        return ("cancelled",), False


@dataclass(eq=False)
class LaneJob:
    """One job for ``WorkerPool.run_lane``: what to run and where its events go."""

    job: Job
    settings: Settings
    progress: ProgressCallback | None = None
    cancel: CancelToken | None = None
    on_log: Callable[[logging.LogRecord], None] | None = None
    size: int = 0                   # the input's bytes: the next job is sent behind it only when it is small
    begin: Callable[[], None] | None = None     # called when the job begins on the worker
    tag: Any = None                 # the caller's
    job_id: int = 0
    started: float = 0.0
    stop_sent: bool = False
    backlog: list = field(default_factory=list)    # its messages that came before the one ahead ended


def _keep_for_later(message, pending: deque) -> bool:
    """A message of a job sent behind the running one (its passes run while the one ahead is published):
    kept for when it is the running one. True when kept."""
    if message[0] != "batch" or message[1] == pending[0].job_id:
        return False
    for item in itertools.islice(pending, 1, None):
        if item.job_id == message[1]:
            item.backlog.append(message)
            return True
    return False


def _cancelled(item: LaneJob) -> JobResult:
    from .pipeline import JobResult

    return JobResult(input=str(item.job.input), status="cancelled", error="cancelled")


def _send_stops(worker: _Worker, pending: deque, first: int) -> None:
    """A ``stop`` for each job from ``pending[first]`` on whose cancel is set (once each)."""
    for item in itertools.islice(pending, first, None):
        if not item.stop_sent and item.cancel is not None and item.cancel.is_set():
            item.stop_sent = True
            try:
                worker.conn.send(("stop", item.job_id))
            except OSError:
                pass


def _output_folder(job) -> Path:
    """The folder a job's output (and so its staging dir) goes to, as pipeline.planned_output puts it."""
    return Path(job.input).parent if job.output_dir is None else Path(job.output_dir) / job.rel_dir


def _deliver(message, job_id: int, progress, on_log):
    """Pass one batch on; return its final message (``("done", JobResult)``) when it holds one."""
    kind, msg_job, events = message[0], message[1], message[2]
    if kind != "batch" or msg_job != job_id:
        return None                 # a late message of an earlier job: nothing to deliver
    final = None
    for event in events:
        what = event[0]
        if what == "progress":
            if progress is not None:
                progress(*event[1:])
        elif what == "log":
            record = logging.makeLogRecord(event[1])
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):
                logger.handle(record)
            if on_log is not None:
                on_log(record)
        else:
            final = event
    return final


# ----------------------------------------------------------------------------------------------------
# The worker side
# ----------------------------------------------------------------------------------------------------

class _Outbox:
    """What a worker sends about its current job: the latest progress and the log records, one message per
    FLUSH_INTERVAL at most. The job's last message (its result) is sent by the publisher once the job is in
    place; what the publish step logs goes with it."""

    def __init__(self, conn):
        self.conn = conn
        self.lock = threading.Lock()
        self.job_id = 0
        self.events: list = []
        self.progress_event = None
        self.next_flush = 0.0
        self.publisher_ident = 0    # the publisher thread: its records belong to the job it publishes
        self.published: list = []

    def begin(self, job_id: int) -> None:
        with self.lock:
            self.job_id, self.events, self.progress_event = job_id, [], None
            self.next_flush = time.monotonic() + FLUSH_INTERVAL

    def progress(self, *args) -> None:
        with self.lock:
            self.progress_event = ("progress",) + args
            self._maybe_flush()

    def log(self, data: dict) -> None:
        with self.lock:
            if self.publisher_ident and threading.get_ident() == self.publisher_ident:
                self.published.append(("log", data))
                return
            self.events.append(("log", data))
            self._maybe_flush()

    def _maybe_flush(self) -> None:
        if time.monotonic() >= self.next_flush:
            self._flush()

    def _flush(self) -> None:
        events = self.events
        if self.progress_event is not None:
            events.append(self.progress_event)
        self.events, self.progress_event = [], None
        self.next_flush = time.monotonic() + FLUSH_INTERVAL
        if events:
            self.conn.send(("batch", self.job_id, events))

    def hand_over(self) -> list:
        """The current job's passes are over: what it has not sent yet, for its last message."""
        with self.lock:
            events = self.events
            if self.progress_event is not None:
                events.append(self.progress_event)
            self.job_id, self.events, self.progress_event = 0, [], None
            return events

    def send_final(self, job_id: int, events: list) -> None:
        with self.lock:
            published, self.published = self.published, []
            self.conn.send(("batch", job_id, events + published))


class _Publisher:
    """Finishes jobs on a thread of its own, in the order they came: each job's publish step (its output synced
    and moved into place, its temp dir removed; ``pipeline.start_job``), then its last message. The worker's
    main thread meanwhile runs the next job's passes: the sync waits for the disk, not the processor."""

    def __init__(self, outbox: _Outbox):
        self.outbox = outbox
        self.queue: deque = deque()
        self.cond = threading.Condition()
        self.busy = 0
        self.thread = threading.Thread(target=self._run, name="pktmask-publish", daemon=True)
        self.thread.start()

    def put(self, job_id: int, events: list, finish: Callable[[], JobResult]) -> None:
        with self.cond:
            self.busy += 1
            self.queue.append((job_id, events, finish))
            self.cond.notify_all()

    def wait(self) -> None:
        """Until every job handed over has sent its result."""
        with self.cond:
            while self.busy:
                self.cond.wait()

    def close(self) -> None:
        self.wait()
        with self.cond:
            self.queue.append(None)
            self.cond.notify_all()
        self.thread.join(5)

    def _run(self) -> None:
        self.outbox.publisher_ident = threading.get_ident()
        while True:
            with self.cond:
                while not self.queue:
                    self.cond.wait()
                item = self.queue.popleft()
            if item is None:
                return
            job_id, events, finish = item
            try:
                result = finish()
                self.outbox.send_final(job_id, events + [("done", result)])
            except Exception:   # noqa: BLE001 - the owner is gone (or the pipe broke): nothing to tell
                pass
            finally:
                with self.cond:
                    self.busy -= 1
                    self.cond.notify_all()


class _OutboxLogHandler(logging.Handler):
    def __init__(self, outbox: _Outbox):
        super().__init__(logging.DEBUG)
        self.outbox = outbox

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = {"name": record.name, "levelno": record.levelno, "levelname": record.levelname,
                    "msg": record.getMessage(), "args": None, "created": record.created,
                    "msecs": record.msecs, "relativeCreated": record.relativeCreated,
                    "process": record.process, "thread": record.thread, "threadName": record.threadName,
                    "pathname": record.pathname, "lineno": record.lineno, "funcName": record.funcName,
                    "module": record.module, "filename": record.filename, "job": getattr(record, "job", "")}
            if record.exc_info:
                data["exc_text"] = logging.Formatter().formatException(record.exc_info)
            self.outbox.log(data)
        except Exception:
            pass


class _Inbox:
    """The worker's end of the connection. What comes while a job runs (the next job, a release) waits here
    for the main loop; a stop for a job not begun yet is remembered, and that job is then answered as
    cancelled without running."""

    def __init__(self, conn):
        self.conn = conn
        self.waiting: deque = deque()
        self.stopped: set[int] = set()

    def next(self):
        return self.waiting.popleft() if self.waiting else self.conn.recv()

    def ready(self, timeout: float) -> bool:
        return bool(self.waiting) or self.conn.poll(timeout)

    def drain(self, job_id: int) -> bool:
        """Read what has come; True when it holds a stop for ``job_id``."""
        stop = False
        while self.conn.poll():
            message = self.conn.recv()
            if message[0] == "stop":
                if message[1] == job_id:
                    stop = True
                else:
                    self.stopped.add(message[1])
            else:
                self.waiting.append(message)
        return stop


class _StopFlag:
    """A worker's cancel token for one job: set once the owner sends ``stop`` for it (or goes away)."""

    def __init__(self, inbox: _Inbox, job_id: int):
        self.inbox = inbox
        self.job_id = job_id
        self.set = False

    def is_set(self) -> bool:
        if not self.set:
            try:
                self.set = self.inbox.drain(self.job_id)
            except (EOFError, OSError):
                self.set = True         # the owner is gone: stop
        return self.set


def die_with_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` ends (Linux: at once, by the kernel; elsewhere within 0.2 s)."""
    if sys.platform.startswith("linux"):
        try:  # the kernel kills us if the parent dies (PR_SET_PDEATHSIG = 1)
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
        except Exception:
            pass

    def watch():
        while True:
            if os.getppid() != parent_pid:
                os._exit(3)
            time.sleep(0.2)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def preload() -> None:
    """Import what a job needs: the stages' modules and the libraries they import when first used."""
    import numpy  # noqa: F401 - Remove Dupes' and Mask Payloads' tables

    from .stages import all_stages

    all_stages()


def below_the_owner() -> None:
    """This process runs at a lower priority than its owner (best effort; its children inherit it)."""
    try:
        if sys.platform == "win32":
            import psutil

            me = psutil.Process()
            if me.nice() in (psutil.NORMAL_PRIORITY_CLASS, psutil.ABOVE_NORMAL_PRIORITY_CLASS,
                             psutil.HIGH_PRIORITY_CLASS, psutil.REALTIME_PRIORITY_CLASS):
                me.nice(psutil.BELOW_NORMAL_PRIORITY_CLASS)     # (never above an owner that runs lower)
        else:
            os.nice(BACKGROUND_NICE)
    except Exception as exc:   # (OSError, psutil.Error): the jobs run as fast, the window less smoothly
        log.debug("The worker's priority was not lowered: %s", exc)


def _worker_main(conn, parent_pid: int, background: bool = False) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # the owner decides; Ctrl-C reaches it, not us
    die_with_parent(parent_pid)
    if background:
        below_the_owner()
    from .pipeline import JobResult, start_job
    from .workspace import keep_spare_dir

    preload()           # (spawned) the stages' modules now, while the owner is still busy, not in the first job

    outbox = _Outbox(conn)
    root = logging.getLogger("pktmask_gui")
    root.handlers[:] = [_OutboxLogHandler(outbox)]
    root.setLevel(logging.DEBUG)
    root.propagate = False
    inbox = _Inbox(conn)
    publisher = _Publisher(outbox)
    spare = False               # this process keeps an emptied temp dir for the next job
    try:
        while True:
            try:
                if spare and not inbox.ready(SPARE_LINGER_S):
                    publisher.wait()
                    keep_spare_dir(False)       # no job came: nothing stays behind
                    spare = False
                message = inbox.next()
            except (EOFError, OSError):
                return                  # the owner is gone
            kind = message[0]
            if kind == "exit":
                return
            if kind == "release":
                publisher.wait()        # the last job's temp dir is back (or gone) before the answer
                keep_spare_dir(False)
                spare = False
                try:
                    with outbox.lock:
                        conn.send(("released",))
                except (OSError, ValueError):
                    return
                continue
            if kind == "stop":
                inbox.stopped.add(message[1])   # a job sent behind the last one, cancelled before it began
                continue
            if kind != "job":
                continue
            _, job_id, job, settings, more = message
            outbox.begin(job_id)
            if job_id in inbox.stopped:
                inbox.stopped.discard(job_id)
                logging.LoggerAdapter(log, {"job": Path(job.input).name}).debug(
                    "Cancelled while it waited behind the job before it: it never began.")
                cancelled = JobResult(input=str(job.input), status="cancelled", error="cancelled")
                publisher.put(job_id, outbox.hand_over(), lambda result=cancelled: result)
                continue
            keep_spare_dir(more)
            spare = more
            finish = start_job(job, settings, progress=outbox.progress, cancel=_StopFlag(inbox, job_id))
            publisher.put(job_id, outbox.hand_over(), finish)
    finally:
        publisher.close()
        keep_spare_dir(False)
