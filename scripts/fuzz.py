#!/usr/bin/env python3
"""Run the seeded capture fuzzer for a set time: ``python3 scripts/fuzz.py --seconds 600 [--seed N]``.

It drives the same property as tests/test_fuzz.py (readers + every stage through run_job; see that module)
with hypothesis, in rounds of ``--examples`` examples, each round seeded from ``--seed`` and its number, so
that a run can be repeated exactly. A counterexample (after hypothesis shrinks it) is saved as
tests/data/fuzz/crash-<sha256[:12]>.<ext>, where tests/test_fuzz.py::test_fuzz_regressions replays it;
the run goes on. At the end it prints how many inputs were tried and what became of them.
Exit status: 0 no crash found, 1 crashes found (saved), 2 usage error.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600, help="how long to run (default 600)")
    ap.add_argument("--seed", type=int, default=1, help="base seed (default 1)")
    ap.add_argument("--examples", type=int, default=200, help="examples per round (default 200)")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "fuzz", help="where crashes go")
    ap.add_argument("--findings", type=Path, default=None, metavar="DIR",
                    help="also save inputs whose clean failure contains --finding-text (reproducers for "
                         "stage owners; default: not saved)")
    ap.add_argument("--finding-text", default="self-check failed", help="(default: 'self-check failed')")
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.examples <= 0:
        ap.error("--seconds and --examples must be positive")

    config = tempfile.TemporaryDirectory(prefix="pktmask_test_fuzzconfig_")
    os.environ["PKTMASK_CONFIG_DIR"] = config.name        # never the user's settings or key
    logging.disable(logging.CRITICAL)                       # one result per input, not a log line

    from hypothesis import HealthCheck, given, seed, settings
    import test_fuzz as fz

    outcomes: collections.Counter = collections.Counter()
    crashes: dict[str, str] = {}
    findings: dict[str, str] = {}
    last_failure: dict = {}
    deadline = time.monotonic() + args.seconds
    started = time.monotonic()

    class TimeUp(BaseException):
        pass

    def example(ex):
        if time.monotonic() > deadline and not last_failure:
            raise TimeUp()
        idx, mutations, op_pick = ex
        name, data = fz.SEEDS[idx]
        sets = fz.operation_sets()
        ops = sets[op_pick % len(sets)]
        mutated = fz.mutate(data, fz.FIELDS[idx], mutations, fz.REGIONS[idx])
        try:
            outcome = fz.check_input(mutated, name, ops)
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, TimeUp)):
                raise
            last_failure.update(data=mutated, name=name, ops=ops, error=f"{type(exc).__name__}: {exc}")
            outcomes["property broken (counted again while hypothesis shrinks it)"] += 1
            raise
        outcomes["ok" if outcome == "ok" else _kind(outcome)] += 1
        if args.findings is not None and args.finding_text in outcome:
            saved = _save(args.findings, {"data": mutated, "name": name}, prefix="finding")
            findings.setdefault(str(saved), f"{ops}: {outcome}")

    round_no = 0
    try:
        while time.monotonic() < deadline:
            round_no += 1
            last_failure.clear()
            runner = settings(max_examples=args.examples, derandomize=False, deadline=None, database=None,
                              suppress_health_check=list(HealthCheck))(given(fz.inputs)(example))
            runner = seed(args.seed * 1_000_003 + round_no)(runner)
            try:
                runner()
            except TimeUp:
                break
            except KeyboardInterrupt:
                break
            except BaseException as exc:  # hypothesis re-raises the shrunk counterexample's failure
                if last_failure:
                    path = _save(args.out, last_failure)
                    crashes[str(path)] = last_failure["error"]
                    print(f"CRASH saved: {path} ({last_failure['name']}, operations {last_failure['ops']}): "
                          f"{last_failure['error']}", file=sys.stderr)
                else:
                    print(f"round {round_no}: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        config.cleanup()
    elapsed = time.monotonic() - started
    total = sum(outcomes.values())
    print(f"fuzz: {total} inputs in {elapsed:.0f} s ({round_no} rounds, base seed {args.seed}); "
          f"{len(crashes)} crash(es) saved")
    for outcome, n in outcomes.most_common():
        print(f"  {n:8d}  {outcome}")
    for path, text in findings.items():
        print(f"finding: {path}: {text}")
    return 1 if crashes else 0


def _kind(outcome: str) -> str:
    """Group failure messages by their wording, without packet numbers, offsets and byte values."""
    import re

    text = re.sub(r" \(at file offset \d+\)", "", outcome)
    text = re.sub(r"(starts with the bytes|magic|type) [0-9a-fx ]+?(?=\)|$| \(|,| has| claims)", r"\1 …", text)
    text = re.sub(r"0x[0-9a-fA-F]+", "0x…", text)
    return re.sub(r"\d+", "N", text)


def _save(folder: Path, failure: dict, prefix: str = "crash") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(failure["data"]).hexdigest()[:12]
    ext = ".pcapng" if failure["name"].endswith(".pcapng") else ".pcap"
    path = folder / f"{prefix}-{digest}{ext}"
    path.write_bytes(failure["data"])
    return path


if __name__ == "__main__":
    sys.exit(main())
