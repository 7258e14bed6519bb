"""Batches beyond one machine: one task per file on a Dask scheduler (the optional extra ``cluster``).

Dask's ``distributed`` (well kept, the field's choice) schedules the tasks, runs a task again when its
worker dies and secures the connection (``tls://``); none of that is written here. Each task runs
``pipeline.run_job`` on its worker with the guarantees of a local job: its own workspace in the worker's
temp folder, the output staged in a private dir of the output folder and linked into place atomically,
nothing left on error or cancel. What this module adds around it:

- an up-front check, on every worker, that each input (the same size and modification time as here) and
  the output folder are reachable: a shared file system mounted at the same path everywhere;
- the anonymization key is read here and travels only inside the task, wrapped so that no ``repr`` shows
  it (Dask logs a failed task's arguments); task keys are opaque (``pktmask-<run>-<n>``), never a file
  name nor a hash of the arguments;
- cancel: Dask cannot stop a running task, so each task polls a Dask Variable of its run and hands the
  engine a cancel token (the engine stops within a batch and cleans up);
- progress and log records come back as Dask events on a topic of the run (``subscribe_topic``);
- a worker killed mid-task leaves its workspace and staging dir: when the run ends every worker sweeps its
  temp folder and the run's output folders (``workspace.sweep_stale``: dirs whose owners are dead
  processes of that host), so the retried task's output is the only thing left.

Qt-free: the CLI (``process --scheduler``, ``process_main`` here) and the window (ui/cluster_runner.py)
use ``ClusterRun``.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from . import __version__
from .pipeline import Job, JobResult

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15          # reaching the scheduler
WORKERS_TIMEOUT_S = 30          # waiting for its first worker
POLL_S = 0.2                    # a running task looks at its run's cancel variable this often
PROGRESS_EVERY_S = 0.25         # a task reports its progress at most this often
CANCEL_WAIT_S = 10              # after cancel, running tasks get this long to report before we stop waiting
INSTALL_HINT = "pip install 'pktmask-gui[cluster]'"


class ClusterError(Exception):
    """The run cannot start on the cluster; the message is one sentence for the user."""


class Secret:
    """The anonymization key inside a task: its repr never shows the bytes (Dask may log task arguments)."""

    __slots__ = ("value",)

    def __init__(self, value: bytes | None):
        self.value = value

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    __str__ = __repr__

    def __reduce__(self):
        return (Secret, (self.value,))


def available() -> bool:
    """Is the extra installed? (Without importing it: the settings dialog asks, and the import takes ~1 s.)"""
    import importlib.util

    return importlib.util.find_spec("distributed") is not None


# --------------------------------------------------------------------------------------------------
# Worker side (runs inside Dask workers; module-level so that workers import it by name)
# --------------------------------------------------------------------------------------------------

class _CancelWatch:
    """The engine's cancel token in a task: set when the run's cancel variable names this task or all."""

    def __init__(self, variable, index: int):
        self.variable = variable
        self.index = index
        self.flag = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="pktmask-cancel-watch", daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.stopped.is_set() and not self.flag.is_set():
            try:
                state = self.variable.get(timeout=5)
                if state and (state.get("all") or self.index in state.get("ids", ())):
                    self.flag.set()
            except Exception:   # noqa: BLE001 - the scheduler is busy or gone: look again
                pass
            self.stopped.wait(POLL_S)

    def is_set(self) -> bool:
        return self.flag.is_set()

    def stop(self) -> None:
        self.stopped.set()


class _EventLogHandler(logging.Handler):
    """Sends this task's engine log records (this thread's only) to the client as Dask events."""

    def __init__(self, worker, topic: str, index: int, level: int):
        super().__init__(level)
        self.worker, self.topic, self.index = worker, topic, index
        self.thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        try:
            self.worker.log_event(self.topic, {"kind": "log", "index": self.index, "level": record.levelno,
                                               "job": str(getattr(record, "job", "")),
                                               "message": record.getMessage()})
        except Exception:   # noqa: BLE001 - a log line must never fail the job
            pass


def run_task(job: Job, settings, secret: Secret, index: int, run_id: str, level: int) -> JobResult:
    """One file on a worker: pipeline.run_job with the run's cancel token, progress and log records sent
    back as events. Never raises (Dask would log the arguments): every failure is a failed result."""
    from distributed import Variable, get_client, get_worker

    from .pipeline import run_job

    watch = handler = None
    engine_log = logging.getLogger("pktmask_gui")
    try:
        worker = get_worker()
        topic = f"pktmask-{run_id}"
        watch = _CancelWatch(Variable(f"pktmask-cancel-{run_id}", client=get_client()), index)
        if watch.flag.wait(0) or _cancelled_now(watch):
            return JobResult(input=str(job.input), status="cancelled", error="cancelled")
        handler = _EventLogHandler(worker, topic, index, level)
        engine_log.addHandler(handler)
        if engine_log.getEffectiveLevel() > level:
            engine_log.setLevel(level)
        last = [0.0]

        def progress(phase, done, total, packets):
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY_S or done >= total:
                last[0] = now
                worker.log_event(topic, {"kind": "progress", "index": index, "phase": str(phase),
                                         "done": int(done), "total": int(total), "packets": int(packets)})

        job = copy.copy(job)
        job.key = secret.value
        job.reuse_identical = True      # run again after its worker died having published: no "-1" copy
        worker.log_event(topic, {"kind": "started", "index": index, "worker": str(worker.address)})
        with streaming_allocator():
            return run_job(job, settings, progress=progress, cancel=watch)
    except BaseException as exc:  # noqa: BLE001 - one sentence, never the arguments
        return JobResult(input=str(job.input), status="failed", error_kind="internal",
                         error=f"internal error on the Dask worker ({type(exc).__name__})")
    finally:
        if watch is not None:
            watch.stop()
        if handler is not None:
            engine_log.removeHandler(handler)


# glibc's malloc as its own dynamic thresholds would settle for a job's buffers (a batch of records, its
# output): below 32 MiB from the heap, and up to twice that kept when freed (glibc's DEFAULT_MMAP_THRESHOLD_MAX)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_STREAMING_MMAP, _STREAMING_TRIM = 32 << 20, 64 << 20
_GLIBC_MMAP_DEFAULT = 128 << 10
_allocator_lock = threading.Lock()
_allocator_users = 0


@contextmanager
def streaming_allocator():
    """While a job runs here, glibc's malloc keeps the memory a job frees for its next batch.

    Why: Dask's nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (its
    ``distributed.nanny.pre-spawn-environ``). A threshold set that way also turns off glibc's dynamic
    thresholds, so every buffer above 128 KiB is mmap'ed and unmapped again and every batch faults its pages
    back in: measured on a 32 MB capture, all three operations, in a Dask worker: 85,000 minor page faults,
    0.35 s of system time, 1.8-2.0 s a job; with this, ~100 faults, 0.05 s, 1.5 s (the same job in a plain
    process: 1.1-1.3 s). The worker's own setting is put back when its last job here ends, and the memory
    freed is returned to the system then (``malloc_trim``), as Dask wants. Elsewhere (no such setting, not
    glibc): nothing is done."""
    global _allocator_users
    frozen = _frozen_trim_threshold()
    libc = _glibc() if frozen is not None else None
    if libc is None:
        yield
        return
    with _allocator_lock:
        _allocator_users += 1
        if _allocator_users == 1:
            libc.mallopt(_M_MMAP_THRESHOLD, _STREAMING_MMAP)
            libc.mallopt(_M_TRIM_THRESHOLD, _STREAMING_TRIM)
    try:
        yield
    finally:
        with _allocator_lock:
            _allocator_users -= 1
            if _allocator_users == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_MMAP_DEFAULT)
                libc.mallopt(_M_TRIM_THRESHOLD, frozen)
                libc.malloc_trim(0)


def _frozen_trim_threshold() -> int | None:
    """The trim threshold this process was started with (``MALLOC_TRIM_THRESHOLD_``, a number), when it set
    no mmap threshold of its own; else None: the thresholds are glibc's own, or not ours to guess."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return None
    try:
        return int(os.environ["MALLOC_TRIM_THRESHOLD_"])
    except (KeyError, ValueError):
        return None


def _glibc():
    """The C library when it is glibc (which has ``mallopt`` with these meanings), else None."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (AttributeError, ValueError, OSError):
        return None


def _cancelled_now(watch: _CancelWatch) -> bool:
    """Look at the cancel variable once before starting (a task started after Ctrl-C ends at once)."""
    try:
        state = watch.variable.get(timeout=5)
    except Exception:   # noqa: BLE001
        return False
    return bool(state and (state.get("all") or watch.index in state.get("ids", ())))


def check_paths(inputs: list, folders: list, probe: str, version: str) -> list[str]:
    """On a worker: what it cannot reach, as sentences (empty: all good). ``inputs``: (path, size, mtime_ns)
    as the client sees them; ``folders``: output folders it must write in; ``probe``: a file the client
    put in the first output folder, proving it is the same folder here."""
    from . import __version__ as here

    problems = []
    if here != version:
        problems.append(f"runs pktmask-gui {here}, not {version} as this computer does")
    for path, size, mtime_ns in inputs:
        try:
            st = os.stat(path)
        except OSError as exc:
            problems.append(f"cannot see the input {path} ({exc.strerror or exc})")
            continue
        if st.st_size != size or st.st_mtime_ns != mtime_ns:
            problems.append(f"sees another file at {path} (size or modification time differ)")
    for folder in folders:
        if not os.path.isdir(folder):
            problems.append(f"cannot see the output folder {folder}")
        elif not os.access(folder, os.W_OK | os.X_OK):
            problems.append(f"cannot write in the output folder {folder}")
    if probe and folders and os.path.isdir(folders[0]) and not os.path.exists(os.path.join(folders[0], probe)):
        problems.append(f"sees another folder at {folders[0]} (not the one this computer writes to)")
    return problems[:3]


def sweep_worker(folders: list) -> int:
    """On a worker, at the end of a run: remove what jobs of this host that died left (temp dirs in its temp
    folder, staging dirs in the output folders)."""
    from .workspace import sweep_stale

    return len(sweep_stale(None, extra_dirs=folders))


# --------------------------------------------------------------------------------------------------
# Client side
# --------------------------------------------------------------------------------------------------

class ClusterRun:
    """One batch on a Dask scheduler. ``open`` connects (and checks), ``submit`` sends one file, results
    arrive through ``on_result(index, JobResult)`` (on a Dask callback thread), progress through
    ``on_progress(index, phase, done, total, packets)`` and engine log lines through
    ``on_log(index, level, job, message)`` (on the client's event-loop thread)."""

    def __init__(self, address: str, settings, key: bytes | None, on_result=None, on_progress=None,
                 on_log=None, on_started=None, log_level: int = logging.WARNING):
        self.address = address.strip()
        self.settings = _for_workers(settings)
        self.secret = Secret(key)
        self.on_result, self.on_progress, self.on_log, self.on_started = on_result, on_progress, on_log, on_started
        self.log_level = log_level
        self.run_id = uuid.uuid4().hex[:12]
        self.client = None
        self.variable = None
        self.futures: dict[int, object] = {}
        self.pending: set[int] = set()
        self.cancelled: set[int] = set()
        self.cancel_all_set = False
        self.folders: set[str] = set()
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)

    # --- connecting ------------------------------------------------------------------------------
    def open(self) -> None:
        if not available():
            raise ClusterError(f"running on a Dask scheduler needs the optional extra: {INSTALL_HINT}")
        if not self.address.startswith(("tcp://", "tls://")):
            raise ClusterError(f"the scheduler address {self.address!r} must start with tcp:// or tls://")
        from distributed import Client, Variable
        from distributed.comm.addressing import parse_host_port

        try:        # nothing listening: say so at once (Dask would retry until its timeout)
            host, port = parse_host_port(self.address.split("://", 1)[1])
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
        except (OSError, ValueError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {self.address} "
                               f"({_reason(exc) if not isinstance(exc, ValueError) else 'no host:port'})") from None
        class _Client(Client):
            def __del__(self):  # one that failed to connect: close quietly (Dask's waits 30 s, then a traceback)
                try:
                    if getattr(self, "_Client__loop", None) is not None:
                        self.close(timeout=2)
                except Exception:   # noqa: BLE001
                    pass

        try:
            self.client = _Client(self.address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, TLS errors: one sentence
            if "ssl_context" in str(exc):
                raise ClusterError(f"cannot reach the Dask scheduler at {self.address}: tls:// needs Dask's TLS "
                                   "settings on this computer (a CA file, a certificate and its key: "
                                   "DASK_DISTRIBUTED__COMM__TLS__CA_FILE, …__CLIENT__CERT, …__CLIENT__KEY or "
                                   "~/.config/dask/distributed.yaml; see the README)") from None
            raise ClusterError(f"cannot reach the Dask scheduler at {self.address} ({_reason(exc)})") from None
        try:
            self.client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
        except Exception:  # noqa: BLE001
            self.close()
            raise ClusterError(f"the Dask scheduler at {self.address} has no worker "
                               f"(none joined within {WORKERS_TIMEOUT_S} s)") from None
        self.variable = Variable(f"pktmask-cancel-{self.run_id}", client=self.client)
        self.variable.set({"all": False, "ids": []})
        self.client.subscribe_topic(f"pktmask-{self.run_id}", self._on_event)

    def workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {})) if self.client is not None else 0

    def check(self, jobs: list[Job]) -> None:
        """Every worker must reach every input (the same file) and every output folder; else ClusterError."""
        folders = sorted({str(_output_folder(job)) for job in jobs})
        inputs = []
        for job in jobs:
            try:
                st = os.stat(job.input)
                inputs.append((str(job.input), st.st_size, st.st_mtime_ns))
            except OSError:
                pass            # the job itself fails with its own sentence
        probe = ""
        if folders:
            probe = f".pktmask-reach-{self.run_id}"
            for folder in folders:
                os.makedirs(folder, exist_ok=True)
            Path(folders[0], probe).touch()
        try:
            answers = self.client.run(check_paths, inputs, folders, probe, __version__, on_error="return")
        finally:
            if probe:
                Path(folders[0], probe).unlink(missing_ok=True)
        for worker, problems in sorted(answers.items()):
            if isinstance(problems, BaseException):
                raise ClusterError(f"the Dask worker {worker} could not check the paths ({_reason(problems)}); "
                                   f"is pktmask-gui installed there ({INSTALL_HINT})?")
            if problems:
                raise ClusterError(f"the Dask worker {worker} {problems[0]}: inputs and the output folder must "
                                   "be on a file system every worker reaches at the same path")
        self.folders.update(folders)

    # --- running ---------------------------------------------------------------------------------
    def submit(self, index: int, job: Job, settings=None) -> None:
        """Send one file; ``settings``: this file's, when not the run's."""
        self.folders.add(str(_output_folder(job)))
        settings = self.settings if settings is None else _for_workers(settings)
        future = self.client.submit(run_task, job, settings, self.secret, index, self.run_id, self.log_level,
                                    key=f"pktmask-{self.run_id}-{index}", pure=False)
        with self.lock:
            self.futures[index] = future
            self.pending.add(index)
        future.add_done_callback(lambda f, i=index, j=job: self._done(i, j, f))

    def _done(self, index: int, job: Job, future) -> None:
        result = _result_of(future, job)
        with self.lock:
            if index not in self.pending:
                return
            self.pending.discard(index)
            self.futures.pop(index, None)
        if self.on_result is not None:
            self.on_result(index, result)
        with self.lock:
            self.idle.notify_all()

    def _on_event(self, event) -> None:
        _timestamp, msg = event
        try:
            kind, index = msg.get("kind"), int(msg.get("index"))
            if kind == "progress" and self.on_progress is not None:
                self.on_progress(index, msg["phase"], msg["done"], msg["total"], msg["packets"])
            elif kind == "log" and self.on_log is not None:
                self.on_log(index, int(msg["level"]), msg["job"], msg["message"])
            elif kind == "started" and self.on_started is not None:
                self.on_started(index, msg["worker"])
        except Exception:   # noqa: BLE001 - a malformed event must not break the client's loop
            log.debug("ignored a cluster event", exc_info=True)

    def running(self) -> int:
        with self.lock:
            return len(self.pending)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every submitted task has reported (True) or ``timeout`` passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while self.pending:
                left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if left <= 0:
                    return False
                self.idle.wait(left)
        return True

    # --- cancel and close ------------------------------------------------------------------------
    def cancel(self, index=None) -> None:
        """Cancel one task (``index``), several (a list of indices) or all (None): running tasks stop within
        a batch and clean up, tasks not started yet end at once when they start."""
        if self.variable is None:
            return
        with self.lock:
            if index is None:
                self.cancel_all_set = True
            else:
                self.cancelled.update([index] if isinstance(index, int) else index)
            state = {"all": self.cancel_all_set, "ids": sorted(self.cancelled)}
        try:
            self.variable.set(state)
        except Exception:   # noqa: BLE001 - the scheduler is gone: nothing runs there any more
            log.debug("could not set the cancel variable", exc_info=True)

    def cancel_futures(self) -> None:
        """Cancel every future still pending (after ``cancel``, those are tasks that have not reported)."""
        with self.lock:
            futures = list(self.futures.values())
        if futures and self.client is not None:
            try:
                self.client.cancel(futures)
            except Exception:   # noqa: BLE001
                log.debug("could not cancel futures", exc_info=True)

    def close(self) -> None:
        """Sweep what dead workers left (every worker, this run's output folders), then disconnect."""
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if self.folders:
                client.run(sweep_worker, sorted(self.folders), on_error="ignore")
            if self.variable is not None:
                self.variable.delete()
            client.unsubscribe_topic(f"pktmask-{self.run_id}")
        except Exception:   # noqa: BLE001 - the scheduler went away: the next run's sweep removes the rest
            log.debug("cluster cleanup failed", exc_info=True)
        finally:
            try:
                client.close(timeout=5)
            except Exception:   # noqa: BLE001
                pass


def _for_workers(settings):
    settings = copy.deepcopy(settings)
    settings.temp_root = ""         # each worker uses its own temp folder (a path here means nothing there)
    settings.dask_scheduler = ""
    return settings


def _output_folder(job: Job) -> Path:
    base = Path(job.input).parent if job.output_dir is None else Path(job.output_dir) / job.rel_dir
    return base


def _result_of(future, job: Job) -> JobResult:
    """The task's JobResult, or a failed/cancelled one for what happened to the task itself."""
    try:
        if future.cancelled():
            return JobResult(input=str(job.input), status="cancelled", error="cancelled")
        result = future.result()
    except Exception as exc:  # noqa: BLE001 - KilledWorker, a lost scheduler, CancelledError
        name = type(exc).__name__
        if name == "CancelledError" or name.endswith("CancelledError"):
            return JobResult(input=str(job.input), status="cancelled", error="cancelled")
        if name == "KilledWorker":
            return JobResult(input=str(job.input), status="failed", error_kind="internal",
                             error="every Dask worker that took this file died while processing it "
                                   "(no output was written)")
        return JobResult(input=str(job.input), status="failed", error_kind="internal",
                         error=f"the Dask task failed ({name})")
    if not isinstance(result, JobResult):
        return JobResult(input=str(job.input), status="failed", error_kind="internal",
                         error="the Dask worker returned no result")
    return result


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------------------
# The command line: process --scheduler ADDRESS
# --------------------------------------------------------------------------------------------------

class _RunConsole:
    """One progress line for the whole run (by input size) and the usual result lines, on stderr."""

    def __init__(self, console, sizes: list[int]):
        self.console = console
        self.sizes = sizes
        self.fractions: dict[int, float] = {}
        self.finished = 0
        self.workers = 0
        self.next_draw = 0.0

    def update(self, index, _phase, done, total, _packets) -> None:
        c = self.console
        if not c.tty:
            return
        with c.lock:
            if index in self.fractions and self.fractions[index] >= 1.0:
                return
            self.fractions[index] = min(1.0, done / total) if total else 0.0
            now = time.monotonic()
            if now >= self.next_draw:
                self.next_draw = now + 0.1
                self._draw()

    def _draw(self) -> None:
        total = sum(max(s, 1) for s in self.sizes) or 1
        done = sum(max(self.sizes[i], 1) * f for i, f in self.fractions.items())
        frac = min(1.0, done / total)
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        line = (f"\r[{bar}] {frac * 100:5.1f}%  {self.finished}/{len(self.sizes)} files done  "
                f"on {self.workers} Dask worker{'s' if self.workers != 1 else ''}")
        sys.stderr.write(line[:120])
        sys.stderr.flush()
        self.console.bar_shown = True

    def result(self, index, result) -> None:
        from .cli import describe_result

        with self.console.lock:
            self.fractions[index] = 1.0
            self.finished += 1
        self.console.line(describe_result(result))
        if self.console.tty:
            with self.console.lock:
                self._draw()


def process_main(args, settings, operations: list[str]) -> int:
    """``pktmask-gui process --scheduler ADDRESS ...``: the same inputs, outputs, result lines, --json and
    exit codes as a local run; 2 also when the scheduler or a path cannot be reached (nothing was run)."""
    from . import cli
    from .pipeline import find_captures
    from .workspace import sweep_stale

    def error(text: str) -> int:
        sys.stderr.write(f"pktmask-gui process: error: {text}\n")
        return cli.EXIT_USAGE

    if not available():
        return error(f"--scheduler needs the optional extra: {INSTALL_HINT}")
    if args.export_mapping:
        return error("--export-mapping cannot be used with --scheduler (every worker would write the table); "
                     "export the mapping from a local run with the same key")
    key = None
    if "anonymize" in operations:
        from . import keys
        try:
            key = keys.load_key_file(Path(args.key_file)) if args.key_file else keys.load_or_create_key()
        except (OSError, ValueError) as exc:
            reason = exc.strerror.lower() if isinstance(exc, OSError) and exc.strerror else str(exc)
            return error(f"cannot use the key file {args.key_file}: {reason}" if args.key_file
                         else f"cannot read or create your anonymization key: {reason}")
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        return error(f"the output path {out_dir} is a file, not a folder: -o names the folder the sanitized "
                     "copies go to")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return error(f"cannot create the output folder {out_dir}: {exc.strerror or exc}")
    sweep_stale(None, extra_dirs=[out_dir])
    missing = [p for p in args.paths if not os.path.lexists(p)]
    found = find_captures([p for p in args.paths if os.path.lexists(p)])
    if not found and not missing:
        sys.stderr.write("pktmask-gui process: error: no capture files (.pcap, .pcapng, .cap, also gzip, zstd or "
                         f"lz4 compressed) in {', '.join(args.paths)}\n")
        return cli.EXIT_FAILED
    resolved_out = out_dir.resolve()
    # Workers see absolute paths only; results are shown with the paths as the user gave them.
    jobs = [Job(input=Path(path).resolve(), output_dir=resolved_out, stages=operations, rel_dir=rel)
            for path, rel in found]
    shown = [str(path) for path, _rel in found]

    console = cli._Console(len(jobs) + len(missing), args.quiet or False)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    sizes = []
    for job in jobs:
        try:
            sizes.append(os.stat(job.input).st_size)
        except OSError:
            sizes.append(0)
    run_console = _RunConsole(console, sizes)
    results: list = [None] * len(jobs)

    def on_result(index, result):
        result.input = shown[index]
        if result.output and result.output.startswith(str(resolved_out) + os.sep):
            result.output = str(out_dir / result.output[len(str(resolved_out)) + 1:])
        results[index] = result
        run_console.result(index, result)

    def on_log(_index, levelno, job, message):
        if levelno >= level:
            console.line(f"{logging.getLevelName(levelno).lower()}: {job + ': ' if job else ''}{message}")

    run = ClusterRun(args.scheduler, settings, key, on_result=on_result, on_progress=run_console.update,
                     on_log=on_log, log_level=level)
    previous_term = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    interrupted = False
    try:
        try:
            run.open()
            run.check(jobs)
        except ClusterError as exc:
            return error(str(exc))
        run_console.workers = run.workers()
        if not args.quiet:
            console.line(f"Sending {len(jobs)} file{'s' if len(jobs) != 1 else ''} to the Dask scheduler at "
                         f"{run.address} ({run_console.workers} worker{'s' if run_console.workers != 1 else ''})")
        try:
            for index, job in enumerate(jobs):
                run.submit(index, job)
            while not run.wait(0.1):
                pass
        except KeyboardInterrupt:
            interrupted = True
            console.line("Interrupted: cancelling every task; temp files and partial outputs are being removed …")
            run.cancel()
            deadline = time.monotonic() + CANCEL_WAIT_S
            while time.monotonic() < deadline:
                try:
                    if run.wait(0.1):
                        break
                except KeyboardInterrupt:
                    pass
            run.cancel_futures()
    finally:
        try:
            run.close()
        finally:
            signal.signal(signal.SIGTERM, previous_term)
            console.clear()

    all_results = [JobResult(input=str(p), status="failed", error="the file does not exist") for p in missing]
    for r in all_results:
        console.line(cli.describe_result(r))
    all_results += [r if r is not None else JobResult(input=shown[i], status="cancelled", error="cancelled")
                    for i, r in enumerate(results)]
    written = [r for r in all_results if r.status == "ok" and r.output]
    if written and sys.stderr.isatty() and not args.quiet:
        folders = sorted({str(Path(r.output).parent) for r in written})
        console.line(f"Outputs are in {folders[0]}" if len(folders) == 1
                     else f"Outputs are in {resolved_out} ({len(folders)} folders)")
    if args.json:
        keys_shown = ("input", "output", "status", "error", "error_kind", "warnings", "packets_in", "packets_out",
                      "elapsed_s", "stages", "input_compression", "output_compression")
        files = [{k: r.to_dict()[k] for k in keys_shown} for r in all_results]
        ok = bool(all_results) and all(r.status == "ok" for r in all_results)
        print(json.dumps({"ok": ok, "files": files}, indent=2))
    if interrupted:
        return cli.EXIT_INTERRUPTED
    if not all_results or any(r.status != "ok" for r in all_results):
        return cli.EXIT_FAILED
    return cli.EXIT_OK
