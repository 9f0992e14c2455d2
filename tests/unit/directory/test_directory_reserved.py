"""Administrator and Guest never use POP3/IMAP4 (docs/reference.md section 5): refused by
their name and address forms, whatever Type a hand edit gave them."""

from __future__ import annotations

import pytest

from server.directory import find_entry, may_use_protocol
from server.settings.models import Mailbox, Settings, default_settings


def settings_with(name: str, **fields: str) -> Settings:
    base = default_settings().model_dump()
    box = {"PrimarySmtpAddress": f"{name.lower()}@contoso.test", "Server": "MBX01", **fields}
    base["Mailboxes"] = {name: Mailbox(**box).model_dump()}
    return Settings.model_validate(base)


@pytest.mark.parametrize(
    ("name", "fields", "login", "why"),
    [
        ("Administrator", {}, "Administrator", "Administrator mailbox cannot be opened"),
        ("administrator", {}, "administrator@contoso.test", "Administrator mailbox cannot"),
        ("administrator", {}, "CONTOSO\\Administrator", "Administrator mailbox cannot"),
        ("Guest", {}, "guest", "Guest accounts cannot use"),
        ("Guest", {}, "GUEST@contoso.test", "Guest accounts cannot use"),
        ("visitor", {"EmailAddresses": "guest@contoso.test"}, "visitor", "Guest accounts"),
        ("boss", {"PrimarySmtpAddress": "Administrator@contoso.test"}, "boss", "Administrator"),
    ],
)
@pytest.mark.parametrize("protocol", ["POP3", "IMAP4"])
def test_refused_by_name_whatever_the_type(
    name: str, fields: dict[str, str], login: str, why: str, protocol: str
) -> None:
    settings = settings_with(name, Type="User", **fields)
    entry = find_entry(settings, login)
    assert entry is not None
    reason = may_use_protocol(entry, protocol)
    assert reason is not None and why in reason


def test_other_names_are_not_caught() -> None:
    for name in ("guests", "administrators", "admin", "guestbook"):
        entry = find_entry(settings_with(name), name)
        assert entry is not None and may_use_protocol(entry, "IMAP4") is None
