"""Settings.mailbox: by name, address or `domain\\name`, case-insensitively, through an index
that answers as a scan of the mailboxes would, also for a Settings object changed in place."""

from __future__ import annotations

import gc

from server.settings import models
from server.settings.models import Mailbox, Settings, default_settings


def settings_with(*names: str) -> Settings:
    settings = default_settings()
    for name in names:
        settings.Mailboxes[name] = Mailbox(
            PrimarySmtpAddress=f"{name.lower()}@contoso.test",
            EmailAddresses=[f"{name.lower()}.alias@contoso.test"],
            Server="MBX01",
        )
    return settings


def scan(settings: Settings, identity: str) -> tuple[str, Mailbox] | None:
    wanted = identity.strip().lower().rsplit("\\", 1)[-1]
    for name, box in settings.Mailboxes.items():
        if name.lower() == wanted or wanted in (a.lower() for a in box.addresses()):
            return name, box
    return None


def test_every_spelling_finds_the_mailbox_and_others_find_none() -> None:
    settings = settings_with("Bob", "alice")
    for identity in (
        "bob",
        "BOB",
        " Bob ",
        "CONTOSO\\bob",
        "Bob@Contoso.test",
        "bob.alias@contoso.test",
    ):
        found = settings.mailbox(identity)
        assert found is not None and found[0] == "Bob", identity
        assert found == scan(settings, identity)
    assert settings.mailbox("carol") is None
    assert settings.mailbox("bob@fabrikam.test") is None


def test_changes_in_place_are_seen() -> None:
    settings = settings_with("bob", "alice")
    assert settings.mailbox("alice@contoso.test") is not None  # the index is built
    settings.Mailboxes["carol"] = Mailbox(PrimarySmtpAddress="carol@contoso.test", Server="MBX01")
    assert settings.mailbox("carol") == scan(settings, "carol") and settings.mailbox("carol")
    del settings.Mailboxes["alice"]
    assert settings.mailbox("alice") is None
    assert settings.mailbox("alice@contoso.test") is None
    bob = settings.Mailboxes["bob"]
    bob.EmailAddresses = ["robert@contoso.test"]  # the alias moves to carol
    settings.Mailboxes["carol"].EmailAddresses = ["bob.alias@contoso.test"]
    found = settings.mailbox("bob.alias@contoso.test")
    assert found is not None and found[0] == "carol"
    assert settings.mailbox("robert@contoso.test") == ("bob", bob)
    settings.Mailboxes["bob"] = Mailbox(PrimarySmtpAddress="new@contoso.test", Server="MBX01")
    assert settings.mailbox("bob") == ("bob", settings.Mailboxes["bob"])
    assert settings.mailbox("bob@contoso.test") is None


def test_the_index_leaves_equality_and_memory_alone() -> None:
    one, two = settings_with("bob"), settings_with("bob")
    assert one.mailbox("bob") is not None
    assert one == two and one.model_dump() == two.model_dump()
    copy = one.model_copy(deep=True)
    copy.Mailboxes["bob"].EmailAddresses = []
    assert copy.mailbox("bob.alias@contoso.test") is None
    assert one.mailbox("bob.alias@contoso.test") is not None
    before = len(models._mailbox_indexes)
    del one, copy
    gc.collect()
    assert len(models._mailbox_indexes) < before
