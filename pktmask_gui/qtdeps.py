"""Before the window opens on Linux: are the system libraries Qt's X11 (xcb) platform plugin needs there?

Qt 6.5+ needs X11 libraries that many desktops do not install (libxcb-cursor0, libxcb-icccm4,
libxcb-keysyms1, …); without them Qt aborts with "Could not load the Qt platform plugin "xcb" … Reinstalling
the application may fix this problem", which names none of them. This module reads the plugin's ELF
dependencies (DT_NEEDED, following those that ship with Qt) and tries to load each one from the system with
ctypes, so that the CLI can say which are missing and how to install them, before creating QApplication.
Qt-free; the ELF reading is by hand (a few struct reads; no library does only this).
"""
from __future__ import annotations

import ctypes
import os
import struct
import sys
from pathlib import Path

# soname -> (Debian/Ubuntu package, Fedora package)
PACKAGES = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-xinerama.so.0": ("libxcb-xinerama0", "libxcb"),
    "libxcb-xinput.so.0": ("libxcb-xinput0", "libxcb"),
    "libxcb-glx.so.0": ("libxcb-glx0", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libSM.so.6": ("libsm6", "libSM"),
    "libICE.so.6": ("libice6", "libICE"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
}


def elf_needed(path) -> list[str]:
    """The DT_NEEDED entries (sonames) of an ELF shared object, in order; [] if it is not one."""
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:4] != b"\x7fELF" or len(data) < 64:
        return []
    bits64 = data[4] == 2
    e = "<" if data[5] == 1 else ">"
    if bits64:
        shoff, = struct.unpack_from(e + "Q", data, 0x28)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x3A)
        sect = struct.Struct(e + "IIQQQQIIQQ")          # name type flags addr offset size link info align entsize
        dyn = struct.Struct(e + "qQ")
    else:
        shoff, = struct.unpack_from(e + "I", data, 0x20)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x2E)
        sect = struct.Struct(e + "IIIIIIIIII")
        dyn = struct.Struct(e + "iI")
    sections = [sect.unpack_from(data, shoff + i * shentsize) for i in range(shnum)
                if shoff + (i + 1) * shentsize <= len(data)]
    needed = []
    for s in sections:
        if s[1] != 6 or s[6] >= len(sections):       # SHT_DYNAMIC, linked to its string table
            continue
        strtab = sections[s[6]][4]
        for off in range(s[4], s[4] + s[5], dyn.size):
            tag, value = dyn.unpack_from(data, off)
            if tag == 0:
                break
            if tag == 1:                            # DT_NEEDED
                start = strtab + value
                needed.append(data[start:data.index(b"\0", start)].decode("ascii", "replace"))
    return needed


def _load(soname: str) -> str | None:
    """None if the system can load ``soname``; else the soname the loader could not find."""
    try:
        ctypes.CDLL(soname)
    except OSError as exc:
        text = str(exc)
        missing = text.split(":", 1)[0].strip()
        return missing if missing.startswith("lib") and ".so" in missing else soname
    return None


def _pyside_root() -> Path | None:
    try:
        import PySide6              # the package only: no Qt library is loaded yet
    except ImportError:
        return None
    return Path(PySide6.__file__).resolve().parent


def _qt_dirs() -> list[Path]:
    """Where the libraries that ship with Qt lie (a wheel's layout, and a PyInstaller bundle's top)."""
    root = _pyside_root()
    if root is None:
        return []
    dirs = [root / "Qt" / "lib", root / "Qt" / "plugins" / "platforms", root]
    if getattr(sys, "_MEIPASS", None):
        dirs.append(Path(sys._MEIPASS))
    return dirs


def xcb_plugin() -> Path | None:
    root = _pyside_root()
    plugin = root / "Qt" / "plugins" / "platforms" / "libqxcb.so" if root is not None else None
    return plugin if plugin is not None and plugin.is_file() else None


def missing_libraries(plugin: Path | None = None, load=_load, bundled: list[Path] | None = None) -> list[str]:
    """Sonames the xcb plugin needs that the system cannot load, following the libraries Qt ships itself."""
    plugin = plugin or xcb_plugin()
    if plugin is None:
        return []
    bundled = _qt_dirs() if bundled is None else bundled
    missing: list[str] = []
    seen: set[str] = set()
    todo = [plugin]
    while todo:
        try:
            needed = elf_needed(todo.pop())
        except OSError:
            continue
        for soname in needed:
            if soname in seen:
                continue
            seen.add(soname)
            local = next((d / soname for d in bundled if (d / soname).is_file()), None)
            if local is not None:
                todo.append(local)
                continue
            lost = load(soname)
            if lost is not None and lost not in missing:
                missing.append(lost)
    return missing


def uses_xcb(environ=os.environ) -> bool:
    """Whether Qt would pick its X11 platform here."""
    if not sys.platform.startswith("linux"):
        return False
    chosen = environ.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if chosen:
        return chosen == "xcb"
    if environ.get("WAYLAND_DISPLAY"):
        return False                # Qt 6 takes Wayland in a Wayland session
    return bool(environ.get("DISPLAY"))


def message(missing: list[str]) -> str:
    debian = sorted({PACKAGES.get(s, (None, None))[0] or s for s in missing})
    fedora = sorted({PACKAGES.get(s, (None, None))[1] or s for s in missing})
    return ("pktmask-gui: the window cannot open: Qt's X11 platform needs system libraries that are missing: "
            f"{', '.join(missing)}.\n"
            "Install them, then start pktmask-gui again:\n"
            f"  Debian/Ubuntu:  sudo apt install {' '.join(debian)}\n"
            f"  Fedora:         sudo dnf install {' '.join(fedora)}\n"
            "The command line works without them: pktmask-gui process PATH -o DIR --dedup --anonymize --mask "
            "(see 'pktmask-gui process --help').\n")


def xcb_problem(environ=os.environ) -> str | None:
    """The message to print instead of starting Qt, or None when the window can try to open."""
    if not uses_xcb(environ):
        return None
    try:
        missing = missing_libraries()
    except Exception:                       # never let the check itself stop the app
        return None
    return message(missing) if missing else None
