"""Remove Dupes: drop frames whose link type and captured bytes equal an earlier frame's in the file.

Memory per remembered frame: a 96-bit fingerprint in an open-addressing table of fixed-width integers,
kept at most 65 % full: 12 bytes a slot (8 of fingerprint, 4 of CRC), about 18.5 bytes a unique frame — no
Python object per frame (a set of digests costs ~90 bytes a frame). The fingerprint is the interpreter's
keyed 64-bit SipHash of the whole frame (a keyed BLAKE2b when PYTHONHASHSEED fixes the interpreter's key,
see _frame_hash), mixed with the link type, plus the CRC-32 of the frame's first 64 bytes (where headers,
sequence numbers and IDs differ between frames; a CRC of the whole frame would cost a third of the stage's
time). Two different frames are confused only on a 64-bit keyed-hash collision (about N²/2⁶⁵ for N frames)
that is also, when their first 64 bytes differ, a CRC-32 collision of those.
The table is sized from the file size and the mean record size of the first batch (capped at
``PRESIZE_CAP`` slots), and once more when 1/32 of the file is read (the first frames may be larger than
the rest), so that a large file does not pay for a chain of doublings; a doubling holds the new table and
the keys (12 bytes each), and takes them back a chunk at a time. On top of that, one bit per frame records
each decision, so that later passes over the same input (the main pass after a pre-scan) repeat them
without hashing (``replayer``).

Hand-written table: Python has no compact fixed-width hash set, and this one is the hot path. Why numpy:
probing in Python cost about 0.4 µs a frame (bytecode, and one cache miss after another). Here hashing and
CRCs stay C loops (map) and the probe runs over a whole batch at once (``_DigestTable.add``): every frame's
run of slots comes in one gather, so the misses overlap, and only rare long chains finish in Python (about
0.1 µs a frame in 512-frame batches; numpy's per-call cost is most of it). The decisions are exactly those
of frame-by-frame linear probing. numpy is imported with the first table (~0.06 s, 13 MB of libraries):
runs without Remove Dupes never load it.

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

from ..capture import RawBatch
from . import Stage, StageError

np = None                       # numpy, imported by the first table: a run without Remove Dupes never pays it

WINDOW = 262144
MIN_SLOTS = 1 << 15
RESIZE_SHARE = 32               # the table is sized again once 1/32 of the file is read
PRESIZE_CAP = 1 << 22           # 48 MiB of table at most before any frame proves it is needed
LOAD = 0.65                     # fullest the table gets: linear probing stays short (~3 slots a miss)
HEAD = 64                       # bytes of a frame under its CRC-32
SLOT_BYTES = 12
_LT_MIX = 0x9E3779B97F4A7C15
_MIX_BITS = (1 << 62) - 1        # a mix below 2**62 keeps hash() ^ mix in signed 64 bits (array "q")
_ZERO_Q, _ZERO_I = (0,), (0,)
_RECORD_OVERHEAD = 16           # bytes of a record header in the file, besides the frame itself
_DATA, _LINKTYPE, _HEAD = itemgetter(0), itemgetter(1), itemgetter(slice(0, HEAD))
_W = 16                         # slots a vectorized round looks at from each key's position
_REFILL = 1 << 14                # keys a growing table takes back per add() call (see insert_all)
_TAIL = 32                      # keys left to probe in Python rather than in another numpy round
_MARK = 1 << 62                 # claim marks: k - _MARK, negative and distinct, the lowest k the smallest
_ARANGE = _ONES = None          # 0, 1, 2, ... and True, True, ... (4096 of each), made with the first table


def _numpy() -> None:
    global np, _ARANGE, _ONES
    if np is None:
        import numpy
        _ARANGE, _ONES = numpy.arange(4096), numpy.ones(4096, bool)
        np = numpy


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
    ``fingerprint % slots`` (any size, not only powers of two: the table fits the file more closely; numpy's
    ``%`` on int64 takes the divisor's sign, as Python's does: 0 <= home < slots). The arrays are
    ``array.array`` (quick single-slot reads in Python) seen by numpy without a copy (``fpv``, ``crcv``, and
    ``windows``: the _W fingerprints from each slot as one fixed-size item, so that gathering every key's run
    of slots is one copy per key).
    """

    __slots__ = ("fp", "crc", "fpv", "crcv", "windows", "slots", "count", "limit")

    def __init__(self, slots: int = MIN_SLOTS):
        _numpy()
        self.fp = array("q", _ZERO_Q) * slots      # repetition: no temporary bytes object of the same size
        self.crc = array("I", _ZERO_I) * slots
        self.fpv = np.frombuffer(self.fp, np.int64)
        self.crcv = np.frombuffer(self.crc, np.uint32)
        self.windows = np.ndarray((max(0, slots - _W + 1),), f"V{8 * _W}", self.fp, strides=(8,))
        self.slots = slots
        self.count = 0
        self.limit = int(slots * LOAD)

    def grow(self, slots: int = 0) -> None:
        """Twice the slots (or ``slots``). The keys are taken out first and the old arrays let go before the
        new ones are made: the peak is the new table and 12 bytes a key, not both tables."""
        taken = np.flatnonzero(self.fpv)
        fps, crcs, count = self.fpv[taken], self.crcv[taken], self.count
        slots = slots or self.slots * 2
        del taken
        self.fp = self.crc = self.fpv = self.crcv = self.windows = None
        self.__init__(slots)
        self.insert_all(fps, crcs)
        self.count = count

    def insert_all(self, fps, crcs) -> None:
        """Insert the non-empty entries of numpy arrays of fingerprints and CRCs (count is left to the caller),
        _REFILL keys at a time: a round of ``add`` holds ~250 bytes of temporaries a key (one call for a
        million keys peaked at 300 MB), and keys added in turn get the answers one call would give."""
        taken = np.flatnonzero(fps)
        for i in range(0, len(taken), _REFILL):
            part = taken[i:i + _REFILL]
            self.add(fps[part], crcs[part])

    def add(self, f, c) -> list:
        """Remember the keys ``(f[k], c[k])`` (``f`` never 0) in order of ``k``, as frame-by-frame probing
        would; return the ``k`` of those already known — held by the table or equal to an earlier key of
        ``f, c`` — ascending. The caller makes sure the table needs no growth before the last key.

        A round looks at the _W slots from each pending key's position at once (one gather: the cache misses
        overlap) and stops each key at its first slot that holds its fingerprint or is free. Same fingerprint
        and CRC: found. A free slot is claimed; when several keys claim one slot in a round, the lowest ``k``
        wins it (np.minimum.at of marks), a loser equal to the winner is found (a later copy), the others look
        at that slot again next round. Same fingerprint, other CRC: go on after it; neither: the next _W
        slots. So each new key lands on the first free slot after its home at the time it is placed (linear
        probing stays valid: nothing is ever deleted), and two equal keys move in step until the first one is
        placed: every answer is the one of probing key after key (the slots chosen may differ). Keys whose
        run would pass the table's end, and the last few (long chains), finish in Python in order of ``k``,
        where a step costs less than a numpy call.
        """
        fpv, crcv, slots, windows = self.fpv, self.crcv, self.slots, self.windows
        n = len(f)
        k = _ARANGE[:n] if n <= len(_ARANGE) else np.arange(n)
        at = f % slots
        found = []
        aside = []                                  # keys whose window would pass the table's end
        placed = 0
        while len(k) > _TAIL:
            if at.max() > slots - _W:
                edge = at > slots - _W
                aside.append((k[edge], f[edge], c[edge], at[edge]))
                edge = ~edge
                k, f, c, at = k[edge], f[edge], c[edge], at[edge]
            m = len(k)
            rows = _ARANGE[:m] if m <= len(_ARANGE) else np.arange(m)
            win = windows[at].view(np.int64).reshape(m, _W)     # the _W slots from each key's position
            stop = win == f[:, None]
            stop |= win == 0
            first = stop.argmax(1)                  # the first slot holding the key or free (else 0)
            v = win[rows, first]
            slot = at + first
            done = []                               # keys placed or found in this round
            moved = []                              # (keys, slot to look at next) other than the next window
            claim = (v == 0).nonzero()[0]
            if len(claim):
                s = slot[claim]
                mark = claim - _MARK
                np.minimum.at(fpv, s, mark)         # the first claimant of a slot wins it
                won = fpv[s] == mark
                if not won.all():
                    lose = ~won
                    lost, lost_s = claim[lose], s[lose]
                    claim, s = claim[won], s[won]
                fpv[s] = f[claim]
                crcv[s] = c[claim]
                done.append(claim)
                placed += len(claim)
                if len(claim) < len(won):
                    copy = (fpv[lost_s] == f[lost]) & (crcv[lost_s] == c[lost])    # the winner's twin
                    found.append(k[lost[copy]])
                    done.append(lost[copy])
                    moved.append((lost, lost_s))    # the others look at that slot again
            hit = (v == f).nonzero()[0]
            if len(hit):
                same = crcv[slot[hit]] == c[hit]
                if not same.all():                  # the same fingerprint, another CRC: go on after it
                    moved.append((hit[~same], slot[hit[~same]] + 1))
                    hit = hit[same]
                found.append(k[hit])
                done.append(hit)
            if sum(map(len, done)) == m:
                k = None                            # none left
                break
            rest = _ONES[:m].copy() if m <= len(_ONES) else np.ones(m, bool)    # keys for another round
            for keys in done:
                rest[keys] = False
            at += _W                                # neither found nor free in the window: the next one
            for keys, pos in moved:
                at[keys] = pos
            at[at >= slots] -= slots
            k, f, c, at = k[rest], f[rest], c[rest], at[rest]
        if k is not None:
            aside.append((k, f, c, at))
        if len(aside) > 1:
            k, f, c, at = (np.concatenate(part) for part in zip(*aside))
            order = k.argsort()
            aside = [(k[order], f[order], c[order], at[order])]
        fp, crc = self.fp, self.crc
        tail = []
        k, f, c, at = aside[0] if aside else (_ARANGE[:0],) * 4
        for j, fv, cv, i in zip(k.tolist(), f.tolist(), c.tolist(), at.tolist()):
            while True:
                v = fp[i]
                if not v:
                    fp[i] = fv
                    crc[i] = cv
                    placed += 1
                    break
                if v == fv and crc[i] == cv:
                    tail.append(j)
                    break
                i += 1
                if i == slots:
                    i = 0
        self.count += placed
        if not found:
            return sorted(tail)
        return sorted(np.concatenate(found).tolist() + tail)

    def find(self, f, c) -> list:
        """The ``k`` of the keys ``(f[k], c[k])`` the table holds, ascending (a lookup only)."""
        fpv, crcv, slots = self.fpv, self.crcv, self.slots
        at = f % slots
        k = _ARANGE[:len(f)] if len(f) <= len(_ARANGE) else np.arange(len(f))
        found = []
        while len(k) > _TAIL:
            v = fpv[at]
            same = np.flatnonzero(v == f)
            if len(same):
                same = same[crcv[at[same]] == c[same]]
                found.append(k[same])
            rest = v != 0
            rest[same] = False
            at += 1
            at[at == slots] = 0
            k, f, c, at = k[rest], f[rest], c[rest], at[rest]
        tail = [j for j, fv, cv, i in zip(k.tolist(), f.tolist(), c.tolist(), at.tolist())
                if self._holds_from(i, fv, cv)]
        if not found:
            return tail
        return sorted(np.concatenate(found).tolist() + tail)

    def _holds_from(self, i: int, f: int, c: int) -> bool:
        fp, slots = self.fp, self.slots
        while True:
            v = fp[i]
            if v == f and self.crc[i] == c:
                return True
            if not v:
                return False
            i += 1
            if i == slots:
                i = 0

    def holds(self, f, c):
        """A bool array: which keys ``(f[k], c[k])`` the table holds (``find``, _REFILL keys at a time)."""
        out = np.zeros(len(f), bool)
        for i in range(0, len(f), _REFILL):
            found = self.find(f[i:i + _REFILL], c[i:i + _REFILL])
            if found:
                out[np.asarray(found) + i] = True
        return out

    def contains(self, f: int, c: int) -> bool:
        return self._holds_from(f % self.slots, f, c)

    @property
    def nbytes(self) -> int:
        return self.slots * SLOT_BYTES


def _compacted(table: _DigestTable) -> _DigestTable:
    new = _DigestTable(max(MIN_SLOTS, int(table.count / LOAD) + 1))
    new.insert_all(table.fpv, table.crcv)
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
        # the first batch may not be typical of the file: once RESIZE_SHARE of it is read, the table is sized
        # again from what came so far (while it is small, instead of doubling later with both tables held)
        self._sample_bytes = self._sample_frames = 0
        self._resize_at = None

    def process(self, batch: list) -> list:
        table = self._table
        if table is None:
            size = self.context.extra.get("input_size", 0) if self.context is not None else 0
            table = self._table = _DigestTable(presized_slots(size, batch))
            self._resize_at = size // RESIZE_SHARE or None
        if self._resize_at is not None:
            self._resize(table, batch)
        if self._previous is not None:
            return self._process_window(batch)
        if table.count + len(batch) <= table.limit and batch:
            if type(batch) is RawBatch:         # a pcap reader's batch: packets of the file's one link type
                return self._process_plain(batch, batch[0][1])
            lts = set(map(_LINKTYPE, batch))
            if len(lts) == 1 and min(lts) >= 0:
                return self._process_plain(batch, min(lts))
        return self._process_general(batch, hand_over=True)

    def _resize(self, table, batch: list) -> None:
        """Count the sample's bytes and frames; once it is large enough, make the table as large as the file
        then seems to need (the decisions do not depend on its size)."""
        lengths = [len(rec[0]) for rec in batch if rec[1] >= 0]
        self._sample_bytes += sum(lengths) + _RECORD_OVERHEAD * len(lengths)
        self._sample_frames += len(lengths)
        if self._sample_bytes < self._resize_at:
            return
        size = self._resize_at * RESIZE_SHARE
        self._resize_at = None
        frames = size * self._sample_frames // self._sample_bytes
        if frames > table.limit and self._previous is None:             # it would double later on
            table.grow(min(PRESIZE_CAP, int(frames * 1.125 / LOAD) + 1))

    def _process_plain(self, batch: list, lt: int) -> list:
        """The common batch: frames of one link type, room for all of them in the table. Returns ``batch``
        itself when it holds no duplicate, else the batch without them (slices between the drops)."""
        f, c = self._fingerprints(list(map(_DATA, batch)), (lt * _LT_MIX) & _MIX_BITS)
        return self._keep(batch, None, len(batch), self._decide(f, c))

    def _process_window(self, batch: list) -> list:
        """Window mode, once a generation has ended: two generations of tables."""
        return self._process_general(batch, hand_over=False)

    def _process_general(self, batch: list, hand_over: bool) -> list:
        """Any batch: metadata records pass, link types mix, the table may fill inside the batch. The frames
        go in chunks that end where the table would grow (or a window generation end), so that every decision
        is the one frame-by-frame processing makes. ``hand_over``: when a generation ends inside the batch,
        the rest takes the window path."""
        lts = list(map(_LINKTYPE, batch))
        if not lts:
            return batch
        where = None                            # frame k is batch[where[k]] (None: batch[k])
        if min(lts) < 0:
            where = [i for i, lt in enumerate(lts) if lt >= 0]
            lts = [lts[i] for i in where]
            datas = [batch[i][0] for i in where]
        else:
            datas = list(map(_DATA, batch))
        mixes = {lt: (lt * _LT_MIX) & _MIX_BITS for lt in set(lts)}
        f, c = self._fingerprints(datas, np.fromiter(map(mixes.__getitem__, lts), np.int64, len(lts)))
        n = len(datas)
        drops = []
        start = 0
        while start < n:
            table = self._table
            end = min(n, start + table.limit - table.count + 1)   # at most one frame past the limit
            drops += [start + j for j in self._decide(f[start:end], c[start:end])]
            start = end
            if table.count > table.limit:
                if self._window and table.count >= WINDOW:
                    self._previous, self._table = table, _DigestTable()
                    if hand_over and start < n:
                        cut = where[start - 1] + 1 if where is not None else start
                        return (self._keep(batch[:cut], where, start, drops)
                                + self._process_window(batch[cut:]))
                else:
                    table.grow()
        return self._keep(batch, where, n, drops)

    def decide_fingerprints(self, f, c) -> list:
        """Decide the next ``len(f)`` frames from their fingerprints and CRCs, computed by ``_fingerprints``
        in a process with this one's hash key (firstpass.py: a fork), in order, as process() would, and
        record them; returns the indices of the duplicates. Not in window mode."""
        n = len(f)
        drops: list = []
        start = 0
        while start < n:
            table = self._table
            end = min(n, start + table.limit - table.count + 1, start + _REFILL)    # (see insert_all)
            drops += [start + j for j in self._decide(f[start:end], c[start:end])]
            start = end
            if table.count > table.limit:
                table.grow()
        self._keep([], None, n, drops)
        return drops

    def _fingerprints(self, datas: list, mix) -> tuple:
        """Keyed 64-bit hash of each frame mixed with its link type (never 0: 0 marks an empty slot) and the
        CRC-32 of its head: computed in C loops (map), gathered by numpy."""
        f = np.fromiter(map(self._hash, datas), np.int64, len(datas))
        f ^= mix
        if not f.all():
            f[f == 0] = 1
        return f, np.fromiter(map(crc32, map(_HEAD, datas)), np.uint32, len(datas))

    def _decide(self, f, c) -> list:
        """Indices of the duplicates among these frames, ascending; the others are remembered. The caller
        makes sure the table needs no growth before the last of them."""
        older = self._previous                  # window mode: the older generation counts too
        if older is None:
            return self._table.add(f, c)
        old = older.find(f, c)
        if not old:
            return self._table.add(f, c)
        keep = np.ones(len(f), bool)
        keep[old] = False
        k = np.flatnonzero(keep)
        new = self._table.add(f[k], c[k])
        return sorted(old + k[new].tolist()) if new else old

    def _keep(self, batch: list, where, frames: int, drops: list) -> list:
        """Record the decisions on ``frames`` frames; the records of ``batch`` but for the dropped ones."""
        n = self.frames
        self.frames = n + frames
        dropped = self.dropped
        need = (n + frames + 7) >> 3
        if len(dropped) < need:
            dropped.extend(bytes(need - len(dropped) + 256))
        if not drops:
            return batch
        self.removed += len(drops)
        out = []
        prev = 0
        for j in drops:
            k = n + j
            dropped[k >> 3] |= 1 << (k & 7)
            if where is not None:
                j = where[j]
            out += batch[prev:j]
            prev = j + 1
        out += batch[prev:]
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

    def replayer(self, context=None) -> DedupReplay:
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


class DedupReplay(Stage):
    """Remove Dupes' decisions, replayed: drops exactly the frames the first pass found duplicate.

    One bit per frame (``decisions``); a batch without a duplicate goes through untouched. If the input
    yields more frames than were decided, it changed between passes: the file fails. A stand-in, not a
    stage of its own: the registry does not list it as a second operation.
    """

    name = DedupStage.name
    title = DedupStage.title
    order = DedupStage.order
    drops_frames = True
    stand_in = True

    def __init__(self, options, context):
        super().__init__(None, context)
        self.options = dict(options or {})
        self.decisions = bytearray()
        self.decided = 0
        self.source: dict = {}
        self.frames = 0

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

    def replayer(self, context=None) -> DedupReplay:
        replay = DedupReplay(self.options, context or self.context)
        replay.decisions, replay.decided, replay.source = self.decisions, self.decided, self.source
        return replay

    segmentable = True

    def export(self) -> dict:
        return {"decisions": bytes(self.decisions), "source": self.source}

    def segment_start(self, first: int, end: int, shared, at) -> None:  # noqa: ARG002
        """Replay the decisions on frames first+1 .. end only (finish() then checks it met them all)."""
        if shared is not None:
            self.decisions, self.source = shared["decisions"], shared["source"]
        self.frames, self.decided = first, end

    def finish(self) -> None:
        """The pass is over: every decided frame must have come again."""
        if self.frames != self.decided:
            raise StageError("the input file changed while it was being processed (it now holds fewer "
                             "frames than in the first pass)")

    def report(self) -> dict:
        return dict(self.source)
