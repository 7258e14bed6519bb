"""The window's runner for a Dask scheduler: the same face as workers.JobRunner, the work on a cluster.

When Settings → General → "Run on a Dask scheduler" holds an address, the run controller starts a run with
a ``ClusterRunner`` instead of a ``JobRunner``: every queued row is sent at once (the scheduler spreads the
files over its workers), each as one task of the engine's cluster.ClusterRun. Connecting, the up-front
path check and submitting happen on a thread of their own; results, progress and log lines arrive on
Dask's threads and reach the UI thread as queued signals, so the event loop never waits for the network.
A failure to connect or a path the workers cannot see fails each row with the one sentence that says why.
"""
from __future__ import annotations

import logging
import threading
import time

from PySide6.QtCore import QCoreApplication, QEventLoop, QObject, QTimer, Signal

from .workers import COUNTS

log = logging.getLogger(__name__)


class ClusterRunner(QObject):
    progress = Signal(int, str, *COUNTS)
    finished = Signal(int, object)
    failed = Signal(int, str)
    idle = Signal()
    unbounded = True            # the controller sends every queued row: the scheduler decides what runs when

    # Dask's and the sender's threads hand results over to the UI thread, where a row stops counting as
    # running only when the controller hears of it.
    _got_result = Signal(int, object)
    _got_failure = Signal(int, str)
    _closed = Signal()

    def __init__(self, address: str, parent=None):
        super().__init__(parent)
        self.address = address
        self.run = None                     # cluster.ClusterRun once connected
        self.error: str | None = None       # why the run could not start (every later row fails with it)
        self._outbox: list = []             # (row id, job, settings) waiting to be sent
        self._active: set[int] = set()      # rows sent (or being sent) that have not reported
        self._lock = threading.Lock()
        self._sender: threading.Thread | None = None
        self._closer: threading.Thread | None = None
        self._cancelled_all = False
        self._to_cancel: set[int] = set()
        self._closed.connect(self._on_closed)
        self._got_result.connect(self._deliver_result)
        self._got_failure.connect(self._deliver_failure)

    # --- state (as JobRunner) --------------------------------------------------------------------
    def running_count(self) -> int:
        with self._lock:
            return len(self._active)

    def threads_alive(self) -> int:
        busy = any(t is not None and t.is_alive() for t in (self._sender, self._closer))
        return self.running_count() + int(busy)

    # --- start / cancel --------------------------------------------------------------------------
    def start(self, row_id: int, job, settings, slots: int = 1, split: int = 1) -> None:  # noqa: ARG002 (JobRunner's face)
        with self._lock:
            self._active.add(row_id)
            self._outbox.append((row_id, job, settings))
        QTimer.singleShot(0, self._send)     # the rows of one fill_slots go out together

    def _send(self) -> None:
        if self._sender is not None and self._sender.is_alive():
            QTimer.singleShot(50, self._send)
            return
        with self._lock:
            batch, self._outbox = self._outbox, []
        if batch:
            self._sender = threading.Thread(target=self._send_batch, args=(batch,), name="pktmask-cluster-send",
                                            daemon=True)
            self._sender.start()

    def _send_batch(self, batch: list) -> None:
        from .. import cluster

        try:
            if self.error is not None:
                raise cluster.ClusterError(self.error)
            if self.run is None:
                key = None
                if any("anonymize" in job.stages for _rid, job, _s in batch):
                    from .. import keys
                    key = keys.load_or_create_key()
                run = cluster.ClusterRun(self.address, batch[0][2], key, on_result=self._on_result,
                                         on_progress=self._on_progress, on_log=self._on_log,
                                         on_started=self._on_started, log_level=logging.INFO)
                run.open()
                self.run = run
                log.info("Connected to the Dask scheduler at %s (%d workers).", self.address, run.workers())
            elif self.run.secret.value is None and any("anonymize" in job.stages for _rid, job, _s in batch):
                from .. import keys
                self.run.secret = cluster.Secret(keys.load_or_create_key())
            self.run.check([job for _rid, job, _s in batch])
            for row_id, job, settings in batch:
                self.progress.emit(row_id, "waiting", 0, 0, 0)     # before its task can report anything
                self.run.submit(row_id, job, settings)
            if self._cancelled_all:
                self.run.cancel()
        except Exception as exc:  # noqa: BLE001 - ClusterError, a key that cannot be read: each row says why
            message = str(exc) if isinstance(exc, cluster.ClusterError) else f"cannot use the cluster: {exc}"
            self.error = message
            log.error("Dask scheduler: %s.", message)
            for row_id, _job, _settings in batch:
                self._got_failure.emit(row_id, message[:1].upper() + message[1:])

    def cancel(self, row_id: int) -> bool:
        with self._lock:
            if row_id not in self._active:
                return False
        self._to_cancel.add(row_id)
        QTimer.singleShot(0, self._flush_cancels)      # Cancel All's rows go out as one message
        return True

    def _flush_cancels(self) -> None:
        rows, self._to_cancel = sorted(self._to_cancel), set()
        run = self.run
        if rows and run is not None:
            threading.Thread(target=run.cancel, args=(rows,), daemon=True).start()

    def cancel_all(self) -> int:
        self._cancelled_all = True
        if self.run is not None:
            threading.Thread(target=self.run.cancel, daemon=True).start()
        return self.running_count()

    def cancel_all_and_wait(self, timeout_s: float = 10.0) -> bool:
        """Cancel every task and wait (bounded, pumping events) until each has reported and the run closed."""
        self._cancelled_all = True
        if self.run is not None:
            self.run.cancel()
        deadline = time.monotonic() + timeout_s
        while self.threads_alive() and time.monotonic() < deadline:
            QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
            time.sleep(0.02)
        run = self.run
        if run is not None and self.running_count():
            run.cancel_futures()
        QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
        return not self.threads_alive()

    # --- from Dask's threads ---------------------------------------------------------------------
    def _on_progress(self, row_id, phase, done, total, packets) -> None:
        self.progress.emit(int(row_id), str(phase), int(done), int(total), int(packets))

    def _on_log(self, _row_id, level, job, message) -> None:
        logging.LoggerAdapter(logging.getLogger("pktmask_gui.cluster"), {"job": job}).log(level, "%s", message)

    def _on_started(self, row_id, worker) -> None:
        log.debug("row %d runs on the Dask worker %s", row_id, worker)

    def _on_result(self, row_id, result) -> None:
        self._got_result.emit(int(row_id), result)

    # --- in the UI thread ------------------------------------------------------------------------
    def _deliver_result(self, row_id: int, result) -> None:
        self._report(row_id)
        self.finished.emit(row_id, result)

    def _deliver_failure(self, row_id: int, message: str) -> None:
        self._report(row_id)
        self.failed.emit(row_id, message)

    def _report(self, row_id: int) -> None:
        with self._lock:
            self._active.discard(row_id)
            last = not self._active and not self._outbox
        if last and self.run is not None:
            # Sweep what dead workers left and disconnect, off the UI thread; then the run is idle.
            run, self.run = self.run, None
            self._closer = threading.Thread(target=self._close, args=(run,), name="pktmask-cluster-close",
                                            daemon=True)
            self._closer.start()
        elif last:
            QTimer.singleShot(0, self._on_closed)

    def _close(self, run) -> None:
        try:
            run.close()
        finally:
            self._closed.emit()

    def _on_closed(self) -> None:
        for thread in (self._closer, self._sender):
            if thread is not None and thread is not threading.current_thread():
                thread.join(1)
        if not self.threads_alive():
            self.idle.emit()
