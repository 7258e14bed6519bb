"""compare.py: lazy indexes of real captures, the exact input/output pairing under Remove Dupes, and what a
run did to each frame — checked against the project's own streaming reader and independent byte diffs."""
from __future__ import annotations


import pytest

from pktmask_gui.capture import CaptureReader, ts_to_ns
from pktmask_gui.compare import CaptureIndex, Pairing, change_words, changed_offsets, explain, summary, verify
from pktmask_gui.pipeline import Job, run_job
from pktmask_gui.samplegen import generate
from pktmask_gui.settings import Settings


def packets(path):
    """(data, linktype, ts_ns, origlen) of every packet, by the engine's reader (pcapng: per interface)."""
    out = []
    with CaptureReader(path) as reader:
        section = -1
        for batch in reader.batches():
            for rec in batch:
                if rec[1] < 0:
                    if rec[5] == 0x0A0D0D0A:
                        section += 1
                    continue
                if reader.format == "pcap":
                    unit = 6 if reader.pcap_header[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4") else 9
                    ts = ts_to_ns(rec[2], unit)
                else:
                    iface = reader.interfaces(section)[rec[4]]
                    ts = ts_to_ns(rec[2], iface.tsresol, iface.tsoffset) if rec[5][0] != 3 else None
                out.append((bytes(rec[0]), rec[1], ts, rec[3]))
    return out


@pytest.mark.parametrize("fmt, nanos, endian", [("pcap", False, "<"), ("pcap", True, ">"), ("pcapng", False, "<"),
                                                ("pcapng", True, ">")])
def test_index_reads_every_packet_as_the_engine_does(workdir, fmt, nanos, endian):
    path = workdir / f"c.{fmt}"
    generate(path, packets=3000, seed=4, fmt=fmt, nanos=nanos, endian=endian, metadata=fmt == "pcapng")
    index = CaptureIndex(path)
    index.scan()
    expected = packets(path)
    assert index.done and index.error is None and len(index) == len(expected)
    for i in (0, 1, 1234, len(expected) - 1):
        frame = index.frame(i)
        assert (frame.data, frame.linktype, frame.ts_ns, frame.origlen) == expected[i] and frame.number == i + 1
    index.close()


def test_index_stops_when_asked_and_reports_damage(workdir):
    path = workdir / "c.pcap"
    generate(path, packets=20000, seed=5)
    index = CaptureIndex(path)
    index.scan(stop=lambda: True)
    assert len(index) < 20000 and index.done
    data = bytearray(path.read_bytes())
    full = CaptureIndex(path)
    full.scan()
    at = full.offsets[100]          # the 101st record's header: its captured length made impossible
    data[at + 8:at + 12] = b"\xff\xff\xff\x7f"
    broken = workdir / "broken.pcap"
    broken.write_bytes(bytes(data))
    damaged = CaptureIndex(broken)
    damaged.scan()
    assert "captured length" in damaged.error and len(damaged) == 100


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_pairing_under_remove_dupes_is_exact(workdir, fmt):
    src = workdir / f"in.{fmt}"
    generate(src, packets=4000, seed=6, fmt=fmt, dup_ratio=0.1)
    result = run_job(Job(input=src, output_dir=workdir / "out", stages=["dedup", "anonymize", "mask"]), Settings())
    assert result.status == "ok", result.error
    before, after = CaptureIndex(src), CaptureIndex(result.output)
    pairing = Pairing(True, before.size)
    before.scan(frames=pairing.feed)
    after.scan()
    # Independently: a frame is dropped exactly when an earlier frame has the same link type and bytes.
    seen, dropped = set(), []
    for data, lt, _ts, _orig in packets(src):
        dropped.append((lt, data) in seen)
        seen.add((lt, data))
    assert pairing.dropped_count == sum(dropped) == result.packets_in - result.packets_out > 0
    j = 0
    for i, is_dup in enumerate(dropped):
        assert (pairing.output_of(i) is None) == is_dup
        if not is_dup:
            assert pairing.output_of(i) == j and verify(before.frame(i), after.frame(j))
            j += 1
    assert j == len(after)


def test_without_remove_dupes_frames_pair_one_to_one():
    pairing = Pairing(False)
    assert pairing.known(10**6) and pairing.output_of(41) == 41


def test_what_changed_is_exactly_the_differing_bytes(workdir):
    src = workdir / "in.pcap"
    generate(src, packets=600, seed=7)
    result = run_job(Job(input=src, output_dir=workdir / "out", stages=["anonymize", "mask"]), Settings())
    before, after = CaptureIndex(src), CaptureIndex(result.output)
    before.scan()
    after.scan()
    kinds = set()
    for i in range(len(before)):
        a, b = before.frame(i), after.frame(i)
        offsets = changed_offsets(a.data, b.data)
        assert offsets == [k for k in range(len(a.data)) if a.data[k] != b.data[k]]
        fields = explain(a, b)
        for f in fields:
            kinds.add(f.change.split(" (")[0])
            if f.change == "address mapped":
                assert f.before != f.after and a.data[f.start:f.end] != b.data[f.start:f.end]
            if f.change == "unchanged":
                assert a.data[f.start:f.end] == b.data[f.start:f.end]
        # every differing byte lies in a field the view names as changed
        changed_fields = [f for f in fields if not f.change.startswith("unchanged")]
        assert all(any(f.start <= k < f.end for f in changed_fields) for k in offsets)
        assert summary(a) and change_words(fields)
    assert {"address mapped", "checksum updated", "zeroed"} <= kinds


def test_trimmed_payloads_are_named(workdir):
    src = workdir / "in.pcap"
    generate(src, packets=300, seed=8)
    settings = Settings(stage_options={"mask": {"mode": "trim"}})
    result = run_job(Job(input=src, output_dir=workdir / "out", stages=["mask"]), settings)
    before, after = CaptureIndex(src), CaptureIndex(result.output)
    before.scan()
    after.scan()
    trimmed = [i for i in range(len(before)) if len(after.frame(i).data) < len(before.frame(i).data)]
    assert trimmed
    fields = explain(before.frame(trimmed[0]), after.frame(trimmed[0]))
    assert any(f.change.startswith("trimmed") for f in fields)
    assert "trimmed" in change_words(fields)


def test_uninspectable_frames_say_where_the_walk_stopped(workdir):
    from pktmask_gui.capture import make_pcap_header
    import struct

    path = workdir / "user0.pcap"
    frame = bytes(range(40))
    path.write_bytes(make_pcap_header(linktype=147) + struct.pack("<IIII", 1, 0, len(frame), len(frame)) + frame)
    index = CaptureIndex(path)
    index.scan()
    f = index.frame(0)
    assert summary(f).startswith("Not inspectable: ")
    zeroed = f._replace(data=bytes(len(frame)))
    fields = explain(f, zeroed)
    assert fields[-1].name.startswith("Not inspected")
    assert fields[-1].change == "zeroed after the last header understood"
    assert explain(f, f)[-1].change.startswith("passed unchanged")
