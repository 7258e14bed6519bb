"""Shared fixtures: the corpus, a private temp dir, and a private config folder for every test.

- ``corpus_dir``, ``workdir`` (a fresh ``pktmask_test_*`` dir), ``work`` (a workdir with a ``temp`` folder, the
  temp root ``helpers.settings_for(work)`` names) and the autouse private config folder.
- ``other_fs``: a dir on another file system than the workdir (/dev/shm), as a temp root: jobs then stage
  their outputs in ``pktmask_output_`` dirs of the output folder (skips where there is none).
- The helpers test modules share are in helpers.py.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from helpers import CORPUS, other_file_system

# --- fixtures ----------------------------------------------------------------------------------------------

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


@pytest.fixture
def other_fs(workdir):
    path = other_file_system(workdir)
    if path is None:
        pytest.skip("no second file system (/dev/shm) to put the temp folder on")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def split_env(workdir, monkeypatch):
    """(workdir, settings) for one file on several processes (segments.py): the split forced on small files
    by lowering its size thresholds in this (the parent) process; the jobs' temp root is ``workdir/temp``."""
    from pktmask_gui import segments
    from pktmask_gui.settings import Settings

    monkeypatch.setattr(segments, "MIN_SPLIT_BYTES", 0)
    monkeypatch.setattr(segments, "MIN_SEGMENT_BYTES", 1)
    (workdir / "temp").mkdir()
    return workdir, Settings(temp_root=str(workdir / "temp"), parallel_jobs=1)


@pytest.fixture
def work(workdir) -> Path:
    """A workdir holding an empty ``temp`` folder: the temp root of ``settings_for(work)``."""
    (workdir / "temp").mkdir()
    return workdir


@pytest.fixture(autouse=True)
def _private_config(monkeypatch):
    """Tests never read or write the user's real settings or anonymization key."""
    with tempfile.TemporaryDirectory(prefix="pktmask_test_config_") as name:
        monkeypatch.setenv("PKTMASK_CONFIG_DIR", str(Path(name) / "pktmask-gui"))
        monkeypatch.setenv("XDG_CONFIG_HOME", name)
        yield


@pytest.fixture(scope="module")
def dask_cluster():
    """A Dask scheduler and two workers (``dask scheduler`` / ``dask worker`` as subprocesses, each worker with
    a temp folder of its own), shared by a module's cluster tests and stopped after them (other modules count
    this process's children); skipped where distributed is not installed."""
    pytest.importorskip("distributed", reason="the optional extra 'cluster' (distributed) is not installed")
    from cluster_helpers import Cluster

    with tempfile.TemporaryDirectory(prefix="pktmask_test_cluster_") as name:
        cluster = Cluster(Path(name))
        try:
            yield cluster
        finally:
            cluster.stop()
