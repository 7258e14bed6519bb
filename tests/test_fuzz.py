"""Seeded fuzzing of the readers and every stage, through run_job (the CI slice) and scripts/fuzz.py (long runs).

Inputs: small generated captures (pcap LE/BE, µs/ns, pcapng LE/BE with metadata) and the small files of
../shared/corpus when present, mutated by bit flips, byte sets, truncations, splices and edits of the length
fields (pcap record caplen/origlen, pcapng block lengths and packet caplen/interface ids) to boundary values.

Property of one input (``check_input``): the reader either reads it or raises CaptureError; run_job with
the drawn operations (scrub included) either fails with a one-line message that is not an "internal
error", or succeeds with an output that re-reads cleanly, in the same format, with no more packets than
went in; never a hang (SIGALRM), never a leftover in the temp root or the output folder, input unchanged.

Crashes that scripts/fuzz.py finds are saved in tests/data/fuzz/ and replayed here by
``test_fuzz_regressions``.
"""
from __future__ import annotations

import io
import signal
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import CORPUS, REPO
from hypothesis import HealthCheck, given, settings, strategies as st

from pktmask_gui.capture import (CaptureError, CaptureReader, EPB, IDB, META, SHB, build_options, make_idb_body,
                                 make_shb_body)
from pktmask_gui.capturewriter import CaptureWriter
from pktmask_gui.pipeline import Job, run_job
from pktmask_gui.samplegen import generate, tcp4_frame
from pktmask_gui.settings import Settings
from pktmask_gui.stages import operations

REGRESSIONS = REPO / "tests" / "data" / "fuzz"
HANG_S = 20
INTERESTING = (0, 1, 3, 4, 8, 11, 12, 13, 16, 20, 28, 31, 32, 0xFF, 0xFFFF, 65536, 262143, 262144, 262145,
               0x7FFFFFFF, 0x80000000, 0xFFFFFFFC, 0xFFFFFFFF)


# --------------------------------------------------------------------------------------------------
# seed inputs

def _generated(fmt: str, **kw) -> bytes:
    with tempfile.TemporaryDirectory(prefix="pktmask_test_") as d:
        path = Path(d) / f"seed.{fmt}"
        generate(path, packets=40, fmt=fmt, dup_ratio=0.2, **kw)
        return path.read_bytes()


def _metadata_rich() -> bytes:
    """pcapng with comments, custom options, strings and an unknown block: the scrub's food."""
    e = "<"
    f = tcp4_frame("192.0.2.1", "198.51.100.2", 40000, 443, 1, 0, 0x18, payload=b"\x16\x03\x01\x00\x05hello")
    buf = io.BytesIO()
    w = CaptureWriter(buf, "pcapng")
    w.write_batch([
        (make_shb_body(e, build_options([(1, b"a comment"), (2, b"hw"), (4, b"app")], e)), META, 0, 0, 0, SHB),
        (make_idb_body(1, 0, e, build_options([(2, b"eth0"), (4, bytes(8)), (9, b"\x09")], e)), META, 0, 0, 0, IDB),
        (f, 1, 10 ** 18, len(f), 0, (EPB, build_options([(1, b"pkt"), (2, b"\1\0\0\0"), (2988, b"\0\0\0\0x")], e))),
        (b"\0\0\0\0vendor", META, 0, 0, 0, 0xBAD),
        (b"unknown", META, 0, 0, 0, 0x77),
        (f, 1, 10 ** 18 + 1, len(f), 0, (EPB, b"")),
    ])
    w.close()
    return buf.getvalue()


def seed_inputs() -> list[tuple[str, bytes]]:
    seeds = [
        ("gen-le-us.pcap", _generated("pcap")),
        ("gen-be-ns.pcap", _generated("pcap", endian=">", nanos=True, seed=1)),
        ("gen-le.pcapng", _generated("pcapng", seed=2)),
        ("gen-be-ns.pcapng", _generated("pcapng", endian=">", nanos=True, seed=3)),
        ("meta.pcapng", _metadata_rich()),
    ]
    if CORPUS.is_dir():
        for path in sorted(CORPUS.iterdir()):
            if path.suffix in (".pcap", ".pcapng") and path.stat().st_size <= 8192:
                seeds.append((path.name, path.read_bytes()))
    return seeds


def frame_regions(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every packet's captured bytes in a well-formed seed (pcap records and pcapng EPBs)."""
    regions = []
    fields = length_fields(data)
    magic = data[:4]
    if magic == b"\x0a\x0d\x0d\x0a":
        off, e = 0, "<"
        while off + 12 <= len(data):
            btype = struct.unpack_from("<I", data, off)[0]
            if btype == SHB:
                e = "<" if data[off + 8:off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            blen = struct.unpack_from(e + "I", data, off + 4)[0]
            if blen < 12:
                break
            if struct.unpack_from(e + "I", data, off)[0] == EPB:
                caplen = struct.unpack_from(e + "I", data, off + 20)[0]
                regions.append((off + 28, off + 28 + caplen))
            off += blen
    elif fields:
        e = fields[0][1][0]
        off = 24
        while off + 16 <= len(data):
            caplen = struct.unpack_from(e + "I", data, off + 8)[0]
            regions.append((off + 16, off + 16 + caplen))
            off += 16 + caplen
    return [r for r in regions if r[1] > r[0]]


def length_fields(data: bytes) -> list[tuple[int, str]]:
    """(offset, struct format) of every length-like field: pcap caplen/origlen, pcapng block lengths,
    packet caplen/origlen and interface ids. Walks the well-formed seed once."""
    fields = []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = "<" if magic[0] in (0xD4, 0x4D) else ">"
        fields.append((16, e + "I"))                       # snaplen
        off = 24
        while off + 16 <= len(data):
            caplen = struct.unpack_from(e + "I", data, off + 8)[0]
            fields += [(off + 8, e + "I"), (off + 12, e + "I")]
            off += 16 + caplen
    elif magic == b"\x0a\x0d\x0d\x0a":
        off, e = 0, "<"
        while off + 12 <= len(data):
            btype = struct.unpack_from("<I", data, off)[0]
            if btype == SHB:
                e = "<" if data[off + 8:off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
                fields.append((off + 16, e + "q"))         # section length
            blen = struct.unpack_from(e + "I", data, off + 4)[0]
            if blen < 12:
                break
            fields += [(off + 4, e + "I"), (off + blen - 4, e + "I")]
            if struct.unpack_from(e + "I", data, off)[0] == EPB:
                fields += [(off + 8, e + "I"), (off + 20, e + "I"), (off + 24, e + "I")]
            off += blen
    return fields


SEEDS = seed_inputs()
FIELDS = [length_fields(data) for _, data in SEEDS]
REGIONS = [frame_regions(data) for _, data in SEEDS]


# --------------------------------------------------------------------------------------------------
# mutations

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20), st.just(0)),
    st.tuples(st.just("length"), st.integers(0, 1 << 16), st.sampled_from(INTERESTING + ("+4", "-4", "+1"))),
    st.tuples(st.just("splice"), st.integers(0, 1 << 20), st.integers(1, 64)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 20), st.integers(1, 64)),
    # inside a frame, mostly in its first 64 bytes (headers): the frame walker, anonymizer and masker
    st.tuples(st.just("frame"), st.integers(0, 1 << 24), st.integers(0, 255)),
    st.tuples(st.just("frame"), st.integers(0, 1 << 24), st.sampled_from((0, 0xFF, 0x45, 0x60, 0x16, 0x17, 0x81))),
)


def mutate(data: bytes, fields: list, mutations, regions: list = ()) -> bytes:
    b = bytearray(data)
    for kind, a, v in mutations:
        if not b:
            break
        pos = a % len(b)
        if kind == "frame":
            if not regions:
                continue
            start, end = regions[a % len(regions)]
            span = end - start if (a >> 20) & 1 else min(end - start, 64)
            at = start + (a // len(regions)) % span
            if at < len(b):
                b[at] = v
        elif kind == "flip":
            b[pos] ^= 1 << v
        elif kind == "set":
            b[pos] = v
        elif kind == "truncate":
            del b[pos:]
        elif kind == "splice":                         # copy a chunk of the file to another place
            b[pos:pos] = b[(a * 7) % len(b):(a * 7) % len(b) + v]
        elif kind == "cut":
            del b[pos:pos + v]
        elif kind == "length" and fields:
            off, fmt = fields[a % len(fields)]
            size = struct.calcsize(fmt)
            if off + size > len(b):
                continue
            old = struct.unpack_from(fmt, b, off)[0]
            new = {"+4": old + 4, "-4": old - 4, "+1": old + 1}.get(v, v) if isinstance(v, str) else v
            if fmt[-1] == "q":
                new = new if -(1 << 63) <= new < (1 << 63) else -1
            else:
                new &= 0xFFFFFFFF
            struct.pack_into(fmt, b, off, new)
    return bytes(b)


# --------------------------------------------------------------------------------------------------
# the property

class Hang(Exception):
    pass


@contextmanager
def alarm(seconds: int):
    def fire(*_):
        raise Hang(f"no answer within {seconds} s")
    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


OPERATION_SETS = None


def operation_sets() -> list[list[str]]:
    global OPERATION_SETS
    if OPERATION_SETS is None:
        names = list(dict.fromkeys(cls.name for cls in operations()))
        OPERATION_SETS = [[n] for n in names] + ([names] if len(names) > 1 else [])
    return OPERATION_SETS


def check_input(data: bytes, name: str, ops: list[str]) -> str:
    """Run the property on one input; return the outcome ("ok" or "failed: <first words>"); raise
    AssertionError (or Hang) when the property does not hold."""
    with tempfile.TemporaryDirectory(prefix="pktmask_test_") as d, alarm(HANG_S):
        root = Path(d)
        src = root / name
        src.write_bytes(data)
        temp, out = root / "temp", root / "out"
        temp.mkdir()
        # the reader alone: reads or raises CaptureError
        try:
            with CaptureReader(src) as reader:
                for _ in reader.batches(64):
                    pass
            read_ok = True
        except CaptureError as exc:
            assert "\n" not in str(exc)
            read_ok = False
        key = root / "key"
        key.write_bytes(bytes(range(32)))
        result = run_job(Job(src, out, list(ops), key_file=key),
                         Settings(temp_root=str(temp), parallel_jobs=1, large_file_threshold_mb=0))
        assert result.status in ("ok", "failed"), result.status
        assert read_ok or result.status == "failed", "the job succeeded on a file the reader rejects"
        leftovers = [p.name for p in temp.iterdir()]
        assert leftovers == [], leftovers
        written = sorted(p.name for p in out.rglob("*")) if out.exists() else []
        assert src.read_bytes() == data, "the input was modified"
        if result.status == "failed":
            assert result.error and "\n" not in result.error, result.error
            assert not result.error.startswith("internal error"), result.error
            assert written == [], written
            return "failed: " + result.error
        assert written == [Path(result.output).name], written
        with CaptureReader(result.output) as reader:
            packets = 0
            for batch in reader.batches():
                packets += sum(1 for r in batch if r[1] >= 0)
            fmt = reader.format
        assert packets == result.packets_out <= result.packets_in
        with CaptureReader(src) as reader:
            assert reader.format == fmt
        if fmt == "pcapng":
            assert_metadata_scrubbed(Path(result.output))
        return "ok"


def assert_metadata_scrubbed(path: Path) -> None:
    """The default scrub ran: no comment, custom or undefined option, packet hash, NRB, DSB, custom block,
    section string or interface string is left."""
    from pktmask_gui.capture import CB_COPY, CB_NOCOPY, DSB, ISB, NRB, PB, parse_options, section_endian
    from pktmask_gui.stages.scrub import CUSTOM_OPTIONS, IDB_STRINGS, KNOWN_OPTIONS, SHB_STRINGS

    banned = {1} | CUSTOM_OPTIONS
    endian = "<"

    def check(codes: set, btype: int, extra=frozenset()) -> None:
        assert not codes & (banned | extra), codes
        assert codes <= KNOWN_OPTIONS[btype], codes

    with CaptureReader(path) as reader:
        for batch in reader.batches():
            for rec in batch:
                kind = rec[5]
                if rec[1] >= 0:
                    if kind and kind[0] in (EPB, PB):
                        check({c for c, _ in parse_options(kind[1], endian)}, kind[0], {3})
                    continue
                assert kind not in (NRB, DSB, CB_COPY, CB_NOCOPY), hex(kind)
                if kind == SHB:
                    endian = section_endian(rec[0])
                    check({c for c, _ in parse_options(rec[0][16:], endian)}, SHB, SHB_STRINGS)
                elif kind == IDB:
                    check({c for c, _ in parse_options(rec[0][8:], endian)}, IDB, IDB_STRINGS)
                elif kind == ISB:
                    check({c for c, _ in parse_options(rec[0][12:], endian)}, ISB)


# --------------------------------------------------------------------------------------------------
# the CI slice: deterministic, a few hundred examples

inputs = st.tuples(st.integers(0, len(SEEDS) - 1), st.lists(mutation, min_size=1, max_size=4),
                   st.integers(0, 1 << 16))


def run_example(example) -> str:
    idx, mutations, op_pick = example
    name, data = SEEDS[idx]
    sets = operation_sets()
    return check_input(mutate(data, FIELDS[idx], mutations, REGIONS[idx]), name, sets[op_pick % len(sets)])


@settings(max_examples=300, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(inputs)
def test_fuzz_slice(example):
    run_example(example)


def test_unmutated_seeds_all_succeed():
    for name, data in SEEDS:
        for ops in operation_sets():
            assert check_input(data, name, ops) == "ok", (name, ops)


def test_length_fields_and_frames_found_in_every_seed(workdir):
    assert all(FIELDS), [name for (name, _), f in zip(SEEDS, FIELDS) if not f]
    for (name, data), regions in zip(SEEDS, REGIONS):
        path = workdir / name
        path.write_bytes(data)
        with CaptureReader(path) as reader:
            frames = [r[0] for b in reader.batches() for r in b if r[1] >= 0 and (r[5] is None or r[5][0] == EPB)]
        assert [data[s:e] for s, e in regions] == [f for f in frames if f], name


_RECORDED = sorted(REGRESSIONS.glob("*.pcap*")) if REGRESSIONS.is_dir() else []


@pytest.mark.parametrize("path", _RECORDED or [pytest.param(None, marks=pytest.mark.skip(
    reason="no fuzz crash recorded: scripts/fuzz.py saves any it finds in tests/data/fuzz/"))],
    ids=lambda p: p.name if p else "none")
def test_fuzz_regressions(path):
    """Inputs that once broke the property (found by scripts/fuzz.py), replayed with every operation set."""
    for ops in operation_sets():
        check_input(path.read_bytes(), path.name, ops)
