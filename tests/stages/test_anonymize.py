"""Anonymize IPs: crafted frames for every layer, pcapng metadata, self-check, and the real-capture corpus.

Expected values come from an independent path: a fresh CryptoPAn with the test key plus the keep rules
written out here; checksums are recomputed from scratch (test_frames.assert_checksums_valid) and, where
tshark is installed, checked by tshark too.
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest
from helpers import CORPUS, packets_of

from pktmask_gui import capture
from pktmask_gui import samplegen as sg
from pktmask_gui.capture import CaptureReader, build_options, make_idb_body, make_shb_body
from pktmask_gui.capturewriter import CaptureWriter
from pktmask_gui.cryptopan import CryptoPAn
from pktmask_gui.frames import OK, Uninspectable, field_length, walk
from pktmask_gui.samplegen import generate
from pktmask_gui.stages import StageContext, StageError
from pktmask_gui.stages.anonymize import AnonymizeStage

import test_frames as tf

KEY = bytes.fromhex("1522178d33a4cf80130a5b1649907d10d8988f837979652762574c2d2a842202")
REF = CryptoPAn(KEY)
TSHARK = shutil.which("tshark")


def special(a: bytes) -> bool:
    x = ipaddress.ip_address(a)
    if x.version == 4:
        return x.is_unspecified or str(x) == "255.255.255.255" or x.is_loopback or x.is_multicast
    return x.is_unspecified or x.is_loopback or x.is_multicast


def expect(a: bytes) -> bytes:
    if special(a):
        return a
    return REF.map4(a) if len(a) == 4 else REF.map6(a)


def make(**options) -> AnonymizeStage:
    return AnonymizeStage(options, StageContext(key=KEY))


def recs(frames_, linktype=1):
    return [(f, linktype, i * 1000, len(f), 0, None) for i, f in enumerate(frames_)]


def assert_anonymized(before: bytes, after: bytes, linktype: int = 1) -> None:
    """Every address field holds its mapping, checksums are valid where they were, nothing else moved."""
    wb = walk(before, linktype)
    assert wb[0] == OK
    touched = set()
    for off, size, plen in wb[3]:
        old = before[off:off + field_length(size, plen)]
        touched.update(range(off, off + len(old)))
        if plen < 0:                # stored inverted (Teredo origin indication)
            inv = bytes(b ^ 0xFF for b in old)
            assert bytes(b ^ 0xFF for b in after[off:off + len(old)]) == \
                expect(inv + bytes(size - len(inv)))[:len(inv)]
            continue
        if plen < size * 8:
            v = int.from_bytes(expect(old + bytes(size - len(old))), "big") >> (size * 8 - plen) << (size * 8 - plen)
            assert after[off:off + len(old)] == v.to_bytes(size, "big")[:len(old)]
            continue
        if len(old) < size:         # cut by the snap length: the bytes present map as the whole address would
            assert after[off:off + len(old)] == expect(old + bytes(size - len(old)))[:len(old)]
            continue
        assert after[off:off + size] == expect(old), (off, ipaddress.ip_address(old))
    for c in wb[5]:
        touched.update((c[0], c[0] + 1))
    assert len(after) == len(before)
    assert all(before[i] == after[i] for i in range(len(before)) if i not in touched)
    try:
        tf.assert_checksums_valid(before, wb)
    except AssertionError:
        return                      # the input had a bad checksum: it stays bad (tested separately)
    tf.assert_checksums_valid(after, walk(after, linktype))


# ---- crafted frames ------------------------------------------------------------------------------------
def _crafted():
    A, B, C, D, A6, B6 = tf.A, tf.B, tf.C, tf.D, tf.A6, tf.B6
    out = [(name, f, 1) for name, f in tf._tunnel_cases()]
    out += [("lt%d" % lt, f, lt) for lt, f, _ in tf._linktype_cases()]
    out += [
        ("icmp-error", sg.ip_frame(sg.ipv4(A, B, 1, sg.icmp(3, 3, b"\0\0\0\0",
                                                       sg.ipv4(B, C, 17, sg.udp(B, C, 5353, 53, b"q" * 8))))), 1),
        ("icmp-error-tcp", sg.ip_frame(sg.ipv4(A, B, 1, sg.icmp(11, 0, b"\0\0\0\0", sg.ipv4(
            B, C, 6, sg.tcp(B, C, 1234, 80, payload=b"t"))))), 1),
        ("icmp6-error", sg.ip_frame(sg.ipv6(A6, B6, 58, sg.icmp6(A6, B6, 3, 0, b"\0\0\0\0" + sg.ipv6(
            B6, "2001:db8:5::5", 17, sg.udp(B6, "2001:db8:5::5", 5353, 53, b"u"))))), 1),
        ("arp", sg.eth(tf.MAC2, tf.MAC1, 0x0806, sg.arp(A, B)), 1),
        ("rarp", sg.eth(tf.MAC2, tf.MAC1, 0x8035, sg.arp(A, B, op=3)), 1),
        ("lsrr", sg.ip_frame(sg.ipv4(A, B, 6, sg.tcp(A, D, 1234, 80, payload=b"x"),
                                     options=bytes([131, 11, 4]) + tf.ip(C) + tf.ip(D))), 1),
        ("ipv6-frag", sg.ip_frame(sg.ipv6(A6, B6, 44, sg.ipv6_fragment(17, 0, 9, more=True)
                                          + sg.udp(A6, B6, 5353, 53, b"f" * 30)[:16])), 1),
        ("tcp6", sg.ip_frame(sg.ipv6(A6, B6, 6, sg.tcp(A6, B6, 1234, 80, payload=b"six"))), 1),
        ("ns", sg.ip_frame(sg.ipv6(A6, "ff02::1:ff00:99", 58, sg.icmp6(A6, "ff02::1:ff00:99", 135, 0, b"\0" * 4 + tf.ip(
            "2001:db8::99") + bytes([1, 1]) + tf.MAC1))), 1),
        ("igmp", sg.ip_frame(sg.ipv4(A, "224.0.0.22", 2, sg.icmp(0x16, 0, tf.ip("239.1.2.3")))), 1),
        ("vrrp3", sg.ip_frame(sg.ipv4(A, "224.0.0.18", 112, sg.pseudo_checksummed(A, "224.0.0.18", 112, bytes(
            [0x31, 7, 100, 1, 0, 100, 0, 0]) + tf.ip(C), 6))), 1),
        ("udplite", sg.ip_frame(sg.ipv4(A, B, 136, sg.pseudo_checksummed(A, B, 136, struct.pack("!HHHH", 1, 2, 0, 0)
                                                                         + b"x", 6))), 1),
        ("teredo-origin", sg.ip_frame(sg.ipv4(A, B, 17, sg.udp(A, B, 3544, 40000, b"\x00\x00\xf2\x27" + bytes(
            b ^ 0xFF for b in tf.ip(D)) + sg.ipv6(A6, B6, 59, b"")))), 1),
        ("nhrp", sg.ip_frame(sg.ipv4(A, B, 47, sg.gre(0x2001, bytes.fromhex(
            "000108000000000000ff0068af1500340103040004048002000000156401021b0a4100030a4100010020000045fc1c2000"
            "00000080030000800400008005000080070008000000014f545553000900140020000045fc0000040004006401000e0a41"
            "000180000000")))), 1),
        ("dhcp", sg.ip_frame(sg.ipv4(A, "255.255.255.255", 17, sg.udp(A, "255.255.255.255", 67, 68, bytes(
            [2, 1, 6]) + bytes(13) + tf.ip(C) + tf.ip(D) + bytes(212) + b"\x63\x82\x53\x63\x36\x04" + tf.ip(B)
            + b"\xff"))), 1),
        ("dns", sg.ip_frame(sg.ipv4(A, B, 17, sg.udp(A, B, 53, 4000, tf.dns_answer([C, A6], ecs=(D, 24))))), 1),
    ]
    return out


@pytest.mark.parametrize("name,frame,linktype", _crafted(), ids=[c[0] for c in _crafted()])
def test_crafted_frames_every_address_mapped(name, frame, linktype):
    st = make()
    out = st.process(recs([frame], linktype))
    assert len(out) == 1 and out[0][1:] == recs([frame], linktype)[0][1:]
    after = out[0][0]
    assert after != frame
    assert_anonymized(frame, after, linktype)
    st.check(recs([frame], linktype), out)


def _fragments(packet: bytes, at: int) -> list:
    """An IPv4 packet (20-byte header) cut into two fragments, the second from payload byte ``at``
    (a multiple of 8)."""
    payload = packet[20:]
    src, dst, proto, ident = packet[12:16], packet[16:20], packet[9], struct.unpack_from("!H", packet, 4)[0]
    first = sg.ipv4(src, dst, proto, payload[:at], ident=ident, frag=0x2000)
    second = sg.ipv4(src, dst, proto, payload[at:], ident=ident, frag=at // 8)
    return [sg.ip_frame(first), sg.ip_frame(second)]


ANSWERS = [f"10.9.{i}.{i + 1}" for i in range(40)]


def _dns_fragments(at: int = 64, sport: int = 53, ident: int = 77):
    dns = sg.dns_response(7, "www.example.test", ANSWERS)
    return _fragments(sg.ipv4(tf.A, tf.B, 17, sg.udp(tf.A, tf.B, sport, 40000, dns), ident=ident, df=False), at)


def test_later_fragments_of_a_dns_answer_are_zeroed_and_no_answer_address_survives():
    """A DNS response cut into two IP fragments: the A records past the first fragment cannot be rewritten
    (no header of their own); the second fragment is zeroed after its IP header, so none of the original
    answer addresses is left anywhere in the output."""
    from pktmask_gui.stages.anonymize import FRAGMENT_CARRIES

    frames_ = _dns_fragments()
    st = make()
    out = st.process(recs(frames_))
    first, second = out[0][0], out[1][0]
    assert_anonymized(frames_[0], first)
    assert second[:34] != frames_[1][:34] and not any(second[34:])
    assert first[40:42] == b"\0\0"         # its UDP checksum could not cover the zeroed data: 0, none (IPv4)
    for a in ANSWERS:
        assert tf.ip(a) not in first + second
    st.check(recs(frames_), out)
    assert st.report()["frames_zeroed_unreadable"] == {FRAGMENT_CARRIES: 1}


def test_later_fragments_of_a_tunnelled_header_are_zeroed():
    """GRE carrying IPv4, fragmented inside the inner header (as in the IDS suite's security-8550): the
    inner addresses sit in the second fragment."""
    inner = sg.ipv4(tf.C, tf.D, 17, sg.udp(tf.C, tf.D, 1000, 2000, b"i" * 40))
    frames_ = _fragments(sg.ipv4(tf.A, tf.B, 47, sg.gre(0x0800, inner), ident=5, df=False), 16)
    out = make().process(recs(frames_))
    assert not any(out[1][0][34:])
    assert tf.ip(tf.C) not in out[1][0] and tf.ip(tf.D) not in out[1][0]


def test_later_fragments_of_plain_data_stay():
    """A datagram whose ports name no address-bearing payload: its later fragment is left as it is, and so
    is any datagram with --no-payload-addresses but for tunnels."""
    frames_ = _fragments(sg.ipv4(tf.A, tf.B, 17, sg.udp(tf.A, tf.B, 40001, 9999, bytes(range(200))), ident=9,
                                 df=False), 64)
    out = make().process(recs(frames_))
    assert out[1][0][34:] == frames_[1][34:]
    dns = _dns_fragments()
    out = make(payload_addresses=False).process(recs(dns))
    assert out[1][0][34:] == dns[1][34:]
    # a tunnel whose inner headers lie whole in the first fragment: its later ones hold plain inner data
    from pktmask_gui import wildgen as wg
    big = sg.udp4_frame("10.3.3.3", "10.4.4.4", 40000, 9999, b"z" * 400)
    gtp = wg.fragment(wg.encapsulate(big, "gtpu"), 128)
    out = make().process(recs(gtp))
    assert [o[0][34:] for o in out[1:]] == [f[34:] for f in gtp[1:]]


def test_a_later_fragment_without_its_first_fails_closed_by_policy():
    """Out of order (or its first fragment never captured, or more than FRAGMENT_FRAMES frames before):
    zeroed by default, counted; --allow-uninspected lets it pass (counted); --strict fails the file."""
    from pktmask_gui.stages import anonymize
    from pktmask_gui.stages.anonymize import FRAGMENT_ALONE

    first, second = _dns_fragments()
    st = make()
    out = st.process(recs([second, first]))
    assert not any(out[0][0][34:])
    assert st.report()["frames_zeroed_unreadable"] == {FRAGMENT_ALONE: 1}
    st = make(uninspected="pass")
    out = st.process(recs([second, first]))
    assert out[0][0][34:] == second[34:]
    assert st.report()["not_inspected_reasons"] == {FRAGMENT_ALONE: 1}
    filler = [sg.ip_frame(sg.ipv4(tf.C, tf.D, 17, sg.udp(tf.C, tf.D, 1, 2, b"x")))] * 5
    with pytest.raises(Uninspectable, match=f"frame 2 cannot be inspected: {FRAGMENT_ALONE}"):
        make(uninspected="fail").process(recs([filler[0], second]))
    # too far after its first fragment: as if it had none
    old = anonymize.FRAGMENT_FRAMES
    anonymize.FRAGMENT_FRAMES = 4
    try:
        st = make()
        out = st.process(recs([first] + filler + [second]))
    finally:
        anonymize.FRAGMENT_FRAMES = old
    assert not any(out[-1][0][34:]) and st.report()["frames_zeroed_unreadable"] == {FRAGMENT_ALONE: 1}


def test_special_addresses_kept_unless_told_otherwise():
    specials = ["0.0.0.0", "255.255.255.255", "127.0.0.1", "224.0.0.251", "239.255.255.250"]
    frames_ = [sg.ip_frame(sg.ipv4(s, tf.A, 17, sg.udp(s, tf.A, 5353, 53, b"x"))) for s in specials]
    frames_ += [sg.ip_frame(sg.ipv6(s, tf.A6, 17, sg.udp(s, tf.A6, 5353, 53, b"x"))) for s in ("::", "::1", "ff02::fb")]
    out = make().process(recs(frames_))
    for f, o in zip(frames_, out):
        w = walk(f, 1)
        src = w[2][0][6]
        size = 4 if w[2][0][1] == 4 else 16
        assert o[0][src:src + size] == f[src:src + size]
        assert o[0] != f                          # the other address was mapped
    out2 = make(keep_special=False).process(recs(frames_))
    assert all(o[0][26:30] != f[26:30] for f, o in zip(frames_[:5], out2[:5]))
    assert "multicast" in AnonymizeStage.OPTIONS[0].help and "loopback" in AnonymizeStage.OPTIONS[0].help


def test_keep_cidrs():
    f = sg.ip_frame(sg.ipv4("8.8.8.8", "8.8.4.4", 17, sg.udp("8.8.8.8", "8.8.4.4", 5353, 53, b"x")))
    o = make(keep_cidrs=["8.8.8.0/24"]).process(recs([f]))[0][0]
    assert o[26:30] == tf.ip("8.8.8.8") and o[30:34] == REF.map4(tf.ip("8.8.4.4"))
    with pytest.raises(StageError, match="not a valid"):
        make(keep_cidrs=["8.8.8.8/33"])


def test_udp_zero_checksum_stays_zero_and_bad_checksum_stays_bad():
    inner = sg.ip_frame(sg.ipv4(tf.C, tf.D, 6, sg.tcp(tf.C, tf.D, 1234, 80, payload=b"p")))
    f = sg.ip_frame(sg.ipv4(tf.A, tf.B, 17, sg.udp(tf.A, tf.B, 40000, 4789, b"\x08\0\0\0\0\0\x01\0" + inner,
                                                   zero_checksum=True)))
    o = make().process(recs([f]))[0][0]
    assert o[40:42] == b"\0\0"
    seg = bytearray(sg.tcp(tf.A, tf.B, 1234, 80, payload=b"data"))
    seg[16] ^= 0x11                                     # the TCP checksum made wrong
    bad = sg.ip_frame(sg.ipv4(tf.A, tf.B, 6, bytes(seg)))
    ob = make().process(recs([bad]))[0][0]
    with pytest.raises(AssertionError):
        tf.assert_checksums_valid(ob, walk(ob, 1))


def test_truncated_frames_are_mapped_as_far_as_they_go():
    full = sg.ip_frame(sg.ipv4(tf.A, tf.B, 6, sg.tcp(tf.A, tf.B, 1234, 80, payload=b"x" * 100)))
    st = make()
    whole = st.process(recs([full]))[0][0]
    for cut in (20, 28, 32, 34, 40, 60):
        o = st.process([(full[:cut], 1, 0, len(full), 0, None)])[0][0]
        assert o[26:34] == whole[26:min(cut, 34)]     # prefix-preserving: the bytes present map as the whole
        if cut >= 34:                                 # whole header present: checksums as for the whole frame
            assert o == whole[:cut]


def test_a_frame_it_cannot_read_is_zeroed_after_its_last_header_or_passed_or_fails_the_file():
    # GRE (with a checksum) of an unknown protocol type: the outer addresses are mapped, everything after
    # the GRE header is zeroed, and the GRE checksum, which covers it, stays valid
    f = sg.ip_frame(sg.ipv4(tf.A, tf.B, 47, sg.gre(0x0042, bytes(range(1, 41)), with_checksum=True)))
    stop = 14 + 20 + 8
    st = make()
    out = st.process(recs([f, f]))[0][0]
    assert len(out) == len(f) and out[stop:] == bytes(len(f) - stop) and out[:24] == f[:24]
    assert out[26:34] == REF.anonymize_v4(int.from_bytes(f[26:30], "big")).to_bytes(4, "big") + \
        REF.anonymize_v4(int.from_bytes(f[30:34], "big")).to_bytes(4, "big")
    assert out[34:38] == f[34:38] and out[40:stop] == f[40:stop]          # the GRE checksum at 38 changes
    tf.assert_checksums_valid(out, walk(out, 1))
    # PPPoE carrying PPP of an unknown protocol: zeroed after the PPP protocol field (0x0245: a whole
    # two-byte field; one starting with an odd byte is a compressed one, PFC, which is walked)
    g = sg.eth(tf.MAC2, tf.MAC1, 0x8864, struct.pack("!BBHH", 0x11, 0, 7, 42) + b"\x02\x45" + bytes(range(1, 41)))
    assert st.process(recs([g]))[0][0] == g[:22] + bytes(40)
    rep = st.report()
    assert rep["frames_zeroed_unreadable"] == {"GRE protocol type 0x0042 is not supported": 2,
                                               "PPP protocol 0x0245 is not supported": 1}
    assert st.context.warnings == [
        "2 frames could not be inspected (GRE protocol type 0x0042 is not supported): zeroed after the last "
        "header understood",
        "1 frame could not be inspected (PPP protocol 0x0245 is not supported): zeroed after the last header "
        "understood"]
    # an unknown link type: nothing is understood, so the whole frame is zeroed (its length kept)
    g = b"\x01\x02" * 30
    assert make().process(recs([g], 147))[0][0] == bytes(60)
    # --strict: the file fails, naming the frame
    with pytest.raises(Uninspectable, match=r"frame 1 cannot be inspected: link type 147 \(USER0\) is not"):
        make(uninspected="fail").process(recs([g], 147))
    # --allow-uninspected (and a settings file of an earlier version): unchanged, counted
    for opts in ({"uninspected": "pass"}, {"allow_uninspected": True}):
        st = make(**opts)
        assert st.process(recs([g], 147))[0][0] == g
        rep = st.report()
        assert rep["frames_not_inspected"] == 1 and "link type 147" in list(rep["not_inspected_reasons"])[0]


def test_non_ip_frames_pass_unchanged_and_are_counted():
    lldp = sg.eth(tf.MAC2, tf.MAC1, 0x88CC, b"\x02\x07\x04" + tf.MAC1 + b"\0\0")
    stp = tf.MAC2 + tf.MAC1 + struct.pack("!H", 38) + b"\x42\x42\x03" + b"\0" * 35
    st = make()
    out = st.process(recs([lldp, stp, sg.eth(tf.MAC2, tf.MAC1, 0x0806, sg.arp(tf.A, tf.B))]))
    assert out[0][0] == lldp and out[1][0] == stp
    assert st.report()["frames_by_type"] == {"ARP": 1, "LLDP": 1, "STP": 1}


def test_mac_anonymization_keeps_group_and_local_bits():
    uni = bytes.fromhex("001122334455")
    loc = bytes.fromhex("0a1122334455")
    f = sg.eth(b"\xff" * 6, uni, 0x0806, sg.arp(tf.A, tf.B, sha=uni))
    g = sg.ip_frame(sg.ipv4(tf.A, "224.0.0.1", 17, sg.udp(tf.A, "224.0.0.1", 5353, 53, b"m")), src_mac=loc,
                    dst_mac=bytes.fromhex("01005e000001"))
    st = make(anonymize_macs=True)
    of, og = (r[0] for r in st.process(recs([f, g])))
    assert of[0:6] == b"\xff" * 6 and og[0:6] == g[0:6]           # broadcast / group kept
    assert of[6:12] != uni and of[6] & 3 == uni[0] & 3
    assert og[6:12] != loc and og[6] & 3 == loc[0] & 3
    assert of[22:28] == of[6:12]                                   # ARP sender hardware address, same mapping
    assert make().process(recs([f]))[0][0][6:12] == uni            # off by default
    st.check(recs([f, g]), [(of,) + recs([f])[0][1:], (og,) + recs([g])[0][1:]])


def test_consistent_across_instances_and_key_dependent():
    f = sg.ip_frame(sg.ipv4(tf.A, tf.B, 6, sg.tcp(tf.A, tf.B, 1234, 80, payload=b"x")))
    assert make().process(recs([f])) == make().process(recs([f]))
    other = AnonymizeStage({}, StageContext(key=bytes(32))).process(recs([f]))
    assert other[0][0] != make().process(recs([f]))[0][0]
    with pytest.raises(StageError):
        AnonymizeStage({}, StageContext(key=None))


def test_self_check_catches_an_unmapped_field():
    quoted = sg.ipv4(tf.B, tf.C, 17, sg.udp(tf.B, tf.C, 5353, 53, b""))
    frames_ = [sg.ip_frame(sg.ipv4(tf.A, tf.B, 1, sg.icmp(3, 3, b"\0\0\0\0", quoted)))]
    st = make()
    before = recs(frames_)
    after = st.process(before)
    st.check(before, after)
    # the quoted source address left as in the input
    w = walk(frames_[0], 1)
    q = w[2][1][6]
    bad = bytearray(after[0][0])
    bad[q:q + 4] = frames_[0][q:q + 4]
    with pytest.raises(StageError, match="self-check failed"):
        st.check(before, [(bytes(bad),) + after[0][1:]])
    with pytest.raises(StageError, match="self-check failed"):
        st.check(before, [])
    # payload changed by a later stage (masking) is fine; a trimmed payload too
    masked = bytearray(after[0][0])
    masked[-4:] = b"\0\0\0\0"
    st.check(before, [(bytes(masked),) + after[0][1:]])


def test_collision_with_a_kept_address_is_reported():
    x = tf.ip("10.9.8.7")
    y = REF.map4(x)                                # keep the address that x maps to
    ytext = str(ipaddress.ip_address(y))
    st = make(keep_cidrs=[ytext + "/32"])
    f = sg.ip_frame(sg.ipv4("10.9.8.7", ytext, 6, sg.tcp("10.9.8.7", ytext, 1234, 80, payload=b"c")))
    out = st.process(recs([f]))[0][0]
    assert out[26:30] == y and out[30:34] == y
    assert st.report()["collisions"] == 1
    assert any(ytext in w for w in st.context.warnings)
    assert "10.9.8.7" not in json.dumps(st.report()) + " ".join(st.context.warnings)


def test_report_holds_counts_not_addresses():
    st = make()
    st.process(recs([sg.ip_frame(sg.ipv4(tf.A, tf.B, 6, sg.tcp(tf.A, tf.B, 1234, 80))),
                     sg.ip_frame(sg.ipv6(tf.A6, tf.B6, 6, sg.tcp(tf.A6, tf.B6, 1234, 80))),
                     sg.ip_frame(sg.ipv4(tf.A, "255.255.255.255", 17,
                                         sg.udp(tf.A, "255.255.255.255", 5353, 53, b"")))]))
    rep = st.report()
    assert rep["addresses_mapped"] == 4 and rep["ipv4_addresses_mapped"] == 2 and rep["ipv6_addresses_mapped"] == 2
    assert rep["addresses_kept"] == 1 and rep["frames_by_type"] == {"IPv4": 2, "IPv6": 1}
    text = json.dumps(rep)
    for a in (tf.A, tf.B, tf.A6, KEY.hex()):
        assert a not in text


def test_export_mapping_only_on_request_and_merged(workdir):
    path = workdir / "map" / "mapping.tsv"
    st = make(export_mapping=str(path))
    st.process(recs([sg.ip_frame(sg.ipv4(tf.A, tf.B, 6, sg.tcp(tf.A, tf.B, 1234, 80)))]))
    st.report()
    lines = path.read_text().splitlines()
    assert f"{tf.A}\t{ipaddress.ip_address(REF.map4(tf.ip(tf.A)))}" in lines
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    st2 = make(export_mapping=str(path))
    st2.process(recs([sg.ip_frame(sg.ipv4(tf.C, tf.D, 6, sg.tcp(tf.C, tf.D, 1234, 80)))]))
    st2.report()
    text = path.read_text()
    assert tf.A in text and tf.C in text and tf.D in text
    assert sorted(p.name for p in path.parent.iterdir()) == ["mapping.tsv"]
    plain = make()
    plain.process(recs([sg.ip_frame(sg.ipv4(tf.A, tf.B, 6, sg.tcp(tf.A, tf.B, 1234, 80)))]))
    assert "mapping_exported" not in plain.report()


# ---- pcapng metadata ----------------------------------------------------------------------------------
@pytest.mark.parametrize("endian", ["<", ">"])
def test_nrb_and_idb_addresses_mapped(endian):
    e = endian
    v4, v6 = tf.ip(tf.C), tf.ip(tf.A6)
    idb = make_idb_body(1, 0, e, build_options([(2, b"eth0"), (4, v4 + b"\xff\xff\xff\0"), (5, v6 + b"\x40"),
                                                (6, tf.MAC1)], e))
    rec1 = struct.pack(e + "HH", 1, 4 + 9) + v4 + b"host.a\0\0\0" + b"\0" * 3
    rec2 = struct.pack(e + "HH", 2, 16 + 7) + v6 + b"host.b\0" + b"\0"
    nrb = rec1 + rec2 + struct.pack(e + "HH", 0, 0) + build_options([(3, tf.ip(tf.D)), (1, b"note")], e)
    meta = [(make_shb_body(e), -1, 0, 0, 0, capture.SHB), (idb, -1, 0, 0, 0, capture.IDB),
            (nrb, -1, 0, 0, 0, capture.NRB)]
    st = make(anonymize_macs=True)
    out = st.process(meta)
    assert out[0] == meta[0]
    new_idb = dict(capture.parse_options(out[1][0][8:], e))
    assert new_idb[2] == b"eth0"
    assert new_idb[4] == REF.map4(v4) + b"\xff\xff\xff\0"
    assert new_idb[5] == REF.map6(v6) + b"\x40"
    assert new_idb[6] != tf.MAC1
    body = out[2][0]
    assert len(body) == len(nrb) and v4 not in body and v6 not in body and tf.ip(tf.D) not in body
    assert REF.map4(v4) in body and REF.map6(v6) in body and REF.map4(tf.ip(tf.D)) in body
    assert b"host.a" in body and b"note" in body
    assert st.report()["metadata_addresses_mapped"] == 6        # IDB: v4, v6, MAC; NRB: v4, v6, DNS server


# ---- captures on disk: crafted and real ----------------------------------------------------------------
def run_file(src: Path, dst: Path, **options) -> AnonymizeStage:
    st = make(**options)
    with CaptureReader(src) as r, open(dst, "xb") as fh:
        w = CaptureWriter(fh, r.format, r.pcap_header)
        for batch in r.batches(256):
            w.write_batch(st.process(batch))
        w.close()
    with CaptureReader(src) as a, CaptureReader(dst) as b:
        before = [x for bt in a.batches() for x in bt if x[1] >= 0]
        after = [x for bt in b.batches() for x in bt if x[1] >= 0]
    make(**options).check(before, after)
    return st


def tshark_rows(path: Path, fields: list, prefs=()) -> list:
    cmd = [TSHARK, "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|",
           "-o", "teredo.heuristic_teredo:TRUE"]
    for p in prefs:
        cmd += ["-o", p]
    for f in fields:
        cmd += ["-e", f]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return [[c.split("|") if c else [] for c in line.split("\t")] for line in res.stdout.splitlines()]


ADDR_FIELDS = ["ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "arp.src.proto_ipv4", "arp.dst.proto_ipv4"]
CSUM_FIELDS = ["ip.checksum.status", "tcp.checksum.status", "udp.checksum.status", "icmp.checksum.status",
               "icmpv6.checksum.status"]
CSUM_PREFS = ["ip.check_checksum:TRUE", "tcp.check_checksum:TRUE", "udp.check_checksum:TRUE"]


def tshark_compare(src: Path, dst: Path) -> None:
    """No input address left in an address field; each maps as Crypto-PAn says; no new bad checksum."""
    fields = ADDR_FIELDS + CSUM_FIELDS
    rin_all, rout_all = tshark_rows(src, fields, CSUM_PREFS), tshark_rows(dst, fields, CSUM_PREFS)
    assert len(rin_all) == len(rout_all)
    k = len(ADDR_FIELDS)
    originals = {ipaddress.ip_address(v) for row in rin_all for col in row[:k] for v in col}
    for n, (rin, rout) in enumerate(zip(rin_all, rout_all)):
        for cin, cout in zip(rin[:k], rout[:k]):
            assert len(cin) == len(cout)
            for a, b in zip(cin, cout):
                a, b = ipaddress.ip_address(a), ipaddress.ip_address(b)
                assert b == ipaddress.ip_address(expect(a.packed)), (a, b)
                if not special(a.packed):
                    assert b not in originals, f"input address {b} appears in the output"
        for x_col, y_col in zip(rin[k:], rout[k:]):
            for x, y in zip(x_col, y_col):
                assert not (x == "1" and y != "1"), f"frame {n + 1}: checksum was good, now {y}"


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_crafted_capture_checked_by_tshark(workdir):
    src, dst = workdir / "crafted.pcap", workdir / "out.pcap"
    crafted = [(f, lt) for _, f, lt in _crafted() if lt == 1]
    with open(src, "wb") as fh:
        w = CaptureWriter(fh, "pcap", capture.make_pcap_header(1))
        w.write_batch([(f, 1, i * 1000, len(f), 0, None) for i, (f, _) in enumerate(crafted)])
        w.close()
    run_file(src, dst)
    tshark_compare(src, dst)


# A representative subset for the (slower) tshark comparison: tunnels, ARP, ICMP errors, fragments, SLL/SLL2,
# NFLOG, IPoIB, PPP/MPLS, multi-interface pcapng, NRB, NHRP, big-endian.
TSHARK_SET = ["tcpdump__vxlan.pcap", "zeek__tunnels_gre-within-gre.pcap", "zeek__tunnels_6in4.pcap",
              "tcpdump__802.1ad_QinQ.pcap", "zeek__icmp_icmp-destunreach-udp.pcap", "tcpdump__mpls-traceroute.pcap",
              "zeek__ipv4_fragmented-1.pcap", "tcpdump__ip6_frag_asan.pcap", "tcpdump__icmpv6-rfc7112.pcap",
              "zeek__linux_dlt_sll2.pcap", "tcpdump__tcp-handshake-nano.pcap", "tcpdump__nflog.pcap",
              "tcpdump__ipoib.pcap", "zeek__mixed-vlan-mpls.pcap", "zeek__pcapng-multi-interface.pcapng",
              "pcapngtest__le_advanced_test100.pcapng", "tcpdump__nhrp.pcapng", "tcpdump__pptp.pcap",
              "tcpdump__arista_ether.pcap", "zeek__chksums_ip4-tcp-bad-chksum.pcap", "zeek__trunc_ip4-trunc.pcap"]


def _corpus_files():
    return sorted(p.name for p in CORPUS.glob("*.pcap*")) if CORPUS.is_dir() else []


@pytest.mark.parametrize("name", _corpus_files() or ["(corpus absent)"])
def test_corpus_every_address_field_mapped(name, corpus_dir, workdir):
    src = workdir / name
    shutil.copyfile(corpus_dir / name, src)
    dst = workdir / ("out-" + name)
    st = run_file(src, dst)
    with CaptureReader(src) as a, CaptureReader(dst) as b:
        ra = [x for bt in a.batches() for x in bt]
        rb = [x for bt in b.batches() for x in bt]
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        if x[1] >= 0:
            assert_anonymized(x[0], y[0], x[1])
        assert x[1:] == y[1:]
    rep = st.report()
    assert rep["frames_not_inspected"] == 0
    if name in TSHARK_SET and TSHARK:
        tshark_compare(src, dst)


def test_corpus_nrb_metadata_mapped(corpus_dir, workdir):
    name = "pcapngtest__le_advanced_test100.pcapng"
    src, dst = workdir / name, workdir / "out.pcapng"
    shutil.copyfile(corpus_dir / name, src)
    st = run_file(src, dst)
    with CaptureReader(src) as a, CaptureReader(dst) as b:
        nin = [x[0] for bt in a.batches() for x in bt if x[1] < 0 and x[5] == capture.NRB]
        nout = [x[0] for bt in b.batches() for x in bt if x[1] < 0 and x[5] == capture.NRB]
    assert len(nin) == len(nout) == 5
    for x, y in zip(nin, nout):
        assert len(x) == len(y)
        assert (x == y) == (x[:4] in (b"\0\0\0\0",))                # only the empty NRBs stay as they are
    for addr in (b"\xc0\xa8\x01\x02", b"\xc0\xa8\x01\x08", b"\x0a\x01\x02\x04"):
        assert any(addr in x for x in nin) and not any(addr in y for y in nout)
    assert st.report()["metadata_addresses_mapped"] > 0


def test_cross_file_consistency_one_key(corpus_dir, workdir):
    """The same address maps the same way in two files (and in two runs)."""
    names = ["tcpdump__tcp-handshake-nano.pcap", "tcpdump__timestamp_invalid_micro.pcap"]
    outs = []
    for n in names:
        shutil.copyfile(corpus_dir / n, workdir / n)
        run_file(workdir / n, workdir / ("o-" + n))
        with CaptureReader(workdir / n) as a, CaptureReader(workdir / ("o-" + n)) as b:
            pairs = {}
            for x, y in zip([r for bt in a.batches() for r in bt], [r for bt in b.batches() for r in bt]):
                for off, size, _ in walk(x[0], x[1])[3]:
                    pairs[x[0][off:off + size]] = y[0][off:off + size]
            outs.append(pairs)
    common = set(outs[0]) & set(outs[1])
    assert common and all(outs[0][a] == outs[1][a] for a in common)


def test_payload_addresses_option_and_masked_payload_passes_self_check():
    msg = tf.dns_answer(["93.184.216.34"], ecs=("198.51.100.0", 24))
    f = sg.ip_frame(sg.ipv4(tf.A, tf.B, 17, sg.udp(tf.A, tf.B, 53, 40000, msg)))
    st = make()
    out = st.process(recs([f]))
    o = out[0][0]
    assert tf.ip("93.184.216.34") not in o and REF.map4(tf.ip("93.184.216.34")) in o
    assert_anonymized(f, o)
    # a later stage (masking) zeroes the DNS payload: the self-check accepts it
    w = walk(f, 1)
    masked = bytearray(o)
    masked[w[4][2]:w[4][3]] = bytes(w[4][3] - w[4][2])
    st.check(recs([f]), [(bytes(masked),) + out[0][1:]])
    # ... but not an original address left in place there
    left = bytearray(o)
    a = f.find(tf.ip("93.184.216.34"))
    left[a:a + 4] = tf.ip("93.184.216.34")
    with pytest.raises(StageError):
        st.check(recs([f]), [(bytes(left),) + out[0][1:]])
    off = make(payload_addresses=False)
    o2 = off.process(recs([f]))[0][0]
    assert tf.ip("93.184.216.34") in o2 and o2[26:34] == o[26:34]
    off.check(recs([f]), [(o2,) + out[0][1:]])


def test_mutated_frames_never_crash_and_pass_the_self_check():
    import random
    rnd = random.Random(99)
    seeds = [(f, lt) for _, f, lt in _crafted()]
    st = make(allow_uninspected=True, anonymize_macs=True)
    for _ in range(2000):
        f, lt = rnd.choice(seeds)
        b = bytearray(f)
        for _ in range(rnd.randint(1, 6)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        if rnd.random() < 0.3:
            b = b[:rnd.randrange(len(b) + 1)]
        rec = [(bytes(b), lt, 0, len(b), 0, None)]
        st.check(rec, st.process(rec))


def test_release_memory_keeps_the_mapping():
    st = make()
    frames_ = [sg.ip_frame(sg.ipv4(f"10.0.{i >> 8}.{i & 255}", tf.B, 6, sg.tcp(tf.A, tf.B, 1234, 80)))
               for i in range(300)]
    first = st.process(recs(frames_))
    assert st.release_memory() is not None
    assert st.process(recs(frames_)) == first


def test_teredo_origin_address_is_mapped_inverted():
    inner = sg.ipv6(tf.A6, tf.B6, 59, b"")
    origin = b"\x00\x00\xf2\x27" + bytes(b ^ 0xFF for b in tf.ip(tf.C))
    f = sg.ip_frame(sg.ipv4(tf.A, tf.B, 17, sg.udp(tf.A, tf.B, 3544, 40000, origin + inner)))
    st = make()
    o = st.process(recs([f]))[0][0]
    at = f.find(origin) + 4
    assert bytes(b ^ 0xFF for b in o[at:at + 4]) == REF.map4(tf.ip(tf.C))
    st.check(recs([f]), [(o,) + recs([f])[0][1:]])


class _General(AnonymizeStage):
    fast_path = False


def test_fast_path_gives_the_same_bytes_as_the_general_walk(corpus_dir):
    import random
    rnd = random.Random(5)
    frames_ = [(f, lt) for _, f, lt in _crafted()]
    frames_ += [(sg.ip_frame(sg.ipv4(tf.A, "255.255.255.255", 17,
                                     sg.udp(tf.A, "255.255.255.255", 5353, 53, b"x", zero_checksum=True))), 1),
                (sg.ip_frame(sg.ipv4("127.0.0.1", "127.0.0.1", 6,
                                     sg.tcp("127.0.0.1", "127.0.0.1", 1234, 80, payload=b"lo"))), 1),
                (sg.ipv6(tf.A6, tf.B6, 17, sg.udp(tf.A6, tf.B6, 5353, 53, b"raw6")), 229),
                (sg.ipv4(tf.A, tf.B, 6, sg.tcp(tf.A, tf.B, 1234, 80, payload=b"raw4")), 228),
                (sg.ip_frame(sg.ipv4(tf.A, tf.B, 1, sg.icmp(8, 0, b"\0\1\0\1", b"ping"))), 1),
                (sg.ip_frame(sg.ipv4(tf.A, tf.B, 1, sg.icmp(0, 0, b"\0\1\0\1", b"pong"))), 1),
                (sg.ip_frame(sg.ipv4(tf.A, tf.B, 1, sg.icmp(13, 0, b"\0\1\0\1", b"t" * 12))), 1),
                (sg.ip_frame(sg.ipv6(tf.A6, tf.B6, 58, sg.icmp6(tf.A6, tf.B6, 128, 0, b"\0\1\0\1ping"))), 1),
                (sg.ip_frame(sg.ipv6(tf.A6, tf.B6, 58, sg.icmp6(tf.A6, tf.B6, 129, 0, b"\0\1\0\1pong"))), 1),
                (sg.ip_frame(sg.ipv6(tf.A6, tf.B6, 58, sg.icmp6(tf.A6, tf.B6, 128, 0, b"\0\1\0\1")), vlans=[7]), 1)]
    for name in ("pktmask__tls_1_2_single_vlan.pcap", "tcpdump__mptcp-v1.pcap", "zeek__tcp_ssh-dups.pcap",
                 "tcpdump__LINKTYPE_IPV6.pcap", "tcpdump__afs.pcap"):
        with CaptureReader(corpus_dir / name) as r:
            frames_ += [(x[0], x[1]) for bt in r.batches() for x in bt if x[1] >= 0]
    mutated = []
    for f, lt in frames_[:400]:
        b = bytearray(f)
        for _ in range(rnd.randint(1, 4)):
            b[rnd.randrange(min(len(b), 60))] = rnd.randrange(256)
        mutated.append((bytes(b), lt))
    records = [(f, lt, 0, len(f), 0, None) for f, lt in frames_ + mutated]
    fast = make(allow_uninspected=True)
    general = _General({"allow_uninspected": True}, StageContext(key=KEY))
    out_fast, out_general = fast.process(records), general.process(records)
    assert out_fast == out_general
    assert fast.report() == general.report()
    fast.check(records, out_fast)
    general.check(records, out_general)


@pytest.mark.parametrize("fast", [True, False])
def test_self_check_catches_an_original_address_on_plain_tcp(fast):
    stage = make() if fast else _General({}, StageContext(key=KEY))
    frames_ = [sg.ip_frame(sg.ipv4(tf.A, tf.B, 6, sg.tcp(tf.A, tf.B, 1234, 80, payload=b"x"))),
               sg.ip_frame(sg.ipv6(tf.A6, tf.B6, 17, sg.udp(tf.A6, tf.B6, 5353, 53, b"y")))]
    before = recs(frames_)
    after = stage.process(before)
    stage.check(before, after)
    for i, (lo, hi) in enumerate(((26, 30), (22, 38))):
        bad = bytearray(after[i][0])
        bad[lo:hi] = frames_[i][lo:hi]
        with pytest.raises(StageError, match="self-check failed"):
            stage.check([before[i]], [(bytes(bad),) + after[i][1:]])


def _inline_shapes():
    """Frames of the shapes process() and check() handle inline (plain TCP/UDP, DNS over UDP), with and
    without an 802.1Q tag, and the near misses they must leave to the general path."""
    A, B, C, A6, B6 = tf.A, tf.B, tf.C, tf.A6, tf.B6
    out = list(tf._fast_shapes())
    for wrap in (sg.ip_frame, lambda packet: sg.ip_frame(packet, vlans=[9])):
        out += [
            wrap(sg.ipv4(A, B, 6, sg.tcp(A, B, 1234, 80, flags=0x10))),                   # a bare ACK: 54 bytes
            wrap(sg.ipv4(A, B, 6, sg.tcp(A, B, 1234, 80, payload=b"q" * 700))),
            wrap(sg.ipv4(A, B, 6, sg.tcp(A, B, 1234, 53, payload=b"\x00\x1e" + tf.dns_answer([C])))),
            wrap(sg.ipv4(A, B, 17, sg.udp(A, B, 40000, 443, b"x" * 20, zero_checksum=True))),   # no UDP checksum
            wrap(sg.ipv4(A, B, 17, sg.udp(A, B, 40000, 443, b"\x60" + b"x" * 60))),
            wrap(sg.ipv4(A, B, 17, sg.udp(A, B, 53, 40000, tf.dns_answer([C, "198.51.100.7", A6])))),
            wrap(sg.ipv4(A, B, 17, sg.udp(A, B, 53, 40000, tf.dns_answer([C], ecs=("198.51.100.0", 24))))),
            wrap(sg.ipv4(A, B, 17, sg.udp(A, B, 53, 40000, b"\x61" + tf.dns_answer([C])[1:]))),  # ID 0x61..
            wrap(sg.ipv4(A, B, 17, sg.udp(A, B, 5353, 5353, b"\x00" + tf.dns_answer([C])[1:]))),
            wrap(sg.ipv4(A, B, 17, sg.udp(A, B, 53, 67, tf.dns_answer([C])))),          # DHCP port too
            wrap(sg.ipv4(A, B, 17, sg.udp(A, B, 53, 40000, tf.dns_answer(["127.0.0.1"])))),
            wrap(sg.ipv4(A, B, 1, sg.icmp(8, 0, b"\0\1\0\1", b"ping" * 10))),
            wrap(sg.ipv4(A, B, 6, sg.tcp(A, B, 1234, 80, payload=b"z" * 30), frag=0x4000)),     # DF: not a fragment
            wrap(sg.ipv4(A, B, 6, sg.tcp(A, B, 1234, 80, payload=b"z" * 30), total=0)),         # total length 0 (TSO)
            wrap(sg.ipv4(A, B, 6, sg.tcp(A, B, 1234, 80, payload=b"z" * 30), options=b"\x01\x01\x01\x00")),
            wrap(sg.ipv4("127.0.0.1", "127.0.0.1", 6, sg.tcp("127.0.0.1", "127.0.0.1", 1234, 80, payload=b"lo" * 20))),
            wrap(sg.ipv6(A6, B6, 6, sg.tcp(A6, B6, 1234, 80, flags=0x10))),
            wrap(sg.ipv6(A6, B6, 17, sg.udp(A6, B6, 40000, 443, b"y" * 40))),
            wrap(sg.ipv6(A6, B6, 17, sg.udp(A6, B6, 53, 40000, tf.dns_answer([C, A6, "2001:db8:9::9"])))),
            wrap(sg.ipv6(A6, B6, 17, sg.udp(A6, B6, 40000, 53, tf.dns_answer(["2001:db8:9::9"]))) + b"\0" * 6),
            wrap(sg.ipv6("::1", "::1", 6, sg.tcp("::1", "::1", 1234, 80, payload=b"lo" * 20))),
        ]
    return out


def _mutants(frames_, rnd, count, reach=90):
    out = []
    for _ in range(count):
        b = bytearray(rnd.choice(frames_))
        for _ in range(rnd.randint(1, 4)):
            k = rnd.randrange(min(len(b), reach))
            b[k] = rnd.choice((0, 1, 6, 8, 17, 53, 58, 0x45, 0x60, 0x81, 0x86, 0xDD, 0xC0, 0xFF, rnd.randrange(256)))
        if rnd.random() < 0.3:
            b = b[:rnd.randrange(len(b) + 1)]
        out.append(bytes(b))
    return out


@pytest.mark.parametrize("options", [{}, {"payload_addresses": False}, {"keep_cidrs": ["192.0.2.0/24"]}])
def test_inline_paths_give_the_same_bytes_and_counts_as_the_general_walk(options):
    # process() and check() read the common shapes at fixed offsets (no walk, checksums from tables): the
    # bytes, the counts and the self-check verdicts must be the general path's, on exact shapes, on frames
    # with header bytes changed at random (checksum values included: the table lookups see every case)
    import random
    rnd = random.Random(7)
    shapes = _inline_shapes()
    frames_ = shapes + _mutants(shapes, rnd, 6000)
    for f in shapes:                                  # every checksum value near the ones'-complement edges
        for cs in (0x0000, 0x0001, 0xFFFE, 0xFFFF, rnd.randrange(65536)):
            for at in (24, 28, 50, 40, 60, 76):
                if at + 2 <= len(f):
                    g = bytearray(f)
                    g[at:at + 2] = cs.to_bytes(2, "big")
                    frames_.append(bytes(g))
    records = [(f, 1, i, len(f), 0, None) for i, f in enumerate(frames_)]
    opts = {"allow_uninspected": True, **options}
    fast = make(**opts)
    general = _General(opts, StageContext(key=KEY))
    out_fast, out_general = fast.process(records), general.process(records)
    assert out_fast == out_general
    assert fast.report() == general.report()
    fast.check(records, out_fast)
    general.check(records, out_general)
    # and, frame by frame, a wrong output is refused by both checks or by neither
    for i in rnd.sample(range(len(records)), 400):
        bad = bytearray(out_fast[i][0])
        if len(bad) < 30:
            continue
        k = rnd.randrange(12, min(len(bad), 90))
        bad[k] ^= 1 << rnd.randrange(8)
        verdicts = []
        for st in (fast, general):
            try:
                st.check([records[i]], [(bytes(bad),) + records[i][1:]])
                verdicts.append(True)
            except StageError:
                verdicts.append(False)
        assert verdicts[0] == verdicts[1], (k, bad.hex())


def test_checksum_tables_match_rfc1624_updates():
    from pktmask_gui.checksum import update
    from pktmask_gui.stages.anonymize import checksum_tables
    import random
    _FOLD, _FOLDZ = checksum_tables()
    rnd = random.Random(3)
    values = [0, 1, 2, 0x7FFF, 0x8000, 0xFFFD, 0xFFFE, 0xFFFF] + [rnd.randrange(65536) for _ in range(300)]
    for hc in values:
        for d in values:
            if d in (0, 0xFFFF):
                continue
            for kind, table in (("tcp", _FOLDZ), ("udp", _FOLD)):
                if kind == "udp" and hc == 0:
                    continue                          # "no checksum": the stage keeps it without a lookup
                buf = bytearray(hc.to_bytes(2, "big"))
                update(buf, 0, d, kind)
                assert table[hc + (0xFFFF ^ d)] == bytes(buf), (hc, d, kind)


def _inline_frames(vlan):
    """Frames of each inline shape, and where their addresses lie: (frames, [((lo, hi), frame index)])."""
    A, B, C, A6, B6 = tf.A, tf.B, tf.C, tf.A6, tf.B6
    wrap = (lambda packet: sg.ip_frame(packet, vlans=[3])) if vlan else sg.ip_frame
    shift = 4 if vlan else 0
    frames_ = [wrap(sg.ipv4(A, B, 6, sg.tcp(A, B, 1234, 80, flags=0x10))),
               wrap(sg.ipv4(A, B, 17, sg.udp(A, B, 53, 40000, tf.dns_answer([C])))),
               wrap(sg.ipv6(A6, B6, 17, sg.udp(A6, B6, 53, 40000, tf.dns_answer(["2001:db8:9::9"])))),
               wrap(sg.ipv6(A6, B6, 6, sg.tcp(A6, B6, 1234, 80, payload=b"data" * 30)))]
    spots = [((26 + shift, 30 + shift), 0), ((30 + shift, 34 + shift), 0),
             ((len(frames_[1]) - 4, len(frames_[1])), 1), ((22 + shift, 38 + shift), 2),
             ((len(frames_[2]) - 16, len(frames_[2])), 2), ((38 + shift, 54 + shift), 3)]
    return frames_, spots


@pytest.mark.parametrize("built", [False, True])
@pytest.mark.parametrize("vlan", [False, True])
def test_self_check_catches_wrong_addresses_on_the_inline_paths(vlan, built):
    """An original address left in the output fails on the right frame, whether the check compares the
    fields (check() alone) or the frames process() built (after will_check())."""
    frames_, spots = _inline_frames(vlan)
    before = recs(frames_)
    st = make()
    after = st.process(before)
    st.check(before, after)
    for (lo, hi), i in spots:
        bad = bytearray(after[i][0])
        bad[lo:hi] = frames_[i][lo:hi]                # the original address left in place
        assert bytes(bad) != after[i][0]
        checker = make()
        if built:
            checker.will_check()
            assert checker.process(before) == after
        with pytest.raises(StageError, match=rf"self-check failed: frame {i + 1}\b"):
            checker.check(before, after[:i] + [(bytes(bad),) + after[i][1:]] + after[i + 1:])
    # a DNS answer zeroed by a later stage (masking) passes; the answer's original bytes do not
    masked = bytearray(after[1][0])
    masked[-4:] = bytes(4)
    st.check(before[1:2], [(bytes(masked),) + after[1][1:]])


def test_frame_numbers_in_errors_count_packets_across_batches():
    good = sg.ip_frame(sg.ipv4(tf.A, tf.B, 6, sg.tcp(tf.A, tf.B, 1234, 80, payload=b"x")))
    st = make(uninspected="fail")
    st.process(recs([good, good, good]))
    meta = (b"\0" * 8, -1, 0, 0, 0, 99)               # a metadata record: not a frame
    bad = (b"\x01\x02" * 30, 147, 0, 60, 0, None)
    with pytest.raises(Uninspectable, match=r"^frame 5 cannot be inspected"):
        st.process([recs([good])[0], meta, bad, recs([good])[0]])
    st = make()
    before = recs([good] * 4)
    after = st.process(before)
    st.check(before[:2], after[:2])
    wrong = (after[3][0][:26] + good[26:34] + after[3][0][34:],) + after[3][1:]
    with pytest.raises(StageError, match=r"self-check failed: frame 4:"):
        st.check(before[2:], [after[2], wrong])


# --- the self-check with what process() built (the main pass calls will_check()) ---------------------------

def _checked_stage():
    st = make()
    st.will_check()
    return st


@pytest.mark.parametrize("vlan", [False, True])
def test_check_against_built_frames_walks_only_what_differs(vlan, monkeypatch):
    """After will_check(), a good output is accepted without walking a frame; a DNS answer zeroed by a
    later stage differs from the frame built, goes to the field check alone, and passes."""
    frames_, _spots = _inline_frames(vlan)
    before = recs(frames_)
    st = _checked_stage()
    after = st.process(before)
    walked = []
    real = AnonymizeStage._check_frames
    monkeypatch.setattr(AnonymizeStage, "_check_frames",
                        lambda self, b, todo: (walked.append(len(todo)), real(self, b, todo))[1])
    st.check(before, after)
    assert walked == []                                # every frame matched what was built
    after = st.process(before)
    masked = bytearray(after[1][0])
    masked[-4:] = bytes(4)                             # a later stage zeroed the DNS answer
    st.check(before, after[:1] + [(bytes(masked),) + after[1][1:]] + after[2:])
    assert walked == [1]                               # that frame alone, field by field: accepted


def test_only_a_checked_stage_keeps_what_it_built():
    """The pre-scan's own instances never have check() called: they keep nothing per frame."""
    frames_ = [sg.ip_frame(sg.ipv4(tf.A, tf.B, 6, sg.tcp(tf.A, tf.B, 1234, 80, payload=b"x" * i))) for i in range(50)]
    st = make()
    for _ in range(20):
        st.process(recs(frames_))
    assert st._expect == []
    st = _checked_stage()
    before = recs(frames_)
    after = st.process(before)
    assert len(st._expect) == len(frames_)
    st.check(before[:20], after[:20])
    st.check(before[20:], after[20:])
    assert st._expect == []


def test_check_without_what_was_built_falls_back_to_fields():
    """A run longer than what process() left (check() on records it never built) is checked field by field."""
    frames_ = [sg.ip_frame(sg.ipv4(tf.A, tf.B, 6, sg.tcp(tf.A, tf.B, 1234, 80, payload=b"x")))] * 3
    st = _checked_stage()
    before = recs(frames_)
    after = st.process(before[:1]) + make().process(before[1:])
    st.check(before, after)
    wrong = (after[2][0][:26] + frames_[2][26:34] + after[2][0][34:],) + after[2][1:]
    with pytest.raises(StageError, match=r"self-check failed: frame 6:"):
        st.check(before, after[:2] + [wrong])


def test_frames_of_the_general_path_are_always_checked_field_by_field(monkeypatch):
    """Only what the inline paths build is taken as built: a DNS message the inline path hands on (a client
    subnet prefix) and an ICMP error go through the walk and the field check even when the output is right."""
    A, B, C = tf.A, tf.B, tf.C
    frames_ = [sg.ip_frame(sg.ipv4(A, B, 17, sg.udp(A, B, 53, 40000, tf.dns_answer([C], ecs=("198.51.100.0", 24))))),
               sg.ip_frame(sg.ipv4(A, B, 1, sg.icmp(3, 1, b"\0" * 4, sg.ipv4(B, A, 17, sg.udp(B, A, 5353, 53, b"q"))))),
               sg.ip_frame(sg.ipv4(A, B, 6, sg.tcp(A, B, 1234, 80, payload=b"x" * 10)))]
    st = _checked_stage()
    before = recs(frames_)
    after = st.process(before)
    walked = []
    real = AnonymizeStage._check_frames
    monkeypatch.setattr(AnonymizeStage, "_check_frames",
                        lambda self, b, todo: (walked.extend(b.index(x) for x, _ in todo), real(self, b, todo))[1])
    st.check(before, after)
    assert walked == [0, 1]


@pytest.mark.parametrize("with_general", [False, True])
def test_check_spans_fails_a_frame_that_goes_on_past_the_frame_built(with_general):
    """Read back as spans, a frame that starts with the frame built but is longer (here the original
    appended) fails, whether or not the run also holds frames checked field by field."""
    A, B = tf.A, tf.B
    frames_ = [sg.ip_frame(sg.ipv4(A, B, 6, sg.tcp(A, B, 1234, 80, payload=b"x" * n))) for n in (10, 20, 30)]
    if with_general:
        frames_.insert(1, sg.ip_frame(sg.ipv4(A, B, 1, sg.icmp(8, 0, b"\0\1\0\1", b"ping" * 10))))
    before = recs(frames_)
    for bad in range(len(frames_)):
        st = _checked_stage()
        built = [r[0] for r in st.process(before)]
        out = list(built)
        out[bad] = built[bad] + frames_[bad]            # the original, after the frame built
        buf = b"".join(b"\0" * 16 + f for f in out)      # record headers between the frames
        starts, at = [], 0
        for f in out:
            starts.append(at + 16)
            at += 16 + len(f)
        ends = [s + len(f) for s, f in zip(starts, out)]
        with pytest.raises(StageError, match=rf"self-check failed: frame {bad + 1} is longer"):
            st.check_spans(before, buf, starts, ends, 1)
    st = _checked_stage()
    built = [r[0] for r in st.process(before)]
    buf = b"".join(b"\0" * 16 + f for f in built)
    starts = [sum(16 + len(f) for f in built[:i]) + 16 for i in range(len(built))]
    st.check_spans(before, buf, starts, [s + len(f) for s, f in zip(starts, built)], 1)


def test_check_spans_with_equal_frames_never_passes_an_original(workdir):
    """Spans: each frame is compared with its own built frame, bounded by its own end (start/end of
    startswith), even when a neighbouring span holds exactly another frame's built bytes."""
    stage = _checked_stage()
    src = workdir / "a.pcap"
    generate(src, packets=50, seed=5, vlan_ratio=0.0, ipv6_ratio=0.0, dup_ratio=0.0)
    before = packets_of(src)
    built = [r[0] for r in stage.process(before)]
    assert len(stage._expect) == len(before)
    # the output: frame 0 swapped for the original of frame 1 placed right after built[0]'s bytes
    out = [built[0], before[1][0]] + built[2:]
    buf = b"".join(out)
    starts, ends, at = [], [], 0
    for d in out:
        starts.append(at)
        at += len(d)
        ends.append(at)
    with pytest.raises(StageError, match="self-check failed: frame 2"):
        stage.check_spans(before, buf, starts, ends, 1)


def test_expectations_stay_aligned_through_metadata_uninspectable_and_dns_fallbacks():
    """process() keeps exactly one expectation per packet frame (none per metadata record), whichever path
    it takes: inline, DNS inline, DNS falling back (None), general walk, uninspected (allowed)."""
    A, B = tf.A, tf.B
    dns_ok = sg.ip_frame(sg.ipv4(A, B, 17, sg.udp(A, B, 53, 4000, bytes.fromhex(
        "12348180000100010000000003777777000001000100000100010000003c00040a0a0a0a") + bytes(8))))
    # an EDNS client subnet (a /24 prefix, not a whole address): _dns_frame returns None, the general way
    dns_ecs = sg.ip_frame(sg.ipv4(A, B, 17, sg.udp(A, B, 53, 4000, bytes.fromhex("123481800000000000000001") +
                                               bytes.fromhex("000029100000000000") + struct.pack("!H", 11) +
                                               struct.pack("!HHHBB", 8, 7, 1, 24, 0) + bytes([10, 20, 30]) +
                                               bytes(8))))
    plain = sg.ip_frame(sg.ipv4(A, B, 17, sg.udp(A, B, 1234, 5678, bytes(40))))
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + bytes(28) + bytes(18)
    garbage = sg.eth(tf.MAC2, tf.MAC1, 0x0800, b"\x46" + bytes(13))                   # IPv4 header cut short
    meta = (b"meta", -1, 0, 0, 0, (1, None))
    frames_ = [(d, 1, i, len(d), 0, None) for i, d in enumerate([dns_ok, dns_ecs, plain, arp, garbage])]
    frames_.append((bytes(40), 147, 9, 40, 0, None))                  # link type USER0: uninspected
    stage = AnonymizeStage({"allow_uninspected": True}, StageContext(key=KEY))
    stage.will_check()
    out = stage.process(frames_[:2] + [meta] + frames_[2:])
    packets = [r for r in out if r[1] >= 0]
    assert len(stage._expect) == len(frames_)
    assert [e != () for e in stage._expect] == [True, False, True, False, False, False]
    assert stage._uninspected == 1 and packets[1][0] != dns_ecs     # the ECS prefix mapped the general way
    stage.check(frames_, packets)            # its own output passes
    assert stage._expect == []
    stage.process(frames_)                   # the same frames again: numbered on, 7 to 12
    with pytest.raises(StageError, match="self-check failed: frame 8:"):
        stage.check(frames_, [packets[0], frames_[1]] + packets[2:])    # the original of the ECS frame fails


def test_a_segment_that_meets_a_lone_later_fragment_near_its_start_asks_for_one_core():
    """segments.py: a segment cannot know a first fragment that lay in the segment before; a later fragment
    it meets alone within FRAGMENT_FRAMES of its start makes its result inexact (the file runs again on one
    core); met later, or with its first fragment in the segment, it is decided as on one core."""
    from pktmask_gui.segments import SplitInexact

    first, second = _dns_fragments()
    leader, follower = make(), make()
    leader.segment_start(0, 10, None, None)
    follower.segment_start(100, 200, None, None)
    baseline = follower.segment_result()
    follower.process(recs([first, second]))
    assert not follower.segment_result()["alone_early"]
    follower.process(recs([_dns_fragments(ident=78)[1]]))        # another datagram's, alone
    result = follower.segment_result()
    assert result["alone_early"]
    with pytest.raises(SplitInexact, match="later IP fragment"):
        leader.absorb(result, baseline)
