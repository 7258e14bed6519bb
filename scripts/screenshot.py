#!/usr/bin/env python3
"""Make the README screenshot: the window mid-run, rendered offscreen, saved as docs/screenshot.png.

Anyone can rerun it:  python3 scripts/screenshot.py [--out docs/screenshot.png]
It generates its own captures (the project's generator) in a temp dir, runs the real engine with every
operation, grabs the window while two files are running, then cancels, cleans up and exits.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def repeated_capture(path: Path, packets: int, seed: int, repeat: int) -> None:
    """A large capture made cheaply: ``packets`` generated frames, their record section written ``repeat`` times."""
    from pktmask_gui.samplegen import generate

    seed_file = path.with_suffix(".seed")
    generate(seed_file, packets=packets, seed=seed)
    data = seed_file.read_bytes()
    seed_file.unlink()
    with open(path, "wb") as fh:
        fh.write(data[:24])
        for _ in range(repeat):
            fh.write(data[24:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshot.png"))
    parser.add_argument("--size", default="1280x720", help="window size, e.g. 1366x728")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))

    with tempfile.TemporaryDirectory(prefix="pktmask_shot_") as tmp:
        root = Path(tmp)
        if os.environ.get("QT_QPA_PLATFORM", "offscreen") == "offscreen":
            # A virtual laptop screen (1366x768) instead of the offscreen plugin's default 800x800.
            screen = {"name": "laptop", "x": 0, "y": 0, "width": 1366, "height": 768, "logicalDpi": 96,
                      "logicalBaseDpi": 96, "dpr": 1}
            (root / "screen.json").write_text(json.dumps({"screens": [screen]}))
            os.environ["QT_QPA_PLATFORM"] = f"offscreen:configfile={root / 'screen.json'}"
        os.environ["PKTMASK_CONFIG_DIR"] = str(root / "config")
        from pktmask_gui import settings as settings_mod
        from pktmask_gui.samplegen import generate

        captures = root / "captures"
        (captures / "branch-office").mkdir(parents=True)
        temp_root = root / "temp"
        temp_root.mkdir()
        settings_mod.save_settings(settings_mod.Settings(temp_root=str(temp_root), parallel_jobs=2,
                                                         large_file_threshold_mb=50))
        generate(captures / "branch-office" / "dhcp-renewals.pcapng", packets=1500, seed=1, fmt="pcapng")
        generate(captures / "branch-office" / "dns-timeouts.pcap", packets=2500, seed=2)
        repeated_capture(captures / "customer-ticket-4711.pcap", 20000, 3, 8)
        repeated_capture(captures / "dmz-uplink-tls.pcap", 20000, 4, 6)
        generate(captures / "lab-vpn-tunnel.pcap", packets=4000, seed=5)
        generate(captures / "voip-trunk.pcapng", packets=3000, seed=6, fmt="pcapng")
        (captures / "meeting-notes.txt").write_text("not a capture")

        from pktmask_gui.ui.app import make_app

        app = make_app()
        from pktmask_gui.ui.main_window import MainWindow

        window = MainWindow()
        width, height = (int(v) for v in args.size.split("x"))
        window.resize(width, height)
        window.show()
        window.add_paths([str(captures / "branch-office"), str(captures / "customer-ticket-4711.pcap"),
                          str(captures / "dmz-uplink-tls.pcap"), str(captures / "lab-vpn-tunnel.pcap"),
                          str(captures / "voip-trunk.pcapng"), str(captures / "meeting-notes.txt")])
        for box in window.op_boxes.values():
            box.setChecked(True)
        window.out_folder.setChecked(True)
        window.out_path.setText(str(root / "sanitized"))
        window.start()

        big = [r for r in window.model.rows if r.path.name in ("customer-ticket-4711.pcap", "dmz-uplink-tls.pcap")]
        deadline = time.monotonic() + 120
        grabbed = False
        while time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.01)
            if all(r.status == "Running" and 0.3 <= r.fraction() <= 0.8 for r in big):
                window._update_overall()
                app.processEvents()
                out = Path(args.out)
                out.parent.mkdir(parents=True, exist_ok=True)
                window.grab().save(str(out))
                grabbed = True
                print(f"saved {out}")
                break
            if window.controller.run is None:
                break
        window.confirm_quit = lambda _running: True
        window.close()
        app.processEvents()
        shutil.rmtree(captures, ignore_errors=True)
    if not grabbed:
        print("the run ended before both large files were mid-way; nothing saved", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
