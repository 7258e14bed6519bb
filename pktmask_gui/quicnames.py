"""Host names in QUIC Initial packets: the ClientHello's server name, which anyone can decrypt.

A QUIC client's Initial packets are encrypted with keys derived from the connection ID it chose (RFC 9001
section 5.2, published salts): Wireshark decrypts them and shows the TLS ClientHello inside, server name
included. This module does the same, to rewrite that name:

- ``client_initials(data, p, end)``: the client Initial packets of a UDP payload (long headers one after
  another, coalesced packets skipped by their length), each decrypted with the keys of its destination
  connection ID (AES-128-GCM, header protection with AES): a packet that does not decrypt (a server's,
  another version, not QUIC at all) is simply not one. The AEAD tag is the validation: a guess by content
  is taken only when the packet authenticates.
- ``QuicNames``: the pre-scan puts each connection's ClientHello together from the CRYPTO frames of its
  Initial packets (in any order, over several datagrams), reads its server names (certnames.client_hello)
  and keeps edits in CRYPTO stream offsets; the main pass decrypts each client Initial again, writes the
  edits into its CRYPTO frames, encrypts it with the same key and nonce, and applies the header protection
  anew (its sample is ciphertext). A ClientHello never completed has the CRYPTO data it has zeroed.

Versions: 1, 2 (RFC 9369) and the drafts 29-32 Wireshark still decodes. The cryptography comes from the
``cryptography`` package; the QUIC framing is hand-written (a few varints and four frame types).
"""
from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .certnames import client_hello

# version -> (initial salt, label prefix, the Initial's long-header packet type)
_V1_SALT = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
VERSIONS = {1: (_V1_SALT, b"quic ", 0), 0x6B3343CF: (bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),
                                                    b"quicv2 ", 1)}
for _d in range(29, 33):
    VERSIONS[0xFF000000 | _d] = (bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899"), b"quic ", 0)
MAX_HELLO = 1 << 16             # a ClientHello longer than this is not put together (zeroed)
_KEYS = 1 << 12                 # connection IDs whose keys are remembered


def _expand(secret: bytes, label: bytes, length: int) -> bytes:
    """TLS 1.3's HKDF-Expand-Label with an empty context (length <= 32: one HMAC block)."""
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes((len(full),)) + full + b"\0"
    return hmac.new(secret, info + b"\x01", hashlib.sha256).digest()[:length]


def _varint(b, q: int, end: int):
    """(value, next offset) of a QUIC variable-length integer, or (-1, end) when cut."""
    if q >= end:
        return -1, end
    first = b[q]
    n = 1 << (first >> 6)
    if q + n > end:
        return -1, end
    v = first & 0x3F
    for i in range(1, n):
        v = (v << 8) | b[q + i]
    return v, q + n


class _Keys:
    __slots__ = ("aead", "iv", "hp")

    def __init__(self, dcid: bytes, salt: bytes, prefix: bytes):
        secret = _expand(hmac.new(salt, dcid, hashlib.sha256).digest(), b"client in", 32)
        self.aead = AESGCM(_expand(secret, prefix + b"key", 16))
        self.iv = _expand(secret, prefix + b"iv", 12)
        self.hp = Cipher(algorithms.AES(_expand(secret, prefix + b"hp", 16)), modes.ECB()).encryptor()

    def mask(self, sample: bytes) -> bytes:
        return self.hp.update(sample)[:5]


_key_cache: dict = {}


def _keys(dcid: bytes, version: int) -> _Keys:
    k = _key_cache.get((dcid, version))
    if k is None:
        if len(_key_cache) >= _KEYS:
            _key_cache.clear()
        salt, prefix, _t = VERSIONS[version]
        k = _key_cache[dcid, version] = _Keys(dcid, salt, prefix)
    return k


class Initial:
    """One decrypted client Initial packet at ``start`` of its datagram."""

    __slots__ = ("start", "pn_off", "pn_len", "end", "keys", "header", "plain", "crypto", "first")

    def __init__(self, start, pn_off, pn_len, end, keys, header, plain, first):
        self.start, self.pn_off, self.pn_len, self.end = start, pn_off, pn_len, end
        self.keys, self.header, self.plain, self.first = keys, header, plain, first
        self.crypto = _crypto_frames(plain)          # [(stream offset, position in plain, length)]


def _crypto_frames(plain: bytes) -> list:
    out = []
    q, end = 0, len(plain)
    while q < end:
        t = plain[q]
        if t in (0, 1):                             # PADDING, PING
            q += 1
        elif t in (2, 3):                           # ACK (with ECN counts for 3)
            q += 1
            for _ in range(3):
                _v, q = _varint(plain, q, end)
            count, q = _varint(plain, q, end)
            _v, q = _varint(plain, q, end)
            for _ in range(2 * max(count, 0) + (3 if t == 3 else 0)):
                _v, q = _varint(plain, q, end)
        elif t == 6:                                # CRYPTO
            off, q = _varint(plain, q + 1, end)
            ln, q = _varint(plain, q, end)
            if off < 0 or ln < 0 or q + ln > end:
                break
            out.append((off, q, ln))
            q += ln
        elif t in (0x1C, 0x1D):                     # CONNECTION_CLOSE
            _v, q = _varint(plain, q + 1, end)
            if t == 0x1C:
                _v, q = _varint(plain, q, end)
            ln, q = _varint(plain, q, end)
            q += max(ln, 0)
        else:
            break                                   # not allowed in an Initial: the rest is unread
    return out


def client_initials(data, p: int, end: int) -> list:
    """The client Initial packets of the UDP payload ``data[p:end]`` (see the module docstring)."""
    found = []
    q = p
    while q + 7 <= end and data[q] & 0xC0 == 0xC0:
        version = int.from_bytes(data[q + 1:q + 5], "big")
        spec = VERSIONS.get(version)
        dcil = data[q + 5]
        r = q + 6 + dcil
        if spec is None or dcil > 20 or r >= end:
            break
        dcid = bytes(data[q + 6:r])
        r += 1 + data[r]                             # source connection ID
        ptype = (data[q] >> 4) & 3
        if ptype == spec[2]:
            tlen, r = _varint(data, r, end)
            if tlen < 0:
                break
            r += tlen
        length, pn_off = _varint(data, r, end)
        if length < 0 or pn_off + length > end or length < 20:
            break
        pend = pn_off + length
        if ptype == spec[2]:
            hit = _decrypt(data, q, pn_off, pend, _keys(dcid, version))
            if hit is not None:
                found.append(hit)
        q = pend
    return found


def _decrypt(data, start: int, pn_off: int, end: int, keys: _Keys):
    sample = bytes(data[pn_off + 4:pn_off + 20])
    if len(sample) < 16:
        return None
    mask = keys.mask(sample)
    first = data[start] ^ (mask[0] & 0x0F)
    pn_len = (first & 3) + 1
    pn = bytes(data[pn_off + i] ^ mask[1 + i] for i in range(pn_len))
    header = bytes((first,)) + bytes(data[start + 1:pn_off]) + pn
    nonce = bytes(a ^ b for a, b in zip(keys.iv, int.from_bytes(pn, "big").to_bytes(12, "big")))
    try:
        plain = keys.aead.decrypt(nonce, bytes(data[pn_off + pn_len:end]), header)
    except (InvalidTag, ValueError):
        return None
    return Initial(start, pn_off, pn_len, end, keys, header, plain, first)


def encrypt(pkt: Initial, plain: bytes) -> bytes:
    """The packet's bytes with ``plain`` as its payload: same key and nonce, header protection anew."""
    keys, pn_len = pkt.keys, pkt.pn_len
    pn = pkt.header[-pn_len:]
    nonce = bytes(a ^ b for a, b in zip(keys.iv, int.from_bytes(pn, "big").to_bytes(12, "big")))
    sealed = keys.aead.encrypt(nonce, plain, pkt.header)
    head = bytearray(pkt.header)
    sample = sealed[4 - pn_len:20 - pn_len]
    mask = keys.mask(sample)
    head[0] ^= mask[0] & 0x0F
    at = len(head) - pn_len
    for i in range(pn_len):
        head[at + i] ^= mask[1 + i]
    return bytes(head) + sealed


class QuicNames:
    """Per connection (its client's addresses and ports, and the destination connection ID): the
    ClientHello put together in the pre-scan, its edits in CRYPTO offsets for the main pass."""

    def __init__(self, hn):
        self.hn = hn
        self.hellos = {}            # conn -> bytearray of the CRYPTO stream's start, with a filled-in map
        self.edits = {}             # conn -> [(start, end, new bytes or None)]
        self.finished = False

    def collect(self, flow: bytes, packets: list) -> None:
        for pkt in packets:
            conn = flow + pkt.header[6:6 + pkt.header[5]]
            have = self.hellos.get(conn)
            if have is None:
                if conn in self.edits:
                    continue                        # its hello is read already
                have = self.hellos[conn] = [bytearray(), bytearray()]
            buf, seen = have
            for off, at, ln in pkt.crypto:
                stop = min(off + ln, MAX_HELLO)
                if off >= stop:
                    continue
                if len(buf) < stop:
                    buf += bytes(stop - len(buf))
                    seen += bytes(stop - len(seen))
                buf[off:stop] = pkt.plain[at:at + stop - off]
                seen[off:stop] = b"\1" * (stop - off)
            self._try(conn)

    def _try(self, conn) -> None:
        buf, seen = self.hellos[conn]
        if len(seen) < 4 or not all(seen[:4]):
            return
        total = 4 + int.from_bytes(buf[1:4], "big")
        if buf[0] != 1 or total > MAX_HELLO:
            self.edits[conn] = []                   # not a ClientHello to read: nothing to do
            del self.hellos[conn]
            return
        if len(seen) < total or not all(seen[:total]):
            return
        local = {}
        client_hello(bytes(buf[:total]), total, self.hn, local)
        self.edits[conn] = [(off, off + len(new), new if any(new) else None) for off, new in local.items()]
        del self.hellos[conn]

    def finish(self) -> None:
        """The pre-scan is over: a hello never completed has the CRYPTO bytes it had zeroed."""
        for conn, (_buf, seen) in self.hellos.items():
            ranges = []
            start = None
            for i, flag in enumerate(seen):
                if flag and start is None:
                    start = i
                elif not flag and start is not None:
                    ranges.append((start, i, None))
                    start = None
            if start is not None:
                ranges.append((start, len(seen), None))
            self.edits[conn] = ranges
            self.hn.zeroed += 1
        self.hellos = {}
        self.finished = True

    def rewrite(self, flow: bytes, data, p: int, end: int, edits: dict) -> int:
        """Add the frame edits (``{offset: bytes}``) of the client Initials in ``data[p:end]``; returns 1 when
        bytes were zeroed."""
        zeroed = 0
        for pkt in client_initials(data, p, end):
            conn = flow + pkt.header[6:6 + pkt.header[5]]
            todo = self.edits.get(conn)
            if not todo:
                continue
            plain = bytearray(pkt.plain)
            for off, at, ln in pkt.crypto:
                for a, b, new in todo:
                    lo, hi = max(a, off), min(b, off + ln)
                    if lo < hi:
                        plain[at + lo - off:at + hi - off] = bytes(hi - lo) if new is None else new[lo - a:hi - a]
                        zeroed |= new is None
            if plain != pkt.plain:
                edits[pkt.start] = encrypt(pkt, bytes(plain))
        return zeroed
