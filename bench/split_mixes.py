#!/usr/bin/env python3
"""One file on two cores, on captures unlike the generator's usual mix: --jobs 1 against --jobs 2.

    python3 bench/split_mixes.py --workdir /tmp/benchw [--packets 1000000] [--only oddities,scans,downloads]

Makes (once, kept in --workdir) three captures that once kept the first pass or the split from paying off:
- oddities: pcapng, 10 % of the wild generator's oddities (hundreds of unknown EtherTypes, so the counts of
  zeroed frames by reason fill their table);
- scans: pcap, 30 % Internet background scans (hundreds of thousands of short directions);
- downloads: the usual mix with eight long TLS downloads open from the first frames to the last, 30 % of
  the packets (directions open across the boundary, which the leader walks again).
Then runs `python -m pktmask_gui process FILE -o DIR --dedup --anonymize --mask --jobs N --debug` for N = 1
and 2, one after the other, and prints the wall times, the speed-up, whether the outputs are identical,
and the first pass's line of the debug log (whether the follower's half became the leader's).
"""
from __future__ import annotations

import argparse
import filecmp
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_downloads(path: Path, packets: int, share: float = 0.3, seed: int = 9) -> None:
    """The generator's mix with eight long TLS downloads interleaved (``share`` of the packets)."""
    from pktmask_gui import samplegen as sg
    from pktmask_gui.capture import make_pcap_header
    from pktmask_gui.capturewriter import CaptureWriter

    rng = random.Random(seed)
    flows = []
    for k in range(8):
        c, s, port = f"10.50.{k}.2", f"198.51.100.{k + 1}", 50000 + k
        hello = sg.tls_client_hello(f"bulk{k}.example.test", bytes(32))
        server = sg.tls_record(0x16, sg.tls_handshake(2, b"\x03\x03" + bytes(32) + b"\x00\x13\x01\x00\x00\x00"))
        start = [sg.tcp4_frame(c, s, port, 443, 1000, 0, sg.SYN),
                 sg.tcp4_frame(s, c, 443, port, 5000, 1001, sg.SYN | sg.ACK),
                 sg.tcp4_frame(c, s, port, 443, 1001, 5001, sg.PSH | sg.ACK, hello),
                 sg.tcp4_frame(s, c, 443, port, 5001, 1001 + len(hello), sg.PSH | sg.ACK, server)]
        flows.append({"c": c, "s": s, "port": port, "cseq": 1001 + len(hello), "sseq": 5001 + len(server),
                      "start": start, "n": 0})
    body = bytes(rng.randrange(256) for _ in range(1400))

    def next_frame(f: dict) -> bytes:
        f["n"] += 1
        if f["n"] % 4 == 0:
            return sg.tcp4_frame(f["c"], f["s"], f["port"], 443, f["cseq"], f["sseq"], sg.ACK)
        record = sg.tls_record(0x17, body[:1375])
        frame = sg.tcp4_frame(f["s"], f["c"], 443, f["port"], f["sseq"], f["cseq"], sg.PSH | sg.ACK, record)
        f["sseq"] += len(record)
        return frame

    with open(path, "wb") as fh:
        writer = CaptureWriter(fh, "pcap", make_pcap_header(1, 262144))
        t, batch = 1_700_000_000_000_000, []
        for frame in [fr for f in flows for fr in f["start"]]:
            batch.append((frame, 1, t, len(frame), 0, None))
            t += 10
        for _, frame, _ in sg.iter_frames(int(packets * (1 - share)), seed=5):
            batch.append((frame, 1, t, len(frame), 0, None))
            t += 10
            if rng.random() < share / (1 - share):
                extra = next_frame(flows[rng.randrange(8)])
                batch.append((extra, 1, t, len(extra), 0, None))
                t += 10
            if len(batch) >= 10000:
                writer.write_batch(batch)
                batch = []
        writer.write_batch(batch)
        writer.close()


def make(kind: str, path: Path, packets: int) -> None:
    from pktmask_gui.samplegen import generate

    if kind == "oddities":
        generate(path, packets=packets, seed=7, fmt="pcapng", probe_ratio=0.0, wild_ratio=0.1)
    elif kind == "scans":
        generate(path, packets=packets, seed=7, fmt="pcap", probe_ratio=0.3, wild_ratio=0.05)
    else:
        make_downloads(path, packets)


def run(src: Path, out: Path, jobs: int) -> tuple[float, str]:
    out.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pktmask_gui", "process", str(src), "-o", str(out), "--dedup",
                           "--anonymize", "--mask", "--jobs", str(jobs), "--debug"],
                          capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"{src.name}, --jobs {jobs}: exit code {done.returncode}\n{done.stderr[-2000:]}")
    return time.monotonic() - t, done.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="where the captures are made and kept")
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--only", default="oddities,scans,downloads")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    for kind in [k.strip() for k in args.only.split(",") if k.strip()]:
        src = work / f"mix-{kind}-{args.packets}.{'pcapng' if kind == 'oddities' else 'pcap'}"
        if not src.exists():
            make(kind, src, args.packets)
        with tempfile.TemporaryDirectory(prefix="pktmask_bench_split_", dir=work) as tmp:
            one, _ = run(src, Path(tmp) / "one", 1)
            two, log = run(src, Path(tmp) / "two", 2)
            outs = [sorted((Path(tmp) / d).iterdir()) for d in ("one", "two")]
            same = len(outs[0]) == len(outs[1]) == 1 and filecmp.cmp(outs[0][0], outs[1][0], shallow=False)
        first = re.search(r"(First pass: .*|The first pass reads the second half too: .*)", log)
        print(f"{kind:10s} {src.stat().st_size / 1e6:6.0f} MB  --jobs 1 {one:6.2f} s  --jobs 2 {two:6.2f} s  "
              f"{one / two:4.2f}x  {'identical' if same else 'OUTPUTS DIFFER'}")
        print(f"           {first[1] if first else 'no first pass on two cores'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
