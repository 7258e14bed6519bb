"""Seeded generator of realistic captures (tests, benchmarks, the shipped sample).

``generate(path, packets=N, seed=S, fmt="pcap"|"pcapng", dup_ratio=0.05, ...)`` writes, through
``capturewriter.CaptureWriter``, a client-side capture of a small office network: Ethernet/IPv4 and IPv6 TCP
flows carrying TLS 1.2 and 1.3 (ClientHello with SNI, ServerHello, Certificate, ChangeCipherSpec,
ApplicationData; records span segments), plain HTTP over TCP, DNS over UDP, ICMP / ICMPv6 echo, ICMP
port-unreachable errors quoting a UDP datagram, 802.1Q-tagged flows and about ``dup_ratio`` exact
duplicate frames. Every checksum is correct, timestamps increase, the same seed gives the same bytes.
``probe_ratio`` adds Internet background noise (TCP SYN probes from public addresses met once, half of them
answered by a RST): a capture with as many distinct addresses as a busy border link (bench.py's growth rows).

``iter_frames(packets, seed, dup_ratio, ...)`` yields the same ``(time_ns, frame, is_duplicate)``
stream without writing a file.

CLI: ``python -m pktmask_gui.samplegen OUT --packets N --seed S [--pcapng] [--dup-ratio R]
[--big-endian] [--nanos] [--metadata] [--probe-ratio R]``. The shipped samples were made with
``python -m pktmask_gui.samplegen resources/samples/sample.pcapng --packets 300 --seed 2043
--metadata`` and ``python -m pktmask_gui.samplegen resources/samples/sample.pcap --packets 100
--seed 3045``.

Frame builders (public; each returns ``bytes`` with correct lengths and checksums). Addresses are
``bytes`` (4, 16 or 6 for MACs) or strings ("10.0.0.1", "2001:db8::1", "02:00:00:00:00:01").

- ``checksum(data) -> int``: Internet checksum (RFC 1071) of ``data``.
- ``eth(dst, src, ethertype, payload) -> bytes``: Ethernet II frame (no FCS, no padding).
- ``vlan(vid, ethertype, payload, pcp=0) -> bytes``: 802.1Q tag body + payload; use as
  ``eth(dst, src, 0x8100, vlan(10, 0x0800, ip_packet))``.
- ``ipv4(src, dst, proto, payload, ttl=64, ident=0, df=True, tos=0, options=b"", frag=None, total=None)
  -> bytes``: ``options`` (padded to 4 bytes) lengthen the header; ``frag`` is the whole flags and
  fragment-offset word (then ``df`` is not looked at); ``total`` overrides the total length (0: a TSO frame).
- ``ipv6(src, dst, next_header, payload, hop_limit=64, flow=0, tclass=0) -> bytes``; extension headers go
  at the head of ``payload``: ``ipv6_ext(next_header, body)`` (Hop-by-Hop, Routing, Destination Options:
  the length byte is computed, ``body`` padded to 8 bytes), ``ipv6_fragment(next_header, offset, ident,
  more=False)``.
- ``tcp(src, dst, sport, dport, seq=0, ack=0, flags=PSH | ACK, payload=b"", window=64240, options=b"")
  -> bytes``: a TCP segment whose checksum covers the pseudo-header of ``src``/``dst`` (IPv4 or IPv6 by
  length). Flag constants: ``FIN SYN RST PSH ACK``.
- ``udp(src, dst, sport, dport, payload, zero_checksum=False) -> bytes`` (``zero_checksum``: 0, "none", as
  IPv4 allows).
- ``icmp_echo(ident, seq, payload=b"", reply=False) -> bytes``: ICMPv4 echo request / reply.
- ``icmp_error(type_, code, quoted, rest=0) -> bytes``: ICMPv4 error quoting an IP datagram head
  (``icmp_error(3, 3, udp_datagram)`` = port unreachable).
- ``icmp6_echo(src, dst, ident, seq, payload=b"", reply=False) -> bytes``: ICMPv6 echo.
- ``icmp(type_, code, rest, payload=b"") -> bytes``: any ICMPv4 message (``rest``: the 4 bytes after the
  checksum: a gateway, an echo's identifier and sequence, an RFC 4884 length); IGMP has the same layout.
- ``icmp6(src, dst, type_, code, body) -> bytes``: any ICMPv6 message (``body``: all after the checksum).
- ``gre(protocol, payload, with_checksum=False, key=None, seq=None) -> bytes``: a GRE header (version 0)
  with the optional fields asked for, then ``payload``.
- ``arp(spa, tpa, op=1, sha="02:00:00:00:00:01", tha=bytes(6)) -> bytes``: an Ethernet/IPv4 ARP message
  (op 3 / 4: RARP).
- ``mpls(labels, payload) -> bytes``: a label stack (bottom of stack on the last, TTL 64), then ``payload``.
- ``pseudo_checksummed(src, dst, proto, body, at) -> bytes``: ``body`` with the Internet checksum over the
  pseudo-header and ``body`` written at offset ``at`` (VRRP v3, UDP-Lite, DCCP).
- ``tls_record(content_type, body, version=0x0303) -> bytes``; ``tls_handshake(msg_type, body)``.
- ``tls_client_hello(sni, rnd, session_id=b"", tls13=True) -> bytes`` (a handshake message, SNI
  extension included); ``tls_server_hello(rnd, session_id=b"", tls13=True, cipher=None)``;
  ``tls_certificate(names, rnd) -> bytes`` (handshake message with DER certificates naming ``names``);
  ``x509_certificate(subject, issuer, rnd, san=()) -> bytes`` (one structurally valid DER certificate).
- ``dns_query(qid, name, qtype=1) -> bytes``; ``dns_response(qid, name, addrs, qtype=1, ecs=None, ttl=300)
  -> bytes``: an answer per address (A or AAAA by its length); ``ecs=(network, prefix length)`` adds an
  EDNS OPT record with that client subnet.
- ``http_request(host, path="/") -> bytes``; ``http_response(body) -> bytes``.
- ``tcp4_frame(src, dst, sport, dport, seq, ack, flags, payload=b"", ...)``,
  ``udp4_frame(...)``, ``tcp6_frame(...)``, ``udp6_frame(...)``: whole Ethernet frames, handy in tests;
  ``ip_frame(packet, src_mac=..., dst_mac=..., vlans=())``: an Ethernet frame around any IPv4 or IPv6
  packet (the EtherType from its version), behind the 802.1Q tags of ``vlans`` (VLAN ids, outermost first).
- Whole conversations (TLS after plaintext, one connection's frames, a pcap of them) are in
  ``sampleconv.py``, built from these.

Hand-written rather than built with scapy: byte-exact control, no dependency, and it generates about
100 k frames/s (1 M frames in about ten seconds), which scapy cannot approach. Checksums use the
residue of the frame as one big integer modulo 0xFFFF (2^16 = 1 mod 0xFFFF), which runs in C.
"""
from __future__ import annotations

import argparse
import ipaddress
import random
import struct
import sys
from pathlib import Path

from .capture import IDB, ISB, META, NRB, SHB, EPB, build_options, make_idb_body, make_pcap_header, make_shb_body
from .capturewriter import CaptureWriter

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ETH_IPV4, ETH_IPV6, ETH_VLAN = 0x0800, 0x86DD, 0x8100

_U16 = struct.Struct("!H")
_TCP_HDR = struct.Struct("!HHIIBBHHH")
_IPV4_HDR = struct.Struct("!BBHHHBBH4s4s")
_IPV6_HDR = struct.Struct("!IHBB16s16s")


# ---------------------------------------------------------------------------------------------------
# frame builders

def _addr(a) -> bytes:
    if isinstance(a, (bytes, bytearray)):
        return bytes(a)
    return ipaddress.ip_address(a).packed


def _mac(m) -> bytes:
    if isinstance(m, (bytes, bytearray)):
        return bytes(m)
    return bytes.fromhex(m.replace(":", "").replace("-", ""))


def checksum(data) -> int:
    """Internet checksum: ones'-complement of the ones'-complement sum of 16-bit big-endian words."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    # 2^16 = 1 (mod 0xFFFF): the big number's residue is the folded word sum, computed in C
    s = int.from_bytes(data, "big") % 0xFFFF
    if s:
        return 0xFFFF - s
    return 0 if any(data) else 0xFFFF


def eth(dst, src, ethertype: int, payload: bytes) -> bytes:
    return _mac(dst) + _mac(src) + _U16.pack(ethertype) + payload


def vlan(vid: int, ethertype: int, payload: bytes, pcp: int = 0) -> bytes:
    return struct.pack("!HH", (pcp << 13) | (vid & 0x0FFF), ethertype) + payload


def ipv4(src, dst, proto: int, payload: bytes, ttl: int = 64, ident: int = 0, df: bool = True,
         tos: int = 0, options: bytes = b"", frag: int | None = None, total: int | None = None) -> bytes:
    src, dst = _addr(src), _addr(dst)
    options += b"\0" * (-len(options) & 3)
    hlen = 20 + len(options)
    head = _IPV4_HDR.pack(0x40 | hlen >> 2, tos, hlen + len(payload) if total is None else total, ident & 0xFFFF,
                          (0x4000 if df else 0) if frag is None else frag, ttl, proto, 0, src, dst) + options
    return head[:10] + _U16.pack(checksum(head)) + head[12:] + payload


def ipv6(src, dst, next_header: int, payload: bytes, hop_limit: int = 64, flow: int = 0,
         tclass: int = 0) -> bytes:
    return _IPV6_HDR.pack((6 << 28) | (tclass << 20) | (flow & 0xFFFFF), len(payload), next_header,
                          hop_limit, _addr(src), _addr(dst)) + payload


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


def tcp(src, dst, sport: int, dport: int, seq: int = 0, ack: int = 0, flags: int = PSH | ACK,
        payload: bytes = b"", window: int = 64240, options: bytes = b"") -> bytes:
    src, dst = _addr(src), _addr(dst)
    options += b"\0" * (-len(options) & 3)
    hlen = 20 + len(options)
    head = _TCP_HDR.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (hlen // 4) << 4, flags,
                         window, 0, 0) + options
    csum = checksum(_pseudo(src, dst, 6, hlen + len(payload)) + head + payload)
    return head[:16] + _U16.pack(csum) + head[18:] + payload


def udp(src, dst, sport: int, dport: int, payload: bytes, zero_checksum: bool = False) -> bytes:
    src, dst = _addr(src), _addr(dst)
    length = 8 + len(payload)
    head = struct.pack("!HHHH", sport, dport, length, 0)
    if zero_checksum:
        return head + payload
    csum = checksum(_pseudo(src, dst, 17, length) + head + payload) or 0xFFFF
    return head[:6] + _U16.pack(csum) + payload


def icmp_echo(ident: int, seq: int, payload: bytes = b"", reply: bool = False) -> bytes:
    head = struct.pack("!BBHHH", 0 if reply else 8, 0, 0, ident, seq)
    return head[:2] + _U16.pack(checksum(head + payload)) + head[4:] + payload


def icmp_error(type_: int, code: int, quoted: bytes, rest: int = 0) -> bytes:
    head = struct.pack("!BBHI", type_, code, 0, rest)
    return head[:2] + _U16.pack(checksum(head + quoted)) + head[4:] + quoted


def icmp6_echo(src, dst, ident: int, seq: int, payload: bytes = b"", reply: bool = False) -> bytes:
    src, dst = _addr(src), _addr(dst)
    head = struct.pack("!BBHHH", 129 if reply else 128, 0, 0, ident, seq)
    csum = checksum(_pseudo(src, dst, 58, 8 + len(payload)) + head + payload)
    return head[:2] + _U16.pack(csum) + head[4:] + payload


def tcp4_frame(src, dst, sport, dport, seq, ack, flags, payload=b"", src_mac="02:00:00:00:00:01",
               dst_mac="02:00:00:00:00:02", ident=0) -> bytes:
    return eth(dst_mac, src_mac, ETH_IPV4,
               ipv4(src, dst, 6, tcp(src, dst, sport, dport, seq, ack, flags, payload), ident=ident))


def tcp6_frame(src, dst, sport, dport, seq, ack, flags, payload=b"", src_mac="02:00:00:00:00:01",
               dst_mac="02:00:00:00:00:02") -> bytes:
    return eth(dst_mac, src_mac, ETH_IPV6, ipv6(src, dst, 6, tcp(src, dst, sport, dport, seq, ack, flags,
                                                                 payload)))


def udp4_frame(src, dst, sport, dport, payload=b"", src_mac="02:00:00:00:00:01",
               dst_mac="02:00:00:00:00:02", ident=0) -> bytes:
    return eth(dst_mac, src_mac, ETH_IPV4, ipv4(src, dst, 17, udp(src, dst, sport, dport, payload),
                                                ident=ident, df=False))


def udp6_frame(src, dst, sport, dport, payload=b"", src_mac="02:00:00:00:00:01",
               dst_mac="02:00:00:00:00:02") -> bytes:
    return eth(dst_mac, src_mac, ETH_IPV6, ipv6(src, dst, 17, udp(src, dst, sport, dport, payload)))


def ip_frame(packet: bytes, src_mac="02:00:00:00:00:01", dst_mac="02:00:00:00:00:02", vlans=()) -> bytes:
    etype = ETH_IPV6 if packet[:1] and packet[0] >> 4 == 6 else ETH_IPV4
    for vid in reversed(vlans):
        packet, etype = vlan(vid, etype, packet), ETH_VLAN
    return eth(dst_mac, src_mac, etype, packet)


# more shapes for tests: IPv6 extension headers, any ICMP / ICMPv6 message, GRE, ARP, MPLS ----------------

def ipv6_ext(next_header: int, body: bytes) -> bytes:
    """A Hop-by-Hop, Routing or Destination Options header: ``body`` (all after the length byte) padded with
    zeros to a multiple of 8 bytes in all."""
    body += b"\0" * (-(len(body) + 2) & 7)
    return bytes((next_header, (len(body) + 2) // 8 - 1)) + body


def ipv6_fragment(next_header: int, offset: int, ident: int, more: bool = False) -> bytes:
    """A Fragment header: ``offset`` in bytes (a multiple of 8)."""
    return struct.pack("!BBHI", next_header, 0, offset | more, ident)


def icmp(type_: int, code: int, rest: bytes, payload: bytes = b"") -> bytes:
    body = struct.pack("!BBH", type_, code, 0) + rest + payload
    return body[:2] + _U16.pack(checksum(body)) + body[4:]


def icmp6(src, dst, type_: int, code: int, body: bytes) -> bytes:
    msg = struct.pack("!BBH", type_, code, 0) + body
    return msg[:2] + _U16.pack(checksum(_pseudo(_addr(src), _addr(dst), 58, len(msg)) + msg)) + msg[4:]


def gre(protocol: int, payload: bytes, with_checksum: bool = False, key: int | None = None,
        seq: int | None = None) -> bytes:
    flags = (0x8000 if with_checksum else 0) | (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
    fields = (b"\0\0\0\0" if with_checksum else b"") + (b"" if key is None else struct.pack("!I", key)) \
        + (b"" if seq is None else struct.pack("!I", seq))
    packet = struct.pack("!HH", flags, protocol) + fields + payload
    if with_checksum:
        packet = packet[:4] + _U16.pack(checksum(packet)) + packet[6:]
    return packet


def arp(spa, tpa, op: int = 1, sha="02:00:00:00:00:01", tha=bytes(6)) -> bytes:
    return struct.pack("!HHBBH", 1, ETH_IPV4, 6, 4, op) + _mac(sha) + _addr(spa) + _mac(tha) + _addr(tpa)


def mpls(labels, payload: bytes) -> bytes:
    last = len(labels) - 1
    return b"".join(struct.pack("!I", label << 12 | (0x100 if i == last else 0) | 64)
                    for i, label in enumerate(labels)) + payload


def pseudo_checksummed(src, dst, proto: int, body: bytes, at: int) -> bytes:
    src, dst = _addr(src), _addr(dst)
    body = body[:at] + b"\0\0" + body[at + 2:]
    return body[:at] + _U16.pack(checksum(_pseudo(src, dst, proto, len(body)) + body)) + body[at + 2:]


# TLS --------------------------------------------------------------------------------------------------

def tls_record(content_type: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", content_type, version, len(body)) + body


def tls_handshake(msg_type: int, body: bytes) -> bytes:
    return struct.pack("!I", (msg_type << 24) | len(body)) + body


def _vec(body: bytes, width: int) -> bytes:
    return len(body).to_bytes(width, "big") + body


def _ext(ext_type: int, body: bytes) -> bytes:
    return struct.pack("!HH", ext_type, len(body)) + body


_CIPHERS = (0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014,
            0x009C, 0x009D, 0x002F, 0x0035)


def tls_client_hello(sni: str, rnd: bytes, session_id: bytes = b"", tls13: bool = True) -> bytes:
    exts = [
        _ext(0, _vec(b"\0" + _vec(sni.encode(), 2), 2)),                  # server_name
        _ext(23, b""),                                                    # extended_master_secret
        _ext(0xFF01, b"\0"),                                              # renegotiation_info
        _ext(10, _vec(struct.pack("!HHH", 0x001D, 0x0017, 0x0018), 2)),   # supported_groups
        _ext(11, _vec(b"\0", 1)),                                         # ec_point_formats
        _ext(16, _vec(_vec(b"h2", 1) + _vec(b"http/1.1", 1), 2)),         # ALPN
        _ext(13, _vec(struct.pack("!HHHHHH", 0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501), 2)),
    ]
    if tls13:
        exts += [
            _ext(51, _vec(struct.pack("!HH", 0x001D, 32) + rnd[:32], 2)),  # key_share x25519
            _ext(45, _vec(b"\1", 1)),                                      # psk_key_exchange_modes
            _ext(43, _vec(struct.pack("!HH", 0x0304, 0x0303), 1)),         # supported_versions
        ]
    body = (struct.pack("!H", 0x0303) + rnd[:32] + _vec(session_id, 1)
            + _vec(b"".join(_U16.pack(c) for c in _CIPHERS), 2) + _vec(b"\0", 1)
            + _vec(b"".join(exts), 2))
    return tls_handshake(1, body)


def tls_server_hello(rnd: bytes, session_id: bytes = b"", tls13: bool = True, cipher: int | None = None
                     ) -> bytes:
    if tls13:
        cipher = cipher or 0x1301
        exts = _ext(43, _U16.pack(0x0304)) + _ext(51, struct.pack("!HH", 0x001D, 32) + rnd[:32])
    else:
        cipher = cipher or 0xC02F
        exts = _ext(0xFF01, b"\0") + _ext(23, b"") + _ext(11, _vec(b"\0", 1))
    body = (struct.pack("!H", 0x0303) + rnd[:32] + _vec(session_id, 1) + _U16.pack(cipher) + b"\0"
            + _vec(exts, 2))
    return tls_handshake(2, body)


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    out = bytearray([parts[0] * 40 + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        out += bytes(reversed(chunk))
    return _der(0x06, bytes(out))


def _der_int(raw: bytes) -> bytes:
    return _der(0x02, b"\0" + raw if raw[0] & 0x80 else raw)


def _name(common_name: str, org: str) -> bytes:
    def rdn(oid, tag, text):
        return _der(0x31, _der(0x30, _oid(oid) + _der(tag, text.encode())))
    return _der(0x30, rdn("2.5.4.6", 0x13, "US") + rdn("2.5.4.10", 0x0C, org)
                + rdn("2.5.4.3", 0x0C, common_name))


def x509_certificate(subject: str, issuer: str, rnd: bytes, san=()) -> bytes:
    """A structurally valid DER X.509 v3 certificate (RSA key and signature are random bytes)."""
    sha256_rsa = _der(0x30, _oid("1.2.840.113549.1.1.11") + b"\x05\x00")
    modulus = b"\xc1" + rnd[:255].ljust(255, b"\x5a")
    spki = _der(0x30, _der(0x30, _oid("1.2.840.113549.1.1.1") + b"\x05\x00")
                + _der(0x03, b"\0" + _der(0x30, _der_int(modulus) + _der_int(b"\x01\x00\x01"))))
    validity = _der(0x30, _der(0x17, b"240101000000Z") + _der(0x17, b"261231235959Z"))
    extensions = b""
    if san:
        names = b"".join(_der(0x82, n.encode()) for n in san)
        extensions = _der(0xA3, _der(0x30, _der(0x30, _oid("2.5.29.17") + _der(0x04, _der(0x30, names)))))
    tbs = _der(0x30, _der(0xA0, _der(0x02, b"\x02")) + _der_int(b"\x01" + rnd[:15]) + sha256_rsa
               + _name(issuer, "Sample Trust Services") + validity + _name(subject, "Sample Org") + spki
               + extensions)
    return _der(0x30, tbs + sha256_rsa + _der(0x03, b"\0" + rnd[-256:].rjust(256, b"\x33")))


def tls_certificate(names, rnd: bytes) -> bytes:
    """Certificate handshake message: a leaf naming ``names`` (CN + SAN) and an intermediate."""
    leaf = x509_certificate(names[0], "Sample Issuing CA 1", rnd, san=names)
    inter = x509_certificate("Sample Issuing CA 1", "Sample Root CA", rnd[::-1])
    chain = _vec(leaf, 3) + _vec(inter, 3)
    return tls_handshake(11, _vec(chain, 3))


# DNS / HTTP ---------------------------------------------------------------------------------------------

def _qname(name: str) -> bytes:
    return b"".join(_vec(label.encode(), 1) for label in name.strip(".").split(".")) + b"\0"


def dns_query(qid: int, name: str, qtype: int = 1) -> bytes:
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _qname(name) + struct.pack("!HH", qtype, 1)


def dns_response(qid: int, name: str, addrs, qtype: int = 1, ecs=None, ttl: int = 300) -> bytes:
    addrs = [_addr(a) for a in addrs]
    answers = b"".join(struct.pack("!HHHIH", 0xC00C, 1 if len(a) == 4 else 28, 1, ttl, len(a)) + a for a in addrs)
    extra = b""
    if ecs is not None:                     # an OPT record holding an EDNS client subnet (RFC 7871)
        network, prefix = _addr(ecs[0]), ecs[1]
        subnet = struct.pack("!HBB", 1 if len(network) == 4 else 2, prefix, 0) + network[:(prefix + 7) // 8]
        option = struct.pack("!HH", 8, len(subnet)) + subnet
        extra = b"\0" + struct.pack("!HHIH", 41, 4096, 0, len(option)) + option
    return (struct.pack("!HHHHHH", qid, 0x8180, 1, len(addrs), 0, 1 if extra else 0) + _qname(name)
            + struct.pack("!HH", qtype, 1) + answers + extra)


def http_request(host: str, path: str = "/") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
            f"Accept: text/html,*/*;q=0.8\r\nAccept-Language: en-US\r\nConnection: keep-alive\r\n\r\n"
            ).encode()


def http_response(body: bytes) -> bytes:
    return (f"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: max-age=600\r\n\r\n").encode() + body


# ---------------------------------------------------------------------------------------------------
# traffic model

_HOSTS = ("www.example.com", "api.example.net", "cdn.example.org", "mail.example.com",
          "login.example.net", "static.example.org", "updates.example.com", "video.example.net",
          "docs.example.org", "shop.example.com", "news.example.net", "chat.example.org")
_WORDS = (b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
          b"labore et dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco ")
_GATEWAY_MAC = bytes.fromhex("0050569a3c01")


class _Net:
    """Addresses of the simulated network: clients on a LAN, servers on the Internet."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.clients4 = [bytes((192, 168, 1, 10 + i)) for i in range(24)]
        self.clients6 = [bytes.fromhex("20010db80001000000000000000000") + bytes((0x10 + i,))
                         for i in range(24)]
        self.client_macs = [bytes((0x02, 0x1A, 0x2B, 0x3C, 0x4D, 0x10 + i)) for i in range(24)]
        prefixes4 = ((93, 184), (142, 250), (151, 101), (104, 16), (172, 217), (13, 107), (52, 84),
                     (185, 199))
        self.servers4 = [bytes(rng.choice(prefixes4) + (rng.randrange(256), rng.randrange(1, 255)))
                         for _ in range(48)]
        prefixes6 = ("26064700", "2a001450", "2a032880", "26001f18")
        self.servers6 = [bytes.fromhex(rng.choice(prefixes6)) + rng.randbytes(12) for _ in range(24)]
        self.dns4 = bytes((192, 168, 1, 1))
        self.dns6 = bytes.fromhex("20010db8000100000000000000000001")
        self.gw4 = self.dns4

    def client(self, v6: bool):
        i = self.rng.randrange(len(self.clients4))
        return (self.clients6 if v6 else self.clients4)[i], self.client_macs[i]

    def server(self, v6: bool):
        return self.rng.choice(self.servers6 if v6 else self.servers4)


class _Link:
    """Ethernet (optionally 802.1Q) prefixes for both directions of one conversation."""

    def __init__(self, client_mac: bytes, v6: bool, vid: int | None):
        etype = ETH_IPV6 if v6 else ETH_IPV4
        tag = b"" if vid is None else struct.pack("!HHH", ETH_VLAN, vid, etype)
        last = b"" if tag else _U16.pack(etype)
        self.up = _GATEWAY_MAC + client_mac + (tag or last)
        self.down = client_mac + _GATEWAY_MAC + (tag or last)


def _pad(frame: bytes) -> bytes:
    """Frames received from the wire are padded to the Ethernet minimum of 60 bytes (no FCS)."""
    return frame if len(frame) >= 60 else frame + b"\0" * (60 - len(frame))


class _TcpConn:
    """One TCP connection; ``send`` cuts a byte stream into MSS-sized segments."""

    def __init__(self, rng, client, server, cmac, sport, dport, v6, vid):
        self.rng = rng
        self.c, self.s, self.sport, self.dport, self.v6 = client, server, sport, dport, v6
        self.link = _Link(cmac, v6, vid)
        self.seq = [rng.getrandbits(32), rng.getrandbits(32)]   # next seq: [client, server]
        self.ident = [rng.getrandbits(16), rng.getrandbits(16)]
        self.mss = 1440 if v6 else 1460
        self.ttl = (64, rng.choice((52, 56, 57, 118, 120)))

    def frame(self, up: bool, flags: int, payload: bytes = b"") -> bytes:
        d = 0 if up else 1
        src, dst = (self.c, self.s) if up else (self.s, self.c)
        sport, dport = (self.sport, self.dport) if up else (self.dport, self.sport)
        ack = self.seq[1 - d] if flags & ACK else 0
        opts = b""
        if flags & SYN:
            opts = struct.pack("!BBH", 2, 4, self.mss) + b"\x01\x03\x03\x07\x04\x02\x01\x01"
        seg = tcp(src, dst, sport, dport, self.seq[d], ack, flags, payload,
                  window=64240 if up else 65160, options=opts)
        self.seq[d] = (self.seq[d] + len(payload) + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        if self.v6:
            ip = ipv6(src, dst, 6, seg, hop_limit=self.ttl[d])
        else:
            self.ident[d] = (self.ident[d] + 1) & 0xFFFF
            ip = ipv4(src, dst, 6, seg, ttl=self.ttl[d], ident=self.ident[d])
        frame = (self.link.up if up else self.link.down) + ip
        return frame if up else _pad(frame)

    def handshake(self):
        yield self.frame(True, SYN)
        yield self.frame(False, SYN | ACK)
        yield self.frame(True, ACK)

    def send(self, up: bool, data: bytes, ack_every: int = 2):
        """Segments of ``data`` from one side; the other side ACKs every ``ack_every`` segments."""
        mss = self.mss
        for n, off in enumerate(range(0, len(data), mss), 1):
            chunk = data[off:off + mss]
            last = off + mss >= len(data)
            yield self.frame(up, ACK | (PSH if last else 0), chunk)
            if last or n % ack_every == 0:
                yield self.frame(not up, ACK)

    def close(self):
        yield self.frame(True, FIN | ACK)
        yield self.frame(False, FIN | ACK)
        yield self.frame(True, ACK)


def _tls_session(rng: random.Random, net: _Net, v6: bool, vid):
    client, cmac = net.client(v6)
    host = rng.choice(_HOSTS)
    conn = _TcpConn(rng, client, net.server(v6), cmac, rng.randrange(32768, 61000), 443, v6, vid)
    tls13 = rng.random() < 0.6
    yield from conn.handshake()
    session_id = rng.randbytes(32)
    yield from conn.send(True, tls_record(22, tls_client_hello(host, rng.randbytes(32), session_id, tls13),
                                          0x0301))
    names = [host, "*." + host.split(".", 1)[1]]
    if tls13:
        flight = (tls_record(22, tls_server_hello(rng.randbytes(32), session_id, True))
                  + tls_record(20, b"\1") + tls_record(23, rng.randbytes(rng.randrange(2400, 4200))))
        yield from conn.send(False, flight)
        yield from conn.send(True, tls_record(20, b"\1") + tls_record(23, rng.randbytes(53)))
    else:
        ske = tls_handshake(12, b"\x03\x00\x17" + _vec(b"\x04" + rng.randbytes(64), 1)
                            + b"\x04\x01" + _vec(rng.randbytes(256), 2))
        flight = tls_record(22, tls_server_hello(rng.randbytes(32), session_id, False)
                            + tls_certificate(names, rng.randbytes(300)) + ske + tls_handshake(14, b""))
        yield from conn.send(False, flight)
        cke = tls_handshake(16, _vec(b"\x04" + rng.randbytes(64), 1))
        yield from conn.send(True, tls_record(22, cke) + tls_record(20, b"\1")
                             + tls_record(22, rng.randbytes(40)))
        yield from conn.send(False, tls_record(20, b"\1") + tls_record(22, rng.randbytes(40)))
    for _ in range(rng.randrange(1, 5)):
        yield from conn.send(True, tls_record(23, rng.randbytes(rng.randrange(60, 700))))
        size = int(rng.paretovariate(1.1) * 3000)
        response = b"".join(tls_record(23, rng.randbytes(min(16384, size - off) + 24))
                            for off in range(0, min(size, 60000), 16384))
        yield from conn.send(False, response)
    if rng.random() < 0.5:
        yield from conn.send(True, tls_record(21, rng.randbytes(26)))
    yield from conn.close()


def _http_session(rng: random.Random, net: _Net, v6: bool, vid):
    client, cmac = net.client(v6)
    host = rng.choice(_HOSTS)
    conn = _TcpConn(rng, client, net.server(v6), cmac, rng.randrange(32768, 61000), 80, v6, vid)
    yield from conn.handshake()
    for _ in range(rng.randrange(1, 3)):
        yield from conn.send(True, http_request(host, f"/page/{rng.randrange(1000)}.html"))
        body = (_WORDS * (rng.randrange(200, 12000) // len(_WORDS) + 1))[:rng.randrange(200, 12000)]
        yield from conn.send(False, http_response(body))
    yield from conn.close()


def _udp_frame(link: _Link, up: bool, src, dst, sport, dport, payload, v6, ident, ttl=64):
    seg = udp(src, dst, sport, dport, payload)
    ip = ipv6(src, dst, 17, seg, hop_limit=ttl) if v6 else ipv4(src, dst, 17, seg, ttl=ttl, ident=ident,
                                                                  df=False)
    frame = (link.up if up else link.down) + ip
    return frame if up else _pad(frame)


def _dns_session(rng: random.Random, net: _Net, v6: bool, vid):
    client, cmac = net.client(v6)
    link = _Link(cmac, v6, vid)
    server = net.dns6 if v6 else net.dns4
    host = rng.choice(_HOSTS)
    qtype = 28 if rng.random() < 0.4 else 1
    qid, sport = rng.getrandbits(16), rng.randrange(32768, 61000)
    addrs = [net.server(qtype == 28) for _ in range(rng.randrange(1, 4))]
    yield _udp_frame(link, True, client, server, sport, 53, dns_query(qid, host, qtype), v6,
                     rng.getrandbits(16))
    yield _udp_frame(link, False, server, client, 53, sport, dns_response(qid, host, addrs, qtype), v6,
                     rng.getrandbits(16))


def _ping_session(rng: random.Random, net: _Net, v6: bool, vid):
    client, cmac = net.client(v6)
    link = _Link(cmac, v6, vid)
    server = net.server(v6)
    ident = rng.getrandbits(16)
    ttl = rng.choice((52, 57, 118))
    for seq in range(1, rng.randrange(2, 6)):
        payload = rng.randbytes(8) + bytes(range(0x10, 0x38))
        for reply in (False, True):
            src, dst = (server, client) if reply else (client, server)
            if v6:
                ip = ipv6(src, dst, 58, icmp6_echo(src, dst, ident, seq, payload, reply),
                          hop_limit=ttl if reply else 64)
            else:
                ip = ipv4(src, dst, 1, icmp_echo(ident, seq, payload, reply), ttl=ttl if reply else 64,
                          ident=rng.getrandbits(16))
            frame = (link.down if reply else link.up) + ip
            yield _pad(frame) if reply else frame


def _unreachable_session(rng: random.Random, net: _Net, _v6: bool, vid):
    """A UDP datagram to a closed port and the ICMP port-unreachable quoting it (IPv4)."""
    client, cmac = net.client(False)
    link = _Link(cmac, False, vid)
    server = net.server(False)
    sport, dport = rng.randrange(32768, 61000), rng.randrange(33434, 33535)    # traceroute probes
    seg = udp(client, server, sport, dport, rng.randbytes(rng.randrange(16, 64)))
    datagram = ipv4(client, server, 17, seg, ident=rng.getrandbits(16), df=False)
    yield link.up + datagram
    error = icmp_error(3, 3, datagram)
    yield _pad(link.down + ipv4(server, client, 1, error, ttl=rng.choice((52, 57, 240)),
                                ident=rng.getrandbits(16), df=False))


def _public_address(rng: random.Random, v6: bool) -> bytes:
    """A random unicast address of the public Internet: IPv4 outside 0/8, 10/8, 127/8 and 224/3; IPv6 in
    2000::/3."""
    if v6:
        return bytes((0x20 | rng.randrange(32),)) + rng.randbytes(15)
    first = rng.randrange(1, 224)
    while first in (10, 127):
        first = rng.randrange(1, 224)
    return bytes((first,)) + rng.randbytes(3)


def _probe_session(rng: random.Random, net: _Net, v6: bool, vid):
    """Internet background noise at a client (scanners, backscatter): a TCP SYN from a public address met
    only once, answered by a RST half the time."""
    client, cmac = net.client(v6)
    link = _Link(cmac, v6, vid)
    source = _public_address(rng, v6)
    sport, dport = rng.randrange(1024, 65536), rng.choice((22, 23, 80, 443, 445, 3389, 8080))
    seq = rng.getrandbits(32)
    ttl = rng.choice((44, 50, 113, 241))
    probe = tcp(source, client, sport, dport, seq, 0, SYN, window=1024)
    ip = ipv6(source, client, 6, probe, hop_limit=ttl) if v6 else ipv4(source, client, 6, probe, ttl=ttl,
                                                                         ident=rng.getrandbits(16), df=False)
    yield _pad(link.down + ip)
    if rng.random() < 0.5:
        reset = tcp(client, source, dport, sport, 0, (seq + 1) & 0xFFFFFFFF, RST | ACK, window=0)
        ip = ipv6(client, source, 6, reset) if v6 else ipv4(client, source, 6, reset)
        yield link.up + ip


_SESSIONS = ((_tls_session, 0.30), (_http_session, 0.08), (_dns_session, 0.45), (_ping_session, 0.10),
             (_unreachable_session, 0.07))


def iter_frames(packets: int, seed: int = 0, dup_ratio: float = 0.05, ipv6_ratio: float = 0.25,
                vlan_ratio: float = 0.1, start_ns: int = 1_709_294_400 * 10 ** 9, concurrency: int = 6,
                probe_ratio: float = 0.0, wild_ratio: float = 0.0):
    """Yield ``(time_ns, frame, is_duplicate)`` for ``packets`` Ethernet frames (deterministic per seed).

    ``wild_ratio``: share of sessions that are real-world oddities (``wildgen.wild_session``: DNS from tunnel
    ports, sessions inside every encapsulation, fragments, flow export, frames no walker reads); 0 (the
    default) leaves the stream as it was.

    ``probe_ratio``: share of sessions that are Internet background noise (``_probe_session``: one or two
    frames, a public source address met once). 0.99 makes about 85 % of the frames probes: some 110,000
    distinct addresses in 200,000 frames, 550,000 in a million; 0 (the default) leaves the stream as it was."""
    rng = random.Random(seed)
    net = _Net(rng)
    kinds = [k for k, _ in _SESSIONS]
    weights = [w for _, w in _SESSIONS]

    def new_session():
        v6 = rng.random() < ipv6_ratio
        vid = rng.choice((10, 20, 110)) if rng.random() < vlan_ratio else None
        if probe_ratio and rng.random() < probe_ratio:
            return _probe_session(rng, net, v6, vid)
        if wild_ratio and rng.random() < wild_ratio:
            from .wildgen import wild_session       # wildgen builds on this module
            return wild_session(rng, net, v6, vid)
        return rng.choices(kinds, weights)[0](rng, net, v6, vid)

    active = [new_session() for _ in range(concurrency)]
    now = start_ns
    produced = 0
    random_ = rng.random
    while produced < packets:
        i = int(random_() * concurrency)
        frame = next(active[i], None)
        if frame is None:
            active[i] = new_session()
            continue
        now += 1000 + int(random_() * random_() * 4_000_000)
        yield now, frame, False
        produced += 1
        if produced < packets and random_() < dup_ratio:
            now += 1000 + int(random_() * 50_000)
            yield now, frame, True
            produced += 1


def generate(path, packets: int = 1000, seed: int = 0, fmt: str = "pcap", dup_ratio: float = 0.05,
             endian: str = "<", nanos: bool = False, ipv6_ratio: float = 0.25, vlan_ratio: float = 0.1,
             metadata: bool = False, probe_ratio: float = 0.0, wild_ratio: float = 0.0) -> dict:
    """Write a realistic capture of ``packets`` Ethernet frames to ``path``; return a summary dict.

    ``fmt`` "pcap" or "pcapng"; ``endian`` "<" or ">"; ``nanos`` nanosecond timestamps. For pcapng,
    ``metadata`` adds what capture tools write: SHB/IDB options (application, interface name), a name
    resolution block and a final interface statistics block; without it (the default) the file holds
    only an SHB, one IDB and EPBs, so that the metadata scrub leaves it unchanged. ``probe_ratio`` and
    ``wild_ratio``: see ``iter_frames`` (many distinct addresses; real-world oddities).
    """
    if fmt not in ("pcap", "pcapng"):
        raise ValueError(f"unknown format {fmt!r}")
    unit_div = 1 if nanos else 1000
    stats = {"packets": 0, "duplicates": 0, "bytes": 0, "format": fmt}
    frames = iter_frames(packets, seed, dup_ratio, ipv6_ratio, vlan_ratio, probe_ratio=probe_ratio,
                         wild_ratio=wild_ratio)
    with open(path, "wb") as fh:
        if fmt == "pcap":
            writer = CaptureWriter(fh, "pcap", make_pcap_header(1, 262144, nanos, endian))
            batch = []
            first = last = 0
        else:
            writer = CaptureWriter(fh, "pcapng")
            shb_opts = build_options([(4, b"pktmask-gui samplegen")], endian) if metadata else b""
            idb_opts = [(2, b"eth0")] if metadata else []
            if nanos:
                idb_opts.append((9, b"\x09"))
            batch = [(make_shb_body(endian, shb_opts), META, 0, 0, 0, SHB),
                     (make_idb_body(1, 262144, endian, build_options(idb_opts, endian)), META, 0, 0, 0, IDB)]
            if metadata:
                batch.append((_nrb_body(endian), META, 0, 0, 0, NRB))
            first = last = None
        for now, frame, dup in frames:
            ts = now // unit_div
            if first is None:
                first = ts
            last = ts
            block = (EPB, b"") if fmt == "pcapng" else None
            batch.append((frame, 1, ts, len(frame), 0, block))
            stats["duplicates"] += dup
            stats["packets"] += 1
            if len(batch) >= 2048:
                writer.write_batch(batch)
                batch = []
        if fmt == "pcapng" and metadata:
            batch.append((_isb_body(endian, first or 0, last or 0, stats["packets"]), META, 0, 0, 0, ISB))
        writer.write_batch(batch)
        writer.close()
        stats["bytes"] = writer.bytes_written
    return stats


def _nrb_body(endian: str) -> bytes:
    """Name resolution records for two well-known documentation names (as Wireshark writes them)."""
    rec = struct.Struct(endian + "HH")
    parts = []
    for rtype, addr, name in ((1, bytes((93, 184, 216, 34)), b"www.example.com"),
                              (2, bytes.fromhex("26064700000000000000000000000001"), b"cdn.example.org")):
        value = addr + name + b"\0"
        parts += (rec.pack(rtype, len(value)), value, b"\0" * (-len(value) & 3))
    parts.append(rec.pack(0, 0))
    return b"".join(parts)


def _isb_body(endian: str, first: int, last: int, received: int) -> bytes:
    ts = struct.Struct(endian + "II")
    opts = build_options([(2, ts.pack(first >> 32, first & 0xFFFFFFFF)),
                          (3, ts.pack(last >> 32, last & 0xFFFFFFFF)),
                          (4, struct.pack(endian + "Q", received))], endian)
    return struct.pack(endian + "III", 0, last >> 32, last & 0xFFFFFFFF) + opts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pktmask_gui.samplegen",
                                 description="Write a realistic, seeded sample capture.")
    ap.add_argument("out", type=Path, help="output file (.pcap or .pcapng)")
    ap.add_argument("--packets", type=int, default=1000, help="number of frames (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--pcapng", action="store_true", help="write pcapng (default: pcap, or by extension)")
    ap.add_argument("--dup-ratio", type=float, default=0.05, help="share of exact duplicate frames")
    ap.add_argument("--big-endian", action="store_true", help="big-endian file")
    ap.add_argument("--nanos", action="store_true", help="nanosecond timestamps")
    ap.add_argument("--metadata", action="store_true",
                    help="pcapng: add capture-tool metadata (SHB/IDB options, name resolution, statistics)")
    ap.add_argument("--probe-ratio", type=float, default=0.0,
                    help="share of sessions that are Internet background noise, each from a new public "
                         "address (0.99: some 110,000 distinct addresses in 200,000 frames)")
    ap.add_argument("--wild-ratio", type=float, default=0.0,
                    help="share of sessions that are real-world oddities: DNS from tunnel ports, tunnels, "
                         "fragments, flow export, frames no walker reads (0.2: about one frame in ten)")
    args = ap.parse_args(argv)
    if args.packets < 0 or not 0 <= args.dup_ratio < 1 or not 0 <= args.probe_ratio <= 1 \
            or not 0 <= args.wild_ratio <= 1:
        ap.error("--packets must be >= 0, --dup-ratio within [0, 1), --probe-ratio and --wild-ratio within [0, 1]")
    fmt = "pcapng" if args.pcapng or args.out.suffix.lower() == ".pcapng" else "pcap"
    stats = generate(args.out, packets=args.packets, seed=args.seed, fmt=fmt, dup_ratio=args.dup_ratio,
                     endian=">" if args.big_endian else "<", nanos=args.nanos, metadata=args.metadata,
                     probe_ratio=args.probe_ratio, wild_ratio=args.wild_ratio)
    print(f"{args.out}: {stats['packets']} packets ({stats['duplicates']} duplicates), "
          f"{stats['bytes']} bytes, {fmt}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
