"""PROXY protocol version 2 header (haproxy's proxy-protocol.txt, section 2.2), sans-IO.

The front end sends it first on every back-end connection so the back end knows the real
client address (for logs and per-IP limits) while the TCP peer is the front end.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
HEADER_LEN = 16
# Version 2 PROXY, TCP over IPv4, 12 octets of addresses and ports.
_IPV4_HEAD = SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 12)


@dataclass(frozen=True)
class ProxyInfo:
    client_address: str
    client_port: int
    server_address: str
    server_port: int


class ProxyHeaderError(ValueError):
    pass


def encode(info: ProxyInfo) -> bytes:
    # The usual case, both addresses IPv4 as sockets give them: inet_pton (C) instead of
    # ipaddress's parsing, which costs a hand-over more than the rest of this header.
    try:
        src4 = socket.inet_pton(socket.AF_INET, info.client_address)
        dst4 = socket.inet_pton(socket.AF_INET, info.server_address)
    except OSError:
        pass
    else:
        return _IPV4_HEAD + src4 + dst4 + struct.pack("!HH", info.client_port, info.server_port)
    src = ipaddress.ip_address(info.client_address)
    dst = ipaddress.ip_address(info.server_address)
    if src.version != dst.version:
        # Mixed families: map both to IPv6 so one header describes them.
        src = ipaddress.IPv6Address(f"::ffff:{src}") if src.version == 4 else src
        dst = ipaddress.IPv6Address(f"::ffff:{dst}") if dst.version == 4 else dst
    family = 0x11 if src.version == 4 else 0x21  # TCP over IPv4 / IPv6
    body = src.packed + dst.packed + struct.pack("!HH", info.client_port, info.server_port)
    return SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


def needed(data: bytes) -> int:
    """How many bytes the whole header takes, once the first 16 are in (else 16)."""
    if len(data) < HEADER_LEN:
        return HEADER_LEN
    return HEADER_LEN + struct.unpack("!H", data[14:16])[0]


def decode(data: bytes) -> tuple[ProxyInfo | None, int]:
    """Parse a complete header; returns (info, bytes used). LOCAL command gives None."""
    if len(data) < HEADER_LEN or not data.startswith(SIGNATURE):
        raise ProxyHeaderError("no PROXY v2 header")
    version_command, family = data[12], data[13]
    if version_command >> 4 != 2:
        raise ProxyHeaderError("unsupported PROXY version")
    total = needed(data)
    if len(data) < total:
        raise ProxyHeaderError("truncated PROXY header")
    body = data[HEADER_LEN:total]
    if version_command & 0x0F == 0:  # LOCAL: health checks from the proxy itself
        return None, total
    if family == 0x11 and len(body) >= 12:
        # inet_ntop: what str(IPv4Address) gives, without building the objects.
        src4 = socket.inet_ntop(socket.AF_INET, body[0:4])
        dst4 = socket.inet_ntop(socket.AF_INET, body[4:8])
        sport, dport = struct.unpack("!HH", body[8:12])
        return ProxyInfo(src4, sport, dst4, dport), total
    if family == 0x21 and len(body) >= 36:
        src, dst = ipaddress.IPv6Address(body[0:16]), ipaddress.IPv6Address(body[16:32])
        sport, dport = struct.unpack("!HH", body[32:36])
        if src.ipv4_mapped:
            src = src.ipv4_mapped
        if dst.ipv4_mapped:
            dst = dst.ipv4_mapped
    else:
        raise ProxyHeaderError("unsupported address family")
    return ProxyInfo(str(src), sport, str(dst), dport), total
