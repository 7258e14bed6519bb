"""Before the window opens on Linux: missing X11 libraries are named, with the command that installs them."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import REPO

from pktmask_gui import qtdeps

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the xcb platform is Linux's")


@pytest.fixture
def plugin():
    path = qtdeps.xcb_plugin()
    if path is None:
        pytest.skip("this PySide6 has no xcb platform plugin")
    return path


def test_reads_the_plugins_real_elf_dependencies(plugin):
    needed = qtdeps.elf_needed(plugin)
    assert "libQt6XcbQpa.so.6" in needed
    xcb_qpa = next(d / "libQt6XcbQpa.so.6" for d in qtdeps._qt_dirs() if (d / "libQt6XcbQpa.so.6").exists())
    assert {"libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1"} <= set(qtdeps.elf_needed(xcb_qpa))


def test_names_the_libraries_the_system_cannot_load(plugin):
    gone = {"libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1"}
    missing = qtdeps.missing_libraries(plugin, load=lambda soname: soname if soname in gone else None)
    assert set(missing) == gone
    text = qtdeps.message(missing)
    assert "sudo apt install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1" in text
    assert "sudo dnf install xcb-util-cursor xcb-util-keysyms xcb-util-wm" in text
    assert "pktmask-gui process" in text and "Reinstalling" not in text


def test_a_library_missing_a_dependency_of_its_own_is_named_by_that_dependency(plugin):
    def load(soname):       # the loader's message names the library that is really missing
        return "libxcb-render-util.so.0" if soname == "libxcb-icccm.so.4" else None
    assert qtdeps.missing_libraries(plugin, load=load) == ["libxcb-render-util.so.0"]


def test_checks_only_where_qt_would_use_x11():
    assert qtdeps.uses_xcb({"DISPLAY": ":0"})
    assert qtdeps.uses_xcb({"QT_QPA_PLATFORM": "xcb", "WAYLAND_DISPLAY": "wayland-0"})
    assert not qtdeps.uses_xcb({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"})
    assert not qtdeps.uses_xcb({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"})
    assert not qtdeps.uses_xcb({})


def test_the_window_says_what_is_missing_instead_of_qts_abort(plugin):
    missing = qtdeps.missing_libraries(plugin)
    if not missing:
        pytest.skip("every X11 library Qt needs is installed here (the message is tested with a stand-in loader)")
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env["DISPLAY"] = ":99"
    run = subprocess.run([sys.executable, "-m", "pktmask_gui"], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=60)
    assert run.returncode == 1
    assert all(name in run.stderr for name in missing) and "sudo apt install" in run.stderr
    assert "Reinstalling the application" not in run.stderr
