"""Certificates: the commands, and a front end serving the certificate the admin picked."""

from __future__ import annotations

import imaplib
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trustme

from server.runtime import tls
from server.settings import store
from server.settings.models import IMAP4
from server.settings.paths import Home
from tests.e2e.frontend_support import client_context, configure, make_home, ports

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return make_home(tmp_path / "home")


def mailctl(home: Home, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAILCTL_HOME": str(home.root)}
    return subprocess.run(
        [sys.executable, "-m", "mailctl", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_first_start_makes_a_self_signed_certificate_for_the_fqdn(
    home: Home, in_process: Any
) -> None:
    assert tls.list_certificates(home) == []
    _, imaps = ports(home, "IMAP")
    with in_process(IMAP4, home):
        context = client_context(home)
        context.check_hostname = True
        with imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=context) as client:
            assert ("DNS", "mbx01.contoso.test") in client.sock.getpeercert()["subjectAltName"]
            assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with in_process(IMAP4, home), pytest.raises((ssl.SSLError, OSError)):
        imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=old)


def test_new_and_enable_certificate_commands_pick_what_imap_serves(
    home: Home, in_process: Any
) -> None:
    result = mailctl(
        home,
        "New-ExchangeCertificate",
        "-SubjectName",
        "CN=mail.contoso.test",
        "-DomainName",
        "mail.contoso.test,imap.contoso.test",
        "-o",
        "json",
    )
    assert result.returncode == 0, result.stderr
    thumb = json.loads(result.stdout)["Thumbprint"]
    result = mailctl(home, "enable-exchangecertificate", thumb, "--services", "IMAP,POP")
    assert result.returncode == 0, result.stderr
    listed = json.loads(mailctl(home, "get-exchangecertificate", "-o", "json").stdout)
    assert [c["Services"] for c in listed if c["Thumbprint"] == thumb] == ["IMAP, POP"]
    assert mailctl(home, "enable-exchangecertificate", thumb, "--services", "FTP").returncode == 2
    _, imaps = ports(home, "IMAP")
    with in_process(IMAP4, home) as svc:
        configure(home, "IMAP", X509CertificateName="imap.contoso.test")
        svc.reload()
        context = client_context(home)
        context.check_hostname = False  # signed by our CA, but not for 127.0.0.1
        with imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=context) as client:
            names = client.sock.getpeercert()["subjectAltName"]
            assert ("DNS", "imap.contoso.test") in names


def test_imported_certificate_is_served_after_reload(
    home: Home, in_process: Any, tmp_path: Path
) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("imported.contoso.test")
    pem = tmp_path / "chain.pem"
    pem.write_bytes(
        b"".join(blob.bytes() for blob in leaf.cert_chain_pems) + leaf.private_key_pem.bytes()
    )
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    _, imaps = ports(home, "IMAP")
    with in_process(IMAP4, home) as svc:
        result = mailctl(
            home,
            "Import-ExchangeCertificate",
            "-FileName",
            str(pem),
            "-Services",
            "IMAP",
            "-o",
            "json",
        )
        assert result.returncode == 0, result.stderr
        configure(home, "IMAP", X509CertificateName="imported.contoso.test")
        svc.reload()
        context = ssl.create_default_context(cafile=str(cafile))
        context.check_hostname = False  # we connect to 127.0.0.1
        with imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=context) as client:
            assert ("DNS", "imported.contoso.test") in client.sock.getpeercert()["subjectAltName"]
    assert store.load(home).settings.Servers["MBX01"].ImapSettings.X509CertificateName == (
        "imported.contoso.test"
    )
