"""The distinct addresses a job met, exactly and compactly: Anonymize IPs' counts and its mapping export.

Anonymize IPs remembers mappings in bounded memos (emptied when full, the mapping recomputed on demand), so a
memo cannot say how many distinct addresses a capture held, nor list them for the export. This set can: an
open-addressing hash table of fixed-width entries (an address, or an address and its mapping) in one
bytearray, probed linearly from the entry's hash, at most two thirds full. Hand-written: Python's set costs ~80
bytes an entry (an object each), this one a few slots of ``width`` bytes and no object. Only the addresses a
memo misses come here, each already a few microseconds of Crypto-PAn: its pure-Python probe (about a
microsecond) does not show.

Memory: 1.5 to 3 slots an entry (6 to 12 bytes an IPv4 address, 24 to 48 an IPv6 one; twice that with the
mapping) and, while the table doubles, the old one too. The table stops growing at ``limit`` bytes: past
it no entry is added and ``complete`` turns False (counts are then approximate, the export partial).
"""
from __future__ import annotations

SLOTS = 1 << 12                 # first size of a table
LIMIT = 8 << 20                 # bytes a table may grow to: 1.4M IPv4 or 350k IPv6 addresses (half with mappings)


class AddressSet:
    def __init__(self, width: int, limit: int = LIMIT):
        self.width = width
        self.limit = limit
        self.complete = True
        self._empty = bytes(width)          # an empty slot; the all-zero entry itself is kept aside
        self._zero = False
        self._count = 0
        self._new_table(SLOTS)

    def _new_table(self, slots: int) -> None:
        self._slots, self._mask = slots, slots - 1
        self._table = bytearray(slots * self.width)

    def add(self, entry: bytes) -> None:
        """Add ``entry`` (``width`` bytes) unless it is there already."""
        w, table, empty = self.width, self._table, self._empty
        if entry == empty:
            self._zero = True
            return
        i = hash(entry) & self._mask
        at = i * w
        slot = table[at:at + w]
        while slot != empty:
            if slot == entry:
                return
            i = (i + 1) & self._mask
            at = i * w
            slot = table[at:at + w]
        if 3 * (self._count + 1) > 2 * self._slots:
            if 2 * len(table) > self.limit:
                self.complete = False       # full: counted no more
                return
            self._grow()
            self.add(entry)
            return
        table[at:at + w] = entry
        self._count += 1

    def _grow(self) -> None:
        old, w = self._table, self.width
        self._new_table(2 * self._slots)
        self._count = 0
        for at in range(0, len(old), w):
            entry = bytes(old[at:at + w])
            if entry != self._empty:
                self.add(entry)

    def __len__(self) -> int:
        return self._count + self._zero

    def __iter__(self):
        """The entries (bytes), in no particular order."""
        table, w, empty = self._table, self.width, self._empty
        if self._zero:
            yield empty
        for at in range(0, len(table), w):
            entry = bytes(table[at:at + w])
            if entry != empty:
                yield entry
