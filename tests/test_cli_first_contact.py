"""The command line as a new user first meets it: clear errors, the key's location, what each operation
did, --help in a few lines, and the output folder at the end of a run on a terminal."""
from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from helpers import REPO

from pktmask_gui.samplegen import generate

SAMPLE = REPO / "resources" / "samples" / "sample.pcapng"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "pktmask_gui", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ), cwd=REPO, timeout=120)


def test_output_naming_a_file_says_it_is_a_file(workdir):
    target = workdir / "report.txt"
    target.write_text("mine")
    run = cli("process", SAMPLE, "-o", target, "--dedup")
    assert run.returncode == 2
    assert f"pktmask-gui process: error: the output path {target} is a file, not a folder" in run.stderr
    assert "File exists" not in run.stderr and target.read_text() == "mine"


def test_a_folder_without_captures_is_an_error_in_the_same_style(workdir):
    empty = workdir / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    run = cli("process", empty, "-o", workdir / "out", "--dedup")
    assert run.returncode == 1
    assert run.stderr.startswith("pktmask-gui process: error: no capture files (.pcap, .pcapng, .cap, also gzip, "
                                 f"zstd or lz4 compressed) in {empty}")


def test_the_run_that_creates_the_key_says_where_once(workdir):
    key = Path(os.environ["PKTMASK_CONFIG_DIR"]) / "cryptopan.key"
    assert not key.exists()
    first = cli("process", SAMPLE, "-o", workdir / "a", "--anonymize")
    assert first.returncode == 0, first.stderr
    assert f"created your anonymization key at {key}" in first.stderr and key.is_file()
    second = cli("process", SAMPLE, "-o", workdir / "b", "--anonymize")
    assert second.returncode == 0 and "anonymization key" not in second.stderr


def test_result_line_names_what_each_operation_did(workdir):
    run = cli("process", SAMPLE, "-o", workdir / "out", "--dedup", "--anonymize", "--mask")
    assert run.returncode == 0, run.stderr
    line = next(ln for ln in run.stderr.splitlines() if ln.startswith("ok: "))
    assert "12 duplicates removed" in line and "addresses anonymized" in line and "frames masked" in line
    assert line.index("duplicates removed") < line.index("anonymized") < line.index("masked")


def test_help_says_what_it_does_how_outputs_are_named_and_where_the_settings_are():
    for args in (("--help",), ("process", "--help")):
        run = cli(*args)
        assert run.returncode == 0
        text = run.stdout
        settings = str(Path(os.environ["PKTMASK_CONFIG_DIR"]) / "settings.json")
        assert "Makes packet captures safe to share" in text
        assert "<name>-sanitized.<ext>" in text and settings in text


def test_on_a_terminal_the_run_ends_with_the_output_folder(workdir):
    out = workdir / "out"
    src = workdir / "in.pcap"
    generate(src, packets=200, seed=3)
    pid, fd = pty.fork()
    if pid == 0:            # the child: stderr is the terminal
        os.chdir(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "pktmask_gui", "process", str(src), "-o", str(out),
                                  "--dedup"])
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert f"Outputs are in {out}" in text
    piped = cli("process", src, "-o", workdir / "out2", "--dedup")       # not a terminal: no such line
    assert "Outputs are in" not in piped.stderr
