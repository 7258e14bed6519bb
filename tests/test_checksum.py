"""Ones'-complement sums and RFC 1624 incremental updates, against from-scratch recomputation."""
from __future__ import annotations

import os
import struct

from hypothesis import given, settings, strategies as st

from pktmask_gui import samplegen as sg
from pktmask_gui.checksum import field_delta, fix_checksums, internet_checksum, ones_sum, update
from pktmask_gui.frames import walk

import test_frames as tf


def ref_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@given(st.binary(max_size=300))
def test_ones_sum_matches_reference(data):
    assert ones_sum(data) == ref_sum(data)
    assert internet_checksum(data) == (~ref_sum(data) & 0xFFFF)


def test_rfc1624_example():
    # RFC 1624 section 4: HC = 0xDD2F, m = 0x5555 -> m' = 0x3285 gives HC' = 0x0000
    buf = bytearray(b"\xdd\x2f")
    update(buf, 0, field_delta(b"\x55\x55", b"\x32\x85"))
    assert buf == b"\x00\x00"


@settings(max_examples=300)
@given(st.binary(min_size=8, max_size=120), st.integers(0, 200), st.binary(min_size=4, max_size=4))
def test_incremental_equals_recompute_at_any_parity(data, pos, new):
    data = bytearray(data)
    pos = 2 + pos % (len(data) - 5)            # leave the checksum field at 0..1 alone
    buf = bytearray(data)
    buf[0:2] = b"\0\0"
    c = internet_checksum(buf)
    buf[0:2] = struct.pack("!H", c)
    old = bytes(buf[pos:pos + 4])
    buf[pos:pos + 4] = new
    update(buf, 0, field_delta(old, new, (pos & 1) == 1))
    assert ones_sum(buf) in (0xFFFF, 0)        # the whole region sums to "negative zero": valid


def test_bad_checksum_stays_bad_by_the_same_amount():
    data = bytearray(os.urandom(40))
    data[0:2] = b"\0\0"
    good = internet_checksum(data)
    data[0:2] = struct.pack("!H", good ^ 0x0101)        # wrong in the input
    error_before = ones_sum(data)                      # 0xFFFF would mean valid
    assert error_before != 0xFFFF
    old = bytes(data[10:14])
    data[10:14] = b"\x01\x02\x03\x04"
    update(data, 0, field_delta(old, data[10:14]))
    assert ones_sum(data) == error_before              # the same error, still invalid


def test_udp_zero_stays_zero_and_computed_zero_is_ffff():
    buf = bytearray(b"\0\0")
    update(buf, 0, 0x1234, "udp")
    assert buf == b"\0\0"
    # find a delta that makes the result 0: HC' = ~(~HC + d) = 0  <=>  ~HC + d = 0xFFFF
    hc = 0x1234
    d = 0xFFFF - (~hc & 0xFFFF)
    buf = bytearray(struct.pack("!H", hc))
    update(buf, 0, d, "udp")
    assert buf == b"\xff\xff"
    buf = bytearray(struct.pack("!H", hc))
    update(buf, 0, d, "tcp")
    assert buf in (b"\x00\x00", b"\xff\xff")


def _rewrite(frame: bytes, mapping: dict, linktype: int = 1) -> bytes:
    """Replace address fields found by the walker, then fix checksums (what the anonymizer does)."""
    w = walk(frame, linktype)
    buf = bytearray(frame)
    changed = {}
    for off, size, _ in w[3]:
        old = bytes(buf[off:off + size])
        new = mapping.get(old)
        if new is not None:
            buf[off:off + size] = new
            changed[off] = old
    fix_checksums(buf, w[5], w[2], changed)
    return bytes(buf)


M = {tf.ip(tf.A): tf.ip("172.20.0.1"), tf.ip(tf.B): tf.ip("172.20.9.9"), tf.ip(tf.C): tf.ip("203.0.113.5"),
     tf.ip(tf.D): tf.ip("203.0.113.200"), tf.ip(tf.A6): tf.ip("2001:db8:ffff::1"),
     tf.ip(tf.B6): tf.ip("2001:db8:eeee::7")}


def test_fix_checksums_over_icmp_quoted_headers_and_tunnels():
    frames_ = [
        sg.ip_frame(sg.ipv4(tf.A, tf.B, 1, sg.icmp(3, 3, b"\0\0\0\0",
                                                   sg.ipv4(tf.B, tf.C, 17, sg.udp(tf.B, tf.C, 5353, 53, b"abcd"))))),
        sg.ip_frame(sg.ipv4(tf.A, tf.B, 17, sg.udp(tf.A, tf.B, 40000, 4789, b"\x08\0\0\0\0\0\x01\0" + sg.ip_frame(
            sg.ipv4(tf.C, tf.D, 6, sg.tcp(tf.C, tf.D, 1234, 80, payload=b"xyz")))))),
        sg.ip_frame(sg.ipv4(tf.A, tf.B, 47, sg.gre(
            0x0800, sg.ipv4(tf.C, tf.D, 17, sg.udp(tf.C, tf.D, 5353, 53, b"q" * 7)), with_checksum=True))),
        sg.ip_frame(sg.ipv6(tf.A6, tf.B6, 58, sg.icmp6(tf.A6, tf.B6, 1, 0, b"\0\0\0\0" + sg.ipv6(
            tf.B6, tf.A6, 6, sg.tcp(tf.B6, tf.A6, 1234, 80, payload=b"hello"))))),
    ]
    for f in frames_:
        out = _rewrite(f, M)
        assert out != f
        tf.assert_checksums_valid(out, walk(out, 1))


def test_truncated_frame_checksum_is_right_for_the_whole_packet():
    full = sg.ip_frame(sg.ipv4(tf.A, tf.B, 6, sg.tcp(tf.A, tf.B, 1234, 80, payload=b"z" * 200)))
    cut = full[:80]
    out_full = _rewrite(full, M)
    out_cut = _rewrite(cut, M)
    assert out_cut == out_full[:80]            # same checksum bytes as if the whole frame had been there


def test_fix_checksums_changes_nothing_without_changes():
    f = sg.ip_frame(sg.ipv4(tf.A, tf.B, 6, sg.tcp(tf.A, tf.B, 1234, 80, payload=b"x")))
    w = walk(f, 1)
    buf = bytearray(f)
    assert fix_checksums(buf, w[5], w[2], {}) == 0 and bytes(buf) == f


def test_mask_style_payload_zeroing_updates_every_covering_checksum():
    inner = sg.ip_frame(sg.ipv4(tf.C, tf.D, 17, sg.udp(tf.C, tf.D, 5353, 53, b"secret!")))
    f = sg.ip_frame(sg.ipv4(tf.A, tf.B, 17, sg.udp(tf.A, tf.B, 40000, 4789, b"\x08\0\0\0\0\0\x01\0" + inner)))
    w = walk(f, 1)
    l4 = w[4]
    buf = bytearray(f)
    old = bytes(buf[l4[2]:l4[3]])
    buf[l4[2]:l4[3]] = bytes(len(old))
    fix_checksums(buf, w[5], w[2], {l4[2]: old})
    tf.assert_checksums_valid(bytes(buf), walk(bytes(buf), 1))
