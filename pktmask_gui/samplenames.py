"""Builders of messages that carry host names, for the generator's name-bearing captures (tests, bench).

Each returns bytes with correct lengths (checksums through samplegen's frame builders):

- ``dns(qid, flags, questions, answers=(), authority=(), additional=())``: a DNS message whose names are
  compressed as servers do (every suffix written once, later ones point at it); a question is
  ``(name, qtype)``, a record ``(name, rtype, rdata)`` where ``rdata`` is bytes or a tuple that
  ``rdata()`` builds: ``("name", n)`` (NS, CNAME, PTR, DNAME), ``("mx", pref, n)``, ``("srv", prio,
  weight, port, target)``, ``("soa", mname, rname)``, ``("svcb", prio, target, ech_public_name)``.
- ``nbns(tid, flags, name, suffix=0x20, ...)``, ``nbstat_response(tid, names)``: NetBIOS name service.
- ``dhcp(op, xid, mac, hostname=None, fqdn=None, fqdn_wire=True, domain=None, search=(), sname=b"")``
  and ``dhcp6(mtype, fqdn=None, search=())``.
- ``certificate(subject, issuer, san, rnd, aia=(), crl=(), email=None)``: a DER certificate with the
  extensions whose names count (subjectAltName, authority information access, CRL distribution points).
- ``tls12_server_flight(rnd, names, ...)``: ServerHello, Certificate (leaf and intermediate), ServerKeyExchange
  and ServerHelloDone in one record, as a TLS 1.2 server sends them.
- ``quic_initial(dcid, scid, hello, pn=0)``: a client's QUIC version 1 Initial packet carrying ``hello``
  in a CRYPTO frame, encrypted with the initial keys of ``dcid`` (what any observer can decrypt).
- ``names_frames(seed)``: the frames of one capture holding each of the above (DNS over UDP and TCP with
  answers of every type, mDNS, LLMNR, NetBIOS, DHCP, DHCPv6, TLS 1.2 whose certificates span many
  segments, a QUIC Initial, reverse lookups over IPv4 and IPv6); ``write_names_capture(path, seed)``.
"""
from __future__ import annotations

import random
import struct

from . import sampleconv, samplegen as g

A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, DNAME, SVCB, HTTPS = 1, 2, 5, 6, 12, 15, 16, 28, 33, 39, 64, 65


class _Names:
    """Writes names with compression (each suffix once) into a message being built."""

    def __init__(self):
        self.seen = {}

    def write(self, out: bytearray, name: str, compress: bool = True) -> None:
        labels = [lb for lb in name.strip(".").split(".") if lb]
        for i in range(len(labels)):
            suffix = ".".join(labels[i:]).lower()
            if compress and suffix in self.seen:
                out += struct.pack("!H", 0xC000 | self.seen[suffix])
                return
            if len(out) < 0x3FFF:
                self.seen.setdefault(suffix, len(out))
            raw = labels[i].encode()
            out += bytes((len(raw),)) + raw
        out += b"\0"


def rdata(spec, names: _Names, out: bytearray) -> None:
    """Append the data of a record described by ``spec`` (see the module docstring), length first."""
    at = len(out)
    out += b"\0\0"
    if isinstance(spec, (bytes, bytearray)):
        out += spec
    else:
        kind = spec[0]
        if kind == "name":
            names.write(out, spec[1])
        elif kind == "mx":
            out += struct.pack("!H", spec[1])
            names.write(out, spec[2])
        elif kind == "srv":
            out += struct.pack("!HHH", spec[1], spec[2], spec[3])
            names.write(out, spec[4], compress=False)
        elif kind == "soa":
            names.write(out, spec[1])
            names.write(out, spec[2])
            out += struct.pack("!IIIII", 2024010101, 7200, 3600, 1209600, 300)
        elif kind == "svcb":
            out += struct.pack("!H", spec[1])
            names.write(out, spec[2], compress=False)
            out += struct.pack("!HH", 1, 3) + b"\x02h2"                       # alpn
            if spec[3]:
                public = spec[3].encode()
                contents = (b"\x01" + struct.pack("!H", 0x0020) + g._vec(bytes(32), 2)
                            + g._vec(struct.pack("!HH", 1, 1), 2) + b"\x00" + g._vec(public, 1) + b"\0\0")
                config = struct.pack("!HH", 0xFE0D, len(contents)) + contents
                ech = g._vec(config, 2)
                out += struct.pack("!HH", 5, len(ech)) + ech
        else:
            raise ValueError(kind)
    struct.pack_into("!H", out, at, len(out) - at - 2)


def dns(qid: int, flags: int, questions, answers=(), authority=(), additional=()) -> bytes:
    out = bytearray(struct.pack("!HHHHHH", qid, flags, len(questions), len(answers), len(authority),
                                len(additional)))
    names = _Names()
    for name, qtype in questions:
        names.write(out, name)
        out += struct.pack("!HH", qtype, 1)
    for name, rtype, spec in (*answers, *authority, *additional):
        names.write(out, name)
        out += struct.pack("!HHI", rtype, 1, 300)
        rdata(spec, names, out)
    return bytes(out)


def _nb_encode(name: str, suffix: int) -> bytes:
    raw = name.upper().encode().ljust(15)[:15] + bytes((suffix,))
    return b"\x20" + bytes(v for c in raw for v in (65 + (c >> 4), 65 + (c & 15))) + b"\0"


def nbns(tid: int, flags: int, name: str, suffix: int = 0x20, answer_addr: bytes | None = None) -> bytes:
    """A NetBIOS name query (or, with ``answer_addr``, its positive response / a registration)."""
    enc = _nb_encode(name, suffix)
    if answer_addr is None:
        return struct.pack("!HHHHHH", tid, flags, 1, 0, 0, 0) + enc + struct.pack("!HH", 0x20, 1)
    return (struct.pack("!HHHHHH", tid, flags, 0, 1, 0, 0) + enc + struct.pack("!HHIH", 0x20, 1, 300000, 6)
            + b"\x00\x00" + answer_addr)


def nbstat_response(tid: int, names) -> bytes:
    """A node status response listing ``names`` (name, suffix), then a MAC and zeroed statistics."""
    body = bytes((len(names),)) + b"".join(n.upper().encode().ljust(15)[:15] + bytes((s,)) + b"\x04\x00"
                                           for n, s in names) + bytes(6) + bytes(40)
    return (struct.pack("!HHHHHH", tid, 0x8400, 0, 1, 0, 0) + _nb_encode("*", 0)[:1] + b"CK" + b"AA" * 15
            + b"\0" + struct.pack("!HHIH", 0x21, 1, 0, len(body)) + body)


def _wire(name: str) -> bytes:
    return b"".join(bytes((len(lb),)) + lb.encode() for lb in name.strip(".").split(".")) + b"\0"


def dhcp(op: int, xid: int, mac: bytes, hostname=None, fqdn=None, fqdn_wire=True, domain=None, search=(),
         sname: bytes = b"", msg_type: int = 3) -> bytes:
    head = struct.pack("!BBBBIHH", op, 1, 6, 0, xid, 0, 0) + bytes(16) + mac + bytes(10)
    head += sname.ljust(64, b"\0")[:64] + bytes(128) + b"\x63\x82\x53\x63"
    opts = bytes((53, 1, msg_type))
    if hostname is not None:
        opts += bytes((12, len(hostname))) + hostname.encode()
    if fqdn is not None:
        body = _wire(fqdn) if fqdn_wire else fqdn.encode()
        opts += bytes((81, 3 + len(body), 0x05 if fqdn_wire else 0x01, 0, 0)) + body
    if domain is not None:
        opts += bytes((15, len(domain))) + domain.encode()
    if search:
        names = _Names()
        out = bytearray()
        for name in search:
            names.write(out, name)
        opts += bytes((119, len(out))) + bytes(out)
    return head + opts + b"\xff" + bytes(8)


def dhcp6(mtype: int, fqdn=None, search=(), xid: int = 0x123456) -> bytes:
    out = bytes((mtype,)) + xid.to_bytes(3, "big") + struct.pack("!HH", 1, 10) + bytes.fromhex("00030001020000aabbcc")
    if fqdn is not None:
        body = b"\x01" + _wire(fqdn)
        out += struct.pack("!HH", 39, len(body)) + body
    if search:
        body = b"".join(_wire(n) for n in search)
        out += struct.pack("!HH", 24, len(body)) + body
    return out


def _general(tag: int, text: str) -> bytes:
    return g._der(tag, text.encode())


def certificate(subject: str, issuer: str, san, rnd: bytes, aia=(), crl=(), email=None) -> bytes:
    """A DER certificate naming ``subject`` (CN), ``issuer``, the ``san`` dNSNames (and ``email``), with
    authority information access and CRL distribution point URIs."""
    sha256_rsa = g._der(0x30, g._oid("1.2.840.113549.1.1.11") + b"\x05\x00")
    spki = g._der(0x30, g._der(0x30, g._oid("1.2.840.113549.1.1.1") + b"\x05\x00")
                  + g._der(0x03, b"\0" + g._der(0x30, g._der_int(b"\xc1" + rnd[:127].ljust(127, b"\x5a"))
                                                  + g._der_int(b"\x01\x00\x01"))))
    validity = g._der(0x30, g._der(0x17, b"240101000000Z") + g._der(0x17, b"261231235959Z"))
    exts = []
    alt = b"".join(_general(0x82, n) for n in san) + (_general(0x81, email) if email else b"")
    if alt:
        exts.append(g._der(0x30, g._oid("2.5.29.17") + g._der(0x04, g._der(0x30, alt))))
    if aia:
        descs = b"".join(g._der(0x30, g._oid(oid) + _general(0x86, uri)) for oid, uri in aia)
        exts.append(g._der(0x30, g._oid("1.3.6.1.5.5.7.1.1") + g._der(0x04, g._der(0x30, descs))))
    if crl:
        points = b"".join(g._der(0x30, g._der(0xA0, g._der(0xA0, _general(0x86, uri)))) for uri in crl)
        exts.append(g._der(0x30, g._oid("2.5.29.31") + g._der(0x04, g._der(0x30, points))))
    extensions = g._der(0xA3, g._der(0x30, b"".join(exts))) if exts else b""
    tbs = g._der(0x30, g._der(0xA0, g._der(0x02, b"\x02")) + g._der_int(b"\x01" + rnd[:15]) + sha256_rsa
                 + g._name(issuer, "Example Trust Services") + validity + g._name(subject, "Example Corp") + spki
                 + extensions)
    return g._der(0x30, tbs + sha256_rsa + g._der(0x03, b"\0" + rnd[-128:].rjust(128, b"\x33")))


def tls12_server_flight(rnd: random.Random, host: str, ca_host: str = "pki.example-ca.com") -> bytes:
    """ServerHello, Certificate (leaf naming ``host``, with AIA and CRL URIs at ``ca_host``; an
    intermediate), ServerKeyExchange and ServerHelloDone: one TLS 1.2 handshake record."""
    parent = host.split(".", 1)[1] if "." in host else host
    leaf = certificate(host, "Example Issuing CA 7", [host, "*." + parent], rnd.randbytes(300),
                       aia=[("1.3.6.1.5.5.7.48.1", f"http://ocsp.{ca_host}"),
                            ("1.3.6.1.5.5.7.48.2", f"http://certs.{ca_host}/issuing7.crt")],
                       crl=[f"http://crl.{ca_host}/issuing7.crl"], email=f"hostmaster@{parent}")
    inter = certificate("Example Issuing CA 7", "Example Root CA", [], rnd.randbytes(300))
    cert = g.tls_handshake(11, g._vec(g._vec(leaf, 3) + g._vec(inter, 3), 3))
    ske = g.tls_handshake(12, b"\x03\x00\x17" + g._vec(b"\x04" + rnd.randbytes(64), 1) + b"\x04\x01"
                          + g._vec(rnd.randbytes(256), 2))
    return g.tls_record(22, g.tls_server_hello(rnd.randbytes(32), b"", False) + cert + ske
                        + g.tls_handshake(14, b""))


def quic_initial(dcid: bytes, scid: bytes, hello: bytes, pn: int = 0, size: int = 1200) -> bytes:
    """A client's QUIC v1 Initial packet (padded to ``size``) with ``hello`` in one CRYPTO frame."""
    from .quicnames import _Keys, VERSIONS, encrypt, Initial

    salt, prefix, _t = VERSIONS[1]
    keys = _Keys(dcid, salt, prefix)
    frame = b"\x06\x00" + _qvar(len(hello)) + hello
    pn_bytes = pn.to_bytes(2, "big")
    head_len = 1 + 4 + 1 + len(dcid) + 1 + len(scid) + 1 + 2 + len(pn_bytes)
    plain_len = size - head_len - 16
    plain = frame + bytes(max(0, plain_len - len(frame)))
    length = len(pn_bytes) + len(plain) + 16
    header = (bytes((0xC0 | (len(pn_bytes) - 1),)) + (1).to_bytes(4, "big") + bytes((len(dcid),)) + dcid
              + bytes((len(scid),)) + scid + b"\x00" + (0x4000 | length).to_bytes(2, "big") + pn_bytes)
    pkt = Initial(0, len(header) - len(pn_bytes), len(pn_bytes), 0, keys, header, plain, header[0])
    return encrypt(pkt, plain)


def _qvar(n: int) -> bytes:
    return bytes((n,)) if n < 64 else (0x4000 | n).to_bytes(2, "big")


def names_frames(seed: int = 0) -> list:
    """The frames of one capture with names in every place the names stage rewrites."""
    rng = random.Random(seed)
    mac = bytes.fromhex("020000000001")
    frames = []
    c4, s4, dns4 = "192.168.10.20", "198.51.100.80", "192.168.10.1"
    c6, dns6 = "fe80::1c2d:3e4f:5a6b:7c8d", "fe80::1"

    def udp(src, dst, sport, dport, payload, v6=False):
        return (g.udp6_frame if v6 else g.udp4_frame)(src, dst, sport, dport, payload)

    # DNS over UDP: a query and an answer with records of every type that holds names
    frames.append(udp(c4, dns4, 53001, 53, dns(0x1111, 0x0100, [("www.corp.example.com", A)])))
    frames.append(udp(dns4, c4, 53, 53001, dns(0x1111, 0x8180, [("www.corp.example.com", A)], [
        ("www.corp.example.com", CNAME, ("name", "web01.corp.example.com")),
        ("web01.corp.example.com", A, bytes([198, 51, 100, 80])),
        ("corp.example.com", MX, ("mx", 10, "mail.corp.example.com")),
        ("_ldap._tcp.corp.example.com", SRV, ("srv", 0, 100, 389, "dc01.corp.example.com")),
        ("svc.corp.example.com", HTTPS, ("svcb", 1, "edge.cdn-provider.net", "public.cdn-provider.net")),
        ("svc.corp.example.com", SVCB, ("svcb", 1, "edge2.cdn-provider.net", None)),
    ], [("corp.example.com", NS, ("name", "ns1.corp.example.com")),
        ("corp.example.com", SOA, ("soa", "ns1.corp.example.com", "hostmaster.corp.example.com"))])))
    # reverse lookups: IPv4 (whose digits may not fit: zeroed then) and IPv6
    rev4 = "20.10.168.192.in-addr.arpa"
    frames.append(udp(c4, dns4, 53002, 53, dns(0x2222, 0x0100, [(rev4, PTR)])))
    frames.append(udp(dns4, c4, 53, 53002, dns(0x2222, 0x8580, [(rev4, PTR)],
                                                [(rev4, PTR, ("name", "laptop-7.corp.example.com"))])))
    rev6 = ".".join(reversed("20010db8000000000000000000000042".replace(":", ""))) + ".ip6.arpa"
    frames.append(udp(c6, dns6, 53003, 53, dns(0x3333, 0x0100, [(rev6, PTR)]), v6=True))
    # DNS over TCP (one message spread over two segments)
    query = dns(0x4444, 0x0100, [("files.corp.example.com", A)])
    msg = dns(0x4444, 0x8180, [("files.corp.example.com", A)],
              [("files.corp.example.com", CNAME, ("name", "nas-backup.corp.example.com"))])
    frames += sampleconv.tcp_conversation([(True, struct.pack("!H", len(query)) + query),
                                  (False, struct.pack("!H", len(msg)) + msg)], 53, seed=seed, mss=30)
    # mDNS and LLMNR
    frames.append(udp(c4, "224.0.0.251", 5353, 5353, dns(0, 0x8400, [], [
        ("Kitchen Speaker._googlecast._tcp.local", SRV, ("srv", 0, 0, 8009, "kitchen-speaker-3f2a.local")),
        ("_googlecast._tcp.local", PTR, ("name", "Kitchen Speaker._googlecast._tcp.local")),
        ("kitchen-speaker-3f2a.local", A, bytes([192, 168, 10, 31]))])))
    frames.append(udp(c6, "ff02::fb", 5353, 5353, dns(0, 0, [("alices-macbook.local", AAAA)]), v6=True))
    frames.append(udp(c4, "224.0.0.252", 54001, 5355, dns(0x5555, 0, [("fileserver-2", A)])))
    # NetBIOS name service
    frames.append(udp(c4, "192.168.10.255", 137, 137, nbns(0x6666, 0x0110, "ACCOUNTING-PC7")))
    frames.append(udp(c4, "192.168.10.255", 137, 137, nbns(0x6667, 0x2910, "ACCOUNTING-PC7", 0x20,
                                                           bytes([192, 168, 10, 20]))))
    frames.append(udp(c4, dns4, 137, 137, nbstat_response(0x6668, [("ACCOUNTING-PC7", 0x00),
                                                                   ("FINANCE", 0x00)])))
    # DHCP with options 12, 81 (wire and text), 15, 119 and a server name; DHCPv6 with 39 and 24
    frames.append(udp("0.0.0.0", "255.255.255.255", 68, 67,
                      dhcp(1, 0xABCD, mac, hostname="ACCOUNTING-PC7", fqdn="accounting-pc7.corp.example.com",
                           msg_type=3)))
    frames.append(udp(dns4, "255.255.255.255", 67, 68,
                      dhcp(2, 0xABCD, mac, fqdn="accounting-pc7.corp.example.com", fqdn_wire=False,
                           domain="corp.example.com", search=["corp.example.com", "lab.corp.example.com"],
                           sname=b"dhcp01.corp.example.com", msg_type=5)))
    frames.append(udp("fe80::1c2d:3e4f:5a6b:7c8d", "ff02::1:2", 546, 547,
                      dhcp6(3, fqdn="accounting-pc7.corp.example.com", search=["corp.example.com"]), v6=True))
    # TLS 1.2: SNI, certificates spread over many small segments
    hello = g.tls_record(22, g.tls_client_hello("intranet.corp.example.com", rng.randbytes(32), b"", False),
                         0x0301)
    frames += sampleconv.tcp_conversation([(True, hello), (False, tls12_server_flight(rng, "intranet.corp.example.com"))
                                  ], 443, seed=seed + 1, mss=90)
    # QUIC: a client Initial carrying a ClientHello
    qhello = g.tls_client_hello("video.streaming-example.org", rng.randbytes(32))
    frames.append(udp(c4, s4, 51000, 443, quic_initial(rng.randbytes(8), rng.randbytes(8), qhello)))
    return frames


def write_names_capture(path, seed: int = 0) -> None:
    sampleconv.write_pcap(path, names_frames(seed))
