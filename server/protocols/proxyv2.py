"""PROXY protocol version 2 header (haproxy's proxy-protocol.txt, section 2.2), sans-IO.

The front end sends it first on every back-end connection so the back end knows the real
client address (for logs and per-IP limits) while the TCP peer is the front end.
"""

from __future__ import annotations

import ipaddress
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


def _dotted_quad(text: str) -> bytes | None:
    """The four octets of an IPv4 address written as sockets write one ("192.0.2.7"), else
    None: anything else is left to ipaddress, which accepts no less and refuses the rest."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    for part in parts:
        if not (part.isascii() and part.isdigit() and len(part) <= 3) or (
            part[0] == "0" and part != "0"
        ):
            return None
    try:
        return bytes(map(int, parts))
    except ValueError:  # an octet over 255
        return None


def encode(info: ProxyInfo) -> bytes:
    # The usual case, IPv4 both ways, without ipaddress's objects: they cost a hand-over
    # more than the rest of the header.
    src4, dst4 = _dotted_quad(info.client_address), _dotted_quad(info.server_address)
    if src4 is not None and dst4 is not None:
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
        # What str(IPv4Address) gives, without building the objects.
        src4, dst4 = ".".join(map(str, body[0:4])), ".".join(map(str, body[4:8]))
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
