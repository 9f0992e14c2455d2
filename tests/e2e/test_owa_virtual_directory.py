"""Set-OwaVirtualDirectory reaches the running W3SVC without a restart: the plain-HTTP to
HTTPS redirect is built on ExternalUrl (InternalUrl for a client in InternalNetworks)."""

from __future__ import annotations

import http.client

import pytest

from server.settings.models import WEB

from .conftest import ServiceRunner
from .test_web_browser import wait_reloaded

pytestmark = pytest.mark.e2e

VDIR = "MBX01\\owa (Default Web Site)"


def redirect(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/settings")
        reply = conn.getresponse()
        reply.read()
        assert 300 <= reply.status < 400, reply.status
        return reply.getheader("Location") or ""
    finally:
        conn.close()


def test_changed_urls_are_live_in_w3svc(services: ServiceRunner) -> None:
    runner = services
    runner.run_ok(
        "Set-OwaVirtualDirectory",
        "-Identity",
        VDIR,
        "-ExternalUrl",
        "https://owa-before.contoso.com/owa",
    )
    runner.start(WEB)
    port = runner.settings.server("MBX01").OwaVirtualDirectory.Bindings[0].port
    assert redirect(port) == "https://owa-before.contoso.com/settings"

    runner.run_ok(
        "Set-OwaVirtualDirectory",
        "-Identity",
        VDIR,
        "-ExternalUrl",
        "https://mail.contoso.com:8443/owa",
    )
    wait_reloaded(runner)
    assert redirect(port) == "https://mail.contoso.com:8443/settings"

    # 127.0.0.1 counted as internal (mailctl extension): the internal URL instead.
    runner.run_ok(
        "set-owavirtualdirectory",
        "--server",
        "MBX01",
        "--internal-networks",
        "127.0.0.0/8",
        "--internal-url",
        "https://mbx01.contoso.test/owa",
    )
    wait_reloaded(runner)
    assert redirect(port) == "https://mbx01.contoso.test/settings"
