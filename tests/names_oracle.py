"""tshark as the oracle of host-name pseudonyms: every name field Wireshark decodes, in input and output.

``name_fields(path)`` -> ``{(frame, field): [value, ...]}`` for the fields below (tshark's own decoding,
TLS on any port it recognises); ``leaks(in_path, out_path)`` -> the original labels (outside the ICANN
public suffix) that are still in the output's name fields, frame by frame; ``labels_of(fields)``: every
such label of a capture. Used by the tests; skips are the caller's (``tshark_available``).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

FIELDS = ("dns.qry.name", "dns.resp.name", "dns.cname", "dns.ns", "dns.ptr.domain_name", "dns.mx.mail_exchange",
          "dns.srv.target", "dns.srv.name", "dns.soa.mname", "dns.soa.rname", "dns.svcb.targetname", "dns.dname",
          "nbns.name", "dhcp.option.hostname", "dhcp.option.domain_name", "dhcp.fqdn.name", "dhcp.server",
          "dhcpv6.client_domain", "dhcpv6.search_list_entry", "tls.handshake.extensions_server_name",
          "x509sat.uTF8String",
          "x509sat.printableString", "x509sat.teletexString", "x509sat.IA5String", "x509ce.dNSName",
          "x509ce.uniformResourceIdentifier", "x509ce.rfc822Name")
_SEP = "\x01"


def tshark_available() -> bool:
    return shutil.which("tshark") is not None


_FIELDS_CACHE: dict = {}


def name_fields(path, extra=()) -> dict:
    import os

    st = os.stat(path)
    key = (str(path), tuple(extra), st.st_mtime_ns, st.st_size)
    if key not in _FIELDS_CACHE:
        if len(_FIELDS_CACHE) > 64:
            _FIELDS_CACHE.clear()
        _FIELDS_CACHE[key] = _name_fields(path, extra)
    return _FIELDS_CACHE[key]


def _name_fields(path, extra) -> dict:
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", f"aggregator={_SEP}", "-E", "separator=\t",
           "-E", "quote=n", "-e", "frame.number", *[a for f in FIELDS for a in ("-e", f)], *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=300).stdout
    found = {}
    for line in out.splitlines():
        cols = line.split("\t")
        frame = int(cols[0])
        for field, value in zip(FIELDS, cols[1:]):
            if value:
                found[frame, field] = value.split(_SEP)
    return found


def malformed(path, extra=()) -> int:
    cmd = ["tshark", "-n", "-r", str(path), "-Y", "_ws.malformed", "-T", "fields", "-e", "frame.number", *extra]
    return len(subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout.split())


def _labels(value: str) -> list:
    """The labels of a name (a NetBIOS name's <xx> suffix and a URL's parts around its host dropped)."""
    text = value.strip()
    if text == "<Root>":
        return []
    if "://" in text:
        text = text.split("://", 1)[1].split("/", 1)[0].split(":", 1)[0]
    if "@" in text:
        text = text.rsplit("@", 1)[1]
    text = re.sub(r" \([^)]*\)$", "", text)                   # NetBIOS: "NAME<20> (Server service)"
    text = re.sub(r"(<[0-9a-fA-F]{2}>)+$", "", text)
    return [lb for lb in text.rstrip(".").split(".") if lb]


def _private(labels: list) -> list:
    """The labels outside the name's ICANN public suffix, in lower case."""
    from pktmask_gui.hostnames import public_suffix_list

    low = [lb.lower() for lb in labels]
    suffix = public_suffix_list().publicsuffix(tuple(lb.encode() for lb in low), accept_unknown=False) \
        if low and "" not in low else None
    keep = len(suffix) if suffix else 0
    return low[:len(low) - keep]


def labels_of(fields: dict) -> set:
    out = set()
    for values in fields.values():
        for value in values:
            out.update(_private(_labels(value)))
    return out


def is_reverse(value: str) -> bool:
    return value.lower().rstrip(".").endswith((".in-addr.arpa", ".ip6.arpa"))


def leaks(in_path, out_path, extra=(), min_length: int = 4) -> list:
    """``(frame, field, original value, output value)`` wherever an output name field holds a label of the
    same input field at the same place, or any original label of ``min_length`` or more characters (a
    shorter pseudonym may equal another name's label by chance: 36 one-letter labels exist). Reverse
    names are reverse_mismatches' to check."""
    before, after = name_fields(in_path, extra), name_fields(out_path, extra)
    originals = {lb for lb in labels_of({k: [v for v in vs if not is_reverse(v)] for k, vs in before.items()})
                 if len(lb) >= min_length and lb != "*"}
    found = []
    for key, values in after.items():
        olds = before.get(key, [])
        for i, value in enumerate(values):
            if is_reverse(value) or (i < len(olds) and is_reverse(olds[i])):
                continue
            labels = _private(_labels(value))
            old = olds[i] if i < len(olds) else ""
            old_labels = _private(_labels(old)) if old else []
            same_place = any(a == b and a not in ("*", "") for a, b in zip(reversed(labels), reversed(old_labels)))
            if same_place or any(lb in originals for lb in labels):
                found.append((key[0], key[1], old, value))
    return found


def reverse_mismatches(in_path, out_path, mapping, extra=()) -> list:
    """``(frame, field, original, output)`` for each reverse name of the input whose output is not the
    reverse name of ``mapping(original address)`` (None: the name was zeroed, which is allowed where the
    digits differ in number and counted by the job)."""
    import ipaddress

    before, after = name_fields(in_path, extra), name_fields(out_path, extra)
    bad = []
    for key, values in before.items():
        outs = after.get(key, [])
        for i, value in enumerate(values):
            if not is_reverse(value) or i >= len(outs):
                continue
            labels = value.lower().rstrip(".").split(".")
            try:
                if labels[-2] == "in-addr" and len(labels) == 6:
                    addr = ipaddress.IPv4Address(".".join(reversed(labels[:4])))
                elif labels[-2] == "ip6" and len(labels) == 34:
                    addr = ipaddress.IPv6Address(int("".join(reversed(labels[:32])), 16))
                else:
                    continue
            except ValueError:
                continue
            want = mapping(addr).reverse_pointer
            got = outs[i].lower().rstrip(".")
            zeroed = "\\000" in got or "\x00" in got or got == "<root>"    # tshark stops at a NUL
            if got != want and not zeroed:
                bad.append((key[0], key[1], value, outs[i]))
    return bad


def byte_leaks(in_path, out_path, extra=(), min_length: int = 4) -> list:
    """Original labels (from the input's name fields, ``min_length`` characters or more, reverse names
    left out) found anywhere in the output file's bytes, as text in any case or in wire form."""
    before = name_fields(in_path, extra)
    from pktmask_gui.hostnames import public_suffix_list

    psl = public_suffix_list()
    labels = {lb for lb in labels_of({k: [v for v in vs if not is_reverse(v)] for k, vs in before.items()})
              if len(lb) >= min_length and lb.isascii()
              and not psl.is_public((lb.encode(),), accept_unknown=False)}     # .google is a TLD too
    data = Path(out_path).read_bytes().lower()
    return sorted(lb for lb in labels if lb.encode() in data)
