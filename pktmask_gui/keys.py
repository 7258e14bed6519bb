"""The anonymization key: one 32-byte secret in its own file, ``cryptopan.key``, in the config folder.

Created at first use from ``os.urandom(32)``; readable by the user alone (0600); written atomically (a
temp file beside it, fsync, then a hard link / rename), so a crash never leaves half a key and two jobs
starting at once agree on one key. A key file holds the 32 bytes raw or as 64 hex digits (the format
``export_key`` writes); whitespace around the hex is ignored. The key never goes into an output or a report.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .settings import config_dir  # noqa: F401  (one definition of the config folder, re-exported)

KEY_FILE = "cryptopan.key"
KEY_SIZE = 32
def key_path(folder: Path | None = None) -> Path:
    return Path(folder if folder is not None else config_dir()) / KEY_FILE


def parse_key(raw: bytes) -> bytes:
    """32 raw bytes, or 64 hex digits (surrounding whitespace allowed) -> the 32-byte key; ValueError else."""
    if len(raw) == KEY_SIZE:
        return bytes(raw)
    text = raw.strip()
    if len(text) == 2 * KEY_SIZE:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise ValueError("a key file must hold 32 bytes, raw or as 64 hex digits (this one has %d bytes)" % len(raw))


def load_key_file(path) -> bytes:
    """Read a key file (``--key-file``); OSError or ValueError with a clear message."""
    with open(path, "rb") as fh:
        raw = fh.read(4 * KEY_SIZE + 1)
    return parse_key(raw)


def _write_private(path: Path, data: bytes, replace: bool) -> bool:
    """Write ``data`` to ``path`` with mode 0600, atomically. replace=False: keep an existing file (-> False)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % path.name, dir=str(path.parent))
    try:
        try:
            os.fchmod(fd, 0o600)
        except (AttributeError, OSError):
            pass                    # Windows: no POSIX modes; the per-user folder is private already
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
            tmp = None
            return True
        try:
            os.link(tmp, path)      # atomic "create if absent": a concurrent creator wins or loses whole
            return True
        except FileExistsError:
            return False
        except OSError:
            # no hard links here: exclusive create, then the content (a tiny window, first run only)
            try:
                out = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                              0o600)
            except FileExistsError:
                return False
            with os.fdopen(out, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            return True
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def load_or_create_key(folder: Path | None = None) -> bytes:
    """The key in the config folder, created (0600) from a secure random source at first use."""
    path = key_path(folder)
    try:
        key = load_key_file(path)
    except FileNotFoundError:
        pass
    else:
        _tighten(path)
        return key
    _write_private(path, os.urandom(KEY_SIZE), replace=False)
    return load_key_file(path)


def _tighten(path: Path) -> None:
    """A key file others can read (copied in by hand, say) is made private again; best effort."""
    if os.name != "posix":
        return
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError:
        pass


def save_key(key: bytes, folder: Path | None = None) -> Path:
    if len(key) != KEY_SIZE:
        raise ValueError("a key is 32 bytes")
    path = key_path(folder)
    _write_private(path, bytes(key), replace=True)
    return path


def regenerate_key(folder: Path | None = None) -> bytes:
    """Replace the key with a fresh random one (the caller asks the user first)."""
    key = os.urandom(KEY_SIZE)
    save_key(key, folder)
    return key


def import_key(src, folder: Path | None = None) -> bytes:
    """Replace the key with the one in ``src`` (raw or hex); ValueError / OSError leave the old key."""
    key = load_key_file(src)
    save_key(key, folder)
    return key


def export_key(dst, folder: Path | None = None) -> Path:
    """Write the current key as 64 hex digits and a newline to ``dst`` (mode 0600)."""
    key = load_or_create_key(folder)
    dst = Path(dst)
    _write_private(dst, key.hex().encode("ascii") + b"\n", replace=True)
    return dst


def fingerprint(key: bytes) -> str:
    """A short non-secret identifier of a key (to compare keys without showing them)."""
    import hashlib
    return hashlib.sha256(b"pktmask-gui key fingerprint\0" + bytes(key)).hexdigest()[:16]
