"""Host names in TLS handshake messages: the ClientHello's server names and the names in X.509 structures.

``handshake(msg, hn, everything, edits)`` reads one whole handshake message (its 4-byte header first, as
put together from a TCP stream by namestreams.py) and adds ``{offset: new bytes}`` to ``edits``, offsets
into ``msg``; it returns the number of places it could not read, whose bytes it zeroed instead:

- ClientHello (1): each host_name of the server_name extension (the SNI; with ECH, the public name);
- Certificate (11; TLS up to 1.2, and 1.3's layout should one travel in clear), CertificateRequest (13: its
  certificate authorities' names) and CertificateStatus (22: the OCSP response, its responder name and
  certificates): every X.509 structure in them, walked as DER (``_Der``):
  - attributes: CN (a host name maps label by label; any other CN, "Example Root CA", word by word),
    emailAddress (its domain as a name), DC (a label); every other attribute but the country word by
    word (an organization or locality names its owner as well as a host name does, and Wireshark shows
    them all as one kind of field);
  - GeneralNames in subjectAltName, issuerAltName, authorityKeyIdentifier, name constraints, the
    authority / subject information access and the CRL distribution points (full names and CRL issuers):
    dNSName, the domain of an rfc822Name, the host of a URI as names, the rest of a URI and other names
    word by word, directory names as names;
  - text in the other extensions (policy qualifiers, comments) word by word.
  Other messages hold no names. A TLV that does not parse (a length past its parent, BER's indefinite
  length) zeroes the rest of its parent: what cannot be read may hold a name.

With ``everything`` off (a test's choice only) just the names above are rewritten, not the other text.

Text keeps its encoding: a pseudonym has the length of its original in bytes (UTF8String, IA5String,
PrintableString: ASCII letters and digits are valid in each), BMPString and UniversalString get ASCII
characters in their 2- and 4-byte units.

Hand-written: a certificate library parses into objects and re-encodes; here each value's offset matters.
"""
from __future__ import annotations

import re

from .hostnames import PSEUDONYMIZED, REVERSE

_STRINGS = frozenset((12, 19, 20, 22, 26, 28, 30))           # UTF8, Printable, T61, IA5, Visible, Universal, BMP
_HOSTLIKE = re.compile(rb"[A-Za-z0-9_*.-]+")

# attribute types (OID contents)
_CN = bytes.fromhex("550403")
_COUNTRY = bytes.fromhex("550406")
_EMAIL = bytes.fromhex("2a864886f70d010901")
_DC = bytes.fromhex("0992268993f22c640119")
# extensions whose values hold GeneralNames, by shape
_GENERAL_NAMES = frozenset((bytes.fromhex("551d11"), bytes.fromhex("551d12")))         # SAN, IAN
_ACCESS = frozenset((bytes.fromhex("2b06010505070101"), bytes.fromhex("2b0601050507010b")))  # AIA, SIA
_CRL_POINTS = frozenset((bytes.fromhex("551d1f"), bytes.fromhex("551d2e")))            # CRL DP, freshest
_AKI = bytes.fromhex("551d23")
_CONSTRAINTS = bytes.fromhex("551d1e")


def _tlv(b, i: int, end: int):
    """``(tag, content start, content end)`` of the TLV at ``i`` inside ``[i, end)``, or None."""
    if i + 2 > end:
        return None
    tag = b[i]
    j = i + 1
    if tag & 0x1F == 0x1F:                                   # a tag number in more bytes
        while j < end and b[j] & 0x80:
            j += 1
        j += 1
    if j >= end:
        return None
    ln = b[j]
    j += 1
    if ln & 0x80:
        k = ln & 0x7F
        if not 1 <= k <= 4 or j + k > end:
            return None                                      # indefinite (BER) or absurd
        ln = int.from_bytes(b[j:j + k], "big")
        j += k
    if j + ln > end:
        return None
    return tag, j, j + ln


def _parses(b, s: int, e: int) -> bool:
    """Is ``b[s:e]`` a run of whole TLVs (an extension's value, a response's bytes)?"""
    i = s
    while i < e:
        t = _tlv(b, i, e)
        if t is None:
            return False
        i = t[2]
    return s < e


class _Der:
    """One walk over DER bytes, adding edits (offsets into ``b``)."""

    __slots__ = ("b", "hn", "everything", "edits", "bad", "notes")

    def __init__(self, b, hn, everything: bool, edits: dict):
        self.b, self.hn, self.everything, self.edits = b, hn, everything, edits
        self.bad = 0
        self.notes = []             # the rules met, to count again when a cached certificate comes back

    def note(self, rule: str) -> None:
        self.hn.note("certificate", rule)
        self.notes.append(rule)

    def fail(self, s: int, e: int) -> None:
        if s < e:
            self.edits[s] = bytes(e - s)
            self.bad += 1
            self.hn.zeroed += 1

    def items(self, s: int, e: int):
        """The TLVs of ``b[s:e]``; one that does not parse zeroes the rest and ends the run."""
        i = s
        b = self.b
        while i < e:
            t = _tlv(b, i, e)
            if t is None:
                self.fail(i, e)
                return
            yield t
            i = t[2]

    # ---- generic walk: attributes, extensions, certificates inside anything -----------------------
    def walk(self, s: int, e: int) -> None:
        b = self.b
        for tag, cs, ce in self.items(s, e):
            if tag == 0x30:
                kids = list(self._kids(cs, ce))
                if len(kids) == 2 and kids[0][0] == 6 and kids[1][0] in _STRINGS:
                    self.attribute(bytes(b[kids[0][1]:kids[0][2]]), kids[1])
                    continue
                if 2 <= len(kids) <= 3 and kids[0][0] == 6 and kids[-1][0] == 4 and \
                        (len(kids) == 2 or kids[1][0] == 1):
                    self.extension(bytes(b[kids[0][1]:kids[0][2]]), kids[-1][1], kids[-1][2])
                    continue
                self.walk(cs, ce)
            elif tag & 0x20:
                self.walk(cs, ce)
            elif tag in _STRINGS and self.everything:
                self.words(tag, cs, ce)

    def _kids(self, s: int, e: int):
        """The TLVs of a constructed value when they all parse (else none: walk() zeroes what fails)."""
        out = []
        i = s
        while i < e:
            t = _tlv(self.b, i, e)
            if t is None:
                return []
            out.append(t)
            i = t[2]
        return out

    def attribute(self, oid: bytes, value) -> None:
        tag, cs, ce = value
        if oid == _CN:
            raw = self._plain(tag, cs, ce)
            if raw is not None and _HOSTLIKE.fullmatch(raw):
                self.name(tag, cs, ce)
            else:
                self.words(tag, cs, ce, count=True)
        elif oid == _EMAIL:
            self.email(tag, cs, ce)
        elif oid == _DC:
            self.name(tag, cs, ce)
        elif oid != _COUNTRY and self.everything:
            self.words(tag, cs, ce)

    def extension(self, oid: bytes, s: int, e: int) -> None:
        """An extension's value (the OCTET STRING's content): DER by its type."""
        if not _parses(self.b, s, e):
            if self.everything:
                self.fail(s, e)
            return
        if oid in _GENERAL_NAMES:
            for tag, cs, ce in self.items(s, e):
                if tag == 0x30:
                    self.general_names(cs, ce)
        elif oid in _ACCESS:
            for tag, cs, ce in self.items(s, e):
                for tag2, cs2, ce2 in (self.items(cs, ce) if tag == 0x30 else ()):
                    for desc in (self.items(cs2, ce2) if tag2 == 0x30 else ()):
                        if desc[0] != 6:
                            self.general_name(*desc)
        elif oid in _CRL_POINTS:
            for tag, cs, ce in self.items(s, e):
                for tag2, cs2, ce2 in (self.items(cs, ce) if tag == 0x30 else ()):
                    for tag3, cs3, ce3 in (self.items(cs2, ce2) if tag2 == 0x30 else ()):
                        if tag3 == 0xA0:                    # distributionPoint: [0] full name / [1] RDN
                            for tag4, cs4, ce4 in self.items(cs3, ce3):
                                if tag4 == 0xA0:
                                    self.general_names(cs4, ce4)
                                elif tag4 == 0xA1:
                                    self.walk(cs4, ce4)
                        elif tag3 == 0xA2:                  # cRLIssuer
                            self.general_names(cs3, ce3)
        elif oid == _AKI:
            for tag, cs, ce in self.items(s, e):
                for tag2, cs2, ce2 in (self.items(cs, ce) if tag == 0x30 else ()):
                    if tag2 == 0xA1:
                        self.general_names(cs2, ce2)
        elif oid == _CONSTRAINTS:
            for tag, cs, ce in self.items(s, e):
                for tag2, cs2, ce2 in (self.items(cs, ce) if tag == 0x30 else ()):
                    for tag3, cs3, ce3 in (self.items(cs2, ce2) if tag2 in (0xA0, 0xA1) else ()):
                        for sub in (self.items(cs3, ce3) if tag3 == 0x30 else ()):
                            self.general_name(*sub)         # a subtree's base; its bounds follow
                            break
        else:
            self.walk(s, e)                                  # certificates, names, strings inside it

    def general_names(self, s: int, e: int) -> None:
        for item in self.items(s, e):
            self.general_name(*item)

    def general_name(self, tag: int, cs: int, ce: int) -> None:
        if tag == 0x82:                                      # dNSName
            self.name(22, cs, ce)
        elif tag == 0x81:                                    # rfc822Name
            self.email(22, cs, ce)
        elif tag == 0x86:                                    # URI
            self.uri(cs, ce)
        elif tag == 0xA4 or (tag == 0xA0 and self.everything):     # directoryName; otherName (a UPN, ...)
            self.walk(cs, ce)

    # ---- text values ------------------------------------------------------------------------------
    def _plain(self, tag: int, cs: int, ce: int):
        """The value as single bytes per character (BMP / Universal with every character below 0x80),
        else None."""
        raw = bytes(self.b[cs:ce])
        width = 2 if tag == 30 else 4 if tag == 28 else 1
        if width == 1:
            return raw
        if len(raw) % width or any(raw[i] for i in range(len(raw)) if i % width != width - 1):
            return None
        return raw[width - 1::width]

    def _write(self, tag: int, cs: int, ce: int, new: bytes) -> None:
        width = 2 if tag == 30 else 4 if tag == 28 else 1
        if width > 1:
            new = b"".join(bytes(width - 1) + bytes((c,)) for c in new)
        if new != bytes(self.b[cs:ce]):
            self.edits[cs] = new

    def _units(self, tag: int, cs: int, ce: int) -> bytes:
        """One byte per character, for a value _plain cannot give: its characters become letters."""
        width = 2 if tag == 30 else 4 if tag == 28 else 1
        raw = bytes(self.b[cs:ce])
        return bytes(0x61 + (int.from_bytes(raw[i:i + width], "big") % 26) for i in range(0, len(raw), width))

    def name(self, tag: int, cs: int, ce: int) -> None:
        raw = self._plain(tag, cs, ce)
        if raw is None:
            self.words(tag, cs, ce, count=True)
            return
        if not raw:
            return
        new, rule = self.hn.map_text(raw)
        self.note(rule)
        self._write(tag, cs, ce, new)

    def words(self, tag: int, cs: int, ce: int, count: bool = False) -> None:
        raw = self._plain(tag, cs, ce)
        if raw is None:
            raw = self._units(tag, cs, ce)
        if not raw:
            return
        if count:
            self.note(PSEUDONYMIZED)
        self._write(tag, cs, ce, self.hn.map_words(raw))

    def email(self, tag: int, cs: int, ce: int) -> None:
        raw = self._plain(tag, cs, ce)
        if raw is None:
            self.words(tag, cs, ce, count=True)
            return
        at = raw.rfind(b"@")
        local, domain = (raw[:at + 1], raw[at + 1:]) if at >= 0 else (b"", raw)
        if self.everything:
            local = self.hn.map_words(local)
        new, rule = self.hn.map_text(domain) if domain else (domain, PSEUDONYMIZED)
        self.note(rule)
        self._write(tag, cs, ce, local + new)

    def uri(self, cs: int, ce: int) -> None:
        raw = bytes(self.b[cs:ce])
        sep = raw.find(b"://")
        if sep < 0:
            if self.everything:
                self._write(22, cs, ce, self.hn.map_words(raw))
            return
        start = sep + 3
        stop = len(raw)
        for ch in b"/?#":
            k = raw.find(bytes((ch,)), start)
            if 0 <= k < stop:
                stop = k
        authority = raw[start:stop]
        at = authority.rfind(b"@")
        user, hostport = (authority[:at + 1], authority[at + 1:]) if at >= 0 else (b"", authority)
        if hostport.startswith(b"["):                        # an IPv6 literal
            host, port = hostport, b""
        else:
            colon = hostport.rfind(b":")
            host, port = (hostport[:colon], hostport[colon:]) if colon >= 0 else (hostport, b"")
        if host and not host.startswith(b"["):
            new_host, rule = self.hn.map_text(host)
            self.note(rule)
        else:
            new_host = host
        rest = raw[stop:]
        if self.everything:
            user, rest = self.hn.map_words(user), self.hn.map_words(rest)
        self._write(22, cs, ce, raw[:start] + user + new_host + port + rest)


# ---- handshake messages ------------------------------------------------------------------------------------
def handshake(msg, hn, everything: bool, edits: dict) -> int:
    """The names of one whole handshake message ``msg`` (header included); returns places zeroed."""
    if len(msg) < 4:
        return 0
    mtype = msg[0]
    end = min(len(msg), 4 + int.from_bytes(msg[1:4], "big"))
    if mtype == 1:
        return client_hello(msg, end, hn, edits)
    if mtype not in (11, 13, 22):
        return 0
    der = _Der(msg, hn, everything, edits)
    if mtype == 11:
        if not (_cert_list(der, 4, end, False) or _cert_list(der, 4, end, True)):
            der.fail(4, end)
    elif mtype == 13:
        if not (_cert_request(der, 4, end, True) or _cert_request(der, 4, end, False)):
            der.fail(4, end)
    elif end >= 8 and msg[4] == 1:                           # CertificateStatus, OCSP
        n = int.from_bytes(msg[5:8], "big")
        if 8 + n <= end and _parses(msg, 8, 8 + n):
            der.walk(8, 8 + n)
        else:
            der.fail(8, end)
    return der.bad


def _cert_list(der: _Der, s: int, end: int, tls13: bool) -> bool:
    """A Certificate message's list (TLS 1.3: a request context first, extensions after each entry); False
    when its lengths do not add up (nothing is changed then)."""
    b = der.b
    q = s
    if tls13:
        if q >= end:
            return False
        q += 1 + b[q]
    if q + 3 > end or q + 3 + int.from_bytes(b[q:q + 3], "big") != end:
        return False
    q += 3
    certs = []
    while q < end:
        if q + 3 > end:
            return False
        n = int.from_bytes(b[q:q + 3], "big")
        if q + 3 + n > end:
            return False
        certs.append((q + 3, q + 3 + n))
        q += 3 + n
        if tls13:
            if q + 2 > end:
                return False
            q += 2 + int.from_bytes(b[q:q + 2], "big")
            if q > end:
                return False
    for cs, ce in certs:
        _certificate(der, cs, ce)
    return True


_CERT_CACHE = 1 << 12          # certificates remembered per mapping (servers send the same chain each time)


def _certificate(der: _Der, cs: int, ce: int) -> None:
    """One certificate's names (its edits again when the mapping met the same certificate before)."""
    cache = der.hn.certificates
    key = (der.everything, bytes(der.b[cs:ce]))
    hit = cache.get(key)
    if hit is None:
        sub = _Der(der.b, der.hn, der.everything, {})
        if _parses(der.b, cs, ce):
            sub.walk(cs, ce)
        else:
            sub.fail(cs, ce)
        hit = ({off - cs: new for off, new in sub.edits.items()}, tuple(sub.notes), sub.bad)
        if sub.bad == 0:
            if len(cache) >= _CERT_CACHE:
                cache.clear()
            cache[key] = hit
        der.bad += sub.bad
    else:
        for rule in hit[1]:
            der.hn.note("certificate", rule)
    for off, new in hit[0].items():
        der.edits[cs + off] = new


def _cert_request(der: _Der, s: int, end: int, sigalgs: bool) -> bool:
    """CertificateRequest (TLS 1.0-1.2; ``sigalgs``: 1.2's signature algorithms): the CA names."""
    b = der.b
    q = s
    if q >= end:
        return False
    q += 1 + b[q]                                            # certificate types
    if sigalgs:
        if q + 2 > end:
            return False
        q += 2 + int.from_bytes(b[q:q + 2], "big")
    if q + 2 > end or q + 2 + int.from_bytes(b[q:q + 2], "big") != end:
        return False
    q += 2
    names = []
    while q < end:
        if q + 2 > end:
            return False
        n = int.from_bytes(b[q:q + 2], "big")
        if q + 2 + n > end:
            return False
        names.append((q + 2, q + 2 + n))
        q += 2 + n
    for cs, ce in names:
        if _parses(b, cs, ce):
            der.walk(cs, ce)
        else:
            der.fail(cs, ce)
    return True


def client_hello(m, end: int, hn, edits: dict) -> int:
    """The ClientHello's server names; a hello whose lengths do not add up is zeroed from where they stop."""
    q = 4 + 2 + 32
    if q >= end:
        return 0
    q += 1 + m[q]                                            # session id
    if q + 2 > end:
        return _zero(edits, hn, m, 4 + 34, end)
    q += 2 + int.from_bytes(m[q:q + 2], "big")               # cipher suites
    if q >= end:
        return _zero(edits, hn, m, 4 + 34, end)
    q += 1 + m[q]                                            # compression methods
    if q > end:
        return _zero(edits, hn, m, 4 + 34, end)
    if q == end:
        return 0                                             # no extensions
    if q + 2 > end:
        return _zero(edits, hn, m, q, end)
    eend = q + 2 + int.from_bytes(m[q:q + 2], "big")
    if eend > end:
        return _zero(edits, hn, m, q, end)
    q += 2
    while q + 4 <= eend:
        typ = int.from_bytes(m[q:q + 2], "big")
        v = q + 4
        vend = v + int.from_bytes(m[q + 2:q + 4], "big")
        if vend > eend:
            return _zero(edits, hn, m, q, end)
        if typ == 0 and v + 2 <= vend:
            r, lend = v + 2, v + 2 + int.from_bytes(m[v:v + 2], "big")
            if lend > vend:
                return _zero(edits, hn, m, v, vend)
            while r + 3 <= lend:
                nl = int.from_bytes(m[r + 1:r + 3], "big")
                s = r + 3
                if s + nl > lend:
                    return _zero(edits, hn, m, r, lend)
                if m[r] == 0 and nl:
                    old = bytes(m[s:s + nl])
                    new, rule = hn.map_text(old)
                    hn.note("tls_sni", rule)
                    if rule in (PSEUDONYMIZED, REVERSE) and new != old:
                        edits[s] = new
                r = s + nl
        q = vend
    return 0


def _zero(edits: dict, hn, _m, s: int, e: int) -> int:
    if s < e:
        edits[s] = bytes(e - s)
        hn.zeroed += 1
        return 1
    return 0
