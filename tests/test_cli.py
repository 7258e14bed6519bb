"""`pktmask-gui process`: a public interface — flags, output, JSON and exit codes, run as a real process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO

from pktmask_gui.samplegen import generate



def cli(*args, env_extra=None, **kwargs):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "pktmask_gui", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120, **kwargs)


def test_process_dedup_json_and_exit_0(workdir):
    src = workdir / "in.pcap"
    generate(src, packets=400, seed=1, dup_ratio=0.1)
    proc = cli("process", src, "-o", workdir / "out", "--dedup", "--json", "--temp-dir", workdir)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    (entry,) = report["files"]
    assert set(entry) == {"input", "output", "status", "error", "error_kind", "warnings", "packets_in",
                          "packets_out", "elapsed_s", "stages", "input_compression", "output_compression"}
    assert entry["input_compression"] is None and entry["output_compression"] is None
    assert entry["status"] == "ok" and entry["error"] is None
    assert entry["packets_in"] > entry["packets_out"] > 0
    assert entry["stages"]["dedup"]["duplicates_removed"] == entry["packets_in"] - entry["packets_out"]
    assert Path(entry["output"]) == workdir / "out" / "in-sanitized.pcap"
    assert "ok: " in proc.stderr and "Traceback" not in proc.stderr
    assert [p.name for p in workdir.iterdir() if p.name.startswith("pktmask_")] == []


def test_one_bad_file_fails_the_run_but_not_the_batch(workdir):
    good = workdir / "good.pcapng"
    generate(good, packets=100, seed=2, fmt="pcapng")
    bad = workdir / "bad.pcap"
    bad.write_bytes(b"\x00" * 100)
    proc = cli("process", good, bad, workdir / "missing.pcap", "-o", workdir / "out", "--dedup", "--json")
    assert proc.returncode == 1
    files = {Path(f["input"]).name: f for f in json.loads(proc.stdout)["files"]}
    assert files["good.pcapng"]["status"] == "ok"
    assert files["bad.pcap"]["status"] == "failed" and files["bad.pcap"]["error"]
    assert files["missing.pcap"]["status"] == "failed"
    assert not (workdir / "out" / "bad-sanitized.pcap").exists()
    failed_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("FAILED")]
    assert len(failed_lines) == 2 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["process", "x.pcap", "-o", "out"], "--dedup"),             # no operation: refused, names the flags
    (["process", "x.pcap", "--dedup"], "-o"),                    # -o is required
    (["process", "x.pcap", "-o", "out", "--dedup", "--jobs", "0"], "--jobs"),
    (["process", "-o", "out", "--dedup"], "PATH"),
    (["--bogus"], "unknown option"),
])
def test_usage_errors_exit_2(workdir, args, needle):
    proc = cli(*args)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_operations_never_come_from_saved_settings(workdir):
    conf = Path(os.environ["PKTMASK_CONFIG_DIR"])
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "settings.json").write_text(json.dumps({"operations": ["dedup"]}))
    src = workdir / "in.pcap"
    generate(src, packets=10, seed=1)
    assert cli("process", src, "-o", workdir / "out").returncode == 2


def test_version_and_help():
    assert cli("--version").stdout.startswith("pktmask-gui ")
    assert "process" in cli("--help").stdout
    assert "--mask-mode" in cli("process", "--help").stdout


def test_gui_without_display_says_so(workdir):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    proc = subprocess.run([sys.executable, "-m", "pktmask_gui"], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 1
    assert "no display" in proc.stderr and "QT_QPA_PLATFORM=offscreen" in proc.stderr
    assert "pktmask-gui process" in proc.stderr


def test_sigint_cancels_cleanly_with_130(workdir):
    src = workdir / "big.pcap"
    generate(src, packets=300000, seed=5)
    out = workdir / "out"
    temp = workdir / "temp"
    temp.mkdir()
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "pktmask_gui", "process", str(src), "-o", str(out),
                             "--dedup", "--temp-dir", str(temp)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(temp.glob("pktmask_pipeline_*")):
        time.sleep(0.02)
    assert any(temp.glob("pktmask_pipeline_*")), "the job never started"
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert list(temp.iterdir()) == []
    assert not out.exists() or [p for p in out.rglob("*")] == []


def test_bad_key_file_is_a_usage_error_before_anything_is_created(workdir):
    src = workdir / "in.pcap"
    generate(src, packets=10, seed=1)
    bad = workdir / "short.key"
    bad.write_bytes(b"0123")
    for key in (bad, workdir / "missing.key"):
        proc = cli("process", src, "-o", workdir / "out", "--anonymize", "--key-file", key)
        assert proc.returncode == 2 and "cannot use the key file" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (workdir / "out").exists()


def _dns_payloads(path):
    """UDP payloads of plain Ethernet/IPv4 frames from port 53, in order."""
    from pktmask_gui.capture import CaptureReader

    out = []
    with CaptureReader(path) as reader:
        for batch in reader.batches():
            for data, *_ in batch:
                if data[12:14] == b"\x08\x00" and data[14] == 0x45 and data[23] == 17 and data[34:36] == b"\x00\x35":
                    out.append(data[42:])
    return out


def test_no_payload_addresses_leaves_dns_answers_alone(workdir):
    src = workdir / "in.pcap"
    generate(src, packets=600, seed=4)
    before = _dns_payloads(src)
    assert before, "the generated capture holds DNS answers"
    for extra, same in (([], False), (["--no-payload-addresses"], True)):
        out = workdir / f"out{len(extra)}"
        proc = cli("process", src, "-o", out, "--anonymize", *extra, "--temp-dir", workdir)
        assert proc.returncode == 0, proc.stderr
        after = _dns_payloads(out / "in-sanitized.pcap")
        assert len(after) == len(before)
        assert (after == before) is same


def test_a_frame_it_cannot_read_is_zeroed_passed_with_allow_uninspected_or_fails_the_file_with_strict(workdir):
    from pktmask_gui import sampleconv, samplegen as sg

    good = sg.tcp4_frame("10.0.0.1", "10.0.0.2", 40000, 443, 1, 1, sg.ACK, b"data")
    odd = sg.eth("02:00:00:00:00:02", "02:00:00:00:00:01", 0x8100, sg.vlan(9, 0x7878, b"secret" * 8))
    src = workdir / "odd.pcap"
    sampleconv.write_pcap(src, [good, odd, good])
    ok = cli("process", src, "-o", workdir / "a", "--anonymize", "--mask", "--json", "--temp-dir", workdir)
    assert ok.returncode == 0, ok.stderr
    (entry,) = json.loads(ok.stdout)["files"]
    assert entry["packets_out"] == 3 and "zeroed after the last header understood" in entry["warnings"][0]
    assert b"secret" not in Path(entry["output"]).read_bytes()
    passed = cli("process", src, "-o", workdir / "b", "--mask", "--allow-uninspected", "--json")
    assert passed.returncode == 0 and b"secret" in Path(json.loads(passed.stdout)["files"][0]["output"]).read_bytes()
    strict = cli("process", src, "-o", workdir / "c", "--anonymize", "--strict", "--json")
    assert strict.returncode == 1
    (entry,) = json.loads(strict.stdout)["files"]
    assert entry["error_kind"] == "uninspectable" and "frame 2" in entry["error"] and entry["output"] is None
    assert not list((workdir / "c").glob("*.pcap"))
    both = cli("process", src, "-o", workdir / "d", "--mask", "--strict", "--allow-uninspected")
    assert both.returncode == 2 and "contradict" in both.stderr
