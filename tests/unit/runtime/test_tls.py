"""Certificates: services starting together share one self-signed certificate."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from server.runtime.tls import ensure_certificate, list_certificates, server_context
from server.settings.paths import Home


def test_services_starting_at_once_make_one_certificate(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path)
    home.certs.mkdir(parents=True)
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=ensure_certificate, args=(home, kind, "mbx01.contoso.test"))
        for kind in ("IMAP", "POP", "SMTP", "IIS")
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    certs = list_certificates(home)
    assert len(certs) == 1
    assert set(certs[0].services) == {"IMAP", "POP", "SMTP", "IIS"}
    assert "mbx01.contoso.test" in certs[0].dns_names
    server_context(certs[0])  # loads as a TLS 1.2+ server chain
