"""Host-name pseudonyms, message by message: the mapping (hostnames.py), names in DNS / NetBIOS / DHCP /
DHCPv6 (namefields.py), in TLS hellos and certificates (certnames.py, checked with the ``cryptography``
package's own X.509 parser), in QUIC Initials (quicnames.py), and in TCP streams (namestreams.py)."""
from __future__ import annotations

import random
import struct

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from pktmask_gui import certnames, namefields, samplegen as g, samplenames as sn
from pktmask_gui.cryptopan import CryptoPAn
from pktmask_gui.hostnames import (KEPT_ADDRESS, KEPT_DOMAIN, PUBLIC_SUFFIX, HostNames,
                                   derive_subkey, parse_domains)
from pktmask_gui.namestreams import Direction, DnsTcpNames, TlsNames
from pktmask_gui.quicnames import QuicNames, client_initials

KEY = bytes.fromhex("1522178d33a4cf80130a5b1649907d10d8988f837979652762574c2d2a842202")
CP = CryptoPAn(KEY)


def mapped(old: bytes, size: int, plen: int) -> bytes:
    """Crypto-PAn of a (prefix of an) address, as the anonymizer maps it without keep rules."""
    full = old + bytes(size - len(old))
    a = int.from_bytes(full, "big")
    m = (CP.anonymize_v4(a) if size == 4 else CP.anonymize_v6(a)).to_bytes(size, "big")
    if plen < size * 8:
        m = (int.from_bytes(m, "big") >> (size * 8 - plen) << (size * 8 - plen)).to_bytes(size, "big")
    return m[:len(old)]


def hn(**kw) -> HostNames:
    return HostNames(KEY, map_address=mapped, **kw)


def text(h: HostNames, name: str) -> str:
    return h.map_text(name.encode())[0].decode("latin-1")


# ---- the mapping -----------------------------------------------------------------------------------------
def test_label_by_label_same_length_shared_parents_and_suffix():
    h = hn()
    a, b = text(h, "mail.corp.example.com"), text(h, "www.corp.example.com")
    assert [len(x) for x in a.split(".")] == [4, 4, 7, 3] and a.endswith(".com")
    assert a.split(".")[1:] == b.split(".")[1:]              # the shared parent stays shared
    assert a.split(".")[0] != "mail" and a.split(".")[1] != "corp" and a.split(".")[2] != "example"
    assert all(c.isalnum() for c in a.replace(".", ""))
    # example.org's "example" is another pseudonym: each label depends on its parents
    assert text(h, "example.org").split(".")[0] != a.split(".")[2]
    # the ICANN section only: cloudfront.net keeps only net; co.uk is kept whole
    assert text(h, "d1.cloudfront.net").split(".")[2] == "net"
    assert text(h, "d1.cloudfront.net").split(".")[1] != "cloudfront"
    assert text(h, "shop.example.co.uk").endswith(".co.uk")
    assert h.map_text(b"co.uk", bare_suffix=True) == (b"co.uk", PUBLIC_SUFFIX)
    assert h.map_text(b"finance")[0] != b"finance"               # a host, unless a DNS zone
    # "local" is in no section of the list: pseudonymized unless the user keeps it
    assert not text(h, "printer.local").endswith(".local")


def test_consistent_across_instances_and_keys_case_and_special_labels():
    h1, h2 = hn(), hn()
    assert text(h1, "db.corp.example.com") == text(h2, "db.corp.example.com")
    assert derive_subkey(KEY) != KEY
    other = HostNames(bytes(32))
    assert other.map_text(b"db.corp.example.com") != h1.map_text(b"db.corp.example.com")
    # DNS case randomisation: same letters, same case pattern
    low, mixed = text(h1, "www.example.com"), text(h1, "WwW.ExAmPlE.cOm")
    assert low.lower() == mixed.lower()
    assert [c.isupper() for c in mixed if c.isalpha()] == \
        [c.isupper() for c, o in zip(mixed, "WwW.ExAmPlE.cOm") if c.isalpha() and o.isalpha()]
    # service labels keep their underscore, wildcards their star
    srv = text(h1, "_ldap._tcp.corp.example.com").split(".")
    assert srv[0].startswith("_") and srv[1].startswith("_") and srv[1] != "_tcp" and len(srv[1]) == 4
    assert text(h1, "*.example.com").startswith("*.")
    # a one-letter label never maps to itself
    for letter in "abcdefghijklmnopqrstuvwxyz0123456789":
        assert text(h1, f"{letter}.example.com").split(".")[0] != letter


def test_kept_domains_and_suffix_entries():
    h = hn(keep_domains=["vendor.com", "*.local"])
    assert h.map_text(b"support.vendor.com") == (b"support.vendor.com", KEPT_DOMAIN)
    new = text(h, "printer.local")
    assert new.endswith(".local") and not new.startswith("printer")
    assert text(h, "notvendor.com") != "notvendor.com"
    with pytest.raises(ValueError):
        parse_domains(["bad domain!"])
    assert text(hn(keep_public_suffix=False), "www.example.com").split(".")[2] != "com"


def test_reverse_names_follow_the_mapped_address():
    h = hn()
    for addr in ("203.0.113.9", "192.168.1.10", "10.20.30.40", "8.8.8.8", "172.16.254.1"):
        octets = [int(x) for x in addr.split(".")]
        m = mapped(bytes(octets), 4, 32)
        name = ".".join(reversed(addr.split("."))) + ".in-addr.arpa"
        new, rule = h.map_labels(tuple(name.encode().split(b".")))
        assert rule == "reverse"
        for j, label in enumerate(new[3::-1]):
            want = str(m[j]).encode()
            original = addr.split(".")[j].encode()
            assert label == (want if len(want) == len(original) else None)
    # a zone name maps to the mapped prefix (Crypto-PAn keeps prefixes)
    zone = h.map_labels((b"168", b"192", b"in-addr", b"arpa"))[0]
    m = mapped(bytes([192, 168]), 4, 16)
    assert [zone[1], zone[0]] == [str(m[0]).encode() if len(str(m[0])) == 3 else None,
                                  str(m[1]).encode() if len(str(m[1])) == 3 else None]
    # IPv6: nibbles always fit
    import ipaddress
    a6 = ipaddress.IPv6Address("2001:db8::42")
    name6 = a6.reverse_pointer
    new6, rule6 = h.map_labels(tuple(name6.encode().split(b".")))
    m6 = ipaddress.IPv6Address(mapped(a6.packed, 16, 128))
    assert b".".join(new6).decode() == m6.reverse_pointer and rule6 == "reverse"
    # the anonymizer's keep rules: loopback stays, so does its reverse name
    from pktmask_gui.stages import StageContext
    from pktmask_gui.stages.anonymize import AnonymizeStage
    keep = HostNames(KEY, map_address=AnonymizeStage({}, StageContext(key=KEY)).mapper.map_address)
    assert keep.map_text(b"1.0.0.127.in-addr.arpa") == (b"1.0.0.127.in-addr.arpa", KEPT_ADDRESS)


def test_words_keep_their_lengths_and_punctuation():
    h = hn()
    out = h.map_words(b"Example Corp, Inc. (Research)")
    assert len(out) == 29 and out[7:8] == b" " and out.count(b",") == 1 and b"Example" not in out


# ---- DNS, NetBIOS, DHCP -----------------------------------------------------------------------------------
def _apply(buf: bytes, edits: dict) -> bytes:
    out = bytearray(buf)
    for off in sorted(edits):
        out[off:off + len(edits[off])] = edits[off]
    assert len(out) == len(buf)
    return bytes(out)


def _names_in(msg: bytes) -> list:
    """Every name of a DNS message, read again with namefields' own reader (as text)."""
    found = []

    class Rec:
        zeroed = 0

        def map_labels(self, labels, bare=False):
            found.append(b".".join(labels).decode("latin-1"))
            return labels, "public suffix"

        def map_text(self, name, bare=False):
            found.append(name.decode("latin-1"))
            return name, "public suffix"

        def note(self, kind, rule):
            pass

    namefields.dns_message(msg, 0, len(msg), Rec(), "dns", {})
    return found


def test_dns_answer_of_every_type_rewritten_pointers_intact():
    msg = sn.dns(7, 0x8180, [("www.corp.example.com", 1)], [
        ("www.corp.example.com", sn.CNAME, ("name", "web01.corp.example.com")),
        ("corp.example.com", sn.MX, ("mx", 10, "mail.corp.example.com")),
        ("_sip._tcp.corp.example.com", sn.SRV, ("srv", 0, 5, 5060, "pbx.corp.example.com")),
        ("svc.corp.example.com", sn.HTTPS, ("svcb", 1, "edge.cdn-provider.net", "public.cdn-provider.net")),
        ("corp.example.com", sn.NS, ("name", "ns1.corp.example.com")),
        ("4.3.2.1.in-addr.arpa", sn.PTR, ("name", "host4.corp.example.com")),
        ("corp.example.com", sn.SOA, ("soa", "ns1.corp.example.com", "admin.corp.example.com"))])
    h = hn()
    edits = {}
    assert namefields.dns_message(msg, 0, len(msg), h, "dns", edits) >= 0
    out = _apply(msg, edits)
    before, after = _names_in(msg), _names_in(out)
    assert len(before) == len(after) == 17               # 16 names and the ECH config's public name
    for old, new in zip(before, after):
        if old.endswith("in-addr.arpa"):
            continue
        assert new == text(h, old)                          # each read through its pointers
    assert b"corp" not in out and b"example" not in out and b"edge" not in out and b"public" not in out
    assert h.by_kind["dns"] >= 13


def test_dns_broken_names_are_zeroed_not_left():
    good = sn.dns(9, 0x8180, [("www.example.com", 1)], [("www.example.com", 1, bytes(4))])
    # a record whose owner is "secret" then a pointer past the message: its label cannot be mapped
    msg = bytearray(good[:7]) + b"\x02" + good[8:] + b"\x06secret\xc0\xff" + struct.pack("!HHIH", 1, 1, 60, 4) \
        + bytes(4)
    h = hn()
    edits = {}
    bad = namefields.dns_message(bytes(msg), 0, len(msg), h, "dns", edits)
    out = _apply(bytes(msg), edits)
    assert bad == 1 and h.zeroed == 1 and b"secret" not in out
    cut = sn.dns(9, 0x0100, [("confidential.example.com", 1)])[:20]      # cut inside the name
    edits = {}
    assert namefields.dns_message(cut, 0, len(cut), h, "dns", edits) == 1
    assert b"confid" not in _apply(cut, edits)


def test_netbios_names_and_node_status():
    h = hn()
    for msg in (sn.nbns(1, 0x0110, "ACCOUNTING-PC7"), sn.nbns(2, 0x4000, "ACCOUNTING-PC7", 0x20, b"\xc0\xa8\x01\x02"),
                sn.nbstat_response(3, [("ACCOUNTING-PC7", 0), ("FINANCE", 0)])):
        edits = {}
        namefields.dns_message(msg, 0, len(msg), h, "netbios", edits, netbios=True)
        out = _apply(msg, edits)
        assert b"ACCOUNTING" not in out and b"FINANCE" not in out
        if msg[12] == 0x20 and out[13] != 0x43:              # an encoded name (not the "*" query)
            raw = bytes(((out[13 + i] - 65) << 4) | (out[14 + i] - 65) for i in range(0, 32, 2))
            assert raw[:14] == text(h, "ACCOUNTING-PC7").upper().encode() and raw[14:] == b" \x20"
    assert h.by_kind["netbios"] >= 3


def test_dhcp_and_dhcpv6_names():
    h = hn()
    mac = bytes(6)
    for msg, kind in ((sn.dhcp(1, 1, mac, hostname="ACCOUNTING-PC7", fqdn="pc7.corp.example.com"), "dhcp"),
                      (sn.dhcp(2, 1, mac, fqdn="pc7.corp.example.com", fqdn_wire=False, domain="corp.example.com",
                               search=["corp.example.com", "lab.corp.example.com"],
                               sname=b"dhcp01.corp.example.com"), "dhcp"),
                      (sn.dhcp6(3, fqdn="pc7.corp.example.com", search=["corp.example.com"]), "dhcpv6")):
        edits = {}
        (namefields.dhcp if kind == "dhcp" else namefields.dhcp6)(msg, 0, len(msg), h, edits)
        out = _apply(msg, edits)
        for word in (b"ACCOUNTING", b"corp", b"example", b"dhcp01", b"pc7", b"lab"):
            assert word not in out, (kind, word)
    assert h.by_kind["dhcp"] >= 6 and h.by_kind["dhcpv6"] >= 2


# ---- TLS and certificates ---------------------------------------------------------------------------------
def test_client_hello_sni():
    h = hn()
    msg = g.tls_client_hello("intranet.corp.example.com", bytes(32))
    edits = {}
    assert certnames.handshake(msg, h, True, edits) == 0
    out = _apply(msg, edits)
    assert text(h, "intranet.corp.example.com").encode() in out and b"intranet" not in out


def test_certificate_names_checked_by_cryptographys_parser():
    rng = random.Random(3)
    flight = sn.tls12_server_flight(rng, "intranet.corp.example.com")
    body = flight[5:]
    cert_msg_at = 4 + int.from_bytes(body[1:4], "big")       # after the ServerHello
    msg = body[cert_msg_at:cert_msg_at + 4 + int.from_bytes(body[cert_msg_at + 1:cert_msg_at + 4], "big")]
    h = hn()
    edits = {}
    assert certnames.handshake(msg, h, True, edits) == 0
    out = _apply(msg, edits)
    leaf_len = int.from_bytes(out[7:10], "big")
    cert = x509.load_der_x509_certificate(out[10:10 + leaf_len])
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == text(h, "intranet.corp.example.com")
    san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert san.get_values_for_type(x509.DNSName) == [cn, "*." + cn.split(".", 1)[1]]
    email = san.get_values_for_type(x509.RFC822Name)[0]
    assert email.split("@")[1] == text(h, "corp.example.com")
    aia = cert.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_INFORMATION_ACCESS).value
    uris = [d.access_location.value for d in aia]
    assert uris[0].startswith("http://") and uris[0][7:] == text(h, "ocsp.pki.example-ca.com")
    crl = cert.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS).value
    assert crl[0].full_name[0].value.startswith("http://" + text(h, "crl.pki.example-ca.com") + "/")
    org = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    assert len(org) == len("Example Corp") and "Example" not in org
    assert cert.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "US"
    for word in (b"corp", b"example-ca", b"intranet", b"Issuing", b"Root CA", b"hostmaster"):
        assert word not in out, word


def test_a_certificate_that_does_not_parse_is_zeroed():
    h = hn()
    bad = g.tls_handshake(11, g._vec(g._vec(b"\x30\x82\xff\xff" + b"secret.example.com", 3), 3))
    edits = {}
    assert certnames.handshake(bad, h, True, edits) >= 1
    assert b"secret" not in _apply(bad, edits)


# ---- streams -----------------------------------------------------------------------------------------------
def _feed(parser, data: bytes, sizes, order=None):
    """Feed ``data`` cut into segments of ``sizes`` (in ``order``) through a Direction; apply the edits."""
    cuts, at = [], 0
    for size in sizes:
        cuts.append((at, data[at:at + size]))
        at += size
        if at >= len(data):
            break
    if at < len(data):
        cuts.append((at, data[at:]))
    d = Direction(parser)
    for i in (order or range(len(cuts))):
        d.feed(*cuts[i])
    d.finish()
    out = bytearray(data)
    for a, b, new in parser.edits:
        out[a:b] = bytes(b - a) if new is None else new
    return bytes(out)


@pytest.mark.parametrize("reorder", [False, True])
def test_tls_names_across_segments_in_any_order(reorder):
    rng = random.Random(5)
    flight = sn.tls12_server_flight(rng, "intranet.corp.example.com")
    stream = flight + g.tls_record(20, b"\1") + g.tls_record(22, rng.randbytes(40)) + g.tls_record(23, b"x" * 50)
    sizes = [37] * (len(stream) // 37 + 1)
    order = list(range(len(stream) // 37 + 1))
    if reorder:
        random.Random(1).shuffle(order)
    h = hn()
    out = _feed(TlsNames(h, True, syn=True, midstream=False), stream, sizes, order)
    assert len(out) == len(stream)
    for word in (b"intranet", b"corp", b"example-ca", b"Issuing"):
        assert word not in out
    assert out[-55:] == stream[-55:]                          # application data untouched
    assert h.zeroed == 0 and h.by_kind["certificate"] >= 8


def test_tls_cut_by_a_hole_fails_closed():
    rng = random.Random(6)
    flight = sn.tls12_server_flight(rng, "intranet.corp.example.com")
    h = hn()
    parser = TlsNames(h, True, syn=True, midstream=False)
    d = Direction(parser)
    d.feed(0, flight[:700])
    d.feed(900, flight[900:])                                 # 700..900 never captured
    d.finish()
    out = bytearray(flight)
    for a, b, new in parser.edits:
        out[a:b] = bytes(b - a) if new is None else new
    assert b"intranet" not in bytes(out) and b"corp" not in bytes(out) and h.zeroed >= 1


def test_dns_over_tcp_messages_across_segments():
    q = sn.dns(1, 0x0100, [("files.corp.example.com", 1)])
    r = sn.dns(1, 0x8180, [("files.corp.example.com", 1)],
               [("files.corp.example.com", 5, ("name", "nas.corp.example.com"))])
    stream = struct.pack("!H", len(q)) + q + struct.pack("!H", len(r)) + r
    h = hn()
    out = _feed(DnsTcpNames(h, "dns", syn=True), stream, [7] * 40)
    assert b"files" not in out and b"corp" not in out and b"nas" not in out
    # a capture that starts mid-stream, not at a message: those bytes are zeroed
    h2 = hn()
    out2 = _feed(DnsTcpNames(h2, "dns", syn=False), stream[5:], [200])
    assert b"corp" not in out2


# ---- QUIC --------------------------------------------------------------------------------------------------
def test_quic_initial_server_name_rewritten_and_still_decrypts():
    hello = g.tls_client_hello("video.streaming-example.org", bytes(range(32)))
    packet = sn.quic_initial(b"\x11" * 8, b"\x22" * 8, hello)
    found = client_initials(packet, 0, len(packet))
    assert len(found) == 1 and found[0].crypto[0][0] == 0
    h = hn()
    q = QuicNames(h)
    q.collect(b"flow", found)
    q.finish()
    edits = {}
    q.rewrite(b"flow", packet, 0, len(packet), edits)
    out = _apply(packet, edits)
    again = client_initials(out, 0, len(out))
    assert len(again) == 1                                    # authenticates with the same keys
    assert text(h, "video.streaming-example.org").encode() in again[0].plain
    assert b"streaming" not in again[0].plain and out != packet
