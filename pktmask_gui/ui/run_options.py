"""The bar above the queue: which operations run (one checkbox per stage the engine offers) and where
outputs go (beside each input, or a chosen folder); and the dismissable notice bar under it."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QFileDialog, QFrame, QGroupBox, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QRadioButton, QStyle, QToolButton, QWidget)

from ..stages import operations


class RunOptions(QWidget):
    changed = Signal()                 # an operation or the output choice changed
    folder_chosen = Signal(str)        # Browse… picked a folder

    def __init__(self, output_suffix: str, parent=None):
        super().__init__(parent)
        self.last_browse_dir = ""

        ops_box = QGroupBox("Operations")
        ops_layout = QHBoxLayout(ops_box)
        ops_layout.setSpacing(16)
        self.op_boxes: dict[str, QCheckBox] = {}
        for stage in operations():       # new stages appear here without UI changes
            box = QCheckBox(stage.title)
            box.setObjectName(f"op_{stage.name}")
            box.setToolTip(stage.description)
            box.setChecked(True)
            box.toggled.connect(self.changed)
            self.op_boxes[stage.name] = box
            ops_layout.addWidget(box)
        if not self.op_boxes:
            ops_layout.addWidget(QLabel("No operation is available in this build."))
        ops_layout.addStretch(1)

        out_box = QGroupBox("Output")
        out_layout = QHBoxLayout(out_box)
        self.out_beside = QRadioButton("Beside each input")
        self.set_suffix(output_suffix)
        self.out_folder = QRadioButton("In folder:")
        self.out_folder.setToolTip("Save every output in this folder (folder inputs keep their layout under it)")
        self.group = QButtonGroup(self)
        self.group.addButton(self.out_beside)
        self.group.addButton(self.out_folder)
        self.out_beside.setChecked(True)
        self.out_path = QLineEdit()
        self.out_path.setObjectName("outputFolder")
        self.out_path.setPlaceholderText("Choose a folder…")
        self.out_path.setMinimumWidth(200)
        self.out_path.textEdited.connect(lambda _text: self.out_folder.setChecked(True))
        self.out_path.textChanged.connect(lambda _text: self.changed.emit())
        self.out_browse = QPushButton("Browse…")
        self.out_browse.clicked.connect(self.browse)
        self.group.buttonToggled.connect(lambda *_args: self.changed.emit())
        out_layout.addWidget(self.out_beside)
        out_layout.addSpacing(8)
        out_layout.addWidget(self.out_folder)
        out_layout.addWidget(self.out_path, 1)
        out_layout.addWidget(self.out_browse)

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        layout.addWidget(ops_box, 0)
        layout.addWidget(out_box, 1)

    def set_suffix(self, suffix: str) -> None:
        self.out_beside.setToolTip(f"Each output is saved in its input's folder, named <name>{suffix}<ext>")

    def selected_operations(self) -> list[str]:
        return [name for name, box in self.op_boxes.items() if box.isChecked()]

    def set_operations(self, names) -> None:
        for name, box in self.op_boxes.items():
            box.setChecked(name in names)

    def output_dir(self) -> Path | None:
        """The chosen folder, or None for "beside each input" (or no folder typed yet)."""
        if self.out_folder.isChecked():
            text = self.out_path.text().strip()
            return Path(text).expanduser() if text else None
        return None

    def set_busy(self, busy: bool) -> None:
        """A run keeps the operations and output it started with: lock them meanwhile."""
        for widget in (*self.op_boxes.values(), self.out_beside, self.out_folder, self.out_path, self.out_browse):
            widget.setEnabled(not busy)

    def browse(self) -> None:
        start = self.out_path.text() or self.last_browse_dir or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Choose the Output Folder", start)
        if folder:
            self.out_path.setText(folder)
            self.out_folder.setChecked(True)
            self.last_browse_dir = folder
            self.folder_chosen.emit(folder)


class NoticeBar(QFrame):
    """A dismissable warning strip (refused drops and the like): visible, but no modal dialog."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("noticeBar")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        icon = QLabel()
        icon.setPixmap(self.style().standardIcon(QStyle.SP_MessageBoxWarning).pixmap(18, 18))
        self.text = QLabel()
        self.text.setObjectName("noticeText")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextSelectableByMouse)
        close = QToolButton()
        close.setText("✕")
        close.setAutoRaise(True)
        close.setToolTip("Dismiss")
        close.clicked.connect(self.hide)
        layout.addWidget(icon, 0, Qt.AlignTop)
        layout.addWidget(self.text, 1)
        layout.addWidget(close, 0, Qt.AlignTop)
        self.hide()

    def show_html(self, html: str) -> None:
        self.text.setText(html)
        self.show()
