#!/usr/bin/env python3
"""Build the self-contained PktMask GUI bundle: ``python3 scripts/build_bundle.py``.

It installs what it needs into a private environment inside the clone (``build/bundle-env``, made with
access to the Python packages already installed, so that only what is missing is downloaded), runs
PyInstaller on ``packaging/pktmask-gui.spec`` in one-folder mode, and leaves:

- ``dist/pktmask-gui/``: the folder to ship (``pktmask-gui`` executable plus ``_internal/``); no Python
  is needed where it runs;
- ``dist/pktmask-gui-<version>-<system>-<machine>.tar.gz``: that folder, packed (Linux and macOS);
- ``dist/PktMask_GUI-<version>-<machine>.AppImage``: only where ``appimagetool`` is already installed
  (nothing is downloaded to build it);
- on macOS also ``dist/PktMask GUI.app``; on Windows the folder holds ``pktmask-gui.exe`` (the window)
  and ``pktmask-gui-cli.exe`` (the command line) — see packaging/README.md.

Everything it writes stays inside the clone (``build/``, ``dist/``): pip's and PyInstaller's caches too.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build"
DIST = REPO / "dist"
ENV_DIR = BUILD / "bundle-env"
SPEC = REPO / "packaging" / "pktmask-gui.spec"
PYINSTALLER = "pyinstaller>=6.6"


def _say(text: str) -> None:
    print(f"build_bundle: {text}", flush=True)


def _version() -> str:
    sys.path.insert(0, str(REPO))
    from pktmask_gui import __version__
    return __version__


def _dependencies() -> list[str]:
    """The project's runtime dependencies, as pyproject.toml lists them."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib
        return list(tomllib.loads(text)["project"]["dependencies"])
    except ImportError:             # Python 3.10: the list is simple enough to read by hand
        block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
        return [line.split('"')[1] for line in block.splitlines() if line.strip().startswith('"')]


def _env_python() -> Path:
    return ENV_DIR / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _private_env() -> dict:
    """Environment for the build's tools: caches inside the clone, nothing in the user's home."""
    env = dict(os.environ)
    env["PIP_CACHE_DIR"] = str(BUILD / "pip-cache")
    env["PYINSTALLER_CONFIG_DIR"] = str(BUILD / "pyinstaller-config")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.pop("PYTHONPATH", None)
    return env


def install(env: dict) -> None:
    if not _env_python().exists():
        _say(f"creating {ENV_DIR.relative_to(REPO)} (sees the packages already installed)")
        venv.EnvBuilder(system_site_packages=True, with_pip=True).create(ENV_DIR)
    _say("installing PyInstaller and any missing runtime dependency")
    subprocess.run([str(_env_python()), "-m", "pip", "install", "-q", PYINSTALLER, *_dependencies()],
                   check=True, env=env)


def run_pyinstaller(env: dict) -> Path:
    out = DIST / "pktmask-gui"
    shutil.rmtree(out, ignore_errors=True)
    if sys.platform == "darwin":
        shutil.rmtree(DIST / "PktMask GUI.app", ignore_errors=True)
    _say("running PyInstaller (one-folder mode)")
    subprocess.run([str(_env_python()), "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
                    "--distpath", str(DIST), "--workpath", str(BUILD / "pyinstaller"), str(SPEC)],
                   check=True, env=env, cwd=str(REPO))
    return out


def pack_tarball(folder: Path, version: str) -> Path:
    system = {"darwin": "macos"}.get(sys.platform, platform.system().lower())
    target = DIST / f"pktmask-gui-{version}-{system}-{platform.machine().lower()}.tar.gz"
    target.unlink(missing_ok=True)
    with tarfile.open(target, "w:gz", compresslevel=6) as tar:
        tar.add(folder, arcname=folder.name)
    return target


def build_appimage(folder: Path, version: str) -> Path | None:
    """An AppImage, where appimagetool is installed already: an AppDir with AppRun, the desktop file and
    the icon at its top. Returns None (and says why) otherwise."""
    tool = shutil.which("appimagetool")
    if tool is None:
        _say("AppImage skipped: appimagetool is not installed here (the bundle does not download it); "
             "the .tar.gz holds the same program")
        return None
    appdir = BUILD / "PktMask_GUI.AppDir"
    shutil.rmtree(appdir, ignore_errors=True)
    shutil.copytree(folder, appdir / "usr" / "lib" / "pktmask-gui", symlinks=True)
    linux = REPO / "resources" / "linux"
    shutil.copy2(linux / "pktmask-gui.desktop", appdir / "pktmask-gui.desktop")
    shutil.copy2(linux / "icons" / "hicolor" / "256x256" / "apps" / "pktmask-gui.png", appdir / "pktmask-gui.png")
    apprun = appdir / "AppRun"
    apprun.write_text('#!/bin/sh\nHERE="$(dirname "$(readlink -f "$0")")"\n'
                      'exec "$HERE/usr/lib/pktmask-gui/pktmask-gui" "$@"\n')
    apprun.chmod(0o755)
    target = DIST / f"PktMask_GUI-{version}-{platform.machine()}.AppImage"
    env = dict(os.environ, ARCH=platform.machine(), APPIMAGE_EXTRACT_AND_RUN="1")
    subprocess.run([tool, "--no-appstream", str(appdir), str(target)], check=True, env=env)
    return target


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> int:
    parser = argparse.ArgumentParser(description="Build the self-contained PktMask GUI bundle under dist/.")
    parser.add_argument("--no-install", action="store_true",
                        help="use build/bundle-env as it is (PyInstaller already installed there)")
    args = parser.parse_args()
    started = time.monotonic()
    version = _version()
    env = _private_env()
    if not args.no_install:
        install(env)
    folder = run_pyinstaller(env)
    exe = folder / ("pktmask-gui.exe" if os.name == "nt" else "pktmask-gui")
    if not exe.exists():
        _say(f"error: PyInstaller finished but {exe} is missing")
        return 1
    products = [folder]
    if os.name != "nt":
        products.append(pack_tarball(folder, version))
    if sys.platform.startswith("linux"):
        image = build_appimage(folder, version)
        if image is not None:
            products.append(image)
    if sys.platform == "darwin" and (DIST / "PktMask GUI.app").exists():
        products.append(DIST / "PktMask GUI.app")
    for product in products:
        _say(f"built {product.relative_to(REPO)} ({_size(product) / 2**20:.0f} MB)")
    _say(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
