"""The run controller: one press of Start, from its first job to its summary, with no widget in it.

``RunController`` owns the current ``Run`` (what it runs with, the rows it took, their results), the
``JobRunner`` (workers.py: one thread per job, the job in a worker process of the run's pool) and the
queue rows' states while they run. It starts queued rows while a job slot is free (at most
``settings.parallel_jobs`` at once; rows queued during a run join it), turns each result into the row's
state and its log lines, ends the run once nothing runs or waits, and cancels: one row, everything, or
everything for good when the window closes (``begin_shutdown``, then ``wait_for_jobs``: bounded,
pumping events, so that every job's cleanup is reported before the window goes).

The window asks (``start``, ``fill_slots``, ``cancel_all``, ``cancel_row``, ``begin_shutdown``,
``wait_for_jobs``) and listens (``started``, ``changed``, ``row_finished``, ``cancelling``, ``finished``);
it keeps the widgets, menus and dialogs.
"""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from ..pipeline import Job, JobResult
from ..stages import operations
from .format import human_duration, plural, stage_lines
from .queue import (CANCELLED, CANCELLING, COL_PROGRESS, COL_STATUS, DONE, FAILED, FINISHED, NOT_STARTED, QUEUED,
                    RUNNING, QueueModel, QueueRow)
from .workers import JobRunner

log = logging.getLogger(__name__)


class Run:
    """One press of Start: what it runs with and what it produced (not the engine's record batches)."""

    def __init__(self, operations: list[str], output_dir: Path | None):
        self.operations = operations
        self.output_dir = output_dir          # None: beside each input
        self.started = time.monotonic()
        self.row_ids: dict[int, None] = {}    # the rows it took, in the order they started (asked per row)
        self.results: list[JobResult] = []    # in the order they arrived
        self.finished: float | None = None

    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def counts(self) -> tuple[int, int, int]:
        """(sanitized, failed, cancelled) files."""
        return tuple(sum(r.status == status for r in self.results) for status in ("ok", "failed", "cancelled"))

    def outcome(self) -> str:
        """"3 files sanitized, 1 failed, 2 cancelled"."""
        ok, failed, cancelled = self.counts()
        return ", ".join([f"{plural(ok, 'file')} sanitized"] + ([f"{failed} failed"] if failed else [])
                         + ([f"{cancelled} cancelled"] if cancelled else []))


def titles(names) -> list[str]:
    """The operations' names as the user reads them (Remove Dupes, …)."""
    known = {stage.name: stage.title for stage in operations()}
    return [known.get(n, n) for n in names]


class RunController(QObject):
    started = Signal(object, str)     # a Run began; what it runs, in words ("2 files with Remove Dupes")
    changed = Signal()                # a row's state or the run's changed
    row_finished = Signal(object)     # a row's job reported its result (the QueueRow)
    cancelling = Signal(str)          # Cancel took effect: what it stopped, in words
    finished = Signal(object)         # the Run ended: nothing of it runs and nothing waits

    def __init__(self, model: QueueModel, settings, parent=None):
        super().__init__(parent)
        self.model = model
        # Rows handed to the local runner ahead of need, one per job slot, still queued: a job thread takes
        # one the moment its job ends, without waiting for this thread (row id -> (job, settings copy)).
        self._standby: dict[int, tuple] = {}
        # JobRunner: jobs on this computer; a ClusterRunner (cluster_runner.py) while a run goes to the Dask
        # scheduler named in the settings. Chosen when a run starts.
        self.local_runner = self.runner = JobRunner(self)
        self.settings = settings          # in force: the window sets new ones; each job starts with a copy
        self.run: Run | None = None
        self.last_results: list[JobResult] = []   # the last run's results, in queue order (its summary)
        self.last_elapsed: float | None = None
        self.closing = False              # the window is closing: nothing starts any more
        # Progress arrives up to 20 times a second per job; rows repaint at most 10 times a second.
        self._dirty: set[int] = set()
        self._repaint = QTimer(self)
        self._repaint.setInterval(100)
        self._repaint.timeout.connect(self._flush_progress)
        self._listen(self.runner)

    def _listen(self, runner) -> None:
        runner.progress.connect(self._on_progress)
        runner.finished.connect(self._on_result)
        runner.failed.connect(self._on_worker_failed)
        runner.idle.connect(self._on_idle)
        if hasattr(runner, "began"):
            runner.began.connect(self._on_began)

    @property
    def settings(self):
        return self._settings

    @settings.setter
    def settings(self, value) -> None:
        """New settings apply from the next job that starts: rows handed ahead of need go back to waiting
        (they had a copy of the old ones); ``fill_slots`` hands them again."""
        self._settings = value
        self._job_settings = None
        self._take_back_standby()

    def _choose_runner(self) -> None:
        """A run starts: on the Dask scheduler of the settings, or here. The previous runner is idle."""
        address = getattr(self.settings, "dask_scheduler", "")
        if address and self.runner.threads_alive() == 0:
            from .cluster_runner import ClusterRunner
            if self.runner is not self.local_runner:
                self.runner.deleteLater()
            self.runner = ClusterRunner(address, self)
            self._listen(self.runner)
            log.info("This run goes to the Dask scheduler at %s.", address)
        elif not address and self.runner is not self.local_runner and self.runner.threads_alive() == 0:
            self.runner.deleteLater()
            self.runner = self.local_runner

    # --- state -----------------------------------------------------------------------------------
    def running_count(self) -> int:
        """Rows running (their job has begun, or begins at once) that have not reported a result yet."""
        return self._held() - len(self._standby)

    def _held(self) -> int:
        """Jobs handed to the runner that have not reported (running, or standing by)."""
        held = getattr(self.runner, "held_count", None)
        return held() if held is not None else self.runner.running_count()

    def threads_alive(self) -> int:
        return self.runner.threads_alive()

    def is_idle(self) -> bool:
        """No run, and every job thread has ended (its cleanup done)."""
        return self.run is None and not self.runner.threads_alive()

    def progress(self) -> tuple[float, int, int]:
        """(fraction of the run's work done, files finished, files) — by size: a file's share of the work is
        its size on disk. Rows still queued count (they will join); rows dropped before they started do not."""
        run = self.run
        if run is None:
            return 0.0, 0, 0
        rows = [r for r in self.model.rows if (r.id in run.row_ids or r.status == QUEUED)
                and not (r.status == CANCELLED and r.error == NOT_STARTED)]
        total = sum(max(r.size, 1) for r in rows) or 1
        done = sum(max(r.size, 1) * (1.0 if r.status in FINISHED else r.fraction()) for r in rows)
        return min(1.0, done / total), sum(r.status in FINISHED for r in rows), len(rows)

    # --- the worker processes --------------------------------------------------------------------
    def warm(self) -> None:
        """Start the local worker processes now (files are queued: a run is likely), so that the run does not
        wait for their start-up; they stay warm between runs (``close_pool``). Not for a Dask run."""
        if not self.closing and not getattr(self.settings, "dask_scheduler", ""):
            self.local_runner.warm(max(1, int(self.settings.parallel_jobs)))

    def settings_changed(self) -> None:
        """New settings: a warm pool follows the number of parallel jobs (or goes, for a Dask scheduler)."""
        if self.local_runner.pool is None:
            return
        if getattr(self.settings, "dask_scheduler", ""):
            if not self.local_runner.threads_alive():
                self.local_runner.close_pool(0)
        else:
            self.warm()

    def close_pool(self, timeout_s: float = 3.0) -> bool:
        """Let the warm worker processes go (nothing runs any more) and wait, bounded, until they have exited."""
        return self.local_runner.close_pool(timeout_s)

    # --- starting --------------------------------------------------------------------------------
    def start(self, operations: list[str], output_dir: Path | None) -> None:
        """Start the queued rows with ``operations``, their outputs in ``output_dir`` (None: beside each
        input). While a run goes on, queued rows join it, with its operations and output folder."""
        if self.closing:
            return
        if self.run is None:
            self._choose_runner()
            self._job_settings = None         # the settings as they are now (a preset may have changed them)
            self.run = Run(list(operations), output_dir)
            what = (f"{plural(sum(r.status == QUEUED for r in self.model.rows), 'file')} with "
                    f"{', '.join(titles(operations))}")
            log.info("Started: %s.", what)
            self.started.emit(self.run, what)
        self.fill_slots()
        self.changed.emit()

    def fill_slots(self) -> None:
        """Start queued rows while a job slot is free (nothing without a run, or while closing), then hand
        the local runner two more rows per slot to stand by."""
        run = self.run
        if run is None or self.closing:
            return
        unbounded = getattr(self.runner, "unbounded", False)
        limit = len(self.model.rows) if unbounded else max(1, int(self.settings.parallel_jobs))
        running = self._held() - len(self._standby)
        # two per slot: a job thread sends the next job to its worker while one runs (WorkerPool.run_lane)
        standby = 0 if unbounded or self.runner is not self.local_runner else 2 * limit
        for row in self.model.queued_rows():
            if row.id in self._standby:
                continue
            now = running < limit and not self._standby     # a thread takes it at once
            if not now and len(self._standby) >= standby:
                break
            # A copy: a settings change while this job runs applies to the next job only. One copy serves every
            # job until the settings change (the window replaces them; presets are locked while a run goes on).
            if self._job_settings is None:
                self._job_settings = copy.deepcopy(self.settings)
            settings = self._job_settings
            job = Job(input=row.path, output_dir=run.output_dir, stages=list(run.operations), rel_dir=row.rel_dir)
            run.row_ids[row.id] = None
            if now:
                self._begin(row, settings)
                running += 1
                # the only file to run now (none running, none left queued): the other slots' cores are its
                # (segments.py)
                alone = running == 1 and not self.model.has_queued()
                self.runner.start(row.id, job, settings, slots=limit, split=limit if alone else 1)
            else:
                self._standby[row.id] = (job, settings)
                self.runner.start(row.id, job, settings, slots=limit)
        self._maybe_finish()

    def _begin(self, row: QueueRow, settings) -> None:
        """The row's job runs now: its row says so."""
        row.status, row.phase = RUNNING, ""
        row.bytes_done = row.bytes_total = row.packets_done = 0
        row.output = row.planned_output(self.run.output_dir if self.run else None, settings)
        self.model.changed(row)

    def _on_began(self, row_id: int) -> None:
        """A job thread took a row that stood by."""
        entry = self._standby.pop(row_id, None)
        row = self.model.row_by_id(row_id)
        if entry is not None and row is not None and row.status == QUEUED:
            self._begin(row, entry[1])
            self.changed.emit()

    def _take_back(self, row: QueueRow) -> bool:
        """A row that stands by goes back to plain waiting: True when the runner gave it back (it never
        ran); False when a job thread had taken it already — it runs now, and the row says so."""
        entry = self._standby.pop(row.id, None)
        if entry is None:
            return True
        if self.runner.withdraw(row.id):
            return True
        if row.status == QUEUED:
            self._begin(row, entry[1])
        return False

    def _take_back_standby(self) -> None:
        for row_id in list(self._standby):
            row = self.model.row_by_id(row_id)
            if row is not None:
                self._take_back(row)
            else:
                self._standby.pop(row_id, None)
                self.runner.withdraw(row_id)

    def release(self, rows) -> list[QueueRow]:
        """Rows the window is about to remove from the queue: those that stood by are taken back; the ones a
        job thread had taken already run now and stay. Returns the rows that may go."""
        return [row for row in rows if self._take_back(row)]

    # --- progress and results --------------------------------------------------------------------
    def _on_progress(self, row_id: int, phase: str, done: int, total: int, packets: int) -> None:
        row = self.model.row_by_id(row_id)
        if row is None or row.status not in (RUNNING, CANCELLING):
            return
        row.phase, row.bytes_done, row.bytes_total, row.packets_done = phase, done, total, packets
        self._dirty.add(row.id)
        if not self._repaint.isActive():
            self._repaint.start()

    def _flush_progress(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for row_id in dirty:
            row = self.model.row_by_id(row_id)
            if row is not None:
                self.model.changed(row, COL_STATUS, COL_PROGRESS + 1)
        if not dirty:
            self._repaint.stop()

    def _on_result(self, row_id: int, result: JobResult) -> None:
        row = self.model.row_by_id(row_id)
        if row is None:
            return
        job_log = logging.LoggerAdapter(log, {"job": row.path.name})
        if result.status == "ok":
            for warning in result.warnings:
                job_log.warning("%s", warning)
            details = " · ".join(stage_lines(result)[:3])
            job_log.info("Done in %.1f s: %s → %s packets, saved as %s. %s", result.elapsed_s,
                         f"{result.packets_in:,}", f"{result.packets_out:,}", Path(result.output).name, details)
        elif result.status == "cancelled":
            job_log.warning("cancelled; its temp files and partial output were removed.")
        else:
            job_log.error("failed: %s", result.error)
        self._take_result(row, result)

    def _on_worker_failed(self, row_id: int, error: str) -> None:
        row = self.model.row_by_id(row_id)
        if row is not None:     # the worker has logged what went wrong
            self._take_result(row, JobResult(input=str(row.path), status="failed", error=error))

    def _take_result(self, row: QueueRow, result: JobResult) -> None:
        row.result = result
        row.status = {"ok": DONE, "cancelled": CANCELLED}.get(result.status, FAILED)
        row.error = "" if result.status == "ok" else (result.error or "")
        if self.run is not None:
            self.run.results.append(result)
        self.model.changed(row)
        self.row_finished.emit(row)
        self.fill_slots()
        self.changed.emit()

    def _on_idle(self) -> None:
        self._maybe_finish()
        self.changed.emit()

    def _maybe_finish(self) -> None:
        run = self.run
        if run is None or self._held() or self.model.has_queued():
            return
        run.finished = time.monotonic()
        self.run = None
        order = {str(r.path): i for i, r in enumerate(self.model.rows)}
        self.last_results = sorted(run.results, key=lambda res: order.get(res.input, len(order)))
        self.last_elapsed = run.elapsed()
        if run.results:
            log.info("Finished in %s: %s.", human_duration(self.last_elapsed), run.outcome())
        self.finished.emit(run)

    # --- cancel ----------------------------------------------------------------------------------
    def cancel_all(self) -> None:
        """Stop every running file (the engine's cancel token: each stops within ~0.5 s and removes its
        temp files and partial output) and drop the queued ones of the run."""
        dropped = 0
        for row in self.model.rows:
            if row.status == QUEUED and self.run is not None and self._take_back(row):
                row.status, row.error = CANCELLED, NOT_STARTED
                dropped += 1
                self.model.changed(row)
        running = 0
        for row in self.model.rows:
            if row.status == RUNNING and self.runner.cancel(row.id):
                row.status = CANCELLING
                running += 1
                self.model.changed(row)
        if running or dropped:
            words = ", ".join(([f"stopping {plural(running, 'running file')}"] if running else [])
                              + ([f"dropped {plural(dropped, 'queued file')}"] if dropped else []))
            log.warning("Cancel: %s.", words)
            self.cancelling.emit(words)
        self._maybe_finish()
        self.changed.emit()

    def cancel_row(self, row: QueueRow) -> None:
        if row.status == QUEUED and self._take_back(row):
            row.status, row.error = CANCELLED, NOT_STARTED
            self.model.changed(row)
        if row.status == RUNNING and self.runner.cancel(row.id):
            row.status = CANCELLING
            self.model.changed(row)
            logging.LoggerAdapter(log, {"job": row.path.name}).warning("cancel requested.")
        self._maybe_finish()
        self.changed.emit()

    # --- closing ---------------------------------------------------------------------------------
    def begin_shutdown(self) -> int:
        """The window closes: nothing starts any more, queued rows are cancelled and running ones marked as
        stopping. Returns how many job threads are still alive (``wait_for_jobs`` ends them)."""
        self.closing = True
        for row in self.model.rows:
            if row.status == QUEUED and self._take_back(row):
                row.status, row.error = CANCELLED, NOT_STARTED
                self.model.changed(row)
            if row.status == RUNNING:
                row.status = CANCELLING
                self.model.changed(row)
        alive = self.runner.threads_alive()
        if alive:
            log.warning("Quitting: cancelling %s.", plural(alive, "running job"))
        self.changed.emit()
        return alive

    def wait_for_jobs(self, timeout_s: float) -> bool:
        """Cancel every job and wait, bounded and pumping events (results, log lines and the end of each
        run still arrive), until every job thread has ended, its temp files removed. True when all did."""
        return self.runner.cancel_all_and_wait(timeout_s)
