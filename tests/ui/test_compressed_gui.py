"""Compressed captures in the window: a real drop of a folder mixing plain and gzip / zstd / lz4 captures,
processed whole by the real engine; the queue's size column, the planned names, the summary and its
exports; the compression setting. Screenshots of each state go to $PKTMASK_SCREENSHOTS when it is set."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import lz4.frame
import pytest

from pktmask_gui import settings as settings_mod
from pktmask_gui.compression import _zstd, detect
from pktmask_gui.pipeline import Job, run_job
from pktmask_gui.samplegen import generate
from pktmask_gui.ui.queue import COL_SIZE
from pktmask_gui.ui.settings_dialog import SettingsDialog

from ui_helpers import drop, wait_idle

zstd = _zstd()
PACK = {"gzip": gzip.compress, "zstd": zstd.compress, "lz4": lambda d: lz4.frame.compress(d, content_checksum=True)}
UNPACK = {"gzip": gzip.decompress, "zstd": zstd.decompress, "lz4": lz4.frame.decompress}


def shot(widget, name: str) -> None:
    folder = os.environ.get("PKTMASK_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        assert widget.grab().save(str(Path(folder) / f"{name}.png"))


@pytest.fixture
def mixed_folder(ui_env):
    """inputs/: a plain capture and the same kind of traffic compressed every way, one without a capture
    extension, one holding gzip under a plain name, plus a compressed file that is no capture."""
    folder = ui_env.inputs / "captures"
    (folder / "sub").mkdir(parents=True)
    plain = ui_env.root / "plain"
    plain.mkdir()
    made = {}          # input name -> (plain copy, input compression)

    def add(name, fmt, seed, kind):
        src = plain / f"{Path(name).stem}-{seed}.{fmt}"
        generate(src, packets=1500, seed=seed, fmt=fmt, dup_ratio=0.1)
        data = src.read_bytes()
        (folder / name).write_bytes(PACK[kind](data) if kind else data)
        made[Path(name).name] = (src, kind)

    add("a.pcap", "pcap", 1, None)
    add("b.pcapng.gz", "pcapng", 2, "gzip")
    add("sub/c.pcap.zst", "pcap", 3, "zstd")
    add("d.pcapng.lz4", "pcapng", 4, "lz4")
    add("rotated.gz", "pcap", 5, "gzip")             # tcpdump -z gzip style: no capture extension
    add("e.pcap", "pcap", 6, "gzip")                 # gzip inside a .pcap name
    (folder / "notes.txt.gz").write_bytes(gzip.compress(b"meeting notes\n" * 40))
    return folder, made


EXPECTED = {"a.pcap": "a-sanitized.pcap", "b.pcapng.gz": "b-sanitized.pcapng.gz",
            "c.pcap.zst": "c-sanitized.pcap.zst", "d.pcapng.lz4": "d-sanitized.pcapng.lz4",
            "rotated.gz": "rotated-sanitized.gz", "e.pcap": "e-sanitized.pcap.gz"}


def test_dropped_mixed_folder_is_processed_whole(window, ui_env, qtbot, mixed_folder):
    folder, made = mixed_folder
    window.resize(1280, 720)
    keep = drop(window.queue_view.viewport(), [folder])
    rows = {r.path.name: r for r in window.model.rows}
    assert set(rows) == set(EXPECTED)                   # the text in notes.txt.gz is not queued
    assert not window.notice.isVisible()
    for name, (_, kind) in made.items():
        row = rows[name]
        assert row.compression == kind
        size_text = window.model.data(window.model.index(window.model.position(row), COL_SIZE))
        assert size_text.endswith(f"({kind})") if kind else "(" not in size_text
        assert window.model.result_text(row) == f"Will be saved as {EXPECTED[name]}"
    fm = window.queue_view.fontMetrics()          # the column fits "715 KB (gzip)" once it is refitted
    qtbot.waitUntil(lambda: window.queue_view.columnWidth(COL_SIZE) > fm.horizontalAdvance("1023.9 MB (gzip)"),
                    timeout=3000)
    shot(window, "compressed-1-queued")

    for box in window.op_boxes.values():
        box.setChecked(True)
    window.out_folder.setChecked(True)
    window.out_path.setText(str(ui_env.out))
    assert window.start()
    qtbot.waitUntil(lambda: any(r.status == "Done" for r in window.model.rows), timeout=60000)
    shot(window, "compressed-2-running")
    wait_idle(qtbot, window, timeout=120000)

    assert sorted(r.status for r in window.model.rows) == ["Done"] * len(EXPECTED)
    shot(window, "compressed-3-done")
    settings = settings_mod.Settings(temp_root=str(ui_env.temp_root))
    for row in window.model.rows:
        res = row.result
        plain_src, kind = made[row.path.name]
        out = Path(res.output)
        assert out.name == EXPECTED[row.path.name]
        assert (res.input_compression, res.output_compression) == (kind, kind)
        data = out.read_bytes()
        assert detect(data) == kind
        # the same capture, plain, through the engine with the same key: byte-identical once decompressed
        ref = run_job(Job(plain_src, ui_env.root / "ref", ["dedup", "anonymize", "mask"]), settings)
        assert ref.status == "ok"
        assert (UNPACK[kind](data) if kind else data) == Path(ref.output).read_bytes(), row.path.name
        assert res.packets_in == ref.packets_in and res.packets_out == ref.packets_out
        assert row.fraction() == 1.0
    assert ui_env.leftovers() == []

    dialog = window.summary_dialog
    assert dialog is not None and dialog.isVisible()
    summary = dialog.table.model()
    texts = {summary.index(i, 0).data(): summary.index(i, 5).data() for i in range(summary.rowCount())}
    assert texts["b.pcapng.gz"].startswith("gzip in and out · ")
    assert texts["c.pcap.zst"].startswith("zstd in and out · ")
    assert " in and out" not in texts["a.pcap"]
    zst = next(r for r in dialog.results if r.input.endswith("c.pcap.zst"))
    assert "\nCompression: zstd in and out\n" in dialog.details_text(zst)
    dialog.table.selectRow([summary.index(i, 0).data() for i in range(summary.rowCount())].index("c.pcap.zst"))
    shot(dialog, "compressed-4-summary")
    dialog.export_to(ui_env.root / "summary.json", "json")
    files = {Path(f["input"]).name: f for f in json.loads((ui_env.root / "summary.json").read_text())["files"]}
    assert files["d.pcapng.lz4"]["input_compression"] == files["d.pcapng.lz4"]["output_compression"] == "lz4"
    assert files["a.pcap"]["input_compression"] is None
    dialog.export_to(ui_env.root / "summary.html", "html")
    assert "Compression: lz4 in and out" in (ui_env.root / "summary.html").read_text()
    del keep


def test_a_dropped_compressed_file_and_a_refused_one(window, ui_env):
    src = ui_env.inputs / "x.pcapng"
    generate(src, packets=100, seed=9, fmt="pcapng")
    packed = ui_env.inputs / "x.pcapng.zst"
    packed.write_bytes(zstd.compress(src.read_bytes()))
    src.unlink()
    notes = ui_env.inputs / "notes.gz"
    notes.write_bytes(gzip.compress(b"not a capture"))
    keep = drop(window.queue_view.viewport(), [packed, notes])
    assert [r.path.name for r in window.model.rows] == ["x.pcapng.zst"]
    assert "notes.gz" in window.notice_text.text() and "compressed" in window.notice_text.text()
    del keep


def test_compression_setting_in_the_dialog(window, ui_env, qtbot):
    d = SettingsDialog(window.settings, window)
    qtbot.addWidget(d)
    assert d.compress.currentData() == "same"
    assert "capture.pcapng.gz → capture-sanitized.pcapng.gz" in d.suffix_example.text()
    d.compress.setCurrentIndex(d.compress.findData("zstd"))
    assert "capture.pcapng → capture-sanitized.pcapng.zst" in d.suffix_example.text()
    assert "capture.pcapng.gz → capture-sanitized.pcapng.zst" in d.suffix_example.text()
    d.show()
    shot(d, "compressed-5-settings")
    d.accept()
    assert d.result_settings.compress == "zstd"
    assert settings_mod.load_settings().compress == "zstd"
    window.apply_settings(d.result_settings)          # what Edit → Settings… does on OK
    src = ui_env.inputs / "y.pcap"
    generate(src, packets=50, seed=1)
    keep = drop(window.queue_view.viewport(), [src])
    assert window.model.result_text(window.model.rows[0]) == "Will be saved as y-sanitized.pcap.zst"
    d2 = SettingsDialog(window.settings, window)
    qtbot.addWidget(d2)
    d2.restore_defaults()
    assert d2.compress.currentData() == "same"
    del keep
