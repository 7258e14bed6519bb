"""Remove Dupes: drop frames whose link type and captured bytes equal an earlier frame's in the file.

Memory per remembered frame: a 96-bit fingerprint (the interpreter's keyed 64-bit SipHash of the bytes,
mixed with the link type, plus their CRC-32) in an open-addressing table of fixed-width integers kept at
most half full: 12 bytes a slot, 24 to 48 bytes a unique frame — no Python object per frame (a set of
digests costs ~90 bytes a frame). A false match needs both a 64-bit keyed-hash and a CRC-32 collision.
Hand-written table: Python has no compact fixed-width hash set, and this one is the hot path.

Under memory pressure the stage switches to a window: it remembers at least the last WINDOW unique frames
(two generations of tables) and says so in the log and report. It never drops a frame that is not a duplicate.
"""
from __future__ import annotations

from array import array
from zlib import crc32

from . import Stage

WINDOW = 262144
_M64 = (1 << 64) - 1
_LT_MIX = 0x9E3779B97F4A7C15


class _DigestTable:
    """Open addressing with linear probing over two parallel arrays; fingerprint 0 marks an empty slot."""

    __slots__ = ("fp", "crc", "mask", "count", "limit")

    def __init__(self, slots: int = 1 << 15):
        self.fp = array("Q", bytes(8 * slots))
        self.crc = array("I", bytes(4 * slots))
        self.mask = slots - 1
        self.count = 0
        self.limit = slots // 2

    def grow(self) -> None:
        old_fp, old_crc = self.fp, self.crc
        slots = (self.mask + 1) * 2
        self.fp = fp = array("Q", bytes(8 * slots))
        self.crc = crcs = array("I", bytes(4 * slots))
        self.mask = mask = slots - 1
        self.limit = slots // 2
        for j, f in enumerate(old_fp):
            if f:
                i = f & mask
                while fp[i]:
                    i = (i + 1) & mask
                fp[i] = f
                crcs[i] = old_crc[j]

    def contains(self, f: int, c: int) -> bool:
        fp, mask = self.fp, self.mask
        i = f & mask
        while True:
            v = fp[i]
            if v == f and self.crc[i] == c:
                return True
            if not v:
                return False
            i = (i + 1) & mask

    @property
    def nbytes(self) -> int:
        return len(self.fp) * 12


class DedupStage(Stage):
    name = "dedup"
    title = "Remove Dupes"
    description = ("Drops every frame whose link type and captured bytes are identical to an earlier frame "
                   "in the same file (whatever its timestamp or interface); keeps the first copy and the order.")
    order = 10
    drops_frames = True

    def __init__(self, options, context):
        super().__init__(options, context)
        self._table = _DigestTable()
        self._previous: _DigestTable | None = None   # window mode: the older generation
        self._window = False
        self.frames = 0
        self.removed = 0

    def process(self, batch: list) -> list:
        out = []
        append = out.append
        table = self._table
        fp, crcs, mask = table.fp, table.crc, table.mask
        previous = self._previous
        frames = removed = 0
        for rec in batch:
            lt = rec[1]
            if lt < 0:                      # metadata block: not a frame
                append(rec)
                continue
            frames += 1
            data = rec[0]
            f = ((hash(data) ^ (lt * _LT_MIX)) & _M64) | 1      # never 0: 0 marks an empty slot
            c = crc32(data)
            if previous is not None and previous.contains(f, c):
                removed += 1
                continue
            i = f & mask
            while True:                     # inlined probe: this loop is the stage's whole cost
                v = fp[i]
                if not v:
                    fp[i] = f
                    crcs[i] = c
                    append(rec)
                    table.count += 1
                    if table.count > table.limit:
                        if self._window and table.count >= WINDOW:
                            self._previous = previous = table
                            self._table = table = _DigestTable()
                        else:
                            table.grow()
                        fp, crcs, mask = table.fp, table.crc, table.mask
                    break
                if v == f and crcs[i] == c:
                    removed += 1
                    break
                i = (i + 1) & mask
        self.frames += frames
        self.removed += removed
        return out

    def release_memory(self) -> str | None:
        if self._window:
            return None
        self._window = True
        if self._table.count >= WINDOW:
            self._previous, self._table = self._table, _DigestTable()
        return (f"Remove Dupes switched to a window: duplicates are now found among at least the last "
                f"{WINDOW:,} unique frames instead of the whole file (no other frame is dropped).")

    def report(self) -> dict:
        tables = [t for t in (self._table, self._previous) if t is not None]
        return {
            "frames": self.frames,
            "duplicates_removed": self.removed,
            "unique_frames_remembered": sum(t.count for t in tables),
            "digest_table_bytes": sum(t.nbytes for t in tables),
            "mode": f"window of {WINDOW} unique frames" if self._window else "whole file",
        }
