"""The key file: created at first use (0600, atomically), raw or hex, import / export / regenerate."""
from __future__ import annotations

import os
import stat
import sys
import threading

import pytest

from pktmask_gui import keys


def test_config_dir_precedence(monkeypatch, workdir):
    monkeypatch.setenv("PKTMASK_CONFIG_DIR", str(workdir / "override"))
    assert keys.config_dir() == workdir / "override"
    monkeypatch.delenv("PKTMASK_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(workdir / "xdg"))
    if sys.platform.startswith("linux"):
        assert keys.config_dir() == workdir / "xdg" / "pktmask-gui"


def test_created_once_private_and_stable(workdir):
    k1 = keys.load_or_create_key(workdir)
    path = workdir / keys.KEY_FILE
    assert len(k1) == 32 and path.read_bytes() == k1
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.load_or_create_key(workdir) == k1
    assert [p.name for p in workdir.iterdir()] == [keys.KEY_FILE]       # no temp file left behind


def test_default_folder_comes_from_the_environment(workdir, monkeypatch):
    monkeypatch.setenv("PKTMASK_CONFIG_DIR", str(workdir / "cfg"))
    key = keys.load_or_create_key()
    assert (workdir / "cfg" / "cryptopan.key").read_bytes() == key


def test_concurrent_first_use_agrees_on_one_key(workdir):
    results = []
    threads = [threading.Thread(target=lambda: results.append(keys.load_or_create_key(workdir))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1


def test_load_raw_and_hex_and_reject_others(workdir):
    key = bytes(range(32))
    (workdir / "raw.key").write_bytes(key)
    (workdir / "hex.key").write_text("  " + key.hex().upper() + "\n")
    assert keys.load_key_file(workdir / "raw.key") == key
    assert keys.load_key_file(workdir / "hex.key") == key
    for bad in (b"", b"abc", b"z" * 64, bytes(31), bytes(33), key.hex().encode() + b"00"):
        (workdir / "bad.key").write_bytes(bad)
        with pytest.raises(ValueError):
            keys.load_key_file(workdir / "bad.key")
    with pytest.raises(FileNotFoundError):
        keys.load_key_file(workdir / "missing.key")


def test_export_import_regenerate(workdir):
    cfg = workdir / "cfg"
    original = keys.load_or_create_key(cfg)
    exported = keys.export_key(workdir / "out" / "my.key", cfg)
    assert exported.read_text() == original.hex() + "\n"
    if os.name == "posix":
        assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    fresh = keys.regenerate_key(cfg)
    assert fresh != original and keys.load_or_create_key(cfg) == fresh
    assert keys.import_key(exported, cfg) == original
    assert keys.load_or_create_key(cfg) == original
    (workdir / "broken.key").write_bytes(b"nonsense")
    with pytest.raises(ValueError):
        keys.import_key(workdir / "broken.key", cfg)
    assert keys.load_or_create_key(cfg) == original          # a failed import leaves the key alone


def test_fingerprint_is_short_and_not_the_key():
    key = bytes(range(32))
    fp = keys.fingerprint(key)
    assert len(fp) == 16 and fp not in key.hex()


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_a_key_readable_by_others_is_made_private(workdir):
    path = workdir / keys.KEY_FILE
    path.write_bytes(bytes(range(32)))
    os.chmod(path, 0o644)
    assert keys.load_or_create_key(workdir) == bytes(range(32))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
