"""samplegen.py: frame builders with correct checksums, a realistic seeded mix, CLI, shipped sample."""
from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from collections import Counter

import pytest
from helpers import REPO

from pktmask_gui import capture
from pktmask_gui import sampleconv, samplegen as sg
from pktmask_gui.capture import BLOCK, DATA, LINKTYPE, META, TS, CaptureReader

SAMPLES = REPO / "resources" / "samples"
TSHARK = shutil.which("tshark")


def word_sum(data: bytes) -> int:
    """Ones'-complement sum, written the slow obvious way (independent of samplegen.checksum)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(w for (w,) in struct.iter_unpack("!H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo(src, dst, proto, length):
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


def walk(frame: bytes) -> dict:
    """A tiny independent dissector: link, network and transport facts plus checksum validity."""
    info = {"vlan": False}
    off, etype = 14, struct.unpack_from("!H", frame, 12)[0]
    if etype == 0x8100:
        info["vlan"] = True
        etype = struct.unpack_from("!H", frame, 16)[0]
        off = 18
    if etype == 0x0800:
        ihl = (frame[off] & 15) * 4
        total = struct.unpack_from("!H", frame, off + 2)[0]
        info["ip_ok"] = word_sum(frame[off:off + ihl]) == 0xFFFF
        proto, src, dst = frame[off + 9], frame[off + 12:off + 16], frame[off + 16:off + 20]
        l4 = frame[off + ihl:off + total]
        info["net"] = "ipv4"
    elif etype == 0x86DD:
        plen = struct.unpack_from("!H", frame, off + 4)[0]
        proto, src, dst = frame[off + 6], frame[off + 8:off + 24], frame[off + 24:off + 40]
        l4 = frame[off + 40:off + 40 + plen]
        info["net"] = "ipv6"
    else:
        return info
    info["proto"] = proto
    if proto in (6, 17, 58):
        info["l4_ok"] = word_sum(pseudo(src, dst, proto, len(l4)) + l4) == 0xFFFF
    elif proto == 1:
        info["l4_ok"] = word_sum(l4) == 0xFFFF
    if proto == 6:
        info["payload"] = l4[(l4[12] >> 4) * 4:]
        info["dport"] = struct.unpack_from("!H", l4, 2)[0]
        info["sport"] = struct.unpack_from("!H", l4, 0)[0]
    elif proto == 1:
        info["icmp_type"] = l4[0]
    return info


# --- builders -----------------------------------------------------------------------------------------

def test_checksum_matches_rfc1071_example():
    assert sg.checksum(bytes.fromhex("0001f203f4f5f6f7")) == (~0xDDF2) & 0xFFFF
    assert sg.checksum(b"\x12") == (~0x1200) & 0xFFFF                 # odd length: zero padded
    assert sg.checksum(b"\0\0") == 0xFFFF and sg.checksum(b"\xff\xff") == 0


def test_builders_produce_valid_checksums():
    v4 = sg.tcp4_frame("192.0.2.1", "198.51.100.2", 40000, 443, 1, 2, sg.ACK | sg.PSH, b"hello", ident=7)
    info = walk(v4)
    assert info["net"] == "ipv4" and info["ip_ok"] and info["l4_ok"] and info["payload"] == b"hello"
    v6 = sg.udp6_frame("2001:db8::1", "2001:db8::2", 5353, 53, sg.dns_query(1, "www.example.com"))
    assert walk(v6)["net"] == "ipv6" and walk(v6)["l4_ok"]
    u4 = sg.udp4_frame("192.0.2.1", "192.0.2.2", 1, 2, b"odd")
    assert walk(u4)["ip_ok"] and walk(u4)["l4_ok"]
    t6 = sg.tcp6_frame("2001:db8::1", "2001:db8::2", 1, 2, 3, 4, sg.SYN)
    assert walk(t6)["l4_ok"]
    echo = sg.eth("02:00:00:00:00:02", "02:00:00:00:00:01", 0x8100,
                  sg.vlan(10, 0x0800, sg.ipv4("10.0.0.1", "10.0.0.2", 1, sg.icmp_echo(1, 2, b"abc"))))
    info = walk(echo)
    assert info["vlan"] and info["ip_ok"] and info["l4_ok"] and info["icmp_type"] == 8
    quoted = sg.ipv4("10.0.0.1", "10.0.0.9", 17, sg.udp("10.0.0.1", "10.0.0.9", 5000, 33434, b"x" * 12))
    error = sg.eth(b"\2" * 6, b"\4" * 6, 0x0800,
                   sg.ipv4("10.0.0.9", "10.0.0.1", 1, sg.icmp_error(3, 3, quoted)))
    info = walk(error)
    assert info["icmp_type"] == 3 and info["l4_ok"]
    ping6 = sg.ipv6("2001:db8::1", "2001:db8::2", 58, sg.icmp6_echo("2001:db8::1", "2001:db8::2", 1, 1, b"p"))
    assert walk(sg.eth(b"\2" * 6, b"\4" * 6, 0x86DD, ping6))["l4_ok"]


def test_udp_checksum_zero_is_sent_as_ffff():
    # find a payload whose checksum computes to 0: it must be transmitted as 0xFFFF (0 means "none")
    for n in range(70000):
        seg = sg.udp("10.0.0.1", "10.0.0.2", 1, 2, n.to_bytes(4, "big"))
        if seg[6:8] == b"\xff\xff":
            assert word_sum(pseudo(bytes((10, 0, 0, 1)), bytes((10, 0, 0, 2)), 17, len(seg)) + seg) == 0xFFFF
            return
    pytest.fail("no payload with a zero UDP checksum found")


def test_tls_builders_layout():
    hello = sg.tls_record(22, sg.tls_client_hello("www.example.com", bytes(32), b"\1" * 32), 0x0301)
    assert hello[:3] == b"\x16\x03\x01" and struct.unpack_from("!H", hello, 3)[0] == len(hello) - 5
    assert hello[5] == 1 and int.from_bytes(hello[6:9], "big") == len(hello) - 9
    assert b"www.example.com" in hello
    cert = sg.tls_certificate(["a.example.org", "*.example.org"], bytes(range(256)) * 2)
    assert cert[0] == 11 and int.from_bytes(cert[1:4], "big") == len(cert) - 4
    assert b"a.example.org" in cert and b"*.example.org" in cert


# --- generated captures ---------------------------------------------------------------------------------

def read(path):
    with CaptureReader(path) as reader:
        return [r for batch in reader.batches() for r in batch if r[LINKTYPE] != META]


def test_same_seed_same_bytes_other_seed_other_bytes(workdir):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        sg.generate(workdir / f"{name}.pcapng", packets=300, seed=seed, fmt="pcapng")
    assert (workdir / "a.pcapng").read_bytes() == (workdir / "b.pcapng").read_bytes()
    assert (workdir / "a.pcapng").read_bytes() != (workdir / "c.pcapng").read_bytes()


def test_generated_mix_is_realistic_and_valid(workdir):
    path = workdir / "mix.pcap"
    stats = sg.generate(path, packets=4000, seed=11, dup_ratio=0.05)
    records = read(path)
    assert len(records) == stats["packets"] == 4000
    seen = Counter()
    for rec in records:
        seen[rec[DATA]] += 1
    duplicates = sum(n - 1 for n in seen.values())
    assert duplicates == stats["duplicates"] and 100 <= duplicates <= 300
    times = [r[TS] for r in records]
    assert times == sorted(times)
    mean = sum(len(r[DATA]) for r in records) / len(records)
    assert 550 <= mean <= 800, mean
    kinds = Counter()
    for rec in records:
        info = walk(rec[DATA])
        assert info.get("ip_ok", True) and info.get("l4_ok", True), info
        kinds[info["net"]] += 1
        kinds["vlan"] += info["vlan"]
        kinds[{6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}[info["proto"]]] += 1
        payload = info.get("payload", b"")
        if payload[:1] == b"\x16" and payload[5:6] == b"\x01":
            kinds["client_hello"] += 1
        if payload[:1] == b"\x17":
            kinds["app_data"] += 1
        if payload[:4] == b"GET ":
            kinds["http"] += 1
        if info.get("icmp_type") == 3:
            kinds["icmp_error"] += 1
    for kind in ("ipv4", "ipv6", "vlan", "tcp", "udp", "icmp", "icmpv6", "client_hello", "app_data", "http",
                 "icmp_error"):
        assert kinds[kind] > 0, (kind, kinds)
    assert kinds["ipv6"] > 0.1 * len(records) and kinds["tcp"] > 0.6 * len(records)


def test_no_duplicates_when_the_ratio_is_zero(workdir):
    path = workdir / "nodup.pcapng"
    stats = sg.generate(path, packets=20000, seed=9, dup_ratio=0.0, fmt="pcapng")
    frames = [r[DATA] for r in read(path)]
    assert stats["duplicates"] == 0 and len(set(frames)) == len(frames) == 20000


def test_pcapng_output_carries_capture_tool_metadata(workdir):
    path = workdir / "meta.pcapng"
    for metadata, expected in ((True, [0x0A0D0D0A, 1, 4, 5]), (False, [0x0A0D0D0A, 1])):   # SHB IDB NRB ISB
        sg.generate(path, packets=50, seed=1, fmt="pcapng", endian=">", metadata=metadata)
        with CaptureReader(path) as reader:
            records = [r for batch in reader.batches() for r in batch]
        assert [r[BLOCK] for r in records if r[LINKTYPE] == META] == expected
        assert all(r[BLOCK] == (6, b"") for r in records if r[LINKTYPE] != META)
        options = capture.parse_options(records[0][DATA][16:], ">")
        assert options == ([(4, b"pktmask-gui samplegen")] if metadata else [])


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_tshark_finds_no_malformed_frames_or_bad_checksums(workdir):
    path = workdir / "check.pcapng"
    sg.generate(path, packets=2500, seed=4, fmt="pcapng", endian=">", nanos=True)
    fields = ["_ws.malformed", "_ws.expert.severity", "ip.checksum.status", "tcp.checksum.status",
              "udp.checksum.status", "icmp.checksum.status", "icmpv6.checksum.status", "frame.protocols",
              "tls.handshake.extensions_server_name", "tls.handshake.certificate_length"]
    cmd = [TSHARK, "-n", "-r", str(path), "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
           "-o", "udp.check_checksum:TRUE", "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in fields:
        cmd += ["-e", f]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [dict(zip(fields, line.split("\t"))) for line in proc.stdout.splitlines()]
    assert len(rows) == 2500
    error_severity = str(0x00800000)
    for n, row in enumerate(rows, 1):
        assert not row["_ws.malformed"], f"frame {n} malformed"
        assert error_severity not in row["_ws.expert.severity"].split(","), f"frame {n}: expert error"
        for f in fields[2:7]:
            assert "0" not in row[f].split(","), f"frame {n}: bad {f}"
    protocols = Counter(p for row in rows for p in set(row["frame.protocols"].split(":")))
    for proto in ("vlan", "ipv6", "tls", "dns", "http", "icmp", "icmpv6", "x509sat"):
        assert protocols[proto] > 0, (proto, protocols)
    assert any(row["tls.handshake.extensions_server_name"] for row in rows)
    assert any(row["tls.handshake.certificate_length"] for row in rows)


def test_cli_writes_the_requested_capture(workdir):
    out = workdir / "cli.pcapng"
    proc = subprocess.run([sys.executable, "-m", "pktmask_gui.samplegen", str(out), "--packets", "40",
                           "--seed", "2", "--pcapng"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "40 packets" in proc.stderr
    with CaptureReader(out) as reader:
        assert reader.format == "pcapng" and sum(len(b) for b in reader.batches()) > 40
    proc = subprocess.run([sys.executable, "-m", "pktmask_gui.samplegen", str(workdir / "x.pcap"),
                           "--packets", "-1"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2


def test_shipped_samples_are_small_readable_and_have_duplicates():
    ng, classic = SAMPLES / "sample.pcapng", SAMPLES / "sample.pcap"
    assert ng.stat().st_size + classic.stat().st_size < 300_000
    for path, fmt in ((ng, "pcapng"), (classic, "pcap")):
        with CaptureReader(path) as reader:
            assert reader.format == fmt
        frames = [r[DATA] for r in read(path)]
        assert len(frames) - len(set(frames)) >= 2, path
    assert 250 <= len(read(ng)) <= 350


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_upgrade_conversations_are_followed_by_tshark(workdir):
    """tshark reads each generated upgrade as its protocol and follows it into TLS on the protocol's own
    port (so the plaintext is a genuine upgrade exchange); after a refusal it sees no TLS."""
    import random
    path = workdir / "upgrades.pcap"
    cases = [(p, ok) for p in sorted(sampleconv.UPGRADE_PORTS) for ok in (True, False)]
    frames = []
    for i, (proto, ok) in enumerate(cases):
        msgs = sampleconv.upgrade_messages(proto, ok) + (sampleconv.tls_flights(random.Random(i)) if ok else [])
        frames += sampleconv.tcp_conversation(msgs, sampleconv.UPGRADE_PORTS[proto], seed=i)
    sampleconv.write_pcap(path, frames)
    assert all(walk(f)["ip_ok"] and walk(f)["l4_ok"] for f in frames)
    proc = subprocess.run([TSHARK, "-n", "-r", str(path), "-T", "fields", "-e", "tcp.stream", "-e",
                           "tls.handshake.type", "-e", "_ws.malformed"], capture_output=True, text=True,
                          timeout=120)
    hello = Counter()
    for line in proc.stdout.splitlines():
        stream, types, malformed = (line.split("\t") + ["", ""])[:3]
        assert not malformed, line
        hello[int(stream)] += sum(t in ("1", "2") for t in types.split(",") if t)
    assert {cases[s] for s, n in hello.items() if n} == {c for c in cases if c[1]}
    assert all(hello[i] == 2 for i, c in enumerate(cases) if c[1])
