"""Remove Dupes: exact duplicates go, everything else stays in order; the table, the window and the replay."""
from __future__ import annotations

import os
import random

import pytest

from pktmask_gui.capture import META
from pktmask_gui.pipeline import ExecSpec, execute
from pktmask_gui.samplegen import generate
from pktmask_gui.stages import StageContext, StageError
from pktmask_gui.stages import dedup as dedup_mod
from pktmask_gui.stages.dedup import (HEAD, LOAD, MIN_SLOTS, PRESIZE_CAP, SLOT_BYTES, DedupReplay, DedupStage,
                                      _DigestTable, presized_slots)


def pkt(data: bytes, lt: int = 1, ts: int = 0) -> tuple:
    return (data, lt, ts, len(data), 0, None)


def meta(body: bytes = b"m", btype: int = 4) -> tuple:
    return (body, META, 0, 0, 0, btype)


def reference(records: list) -> list:
    """Keep the first of every (link type, bytes): the definition, with a plain set."""
    seen, out = set(), []
    for rec in records:
        if rec[1] < 0:
            out.append(rec)
            continue
        key = (rec[1], rec[0])
        if key not in seen:
            seen.add(key)
            out.append(rec)
    return out


def random_records(n: int, seed: int, dup_every: int = 7, meta_every: int = 0) -> list:
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        if meta_every and i % meta_every == 0:
            recs.append(meta(bytes([i & 255])))
        if recs and i % dup_every == 0:
            old = rng.choice([r for r in recs[-50:] if r[1] >= 0] or [pkt(b"x")])
            recs.append((old[0], old[1], i, old[3], 1, None))          # same bytes, other time/interface
        else:
            recs.append(pkt(rng.randbytes(rng.randint(1, 120)), lt=rng.choice((1, 1, 1, 113)), ts=i))
    return recs


def run_stage(stage, records: list, batch: int = 97) -> list:
    out = []
    for i in range(0, len(records), batch):
        out += stage.process(records[i:i + batch])
    return out


def test_same_bytes_other_link_type_is_not_a_duplicate():
    stage = DedupStage({}, StageContext())
    out = stage.process([pkt(b"abc", 1), pkt(b"abc", 113), pkt(b"abc", 1), pkt(b"abc", 113, ts=5)])
    assert [r[1] for r in out] == [1, 113]
    assert stage.report()["duplicates_removed"] == 2


def test_frames_alike_but_for_their_tail_are_kept():
    head = os.urandom(HEAD)
    frames = [pkt(head + bytes([i]) * 600) for i in range(50)] + [pkt(head + b"\0" * 599 + bytes([i])) for i in range(1, 50)]
    stage = DedupStage({}, StageContext())
    assert stage.process(frames + frames) == frames
    assert stage.report()["duplicates_removed"] == len(frames)


def test_the_head_crc_separates_frames_whose_keyed_hash_collides(monkeypatch):
    # force every frame onto one 64-bit hash: only the CRC-32 of the first HEAD bytes tells them apart
    monkeypatch.setattr(dedup_mod, "hash", lambda data: 12345, raising=False)
    frames = [pkt(os.urandom(HEAD + 10)) for _ in range(200)] + [pkt(os.urandom(20)) for _ in range(200)]
    stage = DedupStage({}, StageContext())
    assert stage.process(frames) == frames                     # a 200-long probe chain, nothing dropped
    assert stage.process(frames[::-1]) == []


def test_matches_the_set_definition_across_batches_growth_and_metadata():
    records = random_records(60000, seed=3, meta_every=1000)     # > MIN_SLOTS / 2 unique: the table grows
    stage = DedupStage({}, StageContext())
    out = run_stage(stage, records)
    want = reference(records)
    assert out == want
    frames = sum(1 for r in records if r[1] >= 0)
    assert stage.report()["frames"] == frames
    assert stage.report()["duplicates_removed"] == frames - sum(1 for r in want if r[1] >= 0)
    assert stage._table.slots > MIN_SLOTS                      # it did grow


def test_window_mode_never_drops_a_unique_frame(monkeypatch):
    monkeypatch.setattr(dedup_mod, "WINDOW", 2000)
    records = random_records(30000, seed=5)
    stage = DedupStage({}, StageContext())
    out = run_stage(stage, records[:5000])
    assert "window" in stage.release_memory()
    assert stage.release_memory() is None                      # once
    out += run_stage(stage, records[5000:])
    # every record the reference keeps is kept; the window may keep a few far-apart duplicates too
    kept_ids = {id(r) for r in out}
    assert all(id(r) in kept_ids for r in reference(records))
    assert [r for r in records if id(r) in kept_ids] == out    # order kept
    assert stage.report()["mode"].startswith("window")


def test_presize_from_file_size_and_first_batch():
    sample = [pkt(b"x" * 84)] * 10                             # 100 bytes a record in the file
    assert presized_slots(0, sample) == MIN_SLOTS
    assert presized_slots(10**9, []) == MIN_SLOTS
    slots = presized_slots(100 * 200_000, sample)
    assert 200_000 / slots <= LOAD < 200_001 / slots           # 200k frames: at most LOAD full, no more room
    assert presized_slots(10**12, sample) == PRESIZE_CAP       # capped: it grows from there if it must
    stage = DedupStage({}, StageContext(extra={"input_size": 100 * 200_000}))
    stage.process(sample)
    assert stage.report()["digest_table_bytes"] == slots * SLOT_BYTES


def test_compaction_under_pressure_gives_room_back():
    stage = DedupStage({}, StageContext(extra={"input_size": 10**9}))
    recs = [pkt(os.urandom(40)) for _ in range(1000)]
    stage.process(recs)
    big = stage.report()["digest_table_bytes"]
    stage.release_memory()
    assert stage.report()["digest_table_bytes"] < big
    assert stage.process(recs) == []                           # still remembered after the move
    assert stage.report()["unique_frames_remembered"] == 1000


def test_grow_keeps_every_fingerprint():
    table = _DigestTable(13)                                  # any size, not only powers of two
    values = [((i * 0x9E3779B97F4A7C15) & ((1 << 63) - 1)) or 1 for i in range(1, 8)]
    values += [-v for v in values]                            # signed fingerprints too
    values[1] = values[0] + 13 * 5                            # same home slot: a probe chain
    for v in values[:7]:
        i = v % table.slots
        while table.fp[i]:
            i = (i + 1) % table.slots
        table.fp[i], table.crc[i] = v, v & 0xFFFFFFFF
        table.count += 1
    table.grow()
    assert all(table.contains(v, v & 0xFFFFFFFF) for v in values[:7])
    assert not any(table.contains(v, 1) for v in values[7:])


@pytest.mark.parametrize("meta_every", [0, 300])
def test_replay_repeats_the_decisions_exactly(meta_every):
    records = random_records(5000, seed=9, meta_every=meta_every)
    first = DedupStage({}, StageContext())
    want = run_stage(first, records)
    report = first.report()
    replay = first.replayer()
    assert first._table is None                                # the tables are freed at once
    assert run_stage(replay, records, batch=61) == want
    replay.finish()
    assert replay.report() == report == first.report()
    again = replay.replayer()
    assert run_stage(again, records, batch=2048) == want


def test_replay_notices_a_changed_input():
    records = random_records(500, seed=1)
    first = DedupStage({}, StageContext())
    run_stage(first, records)
    longer = first.replayer()
    with pytest.raises(StageError, match="changed"):
        run_stage(longer, records + [pkt(b"new")])
    shorter = first.replayer()
    run_stage(shorter, records[:-1])
    with pytest.raises(StageError, match="changed"):
        shorter.finish()


def test_executor_decides_once_and_replays(workdir, monkeypatch):
    """With a pre-scan stage after it, Remove Dupes hashes in the pre-scan only; output and counts agree."""
    src = workdir / "in.pcapng"
    generate(src, packets=3000, seed=4, fmt="pcapng", dup_ratio=0.1, metadata=True)
    calls = {"n": 0}
    original = DedupStage.process

    def counting(self, batch):
        calls["n"] += sum(1 for r in batch if r[1] >= 0)
        return original(self, batch)

    monkeypatch.setattr(DedupStage, "process", counting)
    results = {}
    for stages in (["dedup"], ["dedup", "mask"]):
        calls["n"] = 0
        out = workdir / ("-".join(stages) + ".pcapng")
        spec = ExecSpec(read_path=str(src), staged_path=str(out), stages=stages, stage_options={}, key=None,
                        memory_rss_mb=0, memory_available_pct=0)
        results[tuple(stages)] = execute(spec)
        assert calls["n"] == 3000                              # one hashing pass, whatever the passes
    a, b = results[("dedup",)], results[("dedup", "mask")]
    assert a["stages"]["dedup"] == b["stages"]["dedup"]
    assert a["stages"]["dedup"]["duplicates_removed"] > 0
    assert a["packets_out"] == b["packets_out"] == 3000 - a["stages"]["dedup"]["duplicates_removed"]


def test_executor_fails_when_the_input_changes_between_passes(workdir, monkeypatch):
    src = workdir / "in.pcap"
    generate(src, packets=2000, seed=6)
    original = DedupStage.replayer

    def grow_input_then_replay(self, context=None):
        with open(src, "ab") as fh:                            # someone appends to the capture meanwhile
            fh.write(open(src, "rb").read()[24:24 + 16 + 60])
        return original(self, context)

    monkeypatch.setattr(DedupStage, "replayer", grow_input_then_replay)
    spec = ExecSpec(read_path=str(src), staged_path=str(workdir / "out.pcap"), stages=["dedup", "mask"],
                    stage_options={}, key=None, memory_rss_mb=0, memory_available_pct=0)
    with pytest.raises(StageError, match="changed"):
        execute(spec)


def test_replay_class_is_reported_under_the_stage_name():
    assert DedupReplay.name == DedupStage.name and DedupReplay.drops_frames


@pytest.mark.parametrize("seed", ["0", "12345"])
def test_a_fixed_hash_seed_switches_to_a_keyed_hash_of_this_run(monkeypatch, seed):
    # PYTHONHASHSEED makes the interpreter's hash key public: crafted frames could collide on purpose
    monkeypatch.setenv("PYTHONHASHSEED", seed)
    records = random_records(5000, seed=21, meta_every=400)
    one, two = DedupStage({}, StageContext()), DedupStage({}, StageContext())
    assert one._hash is not hash
    assert one._hash(b"frame") != two._hash(b"frame")          # a random key per run
    assert run_stage(one, records) == reference(records)
    assert run_stage(two, records, batch=1000) == reference(records)
    monkeypatch.setenv("PYTHONHASHSEED", "random")
    assert DedupStage({}, StageContext())._hash is hash
