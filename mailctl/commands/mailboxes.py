"""New-/Get-/Set-/Remove-Mailbox and Get-/Set-CASMailbox (reference section 3).

Passwords come from a prompt without echo, from stdin (--password-stdin), or - for pasted
Exchange lines - from -Password "(ConvertTo-SecureString -String 'x' -AsPlainText -Force)".
They are hashed (argon2id, server.directory) and never printed or stored in clear.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from mailctl import views
from mailctl.cli import (
    OutputOpt,
    WhatIfOpt,
    command,
    edit_settings,
    emit,
    fail,
    find_mailbox,
    home,
    load_settings,
    local_server,
    model_options,
    report_changes,
    require_values,
    update_fields,
    warn,
)
from server.settings.models import Mailbox, Settings

CAS_FIELDS = [f for f in Mailbox.model_fields if f.startswith(("Pop", "Imap"))]
MAILBOX_FIELDS = views.MAILBOX_FIELDS
# Set-Mailbox's quota parameters (server.store.quota).
QUOTA_FIELDS = [
    "UseDatabaseQuotaDefaults",
    "IssueWarningQuota",
    "ProhibitSendQuota",
    "ProhibitSendReceiveQuota",
]
STATISTICS_COLUMNS = ["DisplayName", "ItemCount", "TotalItemSize", "StorageLimitStatus"]
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

PasswordOpt = Annotated[
    str | None,
    typer.Option(
        "--password",
        help="Avoid: visible to other users in the process list. Accepted for pasted Exchange "
        "lines, including \"(ConvertTo-SecureString -String 'x' -AsPlainText -Force)\".",
    ),
]
PasswordStdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]
IdentityArg = Annotated[
    str, typer.Argument(help="Mailbox name, e-mail address or domain\\name.", show_default=False)
]
OptionalIdentityArg = Annotated[
    str | None,
    typer.Argument(help="Mailbox name, address or domain\\name; * wildcards.", show_default=False),
]

_SECURE_STRING = re.compile(
    r"^\(?\s*ConvertTo-SecureString\s+(?:-String\s+)?(?P<q>['\"]?)(?P<pw>.*?)(?P=q)"
    r"(?:\s+-AsPlainText)?(?:\s+-Force)?\s*\)?$",
    re.I | re.S,
)


def unwrap_password(text: str) -> str:
    """`(ConvertTo-SecureString -String 'P@ss' -AsPlainText -Force)` -> `P@ss`."""
    match = _SECURE_STRING.match(text.strip())
    return match.group("pw") if match else text


def read_password(given: str | None, from_stdin: bool, *, required: bool) -> str | None:
    if given is not None:
        warn(
            "a password on the command line is visible to other users; prefer the prompt or --password-stdin"
        )
        password = unwrap_password(given)
    elif from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not required:
        return None
    elif sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            fail("the two passwords differ")
    else:
        fail(
            "no password: give it on stdin with --password-stdin, or run in a terminal for a prompt"
        )
    if not password:
        fail("the password is empty")
    return password


def _ldap(settings: Settings) -> tuple[Any, Callable[[], dict[str, Mailbox]]] | None:
    """With an LDAP directory (Set-ADServerSettings): its client and a reader of all its
    mailboxes; None when the mailboxes are settings.toml's Mailboxes table."""
    if settings.Directory is None or not settings.Directory.ldap():
        return None
    from mailctl.commands import _directory_ldap

    client = _directory_ldap.client(settings)
    assert client is not None
    return client, lambda: _directory_ldap.mailboxes(client, settings)


def one(settings: Settings, identity: str) -> tuple[str, Mailbox]:
    found = settings.mailbox(identity)
    if found is None:
        fail(f"there is no mailbox {identity!r}", code=1)
    return found


def refuse_reserved(name: str, box: Mailbox, cmdlet: str) -> None:
    """A mailbox named Administrator or Guest (or with such an address) is that account, which
    never uses POP3/IMAP4: it must say so in its Type rather than look like a User mailbox."""
    kind = box.reserved_type(name)
    if kind is not None and box.Type is not kind:
        fail(
            f"{cmdlet}: {name!r} with the addresses {', '.join(box.addresses())} is named "
            f"like the {kind.value} account, which can never use POP3 or IMAP4; choose another "
            f"name and address, or give -Type {kind.value}"
        )


@command("New-Mailbox")
def new_mailbox(
    name: Annotated[str, typer.Argument(help="Mailbox name (the login name).", show_default=False)],
    password: PasswordOpt = None,
    password_stdin: PasswordStdinOpt = False,
    primary_smtp_address: Annotated[
        str | None,
        typer.Option("--primary-smtp-address", help="Default: name@Organization.Domain."),
    ] = None,
    display_name: Annotated[str | None, typer.Option("--display-name")] = None,
    first_name: Annotated[str | None, typer.Option("--first-name", hidden=True)] = None,
    last_name: Annotated[str | None, typer.Option("--last-name", hidden=True)] = None,
    user_principal_name: Annotated[
        str | None,
        typer.Option("--user-principal-name", help="Used as the address if none is given."),
    ] = None,
    type_: Annotated[
        str,
        typer.Option(
            "--type",
            help="Only User mailboxes may use POP3/IMAP4.",
            metavar="User|Administrator|Guest|Anonymous",
        ),
    ] = "User",
    server: Annotated[
        str | None, typer.Option("--server", "--database", help="The server that holds it.")
    ] = None,
    what_if: WhatIfOpt = False,
) -> None:
    """Create a mailbox; the password is asked for without echo (or --password-stdin)."""
    from pydantic import ValidationError

    from server.directory import Directory
    from server.settings import store

    if not NAME.match(name):
        fail(f"{name!r} is not a valid mailbox name", allowed="letters, digits, '.', '_', '-'")
    secret = read_password(password, password_stdin, required=not what_if)

    def new_box(settings: Any) -> tuple[str, str, Mailbox]:
        """The new mailbox's server, address and record, refused as New-Mailbox refuses."""
        key, _ = local_server(settings, server)
        address = (
            primary_smtp_address or user_principal_name or f"{name}@{settings.Organization.Domain}"
        )
        display = display_name or " ".join(p for p in (first_name, last_name) if p) or name
        try:
            # --type is text: the model validates it (any case, or its number) into MailboxType.
            box = Mailbox.model_validate(
                {
                    "DisplayName": display,
                    "PrimarySmtpAddress": address,
                    "Server": key,
                    "Type": type_,
                }
            )
        except ValidationError as exc:
            from mailctl.cli import validation_message

            fail("New-Mailbox: " + validation_message(exc, lambda f: f"-{f}"))
        refuse_reserved(name, box, "New-Mailbox")
        return key, address, box

    ldap = _ldap(load_settings())
    if ldap is not None:
        settings = load_settings()
        key, address, box = new_box(settings)
        from mailctl.commands import _directory_ldap
        from server.directory import hash_password

        hashed = hash_password(secret) if secret is not None else None
        _directory_ldap.new_mailbox(ldap[0], settings, name, box, hashed, what_if)
        return
    with edit_settings(what_if) as session:
        settings = session.validate()
        if name.lower() in (n.lower() for n in settings.Mailboxes):
            fail(f"a mailbox named {name!r} exists already", code=1)
        key, address, box = new_box(settings)
        session.set(("Mailboxes", name), box.model_dump(mode="json"))
        try:
            session.validate()
        except store.SettingsError as exc:
            fail(exc.message.split(": ", 1)[-1])
    if what_if:
        print(f"What if: would create mailbox {name} <{address}> on {key}.")
        return
    if secret is not None:
        Directory(home()).set_password(name, secret)
    print(f"Created mailbox {name} <{address}> on {key}.")


def show(
    identity: str | None,
    output: str,
    rows: Callable[[dict[str, Any], list[str]], list[dict[str, Any]]],
    columns: list[str],
) -> None:
    """Get-Mailbox and Get-CASMailbox: the rows of the mailboxes matching `identity`."""
    settings = load_settings()
    dump = settings.model_dump(mode="json")
    ldap = _ldap(settings)
    if ldap is not None:
        dump["Mailboxes"] = {n: b.model_dump(mode="json") for n, b in ldap[1]().items()}
    names = views.match_mailboxes(dump["Mailboxes"], identity)
    if identity and not names:
        fail(f"there is no mailbox {identity!r}", code=1)
    emit(rows(dump, names), output, columns=columns)


@command("Get-Mailbox", read=True)
def get_mailbox(identity: OptionalIdentityArg = None, output: OutputOpt = "table") -> None:
    """Show mailboxes (all, or those matching Identity)."""
    show(identity, output, views.mailbox_rows, views.MAILBOX_COLUMNS)


@command("Set-Mailbox", params=model_options(Mailbox, only=MAILBOX_FIELDS + QUOTA_FIELDS))
def set_mailbox(
    identity: IdentityArg,
    password: PasswordOpt = None,
    password_stdin: PasswordStdinOpt = False,
    what_if: WhatIfOpt = False,
    values: dict[str, Any] | None = None,
) -> None:
    """Change a mailbox: addresses, display name, type, server, password."""
    from server.directory import Directory
    from server.settings import store

    values = values or {}
    secret = read_password(password, password_stdin, required=False)
    if not values and secret is None:
        fail("Set-Mailbox: give at least one parameter to change (see --help)")
    settings = load_settings()
    if "Server" in values:
        refuse_server_change(settings, identity, values)
    ldap = _ldap(settings)
    if ldap is not None:
        from mailctl.commands import _directory_ldap
        from server.directory import hash_password

        if "Server" in values:
            values["Server"] = local_server(settings, values["Server"])[0]
        found = (
            _directory_ldap.set_mailbox(
                ldap[0],
                settings,
                identity,
                values,
                "Set-Mailbox",
                what_if,
                check=lambda n, b: refuse_reserved(n, b, "Set-Mailbox"),
            )
            if values
            else _directory_ldap.one(ldap[0], settings, identity)
        )
        if secret is not None and not what_if:
            _directory_ldap.set_password(ldap[0], found, hash_password(secret))
            print(f"Set a new password for mailbox {found.name}.")
        return
    with edit_settings(what_if) as session:
        settings = session.validate()
        name, box = one(settings, identity)
        if "Server" in values:
            values["Server"] = local_server(settings, values["Server"])[0]
        changes = update_fields(session, ("Mailboxes", name), Mailbox, box, values, "Set-Mailbox")
        try:
            refuse_reserved(name, session.validate().Mailboxes[name], "Set-Mailbox")
        except store.SettingsError as exc:
            fail(exc.message.split(": ", 1)[-1])
    report_changes(f"mailbox {name}", changes, what_if)
    if secret is not None:
        if what_if:
            print(f"What if: would set a new password for mailbox {name}.")
        else:
            Directory(home()).set_password(name, secret)
            print(f"Set a new password for mailbox {name}.")


def refuse_server_change(settings: Settings, identity: str, values: dict[str, Any]) -> None:
    """-Server naming the mailbox's own server changes nothing and is dropped; another server
    is refused: repointing the directory alone would show the user an empty mailbox and
    strand its mail on the old server. New-MoveRequest moves the contents, then switches."""
    wanted, _ = local_server(settings, values["Server"])
    entry = find_mailbox(settings, identity)
    if entry.server_name.lower() == wanted.lower():
        del values["Server"]
        return
    fail(
        f"Set-Mailbox -Server would move only the directory entry of {entry.name}, not its "
        f"mail; use New-MoveRequest {entry.name} -TargetDatabase {wanted}"
    )


@command("Get-MailboxStatistics", read=True)
def get_mailboxstatistics(
    identity: OptionalIdentityArg = None, output: OutputOpt = "table"
) -> None:
    """Item count, total size and storage limit status of mailboxes, from their servers'
    databases; with the quotas in force (the database's unless UseDatabaseQuotaDefaults is
    $false)."""
    from server.store import open_store, quota

    settings = load_settings()
    ldap = _ldap(settings)
    boxes = ldap[1]() if ldap is not None else settings.Mailboxes
    dump = {n: b.model_dump(mode="json") for n, b in boxes.items()}
    names = views.match_mailboxes(dump, identity)
    if identity and not names:
        fail(f"there is no mailbox {identity!r}", code=1)
    rows = []
    stores: dict[str, Any] = {}
    try:
        for name in names:
            box = boxes[name]
            if box.Server not in stores:
                stores[box.Server] = open_store(home(), box.Server)
            used = quota.usage(stores[box.Server].mailbox(name))
            limits = quota.limits(box)
            rows.append(
                views.statistics_row(
                    name,
                    dump[name],
                    used.items,
                    used.bytes,
                    [limits.warning, limits.send, limits.receive],
                )
            )
    finally:
        for store in stores.values():
            store.close()
    emit(rows, output, columns=STATISTICS_COLUMNS)


@command("Remove-Mailbox")
def remove_mailbox(identity: IdentityArg, what_if: WhatIfOpt = False) -> None:
    """Remove a mailbox from the directory (its password too); its stored mail is kept."""
    from server.directory import Directory

    ldap = _ldap(load_settings())
    if ldap is not None:
        from mailctl.commands import _directory_ldap

        _directory_ldap.remove_mailbox(ldap[0], load_settings(), identity, what_if)
        return
    with edit_settings(what_if) as session:
        settings = session.validate()
        name, _ = one(settings, identity)
        session.remove(("Mailboxes", name))
    if what_if:
        print(f"What if: would remove mailbox {name}.")
        return
    Directory(home()).remove_password(name)
    print(f"Removed mailbox {name}.")


@command("Get-CASMailbox", read=True)
def get_casmailbox(identity: OptionalIdentityArg = None, output: OutputOpt = "table") -> None:
    """Show the POP3/IMAP4 switches of mailboxes."""
    show(identity, output, views.cas_rows, views.CAS_COLUMNS)


@command("Set-CASMailbox", params=model_options(Mailbox, only=CAS_FIELDS))
def set_casmailbox(
    identity: IdentityArg, what_if: WhatIfOpt = False, values: dict[str, Any] | None = None
) -> None:
    """Change a mailbox's POP3/IMAP4 switches (e.g. -PopEnabled '$false')."""
    values = values or {}
    require_values(values, "Set-CASMailbox")
    settings = load_settings()
    ldap = _ldap(settings)
    if ldap is not None:
        from mailctl.commands import _directory_ldap

        _directory_ldap.set_mailbox(ldap[0], settings, identity, values, "Set-CASMailbox", what_if)
        return
    with edit_settings(what_if) as session:
        settings = session.validate()
        name, box = one(settings, identity)
        changes = update_fields(
            session, ("Mailboxes", name), Mailbox, box, values, "Set-CASMailbox"
        )
    report_changes(f"mailbox {name}", changes, what_if)
