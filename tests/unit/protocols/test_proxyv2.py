"""PROXY protocol v2 header: round trips, and hostile input never gets past the decoder."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.protocols import proxyv2
from server.protocols.proxyv2 import ProxyHeaderError, ProxyInfo


@pytest.mark.parametrize(
    ("client", "server"),
    [("192.0.2.7", "127.0.0.1"), ("2001:db8::7", "::1"), ("::1", "127.0.0.2")],
)
def test_round_trip(client: str, server: str) -> None:
    header = proxyv2.encode(ProxyInfo(client, 40000, server, 993))
    assert proxyv2.needed(header[:16]) == len(header)
    info, used = proxyv2.decode(header + b"a001 CAPABILITY\r\n")
    assert used == len(header)
    assert info == ProxyInfo(client, 40000, server, 993)


def test_local_command_carries_no_address() -> None:
    header = proxyv2.SIGNATURE + bytes([0x20, 0x00]) + b"\x00\x00"
    assert proxyv2.decode(header) == (None, 16)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"a001 LOGIN x y\r\n",
        proxyv2.SIGNATURE + b"\x11\x11\x00\x0c",  # version 1
        proxyv2.SIGNATURE + b"\x21\x11\x00\x0c" + b"\x00" * 4,  # truncated
        proxyv2.SIGNATURE + b"\x21\x31\x00\x00",
    ],  # unknown family
)
def test_bad_headers_are_refused(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        proxyv2.decode(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.binary(max_size=40))
def test_any_bytes_decode_or_are_refused(head: bytes, tail: bytes) -> None:
    for data in (head, proxyv2.SIGNATURE + head + tail):
        try:
            info, used = proxyv2.decode(data)
        except ProxyHeaderError:
            continue
        assert 16 <= used <= len(data)
        assert info is None or info.client_port >= 0


@pytest.mark.parametrize(
    ("client", "server"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("203.0.113.7", "10.0.0.1"),
        ("0.0.0.0", "255.255.255.255"),
        ("2001:db8::1", "::1"),
        ("192.0.2.1", "2001:db8::2"),
    ],
)
def test_headers_round_trip_as_ipaddress_writes_them(client: str, server: str) -> None:
    import ipaddress

    info = proxyv2.ProxyInfo(client, 40000, server, 143)
    data = proxyv2.encode(info)
    src, dst = ipaddress.ip_address(client), ipaddress.ip_address(server)
    if src.version == dst.version == 4:
        assert data[12:16] == b"\x21\x11\x00\x0c"
        assert data[16:24] == src.packed + dst.packed
    decoded, used = proxyv2.decode(data + b"rest")
    assert used == len(data)
    assert decoded == info


def test_a_malformed_address_is_refused_as_before() -> None:
    with pytest.raises(ValueError):
        proxyv2.encode(proxyv2.ProxyInfo("01.2.3.4", 1, "127.0.0.1", 2))
