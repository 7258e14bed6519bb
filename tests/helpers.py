"""What more than one test module needs (test modules import it: ``from helpers import leftovers``). A module
of its own, not conftest.py: tests/ui has a conftest.py too, and ``from conftest import`` would find
whichever of the two was loaded last.

- Paths: ``REPO``; ``CORPUS`` (real captures), ``WILD`` (the wild corpus), ``VERIFY`` (the independent
  tshark-based checker), all under ../shared, which a fresh clone does not have.
- ``leftovers(*dirs)``: every ``pktmask_*`` entry left below the folders.
- ``packets_of(path)``: the packet records of a capture (metadata records left out).
- ``assert_clean_failure(result, work, out, words)``: a job failed in one line naming ``words``, no output,
  nothing left behind.
- ``settings_for(work, **kw)``: one job at a time, temp files under ``work / "temp"``; ``sha(path)``.
- ``cli(...)`` / ``cli_popen(...)``: ``python -m pktmask_gui`` of this checkout, as a real process.
- ``FRAMES``, ``GOOD_PCAP``, ``GOOD_PCAPNG``: three small UDP frames and two sound captures holding them
  (``PCAP_RECORDS``, ``EPB_RECORDS``; ``written_pcap`` / ``written_pcapng`` write records through the writer).
- ``pcap_bytes(records, ...)`` / ``pcap_file(path, records, ...)``, ``sample_frames(n, seed)``,
  ``big_frame(i, size)``, ``make_kind(folder, kind)``: pcap files written byte by byte (not through the
  writer): every byte order, unit and header variant, cut short, with odd lengths and with records up to
  the 256 KiB limit (``KINDS``).
"""
from __future__ import annotations

import hashlib
import io
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

from pktmask_gui.capture import EPB, IDB, META, SHB, CaptureReader, make_idb_body, make_pcap_header, make_shb_body
from pktmask_gui.capturewriter import CaptureWriter
from pktmask_gui.samplegen import eth, ipv4, iter_frames, udp, udp4_frame
from pktmask_gui.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpus"
WILD = SHARED / "corpus-wild"
VERIFY = SHARED / "tools" / "verify.py"


def leftovers(*dirs) -> list[str]:
    """Every ``pktmask_*`` entry below the given folders (the tests' own ``pktmask_test_*`` aside)."""
    found = []
    for d in dirs:
        if Path(d).exists():
            found += [str(p) for p in Path(d).rglob("pktmask_*") if not p.name.startswith("pktmask_test_")]
    return found


def owner_pid(workspace_dir: Path) -> int | None:
    """The process that owns a workspace dir: its marker's first owner when it has a marker, else the one
    its name gives (``pktmask_pipeline_<pid>-<start>-<host>_<random>``)."""
    import json

    from pktmask_gui.workspace import MARKER, OUTPUT_PREFIX, PIPELINE_PREFIX, owner_from_name

    try:
        return int(json.loads((Path(workspace_dir) / MARKER).read_text())["owners"][0]["pid"])
    except (OSError, ValueError, KeyError, IndexError):
        pass
    name = Path(workspace_dir).name
    prefix = PIPELINE_PREFIX if name.startswith(PIPELINE_PREFIX) else OUTPUT_PREFIX
    owner = owner_from_name(name, prefix)
    return None if owner is None else owner["pid"]


def other_file_system(near: Path) -> Path | None:
    """A fresh ``pktmask_test_`` dir on another file system than ``near`` (/dev/shm), or None: a temp root
    there makes a job stage its output in a ``pktmask_output_`` dir of the output folder, as it does when
    the temp folder is a tmpfs. The caller removes it."""
    import tempfile

    shm = Path("/dev/shm")
    try:
        if not shm.is_dir() or shm.stat().st_dev == Path(near).stat().st_dev:
            return None
        return Path(tempfile.mkdtemp(prefix="pktmask_test_", dir=shm))
    except OSError:
        return None


def packets_of(path) -> list:
    """The packet records of a capture, in order (metadata records left out)."""
    with CaptureReader(path) as reader:
        return [rec for batch in reader.batches() for rec in batch if rec[1] >= 0]


def assert_clean_failure(result, work: Path, out: Path, words=()) -> None:
    """A failed job: one line (no traceback, no internal error) holding ``words``, no output, nothing left."""
    assert result.status == "failed", (result.status, result.output)
    assert result.error and "\n" not in result.error and "Traceback" not in result.error
    assert not result.error.startswith("internal error"), result.error
    for word in words:
        assert word in result.error, (word, result.error)
    assert result.output is None
    assert not out.exists() or [p for p in out.rglob("*")] == []
    assert leftovers(work / "temp", out) == []


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def settings_for(work: Path, **kw) -> Settings:
    """One job at a time, temp files under ``work / "temp"``."""
    return Settings(temp_root=str(work / "temp"), parallel_jobs=1, **kw)


def cli(*args, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    """``python -m pktmask_gui ARGS`` of this checkout, run to its end."""
    return subprocess.run([sys.executable, "-m", "pktmask_gui", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO, timeout=timeout, **kwargs)


def cli_popen(*args, **kwargs) -> subprocess.Popen:
    """``python -m pktmask_gui ARGS`` of this checkout, started and left running."""
    return subprocess.Popen([sys.executable, "-m", "pktmask_gui", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            cwd=REPO, **kwargs)


# --- two sound captures of three frames -------------------------------------------------------------------

FRAMES = [udp4_frame("192.0.2.1", "198.51.100.7", 1000 + i, 53, payload=bytes([i]) * (20 + i)) for i in range(3)]
PCAP_RECORDS = [(f, 1, 1_700_000_000_000_000 + i, len(f), 0, None) for i, f in enumerate(FRAMES)]
EPB_RECORDS = [(f, 1, 1_700_000_000_000_000 + i, len(f), 0, (EPB, b"")) for i, f in enumerate(FRAMES)]


def written_pcap(records: list, linktype: int = 1, snaplen: int = 65535) -> bytes:
    """A pcap file of ``records``, through the writer."""
    buf = io.BytesIO()
    writer = CaptureWriter(buf, "pcap", make_pcap_header(linktype, snaplen))
    writer.write_batch(records)
    writer.close()
    return buf.getvalue()


def written_pcapng(records: list, endian: str = "<") -> bytes:
    """A pcapng file, through the writer: one section (SHB + one Ethernet IDB, snaplen 0) and ``records``."""
    buf = io.BytesIO()
    writer = CaptureWriter(buf, "pcapng")
    writer.write_batch([(make_shb_body(endian), META, 0, 0, 0, SHB),
                        (make_idb_body(1, 0, endian), META, 0, 0, 0, IDB)] + records)
    writer.close()
    return buf.getvalue()


GOOD_PCAP = written_pcap(PCAP_RECORDS)
GOOD_PCAPNG = written_pcapng(EPB_RECORDS)


# --- pcap files byte by byte ------------------------------------------------------------------------------

def pcap_bytes(records, e: str = "<", nanos: bool = False, modified: bool = False, snaplen: int = 262144,
               linktype: int = 1) -> bytes:
    """A pcap file: ``records`` are (sec, frac, data, origlen); ``modified`` = Kuznetsov's 24-byte record
    headers; ``snaplen`` 0 means no limit."""
    magic = 0xA1B2CD34 if modified else 0xA1B23C4D if nanos else 0xA1B2C3D4
    parts = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for i, (sec, frac, data, origlen) in enumerate(records):
        parts.append(struct.pack(e + "IIII", sec, frac, len(data), origlen))
        if modified:
            parts.append(struct.pack(e + "IHBx", i, 0x0800, i & 255))
        parts.append(data)
    return b"".join(parts)


def pcap_file(path: Path, records, cut: int = 0, **kw) -> Path:
    """``pcap_bytes(records, **kw)`` written to ``path``, less its last ``cut`` bytes."""
    raw = pcap_bytes(records, **kw)
    path.write_bytes(raw[:len(raw) - cut] if cut else raw)
    return path


def sample_frames(n: int, seed: int) -> list:
    """Realistic Ethernet frames (TCP/TLS/UDP/DNS, IPv4/IPv6, VLAN) with ~20 % exact duplicates."""
    return [frame for _t, frame, _dup in iter_frames(n, seed=seed, dup_ratio=0.2)]


def big_frame(i: int, size: int) -> bytes:
    """An IPv4/UDP frame of ``size`` captured bytes (the IP datagram, then a zero trailer if larger)."""
    src = f"10.9.{i % 200}.{1 + i % 250}"
    payload = bytes((i + k) & 255 for k in range(256)) * (min(size, 65000) // 256)
    fr = eth("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800,
             ipv4(src, "192.168.7.9", 17,
                  udp(src, "192.168.7.9", 4000 + i, 53, payload[:max(0, min(size, 65000) - 42)])))
    return fr[:size] if len(fr) >= size else fr + bytes(size - len(fr))


KINDS = ["le_us", "be_ns", "modified_le", "modified_be", "bad_fraction", "bad_fraction_ns", "snaplen_odd",
         "cut_mid_record", "cut_mid_header", "one_packet", "header_only", "big_records"]


def make_kind(folder: Path, kind: str) -> Path:
    """``folder / f"{kind}.pcap"``: 700 sample frames (big_records: 300 and big frames) as pcap of one kind."""
    frames = sample_frames(700, seed=len(kind))
    recs = [(1_700_000_000 + i // 50, (i * 997) % 1_000_000, f, len(f)) for i, f in enumerate(frames)]
    path = folder / f"{kind}.pcap"
    if kind == "le_us":
        return pcap_file(path, recs)
    if kind == "be_ns":
        return pcap_file(path, [(s, f * 999, d, o) for s, f, d, o in recs], e=">", nanos=True)
    if kind in ("modified_le", "modified_be"):
        return pcap_file(path, recs, e="<" if kind.endswith("le") else ">", modified=True)
    if kind == "bad_fraction":          # RawPcapTime on every 7th record, in both units
        return pcap_file(path, [(s, f + 1_000_000 + i if i % 7 == 0 else f, d, o)
                                for i, (s, f, d, o) in enumerate(recs)])
    if kind == "bad_fraction_ns":
        return pcap_file(path, [(s, 0xF0000000 + i if i % 5 == 0 else f, d, o)
                                for i, (s, f, d, o) in enumerate(recs)], nanos=True)
    if kind == "snaplen_odd":           # snaplen 96 below most caplens, caplen > origlen, origlen huge
        return pcap_file(path, [(s, f, d, len(d) - 3 if i % 4 == 0 else len(d) + 70000 if i % 4 == 1 else o)
                                for i, (s, f, d, o) in enumerate(recs)], snaplen=96)
    if kind == "cut_mid_record":
        return pcap_file(path, recs, cut=37)
    if kind == "cut_mid_header":
        return pcap_file(path, recs, cut=len(recs[-1][2]) + 9)
    if kind == "one_packet":
        return pcap_file(path, recs[:1])
    if kind == "header_only":
        return pcap_file(path, [])
    if kind == "big_records":           # records up to the 256 KiB limit, crossing every chunk boundary
        rng = random.Random(4)
        out = []
        for i, (s, f, d, o) in enumerate(recs[:300]):
            out.append((s, f, d, o))
            if i % 11 == 0:
                b = big_frame(i, rng.choice([262144, 262143, 131073, 70001, 65536]))
                out += [(s, f + 1, b, len(b))] * (2 if i % 33 == 0 else 1)      # some big duplicates
        return pcap_file(path, out)
    raise ValueError(kind)
