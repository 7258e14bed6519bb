"""Crypto-PAn: keyed, prefix-preserving anonymization of IPv4 and IPv6 addresses.

Fan, Xu, Ammar, Moon (2004). With a 32-byte key: the first 16 bytes are the AES-128 key, the last 16 bytes,
encrypted once, are the pad. Output bit ``i`` is input bit ``i`` XOR the first bit of
``AES(first i input bits || pad bits i..127)``. Two addresses sharing exactly a k-bit prefix map to two
addresses sharing exactly a k-bit prefix, and an IPv4 address maps like the first 32 bits of an IPv6
address that starts with it.

Work is shared across addresses: the pad bits for each (prefix length, prefix) are cached (IPv4 in 32-bit
arithmetic, IPv6 in 128-bit), a binary search finds the deepest cached prefix of an address, and every AES
block it still needs goes through a single ECB call. Both caches are bounded: a full cache takes no more
entries (it holds the top of the tree, which later addresses share; a caller memoizing whole addresses
rarely asks twice), and ``release()`` empties them.
Hand-written because no maintained package does IPv6 and prefix caching; AES comes from ``cryptography``.
"""
from __future__ import annotations

import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_SIZE = 32
# prefix -> pad-bits entries per family: ~100 bytes each (IPv4), ~120 (IPv6): at most ~3 and ~4 MB (plus one
# address's path). A new IPv4 address adds up to 32 entries, an IPv6 address up to 128 (those its prefix
# does not share).
PREFIX_CACHE_MAX = 1 << 15
ADDRESS_CACHE_MAX = 1 << 15     # address -> mapped address entries of map4 / map6, per family

_M128 = (1 << 128) - 1
_HI32 = [(0xFFFFFFFF << (32 - i)) & 0xFFFFFFFF for i in range(33)]     # the first i bits
_LO32 = [0xFFFFFFFF >> i for i in range(33)]                             # the bits after them
_BLOCK4 = struct.Struct("!I12s").pack
_HI128 = [(_M128 << (128 - i)) & _M128 for i in range(129)]
_LO128 = [_M128 >> i for i in range(129)]
_TOPBIT = bytes(0x30 + (i >> 7) for i in range(256))        # byte -> b"0" or b"1" (its first bit), for translate


class CryptoPAn:
    """``anonymize_v4(int) -> int``, ``anonymize_v6(int) -> int``; ``map4(bytes) / map6(bytes) -> bytes``."""

    def __init__(self, key: bytes):
        key = bytes(key)
        if len(key) != KEY_SIZE:
            raise ValueError("a Crypto-PAn key is 32 bytes, not %d" % len(key))
        self._ecb = Cipher(algorithms.AES(key[:16]), modes.ECB()).encryptor()
        pad = self._ecb.update(key[16:])
        self._pad = int.from_bytes(pad, "big")
        self._bits = {}             # (1 << i) | prefix_i  ->  pad bits 0..i, 128-bit aligned
        self._bits4 = {}            # the same for IPv4, 32-bit aligned
        self._pad4 = self._pad >> 96
        self._tail = pad[4:]        # an IPv4 AES input: 4 bytes of prefix and pad, then the rest of the pad
        self._v4 = {}
        self._v6 = {}

    # ---- core ------------------------------------------------------------------------------------
    def _otp(self, a128: int, nbits: int) -> int:
        """One-time-pad bits for the top ``nbits`` of the 128-bit value ``a128``, 128-bit aligned.

        Cache entry for the i-bit prefix: the pad bits of positions 0..i (they depend on those i bits only).
        Entries are added for whole paths from the top, so "prefix i cached" implies "every shorter prefix
        cached": a binary search finds the deepest cached level.
        """
        bits = self._bits
        lo, hi = -1, nbits - 1              # deepest cached level is in [lo, hi]
        acc = 0
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            v = bits.get((a128 >> (128 - mid)) | (1 << mid))
            if v is None:
                hi = mid - 1
            else:
                lo = mid
                acc = v
        if lo == nbits - 1:
            return acc
        pad = self._pad
        first = lo + 1
        out = self._ecb.update(b"".join([((a128 & _HI128[i]) | (pad & _LO128[i])).to_bytes(16, "big")
                                         for i in range(first, nbits)]))
        # the first bit of each output block, read at C speed: every block's first byte, one '0'/'1' each
        acc |= int(out[0::16].translate(_TOPBIT), 2) << (128 - nbits)
        if len(bits) < PREFIX_CACHE_MAX:
            bits.update({(a128 >> (128 - i)) | (1 << i): acc & _HI128[i + 1] for i in range(first, nbits)})
        return acc

    def _otp4(self, a: int) -> int:
        """IPv4 fast path of _otp: 32-bit arithmetic, its own cache (same keys, 32-bit aligned values)."""
        bits = self._bits4
        lo, hi = -1, 31
        acc = 0
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            v = bits.get((a >> (32 - mid)) | (1 << mid))
            if v is None:
                hi = mid - 1
            else:
                lo = mid
                acc = v
        if lo == 31:
            return acc
        pad4 = self._pad4
        tail = self._tail
        first = lo + 1
        out = self._ecb.update(b"".join([_BLOCK4((a & _HI32[i]) | (pad4 & _LO32[i]), tail)
                                         for i in range(first, 32)]))
        acc |= int(out[0::16].translate(_TOPBIT), 2)
        if len(bits) < PREFIX_CACHE_MAX:
            bits.update({(a >> (32 - i)) | (1 << i): acc & _HI32[i + 1] for i in range(first, 32)})
        return acc

    def anonymize_v4(self, addr: int) -> int:
        return addr ^ self._otp4(addr)

    def anonymize_v6(self, addr: int) -> int:
        return addr ^ self._otp(addr, 128)

    # ---- the way back, for the key holder (pktmask-gui reveal) ---------------------------------------
    def deanonymize_v4(self, out: int) -> int:
        """The IPv4 address whose mapping is ``out`` (32 AES blocks, one after another)."""
        return self._inverse(out, 32, self._pad4, _HI32, _LO32, self._tail)

    def deanonymize_v6(self, out: int) -> int:
        """The IPv6 address whose mapping is ``out`` (128 AES blocks)."""
        return self._inverse(out, 128, self._pad, _HI128, _LO128, b"")

    def _inverse(self, out: int, width: int, pad: int, hi, lo, tail: bytes) -> int:
        """Bit i of the input is bit i of the output XOR the first bit of AES(the input's first i bits ||
        pad bits), and those i bits are known by then: the mapping is undone bit by bit."""
        x = 0
        update = self._ecb.update
        for i in range(width):
            bit = update(((x & hi[i]) | (pad & lo[i])).to_bytes(width // 8, "big") + tail)[0] >> 7
            x |= (((out >> (width - 1 - i)) & 1) ^ bit) << (width - 1 - i)
        return x

    # ---- bytes API with per-address caches -----------------------------------------------------------
    def map4(self, addr: bytes) -> bytes:
        out = self._v4.get(addr)
        if out is None:
            a = int.from_bytes(addr, "big")
            out = (a ^ self._otp4(a)).to_bytes(4, "big")
            if len(self._v4) >= ADDRESS_CACHE_MAX:
                self._v4.clear()
            self._v4[bytes(addr)] = out
        return out

    def map6(self, addr: bytes) -> bytes:
        out = self._v6.get(addr)
        if out is None:
            a = int.from_bytes(addr, "big")
            out = (a ^ self._otp(a, 128)).to_bytes(16, "big")
            if len(self._v6) >= ADDRESS_CACHE_MAX:
                self._v6.clear()
            self._v6[bytes(addr)] = out
        return out

    def release(self) -> int:
        """Empty the caches; return how many entries were dropped."""
        n = self.cache_size()
        self._bits.clear()
        self._bits4.clear()
        self._v4.clear()
        self._v6.clear()
        return n

    def cache_size(self) -> int:
        return len(self._bits) + len(self._bits4) + len(self._v4) + len(self._v6)

