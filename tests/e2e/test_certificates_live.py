"""Certificates apply live: Enable-ExchangeCertificate while MSExchangeIMAP4 runs (a real
process) makes the next TLS handshake use the new certificate, with no restart and no
settings change; a connection opened before keeps working on the old one."""

from __future__ import annotations

import hashlib
import imaplib
import json
import ssl

import pytest

from server.runtime import tls
from server.runtime.main import query_control
from server.settings.models import IMAP4
from tests.conftest import wait_for
from tests.e2e.conftest import ServiceRunner
from tests.e2e.frontend_support import ports

pytestmark = pytest.mark.e2e


def thumbprint(client: imaplib.IMAP4_SSL) -> str:
    der = client.sock.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha1(der).hexdigest().upper()


def connect(runner: ServiceRunner) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=str(tls.ensure_ca(runner.home)))
    context.check_hostname = False  # 127.0.0.1; the chain is still verified
    _, imaps = ports(runner.home, "IMAP")
    return imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=context)


def checks(runner: ServiceRunner) -> int:
    """How often the service has picked its certificate again (once at start)."""
    log = runner.home.log_file(IMAP4, "MBX01")
    return log.read_text().count("certificates checked") if log.exists() else 0


def served(runner: ServiceRunner) -> str | None:
    status = query_control(runner.home, IMAP4, "MBX01") or {}
    return status.get("Extra", {}).get("certificate")


def test_enabled_certificate_serves_the_next_handshake_without_restart(
    services: ServiceRunner,
) -> None:
    runner = services
    runner.start(IMAP4)
    pid = runner.get(IMAP4).Pid
    old_client = connect(runner)
    old = thumbprint(old_client)
    assert served(runner) == old

    made = runner.run_ok(
        "New-ExchangeCertificate",
        "-SubjectName",
        "CN=mbx01.contoso.test",
        "-DomainName",
        "mbx01.contoso.test,imap.contoso.test",
        "-o",
        "json",
    )
    new = json.loads(made.stdout)["Thumbprint"]
    assert new != old
    # The index changed, so the service looked again (its log says so), but the new
    # certificate is not enabled for IMAP yet: the old one stays.
    wait_for(lambda: checks(runner) >= 2)
    assert served(runner) == old and thumbprint(connect(runner)) == old

    enabled = runner.run_ok("enable-exchangecertificate", new, "--services", "IMAP")
    assert "next connection" in enabled.stderr and "Restart" not in enabled.stderr
    wait_for(lambda: served(runner) == new)
    fresh = connect(runner)
    assert thumbprint(fresh) == new
    assert fresh.noop()[0] == "OK"
    fresh.logout()

    # The connection made before the switch still works, on its own certificate.
    assert old_client.noop()[0] == "OK" and thumbprint(old_client) == old
    old_client.logout()
    assert runner.get(IMAP4).Pid == pid  # no restart happened
