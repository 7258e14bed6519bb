"""Shared fixtures: the real-capture corpus, a private temp dir, and a private config folder; and
``leftovers``, which test modules import (``from conftest import leftovers``)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"


def leftovers(*dirs) -> list[str]:
    """Every ``pktmask_*`` entry below the given folders (the tests' own ``pktmask_test_*`` aside)."""
    found = []
    for d in dirs:
        if Path(d).exists():
            found += [str(p) for p in Path(d).rglob("pktmask_*") if not p.name.startswith("pktmask_test_")]
    return found


@pytest.fixture
def corpus_dir() -> Path:
    """The read-only corpus of real captures (../shared/corpus); copy files out before processing."""
    if not CORPUS.is_dir():
        pytest.skip(f"real-capture corpus not present at {CORPUS} (a fresh clone has no ../shared)")
    return CORPUS


@pytest.fixture
def workdir():
    """A fresh temp dir named pktmask_test_*, removed after the test."""
    with tempfile.TemporaryDirectory(prefix="pktmask_test_") as name:
        yield Path(name)


@pytest.fixture(autouse=True)
def _private_config(monkeypatch):
    """Tests never read or write the user's real settings or anonymization key."""
    with tempfile.TemporaryDirectory(prefix="pktmask_test_config_") as name:
        monkeypatch.setenv("PKTMASK_CONFIG_DIR", str(Path(name) / "pktmask-gui"))
        monkeypatch.setenv("XDG_CONFIG_HOME", name)
        yield
