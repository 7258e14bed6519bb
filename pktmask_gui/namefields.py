"""Where host names sit in a message, at byte offsets, and what goes there instead.

Each finder reads one message in a buffer (a frame, or a message put together from a TCP stream), asks a
``hostnames.HostNames`` for each name's pseudonym and adds the new bytes to ``edits`` (``{offset: bytes}``,
same length as what they replace). A finder never changes the buffer and never raises on what it cannot
read; it returns how many names it could not rewrite, whose bytes it zeroed (through ``edits``) instead:

- ``dns_message``: DNS, mDNS, LLMNR and NetBIOS name service messages: question and record owner names and
  the names in CNAME, NS, PTR, MX, SRV, SOA, SVCB / HTTPS (and the public name of their ECH configs),
  DNAME, NAPTR, RRSIG, NSEC, AFSDB, RP, KX, RT, MINFO, MB / MG / MR data, NetBIOS node status names.
  Compression pointers are followed (forward ones too, as Wireshark does); each label is rewritten where it
  physically is, from its own parent chain, so every name that points at it reads the same pseudonym. A
  name whose pointer leads outside the message or loops keeps its structure with its label bytes zeroed;
  a label length that cannot be one ends the walk and zeroes the rest of the message.
- ``dhcp``: DHCPv4 options 12 (host name), 15 (domain name), 81 (client FQDN), 119 (domain search) and
  the server host name field (also where option 52 moves options into it); ``dhcp6``: DHCPv6 options 39
  (client FQDN), 24 (domain search), 21, 29, 30, 33, 64, inside relay messages too.
- ``handshake``: a TLS handshake message: the ClientHello's server names; in Certificate,
  CertificateRequest and CertificateStatus messages, every X.509 structure (``_Der``): subject and issuer
  CN (a CN that is not a host name is free text: each word gets a pseudonym), emailAddress and DC
  attributes, subjectAltName / issuerAltName dNSName, rfc822Name and URI, the hosts of the URLs in the
  authority / subject information access and CRL distribution point extensions. With ``everything``
  (Mask Payloads runs, so the handshake is the only payload left) every other text value in them
  too: other attributes (organization, locality, ...; the country stays), URL paths, policy texts.
- ``nrb``: the host names of a pcapng Name Resolution Block.

Hand-written: these run per frame at byte offsets, and each must report exactly which bytes it rewrote;
message libraries (dnspython, cryptography's x509) build objects and re-encode.
"""
from __future__ import annotations

import struct

from .hostnames import PSEUDONYMIZED, REVERSE, SPECIAL

_H = struct.Struct("!H").unpack_from
_HH = struct.Struct("!HH").unpack_from
_HHHH = struct.Struct("!HHHH").unpack_from
_RR = struct.Struct("!HHIH").unpack_from
_NB = b"ABCDEFGHIJKLMNOP"
_NB_SET = frozenset(_NB)
_NB_KEEP = (b"*", b"\x01\x02__MSBROWSE__\x02")

# DNS record types whose data holds names: type -> (bytes before the first name, names)
_RDATA = {2: (0, 1), 3: (0, 1), 4: (0, 1), 5: (0, 1), 7: (0, 1), 8: (0, 1), 9: (0, 1), 12: (0, 1),
          39: (0, 1), 47: (0, 1), 6: (0, 2), 14: (0, 2), 17: (0, 2), 15: (2, 1), 18: (2, 1), 21: (2, 1),
          36: (2, 1), 33: (6, 1), 46: (18, 1), 64: (2, 1), 65: (2, 1)}
_BAD, _POINTER, _CUT = -1, -2, -3


# ---- DNS wire names ----------------------------------------------------------------------------------
def _read_name(b, q: int, base: int, end: int, limit: int):
    """``(labels, after)``: the physical ``(offset, length)`` of each label of the name at ``q`` (pointers,
    relative to ``base``, followed within ``[base, end)``), and the offset after its inline part; the
    inline part must end before ``limit``. ``after`` is _BAD (a length byte that cannot be one: the walk
    cannot go on), _CUT (the name runs past ``limit``) or _POINTER (its inline part is whole, ``labels``
    holds it, and a pointer leads outside the message or loops: labels[-1] is then the pointer's end)."""
    labels = []
    after = -1
    pos = q
    stop = limit
    hops = 0
    while True:
        if pos >= stop:
            return labels, (_CUT if after < 0 else _POINTER)
        ln = b[pos]
        if ln == 0:
            return labels, (pos + 1 if after < 0 else after)
        if ln >= 0xC0:
            if pos + 1 >= stop:
                return labels, (_CUT if after < 0 else _POINTER)
            target = base + (((ln & 0x3F) << 8) | b[pos + 1])
            if after < 0:
                after = pos + 2
                stop = end
            hops += 1
            if hops > 64 or target >= end or len(labels) > 127:
                labels.append((after, 0))
                return labels, _POINTER
            pos = target
            continue
        if ln > 63:
            return labels, (_BAD if after < 0 else _POINTER)
        if pos + 1 + ln > stop:
            if stop > pos + 1:
                labels.append((pos + 1, stop - pos - 1))    # the part of it there is: zeroed by the caller
            return labels, (_CUT if after < 0 else _POINTER)
        labels.append((pos + 1, ln))
        pos += 1 + ln
        if len(labels) > 127:
            return labels, (_BAD if after < 0 else _POINTER)


class _Names:
    """The names of one message: each read, mapped and written into ``edits`` label by label."""

    __slots__ = ("b", "base", "end", "hn", "kind", "edits", "bad")

    def __init__(self, b, base, end, hn, kind, edits):
        self.b, self.base, self.end, self.hn, self.kind, self.edits = b, base, end, hn, kind, edits
        self.bad = 0

    def name(self, q: int, limit: int, netbios: bool = False, partial: bool = False) -> int:
        """Rewrite the name at ``q``; the offset after it, or _BAD / _CUT. ``partial``: a name may end at
        ``limit`` without its root label (DHCP's client FQDN)."""
        b = self.b
        labels, after = _read_name(b, q, self.base, self.end, limit)
        if after == _CUT and partial and labels and labels[-1][0] + labels[-1][1] == limit:
            after = limit
        if after == _POINTER:
            stop = labels.pop()[0] if labels and labels[-1][1] == 0 else self._inline_end(q, limit)
            self._zero(labels)
            return stop
        if after < 0:
            self._zero(labels)
            if after == _BAD:
                self.edits[q] = bytes(limit - q)            # the rest cannot be read: it may hold names
                if not labels:
                    self.bad += 1
                    self.hn.zeroed += 1
            return after
        if not labels:
            return after
        first = labels[0]
        if netbios and first[1] == 32 and _NB_SET.issuperset(b[first[0]:first[0] + 32]):
            self._netbios(labels)
            return after
        texts = tuple(bytes(b[o:o + ln]) for o, ln in labels)
        new, rule = self.hn.map_labels(texts, self.kind == "dns")
        self.hn.note(self.kind, rule)
        if rule != PSEUDONYMIZED and rule != REVERSE:
            return after
        edits = self.edits
        zeroed = False
        for (o, ln), old, nb in zip(labels, texts, new):
            if nb is None:
                edits[o] = bytes(ln)
                zeroed = True
            elif nb != old:
                edits[o] = nb
        if zeroed:
            self.bad += 1
            self.hn.zeroed += 1
        return after

    def _inline_end(self, q: int, limit: int) -> int:
        b = self.b
        while q < limit:
            ln = b[q]
            if ln >= 0xC0:
                return q + 2
            if ln == 0:
                return q + 1
            q += 1 + ln
        return _CUT

    def _zero(self, labels) -> None:
        if not labels:
            return
        for o, ln in labels:
            if ln:
                self.edits[o] = bytes(ln)
        self.bad += 1
        self.hn.zeroed += 1

    def _netbios(self, labels) -> None:
        """A NetBIOS name (16 bytes in 32 letters A-P), then its scope labels."""
        b, o = self.b, labels[0][0]
        enc = b[o:o + 32]
        raw = bytes(((enc[i] - 65) << 4) | (enc[i + 1] - 65) for i in range(0, 32, 2))
        new15 = self.netbios_name(raw[:15])
        if new15 != raw[:15]:
            out = new15 + raw[15:]
            self.edits[o] = bytes(v for c in out for v in (65 + (c >> 4), 65 + (c & 15)))
        if len(labels) > 1:
            texts = tuple(bytes(b[p:p + ln]) for p, ln in labels[1:])
            new, rule = self.hn.map_labels(texts)
            if rule == PSEUDONYMIZED:
                for (p, _ln), old, nb in zip(labels[1:], texts, new):
                    if nb != old:
                        self.edits[p] = nb

    def netbios_name(self, name15: bytes) -> bytes:
        """The pseudonym of a 15-byte NetBIOS name (padded with spaces), upper case, padding kept."""
        name = name15.rstrip(b" \0")
        if not name or name.startswith(_NB_KEEP) or name == b"*":
            self.hn.note("netbios", SPECIAL)
            return name15
        new, rule = self.hn.map_labels((name,))
        self.hn.note("netbios", rule)
        if rule != PSEUDONYMIZED:
            return name15
        return new[0].upper() + name15[len(name):]


def dns_message(b, p: int, end: int, hn, kind: str, edits: dict, netbios: bool = False) -> int:
    """Rewrite every name of the DNS message ``b[p:end]`` (``end``: the message's end, clipped to the bytes
    there are); returns the names zeroed. ``netbios``: a NetBIOS name service message. Any opcode is read
    (Wireshark decodes the names of every one; NetBIOS refreshes are opcode 8), the counts must be sane."""
    if p + 12 > end:
        return 0
    qd, an, ns, ar = _HHHH(b, p + 4)
    if qd > 32 or an + ns + ar > 512:
        return 0                                            # not a plausible DNS message: plain payload
    names = _Names(b, p, end, hn, kind, edits)
    q = p + 12
    for _ in range(qd):
        q = names.name(q, end, netbios)
        if q < 0:
            return names.bad
        q += 4
    for _ in range(an + ns + ar):
        if q >= end:
            break
        q = names.name(q, end, netbios)
        if q < 0:
            return names.bad
        if q + 10 > end:
            break
        rtype, _cls, _ttl, rdlen = _RR(b, q)
        r = q + 10
        rend = r + rdlen
        lim = rend if rend < end else end
        if netbios and rtype == 0x21:
            _nbstat(names, r, lim)
        else:
            _rdata(names, rtype, r, lim)
        q = rend
    return names.bad


def _rdata(names: _Names, rtype: int, r: int, lim: int) -> None:
    spec = _RDATA.get(rtype)
    if spec is None:
        if rtype == 35:                                     # NAPTR: order, preference, 3 strings, name
            q = r + 4
            for _ in range(3):
                if q >= lim:
                    return
                q += 1 + names.b[q]
            if q < lim:
                _checked(names, q, lim)
        return
    skip, count = spec
    q = r + skip
    for _ in range(count):
        if q >= lim:
            return
        q = _checked(names, q, lim)
        if q < 0:
            return
    if rtype in (64, 65) and q > 0:
        _svc_params(names, q, lim)


def _checked(names: _Names, q: int, lim: int) -> int:
    """A name inside record data (one that cannot be read zeroes the data after it: name() does)."""
    return names.name(q, lim)


def _svc_params(names: _Names, q: int, lim: int) -> None:
    """SVCB / HTTPS parameters: the ECH configs' public names (key 5)."""
    b = names.b
    while q + 4 <= lim:
        key, ln = _HH(b, q)
        v, vend = q + 4, min(q + 4 + ln, lim)
        if key == 5:
            ech_configs(b, v, vend, names.hn, names.edits)
        q = v + ln


def ech_configs(b, s: int, e: int, hn, edits: dict) -> None:
    """ECHConfigList: each version 0xfe0d config's public_name (text)."""
    if s + 2 > e:
        return
    q, end = s + 2, min(s + 2 + _H(b, s)[0], e)
    while q + 4 <= end:
        version, ln = _HH(b, q)
        c, cend = q + 4, min(q + 4 + ln, end)
        if version == 0xFE0D and c + 3 <= cend:
            k = c + 3                                        # config id, KEM id
            if k + 2 <= cend:
                k += 2 + _H(b, k)[0]                         # public key
            if k + 2 <= cend:
                k += 2 + _H(b, k)[0]                         # cipher suites
            k += 1                                           # maximum name length
            if k < cend:
                nl = b[k]
                if k + 1 + nl <= cend:
                    _text(b, k + 1, k + 1 + nl, hn, "dns", edits)
        q = c + ln


def _nbstat(names: _Names, r: int, lim: int) -> None:
    """NetBIOS node status: a count, then 18-byte entries (15-byte name, suffix, flags)."""
    b = names.b
    if r >= lim:
        return
    q = r + 1
    for _ in range(b[r]):
        if q + 16 > lim:
            return
        old = bytes(b[q:q + 15])
        new = names.netbios_name(old)
        if new != old:
            names.edits[q] = new
        q += 18


def _text(b, s: int, e: int, hn, kind: str, edits: dict) -> None:
    """A name written as text in ``b[s:e]`` (trailing NULs stay)."""
    raw = bytes(b[s:e])
    body = raw.rstrip(b"\0")
    if not body:
        return
    new, rule = hn.map_text(body)
    hn.note(kind, rule)
    if new != body:
        edits[s] = new


def wire_names(b, s: int, e: int, hn, kind: str, edits: dict, base: int = -1, many: bool = True) -> int:
    """Wire-format names one after another in ``b[s:e]`` (DHCP 81 / 119, DHCPv6 lists); pointers are
    followed relative to ``base`` (the data's start when -1); a name may end at ``e`` without its root
    label (a partial name). Returns the names zeroed."""
    names = _Names(b, base if base >= 0 else s, e, hn, kind, edits)
    q = s
    while q < e:
        q = names.name(q, e, partial=True)
        if q < 0 or not many:
            break
    return names.bad


# ---- DHCP ----------------------------------------------------------------------------------------------
def dhcp(b, p: int, end: int, hn, edits: dict) -> int:
    """BOOTP / DHCP at ``p``: the server host name field and the name options; returns names zeroed."""
    if p + 236 > end or b[p] not in (1, 2) or b[p + 2] > 16:
        return 0
    overload = bad = 0
    if p + 240 <= end and b[p + 236:p + 240] == b"\x63\x82\x53\x63":
        overload, bad = _dhcp_options(b, p + 240, end, hn, edits)
    if overload & 1:                                         # option 52: options in the file field too
        bad += _dhcp_options(b, p + 108, p + 236, hn, edits)[1]
    if overload & 2:                                         # ... and in the server name field
        bad += _dhcp_options(b, p + 44, p + 108, hn, edits)[1]
    else:
        cut = bytes(b[p + 44:p + 108]).find(b"\0")
        if cut != 0:
            _text(b, p + 44, p + 44 + (64 if cut < 0 else cut), hn, "dhcp", edits)
    return bad


def _dhcp_options(b, q: int, end: int, hn, edits: dict) -> tuple:
    """``(option 52's value, names zeroed)`` for the options in ``b[q:end]``."""
    overload = bad = 0
    while q < end:
        code = b[q]
        if code == 255:
            break
        if code == 0:
            q += 1
            continue
        if q + 2 > end:
            break
        ln = b[q + 1]
        v, vend = q + 2, min(q + 2 + ln, end)
        if code in (12, 15) and v < vend:
            _text(b, v, vend, hn, "dhcp", edits)
        elif code == 81 and v + 3 <= vend:
            if b[v] & 0x04:                                  # E: the name in wire format
                bad += wire_names(b, v + 3, vend, hn, "dhcp", edits, many=False)
            elif v + 3 < vend:
                _text(b, v + 3, vend, hn, "dhcp", edits)
        elif code == 119 and v < vend:
            bad += wire_names(b, v, vend, hn, "dhcp", edits)
        elif code == 52 and v < vend:
            overload = b[v] & 3
        q += 2 + ln
    return overload, bad


_DHCP6_NAME_LISTS = frozenset((21, 24, 29, 30, 33, 64))
_DHCP6_NESTED = {3: 12, 4: 4, 25: 12}


def dhcp6(b, p: int, end: int, hn, edits: dict, depth: int = 0) -> int:
    """DHCPv6 at ``p``: client FQDN (39) and the domain name lists, in relayed messages too."""
    if p + 4 > end or depth > 8:
        return 0
    mtype = b[p]
    if mtype in (12, 13):
        return _dhcp6_options(b, p + 34, end, hn, edits, depth) if p + 34 <= end else 0
    if 1 <= mtype <= 23:
        return _dhcp6_options(b, p + 4, end, hn, edits, depth)
    return 0


def _dhcp6_options(b, q: int, end: int, hn, edits: dict, depth: int) -> int:
    bad = 0
    while q + 4 <= end:
        code, ln = _HH(b, q)
        v, vend = q + 4, min(q + 4 + ln, end)
        if code == 39 and v < vend:
            bad += wire_names(b, v + 1, vend, hn, "dhcpv6", edits, many=False)
        elif code in _DHCP6_NAME_LISTS and v < vend:
            bad += wire_names(b, v, vend, hn, "dhcpv6", edits)
        elif code == 9:
            bad += dhcp6(b, v, vend, hn, edits, depth + 1)
        elif code in _DHCP6_NESTED:
            bad += _dhcp6_options(b, v + _DHCP6_NESTED[code], vend, hn, edits, depth)
        q += 4 + ln
    return bad


# ---- pcapng Name Resolution Block ------------------------------------------------------------------------
def nrb(body, endian: str, hn, edits: dict) -> None:
    """The names after each address of a Name Resolution Block (NUL-separated)."""
    hdr = struct.Struct(endian + "HH").unpack_from
    off, end = 0, len(body)
    while off + 4 <= end:
        rtype, length = hdr(body, off)
        if rtype == 0:
            break
        v, vend = off + 4, min(off + 4 + length, end)
        size = 4 if rtype == 1 else 16 if rtype == 2 else 0
        if size:
            q = v + size
            while q < vend:
                cut = body.find(b"\0", q, vend)
                stop = vend if cut < 0 else cut
                if stop > q:
                    _text(body, q, stop, hn, "metadata", edits)
                q = stop + 1
        off += 4 + ((length + 3) & ~3)
