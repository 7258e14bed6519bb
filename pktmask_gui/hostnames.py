"""Host-name pseudonyms: keyed, label by label, the same length per label, the public suffix kept.

``HostNames(key, ...)`` maps a name given as its labels (``(b"mail", b"corp", b"example", b"com")``):

- the key is a sub-key of the anonymization key (HMAC-SHA256 of it with a fixed label), so the same key
  gives the same pseudonyms in every file, run and machine, and the pseudonyms say nothing about the key
  the addresses use;
- label by label from the right, each label's pseudonym depending on itself and every label to its right
  (its parent chain), like Crypto-PAn's prefixes: ``mail.corp.example.com`` and ``www.corp.example.com``
  keep a shared parent, ``example.com`` and ``example.org`` do not;
- each pseudonym has the length of its label, from ``a``-``z`` and ``0``-``9`` (upper case where the
  original had an upper-case letter, so a query and its answer written in different case still agree
  case-insensitively, and a label never maps to itself); a leading ``_`` (service labels) and the ``*``
  of a wildcard stay; labels are compared in lower case, so DNS's case randomisation changes nothing;
- the public suffix (the ICANN section of the Public Suffix List: ``com``, ``co.uk``; ``cloudfront.net``
  keeps only ``net``) stays, and names equal to or under a domain of the user's keep list stay whole; an
  entry ``*.local`` keeps ``local`` as a suffix only;
- reverse names (``4.3.2.1.in-addr.arpa``, ``ip6.arpa`` nibbles) become the reverse name of the *mapped*
  address (``map_address``: the anonymizer's own mapping, keep rules included), octet by octet, so a PTR
  query matches its A record. An IPv4 octet whose mapped value is written with another number of digits
  cannot keep its label's length: that label comes back as ``None`` and the caller zeroes its bytes.

Nothing here touches packets: ``namefields.py`` finds names at byte offsets and asks this module.

The public suffixes come from ``publicsuffixlist`` (it ships the list inside the package and reads it at
start-up, no network, and has an ICANN-only mode); the mapping itself is hand-written (HMAC and SHAKE
from hashlib), since no library pseudonymizes host names label by label with a key.
"""
from __future__ import annotations

import hashlib
import hmac
import re

_INFO = b"pktmask-gui host-name pseudonyms v1"
_ALNUM = b"abcdefghijklmnopqrstuvwxyz0123456789"
_TO_ALNUM = bytes(_ALNUM[b % 36] for b in range(256))
_CACHE = 1 << 16                # names and labels remembered (cleared when full)
_EXPORT_LIMIT = 1 << 20         # name pairs kept for the mapping export
_WORD = re.compile(rb"[A-Za-z0-9\x80-\xff]+")
_HOSTLIKE = re.compile(rb"[A-Za-z0-9_*.-]+")

# rules by which a name stays as it is (the report counts them)
PUBLIC_SUFFIX, KEPT_DOMAIN, KEPT_ADDRESS, SPECIAL = "public suffix", "kept domain", "kept address", "special"
PSEUDONYMIZED, REVERSE = "pseudonymized", "reverse"

# the default of "anonymize only these networks" (internal-only mode)
PRIVATE_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "fe80::/10")

_PSL = None


def public_suffix_list():
    """The ICANN section of the Public Suffix List shipped with ``publicsuffixlist`` (read once)."""
    global _PSL
    if _PSL is None:
        from publicsuffixlist import PublicSuffixList
        _PSL = PublicSuffixList(only_icann=True, accept_unknown=False)
    return _PSL


def derive_subkey(key: bytes) -> bytes:
    """The names' own key: HMAC-SHA256(anonymization key, a fixed label)."""
    return hmac.new(bytes(key), _INFO, hashlib.sha256).digest()


def parse_domains(values) -> tuple[list, list]:
    """The keep list: ``(whole, suffixes)``, each a list of lower-case label tuples. ``*.x`` keeps ``x`` as
    a suffix (the labels under it are still pseudonymized); anything else keeps the domain and all under
    it. ValueError names an entry that is not a domain."""
    whole, suffixes = [], []
    for raw in values or ():
        text = str(raw).strip().lower().rstrip(".")
        star = text.startswith("*.")
        if star:
            text = text[2:]
        labels = tuple(text.encode("ascii", "replace").split(b".")) if text else ()
        if not labels or any(not lb or len(lb) > 63 or not _HOSTLIKE.fullmatch(lb) or b"*" in lb
                             for lb in labels):
            raise ValueError(f"'{raw}' is not a domain such as example.com or *.local")
        (suffixes if star else whole).append(labels)
    return whole, suffixes


def escape(name: bytes) -> str:
    """A name as text for the mapping export: printable ASCII as it is, other bytes as \\xNN."""
    return "".join(chr(b) if 0x21 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in name)


class HostNames:
    """The keyed mapping of one job (see the module docstring), with its counts."""

    def __init__(self, key: bytes, keep_public_suffix: bool = True, keep_domains=(), map_address=None,
                 export: bool = False):
        self._key = derive_subkey(key)
        self._psl = public_suffix_list() if keep_public_suffix else None
        self._whole, self._suffixes = parse_domains(keep_domains)
        self._map_address = map_address
        self._names = {}            # labels tuple -> (new labels tuple, rule)
        self._labels = {}           # (parent digest, label in lower case) -> (digest, pseudonym)
        self._roots = {}            # kept suffix -> digest
        self.by_kind = {}           # names pseudonymized, by where they were found
        self.kept = {}              # names kept as they are, by rule
        self.zeroed = 0             # names (or their labels) that could not be rewritten and were zeroed
        self.export = {} if export else None
        self.export_full = False
        self.certificates = {}      # certnames.py: a certificate's edits, by its bytes

    def release(self) -> int:
        """Memory pressure: drop the caches (recomputed on demand); how many entries went."""
        n = len(self._names) + len(self._labels) + len(self.certificates)
        self._names.clear()
        self._labels.clear()
        self.certificates.clear()
        return n

    # ---- counting ---------------------------------------------------------------------------------
    def note(self, kind: str, rule: str) -> None:
        """Count one name field found in ``kind`` (dns, mdns, ..., certificate) and what became of it."""
        if rule == PSEUDONYMIZED or rule == REVERSE:
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        else:
            self.kept[rule] = self.kept.get(rule, 0) + 1

    def _remember(self, old: bytes, new: bytes) -> None:
        table = self.export
        if table is not None and old != new:
            if len(table) < _EXPORT_LIMIT:
                table[old] = new
            else:
                self.export_full = True

    # ---- names ------------------------------------------------------------------------------------
    def map_labels(self, labels: tuple, bare_suffix: bool = False) -> tuple:
        """``(new labels, rule)`` for a name given as a tuple of label bytes (leftmost first). A new label
        is ``None`` where the label cannot keep its length (a reverse name's octet): zero it.
        ``bare_suffix``: a name that is a public suffix and nothing else (``com``, ``co.uk``) stays, as
        in a DNS question for a zone; elsewhere (a DHCP host name, a NetBIOS or LLMNR name ``dev`` or
        ``finance``) such a name is a host's, and is pseudonymized."""
        hit = self._names.get((labels, bare_suffix))
        if hit is not None:
            return hit
        hit = self._map(labels, bare_suffix)
        names = self._names
        if len(names) >= _CACHE:
            names.clear()
        names[labels, bare_suffix] = hit
        if self.export is not None and hit[1] in (PSEUDONYMIZED, REVERSE):
            self._remember(b".".join(labels), b".".join(b"\0" * len(o) if n is None else n
                                                         for o, n in zip(labels, hit[0])))
        return hit

    def map_text(self, text: bytes, bare_suffix: bool = False) -> tuple:
        """``(new text, rule)`` for a name written as text (``www.example.com``, a trailing dot kept);
        labels that cannot keep their length come back zeroed."""
        body = text[:-1] if text.endswith(b".") else text
        lead = len(body) - len(body.lstrip(b"."))
        labels = tuple(body[lead:].split(b"."))
        if not body[lead:]:
            return text, SPECIAL
        new, rule = self.map_labels(labels, bare_suffix)
        out = b".".join(bytes(len(o)) if n is None else n for o, n in zip(labels, new))
        return body[:lead] + out + text[len(body):], rule

    def map_word(self, word: bytes) -> bytes:
        """A word of free text (a certificate's organization, a URL's path) as a pseudonym of its length."""
        return self._label(self._root((b"\0words",)), word, word.lower())[1]

    def map_words(self, text: bytes) -> bytes:
        """Free text with every run of letters and digits (and non-ASCII bytes) replaced by its pseudonym;
        punctuation and spaces stay."""
        return _WORD.sub(lambda m: self.map_word(m.group()), text)

    def _map(self, labels: tuple, bare_suffix: bool) -> tuple:
        n = len(labels)
        if not n or labels == (b"*",):
            return labels, SPECIAL
        low = tuple(lb.lower() for lb in labels)
        if n >= 2 and low[-1] == b"arpa" and low[-2] in (b"in-addr", b"ip6") and self._map_address:
            hit = self._reverse(labels, low)
            if hit is not None:
                return hit
        for dom in self._whole:
            k = len(dom)
            if n >= k and low[n - k:] == dom:
                return labels, KEPT_DOMAIN
        keep = 0
        if self._psl is not None and b"" not in low:
            suffix = self._psl.publicsuffix(low, accept_unknown=False)
            keep = len(suffix) if suffix else 0
        for dom in self._suffixes:
            k = len(dom)
            if k > keep and n >= k and low[n - k:] == dom:
                keep = k
        if keep >= n:
            if bare_suffix:
                return labels, PUBLIC_SUFFIX
            keep = 0
        return self._chain(labels, low, n - keep, self._root(low[n - keep:])), PSEUDONYMIZED

    def _chain(self, labels, low, upto: int, digest: bytes) -> tuple:
        """Labels ``[0, upto)`` pseudonymized from the right, starting from the parent ``digest``."""
        new = list(labels)
        label = self._label
        for i in range(upto - 1, -1, -1):
            digest, new[i] = label(digest, labels[i], low[i])
        return tuple(new)

    def _root(self, suffix: tuple) -> bytes:
        digest = self._roots.get(suffix)
        if digest is None:
            digest = hmac.new(self._key, b"\0suffix\0" + b".".join(suffix), hashlib.sha256).digest()
            if len(self._roots) < _CACHE:
                self._roots[suffix] = digest
        return digest

    def _label(self, parent: bytes, orig: bytes, low: bytes) -> tuple:
        """``(digest, pseudonym)`` of one label under ``parent``."""
        hit = self._labels.get((parent, low))
        if hit is None:
            digest = hmac.new(self._key, parent + low, hashlib.sha256).digest()
            if low == b"*":
                pseudo = low
            else:
                lead = b"_" if low[:1] == b"_" else b""
                size = len(low) - len(lead)
                pseudo = lead + hashlib.shake_256(digest).digest(size).translate(_TO_ALNUM)
                salt = 0
                while pseudo == low and size:           # a one-letter label may draw itself
                    salt += 1
                    pseudo = lead + hashlib.shake_256(digest + bytes((salt,))).digest(size).translate(_TO_ALNUM)
            hit = (digest, pseudo)
            if len(self._labels) >= _CACHE:
                self._labels.clear()
            self._labels[parent, low] = hit
        digest, pseudo = hit
        if orig != low:                                 # keep the upper-case letters where they were
            pseudo = bytes(c - 32 if 65 <= o <= 90 and 97 <= c <= 122 else c for c, o in zip(pseudo, orig))
        return digest, pseudo

    # ---- reverse names -----------------------------------------------------------------------------
    def _reverse(self, labels, low):
        """A reverse name: its address labels become the mapped address's (None where the length cannot
        stay); labels left of the address part are pseudonymized under it. None: not a reverse name."""
        n = len(labels)
        v4 = low[-2] == b"in-addr"
        vals = []
        i = n - 3
        while i >= 0 and len(vals) < (4 if v4 else 32):
            lb = low[i]
            if v4 and lb.isdigit() and len(lb) <= 3 and (lb == b"0" or lb[:1] != b"0") and int(lb) <= 255:
                vals.append(int(lb))
            elif not v4 and len(lb) == 1 and lb in b"0123456789abcdef":
                vals.append(int(lb, 16))
            else:
                break
            i -= 1
        k = len(vals)
        if not k:
            return None
        if v4:
            old = bytes(vals)
            mapped = self._map_address(old, 4, 8 * k)
            texts = [str(b).encode() for b in mapped[:k]]
        else:
            nib = vals + [0] * (k & 1)
            old = bytes((nib[j] << 4) | nib[j + 1] for j in range(0, len(nib), 2))
            mapped = self._map_address(old, 16, 4 * k)
            texts = [b"%x" % ((mapped[j >> 1] >> (4 - 4 * (j & 1))) & 15) for j in range(k)]
        new = list(labels)
        same = True
        for j, text in enumerate(texts):
            idx = n - 3 - j
            orig = labels[idx]
            if text.lower() != low[idx]:
                same = False
            if len(text) != len(orig):
                new[idx] = None
            else:
                new[idx] = text.upper() if orig != low[idx] else text
        rest = n - 2 - k
        if rest > 0:
            new[:rest] = self._chain(labels, low, rest, self._root(low[rest:]))[:rest]
            same = False
        return tuple(new), (KEPT_ADDRESS if same else REVERSE)
