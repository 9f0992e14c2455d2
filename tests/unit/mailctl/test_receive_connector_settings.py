"""Receive-connector values (issue 14): RemoteIPRanges are real IP ranges, and
MaxInboundConnection is a count or Unlimited, as in Exchange."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from server.settings.models import ReceiveConnector, default_settings
from server.settings.paths import Home
from server.settings.types import ip_in_ranges
from tests.unit.mailctl.cli_helpers import mailctl, ok


def connector() -> ReceiveConnector:
    return default_settings().ReceiveConnectors["Client Frontend MBX01"]


@pytest.mark.parametrize(
    "value",
    ["999.1.1.1", "10.0.0.9-10.0.0.1", "10.0.0.0/33", "mail.example", "10.0.0.1-::1", "fe80::1::2"],
)
def test_bad_remote_ip_ranges_are_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="not an IP address range"):
        connector().RemoteIPRanges = [value]


def test_remote_ip_ranges_forms_and_matching() -> None:
    conn = connector()
    conn.RemoteIPRanges = "192.168.1.7, 10.1.2.3/8, 172.16.0.10-172.16.0.20, 2001:db8::/32"
    ranges = conn.RemoteIPRanges
    assert ranges == ["192.168.1.7", "10.0.0.0/8", "172.16.0.10-172.16.0.20", "2001:db8::/32"]
    assert ip_in_ranges("10.200.1.1", ranges) and ip_in_ranges("192.168.1.7", ranges)
    assert ip_in_ranges("172.16.0.15", ranges) and not ip_in_ranges("172.16.0.21", ranges)
    assert ip_in_ranges("2001:db8::5", ranges) and ip_in_ranges("::ffff:10.0.0.1", ranges)
    assert not ip_in_ranges("127.0.0.1", ranges) and not ip_in_ranges("garbage", ranges)
    assert ip_in_ranges("127.0.0.1", connector().RemoteIPRanges)  # the default: everyone
    assert ip_in_ranges("::1", connector().RemoteIPRanges)


def test_max_inbound_connection_is_a_count_or_unlimited() -> None:
    conn = connector()
    assert conn.MaxInboundConnection == 5000
    for bad in ("10MB", "0", "-1", "5 KB"):
        with pytest.raises(ValidationError):
            conn.MaxInboundConnection = bad
    conn.MaxInboundConnection = "Unlimited"
    assert conn.MaxInboundConnection is None
    assert conn.model_dump(mode="json")["MaxInboundConnection"] == "Unlimited"
    conn.MaxInboundConnection = "1,200"
    assert conn.model_dump(mode="json")["MaxInboundConnection"] == 1200
    conn.MaxInboundConnection = "5000 B"  # what settings.toml held when this was a byte size
    assert conn.MaxInboundConnection == 5000


def test_cli_says_which_connectors_are_served(home: Home) -> None:
    rows = json.loads(ok(home, "get-receiveconnector", "-o", "json").out)
    served = {row["Name"]: row["Served"] for row in rows}
    assert served["Client Frontend MBX01"] == "Yes"
    assert served["Client Proxy MBX01"].startswith("No: HubTransport connectors are not served")
    out = ok(home, "set-receiveconnector", "Client Proxy MBX01", "-MaxMessageSize", "10MB").out
    assert "no effect here" in out
    out = ok(home, "set-receiveconnector", "Client Frontend MBX01", "-MaxMessageSize", "10MB").out
    assert "no effect" not in out
    refused = mailctl(
        home, "set-receiveconnector", "Client Frontend MBX01", "-RemoteIPRanges", "999.1.1.1"
    )
    assert refused.code != 0 and "not an IP address range" in refused.err
    refused = mailctl(
        home, "set-receiveconnector", "Client Frontend MBX01", "-MaxInboundConnection", "10MB"
    )
    assert refused.code != 0


def test_set_says_which_values_have_no_effect(home: Home) -> None:
    out = ok(
        home,
        "set-receiveconnector",
        "Client Frontend MBX01",
        "-AuthMechanism",
        "Tls,BasicAuth,Integrated",
        "-Comment",
        "hello",
    ).out
    assert "Note: AuthMechanism Integrated: no effect here." in out
    assert "Note: Comment is a note for admins: no effect here." in out
    out = ok(
        home,
        "set-receiveconnector",
        "Client Frontend MBX01",
        "-PermissionGroups",
        "AnonymousUsers,ExchangeUsers",
    ).out
    assert "no effect" not in out
