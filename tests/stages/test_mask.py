"""Mask Payloads: crafted frames and streams in, bytes out; corpus captures checked by our own code and,
where tshark is installed, by the independent verify.py."""
from __future__ import annotations

import random
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import VERIFY, WILD

from pktmask_gui import checksum
from pktmask_gui import sampleconv, samplegen as sg
from pktmask_gui.capture import CaptureReader
from pktmask_gui.capturewriter import CaptureWriter
from pktmask_gui.frames import Uninspectable, walk
from pktmask_gui.stages import StageContext, StageError
from pktmask_gui.stages.mask import MaskStage


A4, B4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
A6, B6 = bytes.fromhex("20010db8000000000000000000000001"), bytes.fromhex("20010db8000000000000000000000002")


# ---- frames (samplegen's builders) and the checksums recomputed for the checks ----------------------------
def pseudo(src, dst, proto, length):
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


def l4sum(src, dst, proto, seg):
    return checksum.internet_checksum(pseudo(src, dst, proto, len(seg)) + seg)


def tcp_frame(seq, payload, flags=0x18, v6=False, vlans=(), back=False, sport=40000, dport=443):
    src, dst = (A6, B6) if v6 else (A4, B4)
    if back:
        src, dst, sport, dport = dst, src, dport, sport
    seg = sg.tcp(src, dst, sport, dport, seq, 1, flags, payload)
    return sg.ip_frame(sg.ipv6(src, dst, 6, seg) if v6 else sg.ipv4(src, dst, 6, seg), vlans=vlans)


def recs(frames, block=None):
    return [(f, 1, i, len(f), 0, block) for i, f in enumerate(frames)]


def run(records, batch=7, **options):
    stage = MaskStage(options, StageContext())
    for i in range(0, len(records), batch):
        stage.prescan(records[i:i + batch])
    out = []
    for i in range(0, len(records), batch):
        out += stage.process(records[i:i + batch])
    return out, stage


def payload(frame):
    l4 = walk(frame, 1)[4]
    return frame[l4[2]:l4[3]]


def checksums_ok(frame, linktype=1):
    """Recompute every IPv4 / TCP / UDP / ICMP checksum of a whole frame from scratch."""
    w = walk(frame, linktype)
    result = []
    for cs_off, start, end, kind, ipi in w[5]:
        if kind == "udp" and frame[cs_off:cs_off + 2] == b"\x00\x00":
            result.append(True)
            continue
        init = 0
        if ipi is not None:
            ip = w[2][ipi]
            size = 4 if ip[1] == 4 else 16
            ph = pseudo(frame[ip[6]:ip[6] + size], frame[ip[11]:ip[11] + size], {"tcp": 6, "udp": 17,
                        "icmpv6": 58}[kind], end - start)
            init = checksum.ones_sum(ph)
        total = checksum.ones_sum(frame, start, end) + init
        while total > 0xFFFF:
            total = (total & 0xFFFF) + (total >> 16)
        result.append(total == 0xFFFF)
    return result


# ---- TLS content -------------------------------------------------------------------------------------
def rec(t, body, ver=0x0303):
    return bytes([t, ver >> 8, ver & 0xFF]) + len(body).to_bytes(2, "big") + body


def rnd(n, seed):
    r = random.Random(seed)
    return bytes(r.choice(range(4, 256)) for _ in range(n))


CH = rec(22, b"\x01" + rnd(250, 1) + b"\x00\x00\x00\x10example.org", 0x0301)
SH = rec(22, b"\x02" + rnd(300, 2))
CCS = rec(20, b"\x01")
APP = [rec(23, rnd(n, n)) for n in (1200, 30, 4000)]


def layout(stream_parts):
    """-> (stream bytes, per-byte class: 'k' keep, 'z' must be zero)"""
    data, cls = b"", ""
    for part in stream_parts:
        data += part
        if part[0] == 23:
            cls += "k" * 5 + "z" * (len(part) - 5)
        else:
            cls += "k" * len(part)
    return data, cls


def segments(stream, sizes, isn, v6=False, vlans=(), back=False):
    frames, off, i = [], 0, 0
    while off < len(stream):
        n = sizes[i % len(sizes)]
        frames.append((off, tcp_frame(isn + 1 + off, stream[off:off + n], v6=v6, vlans=vlans, back=back)))
        off += n
        i += 1
    return frames


def check_stream(out_frames, offsets, stream, cls):
    for off, f in zip(offsets, out_frames):
        p = payload(f)
        for j, b in enumerate(p):
            c = cls[off + j]
            if c == "k":
                assert b == stream[off + j], ("kept byte changed", off + j)
            else:
                assert b == 0, ("masked byte not zero", off + j)
        assert all(checksums_ok(f))


@pytest.mark.parametrize("v6,vlans", [(False, ()), (True, ()), (False, (100,)), (True, (10, 20))])
def test_tls_session_handshake_kept_application_data_zero(v6, vlans):
    client, ccls = layout([CH, CCS, APP[1]])
    server, scls = layout([SH, CCS, APP[0], APP[2]])
    frames = [(None, tcp_frame(999, b"", 0x02, v6, vlans)), (None, tcp_frame(4999, b"", 0x12, v6, vlans, True))]
    cs = segments(client, [100, 3, 2000], 999, v6, vlans)
    ss = segments(server, [1448], 4999, v6, vlans, back=True)
    frames += [cs[0], ss[0], ss[1]] + cs[1:] + ss[2:]
    out, stage = run(recs([f for _, f in frames]))
    data = [o[0] for o in out]
    for (_off, f), o in zip(frames, data):
        assert len(o) == len(f)
        assert o[:14 + 4 * len(vlans)] == f[:14 + 4 * len(vlans)]          # link headers and VLAN tags
    check_stream([data[2]] + data[5:5 + len(cs) - 1], [cs[0][0]] + [c[0] for c in cs[1:]], client, ccls)
    check_stream(data[3:5] + data[5 + len(cs) - 1:], [s[0] for s in ss], server, scls)
    rep = stage.report()
    assert rep["tls_flows"] == 1
    assert rep["tls_records"] == {"change_cipher_spec": 2, "handshake": 2, "application_data": 3}
    assert rep["bytes_masked"] == sum(len(a) - 5 for a in APP)


def test_tcp_headers_identical_except_checksum():
    stream, cls = layout([CH, APP[0]])
    frames = segments(stream, [500], 7)
    out, _ = run(recs([f for _, f in frames]))
    for (_, f), o in zip(frames, out):
        o = o[0]
        tcp_off = 14 + 20
        assert o[:tcp_off] == f[:tcp_off]
        assert o[tcp_off:tcp_off + 16] == f[tcp_off:tcp_off + 16]
        assert o[tcp_off + 18:tcp_off + 20] == f[tcp_off + 18:tcp_off + 20]


def test_wraparound_out_of_order_and_retransmission():
    stream, cls = layout([CH, APP[0], APP[1], APP[2]])
    isn = 0xFFFFFFFF - 700                    # the sequence numbers wrap inside the stream
    segs = segments(stream, [600], isn)
    order = [segs[0], segs[2], segs[1]] + segs[3:5] + [segs[1], segs[4]] + segs[5:]
    # a retransmission with different bytes: the first copy defines the stream
    forged = (segs[3][0], tcp_frame(isn + 1 + segs[3][0], bytes([0x41]) * 600))
    order.append(forged)
    out, stage = run(recs([f for _, f in order]))
    check_stream([o[0] for o in out[:-1]], [o for o, _ in order[:-1]], stream, cls)
    p = payload(out[-1][0])
    base = forged[0]
    assert all(b == 0 for j, b in enumerate(p) if cls[base + j] == "z")
    assert all(checksums_ok(out[-1][0]))


def test_resent_handshake_bytes_kept_only_when_equal_to_first_copy():
    stream, cls = layout([CH, APP[0]])
    segs = segments(stream, [150], 1)
    same_coalesced = tcp_frame(2, stream[:300])                      # one copy of the first two segments
    forged = tcp_frame(2, (b"\x16\x03\x01" + bytes(range(147)))[:150])
    out, stage = run(recs([f for _, f in segs] + [same_coalesced, forged]))
    assert payload(out[-2][0]) == stream[:len(CH) + 5] + bytes(300 - len(CH) - 5)
    assert not any(payload(out[-1][0]))
    assert all(checksums_ok(out[-1][0]))
    assert stage.report()["resent_ranges_differing"] == 1


def test_gap_then_resync_and_midstream_start():
    stream, cls = layout([CH] + [rec(23, rnd(900, s)) for s in range(5)])
    segs = segments(stream, [700], 50)
    h1 = len(CH) + 905                        # second application-data header: its segment is lost
    kept = [s for s in segs if not s[0] <= h1 < s[0] + 700]
    out, stage = run(recs([f for _, f in kept]))
    hdr_after = [len(CH) + i * 905 for i in range(2, 5)]
    for (off, _f), o in zip(kept, out):
        p = payload(o[0])
        for j, b in enumerate(p):
            pos = off + j
            if any(h <= pos < h + 5 for h in hdr_after) or pos < len(CH) + 5:
                assert b == stream[pos]
            else:
                assert b == 0
    assert stage.report()["streams_with_gaps"] == 1
    # a capture that starts in the middle of a record (no SYN): masked until a confirmed header
    mid = segs[2:]
    out, _ = run(recs([f for _, f in mid]))
    first = min(h for h in hdr_after if h > mid[0][0])
    for (off, _f), o in zip(mid, out):
        p = payload(o[0])
        for j, b in enumerate(p):
            if off + j < first:
                assert b == 0


def test_starttls_plaintext_masked():
    plain = b"EHLO a.example\r\nSTARTTLS\r\n"
    stream = plain + CH + APP[1]
    segs = segments(stream, [16, 10, 2000], 77)
    out, _ = run(recs([f for _, f in segs]))
    got = b"".join(payload(o[0]) for o in out)
    assert got == bytes(len(plain)) + CH + APP[1][:5] + bytes(len(APP[1]) - 5)


def test_sslv2_client_hello_kept():
    cs = bytes.fromhex("0100800300800700c0")
    body = b"\x01\x00\x02" + len(cs).to_bytes(2, "big") + b"\x00\x00\x00\x10" + cs + rnd(16, 3)
    hello = bytes([0x80, len(body)]) + body
    stream = hello + rec(22, b"\x10" + rnd(130, 4)) + CCS + APP[1]
    segs = segments(stream, [len(hello), 1000], 10)
    out, stage = run(recs([f for _, f in segs]))
    got = b"".join(payload(o[0]) for o in out)
    assert got == stream[:-len(APP[1]) + 5] + bytes(len(APP[1]) - 5)
    assert stage.report()["tls_records"]["sslv2"] == 1


def test_udp_icmp_and_opaque_payloads_zeroed_with_valid_checksums():
    dns = rnd(60, 5)
    frames = [
        sg.ip_frame(sg.ipv4(A4, B4, 17, sg.udp(A4, B4, 5353, 53, dns))),
        sg.ip_frame(sg.ipv4(A4, B4, 17, sg.udp(A4, B4, 5353, 53, dns, zero_checksum=True))),
        sg.ip_frame(sg.ipv6(A6, B6, 17, sg.udp(A6, B6, 5353, 53, dns))),
        sg.ip_frame(sg.ipv4(A4, B4, 50, rnd(40, 6))),                                      # ESP: opaque
    ]
    frames.append(sg.ip_frame(sg.ipv4(A4, B4, 1, sg.icmp(8, 0, b"\x12\x34\x00\x01", rnd(56, 7)))))
    out, _ = run(recs(frames))
    for f, o in zip(frames, out):
        o = o[0]
        assert len(o) == len(f)
        assert all(checksums_ok(o)), f
        assert not any(payload(o))
    assert out[1][0][14 + 20 + 6:14 + 20 + 8] == b"\x00\x00"                 # UDP checksum 0 stays 0


def test_udp_checksum_never_becomes_zero():
    # find a payload whose masked datagram would checksum to 0: then 0xFFFF must be stored
    for i in range(1, 70000):
        p = i.to_bytes(4, "big")
        masked = sg.udp(A4, B4, 1, 2, bytes(4))
        if masked[6:8] == b"\xff\xff":
            break
    seg = sg.udp(A4, B4, 1, 2, p)
    out, _ = run(recs([sg.ip_frame(sg.ipv4(A4, B4, 17, seg))]))
    assert out[0][0][-6:-4] == b"\xff\xff" or out[0][0][34 + 6:34 + 8] != b"\x00\x00"
    assert all(checksums_ok(out[0][0]))


def test_icmp_error_keeps_quoted_headers_and_zeroes_quoted_payload():
    inner = sg.ipv4(B4, A4, 17, sg.udp(B4, A4, 53, 5353, rnd(40, 8)))
    f = sg.ip_frame(sg.ipv4(A4, B4, 1, sg.icmp(3, 3, bytes(4), inner)))
    out, _ = run(recs([f]))
    o = out[0][0]
    q = 14 + 20 + 8
    assert o[:q + 28] == f[:q + 28][:q + 26] + o[q + 26:q + 28]     # quoted IP + UDP header (checksum updated)
    assert not any(o[q + 28:])
    assert all(checksums_ok(o))


def test_fragments_zeroed_and_first_fragment_checksum_accounts_for_them():
    data = rnd(3000, 9)
    seg = sg.udp(A4, B4, 1000, 2000, data)
    pieces = [(0, seg[:1480]), (1480, seg[1480:2960]), (2960, seg[2960:])]
    frames = []
    for off, chunk in reversed(pieces):                   # later fragments first
        more = 0x2000 if off + len(chunk) < len(seg) else 0
        frames.append(sg.ip_frame(sg.ipv4(A4, B4, 17, chunk, ident=77, frag=more | off // 8)))
    out, _ = run(recs(frames))
    datagram = b""
    for o in reversed(out):
        datagram += o[0][34:]
    assert datagram[:6] == seg[:6] and not any(datagram[8:])
    assert l4sum(A4, B4, 17, datagram) == 0                 # valid over the reassembled datagram


def test_trim_mode_cuts_after_kept_bytes_but_never_shortens_spb():
    stream, cls = layout([CH, APP[0]])
    segs = segments(stream, [1400], 5)
    out, _ = run(recs([f for _, f in segs]), mode="trim")
    o, f = out[0][0], segs[0][1]
    assert o[:50] + o[52:] == f[:50] + f[52:len(o)]       # all but the TCP checksum (updated as if zeroed)
    assert len(out[0][0]) == 14 + 20 + 20 + len(CH) + 5
    assert out[0][3] == len(segs[0][1])                   # the original length stays
    u = sg.ip_frame(sg.ipv4(A4, B4, 17, sg.udp(A4, B4, 1, 2, rnd(100, 1))))
    out, _ = run(recs([u]), mode="trim")
    assert len(out[0][0]) == 42
    out, _ = run(recs([u], block=(3, b"")), mode="trim")
    assert len(out[0][0]) == len(u) and not any(out[0][0][42:])


def test_keep_ports_and_mask_handshake_option():
    stream, _ = layout([CH, APP[1]])
    segs = segments(stream, [2000], 5)
    out, _ = run(recs([f for _, f in segs]), keep_ports=[443])
    assert out[0][0] == segs[0][1]
    out, _ = run(recs([f for _, f in segs]), keep_handshake=False)
    p = payload(out[0][0])
    assert p[:5] == CH[:5] and not any(p[5:len(CH)])


def test_a_frame_it_cannot_read_is_zeroed_after_its_last_header_or_passed_or_fails_the_file():
    # VLAN, then an EtherType nobody knows: zeroed after the VLAN tag (trim: cut there), the rest of the
    # capture goes on; --allow-uninspected passes it unchanged; --strict fails the file naming the frame
    odd = struct.pack("!6s6sHHH", b"\x02" * 6, b"\x04" * 6, 0x8100, 5, 0x7878) + bytes(range(1, 50))
    good = tcp_frame(1, b"hello")
    bad = recs([good, odd, good])
    out, stage = run(bad)
    assert out[1][0] == odd[:18] + bytes(len(odd) - 18) and out[0][0] == out[2][0]
    assert stage.report()["frames_zeroed_unreadable"] == {"EtherType 0x7878 is not supported": 1}
    assert stage.context.warnings == ["1 frame could not be inspected (EtherType 0x7878 is not supported): zeroed "
                                      "after the last header understood"]
    out, _ = run(bad, mode="trim")
    assert out[1][0] == odd[:18] and out[1][3] == len(odd)
    with pytest.raises(Uninspectable, match="frame 2: EtherType 0x7878 is not supported"):
        run(bad, uninspected="fail")
    for opts in ({"uninspected": "pass"}, {"allow_uninspected": True}):
        out, stage = run(bad, **opts)
        assert out[1] == bad[1] and stage.report()["uninspected_frames"] == 1


def test_stream_unknown_to_prescan_is_an_error():
    stage = MaskStage({}, StageContext())
    stage.prescan([])
    with pytest.raises(StageError):
        stage.process(recs([tcp_frame(1, b"hello")]))


# ---- corpus ------------------------------------------------------------------------------------------
TLS_FILES = ["pktmask__tls_1_2-2.pcap", "pktmask__tls_1_2_plainip.pcap", "zeek__tls_tls1.2.pcap",
             "zeek__tls_hrr.pcap", "pktmask__ssl_3.pcap", "pktmask__https-justlaunchpage.pcap"]
OTHER_FILES = ["tcpdump__afs.pcap", "zeek__ipv4_fragmented-1.pcap", "tcpdump__vxlan.pcap",
               "zeek__tunnels_gre-within-gre.pcap", "tcpdump__mpls-traceroute.pcap", "zeek__vlan-qinqinq.pcap",
               "tcpdump__icmpv6-rfc7112.pcap", "pcapngtest__be_basic_test018.pcapng",
               "zeek__icmp_icmp-destunreach-udp.pcap"]


def mask_file(src: Path, dst: Path, **options) -> dict:
    stage = MaskStage(options, StageContext())
    with CaptureReader(src) as r:
        for b in r.batches(500):
            stage.prescan(b)
    with CaptureReader(src) as r, open(dst, "wb") as fh:
        w = CaptureWriter(fh, r.format, r.pcap_header)
        for b in r.batches(500):
            w.write_batch(stage.process(b))
        w.close()
    return stage.report()


@pytest.mark.parametrize("name", TLS_FILES + OTHER_FILES)
def test_corpus_headers_kept_checksums_not_broken(name, corpus_dir, workdir):
    src = workdir / name
    shutil.copyfile(corpus_dir / name, src)
    dst = workdir / ("out-" + name)
    rep = mask_file(src, dst)
    with CaptureReader(src) as a, CaptureReader(dst) as b:
        ins = [r for batch in a.batches() for r in batch if r[1] >= 0]
        outs = [r for batch in b.batches() for r in batch if r[1] >= 0]
    assert len(ins) == len(outs)
    for i, o in zip(ins, outs):
        assert len(i[0]) == len(o[0]) and i[3] == o[3]
        w = walk(i[0], i[1])
        l4 = w[4]
        if l4 is None:
            assert i[0] == o[0]
            continue
        # every header byte before the payload is unchanged, checksum fields aside
        cs_bytes = {c[0] for c in w[5]} | {c[0] + 1 for c in w[5]}
        assert [k for k in range(l4[2]) if i[0][k] != o[0][k] and k not in cs_bytes] == []
        before, after = checksums_ok(i[0], i[1]), checksums_ok(o[0], i[1])
        assert [x for x, y in zip(before, after) if x and not y] == []
    if name in TLS_FILES:
        assert rep["tls_flows"] >= 1 and rep["tls_records"].get("application_data", 0) >= 1


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("name", TLS_FILES[:4] + ["tcpdump__afs.pcap", "zeek__ipv4_fragmented-1.pcap"])
def test_corpus_passes_independent_verifier(name, corpus_dir, workdir):
    if not VERIFY.is_file():
        pytest.skip("verify.py not present at %s" % VERIFY)
    src = workdir / name
    shutil.copyfile(corpus_dir / name, src)
    dst = workdir / ("out-" + name)
    mask_file(src, dst)
    p = subprocess.run([sys.executable, str(VERIFY), str(src), str(dst), "--mask", "-v"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert p.returncode == 0, p.stdout.decode()


def test_port_reuse_and_syn_defines_the_stream_start():
    stream, cls = layout([CH, APP[0], APP[1]])
    first = segments(stream, [400], 1000)
    # the same four-tuple again: a new SYN, and this time the first 400 bytes were not captured
    second = segments(stream, [400], 70000)[1:]
    frames = [tcp_frame(1000, b"", 0x02)] + [f for _, f in first] + [tcp_frame(70000, b"", 0x02)] + \
        [f for _, f in second]
    out, stage = run(recs(frames))
    got1 = [o[0] for o in out[1:1 + len(first)]]
    check_stream(got1, [o for o, _ in first], stream, cls)
    got2 = out[2 + len(first):]
    h = len(CH)                               # first header after the gap: the APP[0] record at len(CH)
    for (off, _), o in zip(second, got2):
        p = payload(o[0])
        for j, b in enumerate(p):
            pos = off + j
            if pos < h or cls[pos] == "z":
                assert b == 0, pos
    assert stage.report()["streams_with_gaps"] == 1


def test_tunnel_headers_stay_and_outer_checksums_follow_the_inner_payload():
    inner = sg.ip_frame(sg.ipv4(A4, B4, 17, sg.udp(A4, B4, 5000, 53, rnd(80, 11))))
    vxlan = b"\x08\x00\x00\x00\x00\x01\x00\x00" + inner
    outer_a, outer_b = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])
    f_vxlan = sg.ip_frame(sg.ipv4(outer_a, outer_b, 17, sg.udp(outer_a, outer_b, 40000, 4789, vxlan)))
    gre = sg.gre(0x0800, sg.ipv4(A4, B4, 6, sg.tcp(A4, B4, 1, 2, 5, 1, 0x18, b"secret" * 20)), with_checksum=True)
    f_gre = sg.ip_frame(sg.ipv4(outer_a, outer_b, 47, gre))
    out, _ = run(recs([f_vxlan, f_gre]))
    for f, o in zip((f_vxlan, f_gre), out):
        o = o[0]
        assert len(o) == len(f)
        assert all(checksums_ok(o)) and len(checksums_ok(o)) >= 3
        p_in, p_out = payload(f), payload(o)
        assert p_in and not any(p_out)
        inner_start = len(f) - len(p_in)
        diff = [i for i in range(inner_start) if f[i] != o[i]]
        assert all(walk(f, 1)[5] and any(c[0] <= i < c[0] + 2 for c in walk(f, 1)[5]) for i in diff)


def test_icmpv6_echo_and_error_and_icmp_extensions():
    echo = sg.icmp6(A6, B6, 128, 0, b"\x00\x01\x00\x01" + rnd(32, 12))
    quoted = sg.ipv6(B6, A6, 6, sg.tcp(B6, A6, 443, 40000, 9, 1, 0x18, rnd(100, 13)))
    err = sg.icmp6(A6, B6, 1, 4, bytes(4) + quoted)
    # ICMPv4 time exceeded with an RFC 4884 length (original datagram: 32 words) and an MPLS extension
    orig = sg.ipv4(B4, A4, 17, sg.udp(B4, A4, 33434, 33435, rnd(100, 14)))[:128]
    ext = b"\x20\x00\x00\x00" + b"\x00\x08\x01\x01" + b"\x00\x01\x41\x01"
    te = sg.icmp(11, 0, b"\x00\x20\x00\x00", orig + ext)
    frames = [sg.ip_frame(sg.ipv6(A6, B6, 58, echo)), sg.ip_frame(sg.ipv6(A6, B6, 58, err)),
              sg.ip_frame(sg.ipv4(A4, B4, 1, te))]
    out, _ = run(recs(frames))
    o = [x[0] for x in out]
    assert all(all(checksums_ok(x)) for x in o)
    assert not any(o[0][14 + 40 + 8:])
    q = 14 + 40 + 8
    assert o[1][q:q + 40 + 16] == frames[1][q:q + 40 + 16] and o[1][q + 40 + 18:q + 60] == frames[1][q + 40 + 18:q + 60]
    assert not any(o[1][q + 60:])
    q4 = 14 + 20 + 8
    assert o[2][q4:q4 + 26] == frames[2][q4:q4 + 26]            # quoted IP + UDP header (but its checksum)
    assert not any(o[2][q4 + 28:q4 + 128])
    assert o[2][q4 + 128:] == ext                               # the extension (MPLS labels) stays


# ---- real TLS sessions (OpenSSL through Python's ssl, in memory) ------------------------------------
def _tls_flights(tmp: Path, version, hrr=False):
    ssl = pytest.importorskip("ssl")
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "server.example")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2)).sign(key, hashes.SHA256()))
    (tmp / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname, cctx.verify_mode = False, ssl.CERT_NONE
    for ctx in (sctx, cctx):
        ctx.minimum_version = ctx.maximum_version = version
    if hrr:
        sctx.set_ecdh_curve("secp384r1")     # the client's first key share is x25519: HelloRetryRequest
    bios = [ssl.MemoryBIO() for _ in range(4)]
    c = cctx.wrap_bio(bios[0], bios[1], server_hostname="server.example")
    s = sctx.wrap_bio(bios[2], bios[3], server_side=True)
    flights = []

    def pump():
        for src, dst, side in ((bios[1], bios[2], 0), (bios[3], bios[0], 1)):
            x = src.read()
            if x:
                flights.append((side, x))
                dst.write(x)

    done = set()
    for _ in range(10):
        for obj in (c, s):
            try:
                obj.do_handshake()
                done.add(id(obj))
            except ssl.SSLWantReadError:
                pass
        pump()
    assert len(done) == 2
    r = random.Random(2)
    for i in range(3):
        c.write(bytes(r.randrange(256) for _ in range(200 + 3000 * i)))
        pump()
        s.read(100000)
        s.write(bytes(r.randrange(256) for _ in range(9000 * (i + 1))))
        pump()
        try:
            while c.read(100000):
                pass
        except ssl.SSLWantReadError:
            pass
        pump()
    return flights


def _classes(stream: bytes) -> str:
    """Ground truth for a clean stream of records: 'k' keep (headers, handshake, CCS, alert), 'z' zero."""
    out, p = [], 0
    while p + 5 <= len(stream):
        t, ln = stream[p], int.from_bytes(stream[p + 3:p + 5], "big")
        out.append("k" * 5 + ("z" if t in (23, 24) else "k") * ln)
        p += 5 + ln
    assert p == len(stream)
    return "".join(out)


@pytest.mark.parametrize("case", ["tls13", "tls13_hrr_qinq_starttls", "tls12_v6_retrans_reorder"])
def test_real_tls_sessions(case, workdir):
    ssl = pytest.importorskip("ssl")
    version = ssl.TLSVersion.TLSv1_2 if "tls12" in case else ssl.TLSVersion.TLSv1_3
    flights = _tls_flights(workdir, version, hrr="hrr" in case)
    v6, vlans = "v6" in case, ((10, 20) if "qinq" in case else ())
    prefix = [(1, b"220 mail ESMTP\r\n"), (0, b"STARTTLS\r\n"), (1, b"220 go ahead\r\n")] if "starttls" in case else []
    r = random.Random(4)
    streams, frames = [b"", b""], []
    for side, blob in prefix + flights:
        base = len(streams[side])
        streams[side] += blob
        segs = [(base + o, tcp_frame((1000, 90000)[side] + base + o, blob[o:o + 1448], v6=v6, vlans=vlans,
                                     back=bool(side))) for o in range(0, len(blob), 1448)]
        if "reorder" in case and len(segs) > 2:
            i = r.randrange(len(segs) - 1)
            segs[i], segs[i + 1] = segs[i + 1], segs[i]
        if "retrans" in case:
            segs.insert(r.randrange(len(segs)) + 1, segs[r.randrange(len(segs))])
        frames += [(side, off, f) for off, f in segs]
    out, stage = run(recs([f for _, _, f in frames]), batch=50)
    plain = [len(b"".join(b for s, b in prefix if s == side)) for side in (0, 1)]
    classes = ["z" * plain[side] + _classes(streams[side][plain[side]:]) for side in (0, 1)]
    for (side, off, f), o in zip(frames, out):
        p, q = payload(f), payload(o[0])
        assert len(p) == len(q)
        for j, (x, y) in enumerate(zip(p, q)):
            assert y == (x if classes[side][off + j] == "k" else 0), (case, side, off + j)
        assert all(checksums_ok(o[0]))
    rep = stage.report()
    assert rep["tls_flows"] == 1 and rep["tls_resyncs"] == 0
    if "hrr" in case:
        assert rep["tls_records"]["handshake"] >= 4        # ClientHello, HRR, ClientHello, ServerHello
    if shutil.which("tshark") and VERIFY.is_file():
        src, dst = workdir / "in.pcap", workdir / "out.pcap"
        for path, rs in ((src, recs([f for _, _, f in frames])), (dst, out)):
            with open(path, "wb") as fh:
                w = CaptureWriter(fh, "pcap", struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
                w.write_batch(rs)
                w.close()
        p = subprocess.run([sys.executable, str(VERIFY), str(src), str(dst), "--mask", "-v"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        assert p.returncode == 0, p.stdout.decode()


# ---- TLS after plaintext: STARTTLS, HTTP CONNECT, PostgreSQL SSLRequest (samplegen conversations) --------
def _truth(messages, tls):
    """Per direction (0 client, 1 server): 'z' for every plaintext byte, then _classes of the TLS records."""
    out = []
    for side in (True, False):
        plain = b"".join(d for up, d in messages if up == side)
        records = b"".join(d for up, d in tls if up == side)
        out.append("z" * len(plain) + _classes(records))
    return out


def _check_conversation(frames, out, truth, port, ran=None):
    """Every payload byte of ``out`` against ``truth``. ``ran``: the frames that were masked, when not all of
    ``frames`` (whose SYN and SYN-ACK give the sequence bases)."""
    isn = {}
    for f in frames[:2]:
        t = walk(f, 1)[4][1]
        isn[int(struct.unpack_from("!H", f, t)[0] == port)] = struct.unpack_from("!I", f, t + 4)[0] + 1
    ran = frames if ran is None else ran
    assert len(ran) == len(out)
    for f, o in zip(ran, out):
        o = o[0]
        assert len(o) == len(f) and all(checksums_ok(o))
        _, t, pay, end, _, _ = walk(f, 1)[4]
        side = int(struct.unpack_from("!H", f, t)[0] == port)
        off = (struct.unpack_from("!I", f, t + 4)[0] - isn[side]) & 0xFFFFFFFF
        for j in range(end - pay):
            want = f[pay + j] if truth[side][off + j] == "k" else 0
            assert o[pay + j] == want, (side, off + j, truth[side][off + j])


def _decode_as_verifier(tmp: Path, ports):
    """verify.py's command with tshark told that ``ports`` carry TLS: tshark follows an upgrade only when
    it reads the plaintext exchange, which the output has zeroed (None where tshark or verify.py is missing)."""
    if not (shutil.which("tshark") and VERIFY.is_file()) or sys.platform == "win32":
        return None
    wrapper = tmp / "tshark-decode-as-tls"
    wrapper.write_text('#!/bin/sh\nexec tshark %s "$@"\n' % " ".join("-d tcp.port==%d,tls" % p for p in ports))
    wrapper.chmod(0o755)
    return [sys.executable, str(VERIFY), "--mask", "-v", "--tshark", str(wrapper)]


def _write_pair(tmp: Path, frames, out):
    src, dst = tmp / "in.pcap", tmp / "out.pcap"
    sampleconv.write_pcap(src, frames)
    sampleconv.write_pcap(dst, [o[0] for o in out])
    return src, dst


def _upgrade(proto, tls13):
    msgs = sampleconv.upgrade_messages(proto)
    tls = sampleconv.tls_flights(random.Random(5), tls13=tls13)
    return sampleconv.tcp_conversation(msgs + tls, sampleconv.UPGRADE_PORTS[proto], seed=len(proto), v6=not tls13), \
        _truth(msgs, tls)


@pytest.mark.parametrize("proto", sorted(sampleconv.UPGRADE_PORTS))
@pytest.mark.parametrize("tls13", [True, False])
def test_tls_after_plaintext_upgrade_keeps_the_handshake(proto, tls13):
    port = sampleconv.UPGRADE_PORTS[proto]
    frames, truth = _upgrade(proto, tls13)
    out, stage = run(recs(frames), batch=9)
    _check_conversation(frames, out, truth, port)
    rep = stage.report()
    assert rep["tls_flows"] == 1 and rep["tls_resyncs"] == 0
    assert rep["tls_records"]["handshake"] == (2 if tls13 else 5)
    out2, _ = run(recs(frames[3:]), batch=9)                  # the capture began after the SYNs
    _check_conversation(frames, out2, truth, port, ran=frames[3:])


def test_upgrades_pass_the_independent_verifier(workdir):
    """All the upgrades above in one capture, checked by verify.py (with Decode As on their ports)."""
    cmd = _decode_as_verifier(workdir, sampleconv.UPGRADE_PORTS.values())
    if cmd is None:
        pytest.skip("tshark or verify.py is missing (or Windows: the tshark wrapper is a shell script)")
    frames = [f for proto in sorted(sampleconv.UPGRADE_PORTS) for tls13 in (True, False)
              for f in _upgrade(proto, tls13)[0]]
    out, stage = run(recs(frames), batch=50)
    assert stage.report()["tls_flows"] == 16
    src, dst = _write_pair(workdir, frames, out)
    p = subprocess.run(cmd + [str(src), str(dst)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert p.returncode == 0, p.stdout.decode()
    assert re.search(r"mask\.tls_handshake\s+PASS", p.stdout.decode())      # compared, not skipped


@pytest.mark.parametrize("proto", sorted(sampleconv.UPGRADE_PORTS))
def test_refused_upgrade_and_the_plaintext_after_it_masked(proto):
    msgs = sampleconv.upgrade_messages(proto, accept=False)
    frames = sampleconv.tcp_conversation(msgs, sampleconv.UPGRADE_PORTS[proto], seed=7, mss=40)
    out, stage = run(recs(frames))
    assert all(not any(payload(o[0])) for o in out)
    assert stage.report()["tls_flows"] == 0


def test_plaintext_that_looks_like_tls_is_masked():
    """A STARTTLS refused with 454, then plaintext holding a chain of plausible TLS headers (a chain the
    resync rule accepts in a capture that began mid-connection): from the SYN on, TLS must open with a
    hello, so nothing is kept."""
    chain = b"\x16\x03\x01\x00\x05SECRE\x17\x03\x03\x00\x02TS\x16\x03\x01\x00\x03PIN"
    msgs = sampleconv.upgrade_messages("smtp", accept=False) + [(True, b"DATA\r\n"), (False, b"354 go ahead\r\n"),
                                                         (True, b"Subject: x\r\n\r\n" + chain)]
    frames = sampleconv.tcp_conversation(msgs, 25, seed=3)
    out, _ = run(recs(frames))
    assert all(not any(payload(o[0])) for o in out)
    # a fake header in the CONNECT request whose record ends exactly where the real ClientHello begins
    fake = b"\x16\x03\x01\x00\x0bsecret-hash"
    msgs = [(True, b"CONNECT www.example.com:443 HTTP/1.1\r\nX-Trace: " + fake),
            (False, b"HTTP/1.1 200 Connection established\r\n\r\n")]
    tls = sampleconv.tls_flights(random.Random(8))
    frames = sampleconv.tcp_conversation(msgs + tls, 3128, seed=4)
    out, _ = run(recs(frames))
    _check_conversation(frames, out, _truth(msgs, tls), 3128)


def test_connect_answered_407_then_retried_then_tls():
    refused = sampleconv.upgrade_messages("connect", accept=False)[:2]
    msgs = refused + sampleconv.upgrade_messages("connect")
    tls = sampleconv.tls_flights(random.Random(9), tls13=False)
    frames = sampleconv.tcp_conversation(msgs + tls, 3128, seed=5)
    out, stage = run(recs(frames))
    _check_conversation(frames, out, _truth(msgs, tls), 3128)
    assert stage.report()["tls_records"]["handshake"] == 5


def test_gap_in_the_plaintext_or_the_hello_before_tls():
    msgs = sampleconv.upgrade_messages("imap")
    tls = sampleconv.tls_flights(random.Random(10))
    frames = sampleconv.tcp_conversation(msgs + tls, 143, seed=6, mss=20)
    truth = _truth(msgs, tls)
    # the second plaintext segment from the server is lost: the ServerHello after the hole opens TLS
    server_plain = [i for i, f in enumerate(frames) if payload(f) and not payload(f).startswith(b"\x16")
                    and struct.unpack_from("!H", f, 34)[0] == 143]
    lost = server_plain[1]
    ran = frames[:lost] + frames[lost + 1:]
    out, stage = run(recs(ran))
    _check_conversation(frames, out, truth, 143, ran=ran)
    assert stage.report()["streams_with_gaps"] == 1
    # the first segment of the ClientHello is lost: the client's TLS stays masked (fail closed), the
    # server's is kept
    first_tls = next(i for i, f in enumerate(frames) if payload(f).startswith(b"\x16\x03\x01"))
    ran = frames[:first_tls] + frames[first_tls + 1:]
    out, _ = run(recs(ran))
    _check_conversation(frames, out, ["z" * len(truth[0]), truth[1]], 143, ran=ran)


# ---- real captures with TLS after plaintext (../shared/corpus-wild) ----------------------------------
UPGRADE_FILES = {"sv__tests_bug-2430_backwards.pcap": 8080,                # HTTP CONNECT, then TLS 1.2
                 "sv__tests_pgsql_pgsql-upgrade-tls_input.pcap": 5432,     # SSLRequest, 'S', TLS 1.2
                 "sv__tests_http-connect_http-connect-tls_input.pcap": 8002,   # CONNECT, an empty record
                 "sv__tests_http-connect_http-connect-fragmented_input.pcap": 8001,   # CONNECT, then HTTP
                 "sv__tests_ldap-extended_ldap.pcap": 389,                 # StartTLS asked and granted
                 "sv__tests_firewall_app-layer-protocol-negated-unknown-shortcircuit_input.pcap": 443}


def _tcp_directions(path: Path):
    """{(src, dst, sport, dport): [(frame index, stream offset, payload)]} of a small capture."""
    dirs, isn = {}, {}
    with CaptureReader(path) as r:
        frames = [rec[0] for b in r.batches() for rec in b if rec[1] >= 0]
    for i, f in enumerate(frames):
        w = walk(f, 1)
        l4 = w[4]
        if l4 is None or l4[0] != 6:
            continue
        ip = w[2][l4[4]]
        size = 4 if ip[1] == 4 else 16
        key = (f[ip[6]:ip[6] + size], f[ip[11]:ip[11] + size], f[l4[1]:l4[1] + 4])
        seq = struct.unpack_from("!I", f, l4[1] + 4)[0]
        if f[l4[1] + 13] & 2:
            isn[key] = seq + 1
            continue
        base = isn.setdefault(key, seq)
        dirs.setdefault(key, []).append((i, (seq - base) & 0xFFFFFFFF, f[l4[2]:l4[3]]))
    return frames, dirs


@pytest.mark.parametrize("name", sorted(UPGRADE_FILES))
def test_wild_captures_with_tls_after_plaintext(name, workdir):
    """Byte by byte against verify.py's own TLS walker (independent of tshark): plaintext and application
    data zero, record headers, handshake, CCS and alerts kept; then verify.py itself, with tshark told
    that the port carries TLS."""
    if not WILD.is_dir():
        pytest.skip(f"wild corpus not present at {WILD} (a fresh clone has no ../shared)")
    if not VERIFY.is_file():
        pytest.skip("verify.py not present at %s" % VERIFY)
    import importlib.util
    spec = importlib.util.spec_from_file_location("verify_oracle", VERIFY)
    v = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(v)
    src, dst = workdir / name, workdir / ("out-" + name)
    shutil.copyfile(WILD / name, src)
    mask_file(src, dst)
    frames, dirs = _tcp_directions(src)
    outs, _ = _tcp_directions(dst)
    kept = 0
    for segs in dirs.values():
        end = max(o + len(d) for _, o, d in segs)
        buf, have = bytearray(end), bytearray(end)
        for _, o, d in segs:
            for j, b in enumerate(d):
                if not have[o + j]:
                    buf[o + j], have[o + j] = b, 1
        cls, _ = v.walk_tls(buf, have)
        for i, o, d in segs:
            out = outs[i]
            w = walk(out, 1)[4]
            got = out[w[2]:w[3]]
            for j, b in enumerate(d):
                c = cls[o + j]
                if c in (v.C_HDR, v.C_HS, v.C_CCS, v.C_ALERT, v.C_SSL2):
                    assert got[j] == b, (name, i, j, c)
                    kept += c == v.C_HS
                else:
                    assert got[j] == 0, (name, i, j, c)
    if name in ("sv__tests_bug-2430_backwards.pcap", "sv__tests_pgsql_pgsql-upgrade-tls_input.pcap"):
        assert kept > 1000                                    # the handshakes are there
    cmd = _decode_as_verifier(workdir, [UPGRADE_FILES[name]])
    if cmd and name in ("sv__tests_bug-2430_backwards.pcap", "sv__tests_pgsql_pgsql-upgrade-tls_input.pcap"):
        p = subprocess.run(cmd + [str(src), str(dst)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=300)
        assert p.returncode == 0, p.stdout.decode()


def test_icmp_redirect_gateway_is_not_an_extension_length():
    inner = sg.ipv4(A4, B4, 17, sg.udp(A4, B4, 53, 5353, rnd(200, 15)))
    red = sg.icmp(5, 1, bytes([10, 0, 40, 0]), inner)                          # gateway byte 5 = 40 "words"
    f = sg.ip_frame(sg.ipv4(B4, A4, 1, red))
    o = run(recs([f]))[0][0][0]
    q = 14 + 20 + 8
    assert not any(o[q + 28:]) and o[q:q + 26] == f[q:q + 26]
    assert all(checksums_ok(o))


def test_tls_confirmed_by_the_end_of_the_stream_with_fin():
    plain = b"STARTTLS\r\n"
    f1 = tcp_frame(1, plain)
    f2 = tcp_frame(1 + len(plain), CH, flags=0x19)          # the ClientHello, then FIN
    out, _ = run(recs([f1, f2]))
    assert not any(payload(out[0][0])) and payload(out[1][0]) == CH


def test_link_layer_trailer_zeroed_only_when_not_already_zero():
    ack = tcp_frame(1, b"", 0x10) + bytes(6)                    # padded to 60 bytes with zeros
    leaky = sg.ip_frame(sg.ipv4(A4, B4, 17, sg.udp(A4, B4, 1, 2, b"ab"))) + b"SECRET!!"
    out, stage = run(recs([ack, leaky]))
    assert out[0][0] is ack
    o = out[1][0]
    assert len(o) == len(leaky) and o[-8:] == bytes(8) and not any(payload(o))
    assert all(checksums_ok(o))
    assert stage.report()["bytes_masked"] == 2 + 8


def test_ones_sum_folding_matches_the_plain_residue():
    # _osum folds long payloads before dividing: the residue must be the plain one for every length
    from pktmask_gui.checksum import osum as _osum
    rnd = random.Random(11)
    for n in list(range(0, 300)) + [255, 256, 257, 1460, 1461, 8999, 65535, 65536, 70001]:
        for b in (bytes(rnd.randrange(256) for _ in range(n)), b"\xff" * n):
            plain = int.from_bytes(b, "big") << (8 if n & 1 else 0)
            assert _osum(b) == plain % 0xFFFF
            assert _osum(memoryview(b)) == plain % 0xFFFF


# ---- bounded state: directions closed and freed --------------------------------------------------------
def _key(v6=False, sport=40000, dport=443):
    src, dst = (A6, B6) if v6 else (A4, B4)
    return src + dst + struct.pack("!HH", sport, dport)


def test_flow_closed_by_fin_then_the_same_four_tuple_reused():
    s1, c1 = layout([CH, APP[0]])
    s2, c2 = layout([CH, APP[2]])
    first = segments(s1, [700], 1000)
    second = segments(s2, [1000], 90000)
    fin1 = tcp_frame(1001 + len(s1), b"", 0x11)
    frames = [tcp_frame(1000, b"", 0x02)] + [f for _, f in first] + [fin1] + \
        [tcp_frame(90000, b"", 0x02)] + [f for _, f in second] + [tcp_frame(90001 + len(s2), b"", 0x11)]
    records = recs(frames)
    stage = MaskStage({}, StageContext())
    stage.prescan(records)
    stage._end_prescan()
    assert stage.live == {}                                  # both instances closed by their FIN
    assert isinstance(stage.tls[_key()], tuple) and len(stage.tls[_key()]) == 2
    out = stage.process(records)
    assert stage.tls == {}                                   # every entry used, then dropped
    n1 = len(first)
    check_stream([o[0] for o in out[1:1 + n1]], [o for o, _ in first], s1, c1)
    check_stream([o[0] for o in out[3 + n1:3 + n1 + len(second)]], [o for o, _ in second], s2, c2)
    assert stage.report()["tls_flows"] == 2


def test_segment_after_the_fin_is_classified_strictly():
    stream, cls = layout([CH, APP[0]])
    segs = segments(stream, [600], 1)
    last_off, last = segs[-1]
    segs[-1] = (last_off, tcp_frame(2 + last_off, stream[last_off:], flags=0x19))   # data + FIN
    # after the FIN: something that looks like a handshake record at its first byte, but no header follows
    # it where it ends and the data goes on (a record boundary a new stream start would have believed)
    late = rec(22, rnd(100, 7)) + rnd(300, 8)
    resent = stream[len(CH):len(CH) + 600]                   # an application data segment sent again
    frames = [f for _, f in segs] + [tcp_frame(2 + len(stream) + 5000, late),
                                     tcp_frame(2 + len(CH), resent)]
    out, stage = run(recs(frames))
    check_stream([o[0] for o in out[:len(segs)]], [o for o, _ in segs], stream, cls)
    assert not any(payload(out[-2][0]))
    p = payload(out[-1][0])
    assert not any(p[5:]) and all(checksums_ok(out[-1][0]))


def test_state_stays_bounded_over_many_sequential_flows(monkeypatch):
    from pktmask_gui.stages import mask as mask_module
    monkeypatch.setattr(mask_module, "SWEEP_EVERY", 64)
    client, ccls = layout([CH, APP[1]])
    server, scls = layout([SH, APP[0]])
    frames, expect = [], []
    for flow in range(300):
        port = 20000 + flow
        cs = [off for off, _ in segments(client, [150], 1000)]
        ss = [off for off, _ in segments(server, [1448], 5000)]
        frames += [tcp_frame(1000, b"", 0x02, sport=port), tcp_frame(5000, b"", 0x12, back=True, sport=port)]
        expect += [(len(frames) + k, off, client, ccls) for k, off in enumerate(cs)]
        frames += [tcp_frame(1001 + off, client[off:off + 150], sport=port) for off in cs]
        expect += [(len(frames) + k, off, server, scls) for k, off in enumerate(ss)]
        frames += [tcp_frame(5001 + off, server[off:off + 1448], back=True, sport=port) for off in ss]
        frames += [tcp_frame(1001 + len(client), b"", 0x11, sport=port),
                   tcp_frame(5001 + len(server), b"", 0x11, back=True, sport=port)]
    records = recs(frames)
    stage = MaskStage({}, StageContext())
    most = 0
    for i in range(0, len(records), 50):
        stage.prescan(records[i:i + 50])
        most = max(most, len(stage.live))
    assert most <= 4                                         # open directions: this flow's, not all of them
    out = []
    for i in range(0, len(records), 50):
        out += stage.process(records[i:i + 50])
        most = max(most, len(stage.live))
    assert most <= 2 * (64 + 50) // 5                        # what the last sweep window can hold
    assert stage.tls == {}
    for idx, off, stream, cls in expect:
        check_stream([out[idx][0]], [off], stream, cls)
    assert stage.report()["tls_flows"] == 300


def test_live_limit_closes_idle_directions_and_fails_closed(monkeypatch):
    from pktmask_gui.stages import mask_prescan
    monkeypatch.setattr(mask_prescan, "LIVE_LIMIT", 8)
    stream, cls = layout([CH, APP[0], APP[2], APP[1]])
    per_flow = [segments(stream, [700], 1000) for _ in range(40)]
    frames, where = [], []
    for flow in range(40):
        frames.append(tcp_frame(1000, b"", 0x02, sport=30000 + flow))
    for k in range(len(per_flow[0])):                        # every flow sends its k-th segment in turn
        for flow in range(40):
            off, _ = per_flow[flow][k]
            frames.append(tcp_frame(1001 + off, stream[off:off + 700], sport=30000 + flow))
            where.append((len(frames) - 1, off))
    records = recs(frames)
    stage = MaskStage({}, StageContext())
    for i in range(0, len(records), 16):
        stage.prescan(records[i:i + 16])
        assert len(stage.live) <= 8
    out = []
    for i in range(0, len(records), 16):
        out += stage.process(records[i:i + 16])
    for idx, off in where:
        p = payload(out[idx][0])
        assert all(b == 0 for j, b in enumerate(p) if cls[off + j] == "z")    # never application data
        assert all(checksums_ok(out[idx][0]))


def test_bytes_after_the_udp_length_inside_the_ip_packet_are_masked():
    dgram = sg.udp(A4, B4, 1000, 2000, b"hello")               # UDP length 13 ...
    frame = sg.ip_frame(sg.ipv4(A4, B4, 17, dgram + b"SECRET"))        # ... inside an IP packet 6 bytes longer
    out, stage = run(recs([frame]))
    o = out[0][0]
    assert len(o) == len(frame) and o[-11:] == bytes(11)
    assert o[:-11] == frame[:14 + 20 + 6] + o[40:42] + frame[42:-11]
    assert all(checksums_ok(o))
    assert stage.report()["bytes_masked"] == 11


@pytest.mark.parametrize("big", [False, True])
def test_packed_ranges_read_back_in_the_main_pass(big):
    from pktmask_gui.stages import mask as m
    from pktmask_gui.tcpstream import RangeMap
    shift = 5 << 30 if big else 0                          # past four gigabytes of stream: 64-bit numbers
    keep, resent = RangeMap(), RangeMap()
    for a in (0, 700, 1400):
        keep.add(shift + a, shift + a + 5)
    resent.add(shift + 690, shift + 720)
    stage = MaskStage({}, StageContext())
    st = [123456, 10, 20, 30, keep, None, resent, False]   # base, high, first frame, last frame, ...
    stage.live[b"k"] = st
    stage._close(b"k", st)
    assert stage.live == {} and len(stage.tls[b"k"]) < 120
    got = stage._activate(b"k", 25)
    assert got[m.S_FIRST:m.S_HIGH] == [20, 30, 123456]
    assert list(got[m.S_STARTS]) == list(keep.starts) and list(got[m.S_ENDS]) == list(keep.ends)
    assert list(got[m.S_OVS]) == [shift + 690] and list(got[m.S_OVE]) == [shift + 720]
    assert stage.tls == {} and stage._activate(b"k", 31) is None


# ---- the zeroed ranges' sums, one numpy reduction per batch ------------------------------------------------

def test_range_sums_equal_the_per_range_sums():
    """checksum.range_sums (numpy, the batch's ranges at once) gives checksum.osum of each range aligned on its
    checksum's words, for every start parity and length, the first and the last range included."""
    from pktmask_gui import checksum
    r = random.Random(7)
    zeroing = []
    for k in range(400):
        data = bytes(r.randrange(256) for _ in range(r.randrange(1, 300)))
        a = r.randrange(len(data))
        b = r.randrange(a + 1, len(data) + 1)
        t = r.randrange(a + 1)
        zeroing.append((k, (data, 1, 0, len(data), 0, None), a, b, 0, False, t))
    want = [checksum.osum(b"\0" + rec[0][a:b] if (a - t) & 1 else rec[0][a:b])
            for _k, rec, a, b, _cs, _u, t in zeroing]
    assert checksum.range_sums(zeroing) == want
    # the big-integer sum of a range read from an odd offset is the even sum moved by a byte
    for _k, rec, a, b, _cs, _u, _t in zeroing[:50]:
        even = checksum.osum(rec[0][a:b])
        assert checksum.osum(b"\0" + rec[0][a:b]) == (even << 8) % 0xFFFF


@pytest.mark.parametrize("trim", [False, True])
def test_batched_sums_give_the_bytes_of_frame_by_frame_sums(trim):
    """Batches above and below checksum.BATCH_SUMS (numpy reduction or osum per range) write the same
    frames, and every checksum the input had right is still right; a wrong one stays wrong."""
    stream, _cls = layout([CH, SH, CCS] + APP * 6)
    frames = [f for _off, f in segments(stream, [100, 1460, 7, 999, 1], 1000)
              + segments(stream, [1400, 3], 5000, v6=True)]
    bad = bytearray(frames[-2])
    bad[-3] ^= 0xFF                                   # a payload byte changed after the checksum: now wrong
    frames[-2] = bytes(bad)
    mode = "trim" if trim else "zero"
    big, _ = run(recs(frames), batch=len(frames), mode=mode)
    small, _ = run(recs(frames), batch=3, mode=mode)
    assert [r[0] for r in big] == [r[0] for r in small]
    if not trim:                                      # a cut segment's sum cannot be recomputed from it
        for before, after in zip(frames, big):
            assert checksums_ok(after[0]) == checksums_ok(before)
        assert checksums_ok(big[-2][0]) == [False]       # the TCP sum of the changed frame: still wrong


def _fold(total: int) -> int:
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _osum16(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    return _fold(sum(struct.unpack(f"!{len(data) // 2}H", data)))


def _residual(frame: bytes, o: int, v6: bool, proto: int) -> int:
    """Ones'-complement sum of pseudo-header + segment (0xFFFF when the transport checksum is right)."""
    t = o + (40 if v6 else 20)
    if v6:
        src, dst = frame[o + 8:o + 24], frame[o + 24:o + 40]
    else:
        src, dst = frame[o + 12:o + 16], frame[o + 16:o + 20]
    seg = frame[t:]
    pseudo_header = src + dst + struct.pack("!IxxxB", len(seg), proto) if v6 else \
        src + dst + struct.pack("!xBH", proto, len(seg) & 0xFFFF)
    total = _osum16(pseudo_header) + _osum16(seg)
    if not v6 and len(seg) > 0xFFFF:                  # TSO frame: the length the checksum would take
        total += len(seg) >> 16
    return _fold(total)


def _random_frame(rng, v6: bool, vlan: bool, proto: int, size: int, state: str, tso: bool = False) -> tuple:
    """A frame with random addresses, ports and payload whose transport checksum is right, wrong or (UDP) 0;
    a TSO frame (IPv4 total length 0, segment above 64 KiB) when asked. Returns (frame, IP offset,
    transport offset, checksum offset in the transport header)."""
    eth_head = b"\x02" * 6 + b"\x04" * 6 + (b"\x81\x00\x00\x07" if vlan else b"")
    o = len(eth_head) + 2
    body = rng.randbytes(size)
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", 40000 + rng.randrange(1000), 8080, rng.randrange(1 << 32), 0, 0x50,
                         0x18, 1000, 0, 0) + body
        cs_at = 16
    else:
        l4 = struct.pack("!HHHH", 40000 + rng.randrange(1000), 9999, 8 + len(body), 0) + body
        cs_at = 6
    if v6:
        ip = struct.pack("!IHBB", 0x60000000, len(l4), proto, 64) + rng.randbytes(32)
        frame = bytearray(eth_head + b"\x86\xdd" + ip + l4)
    else:
        tot = 0 if tso else 20 + len(l4)
        ip = bytearray(struct.pack("!BBHHHBBH", 0x45, 0, tot, 1, 0, 64, proto, 0) + rng.randbytes(8))
        struct.pack_into("!H", ip, 10, 0xFFFF - _osum16(bytes(ip)))
        frame = bytearray(eth_head + b"\x08\x00" + ip + l4)
    t = o + (40 if v6 else 20)
    if not (proto == 17 and state == "zero"):
        cs = 0xFFFF - _residual(bytes(frame), o, v6, proto)
        if proto == 17 and cs == 0:
            cs = 0xFFFF
        struct.pack_into("!H", frame, t + cs_at, cs)
        if state == "wrong":
            frame[t + cs_at + 1] ^= 0x5A
    return bytes(frame), o, t, cs_at


@pytest.mark.parametrize("mode", ["zero", "trim"])
@pytest.mark.parametrize("batch_sums", [16, 1 << 30])
def test_masked_checksums_match_a_from_scratch_sum(mode, batch_sums, monkeypatch):
    """Batches mixing IPv4 / IPv6, VLAN, TCP / UDP, odd and even payload lengths, ranges above 64 KiB (a
    TSO frame), UDP without checksum, right and wrong checksums; through the numpy reduction (16) and the
    per-range sums: every payload byte gone, a right checksum right against a from-scratch sum, a wrong one
    wrong by the same amount, a UDP 0 still 0."""
    from pktmask_gui import checksum
    monkeypatch.setattr(checksum, "BATCH_SUMS", batch_sums)
    rng = random.Random(99)
    built = []
    for i in range(120):
        v6, vlan, proto = rng.random() < 0.4, rng.random() < 0.3, rng.choice([6, 17])
        state = rng.choice(["right", "right", "wrong"] + (["zero"] if proto == 17 else []))
        size = rng.choice([1, 2, 3, 57, 1000, 1461])
        tso = i % 40 == 7 and not v6 and proto == 6
        if tso:
            size = rng.choice([70001, 65536 + 2, 131072])
        built.append(_random_frame(rng, v6, vlan, proto, size, state, tso) + (v6, proto, state))
    records = [(f[0], 1, i, len(f[0]), 0, None) for i, f in enumerate(built)]
    stage = MaskStage({"mode": mode}, StageContext())
    stage.prescan(records)
    out = stage.process(records)
    assert len(out) == len(records)
    for (frame, o, t, cs_at, v6, proto, state), rec in zip(built, out):
        data = rec[0]
        pay = t + (20 if proto == 6 else 8)
        if mode == "trim" and len(data) < len(frame):
            assert len(data) == pay
            continue
        assert len(data) == len(frame) and not any(data[pay:])
        stored = data[t + cs_at:t + cs_at + 2]
        if state == "zero":
            assert stored == b"\0\0"
        elif state == "right":
            assert _residual(data, o, v6, proto) == 0xFFFF, (v6, proto, len(frame))
        else:
            assert _residual(data, o, v6, proto) == _residual(frame, o, v6, proto) != 0xFFFF
