"""Run a job's packet work in a child process, so that parallel jobs use every core despite the GIL.

The calling thread (a CLI worker thread or the GUI's QThread worker) stays the job's owner: it holds the
workspace context, so whatever happens to the child — success, error, cancel, a kill — the temp dir and the
partial output are removed by the owner. The child sends progress, log records and its outcome through a
pipe; it ignores Ctrl-C (the owner cancels it), stops at the cancel event within one batch, and is killed if
it does not stop at once. It exits by itself if its parent dies.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .pipeline import (CancelToken, Cancelled, ExecSpec, Job, JobError, JobResult, ProgressCallback, describe_failure,
                       execute, run_job)
from .settings import Settings
from .workspace import JobWorkspace

CANCEL_GRACE_S = 0.25       # then the child is killed: cancel must take effect within 0.5 s
_CONTEXT = multiprocessing.get_context("spawn")


def run_job_process(job: Job, settings: Settings, progress: ProgressCallback | None = None,
                    cancel: CancelToken | None = None,
                    on_log: Callable[[logging.LogRecord], None] | None = None) -> JobResult:
    """Like pipeline.run_job, with the streaming passes in a child process. Blocking.

    Log records from the child are re-emitted through this process's ``logging`` (loggers under
    ``pktmask_gui``), ``record.job`` (the input's file name) as the child's job log set it; ``on_log``, when
    given, also gets them.
    """
    def executor(spec: ExecSpec, progress_cb: ProgressCallback | None, cancel_evt: CancelToken | None,
                 workspace: JobWorkspace) -> dict[str, Any]:
        return _run_child(spec, progress_cb, cancel_evt, workspace, on_log)

    return run_job(job, settings, progress=progress, cancel=cancel, executor=executor)


def _run_child(spec: ExecSpec, progress: ProgressCallback | None, cancel: CancelToken | None,
               workspace: JobWorkspace, on_log: Callable[[logging.LogRecord], None] | None) -> dict[str, Any]:
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    # Cancel goes down a pipe of its own rather than a multiprocessing.Event: no named semaphore to create,
    # register with the resource tracker and clean up; the child polls it once per batch.
    stop_receiver, stop_sender = _CONTEXT.Pipe(duplex=False)
    proc = _CONTEXT.Process(target=_child_main, args=(spec, sender, stop_receiver, os.getpid()),
                            name=f"pktmask-job {spec.display_name}", daemon=True)
    proc.start()
    sender.close()
    stop_receiver.close()
    outcome: dict[str, Any] | None = None
    failure = None
    try:
        assert proc.pid is not None             # started
        workspace.add_owner(proc.pid)
        while True:
            if cancel is not None and cancel.is_set():
                try:
                    stop_sender.send_bytes(b"stop")
                except OSError:
                    pass                # the child is gone already
                proc.join(CANCEL_GRACE_S)
                raise Cancelled()
            if receiver.poll(0.02):
                try:
                    message = receiver.recv()
                except (EOFError, OSError):
                    break
                kind = message[0]
                if kind == "progress":
                    if progress is not None:
                        progress(*message[1:])
                elif kind == "log":
                    record = logging.makeLogRecord(message[1])
                    logger = logging.getLogger(record.name)
                    if logger.isEnabledFor(record.levelno):
                        logger.handle(record)
                    if on_log is not None:
                        on_log(record)
                elif kind == "done":
                    outcome = message[1]
                elif kind == "error":
                    failure = message[1:]
            elif not proc.is_alive() and not receiver.poll(0):
                break           # the child exited and sent nothing more (what it sent last was drained)
        proc.join(5)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        receiver.close()
        stop_sender.close()
    if failure is not None:
        if failure[0] == "cancelled":
            raise Cancelled()
        raise JobError(failure[2], failure[1])
    if outcome is None:
        raise JobError(f"the worker process ended unexpectedly (exit code {proc.exitcode})")
    return outcome


class _PipeLogHandler(logging.Handler):
    def __init__(self, conn: Connection) -> None:
        super().__init__(logging.DEBUG)
        self.conn = conn

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
            self.conn.send(("log", data))
        except Exception:
            pass


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:  # the kernel kills us if the parent dies (PR_SET_PDEATHSIG = 1)
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
        except Exception:
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(3)
            time.sleep(0.2)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class _StopFlag:
    """The child's cancel token: set once the owner writes to the stop pipe (or closes it)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.set = False

    def is_set(self) -> bool:
        if not self.set and self.conn.poll():
            self.set = True
        return self.set


def _child_main(spec: ExecSpec, conn: Connection, stop_conn: Connection, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # the owner decides; Ctrl-C reaches it, not us
    _die_with_parent(parent_pid)
    root = logging.getLogger("pktmask_gui")
    root.handlers[:] = [_PipeLogHandler(conn)]
    root.setLevel(logging.DEBUG)
    root.propagate = False
    job_log = logging.LoggerAdapter(logging.getLogger(__name__), {"job": spec.display_name})

    def progress(*args: Any) -> None:
        conn.send(("progress",) + args)

    try:
        outcome = execute(spec, progress, _StopFlag(stop_conn))
        conn.send(("done", outcome))
    except Cancelled:
        conn.send(("error", "cancelled", "cancelled", "cancelled"))
    except Exception as exc:  # noqa: BLE001 - every failure becomes one sentence for the owner
        kind, sentence = describe_failure(exc)
        if kind == "internal":
            job_log.debug("Unexpected error", exc_info=exc)
        conn.send(("error", "failed", kind, sentence))
    finally:
        conn.close()
