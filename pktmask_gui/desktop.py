"""Linux desktop integration for the current user: ``pktmask-gui --install-desktop`` / ``--uninstall-desktop``.

Qt-free. Copies what ``resources/linux/`` holds into the user's data folder (``$XDG_DATA_HOME``, by default
``~/.local/share``), following the freedesktop.org specifications:

- ``applications/<APP_ID>.desktop`` (Exec and TryExec point at the program that ran the install: the bundle's
  executable, the installed ``pktmask-gui`` command, or ``python -m pktmask_gui``), so that the app is in the
  menu and "Open With" offers it for captures;
- ``icons/hicolor/<size>/apps/pktmask-gui.png`` (and ``scalable/…svg``);
- ``metainfo/<APP_ID>.metainfo.xml`` (AppStream: software centres describe the app from it);
- ``mime/packages/<APP_ID>.xml``: the pcap and pcapng types, for systems whose MIME database lacks them.

Then it refreshes the caches the desktop reads (``update-mime-database``, ``update-desktop-database``) where
those tools are installed. A manifest (``pktmask-gui/desktop-install.json`` in the data folder) records every
file and folder the install created, and which cache files did not exist before, so that the uninstall
removes exactly those and regenerates the caches that were there already.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

APP_ID = "io.github.pktmask.PktMaskGUI"
ICON_NAME = "pktmask-gui"
MANIFEST = Path("pktmask-gui") / "desktop-install.json"


class DesktopError(Exception):
    """The install or uninstall cannot go on; the message is one sentence for the user."""


def data_home() -> Path:
    value = os.environ.get("XDG_DATA_HOME", "")
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / ".local" / "share"


def linux_resources() -> Path:
    """``resources/linux`` of a source checkout, or its copy beside the package (wheel, bundle)."""
    here = Path(__file__).resolve().parent
    for root in (here.parent / "resources", here / "resources"):
        if (root / "linux" / f"{APP_ID}.desktop").is_file():
            return root / "linux"
    raise DesktopError("the desktop files (resources/linux) are missing from this installation")


def launch_command() -> list[str]:
    """How the desktop should start this very program."""
    if getattr(sys, "frozen", False):
        return [str(Path(sys.executable).resolve())]
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "pktmask-gui" and script.exists():
        return [str(script.resolve())]
    found = shutil.which("pktmask-gui")
    if found:
        return [str(Path(found).resolve())]
    return [str(Path(sys.executable).resolve()), "-m", "pktmask_gui"]


def _exec_arg(arg: str) -> str:
    """One Exec argument, quoted as the Desktop Entry specification asks (then escaped as a string value)."""
    if arg and not any(c in arg for c in ' \t\n"\'\\><~|&;$*?#()`='):
        return arg
    quoted = '"' + "".join("\\" + c if c in '"`$\\' else c for c in arg) + '"'
    return quoted.replace("\\", "\\\\")


def desktop_entry(template: str, command: list[str]) -> str:
    """The shipped .desktop file with Exec/TryExec naming ``command``."""
    lines = []
    for line in template.splitlines():
        if line.startswith("Exec="):
            line = "Exec=" + " ".join(_exec_arg(a) for a in command) + " %F"
        elif line.startswith("TryExec="):
            line = "TryExec=" + command[0].replace("\\", "\\\\")
        lines.append(line)
    return "\n".join(lines) + "\n"


def _planned(source: Path) -> list[tuple[Path, Path | None]]:
    """(source file, path relative to the data folder); the .desktop file is written, not copied."""
    files = [(source / f"{APP_ID}.desktop", Path("applications") / f"{APP_ID}.desktop"),
             (source / f"{APP_ID}.metainfo.xml", Path("metainfo") / f"{APP_ID}.metainfo.xml"),
             (source / f"{APP_ID}.mime.xml", Path("mime") / "packages" / f"{APP_ID}.xml")]
    icons = source / "icons"
    for icon in sorted(icons.rglob(f"{ICON_NAME}.*")):
        files.append((icon, Path("icons") / icon.relative_to(icons)))
    return files


def _run_tool(args: list[str]) -> bool:
    if shutil.which(args[0]) is None:
        return False
    try:
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _refresh(home: Path) -> None:
    mime = home / "mime"
    if (mime / "packages").is_dir():
        _run_tool(["update-mime-database", str(mime)])
    apps = home / "applications"
    if apps.is_dir():
        _run_tool(["update-desktop-database", str(apps)])
    hicolor = home / "icons" / "hicolor"
    if hicolor.is_dir():
        os.utime(hicolor)           # icon caches look at the theme folder's time
        if (hicolor / "index.theme").exists():
            _run_tool(["gtk-update-icon-cache", "-q", "-t", str(hicolor)])


def _generated_state(home: Path) -> set:
    """Files and folders the refresh tools write: the MIME database (all of ``mime/`` but its packages) and
    the menu's and the icon theme's caches (paths relative to the data folder; folders end in "/")."""
    found = set()
    mime = home / "mime"
    if mime.is_dir():
        for path in mime.rglob("*"):
            rel = path.relative_to(home)
            if rel.parts[1] != "packages":
                found.add(str(rel) + ("/" if path.is_dir() else ""))
    for rel in (Path("applications") / "mimeinfo.cache", Path("icons") / "hicolor" / "icon-theme.cache"):
        if (home / rel).exists():
            found.add(str(rel))
    return found


def installed(home: Path | None = None) -> dict | None:
    path = (home or data_home()) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def install(home: Path | None = None, command: list[str] | None = None) -> list[Path]:
    """Install the desktop files for this user; returns the files written (absolute paths)."""
    if not sys.platform.startswith("linux") and "bsd" not in sys.platform:
        raise DesktopError("--install-desktop is for Linux desktops (freedesktop.org); on Windows and macOS "
                           "the bundle's installer or the .app does this")
    home = home or data_home()
    source = linux_resources()
    if installed(home) is not None:
        uninstall(home)             # a reinstall replaces the earlier one exactly
    command = command or launch_command()
    plan = _planned(source) + [(None, MANIFEST)]
    created_dirs: list[str] = []
    for _src, rel in plan:
        missing = []
        parent = (home / rel).parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for folder in reversed(missing):
            folder.mkdir()
            created_dirs.append(str(folder))       # absolute: the data folder itself may be among them
    caches_before = _generated_state(home)
    written: list[Path] = []
    try:
        for src, rel in plan[:-1]:
            target = home / rel
            if target.exists() and not target.is_file():
                raise DesktopError(f"{target} is in the way (it is not a file)")
            if rel.suffix == ".desktop":
                target.write_text(desktop_entry(src.read_text(encoding="utf-8"), command), encoding="utf-8")
            else:
                shutil.copyfile(src, target)
            written.append(target)
        _refresh(home)
        generated = sorted(_generated_state(home) - caches_before)
        manifest = {"app_id": APP_ID, "command": command, "files": [str(p.relative_to(home)) for p in written],
                    "created_dirs": created_dirs, "generated": generated,
                    "caches_before": sorted(caches_before)}
        (home / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        for folder in reversed(created_dirs):
            try:
                Path(folder).rmdir()
            except OSError:
                pass
        raise
    return written + [home / MANIFEST]


def uninstall(home: Path | None = None) -> list[Path]:
    """Remove exactly what ``install`` wrote (per its manifest); returns the paths removed."""
    home = home or data_home()
    manifest = installed(home)
    if manifest is None:
        return []
    removed: list[Path] = []
    for rel in manifest.get("files", []):
        path = home / rel
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(path)
    # Caches that existed before the install are regenerated (now without our entries); those the install
    # created are removed, so the folder is as it was.
    _refresh(home)
    generated = manifest.get("generated", [])
    for rel in generated:
        path = home / rel
        if not rel.endswith("/") and (path.is_file() or path.is_symlink()):
            path.unlink()
            removed.append(path)
    for rel in sorted((r for r in generated if r.endswith("/")), key=lambda r: -len(Path(r).parts)):
        try:
            (home / rel).rmdir()
        except OSError:
            pass
    manifest_path = home / MANIFEST
    manifest_path.unlink(missing_ok=True)
    removed.append(manifest_path)
    for folder in sorted(manifest.get("created_dirs", []), key=lambda r: -len(Path(r).parts)):
        folder = home / folder          # absolute paths stay as they are
        try:
            folder.rmdir()          # only when empty: a folder the user filled since stays
        except OSError:
            pass
    return removed


def main(action: str) -> int:
    """The CLI's ``--install-desktop`` / ``--uninstall-desktop``: say what was done, exit 0, or why not (1)."""
    try:
        if action == "install":
            paths = install()
            home = data_home()
            sys.stdout.write(f"Installed PktMask GUI for this user ({len(paths)} files under {home}):\n"
                             f"  menu entry  {home / 'applications' / (APP_ID + '.desktop')}\n"
                             f"  starts      {' '.join(installed(home)['command'])}\n"
                             "It is in the applications menu, and \"Open With\" offers it for .pcap and .pcapng "
                             "files. Undo with: pktmask-gui --uninstall-desktop\n")
        else:
            paths = uninstall()
            if not paths:
                sys.stdout.write(f"PktMask GUI's desktop files are not installed for this user "
                                 f"(no {data_home() / MANIFEST}).\n")
            else:
                sys.stdout.write(f"Removed PktMask GUI's desktop files ({len(paths)} files) from {data_home()}.\n")
    except (DesktopError, OSError) as exc:
        text = str(exc) if isinstance(exc, DesktopError) else f"{exc.filename or ''}: {exc.strerror or exc}"
        sys.stderr.write(f"pktmask-gui: error: {text}\n")
        return 1
    return 0
