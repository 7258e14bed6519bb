"""Identifiers beyond addresses on the command line: vendor-keeping MACs (--keep-oui), internal-only mode
(--anonymize-only / --internal-only), reveal for the key holder (frame by frame against the input), and
presets (--preset counts as choosing operations; flags beside it win)."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pktmask_gui import presets, samplegen
from pktmask_gui.capture import CaptureReader
from pktmask_gui.frames import walk
from pktmask_gui.hostnames import PRIVATE_NETWORKS

REPO = Path(__file__).resolve().parents[1]
KEY_HEX = "1522178d33a4cf80130a5b1649907d10d8988f837979652762574c2d2a842202"
PRIVATE = [ipaddress.ip_network(n) for n in PRIVATE_NETWORKS]


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pktmask_gui", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)


@pytest.fixture
def capture(workdir) -> Path:
    path = workdir / "in.pcap"
    samplegen.generate(path, packets=600, seed=11, dup_ratio=0.0)
    (workdir / "key.hex").write_text(KEY_HEX)
    return path


def process(capture: Path, out: Path, *flags) -> dict:
    done = cli("process", capture, "-o", out, "--json", "-q", "--key-file", capture.parent / "key.hex", *flags)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["files"][0]


def frames(path) -> list:
    with CaptureReader(path) as reader:
        return [rec for batch in reader.batches(4096) for rec in batch if rec[1] >= 0]


def addresses(rec) -> list:
    w = walk(rec[0], rec[1])
    return [ipaddress.ip_address(bytes(rec[0][off:off + size])) for off, size, plen in w[3] if plen == size * 8]


def test_keep_oui_keeps_the_vendor(capture, workdir):
    result = process(capture, workdir / "o", "--anonymize", "--keep-oui")
    assert result["stages"]["anonymize"]["macs_mapped"] > 0               # --keep-oui turns MACs on
    changed = 0
    for before, after in zip(frames(capture), frames(result["output"])):
        for off in walk(before[0], before[1])[6]:
            old, new = before[0][off:off + 6], after[0][off:off + 6]
            assert new[:3] == old[:3]
            if not old[0] & 1 and old != new:
                changed += 1
    assert changed > 100


def test_internal_only_leaves_public_servers(capture, workdir):
    result = process(capture, workdir / "o", "--anonymize", "--internal-only")
    mapped = kept = 0
    for before, after in zip(frames(capture), frames(result["output"])):
        for old, new in zip(addresses(before), addresses(after)):
            if any(old in net for net in PRIVATE) and not old.is_multicast:
                assert new != old
                mapped += 1
            else:
                assert new == old
                kept += 1
    assert mapped > 100 and kept > 100
    only = process(capture, workdir / "p", "--anonymize", "--anonymize-only", "192.168.1.0/24")
    for before, after in zip(frames(capture), frames(only["output"])):
        for old, new in zip(addresses(before), addresses(after)):
            assert (new != old) == (old in ipaddress.ip_network("192.168.1.0/24"))


@pytest.mark.parametrize("rules", [(), ("--internal-only",)])
def test_reveal_returns_every_original_frame_by_frame(capture, workdir, rules):
    result = process(capture, workdir / ("o" + str(len(rules))), "--anonymize", *rules)
    pairs = {}
    for before, after in zip(frames(capture), frames(result["output"])):
        for old, new in zip(addresses(before), addresses(after)):
            pairs[new] = old
    anonymized = sorted(pairs, key=str)
    anonymized = [a for a in anonymized if pairs[a] != a]                   # those the job anonymized
    done = cli("reveal", "--key-file", workdir / "key.hex", *rules, *map(str, anonymized))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(anonymized) >= 20
    for addr, line in zip(anonymized, lines):
        assert line == str(pairs[addr])
    paired = cli("reveal", "--key-file", workdir / "key.hex", "--pairs", *rules, str(anonymized[0]))
    assert paired.stdout == f"{anonymized[0]}\t{pairs[anonymized[0]]}\n"


def test_reveal_usage(workdir):
    (workdir / "key.hex").write_text(KEY_HEX)
    assert cli("reveal", "--key-file", workdir / "key.hex", "not-an-address").returncode == 2
    assert cli("reveal", "198.51.100.1").returncode == 2                   # no key in a fresh config folder
    done = cli("reveal", "--key-file", workdir / "key.hex", "--keep", "198.51.100.0/24", "--pairs", "198.51.100.1")
    assert done.returncode == 0 and done.stdout.startswith("198.51.100.1\t")


def test_presets_choose_operations_and_flags_win(capture, workdir):
    vendor = process(capture, workdir / "v", "--preset", "vendor")
    assert set(vendor["stages"]) >= {"dedup", "anonymize", "mask", "names"}
    assert vendor["stages"]["mask"].get("tls_flows", 0) > 0                # the handshake kept
    internal = process(capture, workdir / "i", "--preset", "Troubleshoot internally")
    assert set(internal["stages"]) == {"dedup", "anonymize"}
    assert internal["stages"]["anonymize"]["addresses_kept"] > 0
    only_mask = process(capture, workdir / "m", "--preset", "publish", "--mask")
    assert set(only_mask["stages"]) == {"mask"}                              # operation flags replace
    masked = process(capture, workdir / "h", "--preset", "vendor", "--mask-handshake")
    kept, kept_vendor = masked["stages"]["mask"]["bytes_kept"], vendor["stages"]["mask"]["bytes_kept"]
    assert kept * 10 < kept_vendor                                          # option flags override
    bad = cli("process", capture, "-o", workdir / "x", "--preset", "nonsense")
    assert bad.returncode == 2 and "vendor" in bad.stderr
    assert presets.find("share-with-a-vendor").key == "vendor" and presets.find("PUBLISH").key == "publish"
