"""Shield CPython < 3.12 from a reference-count bug of PySide6 (seen in 6.12.0).

Every call of a void Qt method (``setEnabled``, ``setToolTip``, …) drops one reference to ``None`` that it
never took, and every ``Signal.emit`` one to ``True``. CPython 3.12+ makes these singletons immortal, which
hides the bug there; on 3.10/3.11 a busy window aborts within seconds ("Fatal Python error: none_dealloc"
/ "bool_dealloc": ``True`` starts with a few hundred references). When a probe shows the leak, we give the
singletons the practically endless reference count that 3.12 gives them (2**40: decades of leaks).
"""
from __future__ import annotations

import ctypes
import sys

_SINGLETONS = (None, True, False, Ellipsis, NotImplemented)
_BOOST = 1 << 40
_applied = False


def _leaks() -> bool:
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        ping = Signal()

    probe = _Probe()
    probe.ping.connect(lambda: None)
    none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(16):
        probe.setObjectName("probe")
        probe.ping.emit()
    leaked = sys.getrefcount(None) < none_before - 8 or sys.getrefcount(True) < true_before - 8
    probe.deleteLater()
    return leaked


def apply() -> bool:
    """Boost the singletons' reference counts when this interpreter needs it; True when boosted."""
    global _applied
    if _applied:
        return True
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12) or hasattr(sys, "gettotalrefcount"):
        return False   # immortal singletons (3.12+), or a debug build whose object header differs
    if not _leaks():
        return False
    for obj in _SINGLETONS:
        ctypes.c_ssize_t.from_address(id(obj)).value += _BOOST
    _applied = True
    return True
