"""Link types: where the first header after the link layer starts, and the names of protocols without IP.

``link_start(data, linktype, n, macs)`` reads the link-layer header of one frame for frames.walk; the
tables name the link types and the non-IP protocols a frame may carry, for counts and reasons.
"""
from __future__ import annotations

import struct

from .layout import NON_IP, OK, UNINSPECTABLE
from .shape import ETH, ETYPE, IP, IP4, IP6, PPP

PPPPROTO, ARP, LLC = 7, 8, 9        # the walker's states after shape's next-layer values (0-6)

LINKTYPE_NAMES = {
    0: "NULL", 1: "ETHERNET", 6: "IEEE802_5", 8: "SLIP", 9: "PPP", 10: "FDDI", 12: "RAW", 14: "RAW",
    50: "PPP_HDLC", 101: "RAW", 104: "C_HDLC", 105: "IEEE802_11", 107: "FRELAY", 108: "LOOP",
    113: "LINUX_SLL", 119: "PRISM_HEADER", 122: "IP_OVER_FC", 127: "IEEE802_11_RADIOTAP",
    138: "APPLE_IP_OVER_IEEE1394", 139: "MTP2_WITH_PHDR", 140: "MTP2", 141: "MTP3", 143: "DOCSIS",
    163: "IEEE802_11_AVS", 187: "BLUETOOTH_HCI_H4", 189: "USB_LINUX", 192: "PPI", 195: "IEEE802_15_4",
    201: "BLUETOOTH_HCI_H4_WITH_PHDR", 204: "PPP_WITH_DIR", 215: "IEEE802_15_4_NONASK_PHY",
    220: "USB_LINUX_MMAPPED", 228: "IPV4", 229: "IPV6", 239: "NFLOG", 242: "IPOIB", 249: "USBPCAP",
    252: "WIRESHARK_UPPER_PDU", 263: "BLUETOOTH_LE_LL", 264: "SCTP", 274: "NETANALYZER_TRANSPARENT",
    276: "LINUX_SLL2", 281: "DSA_TAG_BRCM",
}
for _i in range(16):
    LINKTYPE_NAMES[147 + _i] = "USER%d" % _i

# Ethertypes of protocols that carry no IP header (frames pass unchanged, counted by this name).
NON_IP_ETHERTYPES = {
    0x88CC: "LLDP", 0x8809: "Slow Protocols (LACP/OAM)", 0x888E: "EAPOL", 0x88F7: "PTP",
    0x8808: "MAC Control", 0x9000: "Ethernet Loopback", 0x8902: "CFM", 0x88E5: "MACsec",
    0x8863: "PPPoE Discovery", 0x8137: "IPX", 0x8138: "IPX", 0x809B: "AppleTalk", 0x80F3: "AARP",
    0x6002: "DEC MOP", 0x6003: "DECnet", 0x6004: "DEC LAT", 0x8906: "FCoE", 0x8914: "FIP",
    0x88E1: "HomePlug AV", 0x893A: "IEEE 1905.1", 0x88E3: "MRP", 0x88F5: "MVRP", 0x88F6: "MMRP",
    0x8892: "PROFINET", 0x88A4: "EtherCAT", 0x88BA: "IEC 61850 SV", 0x88B8: "GOOSE", 0x892F: "HSR",
    0x88FB: "PRP", 0x88DC: "WSMP", 0x8899: "Realtek RRCP", 0x88D9: "LLTD", 0x88C7: "802.11 pre-auth",
    0x890D: "802.11 TDLS", 0x0842: "Wake-on-LAN", 0x88A2: "ATA over Ethernet", 0x8819: "CobraNet",
    0x88AB: "Ethernet Powerlink", 0x8204: "QNX Qnet", 0x88CD: "SERCOS III", 0x88CA: "TIPC", 0x22F4: "IS-IS",
    0x88F8: "NC-SI", 0x8940: "ECP", 0x22F0: "AVTP",
}
SNAP_CISCO = {0x2000: "CDP", 0x2003: "VTP", 0x2004: "DTP", 0x010B: "PVST+", 0x0111: "UDLD", 0x0104: "PAgP"}
LLC_SAPS = {0x42: "STP", 0xE0: "IPX", 0xF0: "NetBIOS", 0xFE: "OSI (IS-IS/ES-IS/CLNP)", 0x04: "SNA",
             0x05: "SNA", 0x08: "SNA", 0x0C: "SNA", 0x10: "NetWare", 0x80: "XNS", 0xBC: "Banyan VINES",
             0xF4: "LAN Management", 0xF8: "RPL", 0xFC: "RPL", 0x00: "LLC null SAP"}
PPP_NON_IP = {0xC021: "PPP LCP", 0xC023: "PPP PAP", 0xC223: "PPP CHAP", 0x8057: "PPP IPV6CP",
               0x80FD: "PPP CCP", 0x80FB: "PPP CCP", 0x00FD: "PPP compressed data",
               0x00FB: "PPP compressed data", 0xC025: "PPP LQR", 0x8281: "PPP MPLSCP", 0xC227: "PPP EAP",
               0x8207: "PPP CDPCP", 0x002D: "PPP VJ compressed TCP", 0x8029: "PPP ATCP", 0x802B: "PPP IPXCP",
               0x80FF: "PPP BACP", 0xC02B: "PPP BAP", 0x8031: "PPP BCP"}

for _i in range(16):
    LINKTYPE_NAMES[147 + _i] = "USER%d" % _i
del _i

_H = struct.Struct("!H").unpack_from
_I = struct.Struct("!I").unpack_from
_HH = struct.Struct("!HH").unpack_from
_ILE = struct.Struct("<I").unpack_from
_HHLE = struct.Struct("<HH").unpack_from


def linktype_name(linktype: int) -> str:
    return LINKTYPE_NAMES.get(linktype, "unknown")


def unsupported_link(linktype: int) -> str:
    return "link type %d (%s) is not supported" % (linktype, linktype_name(linktype))


def link_start(data, linktype: int, n: int, macs: list) -> tuple:
    """``(state, off, t, None, None)``: the walk goes on in ``state`` at ``off`` (``t``: a pending Ethertype
    or protocol value); or ``(None, off, 0, status, label)``: it ends at the link layer (a frame cut short,
    OK "truncated"; no IP inside, NON_IP; a link type or pseudo-protocol it cannot read, UNINSPECTABLE,
    everything from ``off`` on unread). MAC address fields met are appended to ``macs``."""
    off = 0
    t = 0
    if linktype == 1:
        return ETH, 0, 0, None, None
    if linktype in (101, 12, 14, 228, 229):                   # raw IP: by the version nibble, as Wireshark
        return IP, 0, 0, None, None
    if linktype == 113:                                      # Linux cooked capture v1, 16-byte header
        if n < 16:
            return None, 0, 0, OK, "truncated"
        hatype, halen = _HH(data, 2)
        if halen == 6:
            macs.append(6)
        t = _H(data, 14)[0]
        state, why = sll_state(hatype, t)
        return (state, 16, t, None, None) if state is not None else (None, 16, 0, why[0], why[1])
    if linktype == 276:                                      # Linux cooked capture v2, 20-byte header
        if n < 20:
            return None, 0, 0, OK, "truncated"
        t = _H(data, 0)[0]
        hatype = _H(data, 8)[0]
        if data[11] == 6:
            macs.append(12)
        state, why = sll_state(hatype, t)
        return (state, 20, t, None, None) if state is not None else (None, 20, 0, why[0], why[1])
    if linktype in (0, 108):                                 # BSD loopback: 4-byte address family
        if n < 4:
            return None, 0, 0, OK, "truncated"
        fam = _I(data, 0)[0] if linktype == 108 else _ILE(data, 0)[0]
        if fam > 0xFFFF:
            fam = _I(data, 0)[0]                             # NULL written on a big-endian host
        if fam == 2:
            return IP4, 4, 0, None, None
        if fam in (10, 23, 24, 26, 28, 30):
            return IP6, 4, 0, None, None
        return None, 4, 0, UNINSPECTABLE, "loopback address family %d is not supported" % fam
    if linktype in (9, 50):
        return PPP, 0, 0, None, None
    if linktype == 204:                                      # PPP with a direction byte
        return PPP, 1, 0, None, None
    if linktype == 104:                                      # Cisco HDLC: address, control, ethertype
        if n < 4:
            return None, 0, 0, OK, "truncated"
        return ETYPE, 4, _H(data, 2)[0], None, None
    if linktype == 239:                                      # NFLOG: TLVs, the packet is TLV type 9
        if n < 4:
            return None, 0, 0, OK, "truncated"
        fam = data[0]
        off = nflog_payload(data, n)
        if off < 0:
            return None, 0, 0, NON_IP, "NFLOG without packet"
        return (IP4 if fam == 2 else IP6 if fam == 10 else IP), off, 0, None, None
    if linktype == 242:                                      # IP over InfiniBand: 44-byte header
        if n < 44:
            return None, 0, 0, OK, "truncated"
        return ETYPE, 44, _H(data, 40)[0], None, None
    return None, 0, 0, UNINSPECTABLE, unsupported_link(linktype)


def sll_state(hatype, proto):
    """Linux cooked capture: the protocol field is an ethertype except for a few pseudo-values.

    Returns ``(state, None)`` or ``(None, (status, label))``.
    """
    if hatype in (778, 823):                                 # ARPHRD_IPGRE / IP6GRE: GRE protocol type
        return ETYPE, None
    if hatype == 824:
        return None, (NON_IP, "Netlink")
    if hatype == 280:
        return None, (NON_IP, "CAN")
    if hatype in (801, 802, 803, 804):
        return None, (UNINSPECTABLE, "Linux cooked capture of 802.11 (ARPHRD type %d) is not supported"
                      % hatype)
    if proto == 0x0004:                                      # 802.2 LLC frame
        return LLC, None
    if proto == 0x0001:
        return None, (NON_IP, "IPX")
    if proto < 0x0600:
        return None, (UNINSPECTABLE, "Linux cooked capture protocol 0x%04x is not supported" % proto)
    return ETYPE, None


def nflog_payload(data, n):
    """Offset of the NFULA_PAYLOAD (type 9) value in an NFLOG frame, or -1."""
    p = 4
    while p + 4 <= n:
        ln, typ = _HHLE(data, p)
        if ln < 4:
            ln, typ = _HH(data, p)                           # written by a big-endian host
            if ln < 4:
                return -1
        if (typ & 0x7FFF) == 9:
            return p + 4
        p += (ln + 3) & ~3
    return -1
