"""Crypto-PAn against the reference sample trace, and its prefix-preserving properties."""
from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from pktmask_gui.cryptopan import CryptoPAn

DATA = Path(__file__).parent / "data" / "cryptopan"
REF_KEY = bytes.fromhex("1522178d33a4cf80130a5b1649907d10d8988f837979652762574c2d2a842202")


def _vectors():
    raw = [line.split()[2] for line in (DATA / "sample_trace_raw.dat").read_text().splitlines() if line.strip()]
    san = [line.split()[2] for line in (DATA / "sample_trace_sanitized.dat").read_text().splitlines()
           if line.strip()]
    assert len(raw) == len(san) == 100
    return list(zip(raw, san))


def test_reference_trace_all_100_vectors():
    cp = CryptoPAn(REF_KEY)
    for raw, want in _vectors():
        got = cp.map4(ipaddress.IPv4Address(raw).packed)
        assert str(ipaddress.IPv4Address(got)) == want, raw
        # the int API and a cold cache agree
        assert cp.anonymize_v4(int(ipaddress.IPv4Address(raw))) == int(ipaddress.IPv4Address(want))
    cold = CryptoPAn(REF_KEY)
    assert [str(ipaddress.IPv4Address(cold.anonymize_v4(int(ipaddress.IPv4Address(r))))) for r, _ in
            reversed(_vectors())] == [w for _, w in reversed(_vectors())]


def test_ipv6_first_32_bits_follow_ipv4():
    cp = CryptoPAn(REF_KEY)
    for raw, want in _vectors():
        v6 = int(ipaddress.IPv4Address(raw)) << 96 | 0x1234_5678_9ABC_DEF0_1122_3344
        assert cp.anonymize_v6(v6) >> 96 == int(ipaddress.IPv4Address(want))


def _cpl(a, b, bits):
    x = a ^ b
    return bits if x == 0 else bits - x.bit_length()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_prefix_preservation_ipv4(a, b):
    cp = CryptoPAn(REF_KEY)
    assert _cpl(cp.anonymize_v4(a), cp.anonymize_v4(b), 32) == _cpl(a, b, 32)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**128 - 1), st.integers(0, 128), st.integers(0, 2**128 - 1))
def test_prefix_preservation_ipv6_exactly_k_bits(a, k, noise):
    cp = CryptoPAn(REF_KEY)
    # b shares exactly k bits with a
    if k == 128:
        b = a
    else:
        flip = 1 << (127 - k)
        low = (1 << (127 - k)) - 1
        b = (a ^ flip) & ~low | (noise & low)
    assert _cpl(a, b, 128) == k
    assert _cpl(cp.anonymize_v6(a), cp.anonymize_v6(b), 128) == k


def test_bijective_on_a_small_subnet_and_key_dependent():
    cp = CryptoPAn(REF_KEY)
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    outs = {cp.anonymize_v4(base + i) for i in range(1024)}
    assert len(outs) == 1024
    other = CryptoPAn(bytes(32))
    assert [other.anonymize_v4(base + i) for i in range(8)] != [cp.anonymize_v4(base + i) for i in range(8)]


def test_caches_are_bounded_and_release_keeps_the_mapping(monkeypatch):
    import pktmask_gui.cryptopan as mod
    monkeypatch.setattr(mod, "PREFIX_CACHE_MAX", 100)
    monkeypatch.setattr(mod, "ADDRESS_CACHE_MAX", 50)
    cp = CryptoPAn(REF_KEY)
    first = [cp.map6(i.to_bytes(16, "big") * 1) for i in range(0, 2**120, 2**113)]
    first4 = [cp.map4(i.to_bytes(4, "big")) for i in range(0, 2**32, 2**24)]
    assert len(cp._bits) <= 100 + 128 and len(cp._bits4) <= 100 + 32
    assert cp.release() > 0 and cp.cache_size() == 0
    assert [cp.map6(i.to_bytes(16, "big")) for i in range(0, 2**120, 2**113)] == first
    assert [cp.map4(i.to_bytes(4, "big")) for i in range(0, 2**32, 2**24)] == first4


def test_key_must_be_32_bytes():
    with pytest.raises(ValueError):
        CryptoPAn(b"short")
