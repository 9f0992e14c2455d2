"""Test-*Connectivity's logic without sockets: parameters, endpoint choice, step results and
the Error column's wording."""

from __future__ import annotations

import imaplib
import ssl

import pytest

from server.control import connectivity as c
from server.settings.models import Settings
from server.settings.paths import Home
from server.settings.types import IPEndPoint


def test_connection_type_accepts_exchange_spellings() -> None:
    assert c.ConnectionType.parse("ssl") is c.ConnectionType.Ssl
    assert c.ConnectionType.parse(" PlainText ") is c.ConnectionType.Plaintext
    with pytest.raises(ValueError, match="Plaintext, Ssl, Tls"):
        c.ConnectionType.parse("StartTls")


def test_wildcard_bindings_are_reached_on_loopback() -> None:
    assert c.connect_address(IPEndPoint("0.0.0.0", 1)) == "127.0.0.1"
    assert c.connect_address(IPEndPoint("::", 1)) == "::1"
    assert c.connect_address(IPEndPoint("127.0.0.5", 1)) == "127.0.0.5"


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (ConnectionRefusedError(111, "refused"), "connection refused"),
        (TimeoutError(), "no answer"),
        (imaplib.IMAP4.error("LOGIN command error: BAD [b'LOGINDISABLED']"), "answered"),
        (ssl.SSLCertVerificationError(1, "x"), "-TrustAnySSLCertificate"),
    ],
)
def test_errors_read_as_one_sentence(exc: BaseException, words: str) -> None:
    assert words in c.describe(exc, "MBX01 (127.0.0.1:993)")


def make_tester(home: Home, settings: Settings, **kw: object) -> c.Tester:
    probe = c.Probe(
        protocol=str(kw.pop("protocol", "IMAP4")), server="mbx01", user="bob", password="pw", **kw
    )  # type: ignore[arg-type]
    return c.Tester(home, settings, probe)


def test_endpoint_follows_the_connection_type(home: Home, settings: Settings) -> None:
    imap = settings.server("MBX01").ImapSettings
    assert make_tester(home, settings).endpoint()[1] == imap.SSLBindings[0].port
    tls = make_tester(home, settings, connection_type=c.ConnectionType.Tls)
    assert tls.endpoint()[1] == imap.UnencryptedOrTLSBindings[0].port
    assert make_tester(home, settings, port=1234).endpoint()[1] == 1234
    imap.SSLBindings = []
    with pytest.raises(c.StepFailed, match="SSLBindings"):
        make_tester(home, settings).endpoint()


def test_a_failed_step_skips_the_rest_and_time_runs_out(home: Home, settings: Settings) -> None:
    now = [0.0]
    t = make_tester(home, settings, clock=lambda: now[0], timeout=5)

    def slow_logon() -> None:
        now[0] += 6
        t.remaining()

    t.logon = slow_logon  # type: ignore[method-assign]
    rows = [r.row() for r in t.run()]
    assert [r["Result"] for r in rows] == ["Failure", "Skipped", "Skipped"]
    assert "ran out of time" in rows[0]["Error"] and rows[0]["Latency(MS)"] == 6000
    assert rows[1]["Latency(MS)"] == -1
    assert list(rows[0]) == c.COLUMNS
