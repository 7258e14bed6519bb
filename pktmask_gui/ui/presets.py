"""Presets and reveal in the window: the Presets menu, the options a preset sets (shown under the operations,
each one a checkbox the user sees and can change before Start), and Tools → Reveal… (the original of each
anonymized address, with the user's key or a key file).

``install(window)`` adds all of it to the main window; the engine side is presets.py and reveal.py.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QFontDatabase
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFrame, QHBoxLayout,
                               QLabel, QLineEdit, QPlainTextEdit, QPushButton, QVBoxLayout)

from .. import presets as engine_presets
from .. import settings as settings_mod
from ..hostnames import PRIVATE_NETWORKS

# (stage, option key, label, tooltip): what a preset may set, each shown as a checkbox
SHOWN = (
    ("anonymize", "pseudonymize_names", "Pseudonymize host names",
     "DNS, mDNS, LLMNR, NetBIOS, DHCP, TLS server names and certificates: keyed pseudonyms of the same length, "
     "the public suffix kept (Anonymize IPs)"),
    ("anonymize", "anonymize_macs", "Anonymize MACs", "Map MAC addresses with the key too (Anonymize IPs)"),
    ("anonymize", "keep_oui", "Keep MAC vendor", "Keep the first three bytes of each MAC address (the vendor)"),
    ("anonymize", "anonymize_only", "Internal networks only",
     "Anonymize only " + ", ".join(PRIVATE_NETWORKS) + ": public servers stay readable"),
    ("mask", "keep_handshake", "Keep TLS handshake", "Mask Payloads keeps the TLS handshake (names in it are "
                                                     "pseudonymized when that option is on)"),
)
CUSTOM = "Custom"


def _value(settings, stage: str, key: str) -> bool:
    from ..stages import stage_by_name

    options = settings.stage_options.get(stage, {})
    if key == "anonymize_only":
        return sorted(options.get(key) or []) == sorted(PRIVATE_NETWORKS)
    if key in options:
        return bool(options[key])
    return bool(next(o.default for o in stage_by_name(stage).OPTIONS if o.key == key))


class PresetBar(QFrame):
    """The preset chooser and the options presets set, live on the window's settings (saved at once)."""

    applied = Signal(str)               # a preset's key, after it set the operations and options

    def __init__(self, window):
        super().__init__()
        self.window = window
        self.setObjectName("presetBar")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(2, 0, 2, 0)
        layout.setSpacing(12)
        label = QLabel("Preset:")
        self.combo = QComboBox()
        self.combo.setObjectName("presetCombo")
        self.combo.addItem(CUSTOM, "")
        for preset in engine_presets.PRESETS:
            self.combo.addItem(preset.title, preset.key)
            self.combo.setItemData(self.combo.count() - 1, preset.description, Qt.ToolTipRole)
        self.combo.activated.connect(lambda i: self.apply(self.combo.itemData(i)) if self.combo.itemData(i) else None)
        label.setBuddy(self.combo)
        layout.addWidget(label)
        layout.addWidget(self.combo)
        self.boxes: dict[tuple, QCheckBox] = {}
        for stage, key, text, tip in SHOWN:
            box = QCheckBox(text)
            box.setObjectName(f"preset_{key}")
            box.setToolTip(tip)
            box.toggled.connect(lambda on, s=stage, k=key: self._toggled(s, k, on))
            self.boxes[stage, key] = box
            layout.addWidget(box)
        layout.addStretch(1)
        window.options.changed.connect(self._match)
        self.load(window.settings)

    def load(self, settings) -> None:
        """Show ``settings``' values (after the Settings dialog, or a preset)."""
        for (stage, key), box in self.boxes.items():
            box.blockSignals(True)
            box.setChecked(_value(settings, stage, key))
            box.blockSignals(False)
        self._enable()
        self._match()

    def apply(self, key: str) -> None:
        """Choose preset ``key``: its operations ticked, its options set and saved, all of it shown."""
        preset = engine_presets.find(key)
        if preset is None:
            return
        settings = self.window.settings
        engine_presets.apply(preset, settings)
        settings_mod.save_settings(settings)
        self.window.options.set_operations(preset.operations)
        self.load(settings)
        self.combo.setCurrentIndex(self.combo.findData(preset.key))
        self.window.statusBar().showMessage(f"Preset “{preset.title}”: {preset.description} Check the options "
                                            "shown, then Start.", 10000)
        self.applied.emit(preset.key)

    def set_busy(self, busy: bool) -> None:
        self.combo.setEnabled(not busy)
        for box in self.boxes.values():
            box.setEnabled(not busy)
        if not busy:
            self._enable()

    def _toggled(self, stage: str, key: str, on: bool) -> None:
        options = self.window.settings.stage_options.setdefault(stage, {})
        if key == "anonymize_only":
            options[key] = list(PRIVATE_NETWORKS) if on else []
        else:
            options[key] = on
        settings_mod.save_settings(self.window.settings)
        self._enable()
        self._match()

    def _enable(self) -> None:
        """An option whose operation is not ticked is shown, but greyed."""
        ops = set(self.window.options.selected_operations())
        for (stage, _key), box in self.boxes.items():
            box.setEnabled(stage in ops and self.combo.isEnabled())

    def _match(self) -> None:
        """The combo names the preset whose operations and options are all as shown, else Custom."""
        self._enable()
        ops = set(self.window.options.selected_operations())
        settings = self.window.settings
        for preset in engine_presets.PRESETS:
            if set(preset.operations) != ops:
                continue
            same = all((_value(settings, stage, key) == (sorted(v) == sorted(PRIVATE_NETWORKS))
                        if key == "anonymize_only" else _value(settings, stage, key) == bool(v))
                       for stage, values in preset.options.items() for key, v in values.items())
            if same:
                self.combo.setCurrentIndex(self.combo.findData(preset.key))
                return
        self.combo.setCurrentIndex(0)


class RevealDialog(QDialog):
    """Tools → Reveal…: anonymized addresses in, their originals out (the engine's reveal.Revealer)."""

    def __init__(self, settings, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Reveal Addresses — PktMask GUI")
        self.setObjectName("revealDialog")
        self.settings = settings
        intro = QLabel("Paste anonymized IPv4 or IPv6 addresses (one per line): each is turned back into its "
                       "original with the key, under the keep rules of your settings. Host names and MAC "
                       "addresses are one-way: their originals are only in a mapping export.")
        intro.setWordWrap(True)
        self.input = QPlainTextEdit()
        self.input.setObjectName("revealInput")
        self.input.setPlaceholderText("203.0.113.7\n2001:db8::1f")
        self.key_path = QLineEdit()
        self.key_path.setObjectName("revealKey")
        self.key_path.setPlaceholderText("Your key (in the settings folder)")
        browse = QPushButton("Key File…")
        browse.clicked.connect(self._browse)
        key_row = QHBoxLayout()
        key_row.addWidget(QLabel("Key:"))
        key_row.addWidget(self.key_path, 1)
        key_row.addWidget(browse)
        self.reveal_button = QPushButton("Reveal")
        self.reveal_button.setObjectName("revealButton")
        self.reveal_button.setDefault(True)
        self.reveal_button.clicked.connect(self.reveal)
        self.output = QPlainTextEdit()
        self.output.setObjectName("revealOutput")
        self.output.setReadOnly(True)
        self.output.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.message = QLabel("")
        self.message.setObjectName("revealMessage")
        self.message.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.input, 1)
        layout.addLayout(key_row)
        layout.addWidget(self.reveal_button, 0, Qt.AlignRight)
        layout.addWidget(QLabel("Originals:"))
        layout.addWidget(self.output, 1)
        layout.addWidget(self.message)
        layout.addWidget(buttons)
        self.resize(560, 520)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose the Key File", str(Path.home()))
        if path:
            self.key_path.setText(path)

    def reveal(self) -> None:
        from .. import keys
        from ..reveal import Revealer

        texts = [t.strip() for t in self.input.toPlainText().replace(",", "\n").splitlines() if t.strip()]
        if not texts:
            self.message.setText("Paste at least one address.")
            return
        try:
            path = Path(self.key_path.text().strip()) if self.key_path.text().strip() else keys.key_path()
            if not path.exists():
                raise ValueError(f"there is no key at {path}")
            key = keys.load_key_file(path)
            revealer = Revealer(key, self.settings.options_for("anonymize"))
        except (OSError, ValueError) as exc:
            self.message.setText(f"The key cannot be used: {exc}.")
            return
        except Exception as exc:  # noqa: BLE001 - a settings problem (a bad network), in words
            self.message.setText(str(exc))
            return
        lines, notes, done = [], 0, 0
        for text in texts:
            result = revealer.reveal(text)
            if result.error:
                lines.append(f"{text}\t({result.error})")
            elif not result.originals:
                lines.append(f"{text}\t(no address maps to it with this key)")
            else:
                done += 1
                lines.append(f"{text}\t{result.originals[0]}"
                             + ("\t(or kept as it is)" if len(result.originals) > 1 else ""))
                notes += len(result.originals) > 1
        self.output.setPlainText("\n".join(lines))
        words = [f"{done} address{'es' if done != 1 else ''} revealed"]
        if len(texts) > done:
            words.append(f"{len(texts) - done} could not be")
        if notes:
            words.append(f"{notes} also lie where addresses stay as they are")
        self.message.setText("; ".join(words) + ".")


def install(window) -> PresetBar:
    """Add the preset bar (under the operations), the Presets menu and Tools → Reveal… to ``window``."""
    bar = PresetBar(window)
    layout = window.centralWidget().layout()
    layout.insertWidget(layout.indexOf(window.options) + 1, bar)
    menus = window.menuBar()
    help_action = next((a for a in menus.actions() if a.text().replace("&", "") == "Help"), None)
    preset_menu = menus.addMenu("&Presets")
    for preset in engine_presets.PRESETS:
        action = QAction(preset.title, window)
        action.setObjectName(f"preset_action_{preset.key}")
        action.setStatusTip(preset.description)
        action.triggered.connect(lambda _c=False, k=preset.key: bar.apply(k))
        preset_menu.addAction(action)
    tools = menus.addMenu("&Tools")
    reveal = QAction("&Reveal…", window)
    reveal.setObjectName("revealAction")
    reveal.setStatusTip("The original of each anonymized address, for the holder of the key")
    reveal.triggered.connect(lambda: RevealDialog(window.settings, window).exec())
    tools.addAction(reveal)
    if help_action is not None:                               # Help stays last
        menus.removeAction(help_action)
        menus.addAction(help_action)
    window.preset_bar, window.preset_menu, window.tools_menu, window.act_reveal = bar, preset_menu, tools, reveal
    return bar
