"""New-/Import-/Enable-/Get-ExchangeCertificate (certificates for IMAP, POP, SMTP, IIS).

Which certificate a service uses: the one enabled for its kind (-Services) whose names
include the service's X509CertificateName (IMAP/POP) or TlsCertificateName (SMTP connector),
else any enabled one (server.runtime.tls.select_certificate). Unlike Exchange, no restart
is needed: running services watch the certificate index and use a newly enabled certificate
for the next handshake, while open sessions keep theirs.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from server.settings.types import split_multivalue

from .. import views
from ..cli import (
    CommandError,
    OutputOpt,
    WhatIfOpt,
    command,
    emit,
    fail,
    home,
    list_option,
    load_settings,
)

ServicesOpt = Annotated[
    str | None, list_option("--services", help="Comma list of IMAP, POP, SMTP, IIS.")
]
COLUMNS = ["Thumbprint", "Services", "Subject", "CertificateDomains", "NotAfter"]


def _row(info: Any) -> dict[str, Any]:
    return views.certificate_row(
        info.thumbprint, info.subject, info.dns_names, info.not_after, info.services)


def _services(value: str | None) -> list[str]:
    from server.runtime.tls import SERVICE_KINDS

    services = [s.upper() for s in split_multivalue(value)] if value else []
    unknown = [s for s in services if s not in SERVICE_KINDS]
    if unknown:
        fail(f"unknown service {', '.join(unknown)}", allowed=", ".join(SERVICE_KINDS))
    return services


def _subject(value: str) -> str:
    match = re.search(r"CN=([^,]+)", value, re.I)
    return (match.group(1) if match else value).strip()


@command("New-ExchangeCertificate")
def new_exchange_certificate(
    subject_name: Annotated[
        str | None, typer.Option("--subject-name", help='e.g. "CN=mail.contoso.com".')
    ] = None,
    domain_name: Annotated[
        str | None, list_option("--domain-name", help="Names for the certificate (SAN).")
    ] = None,
    services: ServicesOpt = None,
    friendly_name: Annotated[
        str | None, typer.Option("--friendly-name", help="Accepted; not used here.")
    ] = None,
    validity_days: Annotated[int, typer.Option("--validity-days", min=1, max=3650)] = 825,
    output: OutputOpt = "table",
    what_if: WhatIfOpt = False,
) -> None:
    """Create a certificate signed by this installation's private CA."""
    from server.runtime import tls

    names = split_multivalue(domain_name) if domain_name else []
    subject = _subject(subject_name) if subject_name else (names[0] if names else None)
    if not subject:
        fail("give -SubjectName or -DomainName", allowed='-SubjectName "CN=mail.contoso.com"')
    if what_if:
        print(f"What if: would create a certificate for {subject} (names: "
              f"{', '.join(names or [subject])}; services: {', '.join(_services(services)) or 'None'};"
              f" {validity_days} days).")
        return
    info = tls.new_certificate(
        home(), subject, names or [subject], _services(services), days=validity_days
    )
    emit(_row(info), output, columns=COLUMNS)


@command("Import-ExchangeCertificate")
def import_exchange_certificate(
    file_name: Annotated[
        Path, typer.Option("--file-name", help="PEM file: the chain (leaf first), maybe the key.")
    ],
    private_key_file: Annotated[
        Path | None,
        typer.Option("--private-key-file", help="PEM private key, if not in -FileName."),
    ] = None,
    services: ServicesOpt = None,
    output: OutputOpt = "table",
    what_if: WhatIfOpt = False,
) -> None:
    """Import a PEM certificate chain and its private key."""
    from server.runtime import tls

    try:
        data = file_name.read_bytes()
        key = private_key_file.read_bytes() if private_key_file else data
    except OSError as exc:
        fail(f"cannot read {exc.filename}: {exc.strerror}", code=1)
    if b"PRIVATE KEY-----" not in key:
        fail("no private key found; give -PrivateKeyFile", allowed="a PEM file with the key")
    certs = re.findall(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\s*", data, re.S)
    if not certs:
        fail(f"{file_name} holds no PEM certificate", allowed="PEM (-----BEGIN CERTIFICATE-----)")
    if what_if:
        print(f"What if: would import the chain of {len(certs)} certificate(s) in {file_name} "
              f"(services: {', '.join(_services(services)) or 'None'}).")
        return
    try:
        info = tls.import_certificate(home(), b"".join(certs), key, _services(services))
    except ValueError as exc:
        fail(f"cannot import: {exc}", code=1)
    emit(_row(info), output, columns=COLUMNS)


@command("Enable-ExchangeCertificate")
def enable_exchange_certificate(
    thumbprint: Annotated[str, typer.Argument(help="The certificate's thumbprint.")],
    services: ServicesOpt = None,
    output: OutputOpt = "table",
    what_if: WhatIfOpt = False,
) -> None:
    """Make a certificate the one IMAP, POP, SMTP or IIS use."""
    from server.runtime import tls

    wanted = _services(services)
    if not wanted:
        fail("give -Services", allowed="IMAP, POP, SMTP, IIS")
    if what_if:
        known = {c.thumbprint for c in tls.list_certificates(home())}
        if thumbprint.upper() not in known:
            fail(f"no certificate with thumbprint {thumbprint}",
                 allowed="see get-exchangecertificate", code=1)
        print(f"What if: would enable {thumbprint.upper()} for {', '.join(wanted)}.")
        return
    try:
        info = tls.enable_certificate(home(), thumbprint, wanted)
    except KeyError:
        fail(
            f"no certificate with thumbprint {thumbprint}",
            allowed="see get-exchangecertificate",
            code=1,
        )
    emit(_row(info), output, columns=COLUMNS)
    typer.echo(
        "Running services use it from the next connection; open connections keep theirs.",
        err=True,
    )


@command("Get-ExchangeCertificate", read=True)
def get_exchange_certificate(
    thumbprint: Annotated[str | None, typer.Argument(help="Only this certificate.")] = None,
    output: OutputOpt = "table",
) -> None:
    """List the certificates and the services each is enabled for."""
    from server.runtime import tls

    with contextlib.suppress(CommandError):
        load_settings()  # leaves the fast path's cache current: the next call is fast
    certificates = tls.list_certificates(home())
    if thumbprint:
        certificates = [c for c in certificates if c.thumbprint == thumbprint.upper()]
        if not certificates:
            fail(f"no certificate with thumbprint {thumbprint}", code=1)
        emit(_row(certificates[0]), output, columns=COLUMNS)
        return
    emit([_row(c) for c in certificates], output, columns=COLUMNS)
