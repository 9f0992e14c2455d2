"""The mailbox cmdlets when the organization's mailboxes live in LDAP (Set-ADServerSettings).

mailboxes.py calls these instead of editing settings.toml's Mailboxes table; the checks
(names, addresses, values) are the same, the writes go to the directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mailctl.cli import apply_updates, fail, home, report_changes
from server.directory import DirectoryError, DirectoryUnavailable
from server.directory.ldap import Found, LdapDirectory, unmapped_fields
from server.settings.models import Mailbox, Settings


def client(settings: Settings) -> LdapDirectory | None:
    from server.directory import ldap_for

    return ldap_for(settings, home())


def default_server(settings: Settings) -> str:
    return next(iter(settings.Servers))


@contextmanager
def asking() -> Iterator[None]:
    """Directory failures as one clear sentence (exit 1)."""
    try:
        yield
    except DirectoryUnavailable as exc:
        fail(f"the directory cannot be reached ({exc}); nothing was changed", code=1)
    except DirectoryError as exc:
        fail(f"the directory refused the change: {exc}", code=1)


def one(ldap: LdapDirectory, settings: Settings, identity: str) -> Found:
    with asking():
        found = ldap.find(identity, default_server(settings))
    if found is None:
        fail(f"there is no mailbox {identity!r}", code=1)
    return found


def mailboxes(ldap: LdapDirectory, settings: Settings) -> dict[str, Mailbox]:
    with asking():
        return {f.name: f.mailbox for f in ldap.all(default_server(settings))}


def new_mailbox(
    ldap: LdapDirectory,
    settings: Settings,
    name: str,
    box: Mailbox,
    password_hash: str | None,
    what_if: bool,
) -> None:
    if box.Server.lower() not in (s.lower() for s in settings.Servers):
        fail(f"there is no server {box.Server!r}", code=1)
    with asking():
        for wanted in (name, *box.addresses()):
            taken = ldap.find(wanted, default_server(settings))
            if taken is not None:
                fail(f"{wanted!r} is already used by mailbox {taken.name}", code=1)
        if what_if:
            print(
                f"What if: would create mailbox {name} <{box.PrimarySmtpAddress}> "
                f"on {box.Server} as {ldap.dn_for(name)}."
            )
            return
        dn = ldap.create(name, box, password_hash)
    print(f"Created mailbox {name} <{box.PrimarySmtpAddress}> on {box.Server} ({dn}).")


def set_mailbox(
    ldap: LdapDirectory,
    settings: Settings,
    identity: str,
    values: dict[str, Any],
    label: str,
    what_if: bool,
    check: Callable[[str, Mailbox], None] | None = None,
) -> Found:
    found = one(ldap, settings, identity)
    missing = unmapped_fields(ldap.config.Mapping, values)
    if missing:
        fail(
            f"{label}: the directory has no attribute for {', '.join(missing)} "
            "(Set-ADServerSettings -Mapping)",
            code=1,
        )
    if "Server" in values and str(values["Server"]).lower() not in (
        s.lower() for s in settings.Servers
    ):
        fail(f"there is no server {values['Server']!r}", code=1)
    new, changes = apply_updates(Mailbox, found.mailbox, values, label)
    if check is not None:
        check(found.name, new)
    with asking():
        for address in new.addresses():
            taken = ldap.find(address, default_server(settings))
            if taken is not None and taken.dn != found.dn:
                fail(f"address {address} is already used by {taken.name}", code=1)
        if changes and not what_if:
            ldap.update(found, new)
    report_changes(f"mailbox {found.name}", changes, what_if)
    return found


def set_password(ldap: LdapDirectory, found: Found, password_hash: str) -> None:
    with asking():
        ldap.set_password(found, password_hash)


def remove_mailbox(ldap: LdapDirectory, settings: Settings, identity: str, what_if: bool) -> None:
    found = one(ldap, settings, identity)
    if what_if:
        print(f"What if: would remove mailbox {found.name} ({found.dn}).")
        return
    with asking():
        ldap.delete(found)
    print(f"Removed mailbox {found.name}.")
