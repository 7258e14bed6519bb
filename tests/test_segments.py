"""One file on several processes (segments.py): the same bytes and the same report as one core, for every
option set, pcap and pcapng (several sections and interfaces); cancel; a worker that dies.

Captures come from the project's generators (samplegen's mix, wildgen's real-world shapes); the split is
forced on these small files by lowering the size thresholds in this (the parent) process.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path

import psutil
import pytest
from helpers import leftovers

from pktmask_gui import segments, wildgen
from pktmask_gui.capture import (
    EPB,
    IDB,
    META,
    SHB,
    CaptureReader,
    make_idb_body,
    make_pcap_header,
    make_shb_body,
)
from pktmask_gui.capturewriter import CaptureWriter
from pktmask_gui.pipeline import Job, run_job
from pktmask_gui.samplegen import iter_frames
from pktmask_gui.settings import Settings


@pytest.fixture
def env(split_env):
    return split_env


def _frames(packets: int, seed: int):
    """samplegen's mix with wildgen's shapes (tunnels, fragments, flow export, unreadable frames) among it."""
    rng = random.Random(seed)
    from pktmask_gui.samplegen import _Net
    net = _Net(rng)
    for n, (now, frame, _dup) in enumerate(iter_frames(packets, seed=seed), 1):
        yield now, frame
        if n % 40 == 0:
            for extra in wildgen.wild_session(rng, net, rng.random() < 0.25, None):
                yield now + 1, extra


def write_pcap(path: Path, packets: int, seed: int = 3) -> Path:
    with open(path, "wb") as fh:
        writer = CaptureWriter(fh, "pcap", make_pcap_header(1, 262144))
        batch = []
        for now, frame in _frames(packets, seed):
            batch.append((frame, 1, now // 1000, len(frame), 0, None))
        writer.write_batch(batch)
        writer.close()
    return path


IDB_ADDRESS = bytes((10, 1, 2, 3, 255, 255, 255, 0))       # if_IPv4addr: 10.1.2.3/24


def write_pcapng(path: Path, packets: int, seed: int = 5) -> Path:
    """Three sections (little, big, little endian); the second has two interfaces and an IDB between packets;
    comments and a name resolution block for the scrub, an IDB address for the anonymizer."""
    from pktmask_gui.capture import NRB, build_options

    frames = list(_frames(packets, seed))
    thirds = [frames[:len(frames) // 3], frames[len(frames) // 3:2 * len(frames) // 3], frames[2 * len(frames) // 3:]]
    with open(path, "wb") as fh:
        writer = CaptureWriter(fh, "pcapng")
        for s, (part, e) in enumerate(zip(thirds, "<><")):
            recs = [(make_shb_body(e, build_options([(4, b"gen section %d" % s)], e)), META, 0, 0, 0, SHB),
                    (make_idb_body(1, 262144, e, build_options([(2, b"eth0"), (4, IDB_ADDRESS)], e)),
                     META, 0, 0, 0, IDB)]
            half = len(part) // 2
            for i, (now, frame) in enumerate(part):
                iface = 0
                if s == 1 and i == half:
                    recs.append((make_idb_body(1, 0, e, build_options([(2, b"eth1")], e)), META, 0, 0, 0, IDB))
                if s == 1 and i > half:
                    iface = i & 1
                opts = build_options([(1, b"a comment")], e) if i % 97 == 0 else b""
                recs.append((frame, 1, now // 1000, len(frame), iface, (EPB, opts)))
            if s == 2:
                nrb = b"\x01\x00\x08\x00" + bytes((10, 0, 0, 1)) + b"h1\0\0" + b"\0" * 4
                if e == ">":
                    nrb = b"\x00\x01\x00\x08" + bytes((10, 0, 0, 1)) + b"h1\0\0" + b"\0" * 4
                recs.insert(len(recs) // 2, (nrb, META, 0, 0, 0, NRB))
            writer.write_batch(recs)
        writer.close()
    return path


def _run(path: Path, out: Path, settings: Settings, stages: list, jobs: int, caplog=None, fork=False, **kw):
    job = Job(input=path, output_dir=out, stages=stages)
    ex = segments.executor(jobs, fork=fork) if jobs > 1 else None
    return run_job(job, settings, executor=ex, **kw)


def _same(a, b) -> None:
    assert a.status == b.status == "ok", (a.error, b.error)
    assert Path(a.output).read_bytes() == Path(b.output).read_bytes()
    assert (a.packets_in, a.packets_out) == (b.packets_in, b.packets_out)
    assert a.stages == b.stages
    assert a.warnings == b.warnings


OPTION_SETS = [["anonymize"], ["mask"], ["dedup", "anonymize"], ["dedup", "anonymize", "mask"], ["dedup", "mask"]]


@pytest.mark.parametrize("fork", [False, True], ids=["spawn", "fork"])   # fork: the CLI's workers (Linux)
@pytest.mark.parametrize("stages", OPTION_SETS, ids=["+".join(s) for s in OPTION_SETS])
def test_pcap_split_is_byte_identical(env, stages, fork, caplog):
    workdir, settings = env
    src = write_pcap(workdir / "mix.pcap", 9000)
    one = _run(src, workdir / "one", settings, stages, 1)
    caplog.set_level(logging.DEBUG, logger="pktmask_gui")
    three = _run(src, workdir / "three", settings, stages, 3, fork=fork)
    _same(one, three)
    assert "The main pass runs on 3 segments" in caplog.text
    assert not leftovers(workdir / "temp", workdir / "three")


@pytest.mark.parametrize("stages", [["dedup", "anonymize", "mask"], ["anonymize"], ["mask"]],
                         ids=["all", "anonymize", "mask"])
def test_pcapng_sections_and_interfaces_split_byte_identical(env, stages, caplog):
    workdir, settings = env
    src = write_pcapng(workdir / "mix.pcapng", 9000)
    one = _run(src, workdir / "one", settings, stages, 1)
    caplog.set_level(logging.DEBUG, logger="pktmask_gui")
    two = _run(src, workdir / "two", settings, stages, 4)
    _same(one, two)
    assert "segments of the file" in caplog.text
    assert one.stages.get("scrub"), "the scrub removed something, and counted it once"
    with CaptureReader(two.output) as r:
        metas = [rec[5] for b in r.batches() for rec in b if rec[1] == META]
    assert metas.count(SHB) == 3 and metas.count(IDB) == 4


def test_mask_trim_and_keep_ports_split_byte_identical(env):
    workdir, settings = env
    settings.stage_options["mask"] = {"mode": "trim", "keep_ports": [53]}
    src = write_pcap(workdir / "mix.pcap", 7000, seed=11)
    _same(_run(src, workdir / "one", settings, ["dedup", "mask", "anonymize"], 1),
          _run(src, workdir / "two", settings, ["dedup", "mask", "anonymize"], 2))


def test_what_cannot_gain_stays_on_one_core(env, caplog):
    """Remove Dupes alone: its ordered decision is the whole work; a small file; a compressed one."""
    workdir, settings = env
    src = write_pcap(workdir / "mix.pcap", 3000)
    caplog.set_level(logging.DEBUG, logger="pktmask_gui")
    _same(_run(src, workdir / "one", settings, ["dedup"], 1), _run(src, workdir / "two", settings, ["dedup"], 2))
    assert "One core: the frames to drop are decided in one ordered pass" in caplog.text
    segments.MIN_SPLIT_BYTES = 1 << 40
    try:
        assert segments.refusal(_spec(src), 2).startswith("smaller than")
    finally:
        segments.MIN_SPLIT_BYTES = 0


def _spec(path):
    from pktmask_gui.pipeline import ExecSpec
    return ExecSpec(read_path=str(path), staged_path="", stages=["anonymize"], stage_options={}, key=None,
                    memory_rss_mb=0, memory_available_pct=0)


def _children():
    """This process's children but multiprocessing's resource tracker (started once, kept for the session)."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            pass
    return found


@pytest.mark.parametrize("fork", [False, True], ids=["spawn", "fork"])
def test_cancel_ends_every_worker_within_half_a_second(env, fork):
    workdir, settings = env
    src = write_pcap(workdir / "mix.pcap", 30000)
    cancel = threading.Event()
    seen = []

    def progress(phase, done, total, packets):
        seen.append(phase)
        if phase == "process" and not cancel.is_set():
            cancel.set()
            seen.append(time.monotonic())

    result = _run(src, workdir / "out", settings, ["dedup", "anonymize", "mask"], 2, progress=progress, cancel=cancel,
                  fork=fork)
    ended = time.monotonic()
    assert result.status == "cancelled"
    stamp = [x for x in seen if isinstance(x, float)][0]
    assert ended - stamp < 0.5
    assert not _children()
    assert not leftovers(workdir / "temp", workdir / "out")


@pytest.mark.parametrize("fork", [False, True], ids=["spawn", "fork"])
@pytest.mark.parametrize("when", ["prescan", "process"])
def test_a_worker_that_dies_fails_the_file_cleanly(env, fork, when):
    """The follower killed in the first pass (with forks: while it pre-scans the second half, firstpass.py)
    or while the segments run."""
    workdir, settings = env
    src = write_pcap(workdir / "mix.pcap", 30000)
    killed = []

    def progress(phase, done, total, packets):
        if phase == when and not killed:
            # kill the worker started last (a follower, not the leader)
            victim = max(_children(), key=lambda c: (c.create_time(), c.pid))
            victim.kill()
            killed.append(victim.pid)

    result = _run(src, workdir / "out", settings, ["dedup", "anonymize", "mask"], 2, progress=progress, fork=fork)
    assert killed
    assert result.status == "failed"
    assert "worker process ended unexpectedly" in result.error
    assert not _children()
    assert not leftovers(workdir / "temp", workdir / "out")
    assert not list((workdir / "out").glob("*.pcap"))


def test_a_resent_hello_that_differs_after_the_split_is_masked_as_on_one_core(env, caplog):
    """A TLS direction cut by the split whose ClientHello comes again, changed, after it: the one-core pass
    masks that copy (it differs from the first); the segment after the split must know the first copy."""
    workdir, settings = env
    frames = [f for _, f, _ in iter_frames(6000, seed=7, vlan_ratio=0.0, ipv6_ratio=0.0)]

    def tcp(f):
        if f[12:14] != b"\x08\x00" or f[23] != 6:
            return None
        t = 14 + (f[14] & 15) * 4
        return t, t + (f[t + 12] >> 4) * 4

    hello = None
    for idx, f in enumerate(frames):
        at = tcp(f)
        if at and len(f) > at[1] + 6 and f[at[1]] == 0x16 and f[at[1] + 5] == 1:
            hello = idx
            break
    assert hello is not None
    f = frames[hello]
    t, pay = tcp(f)
    key = f[26:34] + f[t:t + 4]
    back = f[30:34] + f[26:30] + f[t + 2:t + 4] + f[t:t + 2]

    def conn_key(g):
        at = tcp(g)
        return at and (g[26:34] + g[at[0]:at[0] + 4]) in (key, back)

    conn = [(i, g) for i, g in enumerate(frames) if conn_key(g) and not g[tcp(g)[0] + 13] & 5]
    others = [g for g in frames if not conn_key(g)]
    before = [g for i, g in conn if i <= hello]
    after = [g for i, g in conn if i > hello]
    changed = bytearray(f)
    changed[pay + 11] ^= 0xFF                   # a byte of the hello's random
    order = before + others + [bytes(changed)] + after
    src = workdir / "resent.pcap"
    with open(src, "wb") as fh:
        writer = CaptureWriter(fh, "pcap", make_pcap_header(1, 262144))
        writer.write_batch([(g, 1, 1_000_000 + i, len(g), 0, None) for i, g in enumerate(order)])
        writer.close()
    one = _run(src, workdir / "one", settings, ["mask"], 1)
    caplog.set_level(logging.DEBUG, logger="pktmask_gui")
    two = _run(src, workdir / "two", settings, ["mask"], 2)
    _same(one, two)
    assert one.stages["mask"].get("resent_ranges_differing")
    assert "to see the frames before it that it needs" in caplog.text


def test_failures_read_as_on_one_core(env):
    """A damaged record in the second half; --strict meeting a frame it cannot read: the same sentence."""
    workdir, settings = env
    src = write_pcap(workdir / "mix.pcap", 8000)
    data = bytearray(src.read_bytes())
    bad = workdir / "damaged.pcap"
    pos, n = 24, 0
    while pos < len(data) * 3 // 4:             # the record header of a packet three quarters in
        pos += 16 + int.from_bytes(data[pos + 8:pos + 12], "little")
        n += 1
    data[pos + 8:pos + 12] = (1 << 30).to_bytes(4, "little")
    bad.write_bytes(bytes(data))
    for stages in (["anonymize"], ["dedup", "anonymize", "mask"]):
        one = _run(bad, workdir / "one", settings, stages, 1)
        two = _run(bad, workdir / "two", settings, stages, 2)
        assert one.status == two.status == "failed"
        assert (one.error, one.error_kind) == (two.error, two.error_kind)
    settings.stage_options["anonymize"] = {"uninspected": "fail"}
    one = _run(src, workdir / "one", settings, ["anonymize"], 1)
    two = _run(src, workdir / "two", settings, ["anonymize"], 3)
    assert one.status == two.status == "failed"
    assert (one.error, one.error_kind) == (two.error, two.error_kind)
    # the one frame it cannot read lies in the last segment: that worker's sentence, frame number and all
    frames = [f for _, f, _ in iter_frames(8000, seed=2)]
    at = len(frames) * 5 // 6
    frames.insert(at, bytes(12) + b"\x88\xb5" + bytes(50))
    late = workdir / "late.pcap"
    with open(late, "wb") as fh:
        writer = CaptureWriter(fh, "pcap", make_pcap_header(1, 262144))
        writer.write_batch([(g, 1, 1_000_000 + i, len(g), 0, None) for i, g in enumerate(frames)])
        writer.close()
    one = _run(late, workdir / "one", settings, ["anonymize"], 1)
    two = _run(late, workdir / "two", settings, ["anonymize"], 3)
    assert one.status == two.status == "failed"
    assert (one.error, one.error_kind) == (two.error, two.error_kind)
    assert f"frame {at + 1} " in one.error
    assert not leftovers(workdir / "temp", workdir / "one", workdir / "two")


def test_the_window_runs_a_lone_file_on_segments(env, qtbot, caplog):
    """The window's worker: one file and two job slots: segments (in child processes), the same output."""
    from pktmask_gui.ui.workers import JobRunner

    workdir, settings = env
    src = write_pcap(workdir / "mix.pcap", 6000)
    one = _run(src, workdir / "one", settings, ["dedup", "anonymize", "mask"], 1)
    caplog.set_level(logging.DEBUG, logger="pktmask_gui")
    runner = JobRunner()
    results = []
    runner.finished.connect(lambda row, result: results.append(result))
    with qtbot.waitSignal(runner.finished, timeout=60000):
        runner.start(1, Job(input=src, output_dir=workdir / "two", stages=["dedup", "anonymize", "mask"]), settings,
                         split=2)
    qtbot.waitUntil(lambda: runner.threads_alive() == 0, timeout=10000)
    _same(one, results[0])
    assert "The main pass runs on 2 segments" in caplog.text


def test_more_reasons_than_the_stages_count_apart_merge_as_on_one_core(env, caplog):
    """More distinct reasons for zeroed frames than the stages count one by one: the smallest are counted
    apart whatever the order (stages.ReasonCounts), so the segments' tables merge into the one-core report and
    the file is not run again (it was, when the first ones met were kept)."""
    from pktmask_gui.stages import ZEROED_REASONS

    workdir, settings = env
    frames = [f for _, f, _ in iter_frames(6000, seed=4)]
    odd = ZEROED_REASONS + 40
    for j in range(odd):                        # EtherTypes no walker knows, spread over the file
        frames.insert(1 + j * (len(frames) // odd), bytes(12) + (0x9100 + j).to_bytes(2, "big") + bytes(50))
    src = workdir / "odd.pcap"
    with open(src, "wb") as fh:
        writer = CaptureWriter(fh, "pcap", make_pcap_header(1, 262144))
        writer.write_batch([(g, 1, 1_000_000 + i, len(g), 0, None) for i, g in enumerate(frames)])
        writer.close()
    one = _run(src, workdir / "one", settings, ["anonymize", "mask"], 1)
    caplog.set_level(logging.DEBUG, logger="pktmask_gui")
    two = _run(src, workdir / "two", settings, ["anonymize", "mask"], 2)
    _same(one, two)
    assert "other reasons" in one.stages["mask"]["frames_zeroed_unreadable"]
    assert "The main pass runs on 2 segments" in caplog.text
    assert "the file runs again on one core" not in caplog.text
    assert not leftovers(workdir / "temp", workdir / "two")


def test_ip_fragments_across_the_split_points_as_on_one_core(env, caplog):
    """Anonymize IPs zeroes a later fragment of a DNS answer (and one whose first fragment it has not met):
    a fragment whose first lies in the segment before is decided as on one core; where a segment cannot
    know (a lone later fragment near its start), the file runs again on one core."""
    from pktmask_gui import samplegen as sg

    workdir, settings = env
    frames = [f for _, f, _ in iter_frames(6000, seed=13)]
    dns = sg.dns_response(9, "www.example.test", [f"10.9.{i}.{i + 1}" for i in range(40)])

    def pair(n: int, reverse: bool) -> list:
        ip = sg.ipv4("10.1.0.1", "10.2.0.2", 17, sg.udp("10.1.0.1", "10.2.0.2", 53, 40000, dns), ident=n, df=False)
        first = sg.ip_frame(sg.ipv4("10.1.0.1", "10.2.0.2", 17, ip[20:84], ident=n, frag=0x2000))
        later = sg.ip_frame(sg.ipv4("10.1.0.1", "10.2.0.2", 17, ip[84:], ident=n, frag=8))
        return [later, first] if reverse else [first, later]

    for reverse, name in ((False, "in-order"), (True, "reversed")):
        mixed = []
        for i, f in enumerate(frames):
            mixed.append(f)
            if i % 25 == 0:
                mixed += pair(i, reverse and i % 100 == 0)
        src = workdir / f"{name}.pcap"
        with open(src, "wb") as fh:
            writer = CaptureWriter(fh, "pcap", make_pcap_header(1, 262144))
            writer.write_batch([(g, 1, 1_000_000 + i, len(g), 0, None) for i, g in enumerate(mixed)])
            writer.close()
        one = _run(src, workdir / f"{name}-one", settings, ["anonymize"], 1)
        caplog.clear()
        caplog.set_level(logging.DEBUG, logger="pktmask_gui")
        three = _run(src, workdir / f"{name}-three", settings, ["anonymize"], 3)
        _same(one, three)
        zeroed = one.stages["anonymize"]["frames_zeroed_unreadable"]
        assert sum(zeroed.values()) >= len(frames) // 25
        if reverse:
            assert "runs again on one core" in caplog.text
