"""The address mapper of Anonymize IPs: the keyed mapping of IPv4, IPv6 and MAC addresses, keep rules,
collisions and the mapping table.

Crypto-PAn (``cryptopan.py``) maps an address; this module decides which addresses are mapped at all
(``keep_special``, the user's networks to keep, internal-only), memoizes the mappings, counts the distinct
addresses (an ``AddressSet``), notices collisions (a mapped address that lands on a kept one seen in the
file: two inputs would look like one) and writes the mapping table. MAC addresses are one AES block each,
domain-separated from Crypto-PAn, their group and local bits kept.

The stage (``stages/anonymize.py``) reads ``map4`` / ``map6`` directly on its hot paths and calls ``new``
on a miss; everything else goes through ``map_address`` and ``map_mac``. ``stages/names.py`` and
``reveal.py`` use the same keep rules through a mapper of their own.
"""
from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .addressset import AddressSet
from .cryptopan import CryptoPAn
from .settings import write_text_atomically

_MAC_DOMAIN = b"pktmaskMAC"     # 10 bytes + 6 MAC bytes = one AES block (domain-separated from Crypto-PAn)
# Memory, whatever the traffic (docs/ARCHITECTURE.md, "Memory"): every table is bounded. The mapping memos
# hold at most MEMO addresses a family (~115 bytes each for IPv4, ~140 for IPv6; emptied when full, the
# mapping is recomputed on demand); the distinct addresses, for the counts and the export, are kept in an
# AddressSet (6 to 12 bytes an IPv4 address, 24 to 48 an IPv6 one); the kept addresses seen and the mapped
# ones that land on a kept address (collisions) at most SEEN each (~80 bytes).
MEMO = 1 << 15
SEEN = 1 << 15
NAMED_COLLISIONS = 10           # collisions named in a warning each (the report counts them all)
Network = tuple[int, int, int]  # IP version, network address as an int, prefix length


class MappingError(Exception):
    """The mapping table cannot be written (the message is the user's sentence)."""


class AddressMapper:
    """Maps addresses with one key and one set of keep rules.

    ``keep_cidrs`` and ``anonymize_only`` are parsed networks, ``(version, network as int, prefix length)``;
    an empty ``anonymize_only`` anonymizes every address not kept. ``export``: remember each mapping for
    ``write_mapping``. ``warn`` receives the user's sentences about collisions and an incomplete table.
    """

    def __init__(self, key: bytes, *, keep_special: bool = True, keep_cidrs: Sequence[Network] = (),
                 anonymize_only: Sequence[Network] = (),
                 macs: bool = False, keep_oui: bool = False, export: bool = False,
                 warn: Callable[[str], None] = lambda _message: None):
        self.cp = CryptoPAn(key)
        self._mac_ecb = Cipher(algorithms.AES(bytes(key[:16])), modes.ECB()).encryptor()
        self._warn = warn
        self._keep_special = keep_special
        self._keep4 = [(net >> (32 - plen), 32 - plen) for ver, net, plen in keep_cidrs if ver == 4]
        self._keep6 = [(net >> (128 - plen), 128 - plen) for ver, net, plen in keep_cidrs if ver == 6]
        only = anonymize_only                                   # internal-only: the rest is kept
        self._only4 = [(net >> (32 - plen), 32 - plen) for ver, net, plen in only if ver == 4] if only else None
        self._only6 = [(net >> (128 - plen), 128 - plen) for ver, net, plen in only if ver == 6] if only else None
        self._oui = keep_oui
        self.macs = macs or keep_oui
        self._export = export
        self.map4: dict[bytes, bytes] = {}  # original bytes -> output bytes (kept addresses map to themselves)
        self.map6: dict[bytes, bytes] = {}
        self.mapmac: dict[bytes, bytes] = {}
        self.kept_seen: set[bytes] = set()          # kept addresses met (at most SEEN)
        self.landed_on_kept: set[bytes] = set()     # mapped addresses that are kept addresses too (at most SEEN)
        self.collisions = 0
        # the distinct addresses mapped (with their mapping when it is exported): counts and export
        self.seen4 = AddressSet(8 if export else 4)
        self.seen6 = AddressSet(32 if export else 16)
        self.nmac = 0
        self.seen_full = False      # kept_seen or landed_on_kept was full: counts approximate
        self.macs_lost = False      # the MAC memo was cleared: its count approximate, its export partial

    # ---- keep rules ---------------------------------------------------------------------------------
    def kept4(self, a: int) -> bool:
        if self._keep_special and (a == 0 or a == 0xFFFFFFFF or a >> 24 == 127 or a >> 28 == 14):
            return True
        for net, shift in self._keep4:
            if a >> shift == net:
                return True
        if self._only4 is not None:
            return not any(a >> shift == net for net, shift in self._only4)
        return False

    def kept6(self, a: int) -> bool:
        if self._keep_special and (a <= 1 or a >> 120 == 0xFF):
            return True
        for net, shift in self._keep6:
            if a >> shift == net:
                return True
        if self._only6 is not None:
            return not any(a >> shift == net for net, shift in self._only6)
        return False

    # ---- mapping ------------------------------------------------------------------------------------
    def new(self, addr: bytes, v4: bool) -> bytes:
        """Map an address the memo does not hold (new, or forgotten when the memo was cleared)."""
        a = int.from_bytes(addr, "big")
        kept = self.kept4 if v4 else self.kept6
        if kept(a):
            out = addr
            if addr not in self.kept_seen:
                if addr in self.landed_on_kept:
                    self._collision(addr)
                self._seen(self.kept_seen, addr)
        else:
            if v4:
                m = self.cp.anonymize_v4(a)
                out = m.to_bytes(4, "big")
                self.seen4.add(addr + out if self._export else addr)
            else:
                m = self.cp.anonymize_v6(a)
                out = m.to_bytes(16, "big")
                self.seen6.add(addr + out if self._export else addr)
            if kept(m) and out not in self.landed_on_kept:
                if out in self.kept_seen:
                    self._collision(out)
                self._seen(self.landed_on_kept, out)
        table = self.map4 if v4 else self.map6
        if len(table) >= MEMO:
            table.clear()
        table[addr] = out
        return out

    def _seen(self, table: set[bytes], addr: bytes) -> None:
        if len(table) < SEEN:
            table.add(addr)
        else:
            self.seen_full = True

    def _collision(self, addr: bytes) -> None:
        self.collisions += 1
        if self.collisions > NAMED_COLLISIONS:
            if self.collisions == NAMED_COLLISIONS + 1:
                self._warn("More anonymized addresses equal addresses kept as they are; the report "
                           "counts them all ('collisions').")
            return
        self._warn(
            f"The anonymized form of an address equals {ipaddress.ip_address(addr)}, an address kept as it is: "
            "in the output two different addresses look alike (use another key or keep fewer addresses).")

    def map_address(self, old: bytes, size: int, plen: int) -> bytes:
        """Mapping of one address field: ``old`` may be cut short (snap length, or a prefix of plen bits
        stored in fewer bytes); the bytes present map as the first bytes of the whole address would."""
        if plen < 0:                        # stored bitwise inverted (Teredo origin indication)
            new = self.map_address(bytes(b ^ 0xFF for b in old), size, size * 8)
            return bytes(b ^ 0xFF for b in new)
        have = len(old)
        if have == size and plen >= size * 8:
            table = self.map4 if size == 4 else self.map6
            hit = table.get(old)
            return hit if hit is not None else self.new(bytes(old), size == 4)
        # a part of an address or a prefix: mapped like the whole, not counted as an address of its own
        full = old + bytes(size - have)
        a = int.from_bytes(full, "big")
        if size == 4:
            new = full if self.kept4(a) else self.cp.anonymize_v4(a).to_bytes(4, "big")
        else:
            new = full if self.kept6(a) else self.cp.anonymize_v6(a).to_bytes(16, "big")
        if plen < size * 8 and new != full:
            v = int.from_bytes(new, "big") >> (size * 8 - plen) << (size * 8 - plen)
            new = v.to_bytes(size, "big")
        return new if have == size else new[:have]

    def map_mac(self, old: bytes) -> bytes:
        new = self.mapmac.get(old)
        if new is None:
            if old == b"\xff" * 6 or old == b"\x00" * 6 or (self._keep_special and old[0] & 1):
                new = bytes(old)
            else:
                block = self._mac_ecb.update(_MAC_DOMAIN + bytes(old))
                new = bytes(((block[0] & 0xFC) | (old[0] & 0x03),)) + block[1:6]
                if self._oui:
                    new = bytes(old[:3]) + new[3:]         # the vendor stays readable
                self.nmac += 1
            if len(self.mapmac) >= MEMO:
                self.mapmac.clear()
                self.macs_lost = True
            self.mapmac[bytes(old)] = new
        return new

    # ---- memory, mapping table ----------------------------------------------------------------------
    def release(self) -> int:
        """Empty the memos (the address sets keep the counts and the export); the entries dropped."""
        n = self.cp.release() + len(self.map4) + len(self.map6)
        self.map4.clear()
        self.map6.clear()
        return n

    def complete(self) -> bool:
        """Does the export hold every address mapped?"""
        return self.seen4.complete and self.seen6.complete and not (self.macs and self.macs_lost)

    def write_mapping(self, path: Path, names: dict[str, str]) -> None:
        """Merge this mapping (and the host names ``names``) into ``path`` (one key: entries never
        conflict), atomically, mode 0600; MappingError when it cannot."""
        lines = {}
        if not self.complete():
            self._warn("The mapping table is incomplete: the file has more distinct addresses than the "
                       "stage remembers.")
        lock = path.with_name(path.name + ".lock")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MappingError(f"cannot write the mapping table {path}: {exc.strerror or exc}") from None
        fd = None
        deadline = time.monotonic() + 10
        while fd is None:
            try:
                fd = os.open(str(lock), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                if time.monotonic() > deadline:
                    break           # a stale lock from a killed job: go on without it
                time.sleep(0.05)
            except OSError as exc:
                raise MappingError(f"cannot write the mapping table {path}: {exc.strerror or exc}") from None
        try:
            try:
                with open(path, encoding="utf-8") as fh:
                    for line in fh:
                        parts = line.rstrip("\n").split("\t")
                        if len(parts) == 2 and not line.startswith("#"):
                            lines[parts[0]] = parts[1]
            except FileNotFoundError:
                pass
            for seen, size in ((self.seen4, 4), (self.seen6, 16)):        # entries: address + mapping
                for entry in seen:
                    old, new = entry[:size], entry[size:]
                    if old != new:
                        lines[str(ipaddress.ip_address(old))] = str(ipaddress.ip_address(new))
            for old, new in self.mapmac.items():
                if old != new:
                    lines[old.hex(":")] = new.hex(":")
            lines.update(names)
            text = "# original\tanonymized\n" + "".join(f"{k}\t{v}\n" for k, v in sorted(lines.items()))
            write_text_atomically(path, text, mode=0o600)    # the table undoes the anonymization
        except OSError as exc:
            raise MappingError(f"cannot write the mapping table {path}: {exc.strerror or exc}") from None
        finally:
            if fd is not None:
                os.close(fd)
                try:
                    os.unlink(lock)
                except OSError:
                    pass
