"""Faults of the filesystem during a job, on real filesystems: a fifo or an unreadable file among the inputs,
an output folder that is read-only, a full disk, a full temp root, an input deleted, renamed or replaced while
it is read, a temp root on another filesystem. Each ends in one clear line or the right output, the input
unchanged and nothing left behind.

Real means throughout: tmpfs mounts for full and read-only folders (as root; skipped with a reason where
mounting is not allowed), /dev/shm for a second filesystem, a real fifo, a real unprivileged user.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import GOOD_PCAP, assert_clean_failure, cli, leftovers, settings_for, sha

from pktmask_gui.jobs import run_job_process
from pktmask_gui.pipeline import Job, run_job
from pktmask_gui.samplegen import generate
from pktmask_gui.settings import Settings


@contextmanager
def tmpfs(path: Path, size: str = "1m"):
    """A real tmpfs of ``size`` mounted at ``path`` (root only: the test is skipped, saying why, elsewhere)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.name != "posix" or not shutil.which("mount"):
        pytest.skip("no mount command on this machine")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)
        if os.path.ismount(path):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount_ro(path: Path) -> None:
    """The mount at ``path`` made read-only."""
    proc = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot remount read-only here: {proc.stderr.strip()}")


# --- inputs that are not regular readable files -----------------------------------------------------------

def test_a_fifo_named_like_a_capture_does_not_hang(work):
    fifo = work / "live.pcapng"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    result = run_job(Job(fifo, work / "out", ["dedup"]), settings_for(work))
    assert time.monotonic() - t0 < 10
    assert_clean_failure(result, work, work / "out", ["not a regular file"])
    proc = cli("process", fifo, "-o", work / "out", "--dedup", "--temp-dir", work / "temp", timeout=60)
    assert proc.returncode == 1 and "FAILED" in proc.stderr and "Traceback" not in proc.stderr


def test_an_unreadable_file_fails_and_the_batch_continues_for_an_unprivileged_user(work):
    """chmod does not stop root: as root, fork and drop privileges to 'nobody' (uid 65534) in the child.

    The child runs run_job in-process (the interpreter under /root may not be executable by 'nobody', so
    neither the CLI nor a spawned job child could start there); the CLI's one-line output is the same
    result's describe_result line.
    """
    if os.name != "posix":
        pytest.skip("POSIX permissions only")
    from pktmask_gui.cli import describe_result

    locked = work / "locked.pcap"
    locked.write_bytes(GOOD_PCAP)
    good = work / "good.pcap"
    good.write_bytes(GOOD_PCAP)
    out = work / "out"
    out.mkdir()
    for p in (work, work / "temp", out):
        p.chmod(0o777)
    locked.chmod(0)
    warm = run_job(Job(good, work / "warm", ["dedup"]), settings_for(work))    # import everything before the fork
    assert warm.status == "ok"
    shutil.rmtree(work / "warm")
    if os.geteuid() != 0 and os.access(locked, os.R_OK):
        pytest.skip("cannot make a file unreadable for this user")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                        # child: never returns into pytest
        code = 0
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            lines = []
            for src in (locked, good):
                r = run_job(Job(src, out, ["dedup"]), settings_for(work))
                lines.append({"status": r.status, "error": r.error, "line": describe_result(r)})
            os.write(write_end, json.dumps(lines).encode())
        except BaseException as exc:                    # report, never fall through
            os.write(write_end, json.dumps({"crash": repr(exc)}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    import select

    with os.fdopen(read_end, "rb") as fh:
        ready, _, _ = select.select([fh], [], [], 60)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        report = json.loads((fh.read() if ready else b"") or b'{"crash": "no answer from the child in 60 s"}')
    os.waitpid(pid, 0)
    assert "crash" not in report, report
    (bad, ok) = report
    assert bad["status"] == "failed" and "ermission denied" in bad["error"], bad
    assert bad["line"].startswith("FAILED: ") and "\n" not in bad["line"]
    assert ok["status"] == "ok", ok
    assert [p.name for p in out.iterdir()] == ["good-sanitized.pcap"]
    assert leftovers(work / "temp", out) == []


# --- folders that are read-only or full ---------------------------------------------------------------------

def test_an_output_folder_that_is_not_writable_fails_in_one_line(work):
    src = work / "in.pcap"
    generate(src, packets=500, seed=3)
    before = sha(src)
    with tmpfs(work / "ro") as ro:
        (ro / "existing").mkdir()
        remount_ro(ro)
        for out in (ro, ro / "existing", ro / "new" / "deeper"):
            result = run_job(Job(src, out, ["dedup"]), settings_for(work))
            assert result.status == "failed"
            assert "Read-only file system" in result.error or "not writable" in result.error, result.error
            assert "\n" not in result.error
        assert [p.name for p in ro.iterdir()] == ["existing"]
        proc = cli("process", src, "-o", ro, "--dedup", "--temp-dir", work / "temp")
        assert proc.returncode == 1 and "not writable" in proc.stderr and "Traceback" not in proc.stderr
        proc = cli("process", src, "-o", ro / "new", "--dedup", "--temp-dir", work / "temp")
        assert proc.returncode == 2 and "cannot create the output folder" in proc.stderr
    assert leftovers(work / "temp") == [] and sha(src) == before


@pytest.mark.parametrize("runner", ["in-process", "child-process"])
def test_a_full_disk_while_writing_fails_cleanly_and_gives_the_space_back(work, runner):
    src = work / "in.pcap"
    generate(src, packets=8000, seed=5, dup_ratio=0.0)       # ~3 MB, three times the 1 MiB disk
    before = sha(src)
    run = run_job if runner == "in-process" else run_job_process
    with tmpfs(work / "full", "1m") as full:
        result = run(Job(src, full, ["dedup"]), settings_for(work))
        assert result.status == "failed"
        assert "disk is full" in result.error and "\n" not in result.error, result.error
        assert list(full.iterdir()) == []                    # no partial output, no staging dir
        assert shutil.disk_usage(full).used < 64 * 1024      # the space was given back
    assert leftovers(work / "temp") == [] and sha(src) == before


def test_a_full_temp_root_fails_cleanly(work):
    """The temp root itself is full: the workspace cannot even write its marker."""
    src = work / "in.pcap"
    src.write_bytes(GOOD_PCAP)
    with tmpfs(work / "tfull", "64k") as root:
        with open(root / "filler", "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        result = run_job(Job(src, work / "out", ["dedup"]), Settings(temp_root=str(root), parallel_jobs=1))
        assert result.status == "failed" and "\n" not in result.error
        assert "full" in result.error or "space" in result.error, result.error
        assert sorted(p.name for p in root.iterdir()) == ["filler"]
    assert not (work / "out").exists() or list((work / "out").iterdir()) == []


def test_a_workspace_that_cannot_write_its_marker_fails_naming_the_temp_folder_and_leaves_nothing(work):
    """The temp folder (a tmpfs) has room for the job's dir but none for the marker that names the staging dir
    in the output folder (another file system): the job fails with one sentence about the temp folder, and
    both dirs go at once."""
    src = work / "in.pcap"
    src.write_bytes(GOOD_PCAP)
    with tmpfs(work / "tfull", "64k") as root:
        with open(root / "filler", "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        (root / "filler").unlink()
        with open(root / "filler", "wb", buffering=0) as fh:   # leave room for a dir, none for the marker
            try:
                while True:
                    fh.write(b"\0" * 1024)
            except OSError:
                pass
        result = run_job(Job(src, work / "out", ["dedup"]), Settings(temp_root=str(root), parallel_jobs=1))
        assert result.status == "failed" and "\n" not in result.error
        assert "temp folder" in result.error and "space" in result.error, result.error
        assert sorted(p.name for p in root.iterdir()) == ["filler"]
    assert list((work / "out").iterdir()) == []


# --- an input deleted, renamed or replaced while it is read ---------------------------------------------------

@pytest.mark.parametrize("what", ["deleted", "renamed", "replaced"])
def test_an_input_deleted_or_renamed_mid_run_still_gives_the_right_output(work, what):
    stages = ["dedup", "mask"]
    src = work / "in.pcap"
    generate(src, packets=6000, seed=8, dup_ratio=0.1)
    reference = run_job(Job(src, work / "ref", stages), settings_for(work))
    assert reference.status == "ok", reference.error
    settings = settings_for(work, large_file_threshold_mb=0)     # hard-link every input
    done = []

    def progress(phase, *_):
        if phase == "prescan" and not done:
            done.append(phase)
            if what == "deleted":
                src.unlink()
            elif what == "renamed":
                src.rename(work / "moved.pcap")
            else:                                        # a different file takes the name
                src.rename(work / "moved.pcap")
                src.write_bytes(GOOD_PCAP)

    result = run_job(Job(src, work / "out", stages), settings, progress=progress)
    assert done, "the job never reached its pre-scan"
    assert result.status == "ok", result.error
    assert Path(result.output).read_bytes() == Path(reference.output).read_bytes()
    assert leftovers(work / "temp", work / "out") == []


def test_an_input_deleted_mid_pass_is_still_read_through_what_was_opened(work):
    """Single-pass job below the link threshold: the open file survives the deletion of its name."""
    src = work / "in.pcap"
    generate(src, packets=20000, seed=4, dup_ratio=0.1)
    reference = run_job(Job(src, work / "ref", ["dedup"]), settings_for(work))
    seen = []

    def progress(phase, done, total, packets):
        if phase == "process" and packets and src.exists():
            seen.append(packets)
            src.unlink()

    result = run_job(Job(src, work / "out", ["dedup"]), settings_for(work), progress=progress)
    assert seen and seen[0] < 20000, "the name was not deleted mid-pass"
    assert result.status == "ok", result.error
    assert Path(result.output).read_bytes() == Path(reference.output).read_bytes()
    assert leftovers(work / "temp", work / "out") == []


def test_an_input_deleted_mid_run_without_a_link_fails_cleanly(work):
    """Below the threshold no link is made: a later pass finds the name gone and fails cleanly."""
    stages = ["dedup", "mask"]
    src = work / "in.pcap"
    generate(src, packets=6000, seed=8)

    def progress(phase, *_):
        if phase == "prescan" and src.exists():
            src.unlink()

    result = run_job(Job(src, work / "out", stages), settings_for(work), progress=progress)
    assert_clean_failure(result, work, work / "out")


# --- a temp root on another filesystem ------------------------------------------------------------------------

@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm tmpfs on this machine")
def test_a_temp_root_on_another_filesystem_falls_back_and_says_so(work, caplog):
    out, settings = work / "out", settings_for(work)
    if os.stat("/dev/shm").st_dev == os.stat(work).st_dev:
        pytest.skip("/dev/shm is on the same filesystem as the temp dir here")
    with tempfile.TemporaryDirectory(prefix="pktmask_test_", dir="/dev/shm") as shm:
        settings.temp_root = shm
        settings.large_file_threshold_mb = 0
        src = work / "in.pcap"
        generate(src, packets=300, seed=4)
        with caplog.at_level(logging.INFO, logger="pktmask_gui"):
            result = run_job(Job(src, out, ["dedup"]), settings)
        assert result.status == "ok"
        assert any("falling back" in r.getMessage() for r in caplog.records)
        assert [p for p in Path(shm).iterdir()] == []


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm tmpfs on this machine")
def test_a_temp_root_on_another_filesystem_works_in_a_child_process(work):
    if os.stat("/dev/shm").st_dev == os.stat(work).st_dev:
        pytest.skip("/dev/shm is on the same filesystem as the work dir here")
    src = work / "in.pcapng"
    generate(src, packets=3000, seed=6, fmt="pcapng")
    seen = []
    with tempfile.TemporaryDirectory(prefix="pktmask_test_", dir="/dev/shm") as shm:
        settings = Settings(temp_root=shm, parallel_jobs=1, large_file_threshold_mb=0)
        result = run_job_process(Job(src, work / "out", ["dedup", "mask"]), settings, on_log=seen.append)
        assert result.status == "ok", result.error
        assert list(Path(shm).iterdir()) == []
    # the fallback is decided in the owner process and logged on the workspace logger
    reference = run_job(Job(src, work / "ref", ["dedup", "mask"]), settings_for(work))
    assert Path(result.output).read_bytes() == Path(reference.output).read_bytes()


def test_the_cross_device_fallback_is_logged(work, caplog):
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat(work).st_dev:
        pytest.skip("no separate /dev/shm filesystem here")
    src = work / "in.pcap"
    generate(src, packets=300, seed=6)
    with tempfile.TemporaryDirectory(prefix="pktmask_test_", dir="/dev/shm") as shm:
        with caplog.at_level(logging.INFO, logger="pktmask_gui.workspace"):
            result = run_job_process(Job(src, work / "out", ["dedup"]),
                                     Settings(temp_root=shm, parallel_jobs=1, large_file_threshold_mb=0))
        assert result.status == "ok"
        assert any("falling back" in r.getMessage() and r.name == "pktmask_gui.workspace" for r in caplog.records)
        assert list(Path(shm).iterdir()) == []
