"""Whole TCP conversations for tests and samples: TLS after plaintext (STARTTLS in SMTP, IMAP, POP3, FTP,
XMPP and LDAP; PostgreSQL's SSLRequest; an HTTP proxy's CONNECT), TLS handshakes with application data,
and the frames of one connection carrying them, written as a pcap file.

``upgrade_messages(protocol, accept=True)`` (ports in ``UPGRADE_PORTS``), ``tls_flights(rng, host, tls13)``,
``tcp_conversation(messages, dport, seed, v6, mss)`` and ``write_pcap(path, frames)``; the frames come
from samplegen's builders and its TCP connection model, so every checksum is right.
"""
from __future__ import annotations

import random
import struct

from .capture import make_pcap_header
from .capturewriter import CaptureWriter
from .samplegen import (_der, _Net, _TcpConn, _vec, http_request, tls_certificate, tls_client_hello,
                        tls_handshake, tls_record, tls_server_hello)

UPGRADE_PORTS = {"smtp": 25, "imap": 143, "pop3": 110, "ftp": 21, "xmpp": 5222, "ldap": 389, "pgsql": 5432,
                 "connect": 3128}


def _ldap(msg_id: int, op: bytes) -> bytes:
    return _der(0x30, _der(0x02, bytes((msg_id,))) + op)


def _upgrade(protocol: str, host: str):
    """(plaintext before the request, the client's request, the server's yes, its no, plaintext after a no)"""
    if protocol == "smtp":
        return ([(False, f"220 {host} ESMTP Postfix\r\n".encode()), (True, b"EHLO client.example.org\r\n"),
                 (False, f"250-{host}\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n".encode())],
                b"STARTTLS\r\n", b"220 2.0.0 Ready to start TLS\r\n",
                b"454 4.7.0 TLS not available due to local problem\r\n",
                [(True, b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"), (False, b"235 2.7.0 Ok\r\n")])
    if protocol == "imap":
        return ([(False, b"* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.\r\n")], b"a1 STARTTLS\r\n",
                b"a1 OK Begin TLS negotiation now.\r\n", b"a1 NO STARTTLS unavailable\r\n",
                [(True, b"a2 LOGIN alice secret\r\n"), (False, b"a2 OK Logged in\r\n")])
    if protocol == "pop3":
        return ([(False, b"+OK POP3 ready <1896.697170952@example.com>\r\n"), (True, b"CAPA\r\n"),
                 (False, b"+OK\r\nSTLS\r\nUSER\r\n.\r\n")], b"STLS\r\n", b"+OK Begin TLS negotiation\r\n",
                b"-ERR STLS not permitted\r\n", [(True, b"USER alice\r\nPASS secret\r\n"), (False, b"+OK\r\n")])
    if protocol == "ftp":
        return ([(False, b"220 (vsFTPd 3.0.3)\r\n")], b"AUTH TLS\r\n", b"234 Proceed with negotiation.\r\n",
                b"534 Policy requires SSL.\r\n", [(True, b"USER alice\r\n"), (False, b"331 Password?\r\n"),
                                                    (True, b"PASS secret\r\n"), (False, b"230 Logged in.\r\n")])
    if protocol == "xmpp":
        tls = "xmlns='urn:ietf:params:xml:ns:xmpp-tls'"
        stream = "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
        return ([(True, f"<?xml version='1.0'?><stream:stream to='example.com' {stream}".encode()),
                 (False, f"<?xml version='1.0'?><stream:stream from='example.com' id='c2s_1' {stream}"
                         f"<stream:features><starttls {tls}/></stream:features>".encode())],
                f"<starttls {tls}/>".encode(), f"<proceed {tls}/>".encode(), f"<failure {tls}/>".encode(),
                [(True, b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                        b"AGFsaWNlAHNlY3JldA==</auth>")])
    if protocol == "ldap":
        oid = b"1.3.6.1.4.1.1466.20037"

        def response(op, code):                 # resultCode, matchedDN, diagnosticMessage (+ responseName)
            return _ldap(1 if op == 0x78 else 2, _der(op, b"\x0a\x01" + bytes((code,)) + b"\x04\x00\x04\x00"
                                                       + (_der(0x8A, oid) if op == 0x78 else b"")))
        bind = _der(0x60, b"\x02\x01\x03" + _der(0x04, b"cn=alice,dc=example,dc=com") + _der(0x80, b"secret"))
        return ([], _ldap(1, _der(0x77, _der(0x80, oid))), response(0x78, 0), response(0x78, 52),
                [(True, _ldap(2, bind)), (False, response(0x61, 0))])
    if protocol == "pgsql":
        startup = b"\x00\x03\x00\x00user\x00alice\x00database\x00app\x00\x00"
        return ([], struct.pack("!II", 8, 80877103), b"S", b"N",
                [(True, struct.pack("!I", 4 + len(startup)) + startup),
                 (False, b"R\x00\x00\x00\x08\x00\x00\x00\x03"), (True, b"p\x00\x00\x00\x0bsecret\x00")])
    if protocol == "connect":
        request = (f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\nProxy-Authorization: Basic "
                   f"YWxpY2U6c2VjcmV0\r\nUser-Agent: curl/8.5.0\r\n\r\n").encode()
        return ([], request, b"HTTP/1.1 200 Connection established\r\n\r\n",
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"proxy\"\r\n"
                b"Content-Length: 0\r\n\r\n", [(True, http_request(host, "/private/report.html"))])
    raise ValueError(f"unknown protocol {protocol!r}")


def upgrade_messages(protocol: str, accept: bool = True, host: str = "mail.example.com") -> list:
    """The plaintext of a connection that asks to turn to TLS (``protocol`` one of ``UPGRADE_PORTS``) as
    ``[(from_client, bytes), ...]``, ending with the server's answer. ``accept`` False: the server refuses
    (SMTP 454, IMAP NO, POP3 -ERR, FTP 534, XMPP failure, LDAP unavailable, PostgreSQL 'N', proxy 407)
    and the client goes on in plaintext, credentials included: a sanitizer must mask all of it."""
    before, request, yes, no, after = _upgrade(protocol, host)
    return before + [(True, request), (False, yes if accept else no)] + ([] if accept else after)


def tls_flights(rng: random.Random, host: str = "mail.example.com", tls13: bool = True) -> list:
    """One TLS handshake and some application data as ``[(from_client, records), ...]`` (as _tls_session)."""
    sid = rng.randbytes(32)
    out = [(True, tls_record(22, tls_client_hello(host, rng.randbytes(32), sid, tls13), 0x0301))]
    if tls13:
        out += [(False, tls_record(22, tls_server_hello(rng.randbytes(32), sid, True)) + tls_record(20, b"\1")
                 + tls_record(23, rng.randbytes(2600))),
                (True, tls_record(20, b"\1") + tls_record(23, rng.randbytes(53)))]
    else:
        ske = tls_handshake(12, b"\x03\x00\x17" + _vec(b"\x04" + rng.randbytes(64), 1) + b"\x04\x01"
                            + _vec(rng.randbytes(256), 2))
        hello = tls_server_hello(rng.randbytes(32), sid, False)
        out += [(False, tls_record(22, hello + tls_certificate([host], rng.randbytes(300)) + ske
                                   + tls_handshake(14, b""))),
                (True, tls_record(22, tls_handshake(16, _vec(b"\x04" + rng.randbytes(64), 1)))
                 + tls_record(20, b"\1") + tls_record(22, rng.randbytes(40))),
                (False, tls_record(20, b"\1") + tls_record(22, rng.randbytes(40)))]
    return out + [(True, tls_record(23, rng.randbytes(300))), (False, tls_record(23, rng.randbytes(5000))),
                  (True, tls_record(21, rng.randbytes(26)))]


def tcp_conversation(messages, dport: int, seed: int = 0, v6: bool = False, mss: int | None = None) -> list:
    """Ethernet frames of one whole TCP connection carrying ``messages`` (``[(from_client, bytes)]``):
    SYN, each message cut into segments of ``mss`` bytes with ACKs, FIN. Correct checksums throughout."""
    rng = random.Random(seed)
    net = _Net(rng)
    client, cmac = net.client(v6)
    conn = _TcpConn(rng, client, net.server(v6), cmac, rng.randrange(32768, 61000), dport, v6, None)
    if mss:
        conn.mss = mss
    frames = list(conn.handshake())
    for up, data in messages:
        frames += conn.send(up, data)
    return frames + list(conn.close())


def write_pcap(path, frames, start_ns: int = 1_709_294_400 * 10 ** 9) -> None:
    """Write Ethernet ``frames`` as a pcap file (microseconds, one millisecond apart)."""
    with open(path, "wb") as fh:
        writer = CaptureWriter(fh, "pcap", make_pcap_header(1, 262144, False, "<"))
        writer.write_batch([(f, 1, start_ns // 1000 + 1000 * i, len(f), 0, None) for i, f in enumerate(frames)])
        writer.close()
