"""Linux desktop integration: the shipped files validate, --install-desktop installs them for the user and
--uninstall-desktop removes exactly what it installed (HOME and XDG_DATA_HOME point at a temp dir)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

from pktmask_gui import desktop

LINUX = REPO / "resources" / "linux"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="freedesktop.org integration is Linux's")


@pytest.fixture
def data_home(workdir, monkeypatch):
    home = workdir / "home"
    data = home / ".local" / "share"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    return data


def tree(root: Path) -> set:
    return {str(p.relative_to(root)) + ("/" if p.is_dir() else "") for p in root.rglob("*")} if root.exists() else set()


def test_shipped_desktop_file_validates():
    tool = shutil.which("desktop-file-validate")
    if tool is None:
        pytest.skip("desktop-file-validate is not installed (Debian: desktop-file-utils)")
    run = subprocess.run([tool, str(LINUX / f"{desktop.APP_ID}.desktop")], capture_output=True, text=True)
    assert run.returncode == 0 and not run.stdout.strip(), run.stdout


def test_shipped_metainfo_validates():
    tool = shutil.which("appstreamcli")
    if tool is None:
        pytest.skip("appstreamcli is not installed (Debian: appstream)")
    run = subprocess.run([tool, "validate", "--no-net", str(LINUX / f"{desktop.APP_ID}.metainfo.xml")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_desktop_file_declares_the_capture_types_and_queues_what_it_is_given():
    text = (LINUX / f"{desktop.APP_ID}.desktop").read_text()
    assert "MimeType=application/vnd.tcpdump.pcap;application/x-pcapng;" in text
    assert "Exec=pktmask-gui %F" in text          # files opened or dropped on the icon arrive as arguments
    mime = (LINUX / f"{desktop.APP_ID}.mime.xml").read_text()
    assert 'type="application/vnd.tcpdump.pcap"' in mime and 'type="application/x-pcapng"' in mime


def test_hicolor_icons_at_the_standard_sizes():
    from PySide6.QtGui import QImage

    for size in (16, 22, 24, 32, 48, 64, 128, 256, 512):
        png = LINUX / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{desktop.ICON_NAME}.png"
        image = QImage(str(png))
        assert not image.isNull() and image.width() == size == image.height(), png
    assert (LINUX / "icons" / "hicolor" / "scalable" / "apps" / f"{desktop.ICON_NAME}.svg").is_file()


def test_install_then_uninstall_leaves_the_folder_exactly_as_it_was(data_home):
    # A data folder in use: another app's menu entry and icon, no MIME database yet.
    (data_home / "applications").mkdir(parents=True)
    (data_home / "applications" / "other.desktop").write_text("[Desktop Entry]\nType=Application\nName=X\nExec=x\n")
    (data_home / "icons" / "hicolor" / "48x48" / "apps").mkdir(parents=True)
    (data_home / "icons" / "hicolor" / "48x48" / "apps" / "other.png").write_bytes(b"png")
    before = tree(data_home)

    written = desktop.install(command=["/opt/pktmask gui/pktmask-gui"])
    entry = data_home / "applications" / f"{desktop.APP_ID}.desktop"
    assert entry in written and entry.is_file()
    assert (data_home / "icons" / "hicolor" / "256x256" / "apps" / "pktmask-gui.png").is_file()
    assert (data_home / "metainfo" / f"{desktop.APP_ID}.metainfo.xml").is_file()
    assert (data_home / "mime" / "packages" / f"{desktop.APP_ID}.xml").is_file()
    text = entry.read_text()
    assert 'Exec="/opt/pktmask gui/pktmask-gui" %F' in text and "TryExec=/opt/pktmask gui/pktmask-gui" in text
    if shutil.which("desktop-file-validate"):
        run = subprocess.run(["desktop-file-validate", str(entry)], capture_output=True, text=True)
        assert run.returncode == 0 and not run.stdout.strip(), run.stdout
    if shutil.which("update-mime-database"):
        assert (data_home / "mime" / "mime.cache").is_file()      # the caches were refreshed

    removed = desktop.uninstall()
    assert entry in removed
    assert tree(data_home) == before
    assert desktop.uninstall() == []                  # nothing left to remove


def test_uninstall_keeps_what_the_user_added_since_and_regenerates_shared_caches(data_home):
    desktop.install(command=["/usr/bin/pktmask-gui"])
    mine = data_home / "icons" / "hicolor" / "256x256" / "apps" / "mine.png"
    mine.write_bytes(b"added later by someone else")
    desktop.uninstall()
    assert mine.read_bytes() == b"added later by someone else"
    assert not (data_home / "icons" / "hicolor" / "256x256" / "apps" / "pktmask-gui.png").exists()
    assert not (data_home / "applications" / f"{desktop.APP_ID}.desktop").exists()


def test_reinstall_replaces_the_earlier_install(data_home):
    desktop.install(command=["/old/pktmask-gui"])
    desktop.install(command=["/new/pktmask-gui"])
    assert "Exec=/new/pktmask-gui %F" in (data_home / "applications" / f"{desktop.APP_ID}.desktop").read_text()
    desktop.uninstall()
    assert not (data_home / "applications" / f"{desktop.APP_ID}.desktop").exists()


def test_command_line_install_and_uninstall(data_home):
    env = dict(os.environ)
    run = subprocess.run([sys.executable, "-m", "pktmask_gui", "--install-desktop"], capture_output=True,
                         text=True, env=env, cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Installed PktMask GUI for this user" in run.stdout and "--uninstall-desktop" in run.stdout
    entry = (data_home / "applications" / f"{desktop.APP_ID}.desktop").read_text()
    assert "pktmask_gui" in entry or "pktmask-gui" in entry
    run = subprocess.run([sys.executable, "-m", "pktmask_gui", "--uninstall-desktop"], capture_output=True,
                         text=True, env=env, cwd=REPO, timeout=120)
    assert run.returncode == 0 and "Removed" in run.stdout
    assert not (data_home / "applications" / f"{desktop.APP_ID}.desktop").exists()
    assert not (data_home / "pktmask-gui").exists()
