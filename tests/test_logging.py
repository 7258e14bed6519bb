"""The logging convention: a job's lines carry its file name as ``record.job`` (a LoggerAdapter's extra),
never inside the message, whether the job runs in this process or in a child; the CLI prints them as
``level: file: message``."""
from __future__ import annotations

import gzip
import logging
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

from pktmask_gui.jobs import run_job_process
from pktmask_gui.pipeline import Job, run_job
from pktmask_gui.samplegen import eth, generate
from pktmask_gui.settings import Settings

UNREADABLE = ("1 frame could not be inspected (EtherType 0x88b5 is not supported): zeroed after the last "
              "header understood")


def unreadable_capture(path: Path) -> Path:
    """A generated capture and one frame of an EtherType the engine does not know: a stage warning."""
    generate(path, packets=500, seed=3)
    frame = eth("02:00:00:00:00:01", "02:00:00:00:00:02", 0x88B5, b"\x01" * 60)
    with open(path, "ab") as fh:
        fh.write(struct.pack("<IIII", 1, 0, len(frame), len(frame)) + frame)
    return path


def compressed_capture(path: Path) -> Path:
    plain = path.with_name("plain.pcapng")
    generate(plain, packets=400, seed=4, fmt="pcapng")
    path.write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    return path


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def engine_records():
    """Every record of the engine's loggers, debug lines too."""
    engine = logging.getLogger("pktmask_gui")
    handler, level = Records(), engine.level
    engine.addHandler(handler)
    engine.setLevel(logging.DEBUG)
    yield handler.records
    engine.removeHandler(handler)
    engine.setLevel(level)


def lines(records) -> set:
    return {(r.name, r.levelno, getattr(r, "job", None), r.getMessage()) for r in records}


def test_every_line_about_a_job_names_its_file_in_the_record_and_never_in_the_message(workdir, engine_records):
    jobs = {"odd.pcap": unreadable_capture(workdir / "odd.pcap"),
            "packed.pcapng.gz": compressed_capture(workdir / "packed.pcapng.gz")}
    settings = Settings(temp_root=str(workdir), large_file_threshold_mb=0, memory_rss_mb=1)
    for name, path in jobs.items():
        engine_records.clear()
        result = run_job(Job(path, workdir / "out", ["dedup", "anonymize", "mask"]), settings)
        assert result.status == "ok", result.error
        messages = [r.getMessage() for r in engine_records]
        assert any(m.startswith("large input (") for m in messages)          # the job's workspace
        assert any(m.startswith("Memory pressure (") for m in messages)      # the streaming passes
        assert {getattr(r, "job", None) for r in engine_records} == {name}
        assert not any(name in m for m in messages)
    assert any(m.startswith("gzip-compressed input (") for m in messages)    # run_job itself
    engine_records.clear()
    run_job(Job(jobs["odd.pcap"], workdir / "again", ["mask"]), Settings(temp_root=str(workdir)))
    assert ("pktmask_gui.pipeline", logging.WARNING, "odd.pcap", UNREADABLE) in lines(engine_records)
    assert any(name == "pktmask_gui.workspace" and level == logging.DEBUG and job == "odd.pcap"
               and message.endswith(" KB is below the hard-link threshold (200.0 MB); reading it in place.")
               for name, level, job, message in lines(engine_records))


def test_a_job_logs_the_same_lines_in_this_process_and_in_a_child(workdir, engine_records):
    src = unreadable_capture(workdir / "odd.pcap")
    settings = Settings(temp_root=str(workdir), large_file_threshold_mb=0)
    assert run_job(Job(src, workdir / "a", ["dedup", "mask"]), settings).status == "ok"
    here = lines(engine_records)
    engine_records.clear()
    relayed = []
    assert run_job_process(Job(src, workdir / "b", ["dedup", "mask"]), settings, on_log=relayed.append).status == "ok"
    assert lines(engine_records) == here
    assert ("pktmask_gui.pipeline", logging.WARNING, "odd.pcap", UNREADABLE) in here
    # Every line of the job (the whole job runs in a pool's worker) came from the worker, with its job.
    assert (UNREADABLE, "odd.pcap") in [(r.getMessage(), r.job) for r in relayed]
    assert {r.job for r in relayed} == {"odd.pcap"}
    assert all(r.process != os.getpid() for r in relayed)


def test_run_job_leaves_the_outcome_to_its_caller(workdir, engine_records):
    bad = workdir / "bad.pcap"
    bad.write_bytes(b"not a capture at all" * 10)
    result = run_job(Job(bad, workdir / "out", ["dedup"]), Settings(temp_root=str(workdir)))
    assert result.status == "failed" and result.error.startswith("not a pcap or pcapng capture")
    # The result says it; the CLI prints its result line, the window logs it (no second copy).
    assert [r for r in engine_records if r.levelno >= logging.WARNING] == []


def cli(*args):
    return subprocess.run([sys.executable, "-m", "pktmask_gui", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=120, env=dict(os.environ))


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_the_cli_prints_each_job_line_after_its_file_name_with_one_job_at_a_time_or_several(workdir, jobs):
    odd = unreadable_capture(workdir / "odd.pcap")
    packed = compressed_capture(workdir / "packed.pcapng.gz")
    bad = workdir / "bad.pcap"
    bad.write_bytes(b"not a capture at all" * 10)
    run = cli("process", odd, packed, bad, "-o", workdir / "out", "--dedup", "--mask", "--jobs", jobs, "-v",
              "--temp-dir", workdir, "--large-file-threshold", "0")
    assert run.returncode == 1, run.stderr
    err = run.stderr.splitlines()
    assert f"warning: odd.pcap: {UNREADABLE}" in err
    assert "info: packed.pcapng.gz: gzip-compressed input (" + next(
        line.split("(", 1)[1] for line in err if "gzip-compressed input" in line) in err
    assert "info: packed.pcapng.gz: the output is gzip-compressed (level 1) as it is written." in err
    assert sum(line.startswith("info: odd.pcap: large input (") and line.endswith(
        "hard-linked into the temp folder; all passes read the private link, no copy made.") for line in err) == 1
    # A failed file is said once, by its result line.
    assert [line for line in err if "bad.pcap" in line and "hard-linked" not in line] == [
        f"FAILED: {bad}: not a pcap or pcapng capture (it starts with the bytes 6e 6f 74 20), at file offset 0"]
