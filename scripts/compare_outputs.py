#!/usr/bin/env python3
"""Compare this checkout's outputs with another checkout's, byte for byte, for many option sets.

    git worktree add --detach /tmp/base <commit>        # the version to compare against
    python3 scripts/compare_outputs.py --base /tmp/base [DIR ...] [--generated] [--set NAME ...] [-j N]

Both checkouts run ``pktmask-gui process`` (``--jobs 1``, the same fixed key, a private config folder) over
every capture under the folders (and, with ``--generated``, captures the project's generator makes: the usual
mix as pcap and pcapng, and every real-world shape it can build), once per option set, and every output
pair is compared. A refactor must
print "identical" on every row; a change of behaviour shows which files it touches (``-v`` names them).
Exit 0 when every output of every set is identical (and the same files failed), 1 otherwise.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
# option sets: name -> flags (each set is one run over all captures per checkout)
SETS = {
    "dedup": ["--dedup"],
    "anonymize": ["--anonymize"],
    "mask": ["--mask"],
    "all": ["--dedup", "--anonymize", "--mask"],
    "anonymize-macs-nopayload": ["--anonymize", "--anonymize-macs", "--no-payload-addresses",
                                 "--keep", "10.0.0.0/8"],
    "mask-trim-handshake": ["--mask", "--mask-mode", "trim", "--mask-handshake", "--keep-port", "53"],
    "all-keep-metadata-pass": ["--dedup", "--anonymize", "--mask", "--keep-metadata", "--allow-uninspected"],
}


def _run(checkout: Path, files: list[Path], flags: list[str], out: Path, cfg: Path) -> dict:
    env = dict(os.environ, PKTMASK_CONFIG_DIR=str(cfg), PYTHONPATH=str(checkout))
    cmd = [sys.executable, "-m", "pktmask_gui", "process", *map(str, files), "-o", str(out), "--jobs", "1",
           "--json", "-q", "--key-file", str(cfg / "key.hex"), *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(checkout))
    try:
        results = json.loads(proc.stdout)["files"]
    except (ValueError, KeyError):
        raise SystemExit(f"{checkout}: the CLI exited {proc.returncode}: {proc.stderr.strip()[-500:]}") from None
    return {r["input"]: r for r in results}


def _digest(path) -> str | None:
    if not path:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="*", type=Path, metavar="DIR")
    ap.add_argument("--generated", action="store_true", help="also compare on generated captures")
    ap.add_argument("--base", type=Path, required=True, help="the checkout to compare against")
    ap.add_argument("--set", dest="sets", action="append", choices=sorted(SETS), help="option sets (default: all)")
    ap.add_argument("-j", "--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("-v", "--verbose", action="store_true", help="name every differing file")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from pktmask_gui.pipeline import find_captures

    files = [path for path, _rel in find_captures(args.dirs)]
    with tempfile.TemporaryDirectory(prefix="pktmask_test_compare_") as tmp:
        tmp = Path(tmp)
        if args.generated:
            files += _generated(tmp / "generated")
        if not files:
            ap.error("no captures found")
        code = _compare(args, files, tmp)
    return code


def _generated(folder: Path) -> list[Path]:
    """Captures of the project's generator: the usual mix (pcap, pcapng with metadata, big-endian with
    nanoseconds) and one frame of every real-world shape it builds (encapsulations, fragments, flow export,
    DNS from tunnel ports)."""
    from pktmask_gui import sampleconv, samplegen as sg, wildgen as wg

    folder.mkdir()
    sg.generate(folder / "mix.pcap", packets=20000, seed=5)
    sg.generate(folder / "mix.pcapng", packets=5000, seed=6, fmt="pcapng", metadata=True)
    sg.generate(folder / "mix-be-ns.pcapng", packets=3000, seed=7, fmt="pcapng", endian=">", nanos=True)
    tcp = sg.tcp4_frame("10.1.1.1", "10.2.2.2", 40000, 443, 1, 1, sg.ACK | sg.PSH, b"payload" * 9)
    tcp6 = sg.tcp6_frame("2001:db8::1", "2001:db8::2", 40000, 443, 1, 1, sg.ACK | sg.PSH, b"payload" * 9)
    frames = [wg.encapsulate(f, how) for how in wg.ENCAPSULATIONS for f in (tcp, tcp6)]
    big = sg.udp4_frame("10.3.3.3", "10.4.4.4", 40000, 9999, b"z" * 400)
    frames += wg.fragment(wg.encapsulate(big, "gtpu"), 128) + wg.fragment(big, 64)
    frames.append(sg.udp4_frame("10.9.9.9", "10.8.8.8", 40000, 6343, wg.sflow_datagram("10.9.9.9", [
        wg.sflow_flow_sample([wg.sflow_raw_header(tcp), wg.sflow_ipv4_record("10.5.5.5", "10.6.6.6", 1, 2)])])))
    frames.append(sg.udp4_frame("10.9.9.9", "10.8.8.8", 40000, 2055,
                                wg.netflow_v5([("10.7.7.1", "10.7.7.2", "10.7.7.3")])))
    frames += [sg.udp4_frame("10.11.0.1", "10.11.0.2", port, 53, sg.dns_query(0x6100 + port % 256, "a.example"))
               for port in (1701, 2152, 4789, 4790, 6081, 6635, 8472)]
    sampleconv.write_pcap(folder / "shapes.pcap", frames)
    return sorted(folder.iterdir())


def _compare(args, files: list[Path], tmp: Path) -> int:
    """Each option set over ``files`` in both checkouts; prints a row per set, returns the exit status."""
    shards = [files[k::args.workers] for k in range(args.workers) if files[k::args.workers]]
    code = 0
    cfg = tmp / "config"
    cfg.mkdir()
    (cfg / "key.hex").write_text(KEY)
    print(f"{len(files)} captures; {args.base} (base) against {REPO} (this checkout)")
    for name in args.sets or list(SETS):
        flags = SETS[name]
        runs = {}
        for label, checkout in (("base", args.base.resolve()), ("this", REPO)):
            with ThreadPoolExecutor(len(shards)) as pool:
                out = tmp / name / label
                parts = pool.map(lambda k, c=checkout, f=flags, o=out: _run(c, shards[k], f, o / str(k), cfg),
                                 range(len(shards)))
                runs[label] = {k: v for part in parts for k, v in part.items()}
        same, differ, status = 0, [], []
        for inp, b in runs["base"].items():
            t = runs["this"].get(inp, {"status": "missing", "output": None})
            if b["status"] != t["status"]:
                status.append(f"{Path(inp).name}: {b['status']} -> {t['status']} ({t.get('error') or ''})")
            elif _digest(b["output"]) == _digest(t["output"]):
                same += 1
            else:
                differ.append(Path(inp).name)
        verdict = "identical" if not differ and not status else "DIFFERENT"
        print(f"  {name:<26} {verdict:<9} {same} same, {len(differ)} differ, {len(status)} change status")
        if args.verbose:
            for line in differ + status:
                print(f"    {line}")
        if differ or status:
            code = 1
        for label in ("base", "this"):
            for path in (tmp / name / label).rglob("*"):
                if path.is_file():
                    path.unlink()
    return code


if __name__ == "__main__":
    sys.exit(main())
