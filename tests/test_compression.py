"""Compressed captures, in and out: gzip (several members), zstd (several frames, with or without content
size), lz4 (frame format), recognised by content; outputs compressed as their input was, named by the
rule, byte-identical once decompressed to the plain file's output; cut streams keep their complete
packets, corrupt ones fail in one sentence; nothing left behind. Real bytes in, checked by our reader,
the codecs' own decompressors, the standard tools and tshark where installed."""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import tracemalloc
import zlib
from pathlib import Path

import lz4.frame
import pytest

from helpers import REPO, leftovers
from pktmask_gui import compression
from pktmask_gui.capture import SHB, CaptureReader, make_shb_body
from pktmask_gui.capturewriter import CaptureWriter
from pktmask_gui.compression import detect, output_kind, sniff, split_name
from pktmask_gui.pipeline import Job, find_captures, output_name, run_job
from pktmask_gui.samplegen import generate
from pktmask_gui.settings import Settings

zstd = compression._zstd()

KINDS = ("gzip", "zstd", "lz4")
SUFFIX = {"gzip": ".gz", "zstd": ".zst", "lz4": ".lz4"}
TOOL = {"gzip": ["gzip", "-c"], "zstd": ["zstd", "-q", "-c"], "lz4": ["lz4", "-q", "-c"]}
TSHARK = shutil.which("tshark")
CAPINFOS = shutil.which("capinfos")
ALL = ["dedup", "anonymize", "mask"]


# --- helpers ---------------------------------------------------------------------------------------

def pack(kind: str, data: bytes, parts: int = 1, content_size: bool = True) -> bytes:
    """``data`` compressed by the codec libraries, as ``parts`` members / frames one after another."""
    step = -(-len(data) // parts) if data else 1
    pieces = [data[i:i + step] for i in range(0, len(data), step)] or [b""]
    out = []
    for piece in pieces:
        if kind == "gzip":
            out.append(gzip.compress(piece, 6))
        elif kind == "zstd":                # with a checksum, as the zstd tool writes by default
            options = {zstd.CompressionParameter.checksum_flag: 1}
            if content_size:
                out.append(zstd.compress(piece, options=options))
            else:                           # streamed: the frame header does not give the size
                comp = zstd.ZstdCompressor(options=options)
                out.append(comp.compress(piece) + comp.flush())
        else:
            out.append(lz4.frame.compress(piece, content_checksum=True, store_size=content_size))
    return b"".join(out)


def unpack(kind: str, data: bytes) -> bytes:
    if kind == "gzip":
        return gzip.decompress(data)
    if kind == "zstd":
        return zstd.decompress(data)
    return lz4.frame.decompress(data)


def tool(kind: str, src: Path, dst: Path) -> Path:
    """Compress with the standard command-line tool, as a user does (skip where it is missing)."""
    if shutil.which(TOOL[kind][0]) is None:
        pytest.skip(f"the {kind} tool is not installed")
    with open(dst, "wb") as out:
        subprocess.run(TOOL[kind] + [str(src)], stdout=out, check=True)
    return dst


def packets(path) -> list:
    with CaptureReader(path) as reader:
        return [rec[0] for batch in reader.batches() for rec in batch if rec[1] >= 0]


def records(path) -> list:
    with CaptureReader(path) as reader:
        return [rec for batch in reader.batches() for rec in batch]


def settings_for(wd: Path, **kw) -> Settings:
    (wd / "temp").mkdir(exist_ok=True)
    return Settings(temp_root=str(wd / "temp"), parallel_jobs=1, **kw)


def tshark_count(path: Path) -> int:
    proc = subprocess.run([TSHARK, "-n", "-r", str(path), "-T", "fields", "-e", "frame.number"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return len([line for line in proc.stdout.splitlines() if line.strip()])


def cli(*args, timeout=180):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "pktmask_gui", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=timeout)


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    """Generated captures (pcap and pcapng, with duplicates, TLS, DNS, IPv6, VLAN) and their bytes."""
    base = Path(tmp_path_factory.mktemp("pktmask_test_gen"))
    made = {}
    for fmt, n in (("pcap", 3000), ("pcapng", 2000)):
        path = base / f"gen.{fmt}"
        generate(path, packets=n, seed=7, fmt=fmt, dup_ratio=0.08, metadata=(fmt == "pcapng"))
        made[fmt] = path.read_bytes()
    yield made
    shutil.rmtree(base, ignore_errors=True)


# --- recognising and naming -------------------------------------------------------------------------

def test_compression_is_told_by_magic_bytes_never_by_name(workdir, captures):
    plain = captures["pcap"]
    for kind in KINDS:
        assert detect(pack(kind, plain)) == kind
    assert detect(plain) is None and detect(b"") is None and detect(b"\x1f") is None
    skippable = struct.pack("<II", 0x184D2A50, 3) + b"abc"
    assert detect(skippable + pack("zstd", plain[:100])) == "zstd"
    assert detect(skippable + pack("lz4", plain[:100])) == "lz4"
    # the name says one thing, the content another: the content wins
    (workdir / "x.pcap").write_bytes(pack("gzip", plain))
    (workdir / "y.pcap.gz").write_bytes(plain)
    (workdir / "z.pcap.lz4").write_bytes(pack("zstd", plain))
    assert [sniff(workdir / n) for n in ("x.pcap", "y.pcap.gz", "z.pcap.lz4")] == ["gzip", None, "zstd"]
    for name in ("x.pcap", "y.pcap.gz", "z.pcap.lz4"):
        assert packets(workdir / name) == packets_of(plain, workdir)


def packets_of(data: bytes, workdir: Path) -> list:
    path = workdir / "plain-copy.pcap"
    path.write_bytes(data)
    try:
        return packets(path)
    finally:
        path.unlink()


@pytest.mark.parametrize("name, in_kind, choice, expected", [
    ("x.pcapng.gz", "gzip", "same", "x-sanitized.pcapng.gz"),
    ("x.pcap", "gzip", "same", "x-sanitized.pcap.gz"),           # gzip inside a .pcap: the content decides
    ("x.pcap.gz", None, "same", "x-sanitized.pcap"),             # plain inside a .gz
    ("x.pcap.gz", "zstd", "same", "x-sanitized.pcap.zst"),
    ("x.pcapng.zstd", "zstd", "same", "x-sanitized.pcapng.zstd"),  # the input's own spelling kept
    ("X.PCAP.GZ", "gzip", "same", "X-sanitized.PCAP.GZ"),
    ("x.cap.lz4", "lz4", "same", "x-sanitized.cap.lz4"),
    ("trace.gz", "gzip", "same", "trace-sanitized.gz"),
    ("dump.pcap1.gz", "gzip", "same", "dump-sanitized.pcap1.gz"),
    ("x.pcap.gz", "gzip", "none", "x-sanitized.pcap"),
    ("x.pcap", None, "zstd", "x-sanitized.pcap.zst"),
    ("x.pcapng.gz", "gzip", "lz4", "x-sanitized.pcapng.lz4"),
    ("x.pcap", None, "same", "x-sanitized.pcap"),
])
def test_output_naming_rule(name, in_kind, choice, expected):
    assert output_name(Path("/d") / name, "-sanitized", in_kind, output_kind(choice, in_kind)) == expected


def test_split_name():
    assert split_name("a.pcap.gz") == ("a.pcap", ".gz")
    assert split_name("a.pcap") == ("a.pcap", "")
    assert split_name(".gz") == (".gz", "")


def test_folder_scan_finds_compressed_captures_and_peeks_into_unnamed_ones(workdir, captures):
    tree = workdir / "tree"
    (tree / "sub").mkdir(parents=True)
    plain = captures["pcap"]
    (tree / "a.pcap").write_bytes(plain)
    (tree / "b.pcapng.gz").write_bytes(pack("gzip", captures["pcapng"]))
    (tree / "sub" / "c.pcap.zst").write_bytes(pack("zstd", plain))
    (tree / "trace.gz").write_bytes(pack("gzip", plain))                    # no capture extension
    (tree / "sub" / "dump.pcap1.lz4").write_bytes(pack("lz4", plain))      # tcpdump -C rotation name
    (tree / "notes.txt.gz").write_bytes(gzip.compress(b"meeting notes\n" * 50))
    (tree / "logs.tar.zst").write_bytes(zstd.compress(b"\0" * 1000))
    (tree / "readme.md").write_text("not a capture")
    found = sorted(str(f.relative_to(tree)) for f, _ in find_captures([tree]))
    assert found == ["a.pcap", "b.pcapng.gz", "sub/c.pcap.zst", "sub/dump.pcap1.lz4", "trace.gz"]


# --- reading ----------------------------------------------------------------------------------------

SHAPES = {
    "one member": dict(parts=1),
    "several members, one empty": dict(parts=5, empty=True),
    "no content size": dict(parts=3, content_size=False),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_reader_reads_every_shape_record_for_record(workdir, captures, kind, shape, fmt):
    plain = captures[fmt]
    opts = dict(SHAPES[shape])
    empty = opts.pop("empty", False)
    blob = pack(kind, plain, **opts)
    if empty:
        blob = pack(kind, b"") + blob + pack(kind, b"")
    path = workdir / f"in.{fmt}{SUFFIX[kind]}"
    path.write_bytes(blob)
    (workdir / f"plain.{fmt}").write_bytes(plain)
    with CaptureReader(path) as reader:
        assert reader.compression == kind and reader.size == len(blob)
        got = [rec for batch in reader.batches(500) for rec in batch]
        assert reader.position == len(blob) and reader.offset == len(plain)
        assert reader.warnings == []
    assert got == records(workdir / f"plain.{fmt}")


@pytest.mark.parametrize("kind", ["zstd", "lz4"])
def test_skippable_frames_are_skipped(workdir, captures, kind):
    plain = captures["pcap"]
    skip = struct.pack("<II", 0x184D2A53, 6) + b"pzstd!"
    path = workdir / "x.pcap"
    path.write_bytes(skip + pack(kind, plain[:40000]) + skip + pack(kind, plain[40000:]))
    assert packets(path) == packets_of(plain, workdir)


@pytest.mark.parametrize("kind", KINDS)
def test_standard_tools_output_reads_identically(workdir, captures, kind):
    src = workdir / "gen.pcapng"
    src.write_bytes(captures["pcapng"])
    packed = tool(kind, src, workdir / f"gen.pcapng{SUFFIX[kind]}")
    assert records(packed) == records(src)


def test_memory_stays_bounded_whatever_the_ratio(workdir):
    """128 MiB of capture in a file of under a MiB: reading it holds about one read chunk, not the data."""
    frame = bytes(1500)
    rec = struct.pack("<IIII", 1, 0, len(frame), len(frame)) + frame
    comp = zstd.ZstdCompressor()
    path = workdir / "bomb.pcap.zst"
    n = (128 << 20) // len(rec)
    with open(path, "wb") as fh:
        fh.write(comp.compress(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)))
        chunk = rec * 4096
        for _ in range(n // 4096):
            fh.write(comp.compress(chunk))
        fh.write(comp.flush())
    assert path.stat().st_size < (1 << 20)
    tracemalloc.start()
    try:
        count = 0
        with CaptureReader(path) as reader:
            for batch in reader.batches():
                count += len(batch)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == n // 4096 * 4096
    assert peak < 16 << 20, peak


# --- processing: named and compressed as the input, identical to the plain file's output ---------------

def run_pair(workdir: Path, data: bytes, name: str, packed: bytes, ops=ALL, **settings):
    """Process the plain capture and its compressed form alike; return (plain result, packed result)."""
    plain_in = workdir / "plain" / ("cap" + os.path.splitext(split_name(name)[0])[1])
    plain_in.parent.mkdir(exist_ok=True)
    plain_in.write_bytes(data)
    packed_in = workdir / "packed" / name
    packed_in.parent.mkdir(exist_ok=True)
    packed_in.write_bytes(packed)
    s = settings_for(workdir, **settings)
    a = run_job(Job(plain_in, workdir / "out-plain", list(ops)), s)
    b = run_job(Job(packed_in, workdir / "out-packed", list(ops)), s)
    return a, b


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_output_is_compressed_as_its_input_and_identical_once_decompressed(workdir, captures, kind, fmt):
    data = captures[fmt]
    a, b = run_pair(workdir, data, f"cap.{fmt}{SUFFIX[kind]}", pack(kind, data, parts=2))
    assert a.status == b.status == "ok", (a.error, b.error)
    assert Path(b.output).name == f"cap-sanitized.{fmt}{SUFFIX[kind]}"
    assert (b.input_compression, b.output_compression) == (kind, kind)
    assert (a.input_compression, a.output_compression) == (None, None)
    out = Path(b.output).read_bytes()
    assert detect(out) == kind
    assert unpack(kind, out) == Path(a.output).read_bytes()
    assert (b.packets_in, b.packets_out, b.stages) == (a.packets_in, a.packets_out, a.stages)
    assert leftovers(workdir) == []
    if TSHARK:
        assert tshark_count(Path(b.output)) == b.packets_out


@pytest.mark.parametrize("kind", KINDS)
def test_each_operation_alone_on_a_compressed_input(workdir, captures, kind):
    data = captures["pcap"]
    for op in ALL:
        sub = workdir / op
        sub.mkdir()
        a, b = run_pair(sub, data, f"cap.pcap{SUFFIX[kind]}", pack(kind, data), ops=[op])
        assert a.status == b.status == "ok", (op, a.error, b.error)
        assert unpack(kind, Path(b.output).read_bytes()) == Path(a.output).read_bytes(), op


@pytest.mark.parametrize("choice", ["none", "gzip", "zstd", "lz4"])
def test_compress_setting_chooses_the_output_compression(workdir, captures, choice):
    data = captures["pcap"]
    a, b = run_pair(workdir, data, "cap.pcap.gz", pack("gzip", data), compress=choice)
    kind = None if choice == "none" else choice
    assert a.status == b.status == "ok"
    assert b.output_compression == kind and a.output_compression == kind
    expected = "cap-sanitized.pcap" + (SUFFIX[kind] if kind else "")
    assert Path(b.output).name == expected and Path(a.output).name == expected
    out = Path(b.output).read_bytes()
    assert detect(out) == kind
    assert (unpack(kind, out) if kind else out) == \
        (unpack(kind, Path(a.output).read_bytes()) if kind else Path(a.output).read_bytes())


def test_taken_name_becomes_dash_one_before_the_extensions(workdir, captures):
    data = captures["pcapng"]
    src = workdir / "x.pcapng.gz"
    src.write_bytes(pack("gzip", data))
    out = workdir / "out"
    out.mkdir()
    (out / "x-sanitized.pcapng.gz").write_bytes(b"someone's file")
    result = run_job(Job(src, out, ["dedup"]), settings_for(workdir))
    assert result.status == "ok" and Path(result.output).name == "x-sanitized-1.pcapng.gz"
    assert (out / "x-sanitized.pcapng.gz").read_bytes() == b"someone's file"
    assert any("already existed" in w for w in result.warnings)


def test_pcapng_with_a_section_length_is_written_plain_then_compressed(workdir, captures):
    """A section header that gives its length gets the output's patched in at the end: the compressed
    output holds exactly the bytes of the plain output (section length included)."""
    src = workdir / "gen.pcapng"
    src.write_bytes(captures["pcapng"])
    recs = records(src)
    assert recs[0][5] == SHB
    recs[0] = (make_shb_body("<", section_length=0),) + recs[0][1:]
    sized = workdir / "sized.pcapng"
    with open(sized, "wb") as fh:
        writer = CaptureWriter(fh, "pcapng")
        writer.write_batch(recs)
        writer.close()
    data = sized.read_bytes()
    assert struct.unpack_from("<q", data, 16)[0] == len(data) - len(records_bytes_shb(data))
    for kind in KINDS:
        sub = workdir / kind
        sub.mkdir()
        a, b = run_pair(sub, data, f"s.pcapng{SUFFIX[kind]}", pack(kind, data))
        assert a.status == b.status == "ok", (a.error, b.error)
        plain_out = Path(a.output).read_bytes()
        assert struct.unpack_from("<q", plain_out, 16)[0] != -1
        assert unpack(kind, Path(b.output).read_bytes()) == plain_out
        assert leftovers(sub) == []


def records_bytes_shb(data: bytes) -> bytes:
    return data[:struct.unpack_from("<I", data, 4)[0]]


@pytest.mark.parametrize("kind", KINDS)
def test_standard_tools_inputs_through_the_cli(workdir, captures, kind):
    """As the issue is judged: a capture compressed with the standard tool, all three operations through
    `pktmask-gui process`, exit 0, named and compressed as the input, identical to the plain output."""
    src = workdir / "in" / "cap.pcapng"
    src.parent.mkdir()
    src.write_bytes(captures["pcapng"])
    tool(kind, src, workdir / "in" / f"cap.pcapng{SUFFIX[kind]}")
    proc = cli("process", workdir / "in", "-o", workdir / "out", *[f"--{op}" for op in ALL], "--json",
               "--temp-dir", workdir)
    assert proc.returncode == 0, proc.stderr
    files = {Path(f["input"]).name: f for f in json.loads(proc.stdout)["files"]}
    entry = files[f"cap.pcapng{SUFFIX[kind]}"]
    assert (entry["input_compression"], entry["output_compression"]) == (kind, kind)
    assert files["cap.pcapng"]["input_compression"] is None
    out = workdir / "out" / f"cap-sanitized.pcapng{SUFFIX[kind]}"
    assert Path(entry["output"]) == out
    decompressed = subprocess.run(TOOL[kind][:1] + ["-d", "-c", str(out)], capture_output=True, check=True).stdout
    assert decompressed == (workdir / "out" / "cap-sanitized.pcapng").read_bytes()
    assert f"{kind}-compressed in and out" in proc.stderr
    assert leftovers(workdir) == []
    if TSHARK:
        assert tshark_count(out) == entry["packets_out"]


def test_corpus_captures_compressed_each_way(workdir, corpus_dir):
    """Every real capture of the corpus, plain and compressed each way, in one CLI batch: each compressed
    output decompresses to the plain one's output (or both fail alike), and tshark reads it."""
    src = workdir / "in"
    src.mkdir()
    names = sorted(p.name for p in corpus_dir.iterdir() if p.suffix in (".pcap", ".pcapng"))
    assert names
    for name in names:
        data = (corpus_dir / name).read_bytes()
        (src / name).write_bytes(data)
        for kind in KINDS:
            (src / (name + SUFFIX[kind])).write_bytes(pack(kind, data))
    (workdir / "temp").mkdir()
    proc = cli("process", src, "-o", workdir / "out", *[f"--{op}" for op in ALL], "--json", "--jobs", "1",
               "--temp-dir", workdir / "temp", timeout=600)
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    files = {Path(f["input"]).name: f for f in json.loads(proc.stdout)["files"]}
    assert len(files) == 4 * len(names)
    outputs = {}
    for name in names:
        plain = files[name]
        for kind in KINDS:
            entry = files[name + SUFFIX[kind]]
            assert entry["status"] == plain["status"], (name, kind, entry["error"], plain["error"])
            if plain["status"] != "ok":
                assert entry["output"] is None
                continue
            out = Path(entry["output"])
            assert out.name == Path(plain["output"]).name + SUFFIX[kind]
            assert unpack(kind, out.read_bytes()) == Path(plain["output"]).read_bytes(), (name, kind)
            assert entry["packets_out"] == plain["packets_out"]
            outputs[out] = entry["packets_out"]
    assert len(outputs) >= 3 * 30
    # (the corpus's own names start with "pktmask__")
    assert leftovers(workdir / "temp") == [] and list((workdir / "out").rglob("pktmask_output_*")) == []
    # Wireshark's own reader (capinfos: tshark's library, one process for every file) reads them all
    if CAPINFOS:
        proc = subprocess.run([CAPINFOS, "-c", "-T", "-r", *map(str, outputs)], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        counts = dict(line.rsplit("\t", 1) for line in proc.stdout.splitlines() if "\t" in line)
        assert {Path(k).name: int(v) for k, v in counts.items()} == {p.name: n for p, n in outputs.items()}


# --- damage -----------------------------------------------------------------------------------------

def complete_packets(plain: bytes, prefix_len: int, workdir: Path) -> int:
    """Packets wholly inside the first ``prefix_len`` bytes of the plain capture."""
    if prefix_len < 24:
        return 0
    path = workdir / "prefix.pcap"
    path.write_bytes(plain[:prefix_len])
    try:
        return len(packets(path))
    finally:
        path.unlink()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fraction", [0.5, 0.93])
def test_cut_stream_keeps_its_complete_packets_with_a_warning(workdir, captures, kind, fraction):
    plain = captures["pcap"]
    blob = pack(kind, plain)
    cut = blob[:int(len(blob) * fraction)]
    src = workdir / f"cut.pcap{SUFFIX[kind]}"
    src.write_bytes(cut)
    result = run_job(Job(src, workdir / "out", ["dedup"]), settings_for(workdir))
    assert result.status == "ok", result.error
    assert any(f"the {kind} stream is cut short" in w for w in result.warnings), result.warnings
    # what the codec's own streaming decoder gives of the cut file: our packets are at least those
    if kind == "gzip":
        floor = len(zlib.decompressobj(31).decompress(cut))
    elif kind == "zstd":
        floor = len(zstd.ZstdDecompressor().decompress(cut))
    else:
        floor = 0       # lz4 decodes whole blocks only; ours decodes the cut block too (below)
    kept = result.packets_in
    assert kept >= complete_packets(plain, floor, workdir)
    assert kept >= 0.8 * fraction * len(packets_of(plain, workdir)), kept   # most of what came before the cut
    # the output: compressed as the input, its packets the first ones of the whole file's output
    (workdir / "whole.pcap").write_bytes(plain)
    full = run_job(Job(workdir / "whole.pcap", workdir / "out-whole", ["dedup"]), settings_for(workdir))
    out_packets = packets(result.output)
    assert out_packets == packets(full.output)[:len(out_packets)]
    assert detect(Path(result.output).read_bytes()) == kind
    assert leftovers(workdir) == []


def test_cut_lz4_from_the_tool_keeps_packets_of_its_cut_4_mib_block(workdir, captures):
    """The lz4 tool writes 4 MiB blocks: a cut capture below 8 MiB would lose every packet if only whole
    blocks were decoded (as the library does)."""
    src = workdir / "gen.pcap"
    src.write_bytes(captures["pcap"])
    packed = tool("lz4", src, workdir / "gen.pcap.lz4").read_bytes()
    assert len(captures["pcap"]) < 4 << 20
    cut = workdir / "cut.pcap.lz4"
    cut.write_bytes(packed[:len(packed) // 2])
    proc = cli("process", cut, "-o", workdir / "out", "--dedup", "--anonymize", "--mask", "--json",
               "--temp-dir", workdir)
    assert proc.returncode == 0, proc.stderr
    (entry,) = json.loads(proc.stdout)["files"]
    assert entry["packets_in"] > 0.4 * len(packets(src))
    assert any("cut short" in w for w in entry["warnings"])


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_cut_before_the_capture_header_gives_an_output_with_no_packet(workdir, captures, fmt):
    """zstd decodes whole blocks (128 KiB): a small capture cut inside its only block gives no byte. A
    stream cut short is still no failure (as Wireshark, which reads such a file as holding no packet)."""
    blob = pack("zstd", captures[fmt][:20000])
    src = workdir / f"tiny.{fmt}.zst"
    src.write_bytes(blob[:len(blob) // 2])
    result = run_job(Job(src, workdir / "out", ALL), settings_for(workdir))
    assert result.status == "ok", result.error
    assert result.warnings == ["the zstd stream is cut short before the capture's header could be decoded, "
                               "so no packet could be read from it; the output holds no packet"]
    assert (result.packets_in, result.packets_out) == (0, 0)
    out = Path(result.output)
    assert out.name == f"tiny-sanitized.{fmt}.zst" and detect(out.read_bytes()) == "zstd"
    assert packets(out) == []
    with CaptureReader(out) as reader:
        assert reader.format == fmt
    if TSHARK:
        assert tshark_count(out) == 0
    assert leftovers(workdir) == []


def test_cut_inside_a_later_section_header_keeps_the_packets_before(workdir, captures):
    one = captures["pcapng"]
    data = one + one[:20]                   # a second section whose header the cut went through
    src = workdir / "two.pcapng.gz"
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    src.write_bytes(comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH))   # all of it, never finished
    result = run_job(Job(src, workdir / "out", ["dedup"]), settings_for(workdir))
    assert result.status == "ok", result.error
    assert result.packets_in == len(packets_of_ng(one, workdir))
    assert any("cut short" in w for w in result.warnings)


def packets_of_ng(data: bytes, workdir: Path) -> list:
    path = workdir / "plain-copy.pcapng"
    path.write_bytes(data)
    try:
        return packets(path)
    finally:
        path.unlink()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", [0.3, 0.6, 0.97])
def test_corrupt_stream_fails_naming_the_format_and_the_offset(workdir, captures, kind, where):
    plain = captures["pcapng"]
    blob = bytearray(pack(kind, plain))
    at = int(len(blob) * where)
    blob[at:at + 4] = bytes(b ^ 0xA5 for b in blob[at:at + 4])
    src = workdir / f"bad.pcapng{SUFFIX[kind]}"
    src.write_bytes(bytes(blob))
    out = workdir / "out"
    result = run_job(Job(src, out, ALL), settings_for(workdir))
    assert result.status == "failed"
    assert result.error.startswith(f"the {kind} data is corrupt ")
    assert "of the compressed file" in result.error and "\n" not in result.error
    numbers = [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", result.error)]
    assert any(0 <= n <= len(blob) for n in numbers)
    assert result.output is None and (not out.exists() or not any(out.iterdir()))
    assert leftovers(workdir) == []


def test_corrupt_stream_through_the_cli_is_one_failed_line(workdir, captures):
    blob = bytearray(pack("gzip", captures["pcap"]))
    blob[len(blob) // 2] ^= 0xFF
    src = workdir / "bad.pcap.gz"
    src.write_bytes(bytes(blob))
    good = workdir / "good.pcap.zst"
    good.write_bytes(pack("zstd", captures["pcap"]))
    proc = cli("process", src, good, "-o", workdir / "out", "--dedup", "--temp-dir", workdir)
    assert proc.returncode == 1
    failed = [line for line in proc.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "the gzip data is corrupt" in failed[0] and "compressed file" in failed[0]
    assert sorted(p.name for p in (workdir / "out").iterdir()) == ["good-sanitized.pcap.zst"]
    assert leftovers(workdir) == []


def test_garbage_after_the_last_member_is_ignored_with_a_warning(workdir, captures):
    src = workdir / "x.pcap.gz"
    src.write_bytes(pack("gzip", captures["pcap"]) + b"this is not gzip")
    result = run_job(Job(src, workdir / "out", ["dedup"]), settings_for(workdir))
    assert result.status == "ok"
    assert result.warnings == ["the last 16 bytes of the file are not gzip data and were ignored"]


def test_text_inside_gzip_fails_clearly(workdir):
    src = workdir / "notes.pcap.gz"
    src.write_bytes(gzip.compress(b"Meeting notes\n" * 10))
    result = run_job(Job(src, workdir / "out", ["dedup"]), settings_for(workdir))
    assert result.status == "failed"
    assert result.error == ("the gzip-compressed file does not hold a pcap or pcapng capture (its data starts "
                            "with the bytes 4d 65 65 74)")


def test_capture_damage_inside_good_compressed_data_says_where_in_the_capture(workdir, captures):
    data = bytearray(captures["pcap"])
    struct.pack_into("<I", data, 24 + 8, 300000)        # first record's caplen above the limit
    src = workdir / "x.pcap.zst"
    src.write_bytes(pack("zstd", bytes(data)))
    result = run_job(Job(src, workdir / "out", ["dedup"]), settings_for(workdir))
    assert result.status == "failed"
    assert result.error == ("packet 1 claims a captured length of 300000 bytes, above the 262144-byte limit "
                            "at byte 24 of the decompressed capture (the file is zstd-compressed)")


def test_a_compressor_that_loses_data_fails_the_self_check(workdir, captures, monkeypatch):
    """The self-check reads a compressed output back through a decompressor: a chunk lost on the way
    fails the file."""
    real = compression.CompressingWriter.write
    calls = []

    def lossy(self, data):
        calls.append(len(data))
        return len(data) if len(calls) == 2 else real(self, data)

    monkeypatch.setattr(compression.CompressingWriter, "write", lossy)
    generate(workdir / "x.pcap", packets=20000, seed=5)
    src = workdir / "x.pcap.zst"
    src.write_bytes(pack("zstd", (workdir / "x.pcap").read_bytes()))
    (workdir / "x.pcap").unlink()
    result = run_job(Job(src, workdir / "out", ["anonymize"]), settings_for(workdir))
    assert len(calls) >= 2
    assert result.status == "failed" and result.error.startswith("self-check failed"), result.error
    assert leftovers(workdir) == [] and not any((workdir / "out").iterdir())


def test_compressing_writer_relays_a_write_error(workdir):
    class Full:
        def write(self, data):
            raise OSError(28, "No space left on device")

    writer = compression.CompressingWriter(Full(), "zstd")
    with pytest.raises(OSError) as info:
        for _ in range(64):
            writer.write(os.urandom(1 << 20))
        writer.close()
    assert info.value.errno == 28
    writer.abort()
    assert not writer._thread.is_alive()


# --- cancel, progress -------------------------------------------------------------------------------

class CancelAt:
    """A cancel event that is set once the job's progress passes ``fraction`` of its work."""

    def __init__(self, fraction: float):
        self.fraction = fraction
        self.event = threading.Event()
        self.reports = []

    def __call__(self, phase, done, total, packets):
        self.reports.append((phase, done, total))
        if done >= self.fraction * total:
            self.event.set()


@pytest.mark.parametrize("kind", KINDS)
def test_cancel_mid_file_leaves_nothing(workdir, kind):
    src = workdir / f"big.pcap{SUFFIX[kind]}"
    generate(workdir / "big.pcap", packets=30000, seed=3)
    src.write_bytes(pack(kind, (workdir / "big.pcap").read_bytes()))
    (workdir / "big.pcap").unlink()
    for fraction in (0.2, 0.7):
        cancel = CancelAt(fraction)
        result = run_job(Job(src, workdir / "out", ALL), settings_for(workdir), progress=cancel,
                         cancel=cancel.event)
        assert result.status == "cancelled" and result.output is None
        assert not (workdir / "out").exists() or not any((workdir / "out").iterdir())
        assert leftovers(workdir) == []
        assert not [t.name for t in threading.enumerate() if t.name.startswith("pktmask-")]   # threads ended


def test_cancel_in_a_child_process_leaves_nothing(workdir):
    from pktmask_gui.jobs import run_job_process

    generate(workdir / "big.pcap", packets=30000, seed=4)
    src = workdir / "big.pcap.gz"
    src.write_bytes(pack("gzip", (workdir / "big.pcap").read_bytes()))
    cancel = CancelAt(0.4)
    result = run_job_process(Job(src, workdir / "out", ALL), settings_for(workdir), progress=cancel,
                             cancel=cancel.event)
    assert result.status == "cancelled"
    assert leftovers(workdir) == [] and not any((workdir / "out").iterdir())


def test_progress_follows_the_compressed_bytes_read(workdir, captures):
    generate(workdir / "x.pcap", packets=20000, seed=6)
    src = workdir / "x.pcap.zst"
    src.write_bytes(pack("zstd", (workdir / "x.pcap").read_bytes()))
    (workdir / "x.pcap").unlink()
    size = src.stat().st_size
    seen = []
    result = run_job(Job(src, workdir / "out", ["dedup", "mask"]), settings_for(workdir),
                     progress=lambda phase, done, total, pk: seen.append((phase, done, total)))
    assert result.status == "ok"
    assert {total for _, _, total in seen} == {size}
    dones = [done for _, done, _ in seen]
    assert dones == sorted(dones) and 0.5 * size < dones[-1] <= size and len(dones) >= 3
    assert {phase for phase, _, _ in seen} == {"prescan", "process"}


def test_the_decision_is_logged(workdir, captures, caplog):
    src = workdir / "x.pcapng.lz4"
    src.write_bytes(pack("lz4", captures["pcapng"]))
    with caplog.at_level("INFO", logger="pktmask_gui"):
        result = run_job(Job(src, workdir / "out", ["dedup"]), settings_for(workdir))
    assert result.status == "ok"
    text = caplog.text
    assert "lz4-compressed input" in text and "decompressed as it is read, on every pass" in text
    assert "the output is lz4-compressed (level 0)" in text


def test_cli_compress_option_and_usage_error(workdir, captures):
    src = workdir / "x.pcap"
    src.write_bytes(captures["pcap"])
    proc = cli("process", src, "-o", workdir / "out", "--dedup", "--compress", "zstd", "--json",
               "--temp-dir", workdir)
    assert proc.returncode == 0, proc.stderr
    (entry,) = json.loads(proc.stdout)["files"]
    assert entry["output"].endswith("x-sanitized.pcap.zst") and entry["output_compression"] == "zstd"
    assert "written zstd-compressed" in proc.stderr
    bad = cli("process", src, "-o", workdir / "out", "--dedup", "--compress", "bzip2")
    assert bad.returncode == 2 and "--compress" in bad.stderr
    s = Settings(compress="bzip2")
    assert any("Output compression" in p for p in s.validate())
