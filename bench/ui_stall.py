#!/usr/bin/env python3
"""UI responsiveness: the longest stall of the window's event loop while two jobs run on a large capture.

    python3 bench/ui_stall.py [--packets 400000] [--ops dedup,anonymize,mask] [--platform offscreen]

A 5 ms precise QTimer ticks in the UI thread for the whole batch; a stall is how much later than due a
tick arrives. The goal is at most 50 ms. The packet work runs in child processes (jobs.py); the UI thread
only handles progress signals, log records and repaints, so a stall here means the UI thread did too much.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICK_MS = 5


def make_capture(path: Path, packets: int, seed: int = 7) -> None:
    """``packets`` realistic frames from the project's generator (~5 % duplicates, so every stage works)."""
    from pktmask_gui.samplegen import generate

    generate(path, packets=packets, seed=seed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=400000, help="packets in the large capture")
    parser.add_argument("--ops", default="dedup,anonymize,mask", help="operations, comma-separated")
    parser.add_argument("--platform", default=None, help="Qt platform (default: offscreen when no display)")
    args = parser.parse_args()
    if args.platform:
        os.environ["QT_QPA_PLATFORM"] = args.platform
    elif not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(REPO))

    with tempfile.TemporaryDirectory(prefix="pktmask_bench_ui_") as tmp:
        root = Path(tmp)
        os.environ["PKTMASK_CONFIG_DIR"] = str(root / "config")
        from pktmask_gui import settings as settings_mod

        temp_root = root / "temp"
        temp_root.mkdir()
        settings_mod.save_settings(settings_mod.Settings(temp_root=str(temp_root), parallel_jobs=2))
        first = root / "large-a.pcap"
        make_capture(first, args.packets)
        second = root / "large-b.pcap"
        os.link(first, second)                 # the same large capture under a second name: two jobs

        from PySide6.QtCore import Qt, QTimer

        from pktmask_gui.ui.app import make_app

        app = make_app()
        from pktmask_gui.ui.main_window import MainWindow

        window = MainWindow()
        window.resize(1280, 760)
        window.show()
        window.add_paths([str(first), str(second)])
        ops = [op.strip() for op in args.ops.split(",") if op.strip()]
        unknown = [op for op in ops if op not in window.op_boxes]
        if unknown:
            print(f"unknown operation(s): {', '.join(unknown)}; available: {', '.join(window.op_boxes)}",
                  file=sys.stderr)
            return 2
        for name, box in window.op_boxes.items():
            box.setChecked(name in ops)
        window.out_folder.setChecked(True)
        window.out_path.setText(str(root / "out"))
        for _ in range(20):
            app.processEvents()

        gaps: list[float] = []
        tick_times: list[float] = []
        last = [time.perf_counter()]

        def tick():
            now = time.perf_counter()
            gaps.append((now - last[0]) * 1000.0)
            tick_times.append(now)
            last[0] = now

        timer = QTimer()
        timer.setTimerType(Qt.PreciseTimer)
        timer.setInterval(TICK_MS)
        timer.timeout.connect(tick)
        progress_events = [0]
        window.controller.runner.progress.connect(lambda *_: progress_events.__setitem__(0, progress_events[0] + 1))

        # Measure while the jobs run: from Start until the last result has arrived (the summary dialog
        # that opens then is reported separately).
        ended: list[float] = []

        def on_result(*_args):
            if all(r.status in ("Done", "Failed", "Cancelled") for r in window.model.rows) and not ended:
                ended.append(time.perf_counter())

        window.controller.runner.finished.connect(on_result)
        window.controller.runner.failed.connect(on_result)
        window.controller.runner.idle.connect(lambda: QTimer.singleShot(100, app.quit))
        started = time.perf_counter()
        timer.start()
        last[0] = time.perf_counter()
        QTimer.singleShot(0, window.start)
        app.exec()                               # the real event loop, as in the app
        timer.stop()
        end = ended[0] if ended else time.perf_counter()
        elapsed = end - started
        after = [g for t, g in zip(tick_times, gaps) if t > end]
        gaps = [g for t, g in zip(tick_times, gaps) if t <= end]
        statuses = [r.status for r in window.model.rows]
        if window.summary_dialog is not None:
            window.summary_dialog.close()
        window.close()
        app.processEvents()

    stalls = sorted(max(0.0, g - TICK_MS) for g in gaps)
    worst = stalls[-1] if stalls else 0.0
    p99 = stalls[int(len(stalls) * 0.99) - 1] if len(stalls) >= 100 else worst
    print(f"two jobs x {args.packets:,} packets ({', '.join(ops)}), {elapsed:.1f} s, rows: {', '.join(statuses)}")
    print(f"event-loop ticks: {len(gaps):,} (every {TICK_MS} ms), progress signals: {progress_events[0]:,}")
    print(f"longest UI stall: {worst:.1f} ms   (p99 {p99:.1f} ms, median gap "
          f"{statistics.median(gaps) if gaps else 0:.1f} ms; goal <= 50 ms: {'met' if worst <= 50 else 'MISSED'})")
    if after:
        print(f"after the last result (summary dialog opens): longest stall {max(after) - TICK_MS:.1f} ms")
    print(f"load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    return 0 if all(s == "Done" for s in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
