"""Flow export: sFlow v5, NetFlow v5 / v9 and IPFIX datagrams carry other packets' addresses and headers.

``flow_export(...)`` lists, for frames.walk, the address fields it can place (sFlow agent and record
addresses, NetFlow v5 records), walks sFlow's sampled headers like a packet an ICMP error quotes, and marks
as ``blind`` what may hold addresses it cannot place (records of unknown formats, NetFlow v9 / IPFIX data
records whose layout is in templates sent earlier). Hand-written for the same reason as the walker.
"""
from __future__ import annotations

import struct

from .layout import F_QUOTED, W_ADDRS, W_CSUMS, W_IPS, W_MACS
from .shape import ETH, IP4, IP6, SFLOW, NETFLOW

_H = struct.Struct("!H").unpack_from
_I = struct.Struct("!I").unpack_from
_HH = struct.Struct("!HH").unpack_from
_II = struct.Struct("!II").unpack_from

# sFlow v5 flow records whose layout is known: raw packet header (1), Ethernet frame data (2), IPv4 data (3),
# IPv6 data (4), extended switch (1001), router (1002) and gateway (1003) data; counter records without
# addresses: generic interface (1), Ethernet (2), token ring (3), 100BaseVG (4), VLAN (5), processor (1001)
_SFLOW_COUNTERS = frozenset((1, 2, 3, 4, 5, 1001))
_SFLOW_HEADER_STATES = {1: ETH, 11: IP4, 12: IP6}


def flow_export(data, n, role, p, uend, ips, addrs, csums, macs):
    """Flow export datagrams carry other packets' addresses and headers. sFlow v5: the agent address, and
    per flow sample the sampled packet headers (walked like a packet quoted by an ICMP error), the IPv4 /
    IPv6 data records' addresses, the next hops of the extended router and gateway records. NetFlow v5:
    each record's source, destination and next hop. NetFlow v9 and IPFIX data records (their layout is
    in templates sent earlier), sFlow records of other formats, and anything after the last record that
    can be read are ``blind``: Anonymize IPs zeroes them (fail closed). Returns ``(quoted, blind)``:
    the [start, end) regions of sampled headers, and the (start, end, reason) blind ranges."""
    end = min(n, uend)
    quoted = []
    blind = []
    if role == SFLOW:
        q = _sflow_address(data, p + 4, end, addrs)
        if q < 0:
            blind.append((p + 4, uend, "sFlow datagram that cannot be read"))
            return quoted, blind
        q += 12                                              # sub-agent id, sequence number, uptime
        samples = _I(data, q)[0] if q + 4 <= end else 0
        q += 4
        for _ in range(samples):
            if q + 8 > end:
                break
            fmt, ln = _II(data, q)
            s, e = q + 8, q + 8 + ln
            if e > end:
                break
            if fmt in (1, 3):                                # flow sample (expanded): its flow records
                _sflow_records(data, s + (32 if fmt == 1 else 44), e, ips, quoted, blind, addrs, csums, macs,
                               True)
            elif fmt in (2, 4):                              # counter sample (expanded)
                _sflow_records(data, s + (12 if fmt == 2 else 16), e, ips, quoted, blind, addrs, csums, macs,
                               False)
            else:
                blind.append((s, e, "sFlow sample of format %d" % fmt))
            q = e
        if q < uend:
            blind.append((q, uend, "bytes after the last sFlow sample"))
    elif _H(data, p)[0] == 5:                                # NetFlow v5: 24-byte header, 48-byte records
        q = p + 24
        for _ in range(_H(data, p + 2)[0]):
            if q + 48 > end:
                break
            addrs.append((q, 4, 32))
            addrs.append((q + 4, 4, 32))
            addrs.append((q + 8, 4, 32))
            q += 48
        if q < uend:
            blind.append((q, uend, "bytes after the last NetFlow v5 record"))
    else:                                                    # NetFlow v9 (20-byte header), IPFIX (16)
        q = p + (20 if role == NETFLOW else 16)
        name = "NetFlow v9" if role == NETFLOW else "IPFIX"
        while q + 4 <= end:
            sid, ln = _HH(data, q)
            if ln < 4 or q + ln > end:
                break
            if sid >= 256:
                blind.append((q + 4, q + ln, name + " data records (their template is not read)"))
            q += ln
        if q < uend:
            blind.append((q, uend, "bytes after the last %s set" % name))
    return quoted, blind


def _sflow_address(data, q, end, addrs) -> int:
    """An sFlow address (type 1 IPv4, 2 IPv6) at q: listed; returns the offset after it, or -1."""
    if q + 4 > end:
        return -1
    kind = _I(data, q)[0]
    size = 4 if kind == 1 else 16 if kind == 2 else 0 if kind == 0 else -1
    if size < 0 or q + 4 + size > end:
        return -1
    if size:
        addrs.append((q + 4, size, size * 8))
    return q + 4 + size


def _sflow_records(data, q, e, ips, quoted, blind, addrs, csums, macs, flows):
    """The records of one sFlow sample, from q to e (after the record count at q - 4)."""
    if q > e:
        blind.append((e, e, "sFlow sample cut short"))
        return
    count = _I(data, q - 4)[0]
    for _ in range(count):
        if q + 8 > e:
            break
        fmt, ln = _II(data, q)
        s, r = q + 8, q + 8 + ln
        if r > e:
            break
        if not flows:
            if fmt not in _SFLOW_COUNTERS:
                blind.append((s, r, "sFlow counter record of format %d" % fmt))
        elif fmt == 1 and s + 16 <= r:                       # raw packet header
            hproto, hlen = _I(data, s)[0], _I(data, s + 12)[0]
            h, hend = s + 16, min(s + 16 + hlen, r)
            state = _SFLOW_HEADER_STATES.get(hproto)
            if state is None:
                blind.append((h, hend, "sFlow sampled header of protocol %d" % hproto))
            elif h < hend:
                _quoted_walk(data, hend, state, h, ips, addrs, csums, macs)
                quoted.append((h, hend))
        elif fmt == 2 and s + 24 <= r:                       # Ethernet frame data: source and destination MAC
            macs.append(s + 4)
            macs.append(s + 12)
        elif fmt == 3 and s + 16 <= r:                       # IPv4 data
            addrs.append((s + 8, 4, 32))
            addrs.append((s + 12, 4, 32))
        elif fmt == 4 and s + 40 <= r:                       # IPv6 data
            addrs.append((s + 8, 16, 128))
            addrs.append((s + 24, 16, 128))
        elif fmt in (1002, 1003):                            # extended router / gateway: a next hop first
            if _sflow_address(data, s, r, addrs) < 0:
                blind.append((s, r, "sFlow extended record %d" % fmt))
        elif fmt != 1001:
            blind.append((s, r, "sFlow flow record of format %d" % fmt))
        q = r
    if q < e:
        blind.append((q, e, "sFlow records that cannot be read"))


def _quoted_walk(data, end, state, off, ips, addrs, csums, macs):
    """Walk a packet quoted for another one (an sFlow sampled header) and add what it holds to the lists."""
    from .frames import walk_from                   # the walker walks these; a late import breaks the cycle

    sub = walk_from(data, end, state, off, F_QUOTED)
    base = len(ips)
    ips += sub[W_IPS]
    addrs += sub[W_ADDRS]
    macs += sub[W_MACS]
    for cs in reversed(sub[W_CSUMS]):           # outer first, like the enclosing walk's list until its end
        csums.append(cs if cs[4] is None else cs[:4] + (cs[4] + base,))
