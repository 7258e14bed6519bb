#!/usr/bin/env python3
"""Speed and memory of pktmask-gui, against a pure-Python copy loop timed in the same run.

    python3 bench/bench.py                      # 200,000 packets, every operation alone and all three
    python3 bench/bench.py --packets 1000000    # the issue's reference size
    python3 bench/bench.py --wild 0.2           # the same with real-world oddities mixed in (samplegen's
                                                # wild_ratio: tunnels, fragments, flow export, DNS from tunnel
                                                # ports, frames no walker reads): no run may fail
    python3 bench/bench.py --growth             # peak RSS at 200k, 600k and 1M packets: each operation alone
                                                # and all three, on the usual mix and on one with 100,000+
                                                # distinct addresses (one run each unless --repeat is given)
    python3 bench/bench.py --parallel           # two files, --jobs 1 vs --jobs 2, all three operations
    python3 bench/bench.py --many-small [FOLDER] # many small captures (default: ../shared/corpus-wild), all three
                                                # operations: --jobs 1 vs --jobs 2, and the window (2 jobs)
    python3 bench/bench.py --split --packets 1000000   # one file, --jobs 1 vs --jobs N (--split-jobs, default
                                                # the cores), each operation alone and all three; outputs compared
    python3 bench/bench.py --cancel             # Ctrl-C mid-file: time to exit, leftovers
    python3 bench/bench.py --compressed         # the capture as .pcap.gz and .pcap.zst, all three operations,
                                                # as a ratio to the same run on the plain file
    python3 bench/bench.py --stage-choice       # compressed input: decompressing on every pass (what the
                                                # engine does) vs once into a temp file, then plain passes
    python3 bench/bench.py --levels [FILE ...]  # output compression levels: ratio and speed of each (default
                                                # files: the capture and its output after all three operations)
    python3 bench/bench.py --names              # host-name pseudonyms: Anonymize IPs and all three operations,
                                                # each without and with --pseudonymize-names
    add --repeat N (default 3; medians) and --workdir DIR (keep the generated captures between runs);
    --growth --format pcapng measures pcapng captures

Everything is timed as a whole CLI process (`python -m pktmask_gui process ...`, start-up included); peak RSS
is that of the largest process of the run (the CLI or a job's child), sampled every 20 ms with psutil (the
kernel's ru_maxrss would count the bench's own pages in a forked child before its exec). CPU time (user +
system of the whole process tree) is shown beside wall time: on a shared machine it is the steadier of the two.
The capture comes from the project's own seeded generator (pktmask_gui.samplegen): TLS, HTTP, DNS, ICMP,
IPv6, VLAN and ~5% duplicates; the growth rows add one with Internet background noise (``probe_ratio``
0.99: ~110,000 distinct addresses in 200,000 packets, ~550,000 in a million). Needs nothing but the project.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import shutil
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


def run_measured(cmd: list[str], env=None, ok_codes=(0,)) -> tuple[float, int, float]:
    """Wall time, peak RSS (bytes) of the largest process in the command's tree, and the tree's CPU time
    (user + system of every process it waited for). CPU time barely moves with other load on the machine,
    wall time does: the ratios are given for both."""
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
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
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode not in ok_codes:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    return elapsed, peak, cpu


def cli(inputs: list[Path], out: Path, ops: list[str], jobs: int = 1) -> list[str]:
    return [sys.executable, "-m", "pktmask_gui", "process", *map(str, inputs), "-o", str(out), "-q",
            "--jobs", str(jobs), *[f"--{op}" for op in ops]]


def bench_env(work: Path) -> dict:
    env = dict(os.environ)
    env["PKTMASK_CONFIG_DIR"] = str(work / "config")      # never the user's settings or key
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


PROBES = 0.99                   # probe_ratio of the growth rows' many-address capture


def make_capture(work: Path, packets: int, seed: int = 1, name: str | None = None, probes: float = 0.0,
                 fmt: str = "pcap", wild: float = 0.0) -> Path:
    kind = (f"-probes{probes}" if probes else "") + (f"-wild{wild}" if wild else "")
    path = work / (name or f"bench-{packets}{kind}.{fmt}")
    if not path.exists():
        t0 = time.perf_counter()
        generate(path, packets=packets, seed=seed, fmt=fmt, probe_ratio=probes, wild_ratio=wild)
        print(f"generated {path.name}: {packets:,} packets, {path.stat().st_size / 1e6:.0f} MB "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}")


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def median(values):
    return statistics.median(values)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--ops", default="dedup,anonymize,mask", help="operations to time alone (comma list)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="runs of each measurement; medians are shown (default 3; --growth: 1)")
    ap.add_argument("--format", choices=("pcap", "pcapng"), default="pcap", help="--growth: of the captures")
    ap.add_argument("--growth", action="store_true",
                    help="peak RSS at 200k, 600k and --packets (default 1M), each operation and all three")
    ap.add_argument("--parallel", action="store_true", help="two files: --jobs 1 vs --jobs 2")
    ap.add_argument("--many-small", nargs="?", const="", metavar="FOLDER",
                    help="many small captures: --jobs 1 vs --jobs 2, and the window")
    ap.add_argument("--split", action="store_true", help="one file: --jobs 1 vs --jobs N (its segments)")
    ap.add_argument("--split-jobs", type=int, default=psutil.cpu_count() or 2, help="N for --split")
    ap.add_argument("--cancel", action="store_true", help="time from Ctrl-C to exit of a CLI run mid-file")
    ap.add_argument("--compressed", action="store_true", help=".pcap.gz and .pcap.zst vs plain, all operations")
    ap.add_argument("--stage-choice", action="store_true",
                    help="compressed input: decompress on each pass vs once into a temp file")
    ap.add_argument("--levels", nargs="*", metavar="FILE", help="compression levels: ratio and speed")
    ap.add_argument("--names", action="store_true", help="the cost of --pseudonymize-names")
    ap.add_argument("--wild", type=float, default=0.0, metavar="RATIO",
                    help="throughput rows: share of real-world oddity sessions in the capture (0.2 is a rough mix)")
    ap.add_argument("--cluster", action="store_true",
                    help="8 files: a local Dask scheduler with two workers (process --scheduler) vs --jobs 2")
    ap.add_argument("--workdir", help="keep generated captures here between runs (default: a temp dir)")
    args = ap.parse_args()
    if args.repeat is None:
        args.repeat = 1 if args.growth else 3

    from pktmask_gui.stages import operations

    available = [cls.name for cls in operations()]
    ops = [op for op in args.ops.split(",") if op in available]
    keep = Path(args.workdir) if args.workdir else None
    ctx = tempfile.TemporaryDirectory(prefix="pktmask_bench_") if keep is None else None
    work = keep or Path(ctx.name)
    work.mkdir(parents=True, exist_ok=True)
    env = bench_env(work)
    print(f"machine: {machine()}; {load()} at start; {args.repeat} run(s) each, medians")
    try:
        if args.growth:
            return growth(work, env, args, available)
        if args.parallel:
            return parallel(work, env, args, available)
        if args.many_small is not None:
            return many_small(work, env, args, available)
        if args.split:
            return split(work, env, args, ops)
        if args.cancel:
            return cancel_latency(work, env, args, available)
        if args.compressed:
            return compressed(work, env, args, available)
        if args.stage_choice:
            return stage_choice(work, env, args, available)
        if args.levels is not None:
            return levels(work, env, args, available)
        if args.names:
            return throughput(work, env, args, [], names=True)
        if args.cluster:
            return cluster(work, env, args, available)
        return throughput(work, env, args, ops)
    finally:
        print(f"({load()} at the end)")
        if ctx is not None:
            ctx.cleanup()


def throughput(work: Path, env: dict, args, ops: list[str], names: bool = False) -> int:
    src = make_capture(work, args.packets, wild=args.wild)
    size = src.stat().st_size
    runs = [("copy loop (floor)", None)] + [(op, [op]) for op in ops]
    if len(ops) > 1:
        runs.append(("+".join(ops), ops))
    if names:       # flags after the operations' (cli() turns each into --NAME)
        runs += [("anonymize", ["anonymize"]), ("anonymize, names", ["anonymize", "pseudonymize-names"]),
                 ("all three", ["dedup", "anonymize", "mask"]),
                 ("all three, names", ["dedup", "anonymize", "mask", "pseudonymize-names"])]
    results = {name: [] for name, _ in runs}
    for _ in range(args.repeat):         # interleaved, so that a load change hits every row alike
        for name, op_list in runs:
            if op_list is None:
                copy = work / "copy.pcap"
                results[name].append(run_measured([sys.executable, "-c", COPY_LOOP, str(src), str(copy)], env))
                copy.unlink()
            else:
                out = work / f"out-{name}"
                results[name].append(run_measured(cli([src], out, op_list), env))
                shutil.rmtree(out)
    floor_runs = results["copy loop (floor)"]
    print(f"\n{'run':<26} {'packets/s':>10} {'MB/s':>7} {'peak MB':>8} {'wall s':>7} {'ratio':>6} "
          f"{'cpu s':>7} {'cpu ratio':>9}")
    for name, _ in runs:
        rs = results[name]
        wall = median(r[0] for r in rs)
        cpu = median(r[2] for r in rs)
        peak = max(r[1] for r in rs)
        # ratio per run against the copy loop of the same round, then the median
        ratio = median(f[0] / r[0] for f, r in zip(floor_runs, rs))
        cpu_ratio = median(f[2] / r[2] for f, r in zip(floor_runs, rs))
        print(f"{name:<26} {args.packets / wall:>10,.0f} {size / wall / 1e6:>7.1f} {peak / 2**20:>8.0f} "
              f"{wall:>7.2f} {ratio:>6.2f} {cpu:>7.2f} {cpu_ratio:>9.2f}", flush=True)
    if names:
        for base, with_names in (("anonymize", "anonymize, names"), ("all three", "all three, names")):
            wall = median(w[0] / b[0] for b, w in zip(results[base], results[with_names]))
            cpu = median(w[2] / b[2] for b, w in zip(results[base], results[with_names]))
            print(f"{with_names}: {wall:.2f}x the time of {base} (CPU {cpu:.2f}x), per round, medians")
    print("\nratio = packets/s of the run / packets/s of the copy loop in the same round (wall clock; "
          "goals: dedup >= 0.5, anonymize >= 0.25, mask >= 0.12, all >= 0.10);\ncpu ratio = the same with "
          "CPU seconds of the whole process tree (steadier when other work shares the machine).")
    return 0


def growth(work: Path, env: dict, args, available: list[str]) -> int:
    """Peak RSS of each operation alone and all three, at three sizes of two captures: what grows with the
    packets (or the addresses) shows as the difference between the first and the last size."""
    big = args.packets if args.packets > 200_000 else 1_000_000
    sizes = sorted({200_000, (200_000 + big) // 2 // 100_000 * 100_000, big})
    runs = [(op, [op]) for op in available] + [("all three", available)]
    print(f"\npeak RSS in MB (largest of {args.repeat} run(s)), {args.format}; goals: peak <= 150 MB, growth from "
          f"{sizes[0]:,} to {sizes[-1]:,} packets <= 25 MB")
    print(f"{'capture':<24} {'operation':<11}" + "".join(f"{n:>10,}" for n in sizes) + f"{'growth':>8}")
    worst = highest = 0
    for label, probes in (("usual mix", 0.0), ("100,000+ addresses", PROBES)):
        captures = {n: make_capture(work, n, probes=probes, fmt=args.format) for n in sizes}
        for name, ops in runs:
            peaks = []
            for n in sizes:
                out = work / f"out-growth-{n}"
                peak = 0
                for _ in range(args.repeat):
                    peak = max(peak, run_measured(cli([captures[n]], out, ops), env)[1])
                    shutil.rmtree(out)
                peaks.append(peak / 2**20)
            worst, highest = max(worst, peaks[-1] - peaks[0]), max(highest, *peaks)
            print(f"{label:<24} {name:<11}" + "".join(f"{p:>10.0f}" for p in peaks)
                  + f"{peaks[-1] - peaks[0]:>8.0f}", flush=True)
    print(f"highest peak: {highest:.0f} MB; largest growth: {worst:.0f} MB")
    return 0


def parallel(work: Path, env: dict, args, available: list[str]) -> int:
    a = make_capture(work, args.packets, seed=1, name=f"par-a-{args.packets}.pcap")
    b = make_capture(work, args.packets, seed=2, name=f"par-b-{args.packets}.pcap")
    ones, twos = [], []
    for _ in range(args.repeat):
        for jobs, into in ((1, ones), (2, twos)):
            out = work / f"out-j{jobs}"
            into.append(run_measured(cli([a, b], out, available, jobs=jobs), env))
            shutil.rmtree(out)
    one, two = median(r[0] for r in ones), median(r[0] for r in twos)
    speedups = [x[0] / y[0] for x, y in zip(ones, twos)]
    print(f"two files x {args.packets:,} packets, all operations: --jobs 1 {one:.2f} s, --jobs 2 {two:.2f} s, "
          f"speed-up {median(speedups):.2f}x (runs: {', '.join(f'{x:.2f}' for x in speedups)}; goal >= 1.7x on "
          f"2 idle cores; another busy process on the machine lowers it)")
    # cores kept busy = CPU seconds / wall seconds: ~1 for --jobs 1, ~2 for --jobs 2 when two cores are free
    print(f"cores used: --jobs 1 {median(r[2] / r[0] for r in ones):.2f}, --jobs 2 "
          f"{median(r[2] / r[0] for r in twos):.2f} (of {psutil.cpu_count()}; {load()})")
    return 0


WILD = REPO.parent / "shared" / "corpus-wild"


def many_small(work: Path, env: dict, args, available: list[str]) -> int:
    """A folder of many small captures, all three operations: --jobs 1 vs --jobs 2 (worker processes started
    once per run, workerpool.py), then the window on the same folder with two parallel jobs (bench/ui_batch.py:
    its wall time from Start to the last result, and the longest stall of its event loop, the summary's
    opening and the adding of 10,000 files included)."""
    folder = Path(args.many_small) if args.many_small else WILD
    if not folder.is_dir():
        folder = work / "small"
        folder.mkdir(exist_ok=True)
        for i in range(300):
            if not (folder / f"small-{i:03d}.pcap").exists():
                generate(folder / f"small-{i:03d}.pcap", packets=60, seed=i)
    files = sum(1 for p in folder.rglob("*") if p.is_file() and p.suffix in (".pcap", ".pcapng", ".cap"))
    env = dict(env, TMPDIR=str(work))               # the jobs' temp dirs: checked for leftovers below
    runs: dict[int, list] = {1: [], 2: []}
    # The outputs stay until every run is done: on ext4 without a journal, inodes freed in the last minute slow
    # every file creation in their group (a run right after the removal of 681 outputs took up to 2x as long).
    outs = []
    for r in range(args.repeat):
        for jobs in (1, 2):
            outs.append(work / f"out-small-{r}-j{jobs}")
            runs[jobs].append(run_measured(cli([folder], outs[-1], available, jobs=jobs), env, ok_codes=(0, 1)))
    one, two = median(r[0] for r in runs[1]), median(r[0] for r in runs[2])
    speedups = [x[0] / y[0] for x, y in zip(runs[1], runs[2])]
    print(f"{files} small captures ({folder}), all operations: --jobs 1 {one:.2f} s, --jobs 2 {two:.2f} s, "
          f"speed-up {median(speedups):.2f}x (runs: {', '.join(f'{x:.2f}' for x in speedups)}; goal >= 1.5x)")
    print(f"CPU seconds (the whole process tree): --jobs 1 {median(r[2] for r in runs[1]):.2f}, "
          f"--jobs 2 {median(r[2] for r in runs[2]):.2f}")
    window = subprocess.run([sys.executable, str(REPO / "bench" / "ui_batch.py"), str(folder), "--jobs", "2"],
                            env=env, capture_output=True, text=True)
    for out in outs:                # (after the window's run too: it would pay for their removal)
        shutil.rmtree(out)
    lines = window.stdout.strip().splitlines()
    result = dict(kv.split("=", 1) for kv in lines[-1].split()[1:]) if lines and lines[-1].startswith("RESULT") else {}
    if not result:
        print(f"window run failed:\n{window.stdout[-2000:]}\n{window.stderr[-2000:]}")
        return 1
    for line in lines[:-1]:
        print("window: " + line)
    ratio = float(result["run_s"]) / two
    print(f"window, 2 jobs: {float(result['run_s']):.2f} s = {ratio:.2f}x the CLI's --jobs 2 (goal <= 1.2x); "
          f"longest event-loop stall {result['worst_ms']} ms (goal <= 50 ms; the UI thread's own CPU in the worst "
          f"gap {result['worst_cpu_ms']} ms)")
    left = [p.name for p in work.iterdir() if p.name.startswith("pktmask_") and p.name != "pktmask_bench_"]
    print(f"left behind in the temp dir: {left or 'nothing'}")
    return 0


def split(work: Path, env: dict, args, ops: list[str]) -> int:
    """One file on N cores (segments.py): wall and CPU time, the largest process's peak RSS, outputs equal."""
    src = make_capture(work, args.packets)
    n = args.split_jobs
    print(f"\n{'operations':<26} {'--jobs 1 s':>10} {f'--jobs {n} s':>10} {'speed-up':>9} {'CPU 1':>6} "
          f"{f'CPU {n}':>6} {'peak MB 1':>9} {f'peak MB {n}':>9} {'same':>5}", flush=True)
    for run_ops in [[op] for op in ops] + ([ops] if len(ops) > 1 else []):
        ones, ns, same = [], [], True
        for _ in range(args.repeat):
            outs = []
            for jobs, into in ((1, ones), (n, ns)):
                out = work / f"out-split-j{jobs}"
                into.append(run_measured(cli([src], out, run_ops, jobs=jobs), env))
                outs.append(out)
            a, b = (sorted(o.iterdir()) for o in outs)
            same = same and [x.name for x in a] == [y.name for y in b] and \
                all(filecmp.cmp(x, y, shallow=False) for x, y in zip(a, b))
            for out in outs:
                shutil.rmtree(out)
        one, many = median(r[0] for r in ones), median(r[0] for r in ns)
        gain = median(x[0] / y[0] for x, y in zip(ones, ns))
        print(f"{'+'.join(run_ops):<26} {one:>10.2f} {many:>10.2f} {gain:>8.2f}x "
              f"{median(r[2] for r in ones):>6.1f} {median(r[2] for r in ns):>6.1f} "
              f"{max(r[1] for r in ones) / 2**20:>9.0f} {max(r[1] for r in ns) / 2**20:>9.0f} "
              f"{'yes' if same else 'NO':>5}", flush=True)
    print(f"speed-up: median of the runs' wall-time ratios; CPU: seconds of the whole process tree; peak MB: the "
          f"largest single process; same: outputs byte-identical ({load()})")
    return 0


def cancel_latency(work: Path, env: dict, args, available: list[str]) -> int:
    """Ctrl-C (SIGINT) a CLI run 2 s into a file; time until it has exited; check nothing is left behind."""
    src = make_capture(work, args.packets)
    temp = work / "temp"
    temp.mkdir(exist_ok=True)
    latencies = []
    for _ in range(args.repeat):
        out = work / "out-cancel"
        cmd = cli([src], out, available) + ["--temp-dir", str(temp)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.0)
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        code = proc.wait()
        latencies.append(time.perf_counter() - t0)
        left = [p.name for d in (temp, out) if d.exists() for p in d.iterdir()]
        print(f"exit {code} after {latencies[-1] * 1000:.0f} ms; left behind: {left or 'nothing'}", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    print(f"cancel: median {median(latencies) * 1000:.0f} ms, worst {max(latencies) * 1000:.0f} ms (goal <= 500 ms)")
    return 0


def compressed_copy(src: Path, kind: str) -> Path:
    """``src`` compressed as the standard tools do by default (gzip -6; zstd -3 with its checksum), kept in
    the work dir beside it; made with the codec libraries so that the bench needs no tool installed."""
    from pktmask_gui.compression import _zstd

    path = src.with_name(src.name + {"gzip": ".gz", "zstd": ".zst"}[kind])
    if path.exists():
        return path
    t0 = time.perf_counter()
    tmp = path.with_name(path.name + ".part")
    with open(src, "rb") as fh, open(tmp, "wb") as out:
        if kind == "gzip":
            import zlib
            comp = zlib.compressobj(6, zlib.DEFLATED, 31)
        else:
            zstd = _zstd()
            P = zstd.CompressionParameter
            comp = zstd.ZstdCompressor(options={P.compression_level: 3, P.checksum_flag: 1})
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            out.write(comp.compress(chunk))
        out.write(comp.flush())
    tmp.rename(path)
    print(f"compressed {src.name} -> {path.name} ({path.stat().st_size / 1e6:.0f} MB) in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    return path


def compressed(work: Path, env: dict, args, available: list[str]) -> int:
    """All three operations on the capture plain, as .pcap.gz and as .pcap.zst (outputs compressed as the
    input: the default), interleaved; each a ratio to the plain run of the same round."""
    src = make_capture(work, args.packets)
    runs = [("plain .pcap", src), (".pcap.zst", compressed_copy(src, "zstd")),
            (".pcap.gz", compressed_copy(src, "gzip"))]
    results = {name: [] for name, _ in runs}
    for _ in range(args.repeat):
        for name, path in runs:
            out = work / "out-compressed"
            results[name].append(run_measured(cli([path], out, available), env))
            shutil.rmtree(out)
    plain = results["plain .pcap"]
    print(f"\n{'input (all three operations)':<30} {'MB in':>7} {'wall s':>7} {'ratio':>6} {'cpu s':>7} "
          f"{'cpu ratio':>9} {'peak MB':>8}")
    for name, path in runs:
        rs = results[name]
        ratio = median(r[0] / p[0] for p, r in zip(plain, rs))
        cpu_ratio = median(r[2] / p[2] for p, r in zip(plain, rs))
        print(f"{name:<30} {path.stat().st_size / 1e6:>7.0f} {median(r[0] for r in rs):>7.2f} {ratio:>6.2f} "
              f"{median(r[2] for r in rs):>7.2f} {cpu_ratio:>9.2f} {max(r[1] for r in rs) / 2**20:>8.0f}",
              flush=True)
    print("\nratio = time of the run / time of the plain run in the same round (goal for .pcap.zst: <= 1.2); "
          "cpu = user + system of the whole process tree (the compressing thread included)")
    return 0


def stage_choice(work: Path, env: dict, args, available: list[str]) -> int:
    """What a compressed input costs read as the engine reads it (decompressed on every pass: the pre-scan,
    the main pass) against decompressing it once into a temp file and running the plain passes on that
    (the same output compression in both). One pass (Remove Dupes) and two (all three operations)."""
    src = make_capture(work, args.packets)
    kinds = {"gzip": compressed_copy(src, "gzip"), "zstd": compressed_copy(src, "zstd")}
    print(f"\n{'input':<10} {'operations':<24} {'every pass s':>12} {'temp file s':>12} "
          f"{'(decompress + run)':>19} {'cpu every pass':>15} {'cpu temp file':>14} {'temp MB':>8}")
    for kind, path in kinds.items():
        for ops in ([available[0]], available):
            per_pass, staged, cpu_a, cpu_b, decomp = [], [], [], [], []
            for _ in range(args.repeat):
                out = work / "out-stage"
                wall, _peak, cpu = run_measured(cli([path], out, ops), env)
                shutil.rmtree(out)
                per_pass.append(wall)
                cpu_a.append(cpu)
                temp = work / "stage-copy.pcap"
                cmd = [sys.executable, "-c", DECOMPRESS, str(path), str(temp)]
                d_wall, _p, d_cpu = run_measured(cmd, env)
                wall, _peak, cpu = run_measured(cli([temp], out, ops) + ["--compress", kind], env)
                shutil.rmtree(out)
                size = temp.stat().st_size
                temp.unlink()
                staged.append(d_wall + wall)
                cpu_b.append(d_cpu + cpu)
                decomp.append(d_wall)
            split = f"({median(decomp):.2f} + {median(staged) - median(decomp):.2f})"
            print(f"{kind:<10} {'+'.join(ops):<24} {median(per_pass):>12.2f} {median(staged):>12.2f} "
                  f"{split:>19} "
                  f"{median(cpu_a):>15.2f} {median(cpu_b):>14.2f} {size / 1e6:>8.0f}", flush=True)
    print("\nevery pass = what pktmask-gui does; temp file = decompress once into a file in the same folder "
          "(written and read back through the page cache), then the plain run on it")
    return 0


LEVELS = {"gzip": (1, 3, 6), "zstd": (-1, 1, 3), "lz4": (0, 3)}      # 6 / 3 / 0: the tools' defaults


def levels(work: Path, env: dict, args, available: list[str]) -> int:
    """Compression ratio and speed (MB of input per CPU second, one thread) of each candidate level on the
    given files, or on the generated capture and its output after all three operations (what the engine
    compresses: sanitized, so masked payloads are zeros)."""
    from pktmask_gui.compression import _compressor

    files = [Path(f) for f in args.levels]
    if not files:
        src = make_capture(work, args.packets)
        out = work / "out-levels"
        if not (out / f"{src.stem}-sanitized.pcap").exists():
            run_measured(cli([src], out, available), env)
        files = [src, out / f"{src.stem}-sanitized.pcap"]
    print(f"\n{'file':<34} {'MB':>6} " + " ".join(f"{k + ' ' + str(lv):>13}" for k, lvs in LEVELS.items()
                                                  for lv in lvs))
    for path in files:
        cells = []
        for kind, lvs in LEVELS.items():
            for level in lvs:
                compress, finish, first = _compressor(kind, level)
                size, c0 = len(first), time.process_time()
                with open(path, "rb") as fh:
                    while True:
                        chunk = fh.read(1 << 20)
                        if not chunk:
                            break
                        size += len(compress(chunk))
                size += len(finish())
                cpu = max(time.process_time() - c0, 1e-6)
                total = path.stat().st_size
                cells.append(f"{total / size:>5.2f}x {total / cpu / 1e6:>4.0f}MB/s")
        print(f"{path.name[:34]:<34} {path.stat().st_size / 1e6:>6.0f} " + " ".join(f"{c:>13}" for c in cells),
              flush=True)
    print("\neach cell: ratio (input / compressed) and MB of input compressed per CPU second, one thread")
    return 0


DECOMPRESS = r"""
import sys
from pktmask_gui.compression import DecompressingReader, detect
with open(sys.argv[1], "rb") as fh, open(sys.argv[2], "wb") as out:
    head = fh.read(65536)
    reader = DecompressingReader(fh, detect(head), head)
    while True:
        chunk = reader.read(1 << 20)
        if not chunk:
            break
        out.write(chunk)
"""




def cluster(work: Path, env: dict, args, available: list[str]) -> int:
    """8 files of --packets each, all operations: process --scheduler on a local scheduler with two workers
    (each started by its own command, --nthreads 1, already running: their start is not timed) against the
    local --jobs 2 run; the outputs must be the same bytes."""
    files = [make_capture(work, args.packets, seed=20 + i, name=f"cl-{i}-{args.packets}.pcap") for i in range(8)]
    inputs = work / f"cluster-in-{args.packets}"
    inputs.mkdir(exist_ok=True)
    for f in files:
        if not (inputs / f.name).exists():
            os.link(f, inputs / f.name)
    worker_tmp = work / "cluster-worker-tmp"
    worker_tmp.mkdir(exist_ok=True)
    wenv = dict(env, TMPDIR=str(worker_tmp))
    sched_file = work / "cluster-scheduler.json"
    sched_file.unlink(missing_ok=True)
    dask = [sys.executable, "-m"]
    procs = [subprocess.Popen(dask + ["distributed.cli.dask_scheduler", "--port", "0", "--host", "127.0.0.1",
                                      "--no-dashboard", "--scheduler-file", str(sched_file)], env=wenv,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        while not sched_file.exists():
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        procs += [subprocess.Popen(dask + ["distributed.cli.dask_worker", address, "--nthreads", "1",
                                           "--host", "127.0.0.1", "--no-dashboard"], env=wenv,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
        import distributed
        with distributed.Client(address, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
        local, remote = [], []
        for _ in range(args.repeat):
            for into, extra, out in ((local, ["--jobs", "2"], work / "cl-out-local"),
                                     (remote, ["--scheduler", address], work / "cl-out-remote")):
                shutil.rmtree(out, ignore_errors=True)
                cmd = [sys.executable, "-m", "pktmask_gui", "process", str(inputs), "-o", str(out), "-q",
                       *extra, *[f"--{op}" for op in available]]
                into.append(run_measured(cmd, env))
            same = all((work / "cl-out-local" / p.name).read_bytes() == p.read_bytes()
                       for p in (work / "cl-out-remote").iterdir())
            if not same or len(list((work / "cl-out-remote").iterdir())) != 8:
                raise SystemExit("the cluster's outputs differ from the local run's")
        left = [p for p in worker_tmp.rglob("pktmask_*")] + [p for p in (work / "cl-out-remote").rglob("pktmask_*")]
        one, two = median(r[0] for r in local), median(r[0] for r in remote)
        print(f"8 files x {args.packets:,} packets, all operations: local --jobs 2 {one:.2f} s, Dask scheduler "
              f"with 2 local workers {two:.2f} s: ratio {two / one:.2f} (runs: "
              f"{', '.join(f'{r[0]:.2f}/{lo[0]:.2f}' for r, lo in zip(remote, local))}); outputs identical; "
              f"{len(left)} pktmask_* left")
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    return 0

if __name__ == "__main__":
    sys.exit(main())
