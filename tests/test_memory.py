"""Memory bounded by design (docs/ARCHITECTURE.md, "Memory"): the tables that grow with the input stay within
their bounds however many distinct addresses, reasons or frames come, and what they must remember (counts,
the mapping export, the self-check's backlog) is still exact. Sizes of structures, not timings."""
from __future__ import annotations

import ipaddress
import random
import struct
import sys
import tracemalloc

import pytest

from pktmask_gui import addressmap, cryptopan, pipeline
from pktmask_gui.capture import CaptureReader
from pktmask_gui.samplegen import generate, iter_frames
from pktmask_gui.stages import StageContext
from pktmask_gui.stages import anonymize as anon
from pktmask_gui.stages.anonymize import AnonymizeStage

KEY = bytes(range(32))
# Ethernet / IPv4 / TCP (ports 40000 -> 443, no payload), addresses at 26..34; IPv6 likewise at 22..54
_V4 = bytes.fromhex("0200000000020200000000010800" "45000028000040004006" "0000" "00000000" "00000000"
                    "9c4001bb00000001000000005002faf000000000")
_V6 = bytes.fromhex("02000000000202000000000186dd" "6000000000140640") + bytes(32) + _V4[34:]


def _frames(n: int, seed: int) -> tuple[list, set, set]:
    """``n`` records, each between two public addresses met nowhere else (one in eight IPv6)."""
    rng = random.Random(seed)
    out, v4, v6 = [], set(), set()
    for i in range(n):
        if i % 8:
            a = bytes((rng.randrange(1, 224),)) + rng.randbytes(3)
            b = bytes((rng.randrange(1, 224),)) + rng.randbytes(3)
            if a[0] in (10, 127) or b[0] in (10, 127):
                continue
            frame = _V4[:26] + a + b + _V4[34:]
            v4 |= {a, b}
        else:
            a, b = b"\x20\x01" + rng.randbytes(14), b"\x2a\x00" + rng.randbytes(14)
            frame = _V6[:22] + a + b + _V6[54:]
            v6 |= {a, b}
        out.append((frame, 1, i, len(frame), 0, None))
    return out, v4, v6


def _run(stage: AnonymizeStage, records: list) -> None:
    """The main pass's calls: process a batch, then check it as read back."""
    for i in range(0, len(records), 2048):
        batch = records[i:i + 2048]
        stage.check(batch, stage.process(batch))


def _table_bytes(*tables) -> int:
    """Bytes held by dicts / sets and their keys and values (bytes, ints and tuples of them)."""
    size = 0
    for table in tables:
        size += sys.getsizeof(table)
        for key in table:
            size += sys.getsizeof(key)
            if isinstance(table, dict):
                value = table[key]
                size += sys.getsizeof(value) + (sum(map(sys.getsizeof, value)) if type(value) is tuple else 0)
    return size


def test_anonymizer_tables_stay_bounded_with_many_distinct_addresses():
    # before the bounds, every table here grew with the addresses: ~150 MB at 400,000 of them
    stage = AnonymizeStage({}, StageContext(key=KEY))
    stage.will_check()
    records, v4, v6 = _frames(45_000, seed=1)
    _run(stage, records)
    m = stage.mapper
    cp = m.cp
    assert len(v4) > addressmap.MEMO                         # the memo was full and cleared at least once
    assert len(m.map4) <= addressmap.MEMO and len(m.map6) <= addressmap.MEMO
    assert len(stage._pairs) <= anon._PAIR_CACHE and len(stage._addrs) <= anon._ADDR_CACHE
    assert len(cp._bits4) <= cryptopan.PREFIX_CACHE_MAX + 32 and len(cp._bits) <= cryptopan.PREFIX_CACHE_MAX + 128
    assert len(m.kept_seen) <= addressmap.SEEN and len(m.landed_on_kept) <= addressmap.SEEN
    assert not stage._expect                            # every frame built was checked and let go
    held = _table_bytes(m.map4, m.map6, stage._pairs, stage._addrs, cp._bits4, cp._bits,
                        m.kept_seen, m.landed_on_kept)
    assert held < 40 << 20, held
    assert len(m.seen4._table) <= 3 * 4 * len(v4) and len(m.seen6._table) <= 3 * 16 * len(v6)
    rep = stage.report()                                # still exact
    assert rep["ipv4_addresses_mapped"] == len(v4) and rep["ipv6_addresses_mapped"] == len(v6)
    assert "counts_approximate" not in rep


def test_anonymizer_memory_grows_by_the_address_sets_only(monkeypatch):
    """With every bound small, 8,000 more distinct addresses cost only their slots in the address sets:
    nothing else in the stage keeps something per address or per frame (a memo or cache without its bound
    would hold ~1 MB more here, the prefix caches of old ~12 MB)."""
    for module, name, value in ((addressmap, "MEMO", 1024), (anon, "_PAIR_CACHE", 1024), (anon, "_ADDR_CACHE", 1024),
                                (addressmap, "SEEN", 256)):
        monkeypatch.setattr(module, name, value)
    monkeypatch.setattr(cryptopan, "PREFIX_CACHE_MAX", 2048)
    stage = AnonymizeStage({}, StageContext(key=KEY))
    stage.will_check()
    records, v4, v6 = _frames(9_500, seed=6)
    _run(stage, records[:1500])                         # every table full once
    tracemalloc.start()
    try:
        _run(stage, records[1500:5500])
        first = tracemalloc.get_traced_memory()[0]
        sets = len(stage.mapper.seen4._table) + len(stage.mapper.seen6._table)
        _run(stage, records[5500:])
        second = tracemalloc.get_traced_memory()[0]
        sets = len(stage.mapper.seen4._table) + len(stage.mapper.seen6._table) - sets
    finally:
        tracemalloc.stop()
    assert sets <= 3 * 4000 * 2 * (4 * 7 + 16) / 8     # 7 frames in 8 IPv4; 2 addresses, at most 3 slots each
    assert second - first < sets + (512 << 10), (first, second, sets)
    rep = stage.report()
    assert rep["ipv4_addresses_mapped"] == len(v4) and rep["ipv6_addresses_mapped"] == len(v6)


def test_mapping_export_is_complete_past_the_memo(workdir):
    path = workdir / "map.tsv"
    stage = AnonymizeStage({"export_mapping": str(path)}, StageContext(key=KEY))
    records, v4, v6 = _frames(40_000, seed=2)
    _run(stage, records)
    assert len(v4) > addressmap.MEMO
    rep = stage.report()
    assert "counts_approximate" not in rep
    lines = path.read_text().splitlines()[1:]
    assert len(lines) == len(v4) + len(v6)
    ref = cryptopan.CryptoPAn(KEY)
    for line in random.Random(3).sample(lines, 200):
        old, new = (ipaddress.ip_address(x) for x in line.split("\t"))
        mapped = ref.anonymize_v4(int(old)) if old.version == 4 else ref.anonymize_v6(int(old))
        assert int(new) == mapped


def test_reasons_for_frames_not_inspected_are_bounded():
    stage = AnonymizeStage({"allow_uninspected": True}, StageContext(key=KEY))
    # LLC/SNAP frames of unknown OUIs: one reason each
    frames = [(bytes(12) + b"\x00\x30" + b"\xaa\xaa\x03" + i.to_bytes(3, "big") + b"\x12\x34" + bytes(40),
               1, i, 62, 0, None) for i in range(1, 2000)]
    stage.process(frames)
    rep = stage.report()
    reasons = rep["not_inspected_reasons"]
    assert len(reasons) <= anon._REASONS + 1 and sum(reasons.values()) == rep["frames_not_inspected"] == 1999
    assert reasons["other reasons"] == 1999 - anon._REASONS


def test_prefix_caches_are_bounded_and_exact():
    cp = cryptopan.CryptoPAn(KEY)
    rng = random.Random(4)
    ref = cryptopan.CryptoPAn(KEY)
    for _ in range(5000):
        a, b = rng.getrandbits(32), rng.getrandbits(128)
        assert cp.anonymize_v4(a) == ref.anonymize_v4(a) and cp.anonymize_v6(b) == ref.anonymize_v6(b)
        ref.release()                                   # the reference computes every one from scratch
    assert 0 < len(cp._bits4) <= cryptopan.PREFIX_CACHE_MAX + 32
    assert 0 < len(cp._bits) <= cryptopan.PREFIX_CACHE_MAX + 128


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_self_check_backlog_stays_within_a_few_chunks(workdir, fmt, monkeypatch):
    """The frames waiting for their read-back (built frames kept by the anonymizer, and the runs that
    entered it) stay within a few MiB, however long the capture."""
    src = workdir / f"in.{fmt}"
    generate(src, packets=30_000, seed=5, fmt=fmt)
    size = src.stat().st_size
    worst = {"expect": 0, "entering": 0}
    check, check_spans = AnonymizeStage.check, AnonymizeStage.check_spans

    def measure(stage, before):
        worst["expect"] = max(worst["expect"], sum(map(len, stage._expect)))
        worst["entering"] = max(worst["entering"], sum(len(rec[0]) for rec in before))

    def checked(stage, before, after):
        measure(stage, before)
        return check(stage, before, after)

    def spans_checked(stage, before, *rest):
        measure(stage, before)
        return check_spans(stage, before, *rest)

    monkeypatch.setattr(AnonymizeStage, "check", checked)
    monkeypatch.setattr(AnonymizeStage, "check_spans", spans_checked)
    out = workdir / f"out.{fmt}"
    spec = pipeline.ExecSpec(read_path=str(src), staged_path=str(out), stages=["anonymize"],
                             stage_options={}, key=KEY, memory_rss_mb=0, memory_available_pct=0)
    result = pipeline.execute(spec)
    assert result["packets_out"] == 30_000
    assert size > 16 << 20                              # the capture is larger than what may wait
    assert 0 < worst["expect"] < 8 << 20 and 0 < worst["entering"] < 8 << 20, worst
    with CaptureReader(out) as reader:
        assert sum(rec[1] >= 0 for batch in reader.batches() for rec in batch) == 30_000


def test_generator_makes_many_distinct_addresses_on_request():
    seen = set()
    for _t, frame, _dup in iter_frames(20_000, seed=1, probe_ratio=0.99):
        o = 18 if frame[12:14] == b"\x81\x00" else 14
        et = frame[o - 2:o]
        if et == b"\x08\x00":
            seen |= {frame[o + 12:o + 16], frame[o + 16:o + 20]}
        elif et == b"\x86\xdd":
            seen |= {frame[o + 8:o + 24], frame[o + 24:o + 40]}
    assert len(seen) > 10_000                            # ~0.55 per frame; the default mix has ~100 in all


def test_mask_fragment_state_stays_within_its_window(monkeypatch):
    """Mask Payloads settles each datagram's fragments in the pre-scan, a window of datagrams at a time,
    and keeps a number per first fragment for the main pass (before: every datagram's sums and its key in
    two tables, ~600 bytes a datagram, to the end). Same bytes out as with a window holding them all;
    reassembled checksums hold."""
    from pktmask_gui import checksum
    from pktmask_gui.stages import mask, mask_prescan

    rng = random.Random(7)
    frames, datagrams = [], []
    for n in range(600):
        src, dst = b"\x0a\x00" + rng.randbytes(2), b"\x0a\x01" + rng.randbytes(2)
        data = rng.randbytes(rng.randrange(900, 1400))
        seg = bytearray(struct.pack("!HHHH", 5000, 5001, 8 + len(data), 0)) + data
        pseudo = src + dst + struct.pack("!BBH", 0, 17, len(seg))
        struct.pack_into("!H", seg, 6, checksum.internet_checksum(pseudo + bytes(seg)) or 0xFFFF)
        pieces = [(0, seg[:400]), (400, seg[400:800]), (800, seg[800:])]
        if n % 3 == 0:
            pieces.reverse()                            # later fragments first
        for off, chunk in pieces:
            hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(chunk), n, (0x2000 if off < 800 else 0)
                                        | off // 8, 64, 17, 0, src, dst))
            struct.pack_into("!H", hdr, 10, checksum.internet_checksum(hdr))
            frames.append(bytes(12) + b"\x08\x00" + bytes(hdr) + bytes(chunk))
        datagrams.append((src, dst, len(seg)))
    records = [(f, 1, i, len(f), 0, None) for i, f in enumerate(frames)]

    def run(window):
        monkeypatch.setattr(mask_prescan, "FRAG_WINDOW", window)
        stage = mask.MaskStage({}, StageContext())
        most = 0
        for i in range(0, len(records), 16):
            stage.prescan(records[i:i + 16])
            most = max(most, len(stage.datagrams))
        out = []
        for i in range(0, len(records), 16):
            out += stage.process(records[i:i + 16])
        return [r[0] for r in out], most, stage

    small, most, stage = run(64)
    assert most <= 64 and not stage.datagrams
    assert len(stage.settled) == 600                    # one number per first fragment
    assert small == run(1 << 20)[0]
    for k, (src, dst, length) in enumerate(datagrams):
        parts = sorted(((struct.unpack_from("!H", f, 20)[0] & 0x1FFF) * 8, f[34:]) for f in small[3 * k:3 * k + 3])
        seg = b"".join(p for _o, p in parts)
        assert len(seg) == length and not any(seg[8:])
        pseudo = src + dst + struct.pack("!BBH", 0, 17, length)
        assert checksum.internet_checksum(pseudo + seg) == 0


def test_dedup_table_growth_holds_little_besides_the_tables():
    """A file whose first frames are larger than the rest: the table is sized too small and grows. Growing
    takes the keys back _REFILL at a time with the old arrays let go (before: all keys in one vectorized
    round, ~250 bytes of temporaries a key, and both tables at once: 348 MB for a million small frames)."""
    from pktmask_gui.stages import dedup

    rng = random.Random(8)
    frames = [rng.randbytes(1400) for _ in range(2048)] + [rng.randbytes(64) for _ in range(150_000)]
    frames += frames[:1000]                                     # and some duplicates
    records = [(f, 1, i, len(f), 0, None) for i, f in enumerate(frames)]
    size = sum(len(f) + 16 for f in frames)
    stage = dedup.DedupStage({}, StageContext(extra={"input_size": size}))
    dedup._numpy()                                              # its import is not the table's
    tracemalloc.start()
    try:
        kept = 0
        for i in range(0, len(records), 2048):
            kept += len(stage.process(records[i:i + 2048]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert kept == len(frames) - 1000
    assert stage._table.slots > dedup.MIN_SLOTS                 # it did grow
    assert peak < stage._table.nbytes + (8 << 20), (peak, stage._table.nbytes)
