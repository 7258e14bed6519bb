"""Command line: ``pktmask-gui`` (the window) and ``pktmask-gui process`` (headless, for scripts).

``process`` is a public interface: keep its flags and exit codes stable.
Exit status: 0 every file succeeded, 1 any file failed, 2 usage error, 130 interrupted (Ctrl-C / SIGTERM).
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait as futures_wait
from pathlib import Path

from . import __version__
from .settings import COMPRESS_CHOICES

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Operation flags, in pipeline order: flag -> stage name.
OPERATION_FLAGS = {"--dedup": "dedup", "--anonymize": "anonymize", "--mask": "mask"}


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would exit 2 itself; keep one path for every usage error
        raise UsageError(message)


def help_summary() -> str:
    """What the tool does, how outputs are named and where the settings live: the first lines of --help."""
    from .settings import config_dir

    return ("Makes packet captures safe to share: removes duplicate frames, anonymizes IP addresses, masks "
            "payloads; inputs are never modified.\n"
            "Outputs: <name>-sanitized.<ext> (pcap stays pcap, pcapng stays pcapng; compressed as the input "
            "was: x.pcapng.gz -> x-sanitized.pcapng.gz), never overwriting a file (-1, -2, ... instead).\n"
            f"Settings file (shared with the window): {config_dir() / 'settings.json'}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pktmask-gui process", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=help_summary(),
        epilog="Exit status: 0 all files succeeded, 1 a file failed, 2 usage error, 130 interrupted.")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="capture files (.pcap, .pcapng, .cap; gzip, zstd or lz4 compressed too) or folders "
                             "(searched recursively)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR",
                        help="output folder (created if missing); folder inputs keep their layout under it")
    ops = parser.add_argument_group("operations (at least one; never taken from saved settings)")
    ops.add_argument("--dedup", action="store_true", help="Remove Dupes: drop frames identical to an earlier one")
    ops.add_argument("--anonymize", action="store_true", help="Anonymize IPs: keyed prefix-preserving Crypto-PAn")
    ops.add_argument("--mask", action="store_true", help="Mask Payloads: keep TLS handshakes, zero everything else")
    ops.add_argument("--preset", metavar="NAME",
                     help="a preset's operations and options: vendor (Share with a vendor), publish (Publish), "
                          "internal (Troubleshoot internally); operation flags beside it replace its "
                          "operations, option flags its options")
    anon = parser.add_argument_group("Anonymize IPs options")
    anon.add_argument("--key-file", metavar="PATH", help="32-byte key, raw or as 64 hex digits "
                      "(default: your key in the config folder, created at first use)")
    anon.add_argument("--keep", action="append", default=None, metavar="CIDR",
                      help="keep addresses in this network unchanged (repeatable)")
    anon.add_argument("--anonymize-macs", action="store_true", default=None,
                      help="also map MAC addresses (group/local bits kept)")
    anon.add_argument("--no-payload-addresses", action="store_true", default=None,
                      help="leave the addresses inside DNS answers and DHCP messages as they are "
                           "(mapped by default)")
    anon.add_argument("--export-mapping", metavar="PATH",
                      help="write the address (and host name) mapping table to PATH (mode 0600)")
    anon.add_argument("--keep-oui", action="store_true", default=None,
                      help="anonymize MAC addresses but keep their vendor prefix (the first three bytes)")
    anon.add_argument("--anonymize-only", action="append", default=None, metavar="CIDR",
                      help="anonymize only addresses in this network (repeatable); all others stay as they are")
    anon.add_argument("--internal-only", action="store_true", default=None,
                      help="anonymize only the private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, "
                           "fe80::/10): public servers stay readable")
    anon.add_argument("--pseudonymize-names", action="store_true", default=None,
                      help="replace host names (DNS, mDNS, LLMNR, NetBIOS, DHCP, TLS server names and "
                           "certificates) by keyed pseudonyms of the same length; needs --anonymize")
    anon.add_argument("--keep-domain", action="append", default=None, metavar="DOMAIN",
                      help="leave host names equal to or under DOMAIN as they are (repeatable; *.local keeps "
                           "only the suffix)")
    anon.add_argument("--allow-uninspected", action="store_true", default=None,
                      help="let frames the engine cannot parse through unchanged (counted) instead of zeroing "
                           "everything after their last header understood (also for Mask Payloads)")
    anon.add_argument("--strict", action="store_true", default=None,
                      help="fail the file on a frame the engine cannot parse, instead of zeroing everything "
                           "after its last header understood (also for Mask Payloads)")
    mask = parser.add_argument_group("Mask Payloads options")
    mask.add_argument("--mask-handshake", action="store_true", default=None,
                      help="mask TLS handshake records too (kept by default)")
    mask.add_argument("--mask-mode", choices=("zero", "trim"), default=None,
                      help="zero masked bytes (default) or trim them from the captured frame")
    mask.add_argument("--keep-port", action="append", type=int, default=None, metavar="N",
                      help="keep the payload of this TCP/UDP port as is (repeatable)")
    general = parser.add_argument_group("general")
    general.add_argument("--compress", choices=COMPRESS_CHOICES, default=None,
                         help="output compression: 'same' as each input, 'none', or gzip, zstd, lz4 "
                              "(default: the setting, itself 'same')")
    general.add_argument("--keep-metadata", action="store_true",
                         help="do not scrub pcapng metadata (comments, name resolution, keys, custom blocks)")
    general.add_argument("-j", "--jobs", type=int, metavar="N", help="files processed in parallel; a file "
                         "processed alone (48 MB or more) runs on up to N processes "
                         "(default: the setting, itself defaulting to the number of cores)")
    general.add_argument("--scheduler", metavar="ADDRESS",
                         help="send one task per file to this Dask scheduler (tcp://HOST:PORT or tls://HOST:PORT; "
                              "needs pip install 'pktmask-gui[cluster]'); inputs and -o must be on a file system "
                              "every worker reaches at the same path")
    general.add_argument("--temp-dir", metavar="DIR", help="temp root (default: the setting or the system's)")
    general.add_argument("--large-file-threshold", type=int, metavar="MB",
                         help="hard-link inputs of at least this size into the temp folder (default 200)")
    general.add_argument("--memory-limit", type=int, metavar="MB",
                         help="memory pressure above this job memory (default 1024; 0 = off)")
    general.add_argument("--json", action="store_true", help="print one JSON object with every result on stdout")
    general.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no result lines")
    general.add_argument("-v", "--verbose", action="store_true", help="also show informational log lines")
    general.add_argument("--debug", action="store_true", help="show tracebacks and debug log lines")
    return parser


def _apply_flags(args, settings) -> list[str]:
    """Fold flags into the settings (flags win); return the operations in pipeline order."""
    from .stages import operations

    from . import presets

    available = {cls.name: cls for cls in operations()}
    preset = None
    if args.preset is not None:
        preset = presets.find(args.preset)
        if preset is None:
            raise UsageError(f"no preset is called '{args.preset}': choose one of {presets.names()}")
        presets.apply(preset, settings)             # before the flags, which override it
    chosen = [name for flag, name in OPERATION_FLAGS.items() if getattr(args, flag[2:])]
    if not chosen and preset is not None:
        chosen = [name for name in OPERATION_FLAGS.values() if name in preset.operations]
    if not chosen:
        raise UsageError("no operation chosen: give at least one of --dedup, --anonymize, --mask, or a "
                         "--preset (a sanitized file is never a plain copy)")
    if args.pseudonymize_names and "anonymize" not in chosen:
        raise UsageError("--pseudonymize-names needs --anonymize: the pseudonyms use the anonymization key")
    for name in chosen:
        if name not in available:
            raise UsageError(f"--{ {'dedup': 'dedup', 'anonymize': 'anonymize', 'mask': 'mask'}[name] } "
                             f"is not available in this version of pktmask-gui")
    if args.jobs is not None:
        if not 1 <= args.jobs <= 64:
            raise UsageError("--jobs must be between 1 and 64")
        settings.parallel_jobs = args.jobs
    if args.temp_dir is not None:
        settings.temp_root = args.temp_dir
    if args.large_file_threshold is not None:
        settings.large_file_threshold_mb = args.large_file_threshold
    if args.memory_limit is not None:
        settings.memory_rss_mb = args.memory_limit
    if args.keep_metadata:
        settings.keep_metadata = True
    if args.compress is not None:
        settings.compress = args.compress
    anon = settings.stage_options.setdefault("anonymize", {})
    if args.keep is not None:
        anon["keep_cidrs"] = list(args.keep)
    if args.anonymize_macs:
        anon["anonymize_macs"] = True
    if args.keep_oui:
        anon["keep_oui"] = True
    only = list(args.anonymize_only or [])
    if args.internal_only:
        from .hostnames import PRIVATE_NETWORKS
        only += [n for n in PRIVATE_NETWORKS if n not in only]
    if only:
        anon["anonymize_only"] = only
    if args.pseudonymize_names:
        anon["pseudonymize_names"] = True
    if args.keep_domain is not None:
        anon["keep_domains"] = list(args.keep_domain)
    if args.allow_uninspected and args.strict:
        raise UsageError("--allow-uninspected and --strict contradict each other: choose one")
    if args.allow_uninspected or args.strict:
        policy = "pass" if args.allow_uninspected else "fail"
        for name in ("anonymize", "mask"):
            options = settings.stage_options.setdefault(name, {})
            options.pop("allow_uninspected", None)
            options["uninspected"] = policy
    if args.no_payload_addresses:
        anon["payload_addresses"] = False
    if args.export_mapping:
        anon["export_mapping"] = str(Path(args.export_mapping).resolve())
    mask = settings.stage_options.setdefault("mask", {})
    if args.mask_handshake:
        mask["keep_handshake"] = False
    if args.mask_mode is not None:
        mask["mode"] = args.mask_mode
    if args.keep_port is not None:
        mask["keep_ports"] = list(args.keep_port)
    problems = settings.validate()
    if problems:
        raise UsageError(" ".join(problems))
    return chosen


class _Console:
    """Progress bar and result lines on stderr (the bar only on a terminal)."""

    def __init__(self, total_files: int, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stderr.isatty() and not quiet
        self.total_files = total_files
        self.lock = threading.Lock()
        self.progress: dict[int, tuple[int, int, int]] = {}
        self.finished = 0
        self.bar_shown = False
        self.next_draw = 0.0

    def update(self, idx: int, done: int, total: int, packets: int) -> None:
        if not self.tty:
            return
        with self.lock:
            self.progress[idx] = (done, total, packets)
            now = time.monotonic()
            if now >= self.next_draw:
                self.next_draw = now + 0.1
                self._draw()

    def _draw(self) -> None:
        done = sum(d for d, t, p in self.progress.values())
        total = sum(t for d, t, p in self.progress.values()) or 1
        packets = sum(p for d, t, p in self.progress.values())
        frac = min(1.0, done / total)
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        line = (f"\r[{bar}] {frac * 100:5.1f}%  file {min(self.finished + 1, self.total_files)}/"
                f"{self.total_files}  {packets:,} packets")
        sys.stderr.write(line[:120])
        sys.stderr.flush()
        self.bar_shown = True

    def clear(self) -> None:
        if self.bar_shown:
            sys.stderr.write("\r" + " " * 120 + "\r")
            self.bar_shown = False

    def line(self, text: str) -> None:
        with self.lock:
            self.clear()
            if not self.quiet:
                sys.stderr.write(text + "\n")
                sys.stderr.flush()

    def result(self, idx: int, result) -> None:
        with self.lock:
            self.progress.pop(idx, None)
            self.finished += 1
        if not self.quiet:          # (-q: not even worded; a batch of small files has hundreds)
            self.line(describe_result(result))


def _user_order(stages: dict) -> list:
    """Stage reports in the order the user sees the operations (then the metadata scrub)."""
    from .stages import stage_by_name

    def position(name):
        try:
            return stage_by_name(name).order
        except KeyError:
            return 10 ** 6
    return sorted((stages or {}).items(), key=lambda item: position(item[0]))


def _what_was_done(name: str, counts: dict) -> str:
    """A few words per operation for the result line: what it did to this file."""
    def n(key):
        value = counts.get(key, 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    def words(k, one, many):
        return f"{k:,} {one if k == 1 else many}"

    if name == "dedup":
        return words(n("duplicates_removed"), "duplicate", "duplicates") + " removed"
    if name == "anonymize":
        text = words(n("addresses_mapped"), "address", "addresses") + " anonymized"
        if n("macs_mapped"):
            text += f" ({words(n('macs_mapped'), 'MAC address', 'MAC addresses')} too)"
        if n("frames_not_inspected"):
            text += f", {words(n('frames_not_inspected'), 'frame', 'frames')} not inspected"
        return text
    if name == "mask":
        text = f"{words(n('frames_masked'), 'frame', 'frames')} masked"
        if n("tls_flows"):
            text += f" ({words(n('tls_flows'), 'TLS flow', 'TLS flows')} kept readable)"
        if n("uninspected_frames"):
            text += f", {words(n('uninspected_frames'), 'frame', 'frames')} not inspected"
        return text
    if name == "names":
        text = words(n("names_pseudonymized"), "host name", "host names") + " pseudonymized"
        if n("names_zeroed"):
            text += f" ({words(n('names_zeroed'), 'name', 'names')} zeroed)"
        return text
    if name == "scrub":
        removed = sum(v for v in counts.values() if isinstance(v, int) and not isinstance(v, bool))
        return f"{words(removed, 'metadata item', 'metadata items')} removed" if removed else ""
    return ""


def describe_result(result) -> str:
    from .compression import words as compression_words

    name = result.input
    if result.status == "ok":
        extras = [text for text in (_what_was_done(n, c) for n, c in _user_order(result.stages)
                                    if isinstance(c, dict)) if text]
        if result.warnings:
            extras.append(f"{len(result.warnings)} warning{'s' if len(result.warnings) != 1 else ''}: "
                          + "; ".join(result.warnings))
        packing = compression_words(result.input_compression, result.output_compression)
        if packing:
            extras.insert(0, packing)
        extra = (", " + ", ".join(extras)) if extras else ""
        return (f"ok: {name} -> {result.output} ({result.packets_in:,} packets in, {result.packets_out:,} out"
                f"{extra}, {result.elapsed_s:.2f} s)")
    if result.status == "cancelled":
        return f"cancelled: {name} (no output written)"
    return f"FAILED: {name}: {result.error}"


def _key_to_be_created(operations: list[str], key_file: Path | None) -> Path | None:
    """The path of the user's anonymization key when this run is the one that creates it, else None."""
    if "anonymize" not in operations or key_file is not None:
        return None
    from . import keys

    path = keys.key_path()
    return None if path.exists() else path


class _ConsoleLogHandler(logging.Handler):
    def __init__(self, console: _Console):
        super().__init__()
        self.console = console

    def emit(self, record):
        try:
            job = getattr(record, "job", "")     # the file a job's line is about (its LoggerAdapter's extra)
            self.console.line(f"{record.levelname.lower()}: {job + ': ' if job else ''}{record.getMessage()}")
        except Exception:
            pass


def process_main(argv: list[str]) -> int:
    from .settings import load_settings
    from .pipeline import Job, JobResult, find_captures, run_job
    from .workerpool import LaneJob
    from .workspace import keep_spare_dir, sweep_stale

    try:
        args = build_parser().parse_args(argv)
        settings = load_settings()
        operations = _apply_flags(args, settings)
    except UsageError as exc:
        sys.stderr.write(f"pktmask-gui process: error: {exc}\n"
                         "usage: pktmask-gui process PATH... -o DIR [--dedup] [--anonymize] [--mask] "
                         "[--jobs N] [--json]  (see --help)\n")
        return EXIT_USAGE
    if args.scheduler:
        from .cluster import process_main as process_on_cluster
        return process_on_cluster(args, settings, operations)

    console = _Console(0, args.quiet or False)
    handler = _ConsoleLogHandler(console)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    handler.setLevel(level)
    engine_log = logging.getLogger("pktmask_gui")
    engine_log.addHandler(handler)
    engine_log.setLevel(min(level, logging.INFO))

    key_file = Path(args.key_file) if args.key_file else None
    if key_file is not None and "anonymize" in operations:
        from . import keys
        try:
            keys.load_key_file(key_file)
        except (OSError, ValueError) as exc:
            reason = exc.strerror.lower() if isinstance(exc, OSError) and exc.strerror else str(exc)
            sys.stderr.write(f"pktmask-gui process: error: cannot use the key file {key_file}: {reason}\n")
            return EXIT_USAGE

    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        sys.stderr.write(f"pktmask-gui process: error: the output path {out_dir} is a file, not a folder: "
                         "-o names the folder the sanitized copies go to\n")
        return EXIT_USAGE
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        sys.stderr.write(f"pktmask-gui process: error: cannot create the output folder {out_dir}: "
                         f"{exc.strerror or exc}\n")
        return EXIT_USAGE
    sweep_stale(settings.temp_root_path(), extra_dirs=[out_dir])
    missing = [p for p in args.paths if not os.path.lexists(p)]
    found = find_captures([p for p in args.paths if os.path.lexists(p)])
    jobs = [Job(input=path, output_dir=out_dir, stages=operations, rel_dir=rel, key_file=key_file)
            for path, rel in found]
    console.total_files = len(jobs) + len(missing)
    if not jobs and not missing:
        sys.stderr.write("pktmask-gui process: error: no capture files (.pcap, .pcapng, .cap, also gzip, zstd or "
                         "lz4 compressed) in "
                         f"{', '.join(args.paths)}\n")
        return EXIT_FAILED
    new_key = _key_to_be_created(operations, key_file)
    results: list = [None] * len(jobs)
    cancel = threading.Event()
    workers = max(1, min(settings.parallel_jobs, len(jobs)))
    # Jobs side by side need a process each (the GIL): worker processes started once for the run, each
    # taking job after job (workerpool.py); one job at a time runs in this process, where it starts ~0.2 s
    # sooner and the cancel event reaches it directly (it stops within one batch).
    pool = None
    runner = run_job
    if workers > 1:
        from .workerpool import WorkerPool, preload

        preload()           # imported once, here: the workers start as forks of this process (on Linux)
        pool = WorkerPool(workers, fork=True)
        pool.warm()
    elif settings.parallel_jobs > 1:
        # one file at a time and cores to spare: its main pass may run on segments (segments.py), in forks
        from .segments import MIN_SPLIT_BYTES, executor as split_executor
        from .workerpool import preload

        if any(_size(job) >= MIN_SPLIT_BYTES for job in jobs):
            preload()       # once, here: the segments' workers start as forks that have it (on Linux)
        runner = functools.partial(run_job, executor=split_executor(settings.parallel_jobs, fork=True))

    def progress_of(idx: int):
        return lambda _phase, done, total, pk: console.update(idx, done, total, pk)

    def work(idx: int):
        if cancel.is_set():
            results[idx] = JobResult(input=str(jobs[idx].input), status="cancelled", error="cancelled")
            return
        result = runner(jobs[idx], settings, cancel=cancel, progress=progress_of(idx))
        results[idx] = result
        console.result(idx, result)

    sizes = [_size(job) for job in jobs] if workers > 1 else [0] * len(jobs)     # each file stat'ed once
    order = deque(_dispatch_order(jobs, workers, sizes))
    order_lock = threading.Lock()

    def take():
        """The next job for a worker's lane (workerpool.run_lane); None once all have begun or on cancel."""
        with order_lock:
            if cancel.is_set() or not order:
                return None
            idx = order.popleft()
        return LaneJob(jobs[idx], settings, progress=progress_of(idx), cancel=cancel, size=sizes[idx], tag=idx)

    def finish(item, result) -> None:
        results[item.tag] = result
        console.result(item.tag, result)

    previous_term = signal.signal(signal.SIGTERM, _interrupt)
    interrupted = False
    keep_spare_dir(pool is None and len(jobs) > 1)  # job after job here: one temp dir for them all
    threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pktmask-job")
    try:
        if pool is None:
            futures = [threads.submit(work, i) for i in order]
        else:           # a lane per worker: each takes job after job, the next one sent ahead
            futures = [threads.submit(pool.run_lane, take, finish) for _ in range(workers)]
        try:
            while futures_wait(futures, timeout=0.1).not_done:   # returns at once when the last one ends
                pass
        except KeyboardInterrupt:
            interrupted = True
            cancel.set()
            console.line("Interrupted: cancelling; temp files and partial outputs are being removed …")
            deadline = time.monotonic() + 10
            while not all(f.done() for f in futures) and time.monotonic() < deadline:
                try:
                    time.sleep(0.05)
                except KeyboardInterrupt:
                    pass
        for f in futures:
            if f.done() and f.exception() is not None:
                raise f.exception()
    finally:
        threads.shutdown(wait=True, cancel_futures=True)
        keep_spare_dir(False)
        if pool is not None:
            pool.close()
        signal.signal(signal.SIGTERM, previous_term)
        console.clear()
        engine_log.removeHandler(handler)

    all_results = [JobResult(input=str(p), status="failed", error="the file does not exist") for p in missing]
    for r in all_results:
        console.line(describe_result(r))
    all_results += [r if r is not None else JobResult(input=str(j.input), status="cancelled", error="cancelled")
                    for r, j in zip(results, jobs)]
    if new_key is not None and new_key.exists():
        console.line(f"note: created your anonymization key at {new_key} (mode 0600); later runs use it, so the "
                     "same address maps to the same address; keep it private")
    written = [r for r in all_results if r.status == "ok" and r.output]
    if written and sys.stderr.isatty() and not args.quiet:
        folders = sorted({str(Path(r.output).parent) for r in written})
        console.line(f"Outputs are in {folders[0]}" if len(folders) == 1
                     else f"Outputs are in {out_dir.resolve()} ({len(folders)} folders)")
    if args.json:
        files = []
        for r in all_results:
            d = r.to_dict()
            files.append({k: d[k] for k in ("input", "output", "status", "error", "error_kind", "warnings",
                                            "packets_in", "packets_out", "elapsed_s", "stages",
                                            "input_compression", "output_compression")})
        ok = bool(all_results) and all(r.status == "ok" for r in all_results)
        print(json.dumps({"ok": ok, "files": files}, indent=2))
    if interrupted:
        return EXIT_INTERRUPTED
    if not all_results or any(r.status != "ok" for r in all_results):
        return EXIT_FAILED
    return EXIT_OK


def _no_display() -> bool:
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                    or os.environ.get("QT_QPA_PLATFORM"))
    return False


def gui_main(paths: list[str] | None = None) -> int:
    if _no_display():
        sys.stderr.write("pktmask-gui: no display found (DISPLAY/WAYLAND_DISPLAY unset), so the window cannot "
                         "open. Use the command line: 'pktmask-gui process PATH -o DIR --dedup --anonymize "
                         "--mask' (see 'pktmask-gui process --help'), or run the window off-screen with "
                         "QT_QPA_PLATFORM=offscreen.\n")
        return EXIT_FAILED
    from .qtdeps import xcb_problem

    problem = xcb_problem()
    if problem:             # instead of Qt's "Reinstalling the application may fix this problem"
        sys.stderr.write(problem)
        return EXIT_FAILED
    try:
        from .ui.app import run_gui
    except ImportError as exc:
        sys.stderr.write(f"pktmask-gui: the desktop window is not available: {exc}. "
                         "Use 'pktmask-gui process --help' for the command line.\n")
        return EXIT_FAILED
    return run_gui(list(paths or []))


def _size(job) -> int:
    try:
        return os.stat(job.input).st_size
    except OSError:
        return 0


def _dispatch_order(jobs: list, workers: int, sizes: list[int] | None = None) -> list[int]:
    """The order jobs start in: as given with one at a time; side by side, the largest first, so that no
    big file starts last while the other workers have nothing left (on 681 IDS captures the ten largest
    are two thirds of the bytes). Results are still reported in the given order (``--json``)."""
    if workers <= 1:
        return list(range(len(jobs)))
    if sizes is None:
        sizes = [_size(job) for job in jobs]
    return sorted(range(len(jobs)), key=lambda i: -sizes[i])


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "process":
        # SIGTERM is a polite Ctrl-C for the whole command, not only while files run: a batch of small
        # files may be over before the signal comes, and the default action would end the process mid-exit.
        previous_term = signal.signal(signal.SIGTERM, _interrupt)
        try:
            return process_main(argv[1:])
        except KeyboardInterrupt:   # Ctrl-C outside the cancellable wait (start-up, shutdown): no traceback
            sys.stderr.write("pktmask-gui process: interrupted\n")
            return EXIT_INTERRUPTED
        finally:
            signal.signal(signal.SIGTERM, previous_term)
    if argv and argv[0] == "reveal":
        from .reveal import main as reveal_main
        return reveal_main(argv[1:])
    if argv and argv[0] in ("-h", "--help"):
        sys.stdout.write(help_summary() + "\n\n"
                         "usage: pktmask-gui [FILE_OR_FOLDER ...]      open the window (with these queued; "
                         "a window already open takes them)\n"
                         "       pktmask-gui process PATH... -o DIR [--dedup] [--anonymize] [--mask] "
                         "[--jobs N] [--json]\n"
                         "       pktmask-gui reveal [--key-file K] ADDRESS...  the original of each anonymized "
                         "address\n"
                         "       pktmask-gui --install-desktop         add it to this user's menu and "
                         "\"Open With\" for captures (Linux)\n"
                         "       pktmask-gui --uninstall-desktop       remove exactly what --install-desktop "
                         "added\n"
                         "       pktmask-gui --version\n\n"
                         "Run 'pktmask-gui process --help' for every option of the command line.\n")
        return EXIT_OK
    if argv and argv[0] in ("--install-desktop", "--uninstall-desktop"):
        if len(argv) > 1:
            sys.stderr.write(f"pktmask-gui: {argv[0]} takes no other argument\n")
            return EXIT_USAGE
        from .desktop import main as desktop_main
        return desktop_main("install" if argv[0] == "--install-desktop" else "uninstall")
    if argv and argv[0] == "--version":
        sys.stdout.write(f"pktmask-gui {__version__}\n")
        return EXIT_OK
    unknown = [a for a in argv if a.startswith("-")]
    if unknown:
        sys.stderr.write(f"pktmask-gui: unknown option {unknown[0]} (see 'pktmask-gui --help')\n")
        return EXIT_USAGE
    return gui_main(argv)


def entry() -> None:
    """The program's entry (the console script, ``python -m pktmask_gui`` and the bundle's)."""
    code = main()
    # The work is done and its outputs complete: a Ctrl-C or SIGTERM during the interpreter's shutdown (its
    # threads and child processes joined) would only turn the finished run into a killed one (exit -2).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(code)
