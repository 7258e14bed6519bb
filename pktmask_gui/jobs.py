"""Run a job in a worker process, so that parallel jobs use every core despite the GIL.

The worker processes live in a ``workerpool.WorkerPool``: a batch shares one (started once, kept warm), so
a job pays no process start; a single job without a pool gets a pool of its own, closed after it. The
worker runs the whole job (``pipeline.run_job``: its workspace, passes and publish); the calling thread
relays progress and log records, cancels, and removes what a killed or dead worker left. See
workerpool.py for cancel, dead workers and the batched messages.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from .pipeline import CancelToken, Job, JobResult, ProgressCallback
from .settings import Settings
from .workerpool import CANCEL_GRACE_S, WorkerPool, die_with_parent  # noqa: F401 - re-exported

__all__ = ["run_job_process", "WorkerPool", "CANCEL_GRACE_S"]


def run_job_process(job: Job, settings: Settings, progress: ProgressCallback | None = None,
                    cancel: CancelToken | None = None, on_log: Callable[[logging.LogRecord], None] | None = None,
                    pool: WorkerPool | None = None) -> JobResult:
    """Like pipeline.run_job, in a worker process of ``pool`` (None: a process of its own, ended after
    the job). Blocking.

    Log records from the worker are re-emitted through this process's ``logging`` (loggers under
    ``pktmask_gui``), ``record.job`` (the input's file name) as the worker's job log set it; ``on_log``, when
    given, also gets them.
    """
    if pool is None:
        with WorkerPool(1) as own:
            return own.run_job(job, settings, progress=progress, cancel=cancel, on_log=on_log)
    return pool.run_job(job, settings, progress=progress, cancel=cancel, on_log=on_log)
