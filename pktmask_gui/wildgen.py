"""Real-world shapes for tests and benchmarks: what captures from the field hold beside the usual traffic.

Builders (each returns whole, valid frames with correct checksums): ``encapsulate(frame, how)`` for every
encapsulation in ``ENCAPSULATIONS`` (QinQ + PPPoE, 802.1BR E-Tag, VN-Tag, Cisco FabricPath, VXLAN, Geneve,
GTP-U, GRE, MPLS, IP-in-IP, EtherIP), ``fragment(frame, size)`` (IPv4 fragments), sFlow v5
(``sflow_datagram``, ``sflow_flow_sample``, ``sflow_counter_sample``, ``sflow_record``, ``sflow_raw_header``,
``sflow_ipv4_record``) and NetFlow (``netflow_v5``, ``netflow_v9``).

``wild_session(rng, net, v6, vid)`` is one session of the "wild" mix that ``samplegen.iter_frames`` draws
with ``wild_ratio``: DNS from source ports that name tunnels (resolvers pick them at random), sessions inside
an encapsulation, fragmented datagrams (plain and tunnelled), flow export, and frames no walker can read
(an unknown EtherType, PPP of an unknown protocol) — what made whole captures fail before the engine
failed closed per frame.
"""
from __future__ import annotations

import random
import struct
import zlib

from .samplegen import (ETH_IPV4, ETH_IPV6, ETH_VLAN, _U16, _HOSTS, _addr, _dns_session, _http_session, _Link,
                        _mac, _pad, _tls_session, _udp_frame, checksum, dns_query, dns_response, eth, ipv4, ipv6,
                        udp, vlan)


ENCAPSULATIONS = ("qinq-pppoe", "etag", "vntag", "fabricpath", "vxlan", "geneve", "gtpu", "gre", "mpls",
                  "ipip", "etherip")


def encapsulate(frame: bytes, how: str, seed: int = 0) -> bytes:
    """The Ethernet ``frame`` carried another way (``how`` in ENCAPSULATIONS): inside QinQ + PPPoE, behind
    an 802.1BR E-Tag, a VN-Tag or a Cisco FabricPath header, or tunnelled (VXLAN, Geneve, GTP-U, GRE, MPLS,
    IP-in-IP, EtherIP) between two outer hosts; tunnels over UDP take a flow-hash source port."""
    rng = random.Random(seed)
    dst, src, etype, payload = frame[:6], frame[6:12], _U16.unpack_from(frame, 12)[0], frame[14:]
    if how == "qinq-pppoe":
        proto = {ETH_IPV4: 0x0021, ETH_IPV6: 0x0057}[etype]
        ppp = struct.pack("!BBHH", 0x11, 0, rng.randrange(1, 0xFFFF), len(payload) + 2) + _U16.pack(proto)
        return eth(dst, src, 0x88A8, vlan(100, ETH_VLAN, vlan(200, 0x8864, ppp + payload)))
    if how == "etag":
        return dst + src + struct.pack("!HHHH", 0x893F, 0x2005, 0x0012, 0) + _U16.pack(etype) + payload
    if how == "vntag":
        return dst + src + struct.pack("!HI", 0x8926, 0x80120034) + _U16.pack(etype) + payload
    if how == "fabricpath":                     # the classical frame travels whole, with its FCS
        return (_mac("02:fa:00:00:00:02") + _mac("02:fa:00:00:00:01") + struct.pack("!HH", 0x8903, 0x003F) + frame
                + struct.pack("<I", zlib.crc32(frame)))
    v6 = etype == ETH_IPV6
    outer_src, outer_dst = ("2001:db8:ffff::1", "2001:db8:ffff::2") if v6 else ("172.31.255.1", "172.31.255.2")
    hashed = rng.randrange(49152, 65536)
    if how == "vxlan":
        inner = udp(outer_src, outer_dst, hashed, 4789, struct.pack("!II", 0x08000000, 0x001234 << 8) + frame)
        proto = 17
    elif how == "geneve":
        inner = udp(outer_src, outer_dst, hashed, 6081, struct.pack("!HHI", 0, 0x6558, 0x00ABCD << 8) + frame)
        proto = 17
    elif how == "gtpu":
        gtp = struct.pack("!BBHI", 0x30, 0xFF, len(payload), rng.randrange(1, 1 << 32))
        inner = udp(outer_src, outer_dst, 2152, 2152, gtp + payload)
        proto = 17
    elif how == "gre":
        inner, proto = struct.pack("!HH", 0, etype) + payload, 47
    elif how == "mpls":
        return eth(dst, src, 0x8847, struct.pack("!I", (1000 << 12) | 0x100 | 64) + payload)
    elif how == "ipip":
        inner, proto = payload, 41 if v6 else 4
    elif how == "etherip":
        inner, proto = b"\x30\x00" + frame, 97
    else:
        raise ValueError(f"unknown encapsulation {how!r}")
    if v6:
        return eth(dst, src, ETH_IPV6, ipv6(outer_src, outer_dst, proto, inner))
    return eth(dst, src, ETH_IPV4, ipv4(outer_src, outer_dst, proto, inner, ident=rng.randrange(65536)))


def fragment(frame: bytes, size: int) -> list:
    """An Ethernet/IPv4 ``frame`` (no options) cut into IP fragments of ``size`` data bytes (a multiple of
    8), in order; each keeps the original's identification."""
    head, ip = frame[:14], frame[14:]
    hdr, data = bytearray(ip[:20]), ip[20:_U16.unpack_from(ip, 2)[0]]
    out = []
    for at in range(0, len(data), size):
        piece = data[at:at + size]
        h = bytearray(hdr)
        more = at + size < len(data)
        struct.pack_into("!H", h, 2, 20 + len(piece))
        struct.pack_into("!H", h, 6, (0x2000 if more else 0) | (at // 8))
        h[10:12] = b"\0\0"
        h[10:12] = _U16.pack(checksum(bytes(h)))
        out.append(head + bytes(h) + piece)
    return out


def sflow_datagram(agent, samples, seq: int = 1) -> bytes:
    """An sFlow v5 datagram from ``agent`` (IPv4 or IPv6) holding ``samples`` (from sflow_flow_sample /
    sflow_counter_sample)."""
    a = _addr(agent)
    head = struct.pack("!II", 5, 1 if len(a) == 4 else 2) + a + struct.pack("!IIII", 0, seq, 1000 * seq, len(samples))
    return head + b"".join(samples)


def sflow_flow_sample(records, seq: int = 1) -> bytes:
    """A flow sample (format 1) of ``records`` (from sflow_record and its helpers)."""
    body = struct.pack("!IIIIIIII", seq, 3, 256, 256 * seq, 0, 3, 4, len(records)) + b"".join(records)
    return struct.pack("!II", 1, len(body)) + body


def sflow_counter_sample(records, seq: int = 1) -> bytes:
    body = struct.pack("!III", seq, 3, len(records)) + b"".join(records)
    return struct.pack("!II", 2, len(body)) + body


def sflow_record(fmt: int, body: bytes) -> bytes:
    """One sFlow record (flow or counter) of format ``fmt``, its body padded to 4 bytes."""
    body += bytes(-len(body) % 4)
    return struct.pack("!II", fmt, len(body)) + body


def sflow_raw_header(frame: bytes, keep: int = 128) -> bytes:
    """Flow record 1: the first ``keep`` bytes of an Ethernet ``frame``, as an sFlow agent samples them."""
    h = frame[:keep]
    return sflow_record(1, struct.pack("!IIII", 1, len(frame) + 4, 4, len(h)) + h)


def sflow_ipv4_record(src, dst, sport: int, dport: int, proto: int = 6) -> bytes:
    return sflow_record(3, struct.pack("!II4s4sIIII", 40, proto, _addr(src), _addr(dst), sport, dport, 0x18, 0))


def netflow_v5(records) -> bytes:
    """A NetFlow v5 export of ``records``: (source, destination, next hop) IPv4 addresses."""
    head = struct.pack("!HHIIIIBBH", 5, len(records), 100000, 1_709_294_400, 0, 1, 0, 0, 0)
    body = b"".join(_addr(s) + _addr(d) + _addr(h) + struct.pack("!HHIIIIHHBBBBHHBBH", 3, 4, 10, 1500, 0, 1000,
                                                                    40000, 443, 0, 0x18, 6, 0, 0, 0, 24, 24, 0)
                    for s, d, h in records)
    return head + body


def netflow_v9(template_id: int, data: bytes, with_template: bool = True) -> bytes:
    """A NetFlow v9 export: a template (source and destination IPv4, ports) and one data flowset."""
    sets = b""
    if with_template:
        tmpl = struct.pack("!HH", template_id, 4) + struct.pack("!HHHHHHHH", 8, 4, 12, 4, 7, 2, 11, 2)
        sets += struct.pack("!HH", 0, 4 + len(tmpl)) + tmpl
    sets += struct.pack("!HH", template_id, 4 + len(data)) + data
    return struct.pack("!HHIII", 9, 2 if with_template else 1, 100000, 1_709_294_400, 1) + struct.pack("!I", 0) + sets


# ---- the wild mix ----------------------------------------------------------------------------------------
# source ports a resolver or a NAT may pick that also name a protocol somewhere (tunnels, flow export)
_NAMED_PORTS = (1701, 2152, 3544, 4341, 4739, 4789, 4790, 6081, 6343, 6635, 8472, 2055, 9995)


def _dns_any_port(rng: random.Random, net, v6: bool, vid):
    """A DNS query and its answer from a source port drawn as resolvers and NATs draw them, a third of them
    ports that name a tunnel or flow export elsewhere; IDs and names at random."""
    client, cmac = net.client(v6)
    link = _Link(cmac, v6, vid)
    server = net.dns6 if v6 else net.dns4
    sport = rng.choice(_NAMED_PORTS) if rng.random() < 0.35 else rng.randrange(1024, 65536)
    qid = rng.getrandbits(16)
    host = "%s.%s" % ("".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randrange(1, 20))),
                      rng.choice(_HOSTS))
    qtype = 28 if v6 else 1
    yield _udp_frame(link, True, client, server, sport, 53, dns_query(qid, host, qtype), v6, rng.getrandbits(16))
    answers = [net.server(v6) for _ in range(rng.randrange(1, 4))]
    yield _udp_frame(link, False, server, client, 53, sport, dns_response(qid, host, answers, qtype), v6,
                     rng.getrandbits(16))


def _encapsulated(rng: random.Random, net, v6: bool, _vid):
    """A usual session (TLS, HTTP or DNS) whose every frame is carried the same other way."""
    how = rng.choice(ENCAPSULATIONS)
    seed = rng.getrandbits(32)
    inner = rng.choice((_tls_session, _http_session, _dns_session))(rng, net, v6, None)
    for frame in inner:
        yield encapsulate(frame, how, seed)


def _fragmented(rng: random.Random, net, _v6: bool, _vid):
    """A UDP datagram larger than the path's MTU, as IPv4 fragments in order (now and then tunnelled in
    GTP-U first, so that the first fragment carries the tunnel's inner headers)."""
    client, cmac = net.client(False)
    datagram = eth(_mac("00:50:56:9a:3c:01"), cmac, ETH_IPV4, ipv4(
        net.server(False), client, 17, udp(net.server(False), client, 53, rng.randrange(1024, 65536),
                                           rng.randbytes(rng.randrange(1500, 4000))),
        ident=rng.getrandbits(16), df=False))
    if rng.random() < 0.3:
        datagram = encapsulate(datagram, "gtpu", rng.getrandbits(32))
    yield from (_pad(f) for f in fragment(datagram, 1480))


def _flow_export(rng: random.Random, net, _v6: bool, vid):
    """An exporter's datagram: sFlow sampling a frame of a usual session, or NetFlow v5 / v9 records."""
    exporter, cmac = net.client(False)
    collector = net.dns4
    link = _Link(cmac, False, vid)
    kind = rng.random()
    if kind < 0.5:
        sampled = next(_tls_session(rng, net, rng.random() < 0.3, None))
        samples = [sflow_flow_sample([sflow_raw_header(sampled),
                                      sflow_ipv4_record(net.server(False), net.client(False)[0], 443, 50000)],
                                     rng.randrange(1, 1 << 20))]
        payload, port = sflow_datagram(exporter, samples, rng.randrange(1, 1 << 20)), 6343
    elif kind < 0.8:
        payload = netflow_v5([(net.client(False)[0], net.server(False), net.dns4) for _ in range(rng.randrange(1, 8))])
        port = 2055
    else:
        payload, port = netflow_v9(256 + rng.randrange(64), net.client(False)[0] + net.server(False) + bytes(4)), 2055
    yield _udp_frame(link, True, exporter, collector, rng.randrange(1024, 65536), port, payload, False,
                     rng.getrandbits(16))


def _unreadable(rng: random.Random, net, _v6: bool, _vid):
    """A frame no walker can read past its first header: an unknown EtherType, or PPPoE carrying PPP of an
    unknown protocol; its bytes after that header must be zeroed, the capture go on."""
    _client, cmac = net.client(False)
    body = rng.randbytes(rng.randrange(40, 300))
    if rng.random() < 0.5:
        yield _pad(eth(_mac("00:50:56:9a:3c:01"), cmac, 0x7000 | rng.randrange(0x1000), body))
    else:
        # 0x0A41: no protocol PPP knows (a first byte that is odd would be a compressed one-byte protocol)
        ppp = struct.pack("!BBHH", 0x11, 0, rng.randrange(1, 0xFFFF), len(body) + 2) + b"\x0a\x41" + body
        yield eth(_mac("00:50:56:9a:3c:01"), cmac, 0x8864, ppp)


WILD_SESSIONS = ((_dns_any_port, 0.40), (_encapsulated, 0.30), (_fragmented, 0.10), (_flow_export, 0.10),
                 (_unreadable, 0.10))


def wild_session(rng: random.Random, net, v6: bool, vid):
    """One session of the wild mix (see the module docstring), drawn by WILD_SESSIONS' weights."""
    kinds, weights = zip(*WILD_SESSIONS)
    return rng.choices(kinds, weights)[0](rng, net, v6, vid)
