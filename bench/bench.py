#!/usr/bin/env python3
"""Speed and memory of pktmask-gui, against a pure-Python copy loop timed in the same run.

    python3 bench/bench.py                      # 200,000 packets, every operation alone and all three
    python3 bench/bench.py --packets 1000000    # the issue's reference size
    python3 bench/bench.py --growth             # peak RSS at 200k vs 1M packets (all three operations)
    python3 bench/bench.py --parallel           # two files, --jobs 1 vs --jobs 2, all three operations

Everything is timed as a whole CLI process (`python -m pktmask_gui process ...`, start-up included); peak RSS
is that of the largest process of the run (the CLI or a job's child), sampled every 20 ms with psutil.
The capture comes from the project's own seeded generator (pktmask_gui.samplegen): TLS, HTTP, DNS, ICMP,
IPv6, VLAN and ~5% duplicates. Needs nothing but the project itself.
"""
from __future__ import annotations

import argparse
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pktmask_gui.samplegen import generate  # noqa: E402

COPY_LOOP = r"""
import struct, sys
rd = open(sys.argv[1], "rb"); wr = open(sys.argv[2], "wb")
head = rd.read(24); wr.write(head)
e = "<" if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
unpack = struct.Struct(e + "IIII").unpack
read, write = rd.read, wr.write
while True:
    h = read(16)
    if len(h) < 16:
        break
    caplen = unpack(h)[2]
    write(h); write(read(caplen))
wr.close()
"""


def run_measured(cmd: list[str], env=None) -> tuple[float, int]:
    """Wall time and peak RSS (bytes) of the largest process in the command's process tree."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            for p in [ps] + ps.children(recursive=True):
                try:
                    peak = max(peak, p.memory_info().rss)
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        time.sleep(0.02)
    elapsed = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    return elapsed, peak


def cli(inputs: list[Path], out: Path, ops: list[str], jobs: int = 1) -> list[str]:
    return [sys.executable, "-m", "pktmask_gui", "process", *map(str, inputs), "-o", str(out), "-q",
            "--jobs", str(jobs), *[f"--{op}" for op in ops]]


def bench_env(work: Path) -> dict:
    env = dict(os.environ)
    env["PKTMASK_CONFIG_DIR"] = str(work / "config")      # never the user's settings or key
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def make_capture(work: Path, packets: int, seed: int = 1, name: str | None = None) -> Path:
    path = work / (name or f"bench-{packets}.pcap")
    if not path.exists():
        t0 = time.perf_counter()
        generate(path, packets=packets, seed=seed)
        print(f"generated {path.name}: {packets:,} packets, {path.stat().st_size / 1e6:.0f} MB "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}")


def row(name, packets, size, elapsed, rss, floor_pps=None):
    pps = packets / elapsed
    ratio = f"{pps / floor_pps:5.2f}" if floor_pps else "  -  "
    print(f"{name:<28} {pps:>12,.0f} {size / elapsed / 1e6:>8.1f} {rss / 2**20:>9.0f} {ratio:>8}  ({elapsed:.2f} s)",
          flush=True)
    return pps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--ops", default="dedup,anonymize,mask", help="operations to time alone (comma list)")
    ap.add_argument("--growth", action="store_true", help="peak RSS at 200k vs --packets (default 1M)")
    ap.add_argument("--parallel", action="store_true", help="two files: --jobs 1 vs --jobs 2")
    ap.add_argument("--workdir", help="keep generated captures here between runs (default: a temp dir)")
    args = ap.parse_args()

    from pktmask_gui.stages import operations

    available = [cls.name for cls in operations()]
    ops = [op for op in args.ops.split(",") if op in available]
    keep = Path(args.workdir) if args.workdir else None
    ctx = tempfile.TemporaryDirectory(prefix="pktmask_bench_") if keep is None else None
    work = keep or Path(ctx.name)
    work.mkdir(parents=True, exist_ok=True)
    env = bench_env(work)
    print(f"machine: {machine()}")
    try:
        if args.growth:
            big = args.packets if args.packets > 200_000 else 1_000_000
            print(f"\n{'capture':<28} {'peak RSS MB':>12}   (all operations: {', '.join(available)})")
            peaks = {}
            for n in (200_000, big):
                src = make_capture(work, n)
                out = work / f"out-growth-{n}"
                _, peaks[n] = run_measured(cli([src], out, available), env)
                print(f"{n:>12,} packets{'':<11} {peaks[n] / 2**20:>12.0f}", flush=True)
            print(f"growth: {(peaks[big] - peaks[200_000]) / 2**20:.0f} MB (goal: <= 25 MB; peak goal <= 150 MB)")
            return 0
        if args.parallel:
            a = make_capture(work, args.packets, seed=1, name=f"par-a-{args.packets}.pcap")
            b = make_capture(work, args.packets, seed=2, name=f"par-b-{args.packets}.pcap")
            one, _ = run_measured(cli([a, b], work / "out-j1", available, jobs=1), env)
            two, _ = run_measured(cli([a, b], work / "out-j2", available, jobs=2), env)
            print(f"two files x {args.packets:,} packets, all operations: --jobs 1 {one:.2f} s, --jobs 2 {two:.2f} s,"
                  f" speed-up {one / two:.2f}x (goal >= 1.7x on 2 cores)")
            return 0

        src = make_capture(work, args.packets)
        size = src.stat().st_size
        print(f"\n{'run':<28} {'packets/s':>12} {'MB/s':>8} {'peak MB':>9} {'ratio':>8}")
        elapsed, rss = run_measured([sys.executable, "-c", COPY_LOOP, str(src), str(work / "copy.pcap")], env)
        floor = row("copy loop (floor)", args.packets, size, elapsed, rss)
        for op in ops:
            elapsed, rss = run_measured(cli([src], work / f"out-{op}", [op]), env)
            row(op, args.packets, size, elapsed, rss, floor)
        if len(ops) > 1:
            elapsed, rss = run_measured(cli([src], work / "out-all", ops), env)
            row("+".join(ops), args.packets, size, elapsed, rss, floor)
        print("\nratio = packets/s of the run / packets/s of the copy loop in this run "
              "(goals: dedup >= 0.5, anonymize >= 0.25, mask >= 0.12, all >= 0.10)")
    finally:
        if ctx is not None:
            ctx.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
