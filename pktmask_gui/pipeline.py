"""The pipeline executor: one input capture -> one sanitized output, streaming, atomic, cancellable, clean.

``run_job`` = prepare (workspace, input checks, hard link, output staging) + ``execute`` (the streaming
passes; in-process here, or in a child process through jobs.py) + publish (the finished file moves into
place under a name that never overwrites anything). The workspace context removes every temp entry on
success, error and cancel.
"""
from __future__ import annotations

import errno
import filecmp
import gc
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Protocol

from . import compression
from .capture import META, SHB, CaptureError, CaptureReader, make_shb_body
from .capturewriter import CaptureWriter
from .settings import Settings
from .stages import Batch, Stage, StageContext, StageError, all_stages, stage_by_name
from .workspace import JobWorkspace, MemoryMonitor

log = logging.getLogger(__name__)

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")
PROGRESS_INTERVAL = 0.05        # seconds between progress callbacks
# records per batch (a pcap batch also ends with the reader's 1 MiB chunk): ~5-20 ms of work, so cancel is
# seen at once; numpy's per-call cost in Remove Dupes' probe is paid once for that many frames
BATCH = 2048
# The passes make and drop a tuple and a bytes object per record, without cycles (reference counting frees
# them): the cycle collector's default pass every 700 allocations cost about 4 % of a run.
_GC_THRESHOLDS = (100_000, 50, 50)
WRITEBACK_EVERY = 32 << 20      # bytes of output between two early write-back requests (_start_writeback)
_FADVISE = getattr(os, "posix_fadvise", None)


class Cancelled(Exception):
    """The user asked to stop."""


class JobError(Exception):
    """The file cannot be processed; the message is one sentence for the user."""

    def __init__(self, message: str, kind: str = "input"):
        super().__init__(message)
        self.kind = kind            # see describe_failure


@dataclass
class Job:
    input: Path
    output_dir: Path | None = None          # None: beside the input
    stages: list[str] = field(default_factory=list)
    rel_dir: Path = Path("")                 # layout kept under output_dir for folder inputs
    key_file: Path | None = None             # anonymization key (None: the user's key in the config dir)
    key: bytes | None = field(default=None, repr=False)  # the key itself, given by the caller (a cluster task)
    # A file with the output's bytes already at the planned name is taken as this job's output instead of
    # a "-1" copy: a Dask task run again after its worker died between publishing and reporting.
    reuse_identical: bool = False


@dataclass
class JobResult:
    input: str
    output: str | None = None
    status: str = "failed"                  # "ok" | "failed" | "cancelled"
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    packets_in: int = 0
    packets_out: int = 0
    elapsed_s: float = 0.0
    stages: dict[str, Any] = field(default_factory=dict)
    renamed: bool = False                   # True: the planned name existed, the output took the next free one
    error_kind: str | None = None           # a failure's kind (see describe_failure)
    input_compression: str | None = None    # "gzip" | "zstd" | "lz4" | None (not compressed)
    output_compression: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["elapsed_s"] = round(self.elapsed_s, 3)
        return out


def is_capture_name(path: Path | str) -> bool:
    """A capture's name: ``.pcap``, ``.pcapng`` or ``.cap``, maybe then ``.gz``, ``.zst`` or ``.lz4``."""
    base, _ = compression.split_name(Path(path).name)
    return os.path.splitext(base)[1].lower() in CAPTURE_SUFFIXES


def is_capture_file(path: Path | str) -> bool:
    """A capture's name, or a compressed file of another name (``trace.gz``, tcpdump's rotated
    ``dump.pcap1.gz``) whose decompressed first bytes are a capture's."""
    if is_capture_name(path):
        return True
    if not compression.split_name(Path(path).name)[1]:
        return False
    return compression.holds_capture(path)


def find_captures(paths: Iterable[Path | str]) -> list[tuple[Path, Path]]:
    """(file, relative dir) for every capture named or found (recursively, sorted) under the given paths;
    compressed captures too (is_capture_file)."""
    found: list[tuple[Path, Path]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("pktmask_"))
                for name in sorted(filenames):
                    if is_capture_file(Path(dirpath) / name):
                        file = Path(dirpath) / name
                        found.append((file, file.parent.relative_to(path)))
        else:
            found.append((path, Path("")))
    return found


def output_name(input_path: Path, suffix: str = "-sanitized",
                input_kind: str | None = None,  # noqa: ARG001 (callers name it; the name needs output_kind only)
                output_kind: str | None = None) -> str:
    """``<stem><suffix><ext>``, from the input's base name only (no directory part can come through).

    Compression: the input name's compression suffix (``.gz``, ``.zst``, ``.zstd``, ``.lz4``) is left out,
    and the output's (``output_kind``; None: not compressed) goes last — the input's own spelling when it
    names the same compression: ``x.pcapng.gz`` -> ``x-sanitized.pcapng.gz``; a plain ``x.pcap.gz`` ->
    ``x-sanitized.pcap``; ``x.pcap`` holding gzip, same compression -> ``x-sanitized.pcap.gz``.
    """
    base, spelled = compression.split_name(Path(input_path).name)
    stem, ext = os.path.splitext(base)
    name = f"{stem}{suffix}{ext}"
    if output_kind:
        same = spelled and compression.NAME_SUFFIXES[spelled.lower()] == output_kind
        name += spelled if same else compression.SUFFIX[output_kind]
    return name


def compression_plan(input_path: Path, settings: Settings) -> tuple[str | None, str | None]:
    """(the input's compression, by its first bytes; the output's, by the compress setting)."""
    kind = compression.sniff(input_path)
    return kind, compression.output_kind(settings.compress, kind)


def planned_output(job: Job, settings: Settings, plan: tuple[str | None, str | None] | None = None) -> Path:
    """Where the output goes; ``plan``: compression_plan() of the input (read from the file when None)."""
    base = Path(job.input).parent if job.output_dir is None else Path(job.output_dir) / job.rel_dir
    kinds = plan if plan is not None else compression_plan(job.input, settings)
    return base / output_name(job.input, settings.output_suffix, *kinds)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _identical(a: Path, b: Path) -> bool:
    """Do two files hold the same bytes? (filecmp: sizes first, then the bytes.)"""
    try:
        return filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _publish(staged: Path, target: Path, input_path: Path,
             restage: Callable[[Path], Path] | None = None, reuse_identical: bool = False) -> tuple[Path, bool]:
    """Move the finished file to ``target`` or the next free ``-1``, ``-2`` … name (before the capture
    extension and any compression suffix: ``x-sanitized-1.pcapng.gz``); never overwrite.

    os.link fails if the name exists, so choosing the name and claiming it is one atomic step; filesystems
    without hard links get a check-then-replace instead. A link across mounts (the file was staged in the
    temp folder, which only looked like the output's file system: a bind mount) first moves the file into a
    staging dir beside the target through ``restage``.
    """
    base, spelled = compression.split_name(target.name)
    stem, ext = os.path.splitext(base)
    ext += spelled
    for n in range(0, 10000):
        candidate = target if n == 0 else target.with_name(f"{stem}-{n}{ext}")
        if candidate.exists() or candidate.is_symlink():
            if reuse_identical and not candidate.is_symlink() and _identical(staged, candidate):
                os.unlink(staged)
                return candidate, n > 0
            continue
        try:
            os.link(staged, candidate)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno == errno.EXDEV and restage is not None:
                staged, restage = restage(staged), None
                return _publish(staged, target, input_path, reuse_identical=reuse_identical)
            if candidate.exists():
                continue
            os.replace(staged, candidate)
            return candidate, n > 0
        if _same_file(candidate, input_path):   # paranoia: cannot happen, but never leave it
            raise JobError("refusing to write the output over the input")
        os.unlink(staged)
        return candidate, n > 0
    raise JobError(f"no free output name beside {target}")


# --------------------------------------------------------------------------------------------------
# The streaming passes (run in-process or in a child process)
# --------------------------------------------------------------------------------------------------

@dataclass
class ExecSpec:
    """Everything the streaming passes need; plain data, so it can cross to a child process."""

    read_path: str
    staged_path: str
    stages: list[str]
    stage_options: dict[str, dict[str, Any]]
    key: bytes | None
    memory_rss_mb: int
    memory_available_pct: int
    config_dir: str | None = None
    display_name: str = ""
    input_compression: str | None = None    # the input is compressed so (as run_job found it)
    output_compression: str | None = None   # compress the output so ("gzip" | "zstd" | "lz4")
    compress_level: int | None = None       # None: compression.LEVELS


def _make_stages(spec: ExecSpec, context: StageContext) -> list[Stage]:
    return [stage_by_name(name)(spec.stage_options.get(name, {}), context) for name in spec.stages]


def _run_order(names: list[str]) -> list[str]:
    """Execution order: a pre-scan stage keys its state on flows, so it runs before any stage that rewrites
    addresses (the anonymizer), and so sees the same frames in both passes; the others keep their order."""
    classes = [stage_by_name(n) for n in names]
    return [cls.name for cls in sorted(classes, key=lambda c: c.order if c.run_order is None else c.run_order)]


def execute(spec: ExecSpec, progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None, planner: Any = None) -> dict[str, Any]:
    """Run the passes; write the output to ``spec.staged_path`` (flushed; the publish step syncs it).

    Returns {"packets_in", "packets_out", "warnings", "stages", "input_compression"}. Raises Cancelled,
    CaptureError, StageError.

    A compressed input is decompressed as it is read, in each pass (no decompressed copy on disk); a
    compressed output is compressed as it is written, on a thread of its own, and the self-check reads it
    back through a decompressor. See docs/ARCHITECTURE.md, "Compressed captures".

    Passes over the input: the pre-scan (when a stage needs one) and the main pass, during which the
    self-check reads the output back as it is written (_MainPass.check_while_writing).

    A frame-dropping stage (dedup) decides once, in the first pass that runs it; the later passes replay
    its decisions (``replayer()``, one bit per frame) instead of hashing every frame again, and its tables
    are freed at once. Since passes then rely on seeing the same input, the input's size, inode and
    modification time are compared at the start of every pass and at the end.

    ``planner`` (segments.py): watches the first pass for split points, then may run the main pass on
    segments of the input in other processes; when it declines, the main pass runs here as always.
    """
    previous = gc.get_threshold()
    gc.set_threshold(*_GC_THRESHOLDS)
    try:
        return _execute(spec, progress, cancel, planner)
    except compression.CutBeforeCapture as cut:     # raised when a pass opens the input: nothing staged yet
        return _empty_output(spec, cut)
    finally:
        gc.set_threshold(*previous)


def _empty_output(spec: ExecSpec, cut: CaptureError) -> dict[str, Any]:
    """A compressed input cut short before its capture's header: as for any stream cut short, an output and
    a warning, not a failure — with no packet, in the format the input's name says (the only thing a name
    decides here; nothing of the input is in it)."""
    base, _ = compression.split_name(spec.display_name or Path(spec.read_path).name)
    fmt = "pcapng" if base.lower().endswith(".pcapng") else "pcap"
    packed = spec.output_compression
    with open(spec.staged_path, "xb") as fh:
        sink = compression.CompressingWriter(fh, packed, spec.compress_level) if packed else None
        try:
            writer = CaptureWriter(fh if sink is None else sink, fmt)
            if fmt == "pcapng":
                writer.write_batch([(make_shb_body(), META, 0, 0, 0, SHB)])
            writer.close()
            if sink is not None:
                sink.close()
        finally:
            if sink is not None:
                sink.abort()
        fh.flush()
    return {"packets_in": 0, "packets_out": 0, "warnings": [f"{cut}; the output holds no packet"], "stages": {},
            "input_compression": cut.compression}


def _execute(spec: ExecSpec, progress: ProgressCallback | None, cancel: CancelToken | None,
             planner: Any = None) -> dict[str, Any]:
    stamp = _input_stamp(spec.read_path)
    # stages size their tables from the capture's size: a compressed file's, decompressed, is estimated
    size = compression.estimated_size(spec.read_path, stamp[0]) if spec.input_compression else stamp[0]
    context = StageContext(log=logging.LoggerAdapter(log, {"job": spec.display_name}), key=spec.key,
                           config_dir=spec.config_dir, extra={"input_size": size})
    names = _run_order(spec.stages)
    stages = _make_stages(replace(spec, stages=names), context)     # (asdict would deep-copy options and key)
    monitor = MemoryMonitor(spec.memory_rss_mb, spec.memory_available_pct)
    # Share of the progress bar per pass, from measured times: the main pass costs about twice a pre-scan,
    # three and a half times with a self-check reading the output back (so the time estimate holds).
    weights = [1.0] * sum(1 for s in stages if s.needs_prescan)
    if planner is not None and not weights and planner.WALK_WEIGHT:
        weights.append(planner.WALK_WEIGHT)     # its own pass to find the split points
    weights.append(3.5 if any(s.self_check for s in stages) else 2.0)
    _check_order(stages)
    clock = _Progress(progress, weights, cancel)
    warnings: list[str] = []
    decided: dict[str, Stage] = {}      # name -> the stage whose frame decisions later passes replay

    # Pass 1 (when asked): pre-scan. The stages before a pre-scan stage run on separate instances (or
    # replay earlier decisions), so that it sees exactly the frames it will see in the main pass; a stage
    # whose changes no pre-scan depends on (prescan_transparent: host names) is left out there.
    for idx, stage in enumerate(stages):
        if not stage.needs_prescan:
            continue
        before = [_replay(decided[n], context) if n in decided else
                  stage_by_name(n)(spec.stage_options.get(n, {}), StageContext(
                      log=context.log, key=spec.key, config_dir=spec.config_dir, extra=context.extra))
                  for n in names[:idx] if not stage_by_name(n).prescan_transparent]
        with CaptureReader(spec.read_path) as reader:
            batches = reader.batches(BATCH)
            if planner is not None:         # it may have a follower pre-scan the second half (firstpass.py)
                batches = planner.first_pass(reader, batches, before + [stage])
            for batch in batches:
                for earlier in before:
                    batch = earlier.process(batch)
                stage.prescan(batch)
                if planner is not None:
                    planner.batch(reader, before + [stage], batch)
                clock.tick("prescan", reader.position if planner is None else planner.shown(reader), reader.size,
                           len(batch))
                reason = monitor.pressure()
                if reason:
                    _relieve(reason, before, context)
        _finish(before)
        for earlier in before:
            if earlier.drops_frames:
                decided[earlier.name] = earlier
        del before
        _check_stamp(spec.read_path, stamp)
        clock.next_pass()

    if planner is not None:
        run = _Run(spec, stamp, context, names, stages, decided, clock, monitor, weights)
        outcome: dict[str, Any] | None = planner.split(run)
        if outcome is not None:
            return outcome

    # Pass 2: the fused streaming pass; the self-check reads the output back as it is written.
    stages = [_replay(decided[s.name], context) if s.name in decided else s for s in stages]
    checkers = [s for s in stages if s.self_check]
    packed = spec.output_compression
    with CaptureReader(spec.read_path) as reader:
        input_compression = reader.compression
        # A pcapng section header that gives its section's length gets the output's length patched in at
        # the end, which a compressed stream cannot take: such an output is written plain, then compressed
        # (rare: capture tools write "unknown"). Otherwise the output is compressed as it is written.
        later = bool(packed) and reader.section_length is not None
        write_path = spec.staged_path + ".plain" if later else spec.staged_path
        direct = bool(packed) and not later
        with open(write_path, "xb", buffering=0 if direct else -1) as fh:
            sink = compression.CompressingWriter(fh, packed, spec.compress_level) if direct and packed else None
            try:
                main = _MainPass(reader, fh, stages, checkers, clock, monitor, context, sink)
                if checkers:
                    main.check_while_writing(write_path)
                else:
                    while main.step():
                        pass
            finally:
                if sink is not None:
                    sink.abort()            # stops its thread if the pass failed; nothing after close()
        for message in reader.warnings:
            if message not in warnings:
                warnings.append(message)
    packets_in, packets_out = main.packets_in, main.packets_out
    _check_stamp(spec.read_path, stamp, final=True)
    if later and packed:
        with open(spec.staged_path, "xb") as out:
            compression.compress_file(write_path, out, packed, spec.compress_level,
                                      tick=lambda: clock.tick("process", stamp[0], stamp[0], packets_in))
        os.unlink(write_path)
    clock.next_pass()

    report = _report(stages, context, warnings, monitor)
    return {"packets_in": packets_in, "packets_out": packets_out, "warnings": warnings, "stages": report,
            "input_compression": input_compression}


@dataclass
class _Run:
    """A job's state after its first pass, for a planner (segments.py) that runs the main pass on segments."""

    spec: ExecSpec
    stamp: tuple[int, ...]
    context: StageContext
    names: list[str]
    stages: list[Stage]
    decided: dict[str, Stage]
    clock: _Progress
    monitor: MemoryMonitor
    weights: list[float]


def _report(stages: list[Stage], context: StageContext, warnings: list[str],
            monitor: MemoryMonitor) -> dict[str, Any]:
    """The stages' counts, by name; the stages' warnings appended to ``warnings`` (after the reports: a
    report may warn)."""
    report: dict[str, Any] = {}
    for stage in stages:
        counts = stage.report()
        if counts or not stage.hidden:
            report[stage.name] = counts
    for message in context.warnings:
        if message not in warnings:
            warnings.append(message)
    if monitor.events:
        report.setdefault("memory", {})["pressure_events"] = monitor.events
    return report


def _start_writeback(fh: IO[bytes], length: int = 0) -> None:
    """Have the kernel start writing the output out now, not all at the final fsync (which then waits for
    the whole file: ~0.25 s for 600 MB here), and let the written pages leave the cache (a large output
    does not push the user's other files out). ``length``: only the file's first bytes (those the
    self-check has read back already: dropping pages it has yet to read would make it read them from
    disk); 0: all of it. Advisory: where unavailable, nothing changes."""
    if _FADVISE is not None:
        try:
            _FADVISE(fh.fileno(), 0, length, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


def _input_stamp(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_size, st.st_ino, st.st_dev, st.st_mtime_ns)


def _check_stamp(path: str, stamp: tuple[int, int, int, int], final: bool = False) -> None:
    try:
        same = _input_stamp(path) == stamp
    except FileNotFoundError:
        # The name was deleted or renamed after the last pass opened it: that pass read the file it
        # opened to the end, and no pass reopens it, so the output is right (issue 6: input deleted mid-run).
        same = final
    except OSError:
        same = False
    if not same:
        raise StageError("the input file changed while it was being processed; nothing was written")


def _replay(stage: Stage, context: StageContext) -> Stage:
    """A stage that repeats ``stage``'s frame decisions in a later pass (and frees its tables)."""
    return stage.replayer(context)


def _finish(stages: list[Stage]) -> None:
    """End of a pass: a replaying stage checks that it met every frame it had decided on."""
    for stage in stages:
        stage.finish()


def _count_packets(batch: Batch) -> int:
    n = 0
    for rec in batch:
        if rec[1] >= 0:
            n += 1
    return n


def _relieve(reason: str, stages: list[Stage], context: StageContext) -> None:
    actions = [msg for msg in (s.release_memory() for s in stages) if msg]
    if actions:
        context.log.warning("Memory pressure (%s): %s", reason, " ".join(actions))
    else:
        context.log.info("Memory pressure (%s): nothing left to release; the job goes on, no packet is dropped.",
                         reason)


def _check_order(stages: list[Stage]) -> None:
    """The self-check compares each checking stage's input with the output: no stage after it may drop
    frames (the registry's order guarantees it; a new stage that breaks it fails loudly here)."""
    seen_checker = False
    for stage in stages:
        if stage.drops_frames and seen_checker:
            raise StageError(f"internal error: {stage.name} drops frames after a self-checking stage")
        seen_checker = seen_checker or stage.self_check


class _MainPass:
    """The main pass, one input batch per ``step()``: stages, writer, progress, memory pressure.

    With self-checking stages, ``check_while_writing()`` drives it instead: it reads the output file back
    through a second reader as the writer fills it (``_FollowFile``) and hands each checker equal runs of
    packet records, as they entered the checker and as they were read back from the file. The input is
    read once; what waits for its comparison is about one batch or one read chunk of records.
    """

    def __init__(self, reader: CaptureReader, fh: IO[bytes], stages: list[Stage], checkers: list[Stage],
                 clock: _Progress, monitor: MemoryMonitor, context: StageContext,
                 sink: compression.CompressingWriter | None = None) -> None:
        """``sink``: a CompressingWriter into ``fh`` (a compressed output), else the writer writes ``fh``."""
        self.reader, self.fh, self.clock, self.monitor, self.context = reader, fh, clock, monitor, context
        self.stages = stages
        self.sink = sink
        assert reader.format is not None        # the reader has read the capture's header
        self.writer = CaptureWriter(fh if sink is None else sink, reader.format, reader.pcap_header)
        self.only_packets = reader.format == "pcap"      # pcap: every record is a packet
        # a stage that only rewrites pcapng blocks (pcapng_only = True) has nothing to do in a pcap file
        self.active = [s for s in stages if not (self.only_packets and s.pcapng_only)]
        self.checkers = [c for c in checkers if c in self.active]    # in the order the stages run
        for checker in self.checkers:
            checker.will_check()
        self.entering: list[Batch] = [[] for _ in checkers]          # per checker: packets it took in, not yet compared
        self.batches = reader.batches(BATCH)
        self.packets_in = self.packets_out = 0
        self.done = False
        self.read_back = 0                  # bytes of the output the self-check has read back
        self.next_writeback = WRITEBACK_EVERY

    def step(self) -> bool:
        """Process one input batch; at the end, finish the output (flushed) and return False."""
        if self.done:
            return False
        source = next(self.batches, None)
        if source is None:
            _finish(self.stages)
            self.writer.close()
            if self.sink is not None:
                self.sink.close()
            self.fh.flush()
            self.done = True
            return False
        only_packets = self.only_packets
        self.packets_in += len(source) if only_packets else _count_packets(source)
        batch = source
        entering = iter(self.entering)          # the checkers' lists, in stage order
        for stage in self.active:
            if stage.self_check:
                pending = next(entering)
                pending += batch if only_packets else [rec for rec in batch if rec[1] >= 0]
            batch = stage.process(batch)
        writer = self.writer
        writer.write_batch(batch, source)
        if self.checkers:
            self.fh.flush()                 # what the writer handed over is in the file, for the read-back
            if self.read_back >= self.next_writeback:
                _start_writeback(self.fh, self.read_back)      # only what the check has read back
                self.next_writeback = self.read_back + WRITEBACK_EVERY
        elif self.flushed() >= self.next_writeback:
            _start_writeback(self.fh)
            self.next_writeback = self.flushed() + WRITEBACK_EVERY
        self.packets_out += len(batch) if only_packets else _count_packets(batch)
        self.clock.tick("process", self.reader.position, self.reader.size, self.packets_in)
        reason = self.monitor.pressure()
        if reason:
            _relieve(reason, self.stages, self.context)
        return True

    def flushed(self) -> int:
        """Bytes of the output in its file so far (compressed bytes for a compressed output)."""
        return self.writer.bytes_flushed if self.sink is None else self.sink.written

    def check_while_writing(self, path: str) -> None:
        packed = self.sink.kind if self.sink is not None else None
        follow = _FollowFile(path, self, partial=packed is not None)
        try:
            with CaptureReader(path, fileobj=follow, compressed=packed) as out:
                if out.format == "pcap":        # frames as spans of the read buffer: no record objects
                    for buf, starts, ends in out.frame_spans(BATCH):
                        for checker, before in self._entered(len(starts)):
                            checker.check_spans(before, buf, starts, ends, out.linktype)
                else:
                    after = _PacketRuns(out)
                    while True:
                        a = after.take(BATCH)   # reading drives the main pass as far as it needs
                        if not a:
                            break
                        for checker, before in self._entered(len(a)):
                            checker.check(before, a)
        except _Relayed as relayed:             # the main pass failed (disk full, damaged input, cancel)
            raise relayed.exc from None
        except CaptureError as exc:             # the output itself does not read back
            raise StageError(f"self-check failed: the output does not read back as a capture ({exc})") \
                from None
        while self.step():                      # a cut-short output: the pass still ends (and says so)
            pass
        if any(self.entering):
            raise StageError("self-check failed: the output holds fewer frames than went in")

    def _entered(self, n: int) -> list[tuple[Stage, Batch]]:
        """(checker, the next ``n`` packets it took in), taken off its backlog, for each checker."""
        runs = []
        for checker, pending in zip(self.checkers, self.entering):
            before = pending[:n]
            del pending[:n]
            if len(before) != n:
                raise StageError("self-check failed: the output holds more frames than went in")
            runs.append((checker, before))
        return runs


class _FollowFile:
    """The output file as it is being written, for a reader: a read first runs the main pass until the
    bytes it asks for are in the file (or the pass has ended), so it never meets a false end of file.

    ``partial`` (a compressed output, read by a decompressor): a read returns what the file holds, once it
    holds anything new. A compressed byte may stand for a thousand of the capture's (zeroed payloads): the
    main pass must not run on until a whole read's worth of them exists, nor hold their records meanwhile.
    """

    def __init__(self, path: str, main: _MainPass, partial: bool = False):
        self.fh = open(path, "rb", buffering=0)     # noqa: SIM115 (held across calls, closed by close())
        self.main = main
        self.pos = 0
        self.partial = partial

    def read(self, n: int) -> bytes:
        main = self.main
        want = self.pos + (1 if self.partial else n)
        try:
            while main.flushed() < want and main.step():
                pass
        except Exception as exc:
            # through the read-back reader unchanged: it would call an OSError of the writer (disk full)
            # "cannot read the file", and the input's own errors are not the output's
            raise _Relayed(exc) from exc
        if self.partial:
            n = min(n, main.flushed() - self.pos)
        parts = []
        while n > 0:
            chunk = self.fh.read(n)
            if not chunk:
                break
            parts.append(chunk)
            n -= len(chunk)
        data = b"".join(parts)
        self.pos += len(data)
        main.read_back = self.pos
        return data

    def close(self) -> None:
        self.fh.close()


class _Relayed(Exception):
    """An error of the main pass, carried out of the read-back reader as it was."""

    def __init__(self, exc: Exception):
        super().__init__(str(exc))
        self.exc = exc


class _PacketRuns:
    """Packet records of a capture (metadata left out), taken in runs of at most n from one batch at a time
    (so that what waits for comparison stays within about a read chunk, whatever the frame size)."""

    def __init__(self, reader: CaptureReader):
        self.batches = reader.batches(BATCH)
        self.pending: Batch = []
        self.only_packets = reader.format == "pcap"
        self.eof = False

    def take(self, n: int) -> Batch:
        pending = self.pending
        while not pending and not self.eof:
            batch = next(self.batches, None)
            if batch is None:
                self.eof = True
                break
            if self.only_packets:
                pending += batch
            else:
                pending += [rec for rec in batch if rec[1] >= 0]
        if len(pending) <= n:
            self.pending = []
            return pending
        run = pending[:n]
        del pending[:n]
        return run


class _Progress:
    """Throttled progress reports and the cancel check, over all passes of a job."""

    def __init__(self, callback: ProgressCallback | None, weights: list[float], cancel: CancelToken | None):
        self.callback = callback
        self.weights = weights
        self.total = sum(weights)
        self.done_passes = 0
        self.done_weight = 0.0
        self.cancel = cancel
        self.next_report = 0.0

    def tick(self, phase: str, offset: int, size: int, packets: int) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()
        if self.callback is None:
            return
        now = time.monotonic()
        if now < self.next_report:
            return
        self.next_report = now + PROGRESS_INTERVAL
        size = max(size, 1)
        weight = self.weights[min(self.done_passes, len(self.weights) - 1)]
        overall = int(size * (self.done_weight + weight * min(offset, size) / size) / self.total)
        self.callback(phase, overall, size, packets)

    def next_pass(self) -> None:
        if self.done_passes < len(self.weights):
            self.done_weight += self.weights[self.done_passes]
        self.done_passes += 1
        self.next_report = 0.0      # a new phase shows at once (and the owner gets a chance to cancel)


# --------------------------------------------------------------------------------------------------
# One job, start to end
# --------------------------------------------------------------------------------------------------

def _check_input(path: Path) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise JobError("the file does not exist") from None
    except OSError as exc:
        raise JobError(f"cannot read the file: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise JobError("this is a folder, not a capture file")
    if not stat.S_ISREG(st.st_mode):
        raise JobError("not a regular file (a pipe, device or socket cannot be processed)")
    if st.st_size == 0:
        raise JobError("the file is empty (0 bytes)")


def _load_key(job: Job) -> bytes:
    from . import keys

    if job.key is not None:
        return job.key
    if job.key_file is not None:
        return keys.load_key_file(Path(job.key_file))
    return keys.load_or_create_key()


def validate_stages(names: list[str]) -> None:
    known = {cls.name for cls in all_stages()}
    for name in names:
        if name not in known:
            raise JobError(f"the operation '{name}' is not available in this version")


def with_implicit(operations: list[str], settings: Settings) -> list[str]:
    """The stages a job runs: the operations chosen, and the implicit stages that want to run beside them."""
    names = list(operations)
    if any(not stage_by_name(n).hidden for n in names):
        names += [cls.name for cls in all_stages() if cls.implicit and cls.name not in names
                  and cls.wanted(settings, tuple(operations))]
    return names


class CancelToken(Protocol):
    """What a job's cancel flag must offer (threading.Event does)."""

    def is_set(self) -> bool: ...


ProgressCallback = Callable[[str, int, int, int], None]     # (phase, bytes done, bytes total, packets done)
# Runs the streaming passes of a prepared job and returns execute()'s outcome dict: execute() in this
# process (the default), or jobs.run_job_process in a child process.
Executor = Callable[[ExecSpec, "ProgressCallback | None", "CancelToken | None", JobWorkspace], dict[str, Any]]


def run_job(job: Job, settings: Settings, progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
            executor: Executor | None = None) -> JobResult:
    """Process one file; never raises for a problem with the file (the result says what happened).

    ``executor(spec, progress, cancel, workspace)`` runs the streaming passes; default: in this process.
    """
    return start_job(job, settings, progress, cancel, executor)()


def start_job(job: Job, settings: Settings, progress: ProgressCallback | None = None,
              cancel: CancelToken | None = None, executor: Executor | None = None) -> Callable[[], JobResult]:
    """``run_job`` up to its publish: the passes run now; the call returned does the rest — the staged output
    synced to disk and moved into place, the temp dir removed — and gives the result. A worker running job
    after job makes that call on a thread of its own, in order, while the next job's passes run: the sync
    is the disk's time (~0.3–1 ms a file here, a sixth of a small capture's job), not the processor's."""
    started = time.monotonic()
    input_path = Path(job.input)
    result = JobResult(input=str(input_path))
    name = input_path.name
    job_log = logging.LoggerAdapter(log, {"job": name})     # its lines carry the file's name as record.job
    ws: JobWorkspace | None = None
    try:
        validate_stages(job.stages)
        if not job.stages:
            raise JobError("no operation selected")
        _check_input(input_path)
        plan = compression_plan(input_path, settings)
        result.input_compression, result.output_compression = plan
        target = planned_output(job, settings, plan)
        output_dir = target.parent
        output_dir.mkdir(parents=True, exist_ok=True)
        if _same_file(target, input_path):
            raise JobError("the output would overwrite the input")
        stage_names = with_implicit(job.stages, settings)
        classes = [stage_by_name(n) for n in stage_names]
        stage_options = {cls.name: cls.options_from(settings) for cls in classes}
        key = _load_key(job) if any(cls.needs_key for cls in classes) else None
        ws = JobWorkspace(settings.temp_root_path(), job=name).__enter__()
        read_path = ws.link_input(input_path, settings.large_file_threshold_mb * 1024 * 1024)
        _log_compression(job_log, input_path, plan)
        staging = ws.output_staging(output_dir)
        staged = staging / target.name
        spec = ExecSpec(read_path=str(read_path), staged_path=str(staged), stages=stage_names,
                        stage_options=stage_options, key=key, memory_rss_mb=settings.memory_rss_mb,
                        memory_available_pct=settings.memory_available_pct,
                        config_dir=str(settings_config_dir()), display_name=name,
                        input_compression=plan[0], output_compression=plan[1])
        if executor is None:
            outcome = execute(spec, progress, cancel)
        else:
            outcome = executor(spec, progress, cancel, ws)
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        if outcome.get("input_compression") != plan[0]:     # the name was chosen by what it held
            raise StageError("the input file changed while it was being processed; nothing was written")
    except BaseException as exc:
        if ws is not None:
            ws.close()
        if not isinstance(exc, Exception):
            raise
        _failed(result, exc, job_log)
        result.elapsed_s = time.monotonic() - started
        return lambda: result
    workspace = ws

    def publish() -> JobResult:
        try:
            try:
                _sync(staged)
                final, renamed = _publish(staged, target, input_path,
                                          restage=lambda path: workspace.restage(path, output_dir),
                                          reuse_identical=job.reuse_identical)
            finally:
                workspace.close()
            result.output = str(final)
            result.renamed = renamed
            result.status = "ok"
            result.packets_in = outcome["packets_in"]
            result.packets_out = outcome["packets_out"]
            result.warnings = outcome["warnings"]
            result.stages = outcome["stages"]
            if renamed:
                result.warnings.append(f"{target.name} already existed; the output was written as {final.name}")
        except Exception as exc:  # noqa: BLE001 - every failure becomes one sentence in the result
            _failed(result, exc, job_log)
        result.elapsed_s = time.monotonic() - started
        return result
    return publish


def _failed(result: JobResult, exc: Exception, job_log: logging.LoggerAdapter[Any]) -> None:
    if isinstance(exc, Cancelled):
        result.status = "cancelled"
        result.error = "cancelled"
        return
    result.error_kind, result.error = describe_failure(exc)
    if result.error_kind == "internal":
        job_log.debug("Unexpected error", exc_info=exc)


def _sync(path: Path) -> None:
    """The staged output on disk before it gets its name: a crash never leaves a name on missing data."""
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """``(kind, sentence)`` for the exception that ended a job, shared by run_job and the job child.

    kind: ``"damage"`` (the container cannot be read: damaged, cut inside a header, not a capture),
    ``"input"`` (no such file, empty, a folder, ...), ``"uninspectable"`` (a frame the engine cannot
    parse, with --strict), ``"stage"`` (an operation refused the file, or its self-check failed),
    ``"io"`` (reading or writing failed: disk full, permissions), ``"internal"`` (a bug: the traceback
    goes to the caller's debug log)."""
    if isinstance(exc, CaptureError):
        return "damage", str(exc)
    if isinstance(exc, JobError):
        return exc.kind, str(exc)
    if isinstance(exc, StageError):
        return exc.kind, str(exc)
    if isinstance(exc, OSError):
        return "io", _os_message(exc)
    return "internal", f"internal error ({type(exc).__name__}: {exc})"


def _log_compression(job_log: logging.LoggerAdapter[Any], path: Path, plan: tuple[str | None, str | None]) -> None:
    """Say how a compressed input is read and an output compressed (beside the hard-link decision)."""
    kind, out = plan
    if kind:
        job_log.info("%s-compressed input (%s): decompressed as it is read, on every pass; no decompressed "
                     "copy is written to disk.", kind, _size_text(path))
    if out:
        job_log.info("the output is %s-compressed (level %d) as it is written.", out, compression.LEVELS[out])


def _size_text(path: Path) -> str:
    from .workspace import _fmt_size

    try:
        return _fmt_size(path.stat().st_size)
    except OSError:
        return "size unknown"


def settings_config_dir() -> Path:
    from .settings import config_dir

    return config_dir()


def _os_message(exc: OSError) -> str:
    text = str(exc)
    if exc.errno == 28:
        return f"the disk is full ({exc.filename or 'while writing'})"
    if exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return text
