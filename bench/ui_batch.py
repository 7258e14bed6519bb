#!/usr/bin/env python3
"""The window on a folder of many small captures: wall time and the longest stall of its event loop.

    python3 bench/ui_batch.py [FOLDER] [--ops dedup,anonymize,mask] [--jobs 2] [--add 10000]

FOLDER (default /work/shared/corpus-wild, else 300 small captures from the project's generator) is
added to the queue and run with ``--jobs`` parallel jobs, outputs to a temp folder; the summary opens at
the end, as in the app. Then ``--add`` files (hard links to one small capture; 0: skip) are added to the
queue in one go. A 5 ms precise QTimer ticks in the UI thread throughout; a stall is how much later than
due a tick arrives (goal: never more than 50 ms). Prints one line per phase, what was left behind once the
window closed (the jobs' temp dirs, staging dirs, worker processes), and a last line
``RESULT run_s=… worst_ms=…`` that bench.py reads.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICK_MS = 5
WILD = Path("/work/shared/corpus-wild")


def stall_figures(gaps: list[float]) -> tuple[float, float]:
    stalls = sorted(max(0.0, g - TICK_MS) for g in gaps)
    if not stalls:
        return 0.0, 0.0
    p99 = stalls[max(0, int(len(stalls) * 0.99) - 1)] if len(stalls) >= 100 else stalls[-1]
    return stalls[-1], p99


def _alive(pid: int) -> bool:
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:   # gone (psutil.NoSuchProcess), or psutil missing: ask the kernel
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=None)
    parser.add_argument("--ops", default="dedup,anonymize,mask")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--add", type=int, default=10000, help="files to add after the run (0: skip)")
    args = parser.parse_args()
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(REPO))

    with tempfile.TemporaryDirectory(prefix="pktmask_bench_ui_") as tmp:
        root = Path(tmp)
        os.environ["PKTMASK_CONFIG_DIR"] = str(root / "config")
        from pktmask_gui import settings as settings_mod

        (root / "temp").mkdir()             # the jobs' temp dirs: looked at for leftovers at the end
        settings_mod.save_settings(settings_mod.Settings(parallel_jobs=args.jobs, temp_root=str(root / "temp")))
        folder = Path(args.folder) if args.folder else WILD
        if not folder.is_dir():
            from pktmask_gui.samplegen import generate

            folder = root / "small"
            folder.mkdir()
            for i in range(300):
                generate(folder / f"small-{i:03d}.pcap", packets=60, seed=i)

        from PySide6.QtCore import Qt, QTimer

        from pktmask_gui.ui.app import make_app

        app = make_app()
        from pktmask_gui.ui.main_window import MainWindow

        window = MainWindow()
        window.resize(1280, 760)
        window.show()
        ops = [op.strip() for op in args.ops.split(",") if op.strip()]
        for name, box in window.op_boxes.items():
            box.setChecked(name in ops)
        window.out_folder.setChecked(True)
        window.out_path.setText(str(root / "out"))

        many = root / "many"
        if args.add:                                # made now: not the window's work
            many.mkdir()
            src = sorted(p for p in folder.iterdir() if p.suffix in (".pcap", ".pcapng"))[0]
            for i in range(args.add):
                os.link(src, many / f"f{i:05d}{src.suffix}")
        settle = time.monotonic() + 0.3             # the window shown and settled, as before a user's drop
        while time.monotonic() < settle:
            app.processEvents()
            time.sleep(0.005)

        # (when, gap ms, UI-thread CPU ms in the gap): on a loaded machine the gap grows with other
        # processes' load, the CPU the UI thread spent in it does not.
        ticks: list[tuple[float, float, float]] = []
        last = [time.perf_counter(), time.thread_time()]

        def tick():
            now, cpu = time.perf_counter(), time.thread_time()
            ticks.append((now, (now - last[0]) * 1000.0, (cpu - last[1]) * 1000.0))
            last[0], last[1] = now, cpu

        timer = QTimer()
        timer.setTimerType(Qt.PreciseTimer)
        timer.setInterval(TICK_MS)
        timer.timeout.connect(tick)
        marks: dict[str, float] = {}

        def add_and_start():
            marks["add"] = time.perf_counter()
            window.add_paths([str(folder)])
            wait_added()

        def wait_added():
            if window.adding():
                QTimer.singleShot(5, wait_added)
                return
            marks["start"] = time.perf_counter()
            marks["cpu_start"] = time.process_time()
            window.start()

        def on_finished(_run):
            marks["end"] = time.perf_counter()
            marks["cpu_end"] = time.process_time()
            QTimer.singleShot(300, add_many)        # the summary opens in between, as for the user

        def add_many():
            marks["summary"] = time.perf_counter()
            if not args.add:
                app.quit()
                return
            marks["many"] = time.perf_counter()
            window.add_paths([str(many)])
            wait_many()

        def wait_many():
            if window.adding():
                QTimer.singleShot(5, wait_many)
                return
            marks["many_end"] = time.perf_counter()
            QTimer.singleShot(200, app.quit)

        window.controller.finished.connect(on_finished)
        timer.start()
        last[:] = [time.perf_counter(), time.thread_time()]
        QTimer.singleShot(0, add_and_start)
        app.exec()
        timer.stop()
        statuses = [r.status for r in window.model.rows if r.status != "Queued"]
        rows_queued = sum(r.status == "Queued" for r in window.model.rows)
        summary_rows = len(window.controller.last_results)
        if window.summary_dialog is not None:
            window.summary_dialog.close()
        workers = window.controller.local_runner.pool.worker_pids() if window.controller.local_runner.pool else []
        window.close()                      # the warm worker processes go with the window
        app.processEvents()
        left = [str(p.relative_to(root)) for p in root.rglob("pktmask_*")]
        left += [f"worker process {pid}" for pid in workers if _alive(pid)]

    def phase(a: str, b: str):
        return [(g, c) for t, g, c in ticks if marks.get(a, 0) <= t <= marks.get(b, 0)]

    run_s = marks["end"] - marks["start"]
    rows = {"adding the folder": phase("add", "start"), "the run": phase("start", "end"),
            "the summary opening": phase("end", "summary"), f"adding {args.add:,} files": phase("many", "many_end")}
    done = sum(s == "Done" for s in statuses)
    print(f"{folder} ({len(statuses)} files, {', '.join(ops)}), {args.jobs} parallel jobs: run {run_s:.2f} s, "
          f"{done} done, {len(statuses) - done} failed; summary of {summary_rows} files")
    worst_all = worst_cpu = 0.0
    for name, pairs in rows.items():
        worst, p99 = stall_figures([g for g, _c in pairs])
        cpu = max([c for _g, c in pairs], default=0.0)
        worst_all, worst_cpu = max(worst_all, worst), max(worst_cpu, cpu)
        print(f"  {name:<24} longest stall {worst:6.1f} ms  (p99 {p99:5.1f} ms, {len(pairs):,} ticks; "
              f"most UI-thread CPU between two ticks {cpu:5.1f} ms)")
    print(f"  the UI thread's CPU during the run: {sum(c for _g, c in rows['the run']) / 1000:.2f} s "
          f"(the window's process, its job threads included: {marks['cpu_end'] - marks['cpu_start']:.2f} s)")
    if args.add:
        print(f"  {rows_queued:,} rows queued in {marks['many_end'] - marks['many']:.2f} s")
    print(f"left behind after the window closed: {', '.join(left) if left else 'nothing'}")
    print(f"load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(f"RESULT run_s={run_s:.3f} worst_ms={worst_all:.1f} worst_cpu_ms={worst_cpu:.1f} "
          f"goal={'met' if worst_all <= 50 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
