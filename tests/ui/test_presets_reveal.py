"""The Presets menu, the options a preset sets (visible and changeable before Start), and Tools → Reveal…:
real widgets, the real engine (jobs in child processes), real clicks; screenshots of each state."""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication

from pktmask_gui import keys, samplenames, settings as settings_mod
from pktmask_gui.capture import CaptureReader
from pktmask_gui.frames import walk
from pktmask_gui.hostnames import PRIVATE_NETWORKS
from pktmask_gui.ui.presets import RevealDialog

from ui_helpers import drop, wait_idle

SHOTS = os.environ.get("PKTMASK_SCREENSHOTS")      # a folder to keep the screenshots in (else a temp dir)


def shot(widget, name: str, where: Path) -> Path:
    path = Path(SHOTS or where) / f"{name}.png"
    assert widget.grab().save(str(path))
    return path


def menu_action(window, menu_title: str, text: str):
    menu = next(a.menu() for a in window.menuBar().actions() if a.text().replace("&", "") == menu_title)
    return next(a for a in menu.actions() if a.text().replace("&", "") == text)


def test_preset_menu_sets_operations_and_visible_options_then_runs(window, ui_env, qtbot):
    bar = window.preset_bar
    assert bar.isVisible() and bar.combo.currentText() == "Custom"
    shot(window, "presets-before", ui_env.root)

    menu_action(window, "Presets", "Share with a vendor").trigger()
    assert window.options.selected_operations() == ["dedup", "anonymize", "mask"]
    boxes = {key: box for (_stage, key), box in bar.boxes.items()}
    assert boxes["pseudonymize_names"].isChecked() and boxes["keep_handshake"].isChecked()
    assert all(box.isVisible() and box.isEnabled() for box in boxes.values())
    assert bar.combo.currentText() == "Share with a vendor"
    saved = settings_mod.load_settings()                    # saved: the Settings dialog shows the same
    assert saved.stage_options["anonymize"]["pseudonymize_names"] is True
    shot(window, "presets-vendor", ui_env.root)

    # the user sees and changes an option before Start: the combo says the choice is no longer the preset's
    qtbot.mouseClick(boxes["pseudonymize_names"], Qt.LeftButton)
    assert window.settings.stage_options["anonymize"]["pseudonymize_names"] is False
    assert bar.combo.currentText() == "Custom"
    qtbot.mouseClick(boxes["pseudonymize_names"], Qt.LeftButton)
    assert bar.combo.currentText() == "Share with a vendor"
    qtbot.mouseClick(boxes["anonymize_macs"], Qt.LeftButton)         # an option the preset leaves alone
    assert window.settings.stage_options["anonymize"]["anonymize_macs"] is True
    assert bar.combo.currentText() == "Share with a vendor"
    qtbot.mouseClick(boxes["anonymize_macs"], Qt.LeftButton)

    # "Troubleshoot internally" from the combo: operations and internal-only shown
    bar.combo.activated.emit(bar.combo.findData("internal"))
    assert window.options.selected_operations() == ["dedup", "anonymize"]
    assert boxes["anonymize_only"].isChecked()
    assert not boxes["keep_handshake"].isEnabled()         # Mask Payloads is not ticked: greyed
    assert window.settings.stage_options["anonymize"]["anonymize_only"] == list(PRIVATE_NETWORKS)
    shot(window, "presets-internal", ui_env.root)

    # back to the vendor preset, and a real run: the output's names are pseudonyms
    menu_action(window, "Presets", "Share with a vendor").trigger()
    samplenames.write_names_capture(ui_env.inputs / "names.pcap", seed=2)
    keep = drop(window.queue_view.viewport(), [ui_env.inputs / "names.pcap"])
    window.out_folder.setChecked(True)
    window.out_path.setText(str(ui_env.out))
    assert window.start()
    assert not bar.combo.isEnabled() and not boxes["pseudonymize_names"].isEnabled()     # locked while running
    wait_idle(qtbot, window)
    row = window.model.rows[0]
    assert row.status == "Done", row.error
    report = row.result.stages["names"]
    assert report["names_pseudonymized"] > 40
    raw = Path(row.result.output).read_bytes().lower()
    assert b"corp" not in raw and b"intranet" not in raw
    text = window.summary_dialog.details_text(row.result)
    assert "Host names: " in text and "pseudonymized" in text
    shot(window.summary_dialog, "presets-summary", ui_env.root)
    window.summary_dialog.close()
    assert bar.combo.isEnabled()
    del keep


def test_reveal_dialog_turns_addresses_back(window, ui_env, qtbot):
    samplenames.write_names_capture(ui_env.inputs / "n.pcap", seed=3)
    keep = drop(window.queue_view.viewport(), [ui_env.inputs / "n.pcap"])
    window.options.set_operations(["anonymize"])
    window.out_folder.setChecked(True)
    window.out_path.setText(str(ui_env.out))
    assert window.start()
    wait_idle(qtbot, window)
    window.summary_dialog.close()
    out = Path(window.model.rows[0].result.output)
    pairs = {}
    for before, after in zip(_frames(ui_env.inputs / "n.pcap"), _frames(out)):
        w = walk(before, 1)
        for off, size, plen in w[3]:
            if plen == size * 8:
                pairs[ipaddress.ip_address(after[off:off + size])] = ipaddress.ip_address(before[off:off + size])
    anonymized = [a for a, o in pairs.items() if a != o][:6]
    assert keys.key_path().exists()                         # the run created the user's key

    # Tools → Reveal… opens the dialog (modal: a timer finds and closes it)
    opened = []

    def close_it():
        opened.append(QApplication.activeModalWidget())
        if opened[-1] is not None:
            opened[-1].close()

    QTimer.singleShot(200, close_it)
    window.act_reveal.trigger()
    assert isinstance(opened[0], RevealDialog)

    dialog = RevealDialog(window.settings, window)
    dialog.show()
    qtbot.waitExposed(dialog)
    for addr in anonymized:                                 # typed, one line each
        qtbot.keyClicks(dialog.input, str(addr))
        qtbot.keyClick(dialog.input, Qt.Key_Return)
    qtbot.keyClicks(dialog.input, "not-an-address")
    qtbot.mouseClick(dialog.reveal_button, Qt.LeftButton)
    shot(dialog, "reveal", ui_env.root)
    lines = dialog.output.toPlainText().splitlines()
    assert len(lines) == len(anonymized) + 1
    for addr, line in zip(anonymized, lines):
        shown, original = line.split("\t")[:2]
        assert shown == str(addr) and original == str(pairs[addr])
    assert "not an IPv4 or IPv6 address" in lines[-1]
    assert dialog.message.text().startswith(f"{len(anonymized)} addresses revealed; 1 could not be")
    dialog.close()
    del keep


def _frames(path):
    with CaptureReader(path) as reader:
        return [rec[0] for batch in reader.batches(4096) for rec in batch if rec[1] >= 0]
