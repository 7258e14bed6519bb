"""Host names in TCP streams (TLS handshakes, DNS over TCP), located in stream coordinates.

A certificate spans segments, a name may be cut between two of them, and a DNS message over TCP may too:
the names stage's pre-scan feeds each TCP direction instance, in stream order, through a ``Direction``
(reassembly that holds the bytes of out-of-order segments, at most ``MAX_PENDING`` a direction; past that
or at the end, the gap is a hole) into a parser, which turns the names it finds into *edits*: ``(start,
end, new bytes or None for zeros)`` in stream offsets. The main pass writes each edit into whichever
segments hold its bytes (every copy of a re-sent segment too).

``TlsNames`` finds the records exactly as Mask Payloads does: it *is* the range map of a ``tls.TlsWalker``
(``add(start, end)`` per record), so a record Mask Payloads keeps is a record this parser reads. It holds
the bytes of the records it has not read yet (and, while the walker searches for a first or a lost
record boundary, those from its first open candidate on), puts handshake messages together across records
and segments (pieces mapping message offsets to stream offsets), and hands each whole message to
certnames.handshake. The handshake phase ends at the first application-data record; after a
ChangeCipherSpec only a record that is exactly one ClientHello is read (a second hello after a
HelloRetryRequest), the rest is encrypted. Failing closed, the bodies are zeroed of: a message cut by a
hole or the capture's end, a message longer than ``MAX_MESSAGE``, a record whose bytes were let go, and,
until a hello has been read where the direction did not begin at its SYN (a capture started mid-stream,
after a hole), every handshake record, since its message boundaries are a guess.

``DnsTcpNames`` reads two-byte-length-prefixed DNS messages from offset 0 (a direction that began at its
SYN) or from a segment start whose length and header validate; bytes it cannot place in a message are
zeroed.

Hand-written: the TLS walker and the stream positions are the project's own (tls.py, tcpstream.py).
"""
from __future__ import annotations

from array import array
from bisect import bisect_right, insort
from collections import deque

from .certnames import handshake
from .namefields import dns_message
from .tls import DONE, SEARCH, SYNC, TlsWalker

MAX_PENDING = 4 << 20           # out-of-order bytes held per direction before the gap counts as a hole
MAX_MESSAGE = 1 << 18           # a longer handshake message is zeroed instead of put together
MAX_BUFFER = 96 << 10           # bytes a searching TLS walker's direction holds behind its position
_HELLO_VERSIONS = (b"\x03\x00", b"\x03\x01", b"\x03\x02", b"\x03\x03")


class Direction:
    """One direction instance's bytes in stream order, exactly once each, to ``parser`` (the first copy of
    re-sent bytes wins, as a receiver's buffer would); out-of-order bytes wait (bounded)."""

    __slots__ = ("pos", "pending", "held", "parser", "order")

    def __init__(self, parser):
        self.pos = 0
        self.pending = []           # (offset, arrival, bytes), sorted
        self.held = 0
        self.parser = parser
        self.order = 0

    def feed(self, off: int, data) -> None:
        end = off + len(data)
        pos = self.pos
        if end <= pos:
            return
        if off < pos:
            data = data[pos - off:]
            off = pos
        if off == pos:
            self.parser.data(off, bytes(data))
            self.pos = end
            if self.pending:
                self._drain()
            return
        self.order += 1
        insort(self.pending, (off, self.order, bytes(data)))
        self.held += len(data)
        if self.held > MAX_PENDING:
            self.hole(self.pending[0][0])

    def hole(self, end: int) -> None:
        """Bytes up to ``end`` are missing (never captured, or given up on)."""
        if end > self.pos:
            self.parser.hole(end)
            self.pos = end
        self._drain()

    def _drain(self) -> None:
        pending = self.pending
        while pending and pending[0][0] <= self.pos:
            off, _n, data = pending.pop(0)
            self.held -= len(data)
            end = off + len(data)
            if end > self.pos:
                self.parser.data(self.pos, data[self.pos - off:])
                self.pos = end

    def finish(self) -> None:
        while self.pending:
            self.hole(self.pending[0][0])
        self.parser.finish()

    @property
    def done(self) -> bool:
        return self.parser.done


class _Counts(dict):
    """The walker's record counts: nobody reads them here."""

    def get(self, key, default=0):  # noqa: ARG002 (dict.get's signature: the walker calls it so)
        return 0

    def __setitem__(self, key, value):
        pass


_NO_COUNTS = _Counts()


class TlsNames:
    """Names in one TLS direction (see the module docstring); ``edits`` in stream offsets."""

    __slots__ = ("walker", "hn", "everything", "buf", "at", "records", "msg", "pieces", "total", "seen",
                 "ccs", "done", "edits", "sure", "bad")

    def __init__(self, hn, everything: bool, syn: bool, midstream: bool):
        self.walker = TlsWalker(self, True, True, _NO_COUNTS)
        if midstream:
            self.walker.midstream()
        elif syn:
            self.walker.at_syn()
        self.hn = hn
        self.everything = everything
        self.buf = bytearray()
        self.at = 0                 # stream offset of buf[0]
        self.records = deque()      # (start, end) of records the walker confirmed, not read yet
        self.msg = None             # the handshake message being put together (bytearray)
        self.pieces = []            # its (message offset, stream offset, length) pieces
        self.total = 0              # its length, header included (0: header not whole yet)
        self.seen = 0               # its bytes met so far
        self.ccs = False
        self.done = False
        self.edits = []
        self.sure = syn and not midstream       # message boundaries known (see the module docstring)
        self.bad = 0

    # ---- the walker's range map --------------------------------------------------------------------
    def add(self, start: int, end: int) -> None:
        self.records.append((start, end))

    # ---- the stream ------------------------------------------------------------------------------
    def data(self, start: int, chunk: bytes) -> None:
        if self.done:
            return
        if start != self.at + len(self.buf):
            self.buf = bytearray()
            self.at = start
        self.buf += chunk
        self.walker.data(start, chunk)
        self._read(False)
        if not self.done:
            self._trim()

    def hole(self, end: int) -> None:
        if self.done:
            return
        self.walker.hole(end)
        self._read(False)
        self._lose()
        self.sure = False
        self.buf = bytearray()
        self.at = end
        if self.walker.mode == DONE and not self.records:
            self._end()

    def finish(self) -> None:
        if not self.done:
            self.walker.finish()
            self._read(True)
            self._lose()
            self._end()

    def _end(self) -> None:
        self.done = True
        self.walker = self.buf = self.records = self.msg = None
        self.pieces = []

    def _trim(self) -> None:
        w = self.walker
        if self.records:
            keep = self.records[0][0]
        elif w.mode == SYNC:
            keep = min(w.nxt, w.pos)
        elif w.mode == SEARCH:
            keep = w.order[w.ci] if w.ci < len(w.order) else w.pos - 4
            keep = max(keep, w.pos - MAX_BUFFER)
        else:
            self._end()                                      # not TLS, or given up on: nothing to read
            return
        cut = keep - self.at
        if cut > 0:
            del self.buf[:cut]
            self.at += cut

    # ---- records ---------------------------------------------------------------------------------------
    def _read(self, final: bool) -> None:
        records = self.records
        while records and not self.done:
            s, e = records[0]
            have = self.at + len(self.buf)
            if e > have and not final:
                return
            records.popleft()
            if s < self.at or s >= have:                     # its bytes were let go, or never came
                if s + 5 < e and not self.ccs:
                    self._zero(s + 5, e)
                continue
            t = self.buf[s - self.at]
            if t == 22:
                if s + 5 < e:
                    self._handshake(s + 5, min(e, have), e)
            elif t == 20:
                self.ccs = True
            elif t != 21:
                self._read_end()                             # application data (or SSLv2): done
                return

    def _read_end(self) -> None:
        self._lose()
        self._end()

    def _handshake(self, s: int, avail: int, end: int) -> None:
        """The body ``[s, end)`` of a handshake record, of which ``[s, avail)`` is here."""
        buf, at = self.buf, self.at
        if self.ccs:
            # after ChangeCipherSpec: encrypted, unless the record is exactly one ClientHello
            body = buf[s - at:avail - at]
            if avail == end and len(body) >= 6 and body[0] == 1 and \
                    4 + int.from_bytes(body[1:4], "big") == len(body) and bytes(body[4:6]) in _HELLO_VERSIONS:
                self._message(bytes(body), [(0, s, len(body))])
            return
        if not self.sure and self.msg is None:
            body = buf[s - at:avail - at]
            if len(body) >= 4 and body[0] in (1, 2) and 4 + int.from_bytes(body[1:4], "big") <= MAX_MESSAGE:
                self.sure = True                             # a hello opens a flight: boundaries known
            else:
                self._zero(s, end)
                return
        pos = s
        while pos < avail:
            if self.msg is None:
                self.msg, self.pieces, self.total, self.seen = bytearray(), [], 0, 0
            if not self.total:                               # the message header (4 bytes)
                take = min(4 - self.seen, avail - pos)
                self.msg += buf[pos - at:pos - at + take]
                self.pieces.append((self.seen, pos, take))
                self.seen += take
                pos += take
                if self.seen == 4:
                    self.total = 4 + int.from_bytes(self.msg[1:4], "big")
                    if self.total == 4:
                        self.msg = None
                continue
            take = min(self.total - self.seen, avail - pos)
            if self.total > MAX_MESSAGE:                     # too long to hold: zeroed as it comes
                self._zero(pos, pos + take)
            else:
                self.msg += buf[pos - at:pos - at + take]
                self.pieces.append((self.seen, pos, take))
            self.seen += take
            pos += take
            if self.seen == self.total:
                if self.total <= MAX_MESSAGE:
                    self._message(bytes(self.msg), self.pieces)
                self.msg = None
        if avail < end:                                      # the record's end never came
            self._lose()
            self._zero(avail, end)

    def _message(self, msg: bytes, pieces: list) -> None:
        local = {}
        self.bad += handshake(msg, self.hn, self.everything, local)
        for off in sorted(local):
            new = local[off]
            self._put(pieces, off, off + len(new), new if any(new) else None)

    def _put(self, pieces: list, a: int, b: int, new) -> None:
        """An edit of message bytes [a, b) as stream edits, one per piece it touches."""
        for moff, soff, ln in pieces:
            lo, hi = max(a, moff), min(b, moff + ln)
            if lo < hi:
                part = None if new is None else new[lo - a:hi - a]
                self.edits.append((soff + lo - moff, soff + hi - moff, part))

    def _lose(self) -> None:
        """A message that cannot be finished: the body bytes it has are zeroed."""
        if self.msg is not None and self.seen > 4 and self.total <= MAX_MESSAGE:
            self._put(self.pieces, 4, self.seen, None)
            self.bad += 1
            self.hn.zeroed += 1
        self.msg, self.pieces, self.total, self.seen = None, [], 0, 0

    def _zero(self, s: int, e: int) -> None:
        if s < e:
            self.edits.append((s, e, None))
            self.bad += 1
            self.hn.zeroed += 1


class DnsTcpNames:
    """Names in DNS messages over TCP (two-byte length prefixes); ``edits`` in stream offsets."""

    __slots__ = ("hn", "kind", "buf", "at", "msg_at", "sure", "edits", "done", "bad")

    def __init__(self, hn, kind: str, syn: bool):
        self.hn, self.kind = hn, kind
        self.buf = bytearray()
        self.at = 0
        self.msg_at = 0
        self.sure = syn
        self.edits = []
        self.done = False
        self.bad = 0

    def data(self, start: int, chunk: bytes) -> None:
        if start != self.at + len(self.buf):
            self.buf = bytearray()
            self.at = start
        if not self.sure:
            if _dns_start(chunk):
                self.sure = True
                self.msg_at = start
                self.buf = bytearray()
                self.at = start
            else:
                self._zero(start, start + len(chunk))
                self.at = start + len(chunk)
                return
        self.buf += chunk
        buf = self.buf
        while True:
            rel = self.msg_at - self.at
            if rel + 2 > len(buf):
                break
            n = (buf[rel] << 8) | buf[rel + 1]
            if rel + 2 + n > len(buf):
                break
            local = {}
            self.bad += dns_message(buf, rel + 2, rel + 2 + n, self.hn, self.kind, local)
            base = self.at
            for off, new in local.items():
                self.edits.append((base + off, base + off + len(new), new if any(new) else None))
            self.msg_at += 2 + n
        cut = self.msg_at - self.at
        if cut > 0:
            del buf[:cut]
            self.at += cut

    def hole(self, end: int) -> None:
        self._lose()
        self.sure = False
        self.buf = bytearray()
        self.at = end

    def finish(self) -> None:
        self._lose()
        self.done = True
        self.buf = None

    def _lose(self) -> None:
        have = self.at + len(self.buf)
        if self.sure and have > self.msg_at + 2:
            self._zero(self.msg_at + 2, have)

    def _zero(self, s: int, e: int) -> None:
        if s < e:
            self.edits.append((s, e, None))
            self.bad += 1
            self.hn.zeroed += 1


def _dns_start(chunk) -> bool:
    """Can a DNS message over TCP begin at the start of ``chunk``: a length, then a plausible header?"""
    if len(chunk) < 14:
        return False
    n = (chunk[0] << 8) | chunk[1]
    if n < 12:
        return False
    qd = (chunk[6] << 8) | chunk[7]
    rest = sum((chunk[i] << 8) | chunk[i + 1] for i in (8, 10, 12))
    return 0 < qd <= 32 and rest <= 512 and (chunk[4] >> 3) & 15 <= 6


def pack(edits: list) -> tuple:
    """Edits for the main pass, sorted and not overlapping, in four compact objects: ``(starts, ends,
    offsets, blob)`` (arrays; an edit's new bytes are ``blob[offset:offset + end - start]``, and offset -1
    means zeros). Where a zeroed range and a rewrite meet, the zeros win (fail closed); two rewrites of the
    same bytes agree."""
    zeros = []
    for a, b, _new in sorted(e for e in edits if e[2] is None):
        if zeros and a <= zeros[-1][1]:
            if b > zeros[-1][1]:
                zeros[-1] = (zeros[-1][0], b, None)
        else:
            zeros.append((a, b, None))
    out = list(zeros)
    starts = [z[0] for z in zeros]
    done_to = -1
    for a, b, new in sorted((e for e in edits if e[2] is not None), key=lambda e: e[0]):
        if a < done_to:                                     # the same bytes again (pointers, copies)
            new, a = new[done_to - a:], done_to
            if a >= b:
                continue
        done_to = max(done_to, b)
        k = bisect_right(starts, a) - 1
        pieces = [(a, b)]
        for za, zb, _n in zeros[max(k, 0):]:
            if za >= b:
                break
            pieces = [(x, y) for lo, hi in pieces
                      for x, y in ((lo, min(hi, za)), (max(lo, zb), hi)) if x < y]
        out += [(x, y, new[x - a:y - a]) for x, y in pieces]
    out.sort(key=lambda e: e[0])
    blob = b"".join(e[2] for e in out if e[2] is not None)
    offs, at = array("q"), 0
    for _a, _b, new in out:
        offs.append(-1 if new is None else at)
        at += 0 if new is None else len(new)
    return array("q", (e[0] for e in out)), array("q", (e[1] for e in out)), offs, blob
