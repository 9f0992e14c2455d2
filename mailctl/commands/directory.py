"""Set-ADServerSettings / Get-ADServerSettings: where the organization's mailboxes live.

Exchange keeps mailboxes in Active Directory, and Set-ADServerSettings is the cmdlet an
Exchange admin uses to pick the domain controller it talks to (-PreferredServer). Here it
points the organization at an LDAP directory (OpenLDAP, Active Directory, Samba AD), or
with -Disable back at settings.toml's Mailboxes table. The settings are the [Directory]
section (server/settings/models.py, DirectorySettings); the services pick them up live.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from mailctl.cli import (
    OutputOpt,
    WhatIfOpt,
    command,
    edit_settings,
    emit,
    fail,
    home,
    load_settings,
)
from server.settings.models import DirectoryMapping

BIND_PASSWORD_FILE = "secrets/ldap-bind-password"


def _mapping_pairs(pairs: list[str]) -> dict[str, Any]:
    """-Mapping Field=attribute (repeatable; LoginNames takes a comma list)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        field, sep, attr = pair.partition("=")
        field, attr = field.strip(), attr.strip()
        if not sep or field not in DirectoryMapping.model_fields:
            fail(
                f"-Mapping {pair!r}: give Field=attribute",
                allowed=", ".join(DirectoryMapping.model_fields),
            )
        if field in ("LoginNames", "ObjectClasses"):
            out[field] = [a.strip() for a in attr.split(",") if a.strip()]
        else:
            out[field] = attr
    return out


@command("Set-ADServerSettings")
def set_adserversettings(
    uri: Annotated[
        str | None,
        typer.Option("--uri", help="ldap://host:port or ldaps://host:port of the directory."),
    ] = None,
    preferred_server: Annotated[
        str | None,
        typer.Option("--preferred-server", help="A domain controller's host name (ldap://NAME)."),
    ] = None,
    base_dn: Annotated[
        str | None, typer.Option("--base-dn", help="Where mailboxes are searched and created.")
    ] = None,
    bind_dn: Annotated[
        str | None,
        typer.Option("--bind-dn", help="The service account mailctl binds as ('' : anonymous)."),
    ] = None,
    bind_password_stdin: Annotated[
        bool,
        typer.Option(
            "--bind-password-stdin",
            help=f"Read the service account's password from stdin into {BIND_PASSWORD_FILE}.",
        ),
    ] = False,
    tls_ca_file: Annotated[
        str | None,
        typer.Option(
            "--tls-ca-file", help="CA certificates (PEM) for ldaps://; default: the system's."
        ),
    ] = None,
    login_verification: Annotated[
        str | None,
        typer.Option(
            "--login-verification",
            metavar="Hash|Bind",
            help="Hash: check the argon2 hash kept in the directory; Bind: bind as the user.",
        ),
    ] = None,
    connect_timeout: Annotated[int | None, typer.Option("--connect-timeout")] = None,
    operation_timeout: Annotated[int | None, typer.Option("--operation-timeout")] = None,
    mapping: Annotated[
        list[str] | None,
        typer.Option(
            "--mapping", help="Field=attribute, e.g. EmailAddresses=proxyAddresses (repeatable)."
        ),
    ] = None,
    disable: Annotated[
        bool,
        typer.Option(
            "--disable", help="Keep mailboxes in settings.toml again (the LDAP entries stay)."
        ),
    ] = False,
    what_if: WhatIfOpt = False,
) -> None:
    """Point the organization at an LDAP directory for its mailboxes (or, with --disable,
    back at settings.toml). Mailbox cmdlets then read and write the directory."""
    from server.settings import store
    from server.settings.store import atomic_write

    if preferred_server and not uri:
        uri = f"ldap://{preferred_server}"
    values: dict[str, Any] = {
        "Uri": uri,
        "BaseDN": base_dn,
        "BindDN": bind_dn,
        "TlsCaFile": tls_ca_file,
        "LoginVerification": login_verification,
        "ConnectTimeout": connect_timeout,
        "OperationTimeout": operation_timeout,
    }
    values = {k: v for k, v in values.items() if v is not None}
    if bind_password_stdin:
        values["BindPasswordFile"] = BIND_PASSWORD_FILE
    pairs = _mapping_pairs(mapping or [])
    if not values and not pairs and not disable:
        fail("Set-ADServerSettings: give at least one parameter to change (see --help)")
    secret = sys.stdin.readline().rstrip("\r\n") if bind_password_stdin else None
    if secret is not None and not what_if:
        # Before the settings that name it: services reload as soon as those are written.
        where = home()
        where.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(where.root / BIND_PASSWORD_FILE, secret.encode(), mode=0o600)
    with edit_settings(what_if) as session:
        if disable:
            session.remove(("Directory",))
        else:
            for key, value in values.items():
                session.set(("Directory", key), value if value != "" else None)
            for key, value in pairs.items():
                session.set(("Directory", "Mapping", key), value)
        try:
            settings = session.validate()
        except store.SettingsError as exc:
            fail(exc.message.split(": ", 1)[-1])
    if what_if:
        print(
            "What if: would "
            + ("keep mailboxes in settings.toml." if disable else "set the directory settings.")
        )
        return
    if disable or settings.Directory is None or not settings.Directory.ldap():
        print("Mailboxes are kept in settings.toml.")
        return
    print(f"Mailboxes are kept in {settings.Directory.Uri} under {settings.Directory.BaseDN}.")
    _probe(settings)


def _probe(settings: Any) -> None:
    """Say at once whether the directory answers, rather than at the first login."""
    from server.directory import DirectoryUnavailable, ldap_for

    client = ldap_for(settings, home())
    assert client is not None
    try:
        count = len(client.all(next(iter(settings.Servers))))
    except DirectoryUnavailable as exc:
        print(f"mailctl: warning: the directory does not answer now: {exc}", file=sys.stderr)
        return
    print(f"The directory answers; it holds {count} mailbox(es).")


@command("Get-ADServerSettings", read=True)
def get_adserversettings(output: OutputOpt = "table") -> None:
    """Where the organization's mailboxes live (settings.toml, or an LDAP directory)."""
    from mailctl import views

    emit(views.directory_row(load_settings().model_dump(mode="json")), output)
