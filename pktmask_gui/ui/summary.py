"""The batch summary: per file packets in/out, duplicates removed, what each stage did, failures with
their reason; exported as a standalone HTML page or as JSON (the CLI's ``--json`` object)."""
from __future__ import annotations

import html
import json
import os
import platform
import time
from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, QUrl
from PySide6.QtGui import QBrush, QColor, QDesktopServices
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QFileDialog, QHBoxLayout, QHeaderView, QLabel,
                               QMessageBox, QPushButton, QSplitter, QTextBrowser,
                               QVBoxLayout)

from .. import __version__
from ..compression import words as compression_words
from .handoff import open_in_wireshark, show_in_folder
from .tables import CalmTableView, TextDelegate
from .format import count, duplicates_removed, human_duration, plural, short_lines, stage_lines

FIT_ROWS = 24           # the columns take the width of the first rows' words (not of thousands of rows)


def reason(result) -> str:
    if result.status == "cancelled":
        return "Cancelled; nothing was written"
    text = " ".join((result.error or "failed").split())
    return text[:1].upper() + text[1:]


def status_word(result) -> str:
    return {"ok": "Done", "failed": "Failed", "cancelled": "Cancelled"}.get(result.status, result.status)


def _packing(result) -> list[str]:
    """["Compression: zstd in and out"] …; [] when neither the input nor the output was compressed."""
    text = compression_words(getattr(result, "input_compression", None),
                             getattr(result, "output_compression", None), short=True)
    return [f"Compression: {text}"] if text else []


def headline(results, elapsed_s: float | None = None) -> str:
    ok = sum(1 for r in results if r.status == "ok")
    failed = sum(1 for r in results if r.status == "failed")
    cancelled = sum(1 for r in results if r.status == "cancelled")
    parts = [f"{plural(ok, 'file')} sanitized"]
    if failed:
        parts.append(f"{failed} failed")
    if cancelled:
        parts.append(f"{cancelled} cancelled")
    text = ", ".join(parts)
    if elapsed_s is not None:
        text += f" · took {human_duration(elapsed_s)}"   # not "1 failed in 0:04"
    return text


def to_json(results, elapsed_s: float | None = None) -> str:
    """The CLI's ``--json`` object, plus when and by which version it was made."""
    payload = {"ok": bool(results) and all(r.status == "ok" for r in results),
               "files": [r.to_dict() for r in results],
               "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "generator": f"pktmask-gui {__version__}"}
    if elapsed_s is not None:
        payload["elapsed_s"] = round(elapsed_s, 3)
    return json.dumps(payload, indent=2)


def to_html(results, elapsed_s: float | None = None) -> str:
    esc = html.escape
    rows = []
    for r in results:
        dupes = duplicates_removed(r)
        details = esc(reason(r)) if r.status != "ok" else "<br>".join(esc(line) for line in stage_lines(r)
                                                                        + _packing(r))
        warnings = "".join(f"<div class='warn'>⚠ {esc(w)}</div>" for w in (r.warnings or []))
        output = esc(r.output or "—")
        rows.append(
            f"<tr class='{esc(r.status)}'><td title='{esc(r.input)}'>{esc(Path(r.input).name)}</td>"
            f"<td class='status'>{esc(status_word(r))}</td>"
            f"<td class='num'>{count(r.packets_in) if r.status == 'ok' else ''}</td>"
            f"<td class='num'>{count(r.packets_out) if r.status == 'ok' else ''}</td>"
            f"<td class='num'>{'' if dupes is None else count(dupes)}</td>"
            f"<td>{details}{warnings}</td><td class='path'>{output}</td></tr>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>PktMask GUI — batch summary</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #1d2329; }}
h1 {{ font-size: 1.4em; margin-bottom: .2em; }}
.meta {{ color: #5b6570; margin-bottom: 1.2em; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: .45em .7em; border-bottom: 1px solid #dde3e8; vertical-align: top; }}
th {{ background: #f3f6f9; font-weight: 600; }}
td.num, th.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.path {{ font-family: ui-monospace, monospace; font-size: .9em; word-break: break-all; }}
tr.ok td.status {{ color: #1b7f3b; font-weight: 600; }}
tr.failed td.status, tr.failed td {{ color: #b71c1c; }}
tr.cancelled td.status {{ color: #8a5300; font-weight: 600; }}
.warn {{ color: #8a5300; }}
</style></head><body>
<h1>PktMask GUI — batch summary</h1>
<div class="meta">{esc(headline(results, elapsed_s))} · {esc(time.strftime("%Y-%m-%d %H:%M"))} ·
pktmask-gui {esc(__version__)} on {esc(platform.system())}</div>
<table><thead><tr><th>File</th><th>Status</th><th class="num">Packets in</th><th class="num">Packets out</th>
<th class="num">Duplicates removed</th><th>What was done</th><th>Output</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""

DISPLAY, TOOLTIP, ALIGNMENT, FOREGROUND = (int(Qt.DisplayRole), int(Qt.ToolTipRole), int(Qt.TextAlignmentRole),
                                           int(Qt.ForegroundRole))
RIGHT = int(Qt.AlignRight | Qt.AlignVCenter)
STATUS_COLOURS = {"ok": "#1b7f3b", "failed": "#b71c1c", "cancelled": "#8a5300"}


class SummaryModel(QAbstractTableModel):
    """The results as a table. A row's words are worked out when it is first shown: a batch of thousands of
    files opens as fast as one of ten (only the rows in view are asked for)."""

    HEADERS = ("File", "Status", "Packets in", "Packets out", "Duplicates removed", "What was done", "Output")
    COL_STATUS, COL_DETAILS, COL_OUTPUT = 1, 5, 6
    NUMERIC = (2, 3, 4)

    def __init__(self, results, parent=None):
        super().__init__(parent)
        self.results = results
        self._cells: dict[int, tuple] = {}
        self._brushes = {status: QBrush(QColor(colour)) for status, colour in STATUS_COLOURS.items()}
        self._colours = {status: QColor(colour) for status, colour in STATUS_COLOURS.items()}

    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.results)

    def columnCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section, orientation, role=DISPLAY):
        if role == DISPLAY and orientation == Qt.Horizontal:
            return self.HEADERS[section]
        return None

    def cells(self, row: int) -> tuple:
        words = self._cells.get(row)
        if words is None:
            r = self.results[row]
            dupes = duplicates_removed(r)
            ok = r.status == "ok"
            # Duplicates have their own column.
            details = (short_lines(r, skip=("dedup",)) or "Duplicates removed") if ok else reason(r)
            packing = compression_words(r.input_compression, r.output_compression, short=True)
            if ok and packing:          # first: the column elides its end
                details = f"{packing} · {details}"
            if r.warnings:
                details += f" · ⚠ {plural(len(r.warnings), 'warning')}"
            words = (Path(r.input).name, status_word(r), count(r.packets_in) if ok else "",
                     count(r.packets_out) if ok else "", "" if dupes is None else count(dupes), details,
                     Path(r.output).name if r.output else "")
            self._cells[row] = words
        return words

    def look(self, index) -> tuple:
        """A cell as ``tables.TextDelegate`` paints it: what ``data`` gives for its roles, in one call."""
        row, col = index.row(), index.column()
        status = self.results[row].status
        coloured = col == self.COL_STATUS or (col == self.COL_DETAILS and status == "failed")
        return (self.cells(row)[col], self._colours.get(status) if coloured else None, False, col in self.NUMERIC,
                None)

    def data(self, index, role=DISPLAY):
        if not index.isValid():
            return None
        col = index.column()
        if role == DISPLAY:
            return self.cells(index.row())[col]
        if role == ALIGNMENT:
            return RIGHT if col in self.NUMERIC else None
        if role == FOREGROUND:
            r = self.results[index.row()]
            if col == self.COL_STATUS or (col == self.COL_DETAILS and r.status == "failed"):
                return self._brushes.get(r.status)
            return None
        if role == TOOLTIP:
            r = self.results[index.row()]
            if col == 0:
                return r.input
            if col == self.COL_OUTPUT:
                return r.output or ""
            if col == self.COL_DETAILS:
                return SummaryDialog.details_text(r)
        return None


class SummaryDialog(QDialog):
    HEADERS = SummaryModel.HEADERS
    COL_DETAILS, COL_OUTPUT = SummaryModel.COL_DETAILS, SummaryModel.COL_OUTPUT

    def __init__(self, results, elapsed_s: float | None = None, parent=None, last_dir: str = "", handoff=None):
        """``handoff``: the window (``settings``, ``open_settings()``, ``inspect_result(result)``); with it the
        selected file gets Inspect…, Open in Wireshark and Show in Folder."""
        super().__init__(parent)
        self.setObjectName("summaryDialog")
        self.setWindowTitle("Batch Summary — PktMask GUI")
        self.results = list(results)
        self.elapsed_s = elapsed_s
        self.last_dir = last_dir or str(Path.home())

        self.title = QLabel(headline(self.results, elapsed_s))
        self.title.setObjectName("summaryTitle")
        failed = [r for r in self.results if r.status == "failed"]
        folders = {os.path.dirname(r.output) for r in self.results if r.output}
        where = f"Outputs are in {folders.pop()}. " if len(folders) == 1 else ""
        self.subtitle = QLabel(where + "Inputs were not modified. " + (
            "Failed files have no output; the reason is in their row." if failed else
            "Select a row for everything that was done to it."))
        self.subtitle.setObjectName("note")
        self.subtitle.setWordWrap(True)

        self.model = SummaryModel(self.results, self)
        self.table = CalmTableView()
        self.table.setObjectName("summaryTable")
        self.table.verticalHeader().hide()      # before the model: a shown one would measure 200 rows' headers
        self.table.setModel(self.model)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.ElideRight)     # only "What was done" ever elides: keep its start
        for i, r in enumerate(self.results):
            if not r.output:                            # a failure's reason gets the empty Output cell too
                self.table.setSpan(i, self.COL_DETAILS, 1, 2)
        hh = self.table.horizontalHeader()
        hh.setDefaultAlignment(Qt.AlignLeft | Qt.AlignVCenter)
        hh.setHighlightSections(False)
        for col in (0, 1, 2, 3, 4, 6):
            hh.setSectionResizeMode(col, QHeaderView.Interactive)
        hh.setSectionResizeMode(5, QHeaderView.Stretch)
        self.table.setItemDelegate(TextDelegate(self.table, self.model.look, Qt.ElideRight))
        middle = TextDelegate(self.table, self.model.look, Qt.ElideMiddle)    # a name keeps its extension
        for col in (0, self.COL_OUTPUT):
            self.table.setItemDelegateForColumn(col, middle)
        self.table.setFocusPolicy(Qt.NoFocus)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 10)

        # The selected file in full: every stage's counts, warnings, the output path or the reason.
        self.details = QTextBrowser()
        self.details.setObjectName("summaryDetails")
        self.details.setOpenLinks(False)
        self.details.setMinimumHeight(self.fontMetrics().height() * 6)
        self.table.selectionModel().selectionChanged.connect(self._show_details)
        if self.results:
            self.table.selectRow(0)

        self.html_button = QPushButton("Export HTML…")
        self.html_button.clicked.connect(lambda: self._export("html"))
        self.json_button = QPushButton("Export JSON…")
        self.json_button.clicked.connect(lambda: self._export("json"))
        self.open_button = QPushButton("Open Output Folder")
        outputs = [r.output for r in self.results if r.output]
        self.open_button.setEnabled(bool(outputs))
        self.open_button.clicked.connect(lambda: QDesktopServices.openUrl(
            QUrl.fromLocalFile(str(Path(outputs[0]).parent))))
        self.handoff = handoff
        self.inspect_button = QPushButton("Inspect…")
        self.inspect_button.setToolTip("Compare the selected file's output with its input, frame by frame")
        self.inspect_button.clicked.connect(lambda: self._with_output(lambda r: handoff.inspect_result(r)))
        self.wireshark_button = QPushButton("Open in Wireshark")
        self.wireshark_button.clicked.connect(lambda: self._with_output(
            lambda r: open_in_wireshark(self, Path(r.output), handoff.settings, handoff.open_settings)))
        self.show_button = QPushButton("Show in Folder")
        self.show_button.clicked.connect(lambda: self._with_output(lambda r: show_in_folder(Path(r.output))))
        self.output_buttons = (self.inspect_button, self.wireshark_button, self.show_button)
        close = QPushButton("Close")
        close.setDefault(True)
        close.clicked.connect(self.accept)
        buttons = QHBoxLayout()
        buttons.addWidget(self.html_button)
        buttons.addWidget(self.json_button)
        buttons.addStretch(1)
        if handoff is not None:
            for button in self.output_buttons:
                buttons.addWidget(button)
        else:
            buttons.addWidget(self.open_button)
        buttons.addWidget(close)

        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.subtitle)
        splitter = QSplitter(Qt.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(self.details)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout.addWidget(splitter, 1)
        layout.addLayout(buttons)
        if handoff is not None:
            self.table.doubleClicked.connect(lambda _index: self._with_output(lambda r: handoff.inspect_result(r)))
        self._show_details()
        screen = self.screen().availableGeometry() if self.screen() is not None else None
        width = min(1240, int(screen.width() * 0.95)) if screen else 1240
        self.resize(width, 540)
        self._fit_columns(width - 40)
        # Styled and laid out now, while it is made (the window's summary: one turn of the event loop), so that
        # showing it (the next turn) has only to paint.
        self.ensurePolished()
        layout.activate()

    def _fit_columns(self, width: int) -> None:
        """Each column (but "What was done", which stretches) as wide as its header and the first rows' words,
        as resizeColumnsToContents would make it without measuring every row of a long batch; the file and
        output names at most a third and a quarter of ``width``, so that "What was done" keeps room."""
        fm, header = self.table.fontMetrics(), self.table.horizontalHeader().fontMetrics()
        rows = [self.model.cells(i) for i in range(min(FIT_ROWS, len(self.results)))]
        caps = {0: width // 3, self.COL_OUTPUT: width // 4}
        for col in (0, 1, 2, 3, 4, self.COL_OUTPUT):
            need = max([header.horizontalAdvance(self.HEADERS[col])] + [fm.horizontalAdvance(c[col]) for c in rows])
            self.table.setColumnWidth(col, min(need + 24, caps.get(col, need + 24)))

    @staticmethod
    def details_text(r) -> str:
        lines = [f"{Path(r.input).name}: {status_word(r)}"]
        if r.status == "ok":
            lines.append(f"{r.packets_in:,} packets in, {r.packets_out:,} packets out, {r.elapsed_s:.1f} s")
            lines += stage_lines(r) + _packing(r)
            lines.append(f"Saved as {r.output}")
        else:
            lines.append(reason(r))
        lines += [f"⚠ {w}" for w in (r.warnings or [])]
        lines.append(f"Input: {r.input} (not modified)")
        return "\n".join(lines)

    def _show_details(self) -> None:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedIndexes()})
        self.details.setPlainText("\n\n".join(self.details_text(self.results[i]) for i in rows))
        has_output = self._selected_output() is not None
        for button in getattr(self, "output_buttons", ()):
            button.setEnabled(has_output)

    def _selected_output(self):
        rows = sorted({i.row() for i in self.table.selectionModel().selectedIndexes()})
        result = self.results[rows[0]] if rows else None
        return result if result is not None and result.status == "ok" and result.output else None

    def _with_output(self, action) -> None:
        result = self._selected_output()
        if result is not None:
            action(result)

    def export_to(self, path: Path, kind: str) -> None:
        text = to_html(self.results, self.elapsed_s) if kind == "html" else to_json(self.results, self.elapsed_s)
        Path(path).write_text(text, encoding="utf-8")

    def _export(self, kind: str) -> None:
        name = f"pktmask-summary-{time.strftime('%Y%m%d-%H%M%S')}.{kind}"
        filt = "HTML page (*.html)" if kind == "html" else "JSON (*.json)"
        path, _ = QFileDialog.getSaveFileName(self, f"Export Summary as {kind.upper()}",
                                              str(Path(self.last_dir) / name), filt)
        if not path:
            return
        try:
            self.export_to(Path(path), kind)
            self.last_dir = str(Path(path).parent)
        except OSError as exc:
            QMessageBox.warning(self, "Export Summary", f"The summary could not be saved to {path}: "
                                                        f"{exc.strerror or exc}.")
