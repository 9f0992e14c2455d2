"""server/backend/imap/wakeups.py: one store subscription per mailbox, every member woken
by one callback, the subscription dropped with its last member."""

from __future__ import annotations

from server.backend.imap.wakeups import Wakeups
from tests.fakes.memstore import MemStore


def test_one_subscription_per_mailbox_wakes_every_member_at_once() -> None:
    store = MemStore()
    alice, bob = store.mailbox("alice"), store.mailbox("bob")
    calls: list[list[str]] = []
    wakeups = Wakeups[str](calls.append)
    key = wakeups.add(alice, "a1")
    assert wakeups.add(alice, "a2") == key
    other = wakeups.add(bob, "b1")
    assert len(alice._subscribers) == 1 and len(bob._subscribers) == 1
    alice.append("INBOX", b"Subject: x\r\n\r\nx\r\n")
    assert calls == [["a1", "a2"]]
    wakeups.remove(key, "a1")
    wakeups.remove(key, "a1")  # twice: harmless
    alice.append("INBOX", b"Subject: y\r\n\r\ny\r\n")
    assert calls[-1] == ["a2"]
    wakeups.remove(key, "a2")
    assert alice._subscribers == [] and wakeups.members(key) == 0
    assert len(bob._subscribers) == 1 and wakeups.members(other) == 1
    alice.append("INBOX", b"Subject: z\r\n\r\nz\r\n")
    assert len(calls) == 2
