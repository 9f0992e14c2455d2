"""SORT, THREAD, ESORT and search contexts end to end: imapclient through the front end
(MSExchangeIMAP4) to the back end over the real store, and imaptest's groups for them."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from imapclient import IMAPClient

from server.settings.paths import Home
from server.store import open_store
from tests.e2e.frontend_support import PASSWORD, ports

pytestmark = pytest.mark.e2e

IMAPTEST = Path(__file__).resolve().parents[2] / ".." / "shared" / "imaptest" / "run"
GROUPS = (
    "sort-addresses sort-arrival sort-date sort-display-from sort-display-to sort-partial "
    "sort-size sort-subject thread thread2 thread3 thread4 thread5 thread6 thread7 thread8 "
    "thread-orderedsubject thread-orderedsubject2 esort search-context-update "
    "search-context-update2 search-context-update3 search-partial"
).split()


def message(subject: str, sender: str, date: str, msgid: str, refs: str = "") -> bytes:
    head = (
        f"From: {sender}\r\nTo: bob@contoso.test\r\nSubject: {subject}\r\n"
        f"Date: {date}\r\nMessage-ID: <{msgid}>\r\n"
    )
    if refs:
        head += f"References: {refs}\r\n"
    return (head + "\r\nbody\r\n").encode()


def client(home: Home) -> IMAPClient:
    c = IMAPClient("127.0.0.1", ports(home, "IMAP")[0], ssl=False, timeout=10)
    c.login("bob", PASSWORD)
    return c


def deliver(home: Home, raws: list[bytes]) -> None:
    store = open_store(home, "MBX01")
    try:
        box = store.mailbox("bob")
        for n, raw in enumerate(raws):
            box.append("INBOX", raw, (), datetime(2024, 1, 1 + n, tzinfo=UTC))
    finally:
        store.close()


def test_sort_and_thread_with_imapclient(imap_site: Home) -> None:
    deliver(
        imap_site,
        [
            message("Lunch", "Carol <carol@contoso.test>", "Tue, 3 Mar 2020 10:00:00 +0000", "a@x"),
            message(
                "Re: Lunch", "alice@contoso.test", "Tue, 3 Mar 2020 11:00:00 +0000", "b@x", "<a@x>"
            ),
            message(
                "[team] Budget", "Bob <bob@contoso.test>", "Mon, 2 Mar 2020 09:00:00 +0000", "c@x"
            ),
            message(
                "Re: Re: Lunch",
                "dave@contoso.test",
                "Tue, 3 Mar 2020 12:30:00 +0100",
                "d@x",
                "<a@x> <b@x>",
            ),
        ],
    )
    c = client(imap_site)
    try:
        caps = c.capabilities()
        for cap in (
            b"SORT",
            b"SORT=DISPLAY",
            b"THREAD=REFERENCES",
            b"THREAD=ORDEREDSUBJECT",
            b"ESORT",
            b"CONTEXT=SEARCH",
            b"CONTEXT=SORT",
        ):
            assert cap in caps
        c.select_folder("INBOX")
        uids = c.search("ALL")
        assert c.sort(["DATE"]) == [uids[2], uids[0], uids[1], uids[3]]
        assert c.sort(["REVERSE", "ARRIVAL"]) == list(reversed(uids))
        assert c.sort(["SUBJECT", "REVERSE", "DATE"]) == [uids[2], uids[3], uids[1], uids[0]]
        assert c.sort(["FROM"]) == [uids[1], uids[2], uids[0], uids[3]]
        assert c.sort(["DISPLAYFROM"]) == [uids[1], uids[2], uids[0], uids[3]]
        assert c.sort(["DATE"], ["FROM", "contoso"]) == [uids[2], uids[0], uids[1], uids[3]]
        assert c.thread("REFERENCES") == ((uids[2],), (uids[0], uids[1], uids[3]))
        assert c.thread("ORDEREDSUBJECT") == ((uids[2],), (uids[0], (uids[1],), (uids[3],)))
    finally:
        c.logout()


def test_search_context_update_reaches_a_second_session(imap_site: Home) -> None:
    deliver(
        imap_site,
        [
            message(f"m{n}", "a@contoso.test", "Tue, 3 Mar 2020 10:00:00 +0000", f"{n}@x")
            for n in range(3)
        ],
    )
    watcher, other = client(imap_site), client(imap_site)
    try:
        watcher.select_folder("INBOX")
        other.select_folder("INBOX")
        typ, data = watcher._imap._simple_command("SEARCH", "RETURN", "(UPDATE ALL)", "SEEN")
        assert typ == "OK"
        other.add_flags([2], [b"\\Seen"])  # a UID
        typ, _ = watcher._imap._simple_command("NOOP")
        assert typ == "OK"
        got = watcher._imap.untagged_responses.get("ESEARCH", [])
        assert any(b"ADDTO (0 2)" in line for line in got), got
    finally:
        watcher.logout()
        other.logout()


@pytest.mark.skipif(not IMAPTEST.exists(), reason="../shared/imaptest is not available here")
def test_imaptest_sort_thread_context_groups(imap_site: Home) -> None:
    port = ports(imap_site, "IMAP")[0]
    failed = []
    for group in GROUPS:
        result = subprocess.run(
            [str(IMAPTEST), "127.0.0.1", str(port), "bob", PASSWORD, group],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0 or " 0 failed" not in result.stdout:
            failed.append(f"{group}: {result.stdout}{result.stderr}")
    assert not failed, "\n".join(failed)
