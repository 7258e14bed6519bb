#!/usr/bin/env python3
"""Screenshots of the summary and the Inspect view after a real run, rendered off-screen.

    python3 scripts/desktop_screenshots.py --out docs/screenshots
(the window mid-run at 900 and 1280 px: python3 scripts/screenshot.py --size 900x600 / --size 1280x760)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshots"))
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pktmask_shot_") as tmp:
        root = Path(tmp)
        screen = {"name": "laptop", "x": 0, "y": 0, "width": 1366, "height": 768, "logicalDpi": 96,
                  "logicalBaseDpi": 96, "dpr": 1}
        (root / "screen.json").write_text(json.dumps({"screens": [screen]}))
        os.environ["QT_QPA_PLATFORM"] = f"offscreen:configfile={root / 'screen.json'}"
        os.environ["PKTMASK_CONFIG_DIR"] = str(root / "config")
        from pktmask_gui.samplegen import generate
        from pktmask_gui.ui.app import make_app
        from pktmask_gui.ui.main_window import MainWindow

        captures = root / "captures"
        captures.mkdir()
        generate(captures / "branch-office-dhcp.pcapng", packets=1500, seed=1, fmt="pcapng")
        generate(captures / "customer-ticket-4711.pcap", packets=3000, seed=3)
        (captures / "truncated-upload.pcap").write_bytes(b"\xd4\xc3\xb2\xa1" + b"\0" * 10)
        app = make_app()
        window = MainWindow()
        window.confirm_quit = lambda _running: True
        window.resize(1280, 760)
        window.show()
        window.add_paths([str(p) for p in sorted(captures.iterdir())])
        for box in window.op_boxes.values():
            box.setChecked(True)
        window.out_folder.setChecked(True)
        window.out_path.setText(str(root / "sanitized"))
        window.start()
        deadline = time.monotonic() + 120
        while (window.controller.run is not None or window.summary_dialog is None) and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.01)
        summary = window.summary_dialog
        summary.table.selectRow(1)
        app.processEvents()
        summary.grab().save(str(out / "summary.png"))
        row = next(r for r in window.model.rows if r.path.name == "customer-ticket-4711.pcap")
        from pktmask_gui.ui.inspect import InspectDialog

        dialog = InspectDialog(row.path, Path(row.result.output), row.result, window)
        dialog.show()
        while not (dialog.finished_reading() and not dialog.timer.isActive()):
            app.processEvents()
            time.sleep(0.01)
        model = dialog.model
        pick = next(i for i in range(model.rowCount()) if "TCP" in (model.data(model.index(i, 2)) or "")
                    and "payload zeroed" in (model.data(model.index(i, 8)) or ""))
        dialog.table.selectRow(pick)
        dialog.table.scrollTo(model.index(max(0, pick - 3), 0))
        app.processEvents()
        top = dialog.fields.topLevelItem(1)
        dialog.fields.setCurrentItem(top.child(1) if top is not None and top.childCount() > 1 else top)
        app.processEvents()
        dialog.grab().save(str(out / "inspect.png"))
        dialog.close()
        window.close()
        app.processEvents()
    print(f"saved {out / 'summary.png'} and {out / 'inspect.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
