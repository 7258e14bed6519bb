#!/usr/bin/env python3
"""How fast the Inspect view opens and scrolls on a large output (off-screen, real engine, real files).

    python3 bench/inspect_open.py --packets 1000000 --workdir /tmp/benchw

Generates a capture with the project's generator (5 % duplicates), runs all three operations on it with
the CLI, then opens the before/after view on the result and prints: the time until the first rows are
decoded and painted (the view is usable), the time until both files are indexed and paired, and the
time to show a screenful of rows anywhere in the file (a scroll jump).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--workdir", default="/tmp/benchw")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PKTMASK_CONFIG_DIR", str(work / "config"))
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    src = work / f"inspect-{args.packets}.pcap"
    out = work / "inspect-out" / f"inspect-{args.packets}-sanitized.pcap"
    if not src.exists():
        from pktmask_gui.samplegen import generate
        generate(src, packets=args.packets, seed=21)
    if not out.exists():
        subprocess.run([sys.executable, "-m", "pktmask_gui", "process", "-q", "--dedup", "--anonymize", "--mask",
                        str(src), "-o", str(out.parent)], check=True, cwd=REPO)
    from pktmask_gui.pipeline import JobResult
    from pktmask_gui.ui.app import make_app
    from pktmask_gui.ui.inspect import InspectDialog

    app = make_app()
    result = JobResult(input=str(src), output=str(out), status="ok", stages={"dedup": {"mode": "whole file"}})
    t0 = time.perf_counter()
    dialog = InspectDialog(src, out, result)
    dialog.show()
    while dialog.model.rows == 0:
        app.processEvents()
        time.sleep(0.001)
    dialog.table.viewport().repaint()          # paints the visible rows: each decoded on first paint
    app.processEvents()
    opened = time.perf_counter() - t0
    while not (dialog.finished_reading() and not dialog.timer.isActive()):
        app.processEvents()
        time.sleep(0.005)
    indexed = time.perf_counter() - t0
    jumps = []
    for fraction in (0.5, 0.9, 0.25):
        row = int(dialog.model.rows * fraction)
        t = time.perf_counter()
        dialog.table.scrollTo(dialog.model.index(row, 0))
        dialog.table.selectRow(row)
        dialog.table.viewport().repaint()
        app.processEvents()
        jumps.append(time.perf_counter() - t)
    print(f"input  {src.stat().st_size / 2**20:.0f} MB, {len(dialog.before):,} frames; "
          f"output {out.stat().st_size / 2**20:.0f} MB, {len(dialog.after):,} frames, "
          f"{dialog.pairing.dropped_count:,} duplicates paired as dropped")
    print(f"view usable (first rows decoded and painted): {opened:.3f} s")
    print(f"both files indexed and paired: {indexed:.2f} s")
    print(f"scroll jump + select + repaint: {', '.join(f'{j * 1000:.0f} ms' for j in jumps)}")
    dialog.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
