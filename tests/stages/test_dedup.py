"""Remove Dupes: exact duplicates go, everything else stays in order; the table, the window and the replay."""
from __future__ import annotations

import functools
import io
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import CORPUS, REPO
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pktmask_gui.capture import META, CaptureReader
from pktmask_gui.capturewriter import CaptureWriter
from pktmask_gui.pipeline import ExecSpec, execute
from pktmask_gui.samplegen import generate
from pktmask_gui.stages import StageContext, StageError
from pktmask_gui.stages import dedup as dedup_mod
from pktmask_gui.stages.dedup import (_LT_MIX, _MIX_BITS, HEAD, LOAD, MIN_SLOTS, PRESIZE_CAP, SLOT_BYTES,
                                      DedupReplay, DedupStage, _DigestTable, presized_slots)



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
    frames = [pkt(head + bytes([i]) * 600) for i in range(50)] + \
        [pkt(head + b"\0" * 599 + bytes([i])) for i in range(1, 50)]
    stage = DedupStage({}, StageContext())
    assert stage.process(frames + frames) == frames
    assert stage.report()["duplicates_removed"] == len(frames)


def force_hash(monkeypatch, fake) -> None:
    """Stages made from now on hash frames with ``fake``, whatever PYTHONHASHSEED says: with it set, a stage
    hashes with a keyed BLAKE2b, not hash(), so patching the builtin alone would change nothing."""
    monkeypatch.setattr(dedup_mod, "_frame_hash", lambda: fake)


@pytest.mark.parametrize("hash_seed", ["random", "0"])
def test_the_head_crc_separates_frames_whose_keyed_hash_collides(monkeypatch, hash_seed):
    # every frame on one 64-bit keyed hash: only the CRC-32 of the first HEAD bytes tells them apart
    monkeypatch.setenv("PYTHONHASHSEED", hash_seed)            # "0": the stage would take the BLAKE2b path
    force_hash(monkeypatch, lambda data: 12345)
    frames = [pkt(os.urandom(HEAD + 10)) for _ in range(200)] + [pkt(os.urandom(20)) for _ in range(200)]
    stage = DedupStage({}, StageContext())
    assert len({r[0] for r in frames}) == 400 and {stage._hash(r[0]) for r in frames} == {12345}
    assert stage.process(frames) == frames                     # a 400-long probe chain, nothing dropped
    taken = stage._table.fpv != 0
    assert int(taken.sum()) == 400                              # the table holds every frame ...
    assert len(set(stage._table.fpv[taken].tolist())) == 1      # ... under one fingerprint: they collided
    assert len(set(stage._table.crcv[taken].tolist())) == 400   # ... and their CRCs alone tell them apart
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
            fh.write(src.read_bytes()[24:24 + 16 + 60])
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


# --- The batch-wide probe: every decision is the one of frame-by-frame linear probing ---

class FrameByFrame:
    """The stage's decisions, one frame after the other, with sets for tables: the same table sizes, growth
    and window generations (a generation ends at the frame that fills its table past LOAD, once it holds
    WINDOW frames), so window mode can be compared exactly too."""

    def __init__(self, slots: int = MIN_SLOTS, min_slots: int = MIN_SLOTS):
        self.table, self.previous, self.slots, self.window = set(), None, slots, False
        self.min_slots = min_slots      # the size of a new generation's table
        self.ends_inside = 0            # generations that ended before the last frame of a batch

    def process(self, records: list) -> list:
        out = []
        for n, rec in enumerate(records, 1):
            key = (rec[1], rec[0])
            if rec[1] < 0:
                out.append(rec)
            elif key not in self.table and not (self.previous and key in self.previous):
                out.append(rec)
                self.table.add(key)
                if len(self.table) > int(self.slots * LOAD):
                    if self.window and len(self.table) >= dedup_mod.WINDOW:
                        self.previous, self.table, self.slots = self.table, set(), self.min_slots
                        self.ends_inside += n < len(records)
                    else:
                        self.slots *= 2
        return out

    def release_memory(self) -> None:
        """Window mode from here on (once, as the stage: a second call changes nothing)."""
        if self.window:
            return
        self.window = True
        if len(self.table) >= dedup_mod.WINDOW:
            self.previous, self.table, self.slots = self.table, set(), self.min_slots
        elif len(self.table) * 4 < self.slots and self.slots > self.min_slots:
            self.slots = max(self.min_slots, int(len(self.table) / LOAD) + 1)


def ids(records: list) -> list:
    return [id(r) for r in records]


def test_copies_inside_one_batch_drop_all_but_the_first():
    rng = random.Random(11)
    pool = [rng.randbytes(rng.choice([14, 60, 64, 65, 300])) for _ in range(300)]
    batch = [pkt(rng.choice(pool), ts=i) for i in range(2000)]     # ~1700 copies, spread over the batch
    batch += [pkt(batch[0][0], ts=2000), pkt(batch[0][0], 113)]    # a last copy; the same bytes, another link
    stage = DedupStage({}, StageContext())
    out = stage.process(batch)
    assert ids(out) == ids(reference(batch))                      # the first of each, by identity, in order
    assert stage.report()["duplicates_removed"] == len(batch) - len(out)
    replay = stage.replayer()
    assert ids(replay.process(batch)) == ids(out)                  # the decision bits agree


def _same_home_hash(slots: int, home: int, lt: int = 1):
    """A hash under which frame number j of a registry maps to home + j * slots: one home slot for all."""
    mix = (lt * _LT_MIX) & _MIX_BITS
    number: dict = {}

    def fake(data: bytes) -> int:
        j = number.setdefault(data, len(number) + 1)
        return (home + j * slots) ^ mix
    return fake


@pytest.mark.parametrize("tail", [0, 32])
def test_fingerprints_sharing_one_home_slot(monkeypatch, tail):
    monkeypatch.setattr(dedup_mod, "_TAIL", tail)                  # 0: every step in numpy rounds
    force_hash(monkeypatch, _same_home_hash(MIN_SLOTS, home=100))
    rng = random.Random(5)
    pool = [os.urandom(30 + i % 50) for i in range(150)]
    batch = [pkt(rng.choice(pool), ts=i) for i in range(600)]
    stage = DedupStage({}, StageContext())
    out = stage.process(batch[:300]) + stage.process(batch[300:])
    assert ids(out) == ids(reference(batch))
    table = stage._table
    run = table.fp[100:100 + table.count]
    assert all(v % table.slots == 100 for v in run)                # one cluster from the home slot, no gap
    assert table.fp[100 + table.count] == 0 and table.fp[99] == 0


@pytest.mark.parametrize("tail", [0, 32])
def test_probe_chains_wrap_around_the_table_end(monkeypatch, tail):
    monkeypatch.setattr(dedup_mod, "_TAIL", tail)
    table = _DigestTable(101)
    slots = table.slots
    homes = [slots - 20, slots - 18, slots - 3, slots - 1, 0]      # runs that reach the end and go on at 0
    keys = [(h + j * slots, 7 + j % 3) for h in homes for j in range(1, 13)]
    random.Random(2).shuffle(keys)
    f = np.array([k[0] for k in keys], np.int64)
    c = np.array([k[1] for k in keys], np.uint32)
    assert table.add(f, c) == []
    assert table.count == len(keys) == 60
    assert all(table.contains(*k) for k in keys)
    assert all(table.fp[i] for i in range(0, 8))                     # the wrapped part of the runs
    again = np.arange(len(keys) + 3)
    g = np.concatenate([f, [slots - 1 + 40 * slots, 5, 5]])         # three new keys, one of them twice
    h = np.concatenate([c, [1, 9, 9]])
    assert table.add(g[again], h[again]) == list(range(len(keys))) + [len(keys) + 2]
    assert table.count == len(keys) + 2
    # a key whose whole first window [slots - _W, slots) is taken goes on at slot 0
    start = slots - dedup_mod._W
    assert all(table.fp[i] for i in range(start, slots))
    late = np.array([start + 90 * slots, start + 91 * slots], np.int64)
    assert table.add(late, np.array([3, 3], np.uint32)) == []
    assert table.contains(start + 90 * slots, 3) and table.contains(start + 91 * slots, 3)
    assert table.count == len(keys) + 4


def test_claims_on_one_free_slot_go_to_the_first_key(monkeypatch):
    monkeypatch.setattr(dedup_mod, "_TAIL", 0)
    table = _DigestTable(64)
    # keys 0..5 share a home; 2 and 4 are copies of 1; 5 has 1's fingerprint but another CRC
    f = np.array([64, 128, 128, 192, 128, 128], np.int64)
    c = np.array([1, 2, 2, 3, 2, 4], np.uint32)
    assert table.add(f, c) == [2, 4]
    assert table.count == 4
    assert [table.fp[i] for i in range(0, 5)] == [64, 128, 192, 128, 0]
    assert [table.crc[i] for i in range(0, 4)] == [1, 2, 3, 4]


def test_growth_inside_one_batch_matches_frame_by_frame():
    records = random_records(40000, seed=12, dup_every=3)           # ~27k unique: past MIN_SLOTS * LOAD
    stage = DedupStage({}, StageContext(extra={"input_size": 10}))
    model = FrameByFrame()
    assert ids(stage.process(records)) == ids(model.process(records))
    assert stage._table.slots == model.slots > MIN_SLOTS
    assert stage.report()["unique_frames_remembered"] == len(model.table)


@pytest.mark.parametrize("seed_env", ["random", "0"])
@pytest.mark.parametrize("batch", [97, 512, 6000])
def test_window_generations_inside_batches_match_frame_by_frame(monkeypatch, seed_env, batch):
    monkeypatch.setenv("PYTHONHASHSEED", seed_env)                 # "0": the keyed BLAKE2b path
    monkeypatch.setattr(dedup_mod, "WINDOW", 1500)
    rng = random.Random(batch)
    pool = [rng.randbytes(rng.randint(20, 90)) for _ in range(40000)]
    # > MIN_SLOTS * LOAD unique frames after the switch: a generation ends (inside a batch unless batch=97)
    records = [pkt(rng.choice(pool), lt=rng.choice((1, 1, 1, 113)), ts=i) for i in range(60000)]
    for i in range(0, len(records), 777):
        records.insert(i, meta(bytes([i & 255])))
    stage, model = DedupStage({}, StageContext()), FrameByFrame()
    out, want = [], []
    for n, i in enumerate(range(0, len(records), batch)):
        if n == 6000 // batch:
            stage.release_memory()
            model.release_memory()
        out += stage.process(records[i:i + batch])
        want += model.process(records[i:i + batch])
    assert ids(out) == ids(want)
    assert stage.report()["mode"].startswith("window")
    assert stage._previous is not None and (model.ends_inside > 0 or batch < 100)
    remembered = len(model.table) + (len(model.previous) if model.previous else 0)
    assert stage.report()["unique_frames_remembered"] == remembered
    replay = stage.replayer()
    assert ids(run_stage(replay, records, batch=1000)) == ids(out)


# --- whole batches through the probe: the digest table, growth and the window switch inside a batch ---

FUZZ = hsettings(max_examples=120, deadline=None)


@FUZZ
@given(slots=st.integers(16, 400), tail=st.sampled_from([0, 3, 32]), seed=st.integers(0, 1 << 30),
       pool=st.integers(1, 60), crcs=st.integers(1, 3), n=st.integers(0, 300))
def test_the_digest_table_add_answers_as_a_set_does(slots, tail, seed, pool, crcs, n):
    """Keys from a small pool (many equal keys in one call, fingerprints equal with other CRCs, negative
    fingerprints, chains wrapping past the table's end): add() reports exactly the keys already known."""
    dedup_mod._numpy()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dedup_mod, "_TAIL", tail)
        rng = random.Random(seed)
        table = _DigestTable(slots)
        fps = [rng.choice([1, -1]) * rng.randrange(1, 1 << 62) for _ in range(pool)]
        fps += [slots * rng.randrange(1, 5) - 1 for _ in range(3)]       # homes at the last slot
        seen = set()
        for _round in range(4):
            room = table.limit - table.count
            m = min(n, room)
            if m <= 0:
                break
            keys = [(rng.choice(fps), rng.randrange(crcs)) for _ in range(m)]
            expected = []
            new = 0
            for k, key in enumerate(keys):
                if key in seen:
                    expected.append(k)
                else:
                    seen.add(key)
                    new += 1
                    if new > room:
                        break
            keys = keys[:k + 1] if new > room else keys
            expected = [k for k in expected if k < len(keys)]
            f = np.array([key[0] for key in keys], np.int64)
            c = np.array([key[1] for key in keys], np.uint32)
            assert table.add(f, c) == expected
            assert table.count == len(seen)
            assert all(table.contains(a, b) for a, b in seen)
            assert sorted(table.find(f, c)) == list(range(len(keys)))
            if new > room or m < n:
                break
        assert int((table.fpv != 0).sum()) == len(seen)


@FUZZ
@given(seed=st.integers(0, 1 << 30), sizes=st.lists(st.integers(0, 400), min_size=1, max_size=8),
       pool=st.integers(2, 400), with_meta=st.booleans(), linktypes=st.sampled_from([(1,), (1, 101), (1, 113, 0)]),
       releases=st.sets(st.integers(0, 7), max_size=2), window=st.sampled_from([60, 100, 250]))
def test_the_stage_decides_as_frame_by_frame_probing(seed, sizes, pool, with_meta, linktypes, releases, window):
    """Whole batches through the numpy probe: growth inside a batch, metadata records, mixed link types,
    window mode (two generations) switched on between batches: the same frames kept as the model."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dedup_mod, "MIN_SLOTS", 64)
        mp.setattr(dedup_mod, "WINDOW", window)
        mp.setattr(dedup_mod._DigestTable.__init__, "__defaults__", (64,))
        rng = random.Random(seed)
        frames = [(rng.randbytes(rng.choice([1, 20, 70, 200])), rng.choice(linktypes)) for _ in range(pool)]
        batches = []
        for size in sizes:
            batch = []
            for _ in range(size):
                if with_meta and rng.random() < 0.05:
                    batch.append((b"\x01\x02\x03\x04", -1, 0, 0, 0, (6, None)))
                data, lt = rng.choice(frames)
                batch.append((data, lt, 0, len(data), 0, None))
            batches.append(batch)
        stage = DedupStage({}, None)
        model = FrameByFrame(64, min_slots=64)
        got, expected = [], []
        for b, batch in enumerate(batches):
            if b in releases:
                stage.release_memory()
                model.release_memory()
            got.append(list(stage.process(batch)))
            expected.append(model.process(batch))
        assert [[(r[0], r[1]) for r in batch] for batch in got] == \
            [[(r[0], r[1]) for r in batch] for batch in expected]
        replay = stage.replayer()
        again = [list(replay.process(batch)) for batch in batches]
        assert [[(r[0], r[1]) for r in batch] for batch in again] == \
            [[(r[0], r[1]) for r in batch] for batch in expected]


@functools.lru_cache(maxsize=4)
def _pool(unique: int) -> list:
    rng = random.Random(unique)
    return [rng.randbytes(rng.choice([20, 60, 64, 65, 200])) for _ in range(unique)]


def _records(n: int, seed: int, unique: int) -> list:
    """Frames from a pool (so: duplicates, across batches too); every third batch mixes in a second link type
    (the general path), the others have one (the plain path), so frames inserted by one path are looked up
    by the other."""
    rng = random.Random(seed)
    pool = _pool(unique)
    mixed = seed % 3 == 0
    return [(pool[rng.randrange(unique)], 101 if mixed and rng.random() < 0.3 else 1, i, 0, 0, None)
            for i in range(n)]


@pytest.fixture
def plain_calls(monkeypatch):
    """The sizes of the batches that took the plain path (one link type, room in the table)."""
    calls = []
    real = DedupStage._process_plain

    def spy(self, batch, lt):
        calls.append(len(batch))
        return real(self, batch, lt)
    monkeypatch.setattr(DedupStage, "_process_plain", spy)
    return calls


def _replayed(stage: DedupStage, batches: list) -> list:
    replay = stage.replayer(StageContext())
    out = [r for b in batches for r in replay.process(b)]
    replay.finish()
    return out


def test_a_presize_far_too_small_grows_inside_batches_and_replays_the_same(plain_calls):
    batches = [_records(512, seed=s, unique=40000) for s in range(120)]      # ~61k frames, 40k distinct
    stage = DedupStage({}, StageContext(extra={"input_size": 10}))         # presized to the minimum
    out, seen, want = [], set(), []
    for b in batches:
        out += stage.process(b)
        for r in b:
            if (r[0], r[1]) not in seen:
                seen.add((r[0], r[1]))
                want.append(r)
    assert [id(r) for r in out] == [id(r) for r in want]
    assert stage._table.slots > MIN_SLOTS
    assert 0 < len(plain_calls) < len(batches)             # both paths ran
    assert [id(r) for r in _replayed(stage, batches)] == [id(r) for r in want]


def test_the_window_switch_inside_a_batch_keeps_unique_frames_and_replays_the_same(monkeypatch, plain_calls):
    monkeypatch.setattr(dedup_mod, "WINDOW", 3000)
    window_batches = []
    real_window = DedupStage._process_window

    def spy(self, batch):
        window_batches.append(len(batch))
        return real_window(self, batch)
    monkeypatch.setattr(DedupStage, "_process_window", spy)
    # more distinct frames than the smallest table holds: a generation ends inside a batch
    batches = [_records(512, seed=100 + s, unique=40000) for s in range(100)]
    stage = DedupStage({}, StageContext(extra={"input_size": 10}))
    out = []
    for k, b in enumerate(batches):
        out += stage.process(b)
        if k == 1:
            assert stage.release_memory()                   # pressure: window mode from here on
    assert stage.report()["mode"].startswith("window")
    assert plain_calls                                      # the plain path ran before the window
    assert any(0 < n < 512 for n in window_batches)         # the switch came inside a batch
    kept = {id(r) for r in out}
    seen_at = {}                                            # frame -> index among unique frames seen
    uniques = 0
    for r in (r for b in batches for r in b):
        key = (r[0], r[1])
        if id(r) in kept:
            uniques += 1
            seen_at[key] = uniques
        else:   # dropped: a real duplicate of a frame kept recently enough
            assert key in seen_at
    first = {}
    for r in (r for b in batches for r in b):
        first.setdefault((r[0], r[1]), r)
    assert all(id(r) in kept for r in first.values())      # no first occurrence is ever dropped
    assert [id(r) for r in _replayed(stage, batches)] == [id(r) for r in out]


def _corpus_files() -> list:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.iterdir() if p.suffix in (".pcap", ".pcapng"))


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"real-capture corpus not present at {CORPUS} (a fresh clone has "
                                                 "no ../shared)")
def test_corpus_outputs_equal_frame_by_frame_dedup(workdir):
    """Every corpus file through the real executor: the output bytes are those of writing, record by record,
    the frame-by-frame decisions (the reference the batch-wide probe must equal)."""
    duplicates = 0
    for path in _corpus_files():
        src = workdir / path.name
        shutil.copyfile(path, src)
        want = io.BytesIO()
        try:
            with CaptureReader(src) as reader:
                writer = CaptureWriter(want, reader.format, reader.pcap_header)
                model = FrameByFrame()
                for batch in reader.batches(512):
                    writer.write_batch(model.process(batch))
                writer.close()
        except Exception:                     # a capture the reader refuses: the executor must refuse it too
            want = None
        out = workdir / ("out-" + path.name)
        spec = ExecSpec(read_path=str(src), staged_path=str(out), stages=["dedup"], stage_options={}, key=None,
                        memory_rss_mb=0, memory_available_pct=0)
        if want is None:
            with pytest.raises(Exception):  # noqa: B017 (whatever the reader raised: the executor refuses too)
                execute(spec)
            continue
        result = execute(spec)
        assert out.read_bytes() == want.getvalue(), path.name
        duplicates += result["stages"]["dedup"]["duplicates_removed"]
    assert duplicates > 0                   # the corpus holds real duplicates (ssh dups, afs, babel, pptp)


def test_numpy_is_loaded_only_when_remove_dupes_runs():
    # every run imports the stage modules (the stage registry); only a stage at work (Remove Dupes, or Mask
    # Payloads on a batch with payloads to zero) pays numpy's import
    code = ("import sys\n"
            "from pktmask_gui.stages import StageContext, all_stages\n"
            "from pktmask_gui.stages.dedup import DedupStage\n"
            "all_stages()\n"
            "before = 'numpy' in sys.modules\n"
            "DedupStage({}, StageContext()).process([(b'x', 1, 0, 1, 0, None)])\n"
            "print(before, 'numpy' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.stdout.split() == ["False", "True"], done.stderr
