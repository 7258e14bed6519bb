"""Edit → Settings…: every field of the engine's Settings, plus one page per stage built from its OPTIONS.

The dialog edits a copy; OK validates (each problem as a sentence), saves the settings file and hands
the new Settings back. Running jobs keep the settings they started with; the next job uses the new ones.
"""
from __future__ import annotations

import copy
import hashlib
import os
import tempfile
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QFrame, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QMessageBox,
                               QPlainTextEdit, QPushButton, QScrollArea, QSpinBox, QTabWidget,
                               QVBoxLayout, QWidget)

from .. import settings as settings_mod
from ..compression import output_kind
from ..pipeline import output_name
from ..stages import operations
from .handoff import find_wireshark

INT_MAX = 2**31 - 1
COMPRESS_LABELS = {"same": "Same as the input", "none": "None", "gzip": "gzip (.gz)", "zstd": "zstd (.zst)",
                   "lz4": "lz4 (.lz4)"}


def _note(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setObjectName("note")
    label.setTextFormat(Qt.PlainText)
    return label


class _Rows:
    """Label | field rows, each with its help right under the field. (QFormLayout leaves odd gaps above
    word-wrapped help labels.)"""

    def __init__(self, box: QWidget):
        self.grid = QGridLayout(box)
        self.grid.setColumnStretch(1, 1)
        self.grid.setHorizontalSpacing(12)
        self.grid.setVerticalSpacing(4)
        self.row = 0

    def field(self, label: str, widget: QWidget, help_text: str = "") -> None:
        caption = QLabel(label)
        caption.setBuddy(widget)
        self.grid.addWidget(caption, self.row, 0, Qt.AlignLeft | Qt.AlignVCenter)
        stretch = isinstance(widget, (QLineEdit, QPlainTextEdit, QWidget)) and \
            not isinstance(widget, (QSpinBox, QComboBox))
        if isinstance(widget, QPlainTextEdit):
            caption.setAlignment(Qt.AlignLeft | Qt.AlignTop)
            self.grid.addWidget(caption, self.row, 0, Qt.AlignLeft | Qt.AlignTop)
        if stretch:
            self.grid.addWidget(widget, self.row, 1)
        else:
            widget.setMinimumWidth(160)
            self.grid.addWidget(widget, self.row, 1, Qt.AlignLeft)
        self.row += 1
        if help_text:
            self.note(help_text, column=1)

    def check(self, box: QCheckBox, help_text: str = "") -> None:
        self.grid.addWidget(box, self.row, 0, 1, 2)
        self.row += 1
        if help_text:
            self.note(help_text, column=0, indent=24)

    def note(self, text: str, column: int = 0, indent: int = 0) -> QLabel:
        label = _note(text)
        label.setContentsMargins(indent, 0, 0, 6)
        self.grid.addWidget(label, self.row, column, 1, 2 - column)
        self.row += 1
        return label


def _split_list(text: str) -> list[str]:
    return [item for item in (part.strip() for part in text.replace(",", "\n").replace(";", "\n").splitlines())
            if item]


class OptionEditor:
    """One stage option's widget: reads and writes the value in the settings' own types."""

    def __init__(self, stage, option):
        self.stage = stage
        self.option = option
        kind = option.kind
        if kind == "bool":
            self.widget = QCheckBox(option.label)
        elif kind == "int":
            self.widget = QSpinBox()
            self.widget.setRange(option.minimum if option.minimum is not None else 0,
                                 option.maximum if option.maximum is not None else INT_MAX)
            self.widget.setGroupSeparatorShown(True)
        elif kind == "choice":
            self.widget = QComboBox()
            for choice in option.choices:
                text = str(choice)
                self.widget.addItem(text[:1].upper() + text[1:], choice)
        elif kind in ("cidr_list", "domain_list"):
            self.widget = QPlainTextEdit()
            self.widget.setPlaceholderText("One network per line, e.g. 192.0.2.0/24 or 2001:db8::/32"
                                           if kind == "cidr_list" else "One domain per line, e.g. example.com")
            self.widget.setFixedHeight(self.widget.fontMetrics().height() * 4 + 12)
            self.widget.setTabChangesFocus(True)
        elif kind == "int_list":
            self.widget = QLineEdit()
            self.widget.setPlaceholderText("Numbers separated by commas, e.g. 443, 8443")
        else:
            self.widget = QLineEdit()
        self.widget.setObjectName(f"option_{stage.name}_{option.key}")
        if option.help:
            self.widget.setToolTip(option.help)

    def set_value(self, value) -> None:
        kind = self.option.kind
        w = self.widget
        if kind == "bool":
            w.setChecked(bool(value))
        elif kind == "int":
            w.setValue(int(value) if isinstance(value, int) else int(self.option.default))
        elif kind == "choice":
            idx = w.findData(value)
            w.setCurrentIndex(idx if idx >= 0 else max(0, w.findData(self.option.default)))
        elif kind in ("cidr_list", "domain_list"):
            w.setPlainText("\n".join(map(str, value or [])))
        elif kind == "int_list":
            w.setText(", ".join(map(str, value or [])))
        else:
            w.setText("" if value is None else str(value))

    def value(self):
        """(value, problem): problem is a sentence when the text cannot be read as the option's type."""
        kind = self.option.kind
        w = self.widget
        if kind == "bool":
            return w.isChecked(), None
        if kind == "int":
            return w.value(), None
        if kind == "choice":
            return w.currentData(), None
        if kind in ("cidr_list", "domain_list"):
            return _split_list(w.toPlainText()), None
        if kind == "int_list":
            items = _split_list(w.text())
            numbers = []
            for item in items:
                try:
                    numbers.append(int(item))
                except ValueError:
                    return None, f"{self.option.label}: '{item}' is not a whole number."
            return numbers, None
        return w.text(), None


class SettingsDialog(QDialog):
    def __init__(self, current: settings_mod.Settings, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Settings — PktMask GUI")
        self.setObjectName("settingsDialog")
        self.original = copy.deepcopy(current)
        self.result_settings: settings_mod.Settings | None = None
        self.editors: dict[tuple[str, str], OptionEditor] = {}
        self.scrub_boxes: dict[str, QCheckBox] = {}

        self.tabs = QTabWidget()
        self.tabs.addTab(self._general_page(), "General")
        self.tabs.addTab(self._files_page(), "Temp Files && Memory")
        self.stage_pages = {}
        for stage in operations():
            page = self._stage_page(stage)
            self.stage_pages[stage.name] = page
            self.tabs.addTab(page, stage.title)

        self.errors = QLabel()
        self.errors.setObjectName("errorBox")
        self.errors.setWordWrap(True)
        self.errors.setTextFormat(Qt.RichText)
        self.errors.hide()

        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel
                                        | QDialogButtonBox.RestoreDefaults)
        self.buttons.button(QDialogButtonBox.RestoreDefaults).setToolTip(
            "Put every field back to its default value (saved only when you press OK)")
        self.buttons.button(QDialogButtonBox.RestoreDefaults).clicked.connect(self.restore_defaults)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        applies = _note("Changes apply to the next file that starts; files already running keep their settings.")
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.errors)
        layout.addWidget(applies)
        layout.addWidget(self.buttons)
        self.load(self.original)
        self.resize(680, 640)

    # --- pages -----------------------------------------------------------------------------------
    def _scroll(self, inner: QWidget) -> QScrollArea:
        area = QScrollArea()
        area.setWidgetResizable(True)
        area.setFrameShape(QFrame.NoFrame)
        area.setWidget(inner)
        return area

    def _general_page(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)

        jobs_box = QGroupBox("Processing")
        rows = _Rows(jobs_box)
        self.parallel_jobs = QSpinBox()
        self.parallel_jobs.setObjectName("parallel_jobs")
        self.parallel_jobs.setRange(1, 64)
        self.parallel_jobs.setToolTip("How many files are processed at the same time")
        rows.field("Parallel jobs:", self.parallel_jobs,
                   f"Each file runs in its own process. This computer has {os.cpu_count() or 1} CPU cores; "
                   "more parallel jobs than cores gains nothing.")
        layout.addWidget(jobs_box)

        naming = QGroupBox("Output naming")
        rows = _Rows(naming)
        self.output_suffix = QLineEdit()
        self.output_suffix.setObjectName("output_suffix")
        self.output_suffix.setToolTip("Added to each input's name to name its output")
        rows.field("Name suffix:", self.output_suffix)
        self.compress = QComboBox()
        self.compress.setObjectName("compress")
        for value, text in COMPRESS_LABELS.items():
            self.compress.addItem(text, value)
        self.compress.setToolTip("How outputs are compressed (inputs are recognised by their content, "
                                 "gzip, zstd and lz4 alike)")
        rows.field("Compression:", self.compress,
                   "Same as the input: a gzip, zstd or lz4 compressed capture gives an output compressed "
                   "the same way, a plain one a plain output. Levels are the fast ones (gzip 1, zstd 1, "
                   "lz4 0): gzip is by far the slowest of the three to write.")
        self.suffix_example = rows.note("", column=1)
        self.output_suffix.textChanged.connect(self._update_suffix_example)
        self.compress.currentIndexChanged.connect(self._update_suffix_example)
        layout.addWidget(naming)

        meta = QGroupBox("pcapng metadata")
        meta_layout = QVBoxLayout(meta)
        meta_layout.addWidget(_note("When any operation runs, metadata that can identify people or networks "
                                    "is removed from pcapng files. Choose what is removed:"))
        for key, label in settings_mod.SCRUB_ITEMS.items():
            box = QCheckBox(label)
            box.setObjectName(f"scrub_{key}")
            self.scrub_boxes[key] = box
            meta_layout.addWidget(box)
        self.keep_metadata = QCheckBox("Keep all metadata (nothing above is removed; not recommended)")
        self.keep_metadata.setObjectName("keep_metadata")
        self.keep_metadata.toggled.connect(self._update_scrub_enabled)
        meta_layout.addWidget(self.keep_metadata)
        layout.addWidget(meta)

        handoff = QGroupBox("Wireshark")
        rows = _Rows(handoff)
        self.wireshark_path = QLineEdit()
        self.wireshark_path.setObjectName("wireshark_path")
        self.wireshark_path.setClearButtonEnabled(True)
        found = find_wireshark("")
        self.wireshark_path.setPlaceholderText(f"Found: {found}" if found else "Not found on the PATH")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_wireshark)
        row = QWidget()
        row_layout = QHBoxLayout(row)
        row_layout.setContentsMargins(0, 0, 0, 0)
        row_layout.addWidget(self.wireshark_path, 1)
        row_layout.addWidget(browse)
        rows.field("Program:", row, "“Open in Wireshark” starts this program with the output file. Leave it "
                   "empty to use the Wireshark found on the PATH or in its usual install folder.")
        layout.addWidget(handoff)
        layout.addStretch(1)
        return self._scroll(page)

    def _browse_wireshark(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose the Wireshark Program",
                                              str(Path(self.wireshark_path.text() or "/usr/bin").parent))
        if path:
            self.wireshark_path.setText(path)

    def _files_page(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)

        temp = QGroupBox("Temp folder")
        tl = QVBoxLayout(temp)
        row = QHBoxLayout()
        self.temp_root = QLineEdit()
        self.temp_root.setObjectName("temp_root")
        self.temp_root.setPlaceholderText(f"System temp folder ({tempfile.gettempdir()})")
        self.temp_root.setClearButtonEnabled(True)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_temp)
        default = QPushButton("Use System Folder")
        default.setToolTip("Use the system temp folder")
        default.clicked.connect(self.temp_root.clear)
        row.addWidget(self.temp_root, 1)
        row.addWidget(browse)
        row.addWidget(default)
        tl.addLayout(row)
        tl.addWidget(_note("Each file gets a private folder here while it runs; it is removed when the file "
                           "finishes, fails or is cancelled. Large inputs are hard-linked into it, which only "
                           "works when this folder is on the same volume (disk) as the inputs; otherwise the "
                           "original file is read directly and the log says so."))
        layout.addWidget(temp)

        large = QGroupBox("Large files")
        rows = _Rows(large)
        self.large_file_threshold_mb = QSpinBox()
        self.large_file_threshold_mb.setObjectName("large_file_threshold_mb")
        self.large_file_threshold_mb.setRange(0, 10**7)
        self.large_file_threshold_mb.setSuffix(" MB")
        self.large_file_threshold_mb.setGroupSeparatorShown(True)
        rows.field("Hard-link inputs from:", self.large_file_threshold_mb,
                   "Inputs of this size or more are hard-linked into the temp folder so that every pass reads a "
                   "stable private name without copying the file. 0 MB: every input.")
        layout.addWidget(large)

        memory = QGroupBox("Memory pressure")
        rows = _Rows(memory)
        self.memory_rss_mb = QSpinBox()
        self.memory_rss_mb.setObjectName("memory_rss_mb")
        self.memory_rss_mb.setRange(0, 10**7)
        self.memory_rss_mb.setSuffix(" MB")
        self.memory_rss_mb.setSpecialValueText("Off")
        self.memory_rss_mb.setGroupSeparatorShown(True)
        self.memory_available_pct = QSpinBox()
        self.memory_available_pct.setObjectName("memory_available_pct")
        self.memory_available_pct.setRange(0, 100)
        self.memory_available_pct.setSuffix(" %")
        self.memory_available_pct.setSpecialValueText("Off")
        rows.field("When a job uses more than:", self.memory_rss_mb)
        rows.field("Or system memory available is below:", self.memory_available_pct,
                   "Under memory pressure a job frees its caches and says so in the log; it never drops "
                   "packets. Set a limit to Off to ignore it; the job limit must be at least 64 MB.")
        layout.addWidget(memory)
        layout.addStretch(1)
        return self._scroll(page)

    def _stage_page(self, stage) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        if stage.description:
            layout.addWidget(_note(stage.description))
        box = QGroupBox("Options")
        rows = _Rows(box)
        for option in stage.OPTIONS:
            editor = OptionEditor(stage, option)
            self.editors[(stage.name, option.key)] = editor
            if option.kind == "bool":
                rows.check(editor.widget, option.help)
            else:
                rows.field(option.label + ":", editor.widget, option.help)
        if not stage.OPTIONS:
            rows.note("This operation has no options.")
        layout.addWidget(box)
        if stage.name == "anonymize":
            layout.addWidget(KeyBox(self))
        layout.addStretch(1)
        return self._scroll(page)

    # --- values ----------------------------------------------------------------------------------
    def load(self, s: settings_mod.Settings) -> None:
        self.parallel_jobs.setValue(int(s.parallel_jobs))
        self.output_suffix.setText(s.output_suffix)
        self.compress.setCurrentIndex(max(0, self.compress.findData(s.compress)))
        self.keep_metadata.setChecked(bool(s.keep_metadata))
        for key, box in self.scrub_boxes.items():
            box.setChecked(bool(s.scrub.get(key, True)))
        self.temp_root.setText(s.temp_root)
        self.wireshark_path.setText(s.wireshark_path)
        self.large_file_threshold_mb.setValue(int(s.large_file_threshold_mb))
        self.memory_rss_mb.setValue(int(s.memory_rss_mb))
        self.memory_available_pct.setValue(int(s.memory_available_pct))
        for (stage_name, key), editor in self.editors.items():
            values = s.stage_options.get(stage_name, {})
            editor.set_value(values.get(key, editor.option.default))
        self._update_scrub_enabled()
        self._update_suffix_example()

    def collect(self) -> tuple[settings_mod.Settings, list[str]]:
        s = copy.deepcopy(self.original)
        problems = []
        s.parallel_jobs = self.parallel_jobs.value()
        s.output_suffix = self.output_suffix.text()
        s.compress = self.compress.currentData()
        s.keep_metadata = self.keep_metadata.isChecked()
        s.scrub = {key: box.isChecked() for key, box in self.scrub_boxes.items()}
        s.temp_root = self.temp_root.text().strip()
        s.wireshark_path = self.wireshark_path.text().strip()
        s.large_file_threshold_mb = self.large_file_threshold_mb.value()
        s.memory_rss_mb = self.memory_rss_mb.value()
        s.memory_available_pct = self.memory_available_pct.value()
        options = {name: dict(values) for name, values in (s.stage_options or {}).items()}
        for (stage_name, key), editor in self.editors.items():
            value, problem = editor.value()
            if problem:
                problems.append(f"{editor.stage.title}: {problem}")
                continue
            options.setdefault(stage_name, {})[key] = value
        s.stage_options = options
        for problem in s.validate():
            if problem not in problems:
                problems.append(problem)
        return s, problems

    def restore_defaults(self) -> None:
        defaults = settings_mod.default_settings()
        self.load(defaults)
        self.errors.hide()

    def accept(self) -> None:
        new, problems = self.collect()
        if problems:
            items = "".join(f"<li>{_html(p)}</li>" for p in problems)
            self.errors.setText(f"<b>Please correct {'this' if len(problems) == 1 else 'these'} first:</b>"
                                f"<ul style='margin:2px 0 0 -20px'>{items}</ul>")
            self.errors.show()
            return
        try:
            settings_mod.save_settings(new)
        except OSError as exc:
            where = _html(str(settings_mod.settings_path()))
            self.errors.setText(f"<b>The settings could not be saved</b> to {where}: "
                                f"{_html(exc.strerror or str(exc))}.")
            self.errors.show()
            return
        self.result_settings = new
        super().accept()

    # --- helpers ---------------------------------------------------------------------------------
    def _update_scrub_enabled(self) -> None:
        for box in self.scrub_boxes.values():
            box.setEnabled(not self.keep_metadata.isChecked())

    def _update_suffix_example(self) -> None:
        suffix = self.output_suffix.text()
        choice = self.compress.currentData() or "same"
        examples = [(name, kind) for name, kind in (("capture.pcapng", None), ("capture.pcapng.gz", "gzip"))]
        shown = [f"{name} → {output_name(name, suffix, kind, output_kind(choice, kind))}"
                 for name, kind in examples]
        self.suffix_example.setText("Examples: " + "; ".join(shown))

    def _browse_temp(self) -> None:
        start = self.temp_root.text() or tempfile.gettempdir()
        path = QFileDialog.getExistingDirectory(self, "Choose the Temp Folder", start)
        if path:
            self.temp_root.setText(path)


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class KeyBox(QGroupBox):
    """The anonymization key: fingerprint, show, copy, import, export, regenerate (with confirmation).

    Key changes take effect at once (the key is its own file), not on OK.
    """

    def __init__(self, parent=None):
        super().__init__("Anonymization key", parent)
        self.setObjectName("keyBox")
        layout = QVBoxLayout(self)
        layout.addWidget(_note("Addresses are anonymized with this secret key: the same key maps the same "
                               "address to the same anonymized address in every file. Keep it private; share "
                               "it only with someone who should map addresses back consistently."))
        self.fingerprint = QLabel()
        self.fingerprint.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.key_text = QLineEdit()
        self.key_text.setReadOnly(True)
        self.key_text.setEchoMode(QLineEdit.Password)
        self.key_text.setObjectName("keyText")
        form = QFormLayout()
        form.addRow("Fingerprint:", self.fingerprint)
        form.addRow("Key:", self.key_text)
        layout.addLayout(form)
        row = QHBoxLayout()
        self.show_button = QPushButton("Show")
        self.show_button.setCheckable(True)
        self.show_button.toggled.connect(self._toggle_show)
        self.copy_button = QPushButton("Copy")
        self.copy_button.clicked.connect(self._copy)
        self.import_button = QPushButton("Import…")
        self.import_button.clicked.connect(self._import)
        self.export_button = QPushButton("Export…")
        self.export_button.clicked.connect(self._export)
        self.regen_button = QPushButton("Regenerate…")
        self.regen_button.clicked.connect(self._regenerate)
        for b in (self.show_button, self.copy_button, self.import_button, self.export_button, self.regen_button):
            row.addWidget(b)
        row.addStretch(1)
        layout.addLayout(row)
        self.status = _note("")
        layout.addWidget(self.status)
        self.refresh()

    def _keys(self):
        try:
            from .. import keys
            return keys
        except ImportError:
            return None

    def refresh(self) -> None:
        keys = self._keys()
        enabled = keys is not None
        for b in (self.show_button, self.copy_button, self.import_button, self.export_button, self.regen_button):
            b.setEnabled(enabled)
        if not enabled:
            self.fingerprint.setText("–")
            self.key_text.setText("")
            self.status.setText("Key management is not available in this build.")
            return
        try:
            key = keys.load_or_create_key()
        except Exception as exc:
            self.fingerprint.setText("–")
            self.status.setText(f"The key could not be read: {exc}")
            return
        self.key_text.setText(key.hex())
        self.key_text.setCursorPosition(0)     # else the field scrolls to the end and clips its first dot
        if hasattr(keys, "fingerprint"):
            self.fingerprint.setText(keys.fingerprint(key))   # the same words the CLI prints
        else:
            digest = hashlib.sha256(key).hexdigest()[:16]
            self.fingerprint.setText(" ".join(digest[i:i + 4] for i in range(0, 16, 4)))

    def _toggle_show(self, on: bool) -> None:
        self.key_text.setEchoMode(QLineEdit.Normal if on else QLineEdit.Password)
        self.show_button.setText("Hide" if on else "Show")

    def _copy(self) -> None:
        QGuiApplication.clipboard().setText(self.key_text.text())
        self.status.setText("The key was copied to the clipboard.")

    def _import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import Anonymization Key", str(Path.home()),
                                              "Key files (*.key *.txt);;All files (*)")
        if not path:
            return
        answer = QMessageBox.question(
            self, "Import Key", "Replace the current key with the imported one? Files anonymized from now on "
            "will use the imported key.", QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        if answer != QMessageBox.Yes:
            return
        try:
            self._keys().import_key(Path(path))
        except Exception as exc:
            QMessageBox.warning(self, "Import Key", f"The key was not imported: {exc}")
            return
        self.refresh()
        self.status.setText(f"Imported the key from {path}.")

    def _export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export Anonymization Key",
                                              str(Path.home() / "pktmask-gui.key"), "Key files (*.key)")
        if not path:
            return
        try:
            self._keys().export_key(Path(path))
        except Exception as exc:
            QMessageBox.warning(self, "Export Key", f"The key was not exported: {exc}")
            return
        self.status.setText(f"Exported the key to {path}. Keep that file private.")

    def _regenerate(self) -> None:
        answer = QMessageBox.warning(
            self, "Regenerate Key",
            "Make a new random key?\n\nFiles anonymized with the new key will map addresses differently "
            "from files made with the current key, and the current key cannot be recovered unless you "
            "exported it.", QMessageBox.Yes | QMessageBox.Cancel, QMessageBox.Cancel)
        if answer != QMessageBox.Yes:
            return
        try:
            self._keys().regenerate_key()
        except Exception as exc:
            QMessageBox.warning(self, "Regenerate Key", f"No new key was made: {exc}")
            return
        self.refresh()
        self.status.setText("A new key was made; it is used from the next file on.")
