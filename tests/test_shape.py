"""A frame's shape, decided in one place (shape.py), checked on the real-world cases that broke it: a guess by
port or by content must validate, a service port wins, tunnels whose source port is a flow hash are named by
their destination port only; the encapsulations and quoted headers of real captures are walked; and every
fast path (frames.walk's, the anonymizer's, the masker's) answers as the general walk on random frames."""
from __future__ import annotations

import random
import struct

import pytest

import pktmask_gui.stages.mask as mask_module
import pktmask_gui.stages.mask_prescan as mask_prescan
from pktmask_gui import frames, sampleconv, samplegen as sg, shape, wildgen as wg
from pktmask_gui.cryptopan import CryptoPAn
from pktmask_gui.frames import F_QUOTED, OK, W_ADDRS, W_BLIND, W_IPS, walk
from pktmask_gui.stages import StageContext
from pktmask_gui.stages.anonymize import AnonymizeStage
from pktmask_gui.stages.mask import MaskStage

import test_frames as tf

KEY = bytes(range(32))
REF = CryptoPAn(KEY)
A, B, C, D = "10.11.0.1", "10.11.0.2", "192.0.2.77", "198.51.100.9"
TUNNEL_PORTS = (1701, 2152, 3544, 4341, 4789, 4790, 6081, 6635, 8472)


def recs(frames_, linktype=1):
    return [(f, linktype, i, len(f), 0, None) for i, f in enumerate(frames_)]


def anonymized(frames_, linktype=1, **options):
    stage = AnonymizeStage(options, StageContext(key=KEY))
    return [r[0] for r in stage.process(recs(frames_, linktype))], stage


def masked(frames_, **options):
    stage = MaskStage(options, StageContext())
    batch = recs(frames_)
    stage.prescan(batch)
    return [r[0] for r in stage.process(batch)], stage


def ip(text) -> bytes:
    return sg._addr(text)


def mapped(text) -> bytes:
    a = ip(text)
    return REF.anonymize_v4(int.from_bytes(a, "big")).to_bytes(4, "big")


def listed(frame, linktype=1) -> set:
    """The address values (whole ones) walk() lists in a frame."""
    w = walk(frame, linktype)
    return {bytes(frame[o:o + s]) for o, s, p in w[W_ADDRS] if p == s * 8}


def same_but_checksums(a: bytes, b: bytes, w, upto: int) -> bool:
    """``a`` and ``b`` hold the same bytes before ``upto``, checksum fields (of walk result ``w``) aside."""
    skip = {k for c in w[5] for k in (c[0], c[0] + 1)}
    return all(a[k] == b[k] for k in range(upto) if k not in skip)


def checksums_valid(frame, linktype=1) -> None:
    """Every checksum walk() lists, outside quoted headers (cut short by design), computed from scratch."""
    w = walk(frame, linktype)
    quoted = [(x[0], x[5]) for x in w[W_IPS] if x[8] & F_QUOTED]
    tf.assert_checksums_valid(frame, w[:5] + ([c for c in w[5] if not any(a <= c[0] < b for a, b in quoted)],)
                              + w[6:])


# ---- a service port wins; a guess must validate ----------------------------------------------------
@pytest.mark.parametrize("port", TUNNEL_PORTS)
def test_a_dns_query_from_a_tunnels_port_is_dns_not_a_tunnel(port):
    # resolvers pick random source ports, NAT rewrites them: a DNS query from 6635 once read as MPLS over
    # UDP failed whole captures ("EtherType 0x6f00 is not supported")
    query = sg.udp4_frame(A, B, port, 53, sg.dns_query(0x6f00 + port % 256, "localdomain.localdomain"))
    answer = sg.udp4_frame(B, A, 53, port, sg.dns_response(0x6f00, "host.example.com", [C]))
    for f in (query, answer):
        w = walk(f, 1)
        assert w[0] == OK and len(w[W_IPS]) == 1 and w[4][:2] == (17, 34)
        assert shape.usual(f) == (shape.UDP_DNS, 14, 34, len(f)) == shape.usual(f, 1)
    assert ip(C) in listed(answer)
    out, stage = anonymized([query, answer])
    assert mapped(C) in out[1] and ip(C) not in out[1][42:]
    out, stage = masked([query, answer])
    assert not any(out[0][42:]) and not any(out[1][42:])


def test_a_dns_query_that_looks_like_an_ipv6_header_stays_dns():
    # ID 0x6xxx and one question: bytes 4-5 read as an IPv6 payload length of 1 in a 41-byte datagram
    # (Teredo by content); the walker kept 40 "header" bytes and the query name survived masking
    msg = struct.pack("!HHHHHH", 0x6abc, 0x0100, 1, 0, 0, 0) + b"\x0blocaldomain\x00\x00\x01\x00\x01"
    msg = msg[:41] + bytes(41 - len(msg))
    assert len(msg) == 41
    dns = sg.udp4_frame(A, B, 40001, 53, msg)
    out, _ = masked([dns])
    assert not any(out[0][42:])
    # the same bytes between two ports that name nothing: the guess must validate, and it does not
    plain = sg.udp4_frame(A, B, 40001, 50001, msg)
    assert shape.usual(plain)[0] == shape.UDP and len(walk(plain, 1)[W_IPS]) == 1


@pytest.mark.parametrize("port,header", [(4789, struct.pack("!II", 0x08000000, 0x000100)),
                                         (6081, struct.pack("!HHI", 0, 0x6558, 0x000100))])
def test_flow_hash_tunnels_are_named_by_their_destination_port_only(port, header):
    inner = sg.tcp4_frame(C, D, 40000, 443, 1, 1, sg.ACK, b"x" * 20)
    to_port = sg.udp4_frame(A, B, 50000, port, header + inner)
    from_port = sg.udp4_frame(A, B, port, 50000, header + inner)
    assert ip(C) in listed(to_port) and ip(D) in listed(to_port)
    assert listed(from_port) == {ip(A), ip(B)}
    out, _ = masked([to_port, from_port])
    assert out[0][:len(to_port) - 20] == to_port[:-20][:42] + out[0][42:len(to_port) - 20]   # headers kept
    assert not any(out[1][42:])                      # the source-port "tunnel" is plain payload, masked


def test_a_tunnel_guess_that_does_not_validate_is_plain_payload():
    junk = bytes(range(7, 47))
    inner = sg.ipv4(C, D, 17, sg.udp(C, D, 1000, 2000, b"hello"))
    cases = [
        sg.udp4_frame(A, B, 50000, 4789, junk),                                       # no Ethernet inside
        sg.udp4_frame(A, B, 2152, 2152, struct.pack("!BBHI", 0x30, 0xFF, 99, 1) + inner),     # GTP length lies
        sg.udp4_frame(A, B, 2152, 2152, struct.pack("!BBHI", 0x30, 0x01, len(inner), 1) + inner),  # not a G-PDU
        sg.udp4_frame(A, B, 50000, 6635, struct.pack("!I", 0x100) + junk),           # MPLS, then no IP
        sg.udp4_frame(A, B, 40000, 50000, sg.ipv6("2001:db8::1", "2001:db8::2", 59, b"") + b"x"),   # Teredo? no
    ]
    for f in cases:
        w = walk(f, 1)
        assert w[0] == OK and len(w[W_IPS]) == 1 and w[4][:3] == (17, 34, 42), f.hex()
    teredo = sg.udp4_frame(A, B, 40000, 50000, sg.ipv6("2001:db8::1", "2001:db8::2", 59, b""))
    assert len(walk(teredo, 1)[W_IPS]) == 2                           # a guess that validates is taken
    assert len(walk(sg.udp4_frame(A, B, 40000, 161, sg.ipv6("2001:db8::1", "2001:db8::2", 59, b"")), 1)[W_IPS]) == 1


# ---- encapsulations of real captures -------------------------------------------------------------------
@pytest.mark.parametrize("how", wg.ENCAPSULATIONS)
@pytest.mark.parametrize("v6", [False, True])
def test_every_encapsulation_is_walked_mapped_and_masked(how, v6):
    if v6:
        inner = sg.tcp6_frame("2001:db8:5::1", "2001:db8:5::2", 40000, 443, 1, 1, sg.ACK | sg.PSH, b"secret" * 5)
        addrs = {ip("2001:db8:5::1"), ip("2001:db8:5::2")}
    else:
        inner = sg.tcp4_frame(C, D, 40000, 443, 1, 1, sg.ACK | sg.PSH, b"secret" * 5)
        addrs = {ip(C), ip(D)}
    f = wg.encapsulate(inner, how)
    w = walk(f, 1)
    assert w[0] == OK and addrs <= listed(f) and w[4][0] == 6
    out, stage = anonymized([f])
    assert not any(a in out[0] for a in addrs)
    checksums_valid(out[0])
    assert not stage.report().get("frames_zeroed_unreadable")
    out, _ = masked([f])
    assert b"secret" not in out[0] and same_but_checksums(f, out[0], w, w[4][2])   # every header kept
    checksums_valid(out[0])


def test_raw_ip_link_types_follow_the_version_nibble():
    six = sg.ipv6("2001:db8::1", "2001:db8::2", 17, sg.udp("2001:db8::1", "2001:db8::2", 1, 2, b"x"))
    for linktype in (228, 229, 101):
        w = walk(six, linktype)
        assert w[0] == OK and w[1] == "IPv6" and ip("2001:db8::1") in listed(six, linktype)
    out, _ = anonymized([six], 228)
    assert ip("2001:db8::1") not in out[0]


def test_an_unknown_ethertype_in_a_vlan_is_zeroed_after_the_tag_and_the_capture_goes_on():
    odd = sg.eth("02:00:00:00:00:02", "02:00:00:00:00:01", 0x8100, sg.vlan(7, 0xFBB7, b"\x01" * 40))
    good = sg.tcp4_frame(A, B, 1, 2, 1, 1, sg.ACK, b"data")
    out, stage = anonymized([odd, good])
    assert out[0] == odd[:18] + bytes(40) and stage.report()["frames_zeroed_unreadable"] == {
        "EtherType 0xfbb7 is not supported": 1}
    deep = sg.eth("02:00:00:00:00:02", "02:00:00:00:00:01", 0x8100,
                  b"".join(struct.pack("!HH", 5, 0x8100) for _ in range(300)) + b"\x00" * 20)
    w = walk(deep, 1)
    assert w[0] == frames.UNINSPECTABLE and "nested headers" in w[1] and w[W_BLIND][0][0] > 14


# ---- headers quoted for other packets: sFlow and NetFlow -------------------------------------------------
def _sflow_frame():
    sampled = sg.tcp4_frame(C, D, 40000, 443, 7, 9, sg.ACK | sg.PSH, b"sampled secret payload")
    url = wg.sflow_record(1005, struct.pack("!I", 19) + b"http://intranet/x/y")
    flow = wg.sflow_flow_sample([wg.sflow_raw_header(sampled), wg.sflow_ipv4_record("10.20.0.1", "10.20.0.2", 1, 2),
                                 url])
    counters = wg.sflow_counter_sample([wg.sflow_record(1, bytes(88)), wg.sflow_record(2001, bytes(12))])
    return sg.udp4_frame("10.30.0.1", "10.30.0.9", 50000, 6343, wg.sflow_datagram("10.30.0.1", [flow, counters]))


def test_sflow_sampled_headers_are_walked_and_unknown_records_zeroed():
    f = _sflow_frame()
    w = walk(f, 1)
    assert {ip(C), ip(D), ip("10.20.0.1"), ip("10.20.0.2"), ip("10.30.0.1")} <= listed(f)
    reasons = sorted(r for _s, _e, r in w[W_BLIND])
    assert reasons == ["sFlow counter record of format 2001", "sFlow flow record of format 1005"]
    out, stage = anonymized([f])
    for a in (C, D, "10.20.0.1", "10.20.0.2", "10.30.0.1"):
        assert ip(a) not in out[0] and mapped(a) in out[0]
    assert b"intranet" not in out[0] and b"sampled secret payload" in out[0]
    assert stage.report()["frames_zeroed_unreadable"] == {"sFlow counter record of format 2001": 1,
                                                          "sFlow flow record of format 1005": 1}
    checksums_valid(out[0])
    out, _ = masked([f])
    sample_tcp = f.index(ip(D)) + 4                    # the sampled TCP header, right after its IP header
    assert out[0][sample_tcp:sample_tcp + 16] == f[sample_tcp:sample_tcp + 16]     # kept (its checksum aside)
    assert b"sampled secret payload" not in out[0] and b"intranet" not in out[0]
    assert out[0][42:sample_tcp] == f[42:sample_tcp]                                 # the sFlow fields kept
    checksums_valid(out[0])


def test_netflow_v5_addresses_are_mapped_and_v9_records_without_a_layout_zeroed():
    v5 = sg.udp4_frame(A, B, 50000, 2055, wg.netflow_v5([("10.40.0.1", "10.40.0.2", "10.40.0.3")]))
    v9 = sg.udp4_frame(A, B, 50000, 2055, wg.netflow_v9(300, ip("10.41.0.1") + ip("10.41.0.2") + bytes(4)))
    out, stage = anonymized([v5, v9])
    for a in ("10.40.0.1", "10.40.0.2", "10.40.0.3"):
        assert mapped(a) in out[0]
    assert ip("10.41.0.1") not in out[1] and out[1][42:90] == v9[42:90] and not any(out[1][90:])   # template kept
    assert "NetFlow v9 data records (their template is not read)" in stage.report()["frames_zeroed_unreadable"]
    checksums_valid(out[0])
    checksums_valid(out[1])


# ---- fragments ------------------------------------------------------------------------------------------
def _reassembled(frame_list) -> bytes:
    return b"".join(f[34:] for f in frame_list)


def test_the_first_fragment_is_walked_like_a_whole_packet():
    big = sg.udp4_frame(C, D, 40000, 9999, b"z" * 300)
    pieces = wg.fragment(wg.encapsulate(big, "gtpu"), 96)
    assert {ip(C), ip(D)} <= listed(pieces[0])
    out, _ = anonymized(pieces)
    assert ip(C) not in out[0] and mapped(C) in out[0]
    data = _reassembled(out)
    gtp_inner = data[16:]                                             # UDP 8 + GTP 8, then the inner packet
    assert gtp_inner[12:16] == mapped(C) and sg.checksum(gtp_inner[:20]) == 0
    out, _ = masked(pieces)
    data, before = _reassembled(out), _reassembled(pieces)
    assert data[:6] == before[:6] and data[8:42] == before[8:42] and not any(data[44:])   # headers kept
    outer = bytes(ip("172.31.255.1") + ip("172.31.255.2")) + struct.pack("!BBH", 0, 17, len(data))
    assert sg.checksum(outer + data) == 0                             # the outer UDP checksum still holds


def test_a_tcp_header_spread_over_small_fragments_is_kept():
    syn = sg.tcp4_frame(A, B, 12345, 8080, 0, 0, sg.SYN, b"", ident=1)
    pieces = wg.fragment(syn, 8)
    assert len(pieces) == 3
    out, _ = masked(pieces)
    assert out == pieces
    out, _ = anonymized(pieces)
    tcp = _reassembled(out)
    pseudo = mapped(A) + mapped(B) + struct.pack("!BBH", 0, 6, len(tcp))
    assert sg.checksum(pseudo + tcp) == 0                             # the checksum in the last piece updated


# ---- every fast path answers as the general walk -----------------------------------------------------
def _shapes() -> list:
    a6, b6 = "2001:db8::1", "2001:db8::2"
    tcp = sg.tcp4_frame(A, B, 40000, 443, 1, 1, sg.ACK, b"\x17\x03\x03\x00\x05hello")
    out = [tcp, sg.tcp6_frame(a6, b6, 40000, 443, 1, 1, sg.ACK, b"GET / HTTP/1.1\r\n"),
           sg.tcp4_frame(A, B, 53, 40000, 1, 1, sg.ACK, b"\x00\x1e" + sg.dns_response(1, "a.b", [C])),
           sg.udp4_frame(A, B, 40000, 50000, b"\x17\x03\x03data"),
           sg.udp6_frame(a6, b6, 5353, 5353, sg.dns_query(1, "x.local")),
           sg.udp4_frame(A, B, 40000, 50000, sg.ipv6(a6, b6, 59, b"")),
           sg.udp4_frame(A, B, 68, 67, b"\x01\x01\x06\x00" + bytes(300)),
           sg.eth("02:00:00:00:00:02", "02:00:00:00:00:01", 0x0800, sg.ipv4(A, B, 1, sg.icmp_echo(1, 2, b"ping"))),
           sg.eth("02:00:00:00:00:02", "02:00:00:00:00:01", 0x86DD,
                  sg.ipv6(a6, b6, 58, sg.icmp6_echo(a6, b6, 1, 2, b"p"))),
           _sflow_frame()]
    out += [sg.udp4_frame(A, B, port, 53, sg.dns_query(0x6000 | port & 0xFFF, "q.example")) for port in TUNNEL_PORTS]
    out += [wg.encapsulate(tcp, how) for how in wg.ENCAPSULATIONS]
    out += wg.fragment(wg.encapsulate(sg.udp4_frame(C, D, 1, 2, b"y" * 200), "gtpu"), 64)
    out += [sg.eth("02:00:00:00:00:02", "02:00:00:00:00:01", 0x8100, sg.vlan(3, 0x0800, tcp[14:]))]
    return out


def _mutations(count: int, seed: int):
    rnd = random.Random(seed)
    shapes = _shapes()
    yield from shapes
    for _ in range(count):
        b = bytearray(rnd.choice(shapes))
        for _ in range(rnd.randint(1, 4)):
            k = rnd.randrange(min(len(b), 100))
            b[k] = rnd.choice((0, 1, 6, 8, 17, 53, 58, 0x45, 0x60, 0x81, 0x86, 0xDD, 0xFF, 0x12, 0x17, 0x21,
                               0x65, 0x58, rnd.randrange(256)))
        if rnd.random() < 0.3:
            b = b[:rnd.randrange(len(b) + 1)]
        yield bytes(b)


def test_walk_fast_path_and_shape_agree_with_the_general_walk():
    for f in _mutations(20000, 13):
        for linktype, data in ((1, f), (101, f[14:])):
            general = frames._walk(data, linktype, len(data))
            assert walk(data, linktype) == general, (linktype, data.hex())
            s = shape.usual(data, linktype)
            if s is not None:
                kind, o, t, end = s
                l4 = general[4]
                assert general[0] == OK and len(general[W_IPS]) == 1 and l4[1] == t and l4[3] >= t
                assert l4[0] == {shape.TCP: 6, shape.TCP_DNS: 6, shape.UDP: 17, shape.UDP_DNS: 17}.get(kind, l4[0])


class _GeneralAnonymizer(AnonymizeStage):
    fast_path = False


def test_the_anonymizer_and_the_masker_give_the_same_bytes_with_and_without_their_fast_paths(monkeypatch):
    batch = recs(list(_mutations(3000, 29)))
    fast = AnonymizeStage({}, StageContext(key=KEY))
    general = _GeneralAnonymizer({}, StageContext(key=KEY))
    fast.will_check()
    out = fast.process(batch)
    assert out == general.process(batch)
    fast.check(batch, out)                          # and the self-check accepts what the fast path built
    assert fast.report() == general.report()
    fast_mask = MaskStage({}, StageContext())
    fast_mask.prescan(batch)
    want = fast_mask.process(batch)
    monkeypatch.setattr(mask_module, "shapes", lambda batch: [None] * len(batch))
    monkeypatch.setattr(mask_prescan, "shapes", lambda batch: [None] * len(batch))
    slow_mask = MaskStage({}, StageContext())
    slow_mask.prescan(batch)
    assert slow_mask.process(batch) == want


def test_pppoe_with_a_compressed_protocol_field_is_walked():
    # PPP's protocol field compressed to one byte (0x21: IPv4) read as a two-byte 0x2145 made whole files fail
    ip4 = sg.ipv4(A, B, 17, sg.udp(A, B, 1000, 2000, b"compressed"))
    f = sg.eth("02:00:00:00:00:02", "02:00:00:00:00:01", 0x8864,
               struct.pack("!BBHH", 0x11, 0, 5, len(ip4) + 1) + b"\x21" + ip4)
    w = walk(f, 1)
    assert w[0] == OK and {ip(A), ip(B)} <= listed(f) and w[4][:2] == (17, 14 + 7 + 20)
    out, _ = anonymized([f])
    assert ip(A) not in out[0] and mapped(A) in out[0]
    checksums_valid(out[0])


def test_the_wild_mix_goes_through_every_operation_without_a_failed_file_or_a_leak(workdir):
    from pktmask_gui import wildgen
    from pktmask_gui.pipeline import Job, run_job
    from pktmask_gui.settings import Settings

    rng = random.Random(3)
    net = sg._Net(rng)
    frames_ = [f for _ in range(150) for f in wildgen.wild_session(rng, net, rng.random() < 0.25, None)]
    src = workdir / "wild.pcap"
    sampleconv.write_pcap(src, frames_)
    addresses = set()
    for f in frames_:
        w = walk(f, 1)
        addresses |= {bytes(f[x[6]:x[6] + (4 if x[1] == 4 else 16)]) for x in w[W_IPS] if not x[8] & 32}
    for stages in (["dedup", "anonymize", "mask"], ["anonymize"], ["mask"]):
        result = run_job(Job(input=src, output_dir=workdir / "-".join(stages), stages=stages), Settings(
            temp_root=str(workdir)))
        assert result.status == "ok", result.error
        if "anonymize" in stages:
            from pktmask_gui.capture import CaptureReader
            with CaptureReader(result.output) as reader:
                for batch in reader.batches():
                    for rec in batch:
                        w = walk(rec[0], rec[1])
                        for x in w[W_IPS]:
                            size = 4 if x[1] == 4 else 16
                            a = bytes(rec[0][x[6]:x[6] + size])
                            assert a not in addresses or a in (b"\0" * size,) or a[0] in (127, 224, 255) \
                                or a[:1] == b"\xff"


def test_frames_zeroed_for_reasons_that_differ_only_in_a_number_share_one_warning():
    # garbage read as an EtherType gives a new reason per frame: one warning names the kind, counts the
    # frames and shows a few values, and the report keeps every reason's count
    from pktmask_gui.layout import UNINSPECTABLE
    from pktmask_gui.stages import StageContext, report_zeroed

    warned = []
    ctx = StageContext(warnings=warned)
    counts = {(UNINSPECTABLE, f"EtherType 0x{t:04x} is not supported"): 2 for t in range(0x7000, 0x7005)}
    counts[(UNINSPECTABLE, "PPP protocol 0x0a41 is not supported")] = 31
    report = report_zeroed(counts, ctx)
    assert len(report) == 6 and report["EtherType 0x7003 is not supported"] == 2
    assert warned == [
        "10 frames could not be inspected (EtherType … is not supported: 5 different values, 0x7000, 0x7001, "
        "0x7002, …): zeroed after the last header understood",
        "31 frames could not be inspected (PPP protocol 0x0a41 is not supported): zeroed after the last header "
        "understood"]


def test_frames_counted_by_reason_keep_the_smallest_reasons_apart_whatever_their_order():
    # past the table's limit, which reasons are counted one by one must not depend on the order frames come
    # in: a file split into segments then merges into exactly the one-core table (segments.py)
    from pktmask_gui.layout import UNINSPECTABLE
    from pktmask_gui.stages import ReasonCounts

    rng = random.Random(5)
    frames = [(UNINSPECTABLE, f"EtherType 0x{rng.randrange(0x600, 0x10000):04x} is not supported")
              for _ in range(5000)] + [(2, "a later IP fragment")] * 7
    limit = 40
    whole = ReasonCounts(limit)
    for key in frames:
        whole.add(key)
    distinct = sorted(set(frames))
    kept = distinct[:limit]
    assert sorted(k for k in whole if k[1] != "other reasons") == kept
    assert all(whole[k] == frames.count(k) for k in kept)
    assert sum(whole.values()) == len(frames)
    assert whole[(UNINSPECTABLE, "other reasons")] == sum(frames.count(k) for k in distinct[limit:])
    for _ in range(3):
        shuffled = frames[:]
        rng.shuffle(shuffled)
        cut = rng.randrange(len(frames))
        first, second = ReasonCounts(limit), ReasonCounts(limit)
        for key in shuffled[:cut]:
            first.add(key)
        for key in shuffled[cut:]:
            second.add(key)
        first.merge(dict(second), {})
        assert dict(first) == dict(whole)
    # any order of arrival, descending included, costs a bisection per new reason; a limit of 0 counts all
    # together; a baseline reason the segment moved out cannot be taken off exactly
    down = ReasonCounts(limit)
    for key in sorted(frames, reverse=True):
        down.add(key)
    assert dict(down) == dict(whole)
    none = ReasonCounts(0)
    none.add((UNINSPECTABLE, "EtherType 0x9000 is not supported"))
    assert dict(none) == {(UNINSPECTABLE, "other reasons"): 1}
    from pktmask_gui.segments import SplitInexact

    with pytest.raises(SplitInexact):
        ReasonCounts(limit).merge({(UNINSPECTABLE, "other reasons"): 3}, {kept[0]: 1})
