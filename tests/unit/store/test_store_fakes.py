"""The in-memory store of tests/fakes/memstore.py keeps the contract (server.store.api)
its users rely on."""

from __future__ import annotations

import pytest

from server.store import api
from tests.fakes.memstore import MemMailbox

MSG = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"


def test_fake_reports_changes_and_vanished() -> None:
    box = MemMailbox()
    first = box.append("INBOX", MSG).uid
    start = box.modseq
    box.set_flags("INBOX", [first], "+", ["\\Deleted"])
    assert box.expunge("INBOX") == [first]
    changes = box.changes_since("INBOX", start)
    assert changes.vanished == [first] and changes.changed == []


def test_fake_refuses_unknown_folder() -> None:
    with pytest.raises(api.NoSuchFolder):
        MemMailbox().status("nope")


def test_the_contracts_default_usage_and_room() -> None:
    """api.MailboxStore's usage_totals (each folder's status) and append_many's `room`,
    which stores without their own (the fake) get: a lot past the room is refused whole."""
    box = MemMailbox()
    box.append("INBOX", MSG)
    assert box.usage_totals() == (1, len(MSG))
    lot = [api.NewMessage(MSG), api.NewMessage(MSG)]
    with pytest.raises(api.OverQuota):
        box.append_many("INBOX", lot, room=2 * len(MSG))
    assert box.usage_totals() == (1, len(MSG))
    box.append_many("INBOX", lot, room=3 * len(MSG))
    assert box.usage_totals() == (3, 3 * len(MSG))
