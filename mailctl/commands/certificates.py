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
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mailctl import views
from mailctl.cli import (
    CommandError,
    OutputOpt,
    WhatIfOpt,
    command,
    emit,
    fail,
    home,
    list_option,
    load_settings,
    warn,
)
from mailctl.commands.mailboxes import PasswordOpt, PasswordStdinOpt, unwrap_password
from server.settings.types import split_multivalue

ServicesOpt = Annotated[
    str | None, list_option("--services", help="Comma list of IMAP, POP, SMTP, IIS.")
]
COLUMNS = ["Thumbprint", "Services", "Subject", "CertificateDomains", "NotAfter"]


def _row(info: Any) -> dict[str, Any]:
    return views.certificate_row(
        info.thumbprint, info.subject, info.dns_names, info.not_after, info.services
    )


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
        print(
            f"What if: would create a certificate for {subject} (names: "
            f"{', '.join(names or [subject])}; services: {', '.join(_services(services)) or 'None'};"
            f" {validity_days} days)."
        )
        return
    info = tls.new_certificate(
        home(), subject, names or [subject], _services(services), days=validity_days
    )
    emit(_row(info), output, columns=COLUMNS)


# What Exchange's documentation pastes for -FileData: the bytes of a file, read by
# PowerShell. Here the file is read by mailctl, so only its path matters.
_FILE_DATA = re.compile(
    r"""^\(?\s*(?:\[System\.IO\.File\]::ReadAllBytes\(|\[IO\.File\]::ReadAllBytes\(|"""
    r"""\[Byte\[\]\]\s*\(\s*Get-Content\s+(?:-Path\s+)?)\s*(?P<q>['"])(?P<path>.+?)(?P=q)""",
    re.I | re.S,
)


def file_data_path(value: str) -> Path:
    """-FileData: a path, or a pasted `([System.IO.File]::ReadAllBytes('C:\\x.pfx'))` /
    `([Byte[]](Get-Content -Path "x.pfx" -Encoding Byte -ReadCount 0))`."""
    match = _FILE_DATA.match(value.strip())
    return Path(match.group("path") if match else value)


@command("Import-ExchangeCertificate")
def import_exchange_certificate(
    file_name: Annotated[
        Path | None,
        typer.Option("--file-name", help="PEM file: the chain (leaf first), maybe the key."),
    ] = None,
    file_data: Annotated[
        str | None,
        typer.Option(
            "--file-data",
            help="A PKCS#12 (.pfx/.p12) file with the key and chain "
            "(a path, or Exchange's ([System.IO.File]::ReadAllBytes('path'))).",
        ),
    ] = None,
    private_key_file: Annotated[
        Path | None,
        typer.Option("--private-key-file", help="PEM private key, if not in -FileName."),
    ] = None,
    password: PasswordOpt = None,
    password_stdin: PasswordStdinOpt = False,
    services: ServicesOpt = None,
    output: OutputOpt = "table",
    what_if: WhatIfOpt = False,
) -> None:
    """Import a certificate and its private key: a PEM chain (-FileName) or a PFX
    (-FileData, its password asked for without echo, or -Password / --password-stdin)."""
    from server.runtime import tls

    if (file_name is None) == (file_data is None):
        fail("give -FileName (PEM) or -FileData (PFX)", allowed="one of the two")
    wanted = _services(services)
    if file_data is not None:
        path = file_data_path(file_data)
        try:
            data = path.read_bytes()
        except OSError as exc:
            fail(f"cannot read {exc.filename}: {exc.strerror}", code=1)
        if what_if:
            print(
                f"What if: would import the PFX {path} (services: {', '.join(wanted) or 'None'})."
            )
            return
        secret = _pfx_password(password, password_stdin)
        try:
            info = tls.import_pfx(home(), data, secret, wanted)
        except ValueError as exc:
            fail(f"cannot import {path}: {exc}", code=1)
        emit(_row(info), output, columns=COLUMNS)
        return
    assert file_name is not None
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
        print(
            f"What if: would import the chain of {len(certs)} certificate(s) in {file_name} "
            f"(services: {', '.join(_services(services)) or 'None'})."
        )
        return
    try:
        info = tls.import_certificate(home(), b"".join(certs), key, wanted)
    except ValueError as exc:
        fail(f"cannot import: {exc}", code=1)
    emit(_row(info), output, columns=COLUMNS)


def _pfx_password(given: str | None, from_stdin: bool) -> bytes | None:
    """The PFX password: -Password (pasted ConvertTo-SecureString unwrapped), the first line
    of stdin, or a prompt; None when there is none (an unprotected PFX)."""
    if given is not None:
        warn(
            "a password on the command line is visible to other users; prefer the prompt "
            "or --password-stdin"
        )
        return unwrap_password(given).encode() or None
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n").encode() or None
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("PFX password (empty if none): ").encode() or None
    return None


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
            fail(
                f"no certificate with thumbprint {thumbprint}",
                allowed="see get-exchangecertificate",
                code=1,
            )
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
