"""The PySide6 reference-count guard: a busy window must not abort the interpreter (see _refcount_guard)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
import pktmask_gui.ui                      # applies the guard
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication, QPushButton
app = QApplication([])
class E(QObject):
    s = Signal(int)
e = E(); e.s.connect(lambda v: None)
b = QPushButton()
for i in range(20000):                     # far more than the few hundred references True starts with
    b.setEnabled(i % 2 == 0)
    b.setToolTip("x")
    e.s.emit(i)
print("survived")
"""


def test_many_void_calls_and_emits_do_not_abort_the_process():
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "survived" in proc.stdout
    assert "Fatal Python error" not in proc.stderr
