"""The names stage through the real engine and command line: the generator's name-bearing capture and real
captures in, tshark's decoding of the output as the oracle (no original label in any name field; with Mask
Payloads, in no byte at all), the same bytes twice, every frame's length kept, no new malformed frame,
reverse names of mapped addresses, the report, the mapping export; the stage's place in the run order."""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pktmask_gui import sampleconv, samplegen, samplenames
from pktmask_gui.capture import CaptureReader
from pktmask_gui.pipeline import _run_order
from pktmask_gui.stages import StageContext
from pktmask_gui.stages.anonymize import AnonymizeStage

import names_oracle as oracle

REPO = Path(__file__).resolve().parents[2]
KEY_HEX = "1522178d33a4cf80130a5b1649907d10d8988f837979652762574c2d2a842202"
TSHARK = oracle.tshark_available()
WILD = REPO.parent / "shared" / "corpus-wild"
# real captures with DNS, mDNS, LLMNR, NetBIOS, DHCP, TLS (certificates across segments), QUIC
REAL = ("sv__tests_bug-5162_input.pcap", "sv__tests_ethernet-eve_test.pcap", "sv__tests_dns-reversed-tcp-1_dns.pcap",
        "sv__tests_dns_dns-forward-pointer_input.pcap", "sv__tests_dhcp-eve-extended-option-60_input.pcap",
        "sv__tests_llmnr_llmnr-sticky-buffers_input.pcap", "sv__tests_tls_tls-certs-alert_input.pcap",
        "sv__tests_ja4-quic_input.pcap", "sv__tests_ssh-banner-only_input.pcap")


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "pktmask_gui", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def engine(inp: Path, out: Path, stages, names: bool) -> str:
    """The engine in this process (no CLI start-up): the output's path."""
    from pktmask_gui.pipeline import Job, run_job
    from pktmask_gui.settings import Settings

    settings = Settings()
    settings.stage_options["anonymize"] = {"pseudonymize_names": names}
    result = run_job(Job(input=inp, output_dir=out, stages=list(stages), key_file=out.parent / "key.hex"), settings)
    assert result.status == "ok", result.error
    return result.output


def run(inp: Path, out: Path, *flags) -> dict:
    done = cli("process", inp, "-o", out, "--json", "-q", "--key-file", out.parent / "key.hex", *flags)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["files"][0]


def lengths(path) -> list:
    with CaptureReader(path) as reader:
        return [len(rec[0]) for batch in reader.batches(4096) for rec in batch if rec[1] >= 0]


@pytest.fixture
def names_capture(workdir) -> Path:
    path = workdir / "names.pcap"
    samplenames.write_names_capture(path, seed=4)
    (workdir / "key.hex").write_text(KEY_HEX + "\n")
    return path


def mapper():
    stage = AnonymizeStage({}, StageContext(key=bytes.fromhex(KEY_HEX)))
    mapper = stage.mapper
    return lambda addr: ipaddress.ip_address(mapper.map_address(addr.packed, len(addr.packed), len(addr.packed) * 8))


def test_runs_after_dedup_before_mask_and_anonymize():
    assert _run_order(["dedup", "anonymize", "mask", "names", "scrub"]) == ["dedup", "names", "mask", "anonymize",
                                                                            "scrub"]


def test_needs_anonymize_on_the_command_line(names_capture, workdir):
    done = cli("process", names_capture, "-o", workdir / "o", "--dedup", "--pseudonymize-names")
    assert done.returncode == 2 and "--pseudonymize-names needs --anonymize" in done.stderr
    assert not (workdir / "o").exists() or not any((workdir / "o").iterdir())


def test_generated_capture_every_place(names_capture, workdir):
    first = run(names_capture, workdir / "a", "--anonymize", "--pseudonymize-names",
                "--export-mapping", workdir / "map.tsv")
    again = run(names_capture, workdir / "b", "--anonymize", "--pseudonymize-names")
    out = Path(first["output"])
    assert out.read_bytes() == Path(again["output"]).read_bytes()         # same input, same bytes
    assert lengths(out) == lengths(names_capture)                          # every frame keeps its length
    report = first["stages"]["names"]
    kinds = report["names_by_kind"]
    for kind in ("dns", "mdns", "llmnr", "netbios", "dhcp", "dhcpv6", "tls_sni", "certificate"):
        assert kinds.get(kind, 0) > 0, kind
    assert report["names_pseudonymized"] == sum(kinds.values())
    assert "special" in report["names_kept_by_rule"]                       # the NetBIOS "*" query
    # the mapping export lists names too, and only its owner may read it
    table = (workdir / "map.tsv").read_text()
    assert stat.S_IMODE((workdir / "map.tsv").stat().st_mode) == 0o600
    assert "intranet.corp.example.com\t" in table and "www.corp.example.com\t" in table
    raw = out.read_bytes()
    for word in (b"corp", b"example-ca", b"ACCOUNTING", b"kitchen", b"streaming"):
        assert word not in raw, word                                        # none is payload of another kind
    if not TSHARK:
        pytest.skip("tshark is not installed: the decoding oracle is skipped")
    assert oracle.leaks(names_capture, out, min_length=1) == []
    assert oracle.malformed(out) == oracle.malformed(names_capture) == 0
    assert oracle.reverse_mismatches(names_capture, out, mapper()) == []
    decoded = oracle.name_fields(out)
    fields = {f for _n, f in decoded}
    for field in ("dns.qry.name", "dns.cname", "dns.mx.mail_exchange", "dns.srv.target", "dns.soa.mname",
                  "dns.svcb.targetname", "nbns.name", "dhcp.option.hostname", "dhcp.fqdn.name",
                  "dhcpv6.client_domain", "tls.handshake.extensions_server_name", "x509ce.dNSName",
                  "x509ce.uniformResourceIdentifier"):
        assert field in fields, field                                       # still decoded, as pseudonyms


def test_with_mask_no_label_anywhere(names_capture, workdir):
    result = run(names_capture, workdir / "m", "--anonymize", "--mask", "--pseudonymize-names")
    without = run(names_capture, workdir / "w", "--anonymize", "--mask")
    out = Path(result["output"])
    assert lengths(out) == lengths(names_capture)
    raw = out.read_bytes().lower()
    labels = {b"corp", b"example", b"intranet", b"accounting", b"kitchen", b"speaker", b"googlecast", b"fileserver",
              b"laptop", b"streaming", b"example-ca", b"issuing", b"hostmaster", b"finance", b"alices", b"macbook"}
    assert sorted(lb for lb in labels if lb in raw) == []
    if TSHARK:
        assert oracle.byte_leaks(names_capture, out, min_length=3) == []
        assert oracle.malformed(out) <= oracle.malformed(without["output"])


def test_reverse_names_match_the_anonymized_addresses(workdir):
    """Over many addresses: each PTR name is the reverse name of its address's mapping, or zeroed (and
    counted) where the mapped octet has another number of digits."""
    from pktmask_gui import samplenames as sn
    frames = []
    addrs = [f"10.{i}.{(i * 7) % 250}.{(i * 13) % 250 + 1}" for i in range(60)]
    for i, a in enumerate(addrs):
        rev = ipaddress.ip_address(a).reverse_pointer
        frames.append(samplegen.udp4_frame("192.168.0.2", "192.168.0.1", 40000 + i, 53,
                                           sn.dns(i, 0x0100, [(rev, sn.PTR)])))
    path = workdir / "ptr.pcap"
    sampleconv.write_pcap(path, frames)
    (workdir / "key.hex").write_text(KEY_HEX)
    result = run(path, workdir / "o", "--anonymize", "--pseudonymize-names")
    m = mapper()
    zeroed = 0
    with CaptureReader(result["output"]) as reader:
        outs = [rec[0] for batch in reader.batches(4096) for rec in batch]
    for a, frame in zip(addrs, outs):
        labels, q = [], 42 + 12
        while frame[q]:
            labels.append(frame[q + 1:q + 1 + frame[q]])
            q += 1 + frame[q]
        want = m(ipaddress.ip_address(a)).reverse_pointer.split(".")
        for got, orig, exp in zip(labels[:4], a.split(".")[::-1], want[:4]):
            if len(exp) == len(orig):
                assert got.decode() == exp
            else:
                assert got == bytes(len(orig))
                zeroed += 1
    assert result["stages"]["names"]["names_zeroed"] > 0 and zeroed > 0
    assert any("could not be rewritten" in w for w in result["warnings"])


def test_pcapng_name_resolution_kept_with_metadata_gets_pseudonyms(workdir):
    path = workdir / "meta.pcapng"
    samplegen.generate(path, packets=200, seed=9, fmt="pcapng", metadata=True)
    (workdir / "key.hex").write_text(KEY_HEX)
    result = run(path, workdir / "o", "--anonymize", "--pseudonymize-names", "--keep-metadata")
    assert result["stages"]["names"]["names_by_kind"].get("metadata", 0) > 0
    with CaptureReader(result["output"]) as reader:
        blocks = [rec[0] for batch in reader.batches(4096) for rec in batch if rec[1] < 0 and rec[5] == 4]
    assert blocks and all(b"example" not in body and b"gateway" not in body for body in blocks)


@pytest.mark.skipif(not WILD.is_dir(), reason=f"the wild corpus is not at {WILD} (a fresh clone has no ../shared)")
@pytest.mark.skipif(not TSHARK, reason="tshark is not installed: the decoding oracle is skipped")
@pytest.mark.parametrize("name", REAL)
def test_real_captures(name, workdir):
    src = workdir / name
    shutil.copyfile(WILD / name, src)
    (workdir / "key.hex").write_text(KEY_HEX)
    plain = engine(src, workdir / "p", ["anonymize"], False)
    out = engine(src, workdir / "n", ["anonymize"], True)
    masked = engine(src, workdir / "m", ["anonymize", "mask"], True)
    assert lengths(out) == lengths(src) == lengths(masked)
    assert oracle.leaks(src, out) == []
    assert oracle.malformed(out) <= oracle.malformed(plain)
    assert oracle.reverse_mismatches(src, out, mapper()) == []
    assert oracle.byte_leaks(src, masked) == []
