"""The frame walker's result layout (frames.walk): status values, index names, flags and checksum kinds.

The walker and every stage that reads its results import these; results are plain tuples and lists, so the
names are plain integer (or string) constants. See frames.py for what each field holds.
"""
from __future__ import annotations

OK, NON_IP, UNINSPECTABLE = 0, 1, 2
W_STATUS, W_LABEL, W_IPS, W_ADDRS, W_L4, W_CSUMS, W_MACS, W_BLIND, W_QUOTED = range(9)
B_START, B_END, B_REASON = range(3)          # a blind range

(IP_OFF, IP_VER, IP_HLEN, IP_PROTO, IP_PAY, IP_END, IP_SRC, IP_DST, IP_FLAGS, IP_FRAG_ID, IP_FRAG_OFF,
 IP_PDST) = range(12)
F_QUOTED, F_TUNNELLED, F_FRAGMENT, F_LATER_FRAGMENT, F_MORE_FRAGMENTS, F_TRUNCATED = 1, 2, 4, 8, 16, 32

L4_PROTO, L4_OFF, L4_PAY, L4_END, L4_IP, L4_FLAGS = range(6)
L4F_ECHO, L4F_ICMP_ERROR, L4F_FRAGMENT, L4F_NO_HEADER, L4F_QUOTES = 1, 2, 4, 8, 16

CS_OFF, CS_START, CS_END, CS_KIND, CS_IP = range(5)
INVERTED = -1       # addrs prefix_bits: a whole IPv4 address stored bitwise inverted (Teredo origin indication)
CS_IPV4, CS_TCP, CS_UDP, CS_ICMP, CS_ICMPV6, CS_IGMP, CS_GRE, CS_NHRP, CS_PSEUDO, CS_IP_BODY = (
    "ipv4", "tcp", "udp", "icmp", "icmpv6", "igmp", "gre", "nhrp", "pseudo", "body")



def field_length(size: int, prefix_bits: int) -> int:
    """Bytes an ``addrs`` entry occupies: the whole address, or the bytes its prefix needs."""
    return size if prefix_bits >= size * 8 or prefix_bits < 0 else (prefix_bits + 7) >> 3
