"""TLS / SSL record recognition by content, for one direction of a TCP stream (any port).

``TlsWalker`` receives a direction's bytes in stream order (from tcpstream.Reassembler) and writes the
stream ranges to keep into a ``RangeMap``; everything else in that direction is masked. It never keeps
payload bytes: only the few bytes of a record header cut by a segment boundary, and while it searches for
record boundaries, the positions of plausible headers (five bytes each, at most ``MAX_CANDIDATES``; the
rare header that may open TLS, see below, with up to ``PREFIX`` bytes of its record).

Rules (issue 5):
- a record header is plausible when its type is 20..24, its version 3.0..3.4, its length at most
  2^14 + 2048 and non-zero (type 23 may be empty). Every header is kept; the bodies of types 20 / 21
  (option keep_alerts_ccs) and 22 (option keep_handshake) are kept, 23 and 24 are masked.
- the first byte of a stream may start a record on its own (one plausible header suffices), or an SSLv2
  CLIENT-HELLO / SERVER-HELLO (checked field by field); the SSLv2 CLIENT-MASTER-KEY that follows a
  CLIENT-HELLO is kept like a handshake, later SSLv2 records (encrypted) keep only their headers.
- elsewhere (after a gap, a header that is not plausible, a capture started mid-stream) bytes are masked
  until a confident resync: a plausible header whose record ends exactly at another plausible header, or
  where the captured stream does not go on (a hole or its end). The search looks at most ``SEARCH_LIMIT``
  bytes ahead, then gives the direction up (all masked), like verify.py's walker.

TLS after plaintext (issue 13): STARTTLS in SMTP, IMAP, POP3, FTP (AUTH TLS), XMPP and LDAP, an HTTP
proxy's CONNECT, PostgreSQL's SSLRequest. When the direction began at its SYN (``at_syn``: offset 0 is
the connection's first byte) and its first bytes are not TLS, they are plaintext and stay masked, and TLS
is taken only from a record that opens a connection (``opens_tls``: a ClientHello or ServerHello whose
fixed fields all agree, or the alert of a server refusing the hello) that the resync rule above also
confirms; from there on the records are walked as from the first byte. A plausible header, or a chain of
them, inside the plaintext is never a start: a failed guess stays masked. The upgrade exchange itself
(the command, and the answer in the other direction) is not needed and not trusted: the walker sees one
direction, the hello is the stronger evidence (random bytes pass ~2^-55 per offset before the
confirmation), a refused upgrade (SMTP 454, a proxy's 407, ...) is followed by more plaintext that no
hello validates in, and other protocols that turn to TLS the same way are covered too. Without a SYN
(a capture started mid-connection) the resync rule alone applies, as for a stream that starts
mid-record. Limits, all failing closed: TLS that starts more than ``SEARCH_LIMIT`` bytes into the
direction, a hello whose first ``PREFIX`` bytes are cut by a segment boundary where the later segment
arrived first (a digest keeps only ``HEAD`` bytes of its start), an SSLv2-format hello after plaintext.
Wireshark follows such an upgrade by reading the plaintext exchange, which the output has zeroed: it
shows the kept handshake when told that the port carries TLS (Decode As, ``tshark -d tcp.port==N,tls``;
the tests run verify.py that way).

Hand-written: TLS libraries (dpkt, scapy, tlslite) parse records from reassembled buffers; this walks
record boundaries over a stream it never holds, segment by segment.
"""
from __future__ import annotations

MAXREC = (1 << 14) + 2048
SEARCH_LIMIT = 65536
MAX_CANDIDATES = 8192
MAX_DIGEST_CANDIDATES = 65536   # per run of segments waiting behind a hole (one per record when it is TLS)
MAX_HOLES = 1024
HEAD = 16                       # bytes of a digest's start (enough for an SSLv2 hello check)
PREFIX = 81                     # bytes kept of a candidate that may open TLS (a hello's fixed fields)

RECORD_NAMES = {20: "change_cipher_spec", 21: "alert", 22: "handshake", 23: "application_data",
                24: "heartbeat", 2: "sslv2"}

SYNC, SEARCH, DONE = 0, 1, 2


def plausible(hdr) -> int:
    """Record length when the 5 bytes ``hdr`` are a plausible TLS record header, else -1."""
    t = hdr[0]
    if 20 <= t <= 24 and hdr[1] == 3 and hdr[2] <= 4:
        ln = (hdr[3] << 8) | hdr[4]
        if ln <= MAXREC and (ln or t == 23):
            return ln
    return -1


def ssl2_hello(b) -> int:
    """Total length of an SSLv2 CLIENT-HELLO (message 1) or SERVER-HELLO (4) at the start of ``b``, else -1.
    Every length field must add up: a random byte string passes with negligible probability."""
    if len(b) < 13 or not b[0] & 0x80:
        return -1
    ln = ((b[0] & 0x7F) << 8) | b[1]
    mt = b[2]
    if mt == 1:
        ver = (b[3] << 8) | b[4]
        cs, sid, ch = (b[5] << 8) | b[6], (b[7] << 8) | b[8], (b[9] << 8) | b[10]
        if (ver == 2 or 0x0300 <= ver <= 0x0304) and cs and cs % 3 == 0 and sid in (0, 16) \
                and 16 <= ch <= 32 and 9 + cs + sid + ch == ln:
            return 2 + ln
    elif mt == 4:
        ver = (b[5] << 8) | b[6]
        cert, cs, cid = (b[7] << 8) | b[8], (b[9] << 8) | b[10], (b[11] << 8) | b[12]
        if b[3] in (0, 1) and ver == 2 and cs % 3 == 0 and 16 <= cid <= 32 and 11 + cert + cs + cid == ln:
            return 2 + ln
    return -1


def ssl2_master_key(b) -> bool:
    """An SSLv2 CLIENT-MASTER-KEY in clear: ``b`` holds its 2-byte header and 10 first body bytes."""
    if len(b) < 12 or not b[0] & 0x80 or b[2] != 2:
        return False
    ln = ((b[0] & 0x7F) << 8) | b[1]
    clear, enc, arg = (b[6] << 8) | b[7], (b[8] << 8) | b[9], (b[10] << 8) | b[11]
    return 10 + clear + enc + arg == ln


def opens_tls(b) -> int:
    """Can the record at the start of ``b`` be the first one of a TLS connection? 1 yes, 0 no, -1 when
    ``b`` (the record's first bytes, at most ``PREFIX``) is too short to tell.

    Yes for a ClientHello or ServerHello record whose fixed fields all agree: record version 3.0-3.3,
    handshake length below 64 KiB and large enough for the fields, hello version 3.0-3.3, session id at
    most 32 bytes, and every field read lies inside the record; a ClientHello's cipher suites length is
    even, non-zero and fits; a ServerHello's compression method is a known one and its extensions length
    accounts for the message to the byte. Yes also for an alert record as a server refusing the
    ClientHello sends first: 2 bytes, fatal with a defined description, or the warning unrecognized_name.
    Random bytes pass with a probability near 2^-55 per offset (an alert near 2^-45), before the
    confirmation the walker also demands."""
    n = len(b)
    if n < 6:
        return -1
    if b[1] != 3 or b[2] > 3:
        return 0
    ln = (b[3] << 8) | b[4]
    if b[0] == 21:
        if ln != 2 or b[5] not in (1, 2):
            return 0
        return -1 if n < 7 else int(b[6] in _ALERTS if b[5] == 2 else b[6] == 112)
    mt = b[5]
    if b[0] != 22 or mt not in (1, 2):
        return 0
    if n < 11:
        return -1
    hl = (b[6] << 16) | (b[7] << 8) | b[8]
    if b[6] or b[9] != 3 or b[10] > 3 or hl < 38:
        return 0
    if n < 44:
        return -1
    sid = b[43]
    if sid > 32:
        return 0
    if mt == 1:                             # version, random, session id, cipher suites, compression
        end = 46 + sid                      # after the cipher suites length
        if 5 + ln < end:
            return 0
        if n < end:
            return -1
        cs = (b[end - 2] << 8) | b[end - 1]
        return int(cs >= 2 and not cs & 1 and 2 + 32 + 1 + sid + 2 + cs + 2 <= hl)
    fixed = 2 + 32 + 1 + sid + 2 + 1       # version, random, session id, cipher suite, compression method
    if hl < fixed or 5 + ln < 9 + fixed:
        return 0
    if n < 9 + fixed:
        return -1
    if b[8 + fixed] not in (0, 1, 64):
        return 0
    if hl == fixed:                         # no extensions (SSL 3.0, old TLS)
        return 1
    end = 9 + fixed + 2                     # after the extensions length
    if hl < fixed + 2 or 5 + ln < end:
        return 0
    if n < end:
        return -1
    return int((b[end - 2] << 8) | b[end - 1] == hl - fixed - 2)


_ALERTS = frozenset((0, 10, 20, 21, 22, 30, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 60, 70, 71, 80,
                     86, 90, 100, 109, 110, 111, 112, 113, 114, 115, 116, 120))


def find_candidates(buf, base: int, first: int, cands: dict, order: list) -> None:
    """Add every plausible header fully inside ``buf`` (stream offset ``base``) at offsets >= ``first``.
    Looks for the version's 0x03 byte with bytes.find (C speed; rare in text, ~6 a segment in ciphertext).
    A header that may open TLS (a hello's or an alert's) is kept with up to ``PREFIX`` bytes of its record
    (see opens_tls); one found again with more bytes behind it gets the longer prefix."""
    room = MAX_CANDIDATES - len(order)
    if isinstance(buf, memoryview):
        buf = bytes(buf)
    find = buf.find
    last = len(buf) - 4                     # the last offset of a 0x03 with a whole header around it
    i = find(b"\x03", 1)
    while 0 < i <= last:
        t = buf[i - 1]
        if 20 <= t <= 24 and buf[i + 1] <= 4:
            p = base + i - 1
            if p >= first:
                hdr = bytes(buf[i - 1:i + 4])
                if plausible(hdr) >= 0:
                    if _may_open(hdr) and (t == 21 or i + 4 == len(buf) or buf[i + 4] in (1, 2)):
                        hdr = bytes(buf[i - 1:i - 1 + PREFIX])
                    old = cands.get(p)
                    if old is not None:
                        if len(hdr) > len(old):
                            cands[p] = hdr
                    elif room <= 0:
                        return              # fail closed: an unrecorded offset is never a resync point
                    else:
                        cands[p] = hdr
                        order.append(p)
                        room -= 1
        i = find(b"\x03", i + 1)


def _may_open(v) -> bool:
    """Is candidate value ``v`` (a header, or a longer prefix) one whose first bytes opens_tls reads?"""
    return (v[0] == 22 and (len(v) == 5 or v[5] in (1, 2))) or (v[0] == 21 and v[3] == 0 and v[4] == 2)


def _extend(cands: dict, grow, more) -> None:
    """Lengthen the prefixes of the candidates ``grow`` (cut where ``more`` begins) with its first bytes."""
    for p in grow:
        v = cands[p]
        cands[p] = v + bytes(more[:PREFIX - len(v)])


def _growing(cands: dict, ps, end: int) -> tuple:
    """The candidates among ``ps`` whose prefix is still short and cut at stream offset ``end`` (a tuple:
    the empty one, by far the most common, costs nothing per digest)."""
    return tuple(p for p in dict.fromkeys(ps)
                 if p in cands and p + len(cands[p]) == end and len(cands[p]) < PREFIX and _may_open(cands[p]))


def _recent(order: list, end: int) -> tuple:
    """The candidates of ``order`` (increasing) that start in the last PREFIX bytes before ``end``."""
    i = len(order)
    while i and order[i - 1] > end - PREFIX:
        i -= 1
    return tuple(order[i:])


_KEEP_TYPES = {}


def _keep_types(handshake: bool, alerts_ccs: bool) -> dict:
    """Record type -> keep its body? One shared dict per option combination (walkers are many)."""
    kt = _KEEP_TYPES.get((handshake, alerts_ccs))
    if kt is None:
        kt = _KEEP_TYPES[handshake, alerts_ccs] = {22: handshake, 20: alerts_ccs, 21: alerts_ccs, 23: False,
                                                   24: False}
    return kt


class TlsWalker:
    """Classifies one direction; see the module docstring. ``keep``: a tcpstream.RangeMap to fill."""

    __slots__ = ("keep", "keep_types", "counts", "records", "lost", "pos", "mode", "nxt", "part", "ssl2",
                 "ssl2_client", "s_from", "s_limit", "cands", "order", "ci", "holes", "tail", "syn", "plain",
                 "grow")

    def __init__(self, keep, keep_handshake: bool = True, keep_alerts_ccs: bool = True, counts=None):
        self.keep = keep
        self.keep_types = _keep_types(bool(keep_handshake), bool(keep_alerts_ccs))
        self.counts = counts if counts is not None else {}
        self.records = 0
        self.lost = 0               # times known record boundaries were lost (gaps, garbage)
        self.pos = 0                # every byte before pos has been seen or declared missing
        self.mode = SYNC
        self.nxt = 0                # SYNC: offset of the next record header
        self.part = b""             # SYNC: the first bytes of a header cut by a segment boundary
        self.ssl2 = 0               # SSLv2 records seen (0: not an SSLv2 direction)
        self.ssl2_client = False
        # SEARCH state
        self.s_from = 0             # candidates must start at or after this offset
        self.s_limit = 0            # ... and before this one
        self.cands = {}             # offset -> 5 header bytes (PREFIX bytes of one that may open TLS)
        self.order = []             # candidate offsets, increasing
        self.ci = 0                 # next candidate to judge
        self.holes = []             # (start, end) of missing stream parts inside the search region
        self.tail = b""             # SEARCH: the last (up to 4) bytes before pos, when contiguous
        self.grow = ()              # SEARCH: candidates whose prefix is cut at pos (see _extend)
        self.syn = False            # offset 0 is the connection's first byte (at_syn)
        self.plain = False          # SEARCH: the direction began with plaintext; TLS must open with a hello

    def at_syn(self) -> None:
        """Before the first byte: the direction began at its SYN, so offset 0 is the connection's first
        byte. When those first bytes are not TLS they are plaintext (STARTTLS, an HTTP CONNECT, ...), and
        TLS is then taken only from a record that opens it (opens_tls), never from a chain of plausible
        headers that plaintext may happen to contain."""
        self.syn = True

    def midstream(self) -> None:
        """Before the first byte: the stream is known to start in the middle (its earlier part was already
        classified elsewhere), so a header at offset 0 needs the same confirmation as after a gap."""
        self._lost(0)

    # ---- digests (Reassembler: segments waiting behind a hole) ------------------------------------
    def make_digest(self, start: int, data) -> list:
        """[start, end, first HEAD bytes, last 4 bytes, {offset: candidate}, [candidates cut at end]]"""
        cands = {}
        order = []
        end = start + len(data)
        if self.mode != DONE:
            find_candidates(data, start, start, cands, order)
        grow = _growing(cands, _recent(order, end), end) if order and order[-1] > end - PREFIX else ()
        return [start, end, bytes(data[:HEAD]), bytes(data[-4:]), cands, grow]

    def merge_digest(self, piece: list, start: int, data) -> None:
        if piece[5]:
            _extend(piece[4], piece[5], data)
        self.join_digests(piece, self.make_digest(start, data), data)

    def join_digests(self, first: list, second: list, data=None) -> None:
        """``second`` (made from ``data`` when given) follows ``first`` directly: merge it into ``first``."""
        s0, e0, head, tail, cands, grow = first
        order = []
        if self.mode != DONE:
            if grow and data is None:
                _extend(cands, grow, second[2])         # a digest keeps HEAD bytes: a long prefix stays cut
            find_candidates(tail + second[2][:4], e0 - len(tail), e0 - len(tail), cands, order)
            if order and data is not None:              # headers cut at the boundary: prefixes from data
                buf = tail + bytes(data[:PREFIX])
                for p in order:
                    if _may_open(cands[p]):
                        cands[p] = buf[p - e0 + len(tail):][:PREFIX]
        if len(cands) + len(second[4]) <= MAX_DIGEST_CANDIDATES:
            cands.update(second[4])
        # else: fail closed, an unlisted offset reads as "no plausible header" (those bytes get masked)
        if len(head) < HEAD and len(head) == e0 - s0:
            first[2] = (head + second[2])[:HEAD]
        first[1] = second[1]
        first[3] = (tail + second[3])[-4:] if second[1] - second[0] < 4 else second[3]
        if grow or order or second[5]:
            first[5] = _growing(cands, grow + tuple(order) + second[5], second[1])

    # ---- input -------------------------------------------------------------------------------------
    def data(self, start: int, data) -> None:
        end = start + len(data)
        mode = self.mode
        if mode == SYNC:
            if self.nxt >= end and not self.part:
                self.pos = end              # inside a record body: nothing to look at
                return
            self._sync(start, end, data, None)
        elif mode == SEARCH:
            self._scan(start, data)
            self.pos = end
            self._resolve(False)
        else:
            self.pos = end

    def sparse(self, piece: list) -> None:
        start, end = piece[0], piece[1]
        mode = self.mode
        if mode == SYNC:
            self._sync(start, end, None, piece)
        elif mode == SEARCH:
            self._scan_digest(piece)
            self.pos = end
            self._resolve(False)
        else:
            self.pos = end

    def hole(self, end: int) -> None:
        if end <= self.pos:
            return
        start = self.pos
        self.pos = end
        if self.mode == SYNC:
            if self.nxt < end or self.part:
                self.part = b""
                self._lost(end)             # the next header is missing: resync after the hole
        elif self.mode == SEARCH:
            if len(self.holes) < MAX_HOLES:
                self.holes.append((start, end))
            self.tail = b""
            self.grow = ()
            self._resolve(False)

    def finish(self) -> None:
        if self.mode == SEARCH:
            self._resolve(True)
            if self.mode == SEARCH:
                self.mode = DONE
        self.cands, self.order, self.holes, self.grow = {}, [], [], ()

    # ---- in sync: read headers where the records say they are ---------------------------------------
    def _window(self, h: int, start: int, end: int, data, piece):
        """Bytes at [h, min(h + 5, end)) of the current input, or None for a digest offset whose bytes
        are not a plausible header (a digest keeps no others)."""
        if data is not None:
            return data[h - start:h - start + 5]
        k = h - start
        head = piece[2]
        if k + 5 <= len(head) or (k < len(head) and len(head) == end - start):
            return head[k:k + 5]
        if end - h <= 4:
            tail = piece[3]
            return tail[len(tail) - (end - h):]
        return piece[4].get(h)

    def _sync(self, start: int, end: int, data, piece) -> None:
        while self.mode == SYNC:
            h = self.nxt
            if h >= end:
                break
            if self.part:
                # a header cut by a segment boundary (13 bytes for a possible SSLv2 hello at the start)
                target = 13 if h == 0 and self.records == 0 and self.part[0] & 0x80 else 5
                need = target - len(self.part)
                more = data[:need] if data is not None else piece[2][:need]
                hdr = self.part + bytes(more)
                if len(hdr) < target and start + need > end:
                    self.part = hdr         # still cut: the segment was tiny
                    break
            else:
                w = self._window(h, start, end, data, piece)
                if w is None:
                    self.plain = self.syn and h == 0 and not self.records
                    self._lost(h + 1, start, end, data, piece)
                    break
                hdr = bytes(w)
                if len(hdr) < 5 or (h == 0 and self.records == 0 and hdr[0] & 0x80 and end - h < 13
                                    and data is not None and plausible(hdr) < 0):
                    self.part = bytes(data[h - start:]) if data is not None else hdr
                    break
            self.part = b""
            if not self._header(h, hdr, start, end, data, piece):
                self.plain = self.syn and h == 0 and not self.records
                self._lost(h + 1, start, end, data, piece, hdr)
                break
        self.pos = end
        if self.mode == SEARCH:
            self._resolve(False)

    def _header(self, h: int, hdr: bytes, start: int, end: int, data, piece) -> bool:
        """Account for the record whose header is at h; False when it is not a record."""
        ln = plausible(hdr)
        if ln >= 0:
            self._record(h, hdr[0], ln)
            self.ssl2 = 0 if self.ssl2 == 0 else -1
            return True
        if h == 0 and self.records == 0:            # start of the stream: SSLv2 hello?
            b = self._bytes0(start, end, data, piece, hdr)
            total = ssl2_hello(b)
            if total > 0:
                self._ssl2_record(h, 2, total - 2, self.keep_types[22])
                self.ssl2_client = b[2] == 1
                return True
            return False
        if self.ssl2 > 0:                           # later SSLv2 records: headers of 2 or 3 bytes
            if hdr[0] & 0x80:
                hl, ln = 2, ((hdr[0] & 0x7F) << 8) | hdr[1]
            else:
                hl, ln = 3, ((hdr[0] & 0x3F) << 8) | hdr[1]
            if ln == 0:
                return False
            keep = False
            if self.ssl2 == 1 and self.ssl2_client and hl == 2:
                b = self._bytes_at(h, 12, start, end, data, piece)
                keep = b is not None and ssl2_master_key(b) and self.keep_types[22]
            self._ssl2_record(h, hl, ln, keep)
            return True
        return False

    def _bytes0(self, start, _end, data, piece, hdr):
        if start == 0 and len(hdr) < 13:
            return bytes(data[:HEAD]) if data is not None else piece[2]
        return hdr

    def _bytes_at(self, h, n, start, end, data, piece):
        if data is not None and start <= h and h + n <= end:
            return data[h - start:h - start + n]
        if piece is not None and start <= h and h + n <= start + len(piece[2]):
            return piece[2][h - start:h - start + n]
        return None

    def _record(self, h: int, t: int, ln: int) -> None:
        keep = self.keep
        if self.keep_types[t]:
            keep.add(h, h + 5 + ln)
        else:
            keep.add(h, h + 5)
        self.records += 1
        self.counts[t] = self.counts.get(t, 0) + 1
        self.nxt = h + 5 + ln

    def _ssl2_record(self, h: int, hl: int, ln: int, keep_body: bool) -> None:
        self.keep.add(h, h + hl + ln if keep_body else h + hl)
        self.ssl2 += 1
        self.records += 1
        self.counts[2] = self.counts.get(2, 0) + 1
        self.nxt = h + hl + ln

    # ---- lost: search for a confident resync ----------------------------------------------------------
    def _lost(self, first: int, start=None, _end=None, data=None, piece=None, hdr=b"") -> None:
        """Boundaries lost: candidates must start at ``first`` or later; scan what is left of the input."""
        if self.records:
            self.lost += 1          # a resync; a search for the first record (STARTTLS, mid-stream) is not
        self.mode = SEARCH
        self.ssl2 = 0 if self.ssl2 == 0 else -1
        self.s_from = first
        self.s_limit = first - 1 + SEARCH_LIMIT
        self.cands, self.order, self.ci, self.holes = {}, [], 0, []
        self.tail = b""
        self.grow = ()
        if start is None:
            return
        h = first - 1
        if data is not None:
            if h < start:                           # the header began in an earlier segment
                self.tail = hdr[:start - h] if hdr else b""
                self._scan(start, data)
            else:
                self._scan(start, data)
        else:
            self._scan_digest(piece)

    def _scan(self, start: int, data) -> None:
        if self.grow:
            _extend(self.cands, self.grow, data)
        tail = self.tail
        buf = tail + bytes(data) if tail else data
        find_candidates(buf, start - len(tail), self.s_from, self.cands, self.order)
        self.tail = bytes(buf[-4:])
        end = start + len(data)
        order = self.order
        if self.grow or (order and order[-1] > end - PREFIX):
            self.grow = _growing(self.cands, self.grow + _recent(order, end), end)

    def _scan_digest(self, piece: list) -> None:
        start, end, head, tail, cands, grow = piece
        if self.grow:
            _extend(self.cands, self.grow, head)        # a digest keeps HEAD bytes: a long prefix stays cut
        if self.tail:
            a = start - len(self.tail)
            find_candidates(self.tail + head[:4], a, max(self.s_from, a), self.cands, self.order)
        first = self.s_from
        room = MAX_CANDIDATES - len(self.order)
        for p in sorted(cands):
            if p >= first and room > 0 and p not in self.cands:
                self.cands[p] = cands[p]
                self.order.append(p)
                room -= 1
        self.order.sort()
        self.tail = tail if end - start >= 4 or not self.tail else (self.tail + tail)[-4:]
        self.grow = _growing(self.cands, self.grow + grow, end)

    def _in_hole(self, p: int):
        for a, b in self.holes:
            if a <= p < b:
                return b
        return None

    def _status(self, n: int, final: bool):
        """Is offset n (the end of a candidate record) a confident boundary? True / False / None (wait)."""
        pos = self.pos
        if n >= pos:
            return True if final else None
        if self._in_hole(n) is not None:
            return True
        if n + 5 > pos:
            return False if final else None
        return n in self.cands

    def _resolve(self, final: bool) -> None:
        while self.mode == SEARCH:
            order = self.order
            ci = self.ci
            while ci < len(order) and order[ci] < self.s_from:
                ci += 1
            self.ci = ci
            if ci == len(order) or order[ci] >= self.s_limit:
                if final or self.pos >= self.s_limit or (ci < len(order) and order[ci] >= self.s_limit):
                    self.mode = DONE                # nothing within reach: the rest stays masked
                    self.cands, self.order, self.holes, self.grow = {}, [], [], ()
                return
            q = order[ci]
            hdr = self.cands[q]
            if self.plain:
                ok = opens_tls(hdr)
                if ok < 0 and q in self.grow and not final:
                    return                          # its first bytes are still coming
                if ok <= 0:
                    self.ci = ci + 1                # plaintext: only a record that opens TLS may start it
                    continue
            st = self._status(q + 5 + plausible(hdr), final)
            if st is None:
                return
            if not st:
                self.ci = ci + 1
                continue
            self._chain(q)

    def _chain(self, q: int) -> None:
        """Walk records from the confirmed header q through the searched region."""
        cands, pos = self.cands, self.pos
        self.plain = False
        h = q
        while True:
            hdr = cands[h]
            self._record(h, hdr[0], plausible(hdr))
            n = self.nxt
            if n >= pos:
                break
            if n + 5 > pos:
                k = pos - n
                if self._in_hole(n) is None and len(self.tail) >= k:
                    self.part = self.tail[len(self.tail) - k:]
                    break
                self.s_from, self.s_limit = n + 1, n + SEARCH_LIMIT
                return
            b = self._in_hole(n)
            if b is not None:
                self.lost += 1
                self.s_from, self.s_limit = b, b + SEARCH_LIMIT
                return
            if n in cands:
                h = n
                continue
            self.lost += 1
            self.s_from, self.s_limit = n + 1, n + SEARCH_LIMIT
            return
        self.mode = SYNC
        self.ssl2 = 0
        self.cands, self.order, self.ci, self.holes, self.grow = {}, [], 0, [], ()
        self.tail = b""
