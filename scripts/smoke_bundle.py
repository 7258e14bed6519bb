#!/usr/bin/env python3
"""Smoke test of the built bundle (``dist/pktmask-gui/``), as CI runs it after scripts/build_bundle.py.

The bundle runs with an empty environment (no PYTHONPATH, no virtualenv, a PATH of /usr/bin:/bin, a fresh
HOME, config, temp and runtime folder), from a folder outside the clone:

1. ``pktmask-gui --version``;
2. ``pktmask-gui process --dedup --anonymize --mask --pseudonymize-names`` on the samples the bundle ships (their
   host names need the Public Suffix List the bundle carries), two jobs side by side
   (each in a child process: the frozen multiprocessing path), checked with the project's own reader: every
   output reads to its end with the packet count the run reported, and no IPv4/IPv6 address of an input's
   IP headers is left in its output's;
3. the window, off-screen: started with a capture, a second launch hands it another (the single-instance
   socket answers, so the window is up), then SIGTERM closes it: exit 0, nothing left in the temp folder.

Prints the timings; exits 1 on the first failure.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "dist" / "pktmask-gui"
EXE = BUNDLE / ("pktmask-gui.exe" if os.name == "nt" else "pktmask-gui")


def fail(text: str) -> None:
    print(f"smoke_bundle: FAILED: {text}", flush=True)
    sys.exit(1)


def say(text: str) -> None:
    print(f"smoke_bundle: {text}", flush=True)


def clean_env(root: Path, **extra) -> dict:
    for name in ("home", "config", "tmp", "run"):
        (root / name).mkdir(exist_ok=True)
    (root / "run").chmod(0o700)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(root / "home"), "LANG": "C.UTF-8",
           "PKTMASK_CONFIG_DIR": str(root / "config"), "TMPDIR": str(root / "tmp"),
           "XDG_RUNTIME_DIR": str(root / "run")}
    env.update(extra)
    return env


def ip_addresses(path: Path) -> set:
    """Source and destination addresses of every IP header our own walker finds."""
    from pktmask_gui.capture import CaptureReader
    from pktmask_gui.frames import walk

    found = set()
    with CaptureReader(path) as reader:
        for batch in reader.batches():
            for rec in batch:
                if rec[1] < 0:
                    continue
                data = rec[0]
                for ip in walk(data, rec[1])[2]:
                    size = 4 if ip[1] == 4 else 16
                    found.add(bytes(data[ip[6]:ip[6] + size]))
                    found.add(bytes(data[ip[7]:ip[7] + size]))
    return found


def packets(path: Path) -> int:
    from pktmask_gui.capture import CaptureReader

    with CaptureReader(path) as reader:
        return sum(sum(1 for rec in batch if rec[1] >= 0) for batch in reader.batches())


def main() -> int:
    sys.path.insert(0, str(REPO))
    if not EXE.exists():
        fail(f"{EXE} is missing: build it first with python3 scripts/build_bundle.py")
    samples = BUNDLE / "_internal" / "pktmask_gui" / "resources" / "samples"
    inputs = [samples / "sample.pcapng", samples / "sample.pcap"]
    for path in inputs + [BUNDLE / "_internal" / "pktmask_gui" / "resources" / "style.qss",
                          BUNDLE / "_internal" / "pktmask_gui" / "resources" / "icons" / "pktmask.png"]:
        if not path.is_file():
            fail(f"the bundle lacks {path.relative_to(BUNDLE)}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pktmask_smoke_") as tmp:
        root = Path(tmp)
        env = clean_env(root)

        t = time.monotonic()
        run = subprocess.run([str(EXE), "--version"], env=env, cwd=root, capture_output=True, text=True, timeout=60)
        if run.returncode != 0 or not run.stdout.startswith("pktmask-gui "):
            fail(f"--version: exit {run.returncode}, {run.stdout!r} {run.stderr!r}")
        say(f"--version: {run.stdout.strip()} ({time.monotonic() - t:.2f} s)")

        t = time.monotonic()
        out = root / "out"
        # compressed copies: the bundle must carry the zstd and lz4 libraries, imported only when needed
        import gzip
        import lz4.frame
        try:
            from compression import zstd
        except ImportError:
            from backports import zstd
        packed = [root / "sample.pcap.gz", root / "sample.pcap.zst", root / "sample.pcap.lz4"]
        raw = inputs[1].read_bytes()
        packed[0].write_bytes(gzip.compress(raw))
        packed[1].write_bytes(zstd.compress(raw))
        packed[2].write_bytes(lz4.frame.compress(raw))
        # host names too: the bundle must carry the Public Suffix List and the QUIC / TLS name modules
        run = subprocess.run([str(EXE), "process", "--dedup", "--anonymize", "--mask", "--pseudonymize-names",
                              "--jobs", "2", "--json", *map(str, inputs + packed), "-o", str(out)],
                             env=env, cwd=root, capture_output=True, text=True, timeout=300)
        if run.returncode != 0:
            fail(f"process: exit {run.returncode}: {run.stderr.strip()}")
        report = json.loads(run.stdout)
        for item in report["files"]:
            output = Path(item["output"])
            if item["status"] != "ok" or not output.is_file():
                fail(f"process: {item}")
            if not item["stages"].get("names", {}).get("names_pseudonymized"):
                fail(f"process: {output.name}: no host name was pseudonymized ({item['stages'].get('names')})")
            if packets(output) != item["packets_out"]:
                fail(f"{output.name}: our reader counts {packets(output)} packets, the run said {item['packets_out']}")
            leaked = ip_addresses(Path(item["input"])) & ip_addresses(output)
            if leaked:
                fail(f"{output.name} still holds {len(leaked)} of the input's IP addresses")
        say(f"process --dedup --anonymize --mask --pseudonymize-names --jobs 2: {len(report['files'])} outputs "
            f"verified ({time.monotonic() - t:.2f} s)")

        gui_env = dict(env, QT_QPA_PLATFORM="offscreen")
        t = time.monotonic()
        window = subprocess.Popen([str(EXE), str(inputs[0])], env=gui_env, cwd=root,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # A launch from the file manager comes after the window is up: wait until it listens (its
            # socket in the runtime folder), or two launches at once race for the one window.
            deadline = time.monotonic() + 60
            while not list((root / "run").glob("pktmask-gui-*.sock")) and window.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            second = subprocess.run([str(EXE), str(inputs[1])], env=gui_env, cwd=root, capture_output=True,
                                    text=True, timeout=60)
            up = time.monotonic() - t
            if second.returncode != 0 or window.poll() is not None:
                fail(f"a second launch did not hand its capture to the window (exit {second.returncode}, "
                     f"window {'running' if window.poll() is None else 'exited'}): {second.stderr.strip()}")
            say(f"window open off-screen, a second launch handed it a capture ({up:.2f} s after the start)")
            window.send_signal(signal.SIGTERM)
            code = window.wait(30)
        finally:
            if window.poll() is None:
                window.kill()
                window.wait()
        stderr = window.stderr.read()
        if code != 0 or "Traceback" in stderr:
            fail(f"the window did not close cleanly: exit {code}: {stderr.strip()}")
        left = [p.name for p in (root / "tmp").iterdir()]
        if left:
            fail(f"left behind in the temp folder: {left}")
        say("window closed cleanly (SIGTERM: exit 0, nothing left in the temp folder)")
    say(f"passed in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
