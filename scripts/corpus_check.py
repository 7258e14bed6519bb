#!/usr/bin/env python3
"""Run the engine over folders of real captures and check every output with an independent checker.

    python3 scripts/corpus_check.py DIR [DIR ...] [--dedup] [--anonymize] [--mask] [-j N] [--json FILE]

Every capture found under the folders is processed by ``pktmask-gui process`` (the public CLI, one
process per worker, ``--jobs 1`` each, a fixed key in a private config folder), and each output is checked
by ``../shared/tools/verify.py`` (tshark as the oracle) with the matching checks, in parallel. The table
says how many files succeeded, how many failed and why (damage of the container is a right answer; any
other failure is a bug), and how the checker's checks came out, file by file counts per check. Exit 0
when no file failed for a reason other than damage and no check failed; 1 otherwise.

Nothing is written next to the inputs: outputs go to a ``pktmask_test_`` temp folder, removed at the end
(``--keep DIR`` keeps them there instead).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VERIFY = REPO.parent / "shared" / "tools" / "verify.py"
KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
VERIFY_FLAGS = {"dedup": "--dedup", "anonymize": "--anon", "mask": "--mask"}


def _captures(dirs) -> list[Path]:
    sys.path.insert(0, str(REPO))
    from pktmask_gui.pipeline import find_captures

    return [path for path, _rel in find_captures(dirs)]


def _run_engine(files: list[Path], ops: list[str], out: Path, cfg: Path, extra: list[str]) -> list[dict]:
    env = dict(os.environ, PKTMASK_CONFIG_DIR=str(cfg), PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "pktmask_gui", "process", *map(str, files), "-o", str(out), "--jobs", "1",
           "--json", "-q", "--key-file", str(cfg / "key.hex"), *("--" + op for op in ops), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(REPO))
    try:
        return json.loads(proc.stdout)["files"]
    except (ValueError, KeyError):
        # the CLI itself broke (a traceback, a usage error): every file of this shard counts as failed
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [{"input": str(f), "output": None, "status": "failed", "error_kind": "internal",
                 "error": f"the CLI exited {proc.returncode}: {detail}"} for f in files]


def _verify(inp: str, outp: str, ops: list[str], verify: Path, timeout: int) -> dict:
    cmd = [sys.executable, str(verify), inp, outp, "--json", "--timeout", str(timeout),
           *(VERIFY_FLAGS[op] for op in ops)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return {"ok": False, "checks": [{"name": "verify.py", "status": "fail",
                                         "detail": (proc.stderr.strip().splitlines() or ["no output"])[-1]}]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path, metavar="DIR")
    for op in VERIFY_FLAGS:
        ap.add_argument("--" + op, action="store_true")
    ap.add_argument("-j", "--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--verify", type=Path, default=VERIFY, help="the checker (default: %(default)s)")
    ap.add_argument("--no-verify", action="store_true", help="run the engine only")
    ap.add_argument("--timeout", type=int, default=600, help="seconds for each tshark run of the checker")
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="check only captures whose file name contains NAME (repeatable)")
    ap.add_argument("--engine-arg", action="append", default=[], metavar="ARG",
                    help="one more argument for pktmask-gui process (repeatable)")
    ap.add_argument("--keep", type=Path, metavar="DIR", help="keep the outputs in DIR")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write every file's result to FILE")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every failing file")
    args = ap.parse_args(argv)
    ops = [op for op in VERIFY_FLAGS if getattr(args, op)]
    if not ops:
        ap.error("choose at least one of --dedup, --anonymize, --mask")
    check = not args.no_verify
    if check and (not args.verify.is_file() or not shutil.which("tshark")):
        ap.error(f"the checker needs {args.verify} and tshark (or pass --no-verify)")
    files = _captures(args.dirs)
    if args.only:
        files = [f for f in files if any(part in f.name for part in args.only)]
    if not files:
        ap.error("no captures found")

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pktmask_test_corpus_") as tmp:
        tmp = Path(tmp)
        cfg = tmp / "config"
        cfg.mkdir()
        (cfg / "key.hex").write_text(KEY)
        out = args.keep or tmp / "out"
        shards = [files[k::args.workers] for k in range(args.workers) if files[k::args.workers]]
        with ThreadPoolExecutor(len(shards)) as pool:
            parts = pool.map(lambda k: _run_engine(shards[k], ops, out / f"shard{k}", cfg, args.engine_arg),
                             range(len(shards)))
            results = [r for part in parts for r in part]
        engine_s = time.monotonic() - started
        done = [r for r in results if r["status"] == "ok"]
        if check:
            with ThreadPoolExecutor(args.workers) as pool:
                verdicts = list(pool.map(lambda r: _verify(r["input"], r["output"], ops, args.verify, args.timeout),
                                         done))
            for r, v in zip(done, verdicts):
                r["verify"] = v
    total_s = time.monotonic() - started

    failed = [r for r in results if r["status"] != "ok"]
    damage = [r for r in failed if r.get("error_kind") == "damage"]
    other = [r for r in failed if r.get("error_kind") != "damage"]
    print(f"corpus check: {len(files)} captures under {', '.join(map(str, args.dirs))}; "
          f"operations: {' '.join('--' + op for op in ops)}")
    print(f"engine: {len(done)} ok, {len(failed)} failed ({len(damage)} damaged containers, "
          f"{len(other)} other), {engine_s:.1f} s")
    for title, rows in (("damaged (a right answer)", damage), ("FAILED (a bug)", other)):
        if rows and (args.verbose or rows is other):
            print(f"  {title}:")
            for r in rows:
                print(f"    {Path(r['input']).name}: {r['error']}")
    code = 0 if not other else 1
    if check:
        by_check = collections.defaultdict(collections.Counter)
        bad_files = []
        for r in done:
            fails = []
            for c in r["verify"].get("checks", []):
                by_check[c["name"]][c["status"]] += 1
                if c["status"] == "fail":
                    fails.append(c["name"])
            if not r["verify"].get("ok"):
                bad_files.append((Path(r["input"]).name, fails))
        print(f"checker: {len(done) - len(bad_files)} of {len(done)} outputs pass every check "
              f"({total_s - engine_s:.1f} s)")
        width = max([len(name) for name in by_check] + [5])
        print(f"  {'check':<{width}}  {'pass':>5} {'fail':>5} {'unver':>5} {'warn':>5} {'skip':>5} {'info':>5}")
        for name in sorted(by_check):
            c = by_check[name]
            print(f"  {name:<{width}}  {c['pass']:>5} {c['fail']:>5} {c['unverified']:>5} {c['warn']:>5} "
                  f"{c['skip']:>5} {c['info']:>5}")
        if bad_files:
            code = 1
            print("  outputs failing a check:")
            for name, fails in bad_files:
                print(f"    {name}: {', '.join(fails) or 'verify.py did not finish'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return code


if __name__ == "__main__":
    sys.exit(main())
