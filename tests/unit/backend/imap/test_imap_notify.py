"""NOTIFY (RFC 5465) in the session core over the SQLite store: the command, its STATUS
indicator, and the notifications the I/O layer sends between commands (commands.notify)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.backend.imap.commands import notify
from server.store.sqlite import SqliteMailStore
from tests.unit.backend.imap.test_imap_session import Client

MSG = b"From: a@x.org\r\nSubject: s\r\n\r\nbody\r\n"


@pytest.fixture
def store(tmp_path: Path):
    with SqliteMailStore(tmp_path / "db") as s:
        s.mailbox("alice")
        yield s


def client(store: SqliteMailStore) -> Client:
    return Client(store).login()  # type: ignore[arg-type]


def append(c: Client, folder: str) -> None:
    out = c.send(b"p APPEND %s {%d+}\r\n%s\r\n" % (folder.encode(), len(MSG), MSG)).decode()
    assert "p OK" in out, out


def pushed(c: Client) -> str:
    """What the I/O layer sends after a store notification, outside any command."""
    c.session.mark_dirty()
    job = notify.pending(c.session)
    return "" if job is None else job.run().decode()


def test_notify_is_advertised(store: SqliteMailStore) -> None:
    c = client(store)
    assert " NOTIFY" in c("c CAPABILITY")


def test_status_indicator_sends_the_current_status(store: SqliteMailStore) -> None:
    c = client(store)
    c("a CREATE zz")
    append(c, "zz")
    v = store.mailbox("alice").status("zz")
    out = c("n NOTIFY SET STATUS (mailboxes zz (MessageNew MessageExpunge))")
    assert f'* STATUS "zz" (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {v.uidvalidity})\r\nn OK' in out
    out = c("n NOTIFY SET STATUS (mailboxes (zz) (MessageNew MessageExpunge FlagChange))")
    assert (
        f'* STATUS "zz" (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {v.uidvalidity} '
        f"HIGHESTMODSEQ {v.highestmodseq})"
    ) in out
    out = c("n NOTIFY SET (mailboxes zz (MessageNew MessageExpunge FlagChange))")
    assert out == "n OK NOTIFY completed\r\n"


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        ("n NOTIFY SET (mailboxes zz (MessageNew))", "n BAD"),
        ("n NOTIFY SET (personal (FlagChange))", "n BAD"),
        ("n NOTIFY SET (selected (MailboxName))", "n BAD"),
        ("n NOTIFY SET (selected (MessageNew MessageExpunge)) (selected-delayed NONE)", "n BAD"),
        ("n NOTIFY SET (elsewhere (MessageNew MessageExpunge))", "n BAD"),
        ("n NOTIFY SET (personal (MessageNew MessageExpunge)", "n BAD"),
        ("n NOTIFY MAYBE", "n BAD"),
        (
            "n NOTIFY SET (personal (MailboxMetadataChange))",
            "n NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)]",
        ),
        ("n NOTIFY SET (personal (SomethingNew))", "n NO [BADEVENT"),
    ],
)
def test_bad_requests_change_nothing(store: SqliteMailStore, line: str, answer: str) -> None:
    c = client(store)
    assert c(line).startswith(answer)
    assert c.session.notify is None
    assert "x OK" in c("x NOOP")


def test_other_mailboxes_get_status_and_list_between_commands(store: SqliteMailStore) -> None:
    c, other = client(store), client(store)
    c("a CREATE zz")
    assert "n OK" in c(
        "n NOTIFY SET (personal (MessageNew MessageExpunge MailboxName SubscriptionChange))"
    )
    assert pushed(c) == ""
    append(other, "zz")
    v = store.mailbox("alice").status("zz").uidvalidity
    assert pushed(c) == f'* STATUS "zz" (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {v})\r\n'
    assert pushed(c) == ""  # told once
    other("c CREATE new")
    other("s SUBSCRIBE zz")
    got = pushed(c)
    assert '* LIST () "/" "new"\r\n' in got and '* LIST (\\Subscribed) "/" "zz"\r\n' in got
    other("d DELETE new")
    assert '* LIST (\\NonExistent) "/" "new"\r\n' in pushed(c)
    assert "n OK" in c("n NOTIFY NONE")
    append(other, "zz")
    assert pushed(c) == ""


def test_mailboxes_filter_watches_only_those(store: SqliteMailStore) -> None:
    c, other = client(store), client(store)
    c("a CREATE zz")
    c("a CREATE yy")
    c("n NOTIFY SET (mailboxes zz (MessageNew MessageExpunge))")
    append(other, "yy")
    assert pushed(c) == ""
    append(other, "zz")
    assert '* STATUS "zz" (MESSAGES 1' in pushed(c)


def test_selected_mailbox_updates_without_idle(store: SqliteMailStore) -> None:
    c, other = client(store), client(store)
    c("a CREATE zz")
    append(c, "zz")
    c.select("zz")
    c("n NOTIFY SET (selected (MessageNew MessageExpunge FlagChange)) (personal NONE)")
    append(other, "zz")
    assert "* 2 EXISTS\r\n" in pushed(c)
    other("o SELECT zz")
    other("o STORE 1 +FLAGS.SILENT (\\Deleted)")
    other("o EXPUNGE")
    got = pushed(c)
    assert "* 1 EXPUNGE\r\n" in got
    # The selected mailbox gets no STATUS (RFC 5465 5.2), even when a filter names it.
    c(
        "n NOTIFY SET (selected-delayed (MessageNew MessageExpunge)) (mailboxes zz "
        "(MessageNew MessageExpunge))"
    )
    other("o STORE 1 +FLAGS.SILENT (\\Deleted)")
    other("o EXPUNGE")
    got = pushed(c)
    assert "EXPUNGE" not in got and "STATUS" not in got  # delayed to a command that may
    assert "* 1 EXPUNGE\r\n" in c("x NOOP")


def test_selected_mailbox_deleted_ends_with_bye(store: SqliteMailStore) -> None:
    c, other = client(store), client(store)
    c("a CREATE zz")
    c.select("zz")
    c("n NOTIFY SET (selected (MessageNew MessageExpunge))")
    other("d DELETE zz")
    assert pushed(c).startswith("* BYE ") and c.session.closed
