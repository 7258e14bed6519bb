"""Remove Dupes: drop frames whose link type and captured bytes equal an earlier frame's in the file.

Memory per remembered frame: a 96-bit fingerprint in an open-addressing table of fixed-width integers,
kept at most 65 % full: 12 bytes a slot, about 18.5 bytes a unique frame — no Python object per frame (a
set of digests costs ~90 bytes a frame). The fingerprint is the interpreter's keyed 64-bit SipHash of the
whole frame (a keyed BLAKE2b when PYTHONHASHSEED fixes the interpreter's key, see _frame_hash), mixed with
the link type, plus the CRC-32 of the frame's first 64 bytes (where headers,
sequence numbers and IDs differ between frames; a CRC of the whole frame would cost a third of the stage's
time). Two different frames are confused only on a 64-bit keyed-hash collision (about N²/2⁶⁵ for N frames)
that is also, when their first 64 bytes differ, a CRC-32 collision of those.
The table is sized once from the file size and the mean record size of the first batch (capped at
``PRESIZE_CAP`` slots), so that a large file does not pay for a chain of doublings, each of which briefly
holds the old and the new table. On top of that, one bit per frame records each decision, so that later
passes over the same input (the main pass after a pre-scan) repeat them without hashing (``replayer``).
Hand-written table: Python has no compact fixed-width hash set, and this one is the hot path.

Under memory pressure the stage switches to a window: it remembers at least the last WINDOW unique frames
(two generations of tables) and says so in the log and report. It never drops a frame that is not a duplicate.
"""
from __future__ import annotations

import hashlib
import os
import secrets
from array import array
from operator import itemgetter
from zlib import crc32

from . import Stage, StageError

WINDOW = 262144
MIN_SLOTS = 1 << 15
PRESIZE_CAP = 1 << 22           # 48 MiB of table at most before any frame proves it is needed
LOAD = 0.65                     # fullest the table gets: linear probing stays short (~3 slots a miss)
HEAD = 64                       # bytes of a frame under its CRC-32
SLOT_BYTES = 12
_LT_MIX = 0x9E3779B97F4A7C15
_MIX_BITS = (1 << 62) - 1        # a mix below 2**62 keeps hash() ^ mix in signed 64 bits (array "q")
_ZERO_Q, _ZERO_I = (0,), (0,)
_RECORD_OVERHEAD = 16           # bytes of a record header in the file, besides the frame itself
_DATA, _LINKTYPE, _HEAD = itemgetter(0), itemgetter(1), itemgetter(slice(0, HEAD))


def _frame_hash():
    """The 64-bit keyed hash of a frame: the interpreter's own (SipHash, keyed at random for each process),
    unless PYTHONHASHSEED fixes that key: then anyone could craft two different frames with one hash, and a
    keyed BLAKE2b with a random key of this run takes its place (slower, as safe)."""
    if os.environ.get("PYTHONHASHSEED", "random") in ("", "random"):
        return hash
    key = secrets.token_bytes(16)
    blake2b, from_bytes = hashlib.blake2b, int.from_bytes

    def keyed(data) -> int:
        return from_bytes(blake2b(data, digest_size=8, key=key).digest(), "little", signed=True)
    return keyed


class _DigestTable:
    """Open addressing with linear probing over two parallel arrays; fingerprint 0 marks an empty slot.

    Fingerprints are signed 64-bit (``hash()``'s range): no masking to unsigned per frame; the home slot is
    ``fingerprint % slots`` (any size, not only powers of two: the table fits the file more closely).
    """

    __slots__ = ("fp", "crc", "slots", "count", "limit")

    def __init__(self, slots: int = MIN_SLOTS):
        self.fp = array("q", _ZERO_Q) * slots      # repetition: no temporary bytes object of the same size
        self.crc = array("I", _ZERO_I) * slots
        self.slots = slots
        self.count = 0
        self.limit = int(slots * LOAD)

    def grow(self) -> None:
        old_fp, old_crc = self.fp, self.crc
        slots = self.slots * 2
        self.fp = array("q", _ZERO_Q) * slots
        self.crc = array("I", _ZERO_I) * slots
        self.slots = slots
        self.limit = int(slots * LOAD)
        self.insert_all(old_fp, old_crc)

    def insert_all(self, fps, crcs) -> None:
        """Re-insert the non-empty slots of another table's arrays (count is left to the caller)."""
        fp, crc, slots = self.fp, self.crc, self.slots
        for j, f in enumerate(fps):
            if f:
                i = f % slots
                while fp[i]:
                    i += 1
                    if i == slots:
                        i = 0
                fp[i] = f
                crc[i] = crcs[j]

    def contains(self, f: int, c: int) -> bool:
        fp, slots = self.fp, self.slots
        i = f % slots
        while True:
            v = fp[i]
            if v == f and self.crc[i] == c:
                return True
            if not v:
                return False
            i += 1
            if i == slots:
                i = 0

    @property
    def nbytes(self) -> int:
        return self.slots * SLOT_BYTES


def _compacted(table: _DigestTable) -> _DigestTable:
    new = _DigestTable(max(MIN_SLOTS, int(table.count / LOAD) + 1))
    new.insert_all(table.fp, table.crc)
    new.count = table.count
    return new


def presized_slots(file_size: int, sample: list) -> int:
    """Slots for a file of ``file_size`` bytes whose first records are ``sample``: enough to hold every
    frame at most ``LOAD`` full, between MIN_SLOTS and PRESIZE_CAP."""
    lengths = [len(rec[0]) for rec in sample if rec[1] >= 0]
    if not file_size or not lengths:
        return MIN_SLOTS
    estimate = file_size // (sum(lengths) // len(lengths) + _RECORD_OVERHEAD)
    return min(PRESIZE_CAP, max(MIN_SLOTS, int(estimate / LOAD) + 1))


class DedupStage(Stage):
    name = "dedup"
    title = "Remove Dupes"
    description = ("Drops every frame whose link type and captured bytes are identical to an earlier frame "
                   "in the same file (whatever its timestamp or interface); keeps the first copy and the order.")
    order = 10
    drops_frames = True

    def __init__(self, options, context):
        super().__init__(options, context)
        self._table: _DigestTable | None = None      # made at the first batch, sized from the file
        self._previous: _DigestTable | None = None   # window mode: the older generation
        self._window = False
        self.frames = 0
        self.removed = 0
        self.dropped = bytearray()      # bit n set: frame n (0-based) was a duplicate
        self._final: dict | None = None     # the report, once the tables are handed over and freed
        self._hash = _frame_hash()

    def process(self, batch: list) -> list:
        table = self._table
        if table is None:
            size = self.context.extra.get("input_size", 0) if self.context is not None else 0
            table = self._table = _DigestTable(presized_slots(size, batch))
        if self._previous is not None:
            return self._process_window(batch)
        dropped = self.dropped
        n = self.frames
        need = (n + len(batch) + 7) >> 3
        if len(dropped) < need:
            dropped.extend(bytes(need - len(dropped) + 256))
        if table.count + len(batch) <= table.limit:
            lts = set(map(_LINKTYPE, batch))
            if len(lts) == 1 and min(lts) >= 0:
                return self._process_plain(batch, min(lts))
        out = []
        append = out.append
        fp, crcs, slots = table.fp, table.crc, table.slots
        count, limit = table.count, table.limit
        removed = 0
        last_lt, mix = 1, _LT_MIX & _MIX_BITS
        frame_hash = self._hash
        for rec in batch:
            lt = rec[1]
            if lt != last_lt:
                if lt < 0:                  # metadata block: not a frame
                    append(rec)
                    continue
                last_lt, mix = lt, (lt * _LT_MIX) & _MIX_BITS
            data = rec[0]
            f = (frame_hash(data) ^ mix) or 1   # never 0: 0 marks an empty slot
            c = crc32(data[:HEAD])
            i = f % slots
            while True:                     # inlined probe: this loop is the stage's whole cost
                v = fp[i]
                if not v:
                    fp[i] = f
                    crcs[i] = c
                    append(rec)
                    count += 1
                    if count > limit:
                        table.count = count
                        if self._window and count >= WINDOW:
                            # next generation; the rest of this batch takes the window path
                            self._previous, self._table = table, _DigestTable()
                            self.frames = n + 1
                            self.removed += removed
                            return out + self._process_window(batch[_index_after(batch, rec):])
                        table.grow()
                        fp, crcs, slots = table.fp, table.crc, table.slots
                        count, limit = table.count, table.limit
                    break
                if v == f and crcs[i] == c:
                    dropped[n >> 3] |= 1 << (n & 7)
                    removed += 1
                    break
                i += 1
                if i == slots:
                    i = 0
            n += 1
        table.count = count
        self.frames = n
        self.removed += removed
        return out

    def _process_plain(self, batch: list, lt: int) -> list:
        """The common batch: frames of one link type, room for all of them in the table. The fingerprints
        are computed in C loops (map); only the probe is Python. Returns ``batch`` itself when it holds no
        duplicate, else the batch without them (slices between the drops)."""
        table = self._table
        fp, crcs, slots = table.fp, table.crc, table.slots
        mix = (lt * _LT_MIX) & _MIX_BITS
        datas = list(map(_DATA, batch))
        drops = []
        j = 0
        for h, c in zip(map(self._hash, datas), map(crc32, map(_HEAD, datas))):
            f = (h ^ mix) or 1              # never 0: 0 marks an empty slot
            i = f % slots
            v = fp[i]
            if not v:                       # the home slot is free: the usual case
                fp[i] = f
                crcs[i] = c
            elif v == f and crcs[i] == c:
                drops.append(j)
            else:
                while True:                 # inlined probe: this loop is the stage's whole cost
                    i += 1
                    if i == slots:
                        i = 0
                    v = fp[i]
                    if not v:
                        fp[i] = f
                        crcs[i] = c
                        break
                    if v == f and crcs[i] == c:
                        drops.append(j)
                        break
            j += 1
        n = self.frames
        self.frames = n + j
        table.count += j - len(drops)
        if not drops:
            return batch
        self.removed += len(drops)
        dropped = self.dropped
        out = []
        prev = 0
        for j in drops:
            k = n + j
            dropped[k >> 3] |= 1 << (k & 7)
            out += batch[prev:j]
            prev = j + 1
        out += batch[prev:]
        return out

    def _process_window(self, batch: list) -> list:
        """The slow path of window mode: two generations of tables."""
        dropped = self.dropped
        need = (self.frames + len(batch) + 7) >> 3
        if len(dropped) < need:
            dropped.extend(bytes(need - len(dropped) + 256))
        out = []
        append = out.append
        n = self.frames
        for rec in batch:
            lt = rec[1]
            if lt < 0:
                append(rec)
                continue
            data = rec[0]
            f = (self._hash(data) ^ ((lt * _LT_MIX) & _MIX_BITS)) or 1
            c = crc32(data[:HEAD])
            table = self._table
            if (self._previous is not None and self._previous.contains(f, c)) or table.contains(f, c):
                dropped[n >> 3] |= 1 << (n & 7)
                self.removed += 1
            else:
                fp, slots = table.fp, table.slots
                i = f % slots
                while fp[i]:
                    i += 1
                    if i == slots:
                        i = 0
                fp[i] = f
                table.crc[i] = c
                table.count += 1
                if table.count > table.limit:
                    if table.count >= WINDOW:
                        self._previous, self._table = table, _DigestTable()
                    else:
                        table.grow()
                append(rec)
            n += 1
        self.frames = n
        return out

    def release_memory(self) -> str | None:
        if self._window:
            return None
        self._window = True
        table = self._table
        if table is not None and table.count >= WINDOW:
            self._previous, self._table = table, _DigestTable()
        elif table is not None and table.count * 4 < table.slots and table.slots > MIN_SLOTS:
            self._table = _compacted(table)         # a presized table, mostly empty: give the room back
        return (f"Remove Dupes switched to a window: duplicates are now found among at least the last "
                f"{WINDOW:,} unique frames instead of the whole file (no other frame is dropped).")

    def replayer(self, context=None) -> "DedupReplay":
        """A stage that repeats this one's decisions over the same input, frame by frame, without hashing.

        The executor uses it for the passes after the first; this stage's tables are freed.
        """
        replay = DedupReplay(self.options, context or self.context)
        replay.decisions = self.dropped
        replay.decided = self.frames
        replay.source = self._final = self.report()
        self._table = self._previous = None
        return replay

    def report(self) -> dict:
        if self._final is not None:
            return dict(self._final)
        tables = [t for t in (self._table, self._previous) if t is not None]
        return {
            "frames": self.frames,
            "duplicates_removed": self.removed,
            "unique_frames_remembered": sum(t.count for t in tables),
            "digest_table_bytes": sum(t.nbytes for t in tables),
            "mode": f"window of {WINDOW} unique frames" if self._window else "whole file",
        }


def _index_after(batch: list, rec) -> int:
    """Index just past ``rec`` (by identity) in ``batch``."""
    for i, r in enumerate(batch):
        if r is rec:
            return i + 1
    raise ValueError("record not in batch")


class DedupReplay:
    """Remove Dupes' decisions, replayed: drops exactly the frames the first pass found duplicate.

    One bit per frame (``decisions``); a batch without a duplicate goes through untouched. If the input
    yields more frames than were decided, it changed between passes: the file fails. It has the Stage
    interface but is not a Stage subclass, so that the registry does not list it as a second operation.
    """

    name = DedupStage.name
    title = DedupStage.title
    order = DedupStage.order
    drops_frames = True
    hidden = False
    needs_prescan = False
    self_check = False
    run_order = None

    def __init__(self, options, context):
        self.options = dict(options or {})
        self.context = context
        self.decisions = bytearray()
        self.decided = 0
        self.source: dict = {}
        self.frames = 0

    def prescan(self, batch: list) -> None:
        pass

    def check(self, before: list, after: list) -> None:
        pass

    def release_memory(self) -> None:
        return None                     # one bit per frame: nothing worth giving back

    def process(self, batch: list) -> list:
        start = self.frames
        plain = True                            # every record a packet (pcap, most pcapng batches)
        for rec in batch:
            if rec[1] < 0:
                plain = False
                break
        count = len(batch) if plain else sum(1 for rec in batch if rec[1] >= 0)
        end = start + count
        if end > self.decided:
            raise StageError("the input file changed while it was being processed (it now holds more "
                             "frames than in the first pass)")
        self.frames = end
        if not count:
            return batch
        lo, hi = start >> 3, (end + 7) >> 3
        bits = int.from_bytes(self.decisions[lo:hi], "little") >> (start & 7)
        bits &= (1 << count) - 1
        if not bits:
            return batch
        if plain:
            out = []
            prev = 0
            while bits:
                low = bits & -bits
                pos = low.bit_length() - 1
                out += batch[prev:pos]
                prev = pos + 1
                bits ^= low
            out += batch[prev:]
            return out
        out = []
        n = 0
        for rec in batch:
            if rec[1] < 0:
                out.append(rec)
                continue
            if not (bits >> n) & 1:
                out.append(rec)
            n += 1
        return out

    def replayer(self, context=None) -> "DedupReplay":
        replay = DedupReplay(self.options, context or self.context)
        replay.decisions, replay.decided, replay.source = self.decisions, self.decided, self.source
        return replay

    def finish(self) -> None:
        """The pass is over: every decided frame must have come again."""
        if self.frames != self.decided:
            raise StageError("the input file changed while it was being processed (it now holds fewer "
                             "frames than in the first pass)")

    def report(self) -> dict:
        return dict(self.source)
