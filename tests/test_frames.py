"""The frame walker: crafted frames for every link type and encapsulation, checked offset by offset.

Frames are built with the project's generator (pktmask_gui.samplegen); the checksums the walk lists are
recomputed here from scratch (``assert_checksums_valid``, with a checksum function of its own), so a wrong
checksum from a builder fails a test instead of passing it. Other test modules use this module's addresses,
oracle and frame cases (``import test_frames as tf``).
"""
from __future__ import annotations

import ipaddress
import random
import struct

import pytest
from hypothesis import given, settings, strategies as st

from pktmask_gui import frames
from pktmask_gui.frames import (F_FRAGMENT, F_LATER_FRAGMENT, F_MORE_FRAGMENTS, F_QUOTED, F_TRUNCATED,
                                F_TUNNELLED, L4F_ECHO, L4F_FRAGMENT, L4F_ICMP_ERROR, L4F_NO_HEADER, NON_IP, OK,
                                UNINSPECTABLE, Uninspectable, walk)
from pktmask_gui.samplegen import (arp, checksum, dns_response, eth, gre, icmp, icmp6, ip_frame, ipv4, ipv6,
                                   ipv6_ext, ipv6_fragment, mpls, pseudo_checksummed, tcp, udp, vlan)
from pktmask_gui.stages import StageError


# ---- addresses and the checksum oracle (independent of the code under test and of the builders) ---------
def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


MAC1, MAC2 = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")   # samplegen's default source, destination


def dns_answer(addrs, ecs=None) -> bytes:
    """A DNS response for example.com answering with ``addrs`` (A or AAAA records), and an EDNS client
    subnet when ``ecs`` = (network, prefix length) is given."""
    return dns_response(0x1234, "example.com", addrs, ecs=ecs)


def addr_offsets(data: bytes, *texts) -> list:
    """Offsets of each address's first occurrence (test addresses are chosen unique in a frame)."""
    return sorted(data.find(ip(t)) for t in texts)


def walked_offsets(w) -> list:
    return sorted(a[0] for a in w[3])


def assert_checksums_valid(data: bytes, w) -> None:
    """Recompute every checksum the walk lists, from scratch, including pseudo-headers."""
    for cs_off, start, end, kind, ipi in w[5]:
        stored = (data[cs_off] << 8) | data[cs_off + 1]
        if kind == "udp" and stored == 0:
            continue
        region = bytearray(data[start:end])
        region[cs_off - start:cs_off - start + 2] = b"\0\0"
        pre = b""
        if ipi is not None:
            hdr = w[2][ipi]
            alen = 4 if hdr[1] == 4 else 16
            s, d = data[hdr[6]:hdr[6] + alen], data[hdr[11]:hdr[11] + alen]
            proto = {"tcp": 6, "udp": 17, "icmpv6": 58}.get(kind, hdr[3])
            pre = s + d + (struct.pack("!BBH", 0, proto, end - start) if alen == 4
                           else struct.pack("!IxxxB", end - start, proto))
        want = csum(pre + bytes(region))
        if kind == "udp" and want == 0:
            want = 0xFFFF
        assert stored == want, f"{kind} checksum at {cs_off}: stored {stored:#06x}, computed {want:#06x}"


A, B, C, D = "10.1.2.3", "10.1.2.4", "192.0.2.77", "198.51.100.9"
A6, B6 = "2001:db8::1", "2001:db8:1::2"


# ---- basics ------------------------------------------------------------------------------------------
def test_ethernet_ipv4_tcp_layout():
    payload = b"hello world"
    f = ip_frame(ipv4(A, B, 6, tcp(A, B, 1234, 80, payload=payload), ident=1, df=False))
    w = walk(f, 1)
    status, label, ips, addrs, l4, csums, macs, blind, quoted = w
    assert blind == quoted == ()
    assert (status, label) == (OK, "IPv4")
    assert ips == [(14, 4, 20, 6, 34, len(f), 26, 30, 0, 1, 0, 30)]
    assert addrs == [(26, 4, 32), (30, 4, 32)]
    assert l4 == (6, 34, 54, len(f), 0, 0)
    assert f[l4[2]:l4[3]] == payload
    assert csums == [(50, 34, len(f), "tcp", 0), (24, 14, 34, "ipv4", None)]
    assert macs == [0, 6]
    assert_checksums_valid(f, w)


def test_ipv4_options_and_padding_beyond_total_length():
    rr = bytes([7, 11, 4]) + ip(C) + ip(D)        # record route with two addresses
    opts = rr + b"\x00"
    f = ip_frame(ipv4(A, B, 17, udp(A, B, 5353, 53, b"x"), options=opts)) + b"\0" * 10   # Ethernet padding
    w = walk(f, 1)
    assert w[2][0][2] == 32 and w[2][0][5] == len(f) - 10
    assert walked_offsets(w) == addr_offsets(f, A, B, C, D)
    assert w[4][3] == len(f) - 10
    assert_checksums_valid(f, w)


def test_lsrr_final_destination_is_pseudo_header_destination():
    lsrr = bytes([131, 11, 4]) + ip(C) + ip(D) + b"\x00"
    f = ipv4(A, B, 6, tcp(A, D, 1234, 80, payload=b"x"), options=lsrr)
    w = walk(f, 101)
    assert w[2][0][frames.IP_PDST] == f.find(ip(D))
    assert_checksums_valid(f, w)


def test_vlan_any_depth_and_qinq():
    inner = ipv4(A, B, 17, udp(A, B, 5353, 53, b"q"))
    f = MAC2 + MAC1 + struct.pack("!H", 0x88A8) + vlan(10, 0x8100, vlan(20, 0x9100, vlan(30, 0x0800, inner)))
    w = walk(f, 1)
    assert w[0] == OK and len(w[2]) == 1
    assert walked_offsets(w) == addr_offsets(f, A, B)
    assert w[2][0][0] == f.find(inner)


def test_ipv6_extension_headers_and_routing_pseudo_destination():
    hbh = ipv6_ext(43, b"\x01\x04\0\0\0\0")                              # next: routing
    rh = ipv6_ext(6, bytes([0, 1]) + b"\0" * 4 + ip("2001:db8:9::9"))   # type 0, 1 address, segments left 1
    seg = tcp(A6, "2001:db8:9::9", 1234, 80, payload=b"abc")
    f = ip_frame(ipv6(A6, B6, 0, hbh + rh + seg))
    w = walk(f, 1)
    hdr = w[2][0]
    assert hdr[frames.IP_HLEN] == 40 + 8 + 24 and hdr[frames.IP_PROTO] == 6
    assert hdr[frames.IP_PDST] == f.find(ip("2001:db8:9::9"))
    assert walked_offsets(w) == addr_offsets(f, A6, B6, "2001:db8:9::9")
    assert_checksums_valid(f, w)


def test_ipv6_fragments_first_and_later():
    body = udp(A6, B6, 5353, 53, b"x" * 40)
    frag1 = ipv6_fragment(17, 0, 0xABCD, more=True)
    f1 = ip_frame(ipv6(A6, B6, 44, frag1 + body[:24]))
    w1 = walk(f1, 1)
    h = w1[2][0]
    assert h[frames.IP_FLAGS] & (F_FRAGMENT | F_MORE_FRAGMENTS) == F_FRAGMENT | F_MORE_FRAGMENTS
    assert not h[frames.IP_FLAGS] & F_LATER_FRAGMENT and h[frames.IP_FRAG_ID] == 0xABCD
    assert w1[4][0] == 17 and w1[4][5] & L4F_FRAGMENT
    assert any(c[3] == "udp" for c in w1[5])              # the L4 checksum lives in the first fragment
    frag2 = ipv6_fragment(17, 24, 0xABCD)                               # the last
    f2 = ip_frame(ipv6(A6, B6, 44, frag2 + body[24:]))
    w2 = walk(f2, 1)
    assert w2[2][0][frames.IP_FLAGS] & F_LATER_FRAGMENT and w2[2][0][frames.IP_FRAG_OFF] == 24
    assert w2[4][1] == -1 and w2[4][5] & L4F_NO_HEADER
    assert not any(c[3] == "udp" for c in w2[5])


def test_ipv4_later_fragment_has_no_l4_header():
    f = ip_frame(ipv4(A, B, 17, b"y" * 16, frag=0x0003))                     # offset 24 bytes
    w = walk(f, 1)
    assert w[2][0][frames.IP_FLAGS] & F_LATER_FRAGMENT and w[2][0][frames.IP_FRAG_OFF] == 24
    assert w[4] == (17, -1, 34, len(f), 0, L4F_FRAGMENT | L4F_NO_HEADER)
    assert [c[3] for c in w[5]] == ["ipv4"]


def test_icmp_error_quotes_ip_and_udp_headers():
    quoted = ipv4(B, C, 17, udp(B, C, 5353, 53, b"dnsq" * 4))
    f = ip_frame(ipv4(A, B, 1, icmp(3, 3, b"\0\0\0\0", quoted)))
    w = walk(f, 1)
    assert len(w[2]) == 2 and w[2][1][frames.IP_FLAGS] & F_QUOTED
    assert w[4][0] == 1 and w[4][5] & L4F_ICMP_ERROR
    kinds = [c[3] for c in w[5]]
    assert kinds == ["udp", "ipv4", "icmp", "ipv4"]          # innermost first
    assert len(w[3]) == 4
    assert_checksums_valid(f, w)


def test_icmp_redirect_gateway_and_echo():
    f = ip_frame(ipv4(A, B, 1, icmp(5, 1, ip(D), ipv4(B, C, 6, tcp(B, C, 1234, 80)[:8]))))
    w = walk(f, 1)
    assert f.find(ip(D)) in walked_offsets(w)
    e = ip_frame(ipv4(A, B, 1, icmp(8, 0, b"\0\1\0\1", b"ping")))
    we = walk(e, 1)
    assert we[4][5] & L4F_ECHO and e[we[4][2]:we[4][3]] == b"ping"


def test_icmpv6_error_and_neighbour_discovery():
    inner = ipv6(B6, "2001:db8:2::3", 17, udp(B6, "2001:db8:2::3", 5353, 53, b"zz"))
    f = ip_frame(ipv6(A6, B6, 58, icmp6(A6, B6, 1, 4, b"\0\0\0\0" + inner)))
    w = walk(f, 1)
    assert len(w[2]) == 2 and w[2][1][frames.IP_FLAGS] & F_QUOTED
    assert_checksums_valid(f, w)
    target = "2001:db8::99"
    ns = icmp6(A6, "ff02::1:ff00:99", 135, 0, b"\0\0\0\0" + ip(target) + bytes([1, 1]) + MAC1)
    g = ip_frame(ipv6(A6, "ff02::1:ff00:99", 58, ns))
    wg = walk(g, 1)
    assert g.find(ip(target)) in walked_offsets(wg)
    assert g.rfind(MAC1) in wg[6]
    assert_checksums_valid(g, wg)


def test_arp_addresses_and_non_ip_protocols():
    f = eth(MAC2, MAC1, 0x0806, arp(A, B))
    w = walk(f, 1)
    assert w[:2] == (OK, "ARP") and walked_offsets(w) == addr_offsets(f, A, B)
    assert sorted(w[6]) == [0, 6, 22, 32]
    lldp = eth(MAC2, MAC1, 0x88CC, b"\x02\x07\x04" + MAC1 + b"\0\0")
    assert walk(lldp, 1)[:2] == (NON_IP, "LLDP")
    stp = MAC2 + MAC1 + struct.pack("!H", 38) + b"\x42\x42\x03" + b"\0" * 35
    assert walk(stp, 1)[:2] == (NON_IP, "STP")
    cdp = MAC2 + MAC1 + struct.pack("!H", 30) + b"\xaa\xaa\x03\x00\x00\x0c\x20\x00" + b"\0" * 22
    assert walk(cdp, 1)[:2] == (NON_IP, "CDP")


def test_uninspectable_reasons_name_the_problem():
    w = walk(b"\0" * 40, 147)
    assert w[0] == UNINSPECTABLE and w[1] == "link type 147 (USER0) is not supported"
    w = walk(eth(MAC2, MAC1, 0x1234, b"\0" * 30), 1)
    assert w[0] == UNINSPECTABLE and "EtherType 0x1234" in w[1]
    w = walk(ip_frame(ipv4(A, B, 47, gre(0x4321, b"\0" * 20))), 1)
    assert w[0] == UNINSPECTABLE and "0x4321" in w[1]
    w = walk(ip_frame(ipv4(A, B, 47, gre(0x0042, b"\0" * 20))), 1)            # not a length inside GRE
    assert w[0] == UNINSPECTABLE and "GRE protocol type 0x0042" in w[1]
    w = walk(ip_frame(ipv4(A, B, 47, b"\x00\x02\x08\x00" + _inner())), 1)      # GRE version 2
    assert w[0] == UNINSPECTABLE and "GRE version 2" in w[1]
    assert issubclass(Uninspectable, StageError)


def test_truncated_frames_end_quietly_and_list_partial_addresses():
    f = ip_frame(ipv4(A, B, 6, tcp(A, B, 1234, 80, payload=b"payload")))
    for cut in range(0, len(f)):
        w = walk(f[:cut], 1)
        assert w[0] == OK
        for off, _size, _ in w[3]:
            assert off < cut
        for c in w[5]:
            assert c[0] + 2 <= cut and c[2] <= cut
    w = walk(f[:28], 1)                                   # cut inside the source address
    assert w[3] == [(26, 4, 16)] and w[2][0][frames.IP_FLAGS] & F_TRUNCATED   # the 2 bytes present


# ---- link types ------------------------------------------------------------------------------------
def _linktype_cases():
    pkt4 = ipv4(A, B, 17, udp(A, B, 5353, 53, b"dns"))
    pkt6 = ipv6(A6, B6, 17, udp(A6, B6, 5353, 53, b"dns"))
    sll = struct.pack("!HHH", 0, 1, 6) + MAC1 + b"\0\0" + struct.pack("!H", 0x0800)
    sll2 = struct.pack("!HHIHBB", 0x86DD, 0, 3, 1, 0, 6) + MAC1 + b"\0\0"
    nflog = bytes([2, 0, 0, 0]) + struct.pack("<HH", 8, 1) + b"\x08\x00\x01\x00" + \
        struct.pack("<HH", 4 + len(pkt4), 9) + pkt4
    ipoib = b"\0" * 40 + struct.pack("!HH", 0x0800, 0)
    return [
        (1, ip_frame(pkt4), pkt4), (101, pkt4, pkt4), (101, pkt6, pkt6), (12, pkt4, pkt4), (14, pkt6, pkt6),
        (228, pkt4, pkt4), (229, pkt6, pkt6),
        (0, struct.pack("<I", 2) + pkt4, pkt4), (0, struct.pack("<I", 30) + pkt6, pkt6),
        (0, struct.pack(">I", 2) + pkt4, pkt4), (108, struct.pack(">I", 24) + pkt6, pkt6),
        (9, b"\xff\x03\x00\x21" + pkt4, pkt4), (9, b"\x00\x57" + pkt6, pkt6), (50, b"\xff\x03\x00\x21" + pkt4, pkt4),
        (204, b"\x01\xff\x03\x00\x21" + pkt4, pkt4), (104, b"\x0f\x00\x08\x00" + pkt4, pkt4),
        (113, sll + pkt4, pkt4), (276, sll2 + pkt6, pkt6), (239, nflog, pkt4), (242, ipoib + pkt4, pkt4),
    ]


@pytest.mark.parametrize("linktype,frame,inner", _linktype_cases())
def test_link_types(linktype, frame, inner):
    w = walk(frame, linktype)
    assert w[0] == OK, w[1]
    assert w[2][0][0] == frame.find(inner)
    assert w[4][0] == 17 and frame[w[4][2]:w[4][3]] == b"dns"
    assert_checksums_valid(frame, w)


# ---- encapsulations ----------------------------------------------------------------------------------
def _inner():
    return ipv4(C, D, 6, tcp(C, D, 1234, 80, payload=b"inner-payload"))


def _tunnel_cases():
    inner = _inner()
    inner_eth = eth(bytes.fromhex("02aa00000001"), bytes.fromhex("02aa00000002"), 0x0800, inner)
    pwcw = b"\0\0\0\0"
    geneve = struct.pack("!BBHI", 1, 0, 0x6558, 0x123400) + b"\x01\x02\x03\x04"   # one 4-byte option word
    gtp = struct.pack("!BBHI", 0x32, 0xFF, 4 + len(inner), 7) + b"\0\0\0\0" + inner  # S flag: 4 more bytes
    teredo6 = ipv6(A6, B6, 59, b"")
    cases = {
        "ipip": ip_frame(ipv4(A, B, 4, inner)),
        "6in4": ip_frame(ipv4(A, B, 41, ipv6(A6, B6, 6, tcp(A6, B6, 1234, 80, payload=b"inner-payload")))),
        "4in6": ip_frame(ipv6(A6, B6, 4, inner)),
        "gre-ip": ip_frame(ipv4(A, B, 47, gre(0x0800, inner))),
        "gre-csum-key-seq": ip_frame(ipv4(A, B, 47, gre(0x0800, inner, with_checksum=True, key=5, seq=9))),
        "gre-teb": ip_frame(ipv4(A, B, 47, gre(0x6558, inner_eth, key=1))),
        "erspan2": ip_frame(ipv4(A, B, 47, gre(0x88BE, b"\x10\x01\0\0\0\0\0\0" + inner_eth, seq=1))),
        "erspan3": ip_frame(ipv4(A, B, 47, gre(0x22EB, b"\x20\x01\0\0" + b"\0" * 8 + inner_eth, seq=1))),
        "gre-in-gre": ip_frame(ipv4(A, B, 47, gre(0x0800, ipv4("172.16.0.1", "172.16.0.2", 47, gre(0x0800, inner))))),
        "mpls": eth(MAC2, MAC1, 0x8847, mpls([100, 200], inner)),
        "mpls-pw-eth": eth(MAC2, MAC1, 0x8847, mpls([100], pwcw + inner_eth)),
        "pppoe": eth(MAC2, MAC1, 0x8864, b"\x11\x00\x00\x01" + struct.pack("!H", 2 + len(inner)) + b"\x00\x21" + inner),
        "vxlan": ip_frame(ipv4(A, B, 17, udp(A, B, 40000, 4789, b"\x08\0\0\0\0\0\x01\0" + inner_eth))),
        "geneve": ip_frame(ipv4(A, B, 17, udp(A, B, 40000, 6081, geneve + inner_eth))),
        "gtpu": ip_frame(ipv4(A, B, 17, udp(A, B, 2152, 2152, gtp))),
        "mpls-udp": ip_frame(ipv4(A, B, 17, udp(A, B, 40000, 6635, mpls([16], inner)))),
        "pim-register": ip_frame(ipv4(A, B, 103, b"\x21\x00" + struct.pack("!H", checksum(b"\x21\0\0\0\0\0\0\0")) +
                                 b"\0\0\0\0" + inner)),
        "mpls-in-ip": ip_frame(ipv4(A, B, 137, mpls([3], inner))),
        "l2tp": ip_frame(ipv4(A, B, 17, udp(A, B, 1701, 1701, b"\x00\x02\x00\x01\x00\x02\xff\x03\x00\x21" + inner))),
        "teredo-any-port": ip_frame(ipv4(A, B, 17, udp(A, B, 40000, 50000, teredo6))),
        "arista": eth(MAC2, MAC1, 0xD28B, b"\x00\x01\x00\x10" + b"\0" * 8 + b"\x08\x00" + inner),
        "nsh": eth(MAC2, MAC1, 0x894F, b"\x0f\xc6\x01\x01" + b"\0" * 20 + inner),     # MD type 1: 6 words, next IPv4
        "wccp": ip_frame(ipv4(A, B, 47, gre(0x883E, b"\0\0\0\0" + inner))),
        "vxlan-gpe": ip_frame(ipv4(A, B, 17, udp(A, B, 40000, 4790, b"\x0c\0\0\x01\0\0\x01\0" + inner))),
    }
    return list(cases.items())


@pytest.mark.parametrize("name,frame", _tunnel_cases())
def test_tunnels_list_inner_addresses_and_carrier_checksums(name, frame):
    w = walk(frame, 1)
    assert w[0] == OK, w[1]
    offs = walked_offsets(w)
    if name == "teredo-any-port":
        assert frame.find(ip(A6)) in offs and frame.find(ip(B6)) in offs
        return
    inner = (A6, B6) if name == "6in4" else (C, D)
    assert frame.find(ip(inner[0])) in offs and frame.find(ip(inner[1])) in offs, name
    if name not in ("mpls", "mpls-pw-eth", "pppoe", "arista", "nsh"):       # those have no outer IP header
        assert [h for h in w[2] if h[frames.IP_FLAGS] & F_TUNNELLED], name
    # the transport carrying the application data is the tunnelled TCP, never the carrier
    assert w[4][0] == 6 and frame[w[4][2]:w[4][3]] == b"inner-payload", name
    assert_checksums_valid(frame, w)
    # every checksum listed after the carrier's covers the inner packet (carrier UDP / GRE checksums)
    start = frame.find(_inner()) if frame.find(_inner()) >= 0 else w[4][1]
    carriers = [c for c in w[5] if c[3] in ("udp", "gre")]
    for c in carriers:
        assert c[1] < start < c[2]


def test_udp_carrier_checksum_listed_for_vxlan():
    inner_eth = ip_frame(_inner())
    f = ip_frame(ipv4(A, B, 17, udp(A, B, 40000, 4789, b"\x08\0\0\0\0\0\x01\0" + inner_eth)))
    w = walk(f, 1)
    udp_cs = [c for c in w[5] if c[3] == "udp"]
    assert len(udp_cs) == 1 and udp_cs[0][4] == 0            # pseudo-header: the outer IP
    assert [c[3] for c in w[5]][-1] == "ipv4" and w[5][-1][0] == 24   # outermost last


def test_nhrp_addresses():
    body = bytes.fromhex("000108000000000000ff0068af1500340103040004048002000000156401021b0a4100030a4100010020"
                         "000045fc1c200000000080030000800400008005000080070008000000014f5455530009001400200000"
                         "45fc0000040004006401000e0a41000180000000")
    f = ip_frame(ipv4(A, B, 47, gre(0x2001, body)))
    w = walk(f, 1)
    got = {str(ipaddress.ip_address(f[o:o + s])) for o, s, _ in w[3]}
    assert got == {A, B, "100.1.2.27", "10.65.0.3", "10.65.0.1", "100.1.0.14"}
    assert len(w[3]) == 7
    assert any(c[3] == "nhrp" for c in w[5])


def test_walk_accepts_memoryview_and_bytearray():
    f = ip_frame(ipv4(A, B, 6, tcp(A, B, 1234, 80, payload=b"x")))
    assert walk(memoryview(f), 1) == walk(f, 1) == walk(bytearray(f), 1)


def test_mpls_pseudowire_with_and_without_control_word():
    inner = _inner()
    zero_mac = bytes.fromhex("001b21000001")          # a real OUI starting with nibble 0
    no_cw = tf_eth = eth(zero_mac, zero_mac, 0x0800, inner)
    for payload in (no_cw, b"\0\0\0\0" + tf_eth):
        f = eth(MAC2, MAC1, 0x8847, mpls([100], payload))
        w = walk(f, 1)
        assert w[0] == OK and w[2] and w[2][0][0] == f.find(inner)


def test_dns_answers_and_client_subnet():
    msg = dns_answer(["93.184.216.34", "2606:2800:220:1::1"], ecs=("198.51.100.0", 24))
    f = ip_frame(ipv4(A, B, 17, udp(A, B, 53, 40000, msg)))
    w = walk(f, 1)
    got = {(f[o:o + frames.field_length(s, p)], p) for o, s, p in w[3]}
    assert (ip("93.184.216.34"), 32) in got and (ip("2606:2800:220:1::1"), 128) in got
    assert (ip("198.51.100.0")[:3], 24) in got
    tcp_dns = ip_frame(ipv4(A, B, 6, tcp(A, B, 53, 40000, payload=struct.pack("!H", len(msg)) + msg)))
    assert tcp_dns.find(ip("93.184.216.34")) in walked_offsets(walk(tcp_dns, 1))
    # not DNS-looking bytes on port 53: nothing invented
    junk = ip_frame(ipv4(A, B, 17, udp(A, B, 53, 40000, b"\xff" * 40)))
    assert walked_offsets(walk(junk, 1)) == addr_offsets(junk, A, B)


def test_dhcp_and_dhcpv6_addresses():
    bootp = bytearray(236)
    bootp[0], bootp[1], bootp[2] = 2, 1, 6
    bootp[16:20] = ip("192.168.1.50")                       # yiaddr
    bootp[20:24] = ip("192.168.1.1")                        # siaddr
    bootp[28:34] = MAC1
    opts = b"\x63\x82\x53\x63" + b"\x35\x01\x05" + b"\x36\x04" + ip("192.168.1.1") + b"\x06\x08" + ip("8.8.8.8") + \
        ip("1.1.1.1") + b"\x03\x04" + ip("192.168.1.254") + b"\xff"
    f = ip_frame(ipv4(A, "255.255.255.255", 17, udp(A, "255.255.255.255", 67, 68, bytes(bootp) + opts)))
    w = walk(f, 1)
    got = {str(ipaddress.ip_address(f[o:o + s])) for o, s, _ in w[3]}
    assert {"192.168.1.50", "192.168.1.1", "8.8.8.8", "1.1.1.1", "192.168.1.254", "0.0.0.0"} <= got
    assert f.find(MAC1, 42) in w[6]
    iaaddr = struct.pack("!HH", 5, 24) + ip("2001:db8:77::5") + b"\0" * 8
    iana = struct.pack("!HH", 3, 12 + len(iaaddr)) + b"\0" * 12 + iaaddr
    dnss = struct.pack("!HH", 23, 16) + ip("2001:4860:4860::8888")
    iapd = struct.pack("!HH", 26, 25) + b"\0" * 8 + bytes([48]) + ip("2001:db8:abcd::")
    pd = struct.pack("!HH", 25, 12 + len(iapd)) + b"\0" * 12 + iapd
    msg = b"\x07\x00\x00\x01" + iana + dnss + pd
    g = ip_frame(ipv6(A6, B6, 17, udp(A6, B6, 547, 546, msg)))
    wg = walk(g, 1)
    got6 = {(str(ipaddress.ip_address(g[o:o + s])), p) for o, s, p in wg[3]}
    assert ("2001:db8:77::5", 128) in got6 and ("2001:4860:4860::8888", 128) in got6
    assert ("2001:db8:abcd::", 48) in got6


def test_other_pseudo_header_checksums_and_vrrp_addresses():
    vrrp = pseudo_checksummed(A, "224.0.0.18", 112, bytes([0x31, 7, 100, 2, 0, 100, 0, 0]) + ip(C) + ip(D), 6)
    udplite = pseudo_checksummed(A, B, 136, struct.pack("!HHHH", 1000, 2000, 0, 0) + b"lite", 6)
    dccp = pseudo_checksummed(A, B, 33, struct.pack("!HHBBHI", 1000, 2000, 4, 0, 0, 0) + b"\0" * 4 + b"dccp", 6)
    for proto, body in ((112, vrrp), (136, udplite), (33, dccp)):
        f = ip_frame(ipv4(A, "224.0.0.18" if proto == 112 else B, proto, body))
        w = walk(f, 1)
        assert any(c[3] == "pseudo" for c in w[5]), proto
        assert_checksums_valid(f, w)
    wv = walk(ip_frame(ipv4(A, "224.0.0.18", 112, vrrp)), 1)
    assert len(wv[3]) == 4


LINKTYPES = [0, 1, 9, 12, 14, 50, 101, 104, 108, 113, 147, 204, 228, 229, 239, 242, 276]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(LINKTYPES))
def test_walk_never_raises_on_arbitrary_bytes(data, linktype):
    w = walk(data, linktype)
    n = len(data)
    for off, size, plen in w[3]:
        assert 0 <= off < n and size in (4, 16)
        assert off + frames.field_length(size, plen) <= n
    for c in w[5]:
        assert c[0] + 2 <= n and c[1] <= c[0] and c[2] <= n


def test_walk_survives_mutated_real_shapes():
    rnd = random.Random(1234)
    seeds = [f for _, f in _tunnel_cases()] + [f for _, f, _ in _linktype_cases()]
    for _ in range(3000):
        b = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 5)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        b = bytes(b[:rnd.randrange(len(b) + 1)]) if rnd.random() < 0.3 else bytes(b)
        w = walk(b, 1)
        assert all(o < len(b) for o, _, _ in w[3])


def test_teredo_origin_indication_and_port_3544():
    inner = ipv6("2001:0:4136:e378:8000:63bf:3fff:fdd2", B6, 59, b"")
    origin = b"\x00\x00" + struct.pack("!H", 0xFFFF ^ 3544) + bytes(b ^ 0xFF for b in ip(C))
    f = ip_frame(ipv4(A, B, 17, udp(A, B, 3544, 40000, origin + inner)))
    w = walk(f, 1)
    got = {(o, p) for o, _, p in w[3]}
    assert (f.find(origin) + 4, frames.INVERTED) in got
    assert f.find(inner) + 8 in {o for o, _ in got}
    cut = f[:f.find(inner) + 30]                       # truncated: on port 3544 still Teredo (as Wireshark)
    assert cut.find(inner[:30]) + 8 in walked_offsets(walk(cut, 1))


def test_ipv4_ah_is_walked_through():
    ah = bytes([6, 4]) + b"\0\0" + b"\0" * 20                  # next TCP, (4 + 2) * 4 = 24 bytes
    f = ip_frame(ipv4(A, B, 51, ah + tcp(A, B, 1234, 80, payload=b"esp?")))
    w = walk(f, 1)
    assert w[2][0][frames.IP_PROTO] == 6 and w[2][0][frames.IP_HLEN] == 44
    assert w[4][0] == 6 and f[w[4][2]:w[4][3]] == b"esp?"


def _fast_shapes():
    """Frames of the shapes walk()'s fast path takes (and near misses it must leave to the general walk)."""
    a6, b6 = "2001:db8::1", "2001:db8::2"
    out = []
    for wrap in (ip_frame, lambda packet: ip_frame(packet, vlans=[5])):
        out += [
            wrap(ipv4(A, B, 6, tcp(A, B, 1234, 80, payload=b"GET / HTTP/1.1\r\n" * 3))),
            wrap(ipv4(A, B, 6, tcp(A, B, 1234, 80, flags=0x02)) + b"\0" * 6),        # Ethernet padding
            wrap(ipv4(A, B, 6, tcp(A, B, 53, 80, payload=b"\x00\x1e" + dns_answer([C])))),      # DNS over TCP
            wrap(ipv4(A, B, 17, udp(A, B, 40000, 443, b"\x17\x03\x03hello"))),
            wrap(ipv4(A, B, 17, udp(A, B, 53, 40000, dns_answer([C, b6])))),
            wrap(ipv4(A, B, 17, udp(A, B, 40000, 9, b""))),
            wrap(ipv4(A, B, 17, udp(A, B, 40000, 9, b"\x00\x00" + b"x" * 30))),   # Teredo-like start
            wrap(ipv4(A, B, 17, udp(A, B, 40000, 9, ipv6(a6, b6, 59, b"")))),     # Teredo by content
            wrap(ipv4(A, B, 17, udp(A, B, 68, 67, b"\x01" + b"x" * 240))),       # DHCP: general walk
            wrap(ipv4(A, B, 1, icmp(8, 0, b"\0\1\0\1", b"ping"))),
            wrap(ipv4(A, B, 1, icmp(3, 1, b"\0" * 4, ipv4(B, A, 17, udp(B, A, 5353, 53, b"q"))))),
            wrap(ipv4(A, B, 6, tcp(A, B, 1234, 80, payload=b"x"), frag=0x2000)),     # a first fragment
            wrap(ipv6(a6, b6, 6, tcp(a6, b6, 1234, 80, payload=b"\x16\x03\x01\x00\x05hello"))),
            wrap(ipv6(a6, b6, 17, udp(a6, b6, 5353, 5353, dns_answer([a6])))),
            wrap(ipv6(a6, b6, 58, icmp6(a6, b6, 128, 0, b"\0\1\0\1ping"))),
            wrap(ipv6(a6, b6, 58, icmp6(a6, b6, 135, 0, b"\0" * 4 + ip(b6)))),
        ]
    return out


def test_fast_path_walks_exactly_as_the_general_walk():
    # walk() answers the common shapes itself; the result must be the general walk's, field for field,
    # for those shapes, for frames cut anywhere and for frames with header bytes changed at random
    rnd = random.Random(99)
    shapes = _fast_shapes()
    for f in shapes:
        assert walk(f, 1) == frames._walk(f, 1, len(f))
    for _ in range(20000):
        b = bytearray(rnd.choice(shapes))
        for _ in range(rnd.randint(1, 4)):
            k = rnd.randrange(min(len(b), 90))
            b[k] = rnd.choice((0, 1, 6, 8, 17, 53, 58, 0x45, 0x60, 0x81, 0x86, 0xDD, 0xFF, rnd.randrange(256)))
        if rnd.random() < 0.3:
            b = b[:rnd.randrange(len(b) + 1)]
        b = bytes(b)
        assert walk(b, 1) == frames._walk(b, 1, len(b)), b.hex()


def test_fast_path_takes_the_common_shapes(monkeypatch):
    shapes = _fast_shapes()
    expected = [frames._walk(f, 1, len(f)) for f in shapes]

    def general(data, linktype, n):
        raise AssertionError("general walk")
    monkeypatch.setattr(frames, "_walk", general)
    fast = 0
    for f, want in zip(shapes, expected):
        try:
            got = walk(f, 1)
        except AssertionError:
            continue
        assert got == want
        fast += 1
    assert fast >= 20                       # TCP, UDP, DNS, ICMP / ICMPv6 echo, with and without a VLAN tag


def test_dns_addresses_answer_as_walk_does():
    # the helper stages use for fast paths of their own gives what walk() lists
    a6, b6 = "2001:db8::1", "2001:db8::2"
    msg = dns_answer([C, "198.51.100.9", a6], ecs=("198.51.100.0", 24))
    for f, _o in ((ip_frame(ipv4(A, B, 17, udp(A, B, 53, 40000, msg))), 14),
                 (ip_frame(ipv4(A, B, 17, udp(A, B, 53, 40000, msg)))[:-3], 14),          # cut by the snap length
                 (ip_frame(ipv6(a6, b6, 17, udp(a6, b6, 40000, 53, msg))), 14),
                 (ip_frame(ipv4(A, B, 17, udp(A, B, 5353, 5353, msg)), vlans=[4]), 18)):
        w = walk(f, 1)
        pay, uend = w[4][2], w[4][3]
        ip_end = w[2][0][frames.IP_END]
        assert frames.dns_addresses(f, pay, uend, ip_end) == w[3][2:] and len(w[3]) > 2
