"""tls.TlsWalker: which stream ranges are kept, fed through tcpstream.Reassembler in many segmentations."""
from __future__ import annotations

import random

import pytest
from helpers import VERIFY

from pktmask_gui import sampleconv, samplegen as sg
from pktmask_gui.tcpstream import RangeMap, Reassembler
from pktmask_gui.tls import PREFIX, TlsWalker, opens_tls, plausible, ssl2_hello


def rec(t: int, body: bytes, ver: int = 0x0303) -> bytes:
    return bytes([t, ver >> 8, ver & 0xFF]) + len(body).to_bytes(2, "big") + body


def rnd(n: int, seed: int = 1) -> bytes:
    r = random.Random(seed)
    # ciphertext-like bytes that never form a plausible header by chance (no 0x03 byte)
    return bytes(r.choice(range(4, 256)) for _ in range(n))


def walk(segments, keep_handshake=True, keep_alerts_ccs=True):
    """segments: [(offset, bytes)] in arrival order -> (kept ranges, walker)."""
    keep = RangeMap()
    counts = {}
    w = TlsWalker(keep, keep_handshake, keep_alerts_ccs, counts)
    r = Reassembler(w)
    for off, data in segments:
        r.feed(off, data)
    r.finish()
    return list(zip(keep.starts, keep.ends)), w


def cut(stream: bytes, sizes):
    out, off, i = [], 0, 0
    while off < len(stream):
        n = sizes[i % len(sizes)]
        out.append((off, stream[off:off + n]))
        off += n
        i += 1
    return out


HS = rec(22, b"\x01" + rnd(300, 2), 0x0301)
CCS = rec(20, b"\x01")
APP1 = rec(23, rnd(3000, 3))
APP2 = rec(23, rnd(40, 4))
ALERT = rec(21, b"\x01\x00")
STREAM = HS + CCS + APP1 + APP2 + ALERT


def expected_keep(layout_start=0):
    a = layout_start
    hs_end = a + len(HS) + len(CCS)
    app1 = hs_end
    app2 = app1 + len(APP1)
    alert = app2 + len(APP2)
    return [(a, hs_end + 5), (app2, app2 + 5), (alert, alert + len(ALERT))]


@pytest.mark.parametrize("sizes", [[len(STREAM)], [1460], [7, 1, 3, 100], [3], [5, 2, 1448], [2]])
def test_records_split_across_segments_and_several_per_segment(sizes):
    kept, w = walk(cut(STREAM, sizes))
    assert kept == expected_keep()
    assert w.counts == {22: 1, 20: 1, 23: 2, 21: 1}
    assert w.lost == 0


def test_out_of_order_segments_give_the_same_map():
    segs = cut(STREAM, [500, 3, 700, 2])
    r = random.Random(5)
    for _ in range(20):
        shuffled = segs[:]
        # local reordering, as on a real network: swap neighbours
        for i in range(len(shuffled) - 1):
            if r.random() < 0.5:
                shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
        kept, w = walk(shuffled)
        assert kept == expected_keep(), shuffled
    kept, _ = walk(list(reversed(segs)))        # everything but the first arrives ahead of a hole
    assert kept == expected_keep()


def test_retransmissions_and_overlaps_first_copy_wins():
    segs = cut(STREAM, [400])
    forged = (segs[1][0], bytes(len(segs[1][1])))     # same range, different bytes, later in the capture
    kept, _ = walk(segs[:3] + [forged] + segs[3:] + [(100, STREAM[100:900])])
    assert kept == expected_keep()


def test_gap_then_confident_resync():
    app = [rec(23, rnd(1000, s)) for s in range(6)]
    stream = HS + b"".join(app)
    hdrs = [len(HS) + i * 1005 for i in range(6)]
    segs = cut(stream, [700])
    # drop the segment holding the second application-data header
    lost = [s for s in segs if not s[0] <= hdrs[1] < s[0] + len(s[1])]
    assert len(lost) == len(segs) - 1
    kept, w = walk(lost)
    # bytes are masked until a record boundary is confirmed: a plausible header whose record ends at
    # another plausible header
    assert kept == [(0, len(HS) + 5)] + [(h, h + 5) for h in hdrs[2:]]
    assert w.lost == 1


def test_gap_inside_a_record_body_keeps_sync():
    app = [rec(23, rnd(1000, s)) for s in range(3)]
    stream = HS + b"".join(app)
    segs = cut(stream, [300])
    hdrs = [len(HS) + i * 1005 for i in range(3)]
    lost = [s for s in segs if s[0] != 900]          # [900, 1200) is body only
    assert all(not 900 <= h < 1200 for h in hdrs)
    kept, w = walk(lost)
    assert kept == [(0, len(HS) + 5)] + [(h, h + 5) for h in hdrs[1:]]
    assert w.lost == 0


def test_midstream_start_masks_until_resync():
    app = [rec(23, rnd(900, s)) for s in range(4)]
    stream = b"".join(app)[450:]           # starts inside the first record
    kept, w = walk(cut(stream, [1460]))
    firsts = [900 + 5 - 450 + i * 905 for i in range(3)]
    assert kept == [(h, h + 5) for h in firsts]


def test_starttls_plaintext_masked_then_tls_kept():
    plain = b"EHLO client.example\r\nSTARTTLS\r\n"
    stream = plain + HS + CCS + APP1
    kept, _ = walk(cut(stream, [len(plain), 200, 1000]))
    p = len(plain)
    assert kept == [(p, p + len(HS) + len(CCS) + 5)]


def test_first_record_confirmed_by_end_of_stream():
    plain = b"220 ready\r\n"
    kept, _ = walk([(0, plain), (len(plain), HS)])
    assert kept == [(len(plain), len(plain) + len(HS))]


def test_garbage_never_kept_and_search_gives_up():
    junk = rnd(200000, 9)
    kept, w = walk(cut(junk, [1460]))
    assert kept == []
    # a lone plausible header in plaintext that is not followed by another one is not a resync point
    text = b"x" * 100 + b"\x16\x03\x01\x00\x10" + b"y" * 100
    kept, _ = walk([(0, text)])
    assert kept == []


def test_midstream_start_needs_a_confirmed_header():
    looks_like = HS + rnd(300, 11)                 # a plausible record at byte 0, then no header where it ends

    def walk_from_midstream(segments):
        keep = RangeMap()
        w = TlsWalker(keep)
        w.midstream()
        r = Reassembler(w)
        for off, data in segments:
            r.feed(off, data)
        r.finish()
        return list(zip(keep.starts, keep.ends))

    assert walk(cut(looks_like, [200]))[0] == [(0, len(HS))]          # a stream start: believed
    assert walk_from_midstream(cut(looks_like, [200])) == []            # mid-stream: not confirmed
    # confirmed by the next header where the record ends, or by the end of the stream
    assert walk_from_midstream(cut(HS + APP2, [200])) == [(0, len(HS) + 5)]
    assert walk_from_midstream([(0, HS)]) == [(0, len(HS))]


# ---- TLS after plaintext (STARTTLS, HTTP CONNECT, SSLRequest): a direction that began at its SYN ------
def walk_syn(segments, **kw):
    """As walk(), for a direction whose first byte is known (its SYN was seen): plaintext at its start
    is followed by TLS only from a record that opens it."""
    keep = RangeMap()
    w = TlsWalker(keep, **kw)
    w.at_syn()
    r = Reassembler(w)
    for off, data in segments:
        r.feed(off, data)
    r.finish()
    return list(zip(keep.starts, keep.ends)), w


def hellos(seed=1):
    rg = random.Random(seed)
    ch = sg.tls_record(22, sg.tls_client_hello("mail.example.com", rg.randbytes(32), rg.randbytes(32)), 0x0301)
    sh13 = sg.tls_record(22, sg.tls_server_hello(rg.randbytes(32), rg.randbytes(32), True))
    sh12 = sg.tls_record(22, sg.tls_server_hello(rg.randbytes(32), b"", False) + sg.tls_handshake(14, b""))
    return ch, sh13, sh12


def test_opens_tls_accepts_real_hellos_and_alerts_only():
    ch, sh13, sh12 = hellos()
    ssl3 = sg.tls_record(22, sg.tls_handshake(2, b"\x03\x00" + bytes(32) + b"\x00\x00\x0a\x00"), 0x0300)
    fragmented = ch[:5 + 100]                                   # the hello goes on in a second record
    fragmented = fragmented[:3] + (100).to_bytes(2, "big") + fragmented[5:]
    for good in (ch, sh13, sh12, ssl3, fragmented, rec(21, b"\x02\x28"), rec(21, b"\x01\x70")):
        assert opens_tls(good[:PREFIX]) == 1, good[:12].hex()
        assert opens_tls(good[:7]) in (-1, 1)                   # a short prefix: "cannot tell yet"
    bad = [rec(22, b"\x0b" + ch[6:]),                            # a Certificate first
           rec(22, ch[5:9] + b"\x03\x05" + ch[11:]),               # hello version 3.5
           ch[:43] + b"\x21" + ch[44:],                            # session id of 33 bytes
           ch[:9 + 2 + 32 + 1 + 32] + b"\x00\x03" + ch[78:],      # an odd cipher suites length
           rec(22, b"\x01\x00\x00\x10" + ch[9:]),                 # handshake length too short for a hello
           rec(21, b"\x03\x28"), rec(21, b"\x02\x28\x00"), rec(21, b"\x01\x00"), rec(21, b"\x02\x05"),
           rec(23, b"\x01" * 60),
           rec(22, b"\x01" + rnd(300, 5), 0x0301)]
    sh_bad = bytearray(sh13)
    sh_bad[5 + 4 + 38 + 32 + 1] ^= 1                           # extensions length != what is left
    bad.append(bytes(sh_bad))
    for b in bad:
        assert opens_tls(b[:PREFIX]) == 0, b[:12].hex()
    # random bytes behind a plausible handshake header essentially never pass
    r = random.Random(7)
    hits = sum(opens_tls(b"\x16\x03\x01\x01\x00" + bytes([r.choice((1, 2))]) + r.randbytes(PREFIX - 6)) == 1
               for _ in range(100000))
    assert hits == 0


@pytest.mark.parametrize("sizes", [[4000], [1], [3], [7, 1, 100], [50, 1460], [30, 2, 5]])
def test_plaintext_then_tls_kept_in_any_segmentation(sizes):
    ch, _, _ = hellos()
    plain = b"CONNECT mail.example.com:443 HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U6c2VjcmV0\r\n\r\n"
    stream = plain + ch + CCS + APP1
    p = len(plain)
    want = [(p, p + len(ch) + len(CCS) + 5)]
    assert walk_syn(cut(stream, sizes))[0] == want
    assert walk(cut(stream, sizes))[0] == want                  # no SYN seen: the resync finds it too
    segs = cut(stream, sizes)
    if len(segs) > 1:                                           # the second segment late: the rest waits
        assert walk_syn(segs[:1] + segs[2:] + segs[1:2])[0] == want    # as digests, merged in order
    # every segment ahead of a hole on its own (reversed): the hello's first PREFIX bytes must lie in one
    # segment, else its prefix stays cut (a digest keeps HEAD bytes) and it fails closed
    whole = any(o <= p and p + PREFIX <= o + len(d) for o, d in segs)
    assert walk_syn(list(reversed(segs)))[0] == (want if whole else [])


def test_plaintext_with_a_fake_header_chained_to_the_hello_is_masked():
    ch, _, _ = hellos()
    fake = b"\x16\x03\x01\x00\x0aSECRET1234"                    # a plausible record ending at the hello
    plain = b"CONNECT a.example:443 HTTP/1.1\r\nX-Note: " + fake
    stream = plain + ch + CCS + APP1
    p = len(plain)
    kept, _ = walk_syn(cut(stream, [p, 2000]))
    assert kept == [(p, p + len(ch) + len(CCS) + 5)]


def test_plaintext_fake_header_confirmed_by_end_or_hole_is_masked():
    text = b"EHLO x\r\nSTARTTLS\r\nQUIT \x16\x03\x01\x01\x00 my secret password\r\n"
    assert walk_syn([(0, text)])[0] == []                       # its length runs past the end
    hole = b"USER bob\r\nPASS \x16\x03\x01\x00\x30hunter2, secret" + b"x" * 200
    assert walk_syn([(0, hole[:40]), (80, hole[80:])])[0] == []    # its end falls into a hole


def test_refused_upgrade_then_more_plaintext_masked():
    for proto in sampleconv.UPGRADE_PORTS:
        msgs = sampleconv.upgrade_messages(proto, accept=False)
        for side in (True, False):
            stream = b"".join(d for up, d in msgs if up == side)
            if stream:
                assert walk_syn(cut(stream, [7, 1460]))[0] == [], proto


def test_server_alert_opens_tls_after_plaintext():
    alert = rec(21, b"\x02\x28")                                # handshake_failure
    plain = b"220 2.0.0 Ready to start TLS\r\n"
    assert walk_syn([(0, plain), (len(plain), alert)])[0] == [(len(plain), len(plain) + 7)]
    assert walk_syn([(0, plain), (len(plain), rec(21, b"\x07\x28"))])[0] == []


def test_gaps_after_plaintext():
    ch, _, sh12 = hellos()
    plain = b"220 (vsFTPd 3.0.3)\r\n" * 20
    p = len(plain)
    stream = plain + sh12 + CCS + APP1 + APP2 + rec(23, rnd(500, 9)) + ALERT
    segs = cut(stream, [100])
    # a plaintext segment lost: the hello after the hole still opens TLS
    kept, _ = walk_syn([s for s in segs if s[0] != 200])
    assert kept[0] == (p, p + len(sh12) + len(CCS) + 5)
    # the segment holding the hello's start lost: the records after it stay masked (fail closed)
    kept, _ = walk_syn([s for s in segs if not s[0] <= p < s[0] + 100])
    assert kept == []
    # a hole inside the TLS (the second application-data header lost): the usual resync
    a2 = p + len(sh12) + len(CCS) + len(APP1)
    kept, w = walk_syn([s for s in segs if not s[0] <= a2 < s[0] + 100])
    a3 = a2 + len(APP2)
    assert kept == [(p, a2 - len(APP1) + 5), (a3, a3 + 5), (len(stream) - len(ALERT), len(stream))]
    assert w.lost == 1


def test_plaintext_prefix_options_and_tls12():
    ch, _, sh12 = hellos(3)
    plain = b"* OK IMAP4rev1 ready\r\na1 OK Begin TLS negotiation now.\r\n"
    p = len(plain)
    stream = plain + sh12 + rec(22, rnd(40, 3)) + CCS + ALERT
    kept, w = walk_syn(cut(stream, [60, 1460]), keep_handshake=False, keep_alerts_ccs=False)
    a = p + len(sh12)
    assert kept == [(p, p + 5), (a, a + 5), (a + 45, a + 50), (a + 51, a + 56)]
    assert w.counts == {22: 2, 20: 1, 21: 1}


def sslv2_client_hello():
    cs = bytes.fromhex("010080 030080 070080c0")[:9]
    challenge = rnd(16, 7)
    body = b"\x01" + b"\x00\x02" + len(cs).to_bytes(2, "big") + b"\x00\x00" + len(challenge).to_bytes(2, "big") \
        + cs + challenge
    return bytes([0x80 | (len(body) >> 8), len(body) & 0xFF]) + body


def sslv2_client_master_key():
    clear, enc, arg = b"\x11" * 11, rnd(64, 8), b""
    body = b"\x02" + b"\x01\x00\x80" + len(clear).to_bytes(2, "big") + len(enc).to_bytes(2, "big") \
        + len(arg).to_bytes(2, "big") + clear + enc + arg
    return bytes([0x80 | (len(body) >> 8), len(body) & 0xFF]) + body


def test_sslv2_hello_then_tls_records():
    ch = sslv2_client_hello()
    assert ssl2_hello(ch) == len(ch)
    stream = ch + rec(22, rnd(100, 3)) + APP2
    kept, w = walk(cut(stream, [3, 1, 4, 1000]))           # the hello itself cut in tiny segments
    a = len(ch) + 105
    assert kept == [(0, a + 5)]
    assert w.counts == {2: 1, 22: 1, 23: 1}


def test_sslv2_master_key_kept_encrypted_records_not():
    ch, cmk = sslv2_client_hello(), sslv2_client_master_key()
    enc = rnd(50, 4)
    fin = bytes([0x80, len(enc)]) + enc
    kept, w = walk(cut(ch + cmk + fin, [1000]))
    a = len(ch) + len(cmk)
    assert kept == [(0, a + 2)]              # hello and master key whole, the encrypted record's header


def test_tls13_with_hello_retry_request():
    ch1 = rec(22, b"\x01" + rnd(200, 1), 0x0301)
    hrr = rec(22, b"\x02" + rnd(80, 2))
    ccs = rec(20, b"\x01")
    ch2 = rec(22, b"\x01" + rnd(220, 3))
    enc = [rec(23, rnd(n, n)) for n in (900, 50, 2000)]
    client = ch1 + ccs + ch2 + enc[1]
    server = hrr + ccs + rec(22, b"\x02" + rnd(90, 5)) + enc[0] + enc[2]
    kc, wc = walk(cut(client, [300]))
    ks, ws = walk(cut(server, [1400]))
    assert kc == [(0, len(ch1) + len(ccs) + len(ch2) + 5)]
    s0 = len(hrr) + len(ccs) + 96
    assert ks == [(0, s0 + 5), (s0 + len(enc[0]), s0 + len(enc[0]) + 5)]


def test_options_mask_handshake_and_alerts():
    kept, _ = walk(cut(STREAM, [1460]), keep_handshake=False, keep_alerts_ccs=False)
    starts = [0, len(HS), len(HS) + len(CCS), len(HS) + len(CCS) + len(APP1),
              len(HS) + len(CCS) + len(APP1) + len(APP2)]
    assert kept == [(s, s + 5) for s in starts]


def test_plausible_header_rules():
    assert plausible(b"\x17\x03\x03\x00\x00") == 0            # empty application data is allowed
    assert plausible(b"\x16\x03\x03\x00\x00") == -1           # an empty handshake record is not
    assert plausible(b"\x16\x03\x05\x00\x10") == -1
    assert plausible(b"\x19\x03\x03\x00\x10") == -1
    assert plausible(b"\x16\x03\x00\x48\x00") == 18432
    assert plausible(b"\x16\x03\x00\x48\x01") == -1


def test_memory_holds_no_payload():
    """A gap early in a long stream: what waits behind it is digests of a few bytes, not payload."""
    app = [rec(23, rnd(16000, s % 5)) for s in range(40)]
    stream = HS + b"".join(app)
    segs = cut(stream, [1460])
    keep = RangeMap()
    w = TlsWalker(keep)
    r = Reassembler(w)
    r.feed(*segs[0])
    for s in segs[2:]:
        r.feed(*s)
    held = sum(len(p[2]) + len(p[3]) + 5 * len(p[4]) for p in r.pending)
    assert len(r.pending) == 1 and held < 40 * 5 + 64
    r.finish()
    assert len(keep) >= 38


def test_find_candidates_finds_every_plausible_header_brute_force():
    from pktmask_gui.tls import find_candidates
    r = random.Random(3)
    alphabet = bytes([0x03, 0x16, 0x17, 0x14, 0x00, 0x01, 0x04, 0x48, 0x49, 0x05, 0xFF])
    for _ in range(200):
        buf = bytes(r.choice(alphabet) for _ in range(r.randrange(0, 40)))
        cands, order = {}, []
        find_candidates(memoryview(buf), 100, 102, cands, order)
        want = [100 + i for i in range(2, len(buf) - 4) if plausible(buf[i:i + 5]) >= 0]
        assert order == want, buf.hex()
        for p in order:
            i = p - 100
            may_open = (buf[i] == 22 and (i + 5 == len(buf) or buf[i + 5] in (1, 2))) or \
                (buf[i] == 21 and buf[i + 3:i + 5] == b"\0\2")
            assert cands[p] == buf[i:i + (PREFIX if may_open else 5)], buf.hex()


def _oracle():
    import importlib.util
    if not VERIFY.is_file():
        pytest.skip("verify.py (the independent checker) not present at %s" % VERIFY)
    spec = importlib.util.spec_from_file_location("verify_oracle", VERIFY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("seed", range(int(__import__("os").environ.get("PKTMASK_DIFF_SEEDS", "40"))))
def test_differential_against_the_independent_walker(seed):
    """Random record streams, segmentations, losses, reorderings and duplicates: whatever we keep, the
    independent walker of verify.py must class as TLS structure, never application data or plaintext;
    without losses we keep every byte it says must be kept. Half of the streams with a plaintext prefix
    open with a real hello and are walked as having begun at their SYN."""
    v = _oracle()
    r = random.Random(seed)
    parts = []
    syn = hello = False
    if r.random() < 0.3:
        parts.append(b"EHLO x\r\nSTARTTLS\r\n"[:r.randrange(1, 19)])
        syn = hello = r.random() < 0.5
        if hello:
            parts.append(hellos(seed)[r.randrange(3)])
    for _ in range(r.randrange(1, 12)):
        t = r.choice([20, 21, 22, 22, 23, 23, 23, 24])
        parts.append(rec(t, rnd(r.randrange(1, 3000), r.randrange(1000)), r.choice([0x0301, 0x0303])))
    stream = b"".join(parts)
    segs = cut(stream, [r.randrange(1, 1500) for _ in range(5)])
    lossy = r.random() < 0.4
    feed = [segs[0]]
    for s in segs[1:]:
        if lossy and r.random() < 0.15:
            continue
        feed.append(s)
        if r.random() < 0.1:
            feed.append((s[0], s[1][:r.randrange(1, len(s[1]) + 1)]))      # a partial duplicate
    for i in range(1, len(feed) - 1):
        if r.random() < 0.2:
            feed[i], feed[i + 1] = feed[i + 1], feed[i]
    kept, _ = walk_syn(feed) if syn else walk(feed)
    if parts[0][:1] == b"E" and not hello:
        assert walk_syn(feed)[0] == []          # from the SYN, plaintext then no hello: nothing is TLS
    end = max(o + len(d) for o, d in feed)
    buf, have = bytearray(end), bytearray(end)
    for o, d in feed:
        for j, b in enumerate(d):
            if not have[o + j]:
                buf[o + j], have[o + j] = b, 1
    cls, _ = v.walk_tls(buf, have)
    keep = bytearray(end)
    for a, b in kept:
        keep[a:min(b, end)] = b"\x01" * (min(b, end) - a)
    must = {v.C_HDR, v.C_HS, v.C_SSL2}
    for p in range(end):
        if not have[p]:
            continue
        if keep[p]:
            assert cls[p] not in (v.C_APP, v.C_PRE), (seed, p, cls[p])
        elif not lossy:
            assert cls[p] not in must, (seed, p, cls[p])
