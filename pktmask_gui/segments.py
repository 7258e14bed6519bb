"""One capture on several cores: the main pass runs on contiguous segments of the input in worker processes.

The leader (worker 0) makes the first pass over the whole file as ``pipeline.execute`` does — the pre-scan
(Remove Dupes decides, Mask Payloads builds its table), or, without a pre-scan, a pass that decides the frames
to drop or only walks the records (with two segments and forked workers, the follower pre-scans the second
half meanwhile and the leader makes that result its own: firstpass.py) — and notes split points at record
boundaries near equal shares of the file: the byte offset, the packets before it (per stage: before or after
the dropped frames), the section's header blocks (pcapng) and each stage's ``snapshot()`` there. Each other
worker then runs the main pass (stages, writer, self-check) over its segment, read as the capture's header (or
the section's SHB and IDBs) followed by the segment's bytes, with stage instances started from the leader's
``export()`` and the snapshot (``Stage.segment_start``); the leader runs the first segment straight into the
staged output, folds the other segments' ``segment_result()`` into its own stages (``absorb``) and appends
their outputs (less the header each re-wrote). The output and the report are the one-core run's, byte for
byte: see docs/ARCHITECTURE.md, "One file on several cores".

The leader declines (the main pass then runs in it, on one core, and the log says why) when a stage cannot
be cut exactly (``split_hazard``) or is not ``segmentable``; the parent declines up front for small or
compressed files. A result that cannot be folded exactly (``SplitInexact``) makes the leader run the whole
file again on one core. Processes: standard-library multiprocessing (spawn), a pipe each way per worker;
cancel is a message, then a kill after CANCEL_GRACE_S (forks in the CLI on Linux: ``executor(fork=True)``);
a worker that dies fails the file; every file lives
in the job's staging dir, which the workspace removes whatever happens.
"""
from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import struct
import sys
import time
from array import array
from bisect import bisect_right
from multiprocessing.connection import wait as wait_any

from . import firstpass
from .capture import IDB, META, SHB, CaptureReader, section_endian
from .pipeline import (
    _GC_THRESHOLDS,
    BATCH,
    Cancelled,
    ExecSpec,
    JobError,
    _check_stamp,
    _count_packets,
    _finish,
    _MainPass,
    _replay,
    _report,
    describe_failure,
    execute,
)
from .stages import StageContext, stage_by_name
from .workerpool import below_the_owner, die_with_parent
from .workspace import MemoryMonitor

log = logging.getLogger(__name__)

MIN_SPLIT_BYTES = 48 << 20      # below this a file stays on one core (measured: bench.py --split)
MIN_SEGMENT_BYTES = 16 << 20    # no segment smaller: the worker's start costs more than it saves
CANCEL_GRACE_S = 0.25           # then the workers are killed: cancel takes effect within 0.5 s
PROGRESS_INTERVAL = 0.05
_CONTEXT = multiprocessing.get_context("spawn")


class SplitInexact(Exception):
    """A segment's result cannot be folded into the others exactly: the file runs again on one core."""


def add_counts(mine: dict, result: dict, baseline: dict) -> None:
    """``mine[k] += result[k] - baseline[k]`` for every key (counts by name). Tables bounded by reason merge
    with ``stages.ReasonCounts.merge``."""
    for key, n in result.items():
        n -= baseline.get(key, 0)
        if n:
            mine[key] = mine.get(key, 0) + n


def refusal(spec: ExecSpec, jobs: int) -> str | None:
    """Why this job stays on one core before anything is read (None: the leader decides)."""
    if jobs < 2:
        return "one core asked for"
    if spec.input_compression or spec.output_compression:
        return "a compressed capture is read (or written) as one stream"
    try:
        size = os.path.getsize(spec.read_path)
    except OSError:
        return "the file cannot be measured"
    if size < MIN_SPLIT_BYTES:
        return f"smaller than {MIN_SPLIT_BYTES >> 20} MB"
    classes = [stage_by_name(name) for name in spec.stages]
    if all(cls.drops_frames or cls.implicit for cls in classes):
        return "the frames to drop are decided in one ordered pass, which is the whole work here"
    return None


def executor(jobs: int, fallback=None, fork: bool = False, background: bool = False):
    """An executor for ``pipeline.run_job``: the main pass on up to ``jobs`` processes when the file allows,
    else ``fallback`` (None: execute() in this process). ``fork``: the workers are forks of this process (the
    CLI on Linux, whose only other thread waits for the job: nothing a child could inherit is locked); a
    fork starts in ~10 ms where a spawned worker spends ~0.35 s on a Python start and the engine's imports,
    the leader's on the critical path. ``background``: the workers run below this process (a window's,
    workerpool.BACKGROUND_NICE)."""
    def run(spec: ExecSpec, progress, cancel, workspace) -> dict:
        why = refusal(spec, jobs)
        if why is None:
            return _run_parallel(spec, min(jobs, max(2, os.path.getsize(spec.read_path) // MIN_SEGMENT_BYTES)),
                                 progress, cancel, workspace, fork, background)
        if jobs > 1:
            logging.LoggerAdapter(log, {"job": spec.display_name}).debug("One core: %s.", why)
        if fallback is not None:
            return fallback(spec, progress, cancel, workspace)
        return execute(spec, progress, cancel)
    return run


def in_child(spec: ExecSpec, progress, cancel, workspace, background: bool = False) -> dict:
    """An executor that runs the whole job in one worker process (for a caller that must not do packet
    work itself: the window, whose workers run below it: ``background``)."""
    return _run_parallel(spec, 1, progress, cancel, workspace, background=background)


# --------------------------------------------------------------------------------------------------
# The parent: starts the workers, relays progress and logs, orders errors, cancels
# --------------------------------------------------------------------------------------------------

def _paths(spec: ExecSpec) -> dict:
    base = spec.staged_path
    return {"seg": base + ".seg{}"}


class _Worker:
    def __init__(self, k: int, spec: ExecSpec, n: int, context=_CONTEXT, halves=None, background: bool = False):
        self.k = k
        self.receiver, sender = context.Pipe(duplex=False)
        control_receiver, self.control = context.Pipe(duplex=False)
        self.proc = context.Process(target=_worker_main,
                                    args=(k, n, spec, sender, control_receiver, os.getpid(), halves, background),
                                    name=f"pktmask-segment {k} {spec.display_name}", daemon=True)
        self.proc.start()
        sender.close()
        control_receiver.close()
        self.done = False               # its segment is written (or, for a follower, not needed)
        self.error = None               # (kind, sentence)
        self.progress = 0
        self.result = None              # a follower's segment result, for the leader

    def send(self, message) -> None:
        try:
            self.control.send(message)
        except (OSError, ValueError):
            pass                        # gone already: its end is noticed by the loop

    def close(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.receiver.close()
        self.control.close()


def _run_parallel(spec: ExecSpec, n: int, progress, cancel, workspace, fork: bool = False,
                  background: bool = False) -> dict:
    job_log = logging.LoggerAdapter(log, {"job": spec.display_name})
    context = multiprocessing.get_context("fork") if fork and sys.platform.startswith("linux") else _CONTEXT
    workers = []
    # the first pass on two cores (firstpass.py): the follower sends the leader its pre-scan of the second
    # half through a pipe of their own; forks only (the fingerprints need the interpreter's hash key)
    halves = context.Pipe(duplex=False) if n == 2 and context is not _CONTEXT and firstpass.eligible(spec) \
        else None
    try:
        for k in range(n):
            workers.append(_Worker(k, spec, n, context, halves, background))
            workspace.add_owner(workers[-1].proc.pid)
        if halves is not None:
            for end in halves:
                end.close()
        return _supervise(workers, spec, progress, cancel, job_log)
    finally:
        if any(w.proc.is_alive() for w in workers):
            for w in workers:
                w.send(("stop",))
            deadline = time.monotonic() + CANCEL_GRACE_S
            for w in workers:
                w.proc.join(max(0.0, deadline - time.monotonic()))
        for w in workers:
            w.close()


def _supervise(workers: list, spec: ExecSpec, progress, cancel, job_log) -> dict:
    leader = workers[0]
    segments = None                 # segments planned (None: no plan yet)
    weights = None
    size = max(1, os.path.getsize(spec.read_path))
    next_report = 0.0
    by_conn = {w.receiver: w for w in workers}
    closed = set()
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        open_ = [w.receiver for w in workers if w.receiver not in closed]
        ready = wait_any(open_, 0.02) if open_ else time.sleep(0.02) or []
        for conn in ready:
            w = by_conn[conn]
            try:
                message = conn.recv()
            except (EOFError, OSError):
                closed.add(conn)
                if (not w.done or w is leader) and w.error is None:
                    w.proc.join(1.0)
                    w.error = ("internal", f"a worker process ended unexpectedly (exit code {w.proc.exitcode})")
                continue
            kind = message[0]
            if kind == "log":
                record = logging.makeLogRecord(message[1])
                logger = logging.getLogger(record.name)
                if logger.isEnabledFor(record.levelno):
                    logger.handle(record)
            elif kind == "progress":                        # the leader's first pass
                if progress is not None:
                    progress(*message[1:])
            elif kind == "seg-progress":
                w.progress = message[1]
                now = time.monotonic()
                if progress is not None and weights and now >= next_report:
                    next_report = now + PROGRESS_INTERVAL
                    done = min(size, sum(x.progress for x in workers))
                    first = sum(weights[:-1])
                    progress("process", int(size * (first + weights[-1] * done / size) / sum(weights)), size,
                             message[2])
            elif kind == "plan":
                segments, weights = message[1], message[2]
                for f in workers[1:]:
                    if f.k < segments:
                        f.send(("go", message[4]))
                    else:
                        f.done = True
                        f.send(("stop",))
                if segments == 1:
                    job_log.debug("One core: %s.", message[3])
            elif kind == "segment":
                w.done, w.result = True, message[2]
                if segments and all(x.done for x in workers[:segments]):
                    leader.send(("merge", [x.result for x in workers[1:segments]]))
            elif kind == "done":
                return message[1]
            elif kind == "error":
                if w.done and w is not leader:
                    continue                    # not needed any more (told to stop while it pre-scanned)
                if message[1] == "cancelled":
                    raise Cancelled()
                w.error = (message[1], message[2])
                w.done = False
        # a worker gone without a word (the leader must live to the end: it merges)
        for w in workers:
            if w.error is None and (not w.done or w is leader) and w.receiver not in closed \
                    and not w.proc.is_alive() and not w.receiver.poll():
                w.error = ("internal", f"a worker process ended unexpectedly (exit code {w.proc.exitcode})")
        # the file fails with the error of the earliest segment, once every segment before it is written:
        # the one-core run would have met that one first
        for w in workers:
            if w.error is not None:
                if all(x.done for x in workers[:w.k]):
                    raise JobError(w.error[1], w.error[0])
                break


# --------------------------------------------------------------------------------------------------
# The workers
# --------------------------------------------------------------------------------------------------

class _PipeLogHandler(logging.Handler):
    def __init__(self, conn):
        super().__init__(logging.DEBUG)
        self.conn = conn

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = {"name": record.name, "levelno": record.levelno, "levelname": record.levelname,
                    "msg": record.getMessage(), "args": None, "created": record.created, "msecs": record.msecs,
                    "process": record.process, "threadName": record.threadName, "job": getattr(record, "job", "")}
            if record.exc_info:
                data["exc_text"] = logging.Formatter().formatException(record.exc_info)
            self.conn.send(("log", data))
        except Exception:
            pass


class _Control:
    """A worker's end of the control pipe: ``is_set()`` (the cancel token) is true once "stop" came;
    ``expect(kind)`` waits for the next message, which must be ``kind`` (else: Cancelled)."""

    def __init__(self, conn):
        self.conn = conn
        self.stopped = False
        self.pending = None             # "go", come while the follower still pre-scanned (firstpass.py)

    def is_set(self) -> bool:
        if not self.stopped and self.conn.poll():
            self.stopped = True         # the parent sends nothing else while a pass runs
        return self.stopped

    def expect(self, kind: str):
        """The next message when it is ``kind``, else None (stop, or the parent gone)."""
        message, self.pending = self.pending, None
        try:
            message = message or self.conn.recv()
        except (EOFError, OSError):
            message = ("stop",)
        if message[0] != kind:
            self.stopped = True
            return None
        return message


def _worker_main(k: int, n: int, spec: ExecSpec, conn, control_conn, parent_pid: int, halves=None,
                 background: bool = False) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # the parent decides; Ctrl-C reaches it, not us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)      # (a fork would inherit the CLI's, which raises)
    die_with_parent(parent_pid)
    if background:
        below_the_owner()
    root = logging.getLogger("pktmask_gui")
    root.handlers[:] = [_PipeLogHandler(conn)]
    root.setLevel(logging.DEBUG)
    root.propagate = False
    control = _Control(control_conn)
    half = None
    if halves is not None:          # the leader reads the first pipe end, the follower writes the second
        half = halves[0] if k == 0 else halves[1]
        halves[1 if k == 0 else 0].close()
    try:
        if k == 0:
            outcome = _lead(spec, n, conn, control, half)
            conn.send(("done", outcome))
        else:
            if half is not None:
                gc.set_threshold(*_GC_THRESHOLDS)
                firstpass.speculate(spec, half, control)
            go = control.expect("go")
            if go is not None:                  # else: not needed (or cancelled before it began)
                gc.set_threshold(*_GC_THRESHOLDS)       # as execute() does for its passes
                conn.send(("segment", k, _follow(k, spec, go[1], conn, control)))
    except Cancelled:
        conn.send(("error", "cancelled", "cancelled"))
    except Exception as exc:  # noqa: BLE001 - every failure becomes one sentence for the parent
        kind, sentence = describe_failure(exc)
        if kind == "internal":
            logging.LoggerAdapter(log, {"job": spec.display_name}).debug("Unexpected error", exc_info=exc)
        conn.send(("error", kind, sentence))
    finally:
        conn.close()


def _lead(spec: ExecSpec, n: int, conn, control, half=None) -> dict:
    def progress(*args):
        conn.send(("progress",) + args)

    planner = _Planner(spec, n, conn, control, half)
    try:
        return execute(spec, progress, control, planner=planner)
    except SplitInexact as exc:
        logging.LoggerAdapter(log, {"job": spec.display_name}).info(
            "The segments' counts cannot be merged exactly (%s): the file runs again on one core.", exc)
        for name in [spec.staged_path] + [_paths(spec)["seg"].format(k) for k in range(1, n)]:
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
        return execute(spec, progress, control)


class _Point:
    """A split point: the first record of a segment."""

    __slots__ = ("kept", "offset", "prefix", "raw", "snaps")

    def __init__(self, offset, raw, kept, prefix, snaps):
        self.offset, self.raw, self.kept, self.prefix, self.snaps = offset, raw, kept, prefix, snaps


class _Planner:
    """The leader's side of pipeline.execute(): notes split points in the first pass, then runs the main
    pass on segments (``split``), or declines (None) and the main pass runs on one core as always."""

    WALK_WEIGHT = 0.4               # share of a walk (no pre-scan) in the progress bar, beside the main pass

    def __init__(self, spec: ExecSpec, n: int, conn, control, half=None):
        self.spec, self.n, self.conn, self.control = spec, n, conn, control
        self.half = half                # the follower's pre-scan of the second half arrives here
        self.more_raw = 0               # packets of that half, when the leader made it its own
        self.shown_at = 0               # the first pass's progress shown so far
        self.t0 = time.monotonic()
        self.size = os.path.getsize(spec.read_path)
        self.targets = [self.size * j // n for j in range(1, n)]
        self.WALK_WEIGHT = self.WALK_WEIGHT if n > 1 else 0.0
        self.points: list[_Point] = []
        self.passed = False             # a first pass has run (points noted)
        self.kept = 0                   # packets after the frame-dropping stages so far
        self.prefix: list[bytes] = []   # pcapng: the current section's SHB and IDB blocks, as in the file
        self.endian = "<"
        self.why_not = None             # why no split is possible, found during the pass
        self.reader = None
        self.header = b""
        # where each batch of the first pass began: offset, packets, packets kept, header blocks (an index
        # into self.heads): a segment that must see frames before its start reads from one of these
        self.index = (array("q"), array("q"), array("q"), array("i"))
        self.heads = [b""]              # b"": the file's own start
        self.at = (0, 0, 0, 0)

    # ---- the first pass ----------------------------------------------------------------------------------
    def first_pass(self, reader, batches, chain: list):
        """The first pass's batches. With a follower pre-scanning the second half (firstpass.py): the
        batches up to its boundary, then none when its result became the leader's, else the rest."""
        half, self.half = self.half, None
        found = firstpass.boundary(self.spec.read_path) if half is not None else None
        if found is None:
            if half is not None:
                half.close()
            yield from batches
            return
        start = found[0]
        self.targets = [start]          # the main pass splits there too
        reader.stop_at = start
        for batch in batches:
            yield batch
            if reader.offset >= start:
                break
        reader.stop_at = None
        job_log = logging.LoggerAdapter(log, {"job": self.spec.display_name})
        why = "no record ends at the boundary"
        removed = sum(s.removed for s in chain[:-1])       # frames dropped so far (the first half's)
        if reader.offset == start:
            res = firstpass.receive(half, self.control)
            prefix = self.header if reader.format == "pcap" else b"".join(self.prefix)
            why = firstpass.land(res, chain, reader, prefix, job_log, firstpass.spill_path(self.spec))
        half.close()
        firstpass.discard_spill(self.spec)
        if why is None:
            self.more_raw = res["raw"]
            self.kept += res["raw"] - (sum(s.removed for s in chain[:-1]) - removed)
            return
        job_log.debug("The first pass reads the second half too: %s.", why)
        yield from batches

    def shown(self, reader) -> int:
        """The first pass's progress: while the follower pre-scans the second half, the leader's share of
        its own part stands for the whole (the two run side by side)."""
        stop = reader.stop_at
        shown = reader.position if not stop else min(reader.size, reader.position * reader.size // stop)
        self.shown_at = max(self.shown_at, shown)       # (when the leader reads on, the bar waits)
        return self.shown_at

    def batch(self, reader, chain: list, batch: list) -> None:
        """After each batch of the first pass: ``chain`` the stages it went through (the last one pre-scanned),
        ``batch`` the records that reached the last one."""
        self.passed = True
        self.reader = reader
        for column, value in zip(self.index, self.at):
            column.append(value)
        pcap = reader.format == "pcap"
        self.kept += len(batch) if pcap else _count_packets(batch)
        if not pcap:
            changed = False
            for rec in batch:
                if rec[1] == META and (rec[5] == SHB or rec[5] == IDB):
                    self._header_block(rec)
                    changed = True
            if changed:
                self.heads.append(b"".join(self.prefix))
        elif len(self.heads) == 1:
            self.header = reader.pcap_header
            self.heads.append(self.header)
        self.at = (reader.offset, reader.packets, self.kept, len(self.heads) - 1)
        if self.targets and reader.offset >= self.targets[0] and reader.offset < self.size:
            while self.targets and reader.offset >= self.targets[0]:
                self.targets.pop(0)
            snaps = [stage.snapshot() for stage in chain]
            self.points.append(_Point(reader.offset, reader.packets, self.kept,
                                      self.header if pcap else b"".join(self.prefix),
                                      {stage.name: s for stage, s in zip(chain, snaps) if s is not None}))

    def _header_block(self, rec) -> None:
        body = rec[0]
        if rec[5] == SHB:
            self.endian = e = section_endian(body)
            if struct.unpack_from(e + "q", body, 8)[0] != -1:
                self.why_not = "a section header gives its section's length"
            self.prefix = []
        e = self.endian
        size = 12 + len(body)
        self.prefix.append(struct.pack(e + "II", rec[5], size) + bytes(body) + struct.pack(e + "I", size))

    def _own_pass(self, run) -> None:
        """No pre-scan ran: decide the frames to drop (when a stage drops frames), or only walk the records."""
        deciders = [s for s in run.stages if s.drops_frames]
        chain = run.stages[:len(deciders)]
        if chain != deciders:
            self.why_not = "a stage before the frame-dropping one"
            return
        with CaptureReader(self.spec.read_path) as reader:
            for batch in reader.batches(BATCH):
                for stage in chain:
                    batch = stage.process(batch)
                self.batch(reader, chain, batch)
                run.clock.tick("prescan", reader.position, reader.size, len(batch))
                reason = run.monitor.pressure()
                if reason:
                    from .pipeline import _relieve
                    _relieve(reason, chain, run.context)
            if not self.passed:
                self.reader = reader
        _finish(chain)
        for stage in chain:
            run.decided[stage.name] = stage
        _check_stamp(self.spec.read_path, run.stamp)
        run.clock.next_pass()

    # ---- the split ---------------------------------------------------------------------------------------
    def split(self, run) -> dict | None:
        if self.n < 2:
            return None                 # in_child: the whole job in this process
        if not self.passed:
            self._own_pass(run)
        stages = [_replay(run.decided[s.name], run.context) if s.name in run.decided else s for s in run.stages]
        why = self._refusal(stages)
        if why is not None:
            self.conn.send(("plan", 1, run.weights, why, None))
            return None
        points = self.points
        n = len(points) + 1
        # packets entering each stage before each point: every packet up to the frame-dropping stage, the
        # packets it kept after it
        drop_at = max((j for j, s in enumerate(stages) if s.drops_frames), default=-1)
        total_raw, total_kept = self.reader.packets + self.more_raw, self.kept
        firsts = [[0] * len(stages)] + [[p.raw if j <= drop_at else p.kept for j in range(len(stages))]
                                        for p in points]
        ends = firsts[1:] + [[total_raw if j <= drop_at else total_kept for j in range(len(stages))]]
        shared = [s.export() for s in stages]
        plan = {"stages": [(type(s), s.options) for s in stages], "shared": shared,
                "points": [(p.offset, p.prefix, [p.snaps.get(s.name) for s in stages]) for p in points],
                "firsts": firsts, "ends": ends, "size": self.size,
                "warm": [[None] * len(stages)] + self._warm_ups(stages, drop_at)}
        paths = _paths(self.spec)
        self.conn.send(("plan", n, run.weights, None, plan))
        del plan, shared
        run.context.log.debug("The main pass runs on %d segments of the file, in %d processes.", n, n)
        t_plan, c_plan = time.monotonic(), time.process_time()

        # the first segment, straight into the staged output
        for j, stage in enumerate(stages):
            stage.segment_start(0, ends[0][j], None, None)
        reader_warnings = list(self.reader.warnings)
        packets_in, packets_out, _skip, _base = _run_segment(
            self.spec, stages, run.context, run.monitor, self.spec.staged_path, 0, points[0].offset, b"",
            self._reporter(), self.control)
        self.conn.send(("segment", 0, None))
        t_seg, c_seg = time.monotonic(), time.process_time()
        merge = self.control.expect("merge")
        if merge is None:
            raise Cancelled()
        t_merge = time.monotonic()

        # the others: their warnings and counts, then their bytes
        warnings = list(reader_warnings)
        for k, res in enumerate(merge[1], 1):
            packets_in += res["packets_in"]
            packets_out += res["packets_out"]
            for message in res["warnings"]:
                if message not in run.context.warnings:
                    run.context.warnings.append(message)
            for stage, result, baseline in zip(stages, res["results"], res["baselines"]):
                stage.absorb(result, baseline)
            _append(self.spec.staged_path, paths["seg"].format(k), res["skip"], self.control)
            os.unlink(paths["seg"].format(k))
        _check_stamp(self.spec.read_path, run.stamp, final=True)
        run.context.log.debug("Segments: first pass and plan %.2f s (CPU %.2f s), first segment %.2f s (CPU %.2f s), "
                              "waited %.2f s, merged %.2f s (CPU %.2f s); peak %d MB.", t_plan - self.t0, c_plan,
                              t_seg - t_plan, c_seg - c_plan, t_merge - t_seg, time.monotonic() - t_merge,
                              time.process_time() - c_seg, _peak_mb())
        report = _report(stages, run.context, warnings, run.monitor)
        return {"packets_in": packets_in, "packets_out": packets_out, "warnings": warnings, "stages": report,
                "input_compression": None}

    def _refusal(self, stages) -> str | None:
        if self.why_not:
            return self.why_not
        if not self.points:
            return "no record boundary splits the file into shares worth a process"
        if self.reader is None or self.reader.compression:
            return "a compressed capture is read as one stream"
        for stage in stages:
            if not stage.segmentable:
                return f"{stage.title or stage.name} runs on the whole file"
        if sum(1 for s in stages if s.drops_frames) > 1:
            return "more than one stage drops frames"
        for j, stage in enumerate(stages):
            if any(n is not None for n in stage.split_needs([0])) and \
                    any(not s.drops_frames for s in stages[:j]):
                return "a stage that must see earlier frames runs after one that changes them"
        drop_at = max((j for j, s in enumerate(stages) if s.drops_frames), default=-1)
        for j, stage in enumerate(stages):
            why = stage.split_hazard([p.raw if j <= drop_at else p.kept for p in self.points])
            if why:
                return why
        return None

    def _warm_ups(self, stages, drop_at) -> list:
        """Per point and stage: None, or where its segment's instance starts reading to see the frames it
        needs before the point (Stage.split_needs): (offset, header blocks, packets and the stage's frames
        before that batch, what)."""
        offsets, raws, kepts, heads = self.index
        out = [[None] * len(stages) for _ in self.points]
        for j, stage in enumerate(stages):
            counts = raws if j <= drop_at else kepts
            needs = stage.split_needs([p.raw if j <= drop_at else p.kept for p in self.points])
            for k, need in enumerate(needs):
                if need is None:
                    continue
                frame, what = need
                e = max(0, bisect_right(counts, frame) - 1)
                what["from"] = counts[e]
                out[k][j] = (offsets[e], self.heads[heads[e]] if offsets[e] else b"", raws[e], what)
        return out

    def _reporter(self):
        conn = self.conn

        def report(done: int, packets: int) -> None:
            conn.send(("seg-progress", done, packets))
        return report


def _peak_mb() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10


def _append(target: str, source: str, skip: int, control) -> None:
    """Append ``source`` from byte ``skip`` to ``target``: in the kernel where it can (copy_file_range, which
    refuses a file opened for appending: explicit offsets), else through a 1 MiB buffer."""
    with open(source, "rb") as src, open(target, "r+b") as dst:
        pos, at = skip, dst.seek(0, os.SEEK_END)
        left = os.fstat(src.fileno()).st_size - skip
        copy = getattr(os, "copy_file_range", None)
        while left > 0:
            if control.is_set():
                raise Cancelled()
            done = 0
            if copy is not None:
                try:
                    done = copy(src.fileno(), dst.fileno(), min(left, 64 << 20), pos, at)
                except OSError:
                    copy = None
            if copy is None:
                data = os.pread(src.fileno(), min(left, 1 << 20), pos)
                done = os.pwrite(dst.fileno(), data, at)
            if done <= 0:
                raise OSError(f"cannot append {source}")
            pos += done
            at += done
            left -= done


def _follow(k: int, spec: ExecSpec, plan: dict, conn, control) -> dict:
    """Segment ``k``'s main pass; its result for the leader."""
    paths = _paths(spec)
    context = StageContext(log=logging.LoggerAdapter(log, {"job": spec.display_name}), key=spec.key,
                           config_dir=spec.config_dir, extra={"input_size": plan["size"]})
    offset, prefix, snaps = plan["points"][k - 1]
    end = plan["points"][k][0] if k < len(plan["points"]) else None
    stages = []
    for j, ((cls, options), shared) in enumerate(zip(plan["stages"], plan["shared"])):
        stage = cls(options, context)
        stage.segment_start(plan["firsts"][k][j], plan["ends"][k][j], shared, snaps[j])
        stages.append(stage)
    t0 = time.monotonic()
    for j, warm in enumerate(plan["warm"][k]):
        if warm is not None:
            _warm_up(spec, plan, k, j, warm, stages[j], context, offset, control)
    if any(plan["warm"][k]):
        context.log.debug("Segment %d: %.2f s to see the frames before it that it needs.", k,
                          time.monotonic() - t0)
    del plan
    monitor = MemoryMonitor(spec.memory_rss_mb, spec.memory_available_pct)

    def report(done: int, packets: int) -> None:
        conn.send(("seg-progress", done, packets))

    t0, c0 = time.monotonic(), time.process_time()
    packets_in, packets_out, skip, baselines = _run_segment(spec, stages, context, monitor, paths["seg"].format(k),
                                                            offset, end, prefix, report, control)
    context.log.debug("Segment %d: %.2f s (CPU %.2f s; %.2f s since the process began; peak %d MB).", k,
                      time.monotonic() - t0, time.process_time() - c0, time.process_time(), _peak_mb())
    result = {"packets_in": packets_in, "packets_out": packets_out, "skip": skip, "warnings": context.warnings,
              "results": [s.segment_result() for s in stages], "baselines": baselines}
    return result


def _warm_up(spec, plan, k, j, warm, stage, context, end, control) -> None:
    """Feed ``stage`` the frames from ``warm``'s batch up to the segment's start (through replays of the
    frame-dropping stages before it), as the one-core main pass saw them."""
    start, head, raw, what = warm
    drops = []
    for i in range(j):
        (cls, options), shared = plan["stages"][i], plan["shared"][i]
        replay = cls(options, context)
        replay.segment_start(raw, plan["firsts"][k][i], shared, None)
        drops.append(replay)
    with CaptureReader(spec.read_path, fileobj=_SliceFile(spec.read_path, head, start, end)) as reader:
        for batch in reader.batches(BATCH):
            if control.is_set():
                raise Cancelled()
            for replay in drops:
                batch = replay.process(batch)
            stage.warm(batch, what)
    _finish(drops)
    stage.warm(None, what)


class _SliceFile:
    """``head`` then the input's bytes [start, end) (end None: to the end of the file), for a reader."""

    def __init__(self, path: str, head: bytes, start: int, end: int | None):
        self.fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed with the reader (close())
        self.fh.seek(start)
        self.head = memoryview(head)
        self.left = (end - start) if end is not None else None

    def read(self, n: int) -> bytes:
        parts = []
        if self.head:
            parts.append(bytes(self.head[:n]))
            self.head = self.head[n:]
            n -= len(parts[0])
        while n > 0 and (self.left is None or self.left > 0):
            want = n if self.left is None else min(n, self.left)
            chunk = self.fh.read(want)
            if not chunk:
                break
            parts.append(chunk)
            n -= len(chunk)
            if self.left is not None:
                self.left -= len(chunk)
        return b"".join(parts)

    def close(self) -> None:
        self.fh.close()


class _SegmentClock:
    """The main pass's clock on a segment: the cancel check, and the segment's bytes done, throttled."""

    def __init__(self, report, cancel, head: int):
        self.report, self.cancel, self.head = report, cancel, head
        self.next_report = 0.0

    def tick(self, phase, offset, size, packets) -> None:  # noqa: ARG002 - _Progress.tick's signature
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()
        now = time.monotonic()
        if now >= self.next_report:
            self.next_report = now + PROGRESS_INTERVAL
            self.report(max(0, offset - self.head), packets)


def _run_segment(spec, stages, context, monitor, path, start, end, head, report, cancel) -> tuple:
    """The main pass over the input's bytes [start, end), read after ``head`` (b"": the file's own start),
    into ``path``. Returns (packets in, packets out, bytes of the output before the segment's own
    records, the stages' segment_result() after those header records)."""
    source = _SliceFile(spec.read_path, head if start else b"", start, end)
    clock = _SegmentClock(report, cancel, len(head) if start else 0)
    with CaptureReader(spec.read_path, fileobj=source) as reader:
        checkers = [s for s in stages if s.self_check]
        with open(path, "xb") as fh:
            main = _MainPass(reader, fh, stages, checkers, clock, monitor, context)
            if start:
                main.next_writeback = 1 << 62       # stays in the page cache: the leader appends it next
            skip = main.writer.bytes_written          # pcap: the file header
            if start and reader.format == "pcapng":
                heads = _count_blocks(head)
                main.batches = _split_first(main.batches, heads)
                main.step()                            # the section's SHB and IDBs: re-read, not this segment's
                skip = main.writer.bytes_written
            baselines = [s.segment_result() for s in stages]
            if main.checkers:
                main.check_while_writing(path)
            else:
                while main.step():
                    pass
    return main.packets_in, main.packets_out, skip, baselines


def _count_blocks(head: bytes) -> int:
    n = pos = 0
    e = "<"
    while pos < len(head):
        if struct.unpack_from("<I", head, pos)[0] == SHB:
            e = _bom_endian(head, pos)
        pos += struct.unpack_from(e + "I", head, pos + 4)[0]
        n += 1
    return n


def _bom_endian(buf: bytes, pos: int) -> str:
    return "<" if buf[pos + 8:pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"


def _split_first(batches, n: int):
    """The reader's batches, the first ``n`` records (the re-read header blocks) as a batch of their own."""
    first = True
    for batch in batches:
        if first:
            first = False
            while len(batch) < n:               # never: the header blocks are < 1 MiB, one reader chunk
                more = next(batches, None)
                if more is None:
                    break
                batch = batch + more
            yield batch[:n]
            if len(batch) > n:
                yield batch[n:]
            continue
        yield batch
