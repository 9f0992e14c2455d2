"""FETCH over the SQLite store: header items come from the stored header blocks (no
message file read), a whole folder costs one store lookup, bodies are read straight from
their files, and the retrieval formats still see their own rendering."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from server.store import api
from server.store.sqlite import SqliteMailbox, SqliteMailStore
from tests.unit.backend.imap.test_imap_session import Client

HEAD_FETCH = "UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])"
ALT = (
    b"From: Alice <alice@example.com>\r\nTo: bob@example.com\r\nSubject: alt %d\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nX-Folded: one\r\n two\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
    b"Content-Type: text/plain\r\n\r\nplain %d\r\n--b\r\nContent-Type: text/html\r\n\r\n"
    b"<p>html</p>\r\n--b--\r\n"
)


def raw(n: int) -> bytes:
    return ALT % (n, n)


class Calls:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: list[str] = []
        for name in ("read", "info", "message_sources", "body_paths"):
            original = getattr(SqliteMailbox, name)

            def spy(
                box: SqliteMailbox, *args: object, _name: str = name, _f=original, **kw: object
            ) -> object:
                self.names.append(_name)
                return _f(box, *args, **kw)

            monkeypatch.setattr(SqliteMailbox, name, spy)


@pytest.fixture
def store(tmp_path: Path):
    with SqliteMailStore(tmp_path / "db") as s:
        box = s.mailbox("alice")
        box.append_many("INBOX", [api.NewMessage(raw(n), ["\\Seen"]) for n in range(1, 51)])
        yield s


def client(store: SqliteMailStore, **imap: object) -> Client:
    c = Client(store, **imap).login()  # type: ignore[arg-type]
    c.select()
    return c


def test_header_items_read_no_message_file(store: SqliteMailStore) -> None:
    c = client(store)
    box = store.mailbox("alice")
    for path in box.body_paths("INBOX", range(1, 51)).values():
        os.unlink(path)
    out = c(f"f {HEAD_FETCH}")
    assert out.count(" FETCH (") == 50 and "f OK" in out
    fields = (
        "From: Alice <alice@example.com>\r\nSubject: alt 7\r\n"
        "Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n\r\n"
    )
    assert (
        f"* 7 FETCH (UID 7 FLAGS (\\Seen \\Recent) RFC822.SIZE {len(raw(7))} BODY[HEADER.FIELDS "
        f"(FROM SUBJECT DATE)] {{{len(fields)}}}\r\n{fields})"
    ) in out
    header = raw(3)[: raw(3).index(b"\r\n\r\n") + 4].decode()
    out = c(
        "h UID FETCH 3 (RFC822.HEADER BODY.PEEK[HEADER] BODY.PEEK[HEADER.FIELDS.NOT (To)]<0.30>)"
    )
    assert f"RFC822.HEADER {{{len(header)}}}\r\n{header} BODY[HEADER] {{{len(header)}}}" in out
    assert "BODY[HEADER.FIELDS.NOT (TO)]<0> {30}\r\nFrom: Alice <alice@example.com)" in out
    assert "b OK [EXPUNGEISSUED]" in c("b UID FETCH 3 BODY.PEEK[]")


def test_one_store_lookup_for_a_whole_folder(
    store: SqliteMailStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = client(store)
    calls = Calls(monkeypatch)
    assert c(f"f {HEAD_FETCH}").count(" FETCH (") == 50
    assert calls.names == ["message_sources"]
    calls.names.clear()
    assert c("e FETCH 1:* (ENVELOPE BODYSTRUCTURE)").count(" FETCH (") == 50
    assert calls.names == ["message_sources"]  # the MessageInfos, then cached
    calls.names.clear()
    assert '"alt 9"' in c("e FETCH 9 ENVELOPE") and calls.names == []


def test_bodies_and_sections(store: SqliteMailStore, monkeypatch: pytest.MonkeyPatch) -> None:
    c = client(store)
    calls = Calls(monkeypatch)
    out = c("b UID FETCH 4 (BODY.PEEK[] BODY.PEEK[1] BODY.PEEK[TEXT]<0.3>)")
    body = raw(4).decode()
    assert (
        f"BODY[] {{{len(body)}}}\r\n{body} BODY[1] {{7}}\r\nplain 4 BODY[TEXT]<0> {{3}}\r\n--b)"
        in out
    )
    assert "read" not in calls.names and "message_sources" in calls.names
    assert re.search(r"\* 5 FETCH \(UID 5 RFC822 \{\d+\}", c("r UID FETCH 5 RFC822"))


def test_a_message_expunged_meanwhile_is_left_out(store: SqliteMailStore) -> None:
    c = client(store)
    store.mailbox("alice").delete_messages("INBOX", [2])
    out = c(f"f {HEAD_FETCH}")
    assert out.count(" FETCH (") == 49 and "f OK [EXPUNGEISSUED]" in out


def test_retrieval_formats_answer_headers_from_the_rendering(store: SqliteMailStore) -> None:
    c = client(store, MessageRetrievalMimeFormat="TextOnly")
    out = c("h UID FETCH 6 (BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE SUBJECT)] BODY.PEEK[])")
    assert "multipart/alternative" not in out and "Subject: alt 6" in out
    match = re.search(r"BODY\[\] \{\d+\}\r\n(.*?\r\n\r\n)", out, re.S)
    assert match is not None
    out = c("h UID FETCH 6 BODY.PEEK[HEADER]")
    assert match.group(1) in out


def next_job(c: Client, line: str):  # noqa: ANN201 - the session's Job
    c.session.receive(line.encode() + b"\r\n")
    job = c.session.next_job()
    assert job is not None
    job.run()
    return job


def test_read_only_fetches_may_run_in_place(store: SqliteMailStore) -> None:
    c = client(store)
    assert next_job(c, f"f {HEAD_FETCH}").inline
    assert next_job(c, "f FETCH 1 (FLAGS ENVELOPE BODY.PEEK[])").inline
    assert not next_job(c, "f FETCH 1 BODY[]").inline  # sets \Seen: a write
    c.session.mark_dirty()  # taking in new messages claims their \Recent: a write
    assert not next_job(c, "f FETCH 1 FLAGS").inline
    assert next_job(c, "f FETCH 1 FLAGS").inline
    assert next_job(c, "s SELECT INBOX").inline  # the folder's list is kept: a read
    assert "e OK [READ-ONLY]" in c("e EXAMINE INBOX")
    assert next_job(c, "f FETCH 1 BODY[]").inline  # read-only folder: nothing to set


def test_big_folders_fetch_in_a_worker(
    store: SqliteMailStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.backend.imap.commands import fetch

    c = client(store)
    monkeypatch.setattr(fetch, "INLINE_MAX_MESSAGES", 49)
    assert not next_job(c, "f FETCH 1 FLAGS").inline


def test_header_fields_answers_are_shared_by_sessions_and_stay_right(
    store: SqliteMailStore,
) -> None:
    from server.backend.imap.commands import fetch

    fetch.FIELDS.clear()
    first, second = client(store), client(store)
    assert first(f"f {HEAD_FETCH}").count(" FETCH (") == 50
    # Other field lists of the same messages are answers of their own, not the kept ones.
    out = second("g UID FETCH 7 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert "BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: alt 7\r\n\r\n)" in out
    out = second("g UID FETCH 7 (BODY.PEEK[HEADER.FIELDS.NOT (FROM SUBJECT DATE)])")
    assert "Subject:" not in out and "To: bob@example.com\r\n" in out
    # A message expunged since is left out, though its answer is kept.
    store.mailbox("alice").delete_messages("INBOX", [2])
    out = second(f"f {HEAD_FETCH}")
    assert out.count(" FETCH (") == 49 and "f OK [EXPUNGEISSUED]" in out
    assert "Subject: alt 9\r\n" in out


def test_select_runs_in_place_and_claims_recent_in_a_worker(tmp_path: Path) -> None:
    with SqliteMailStore(tmp_path / "db") as fresh:
        box = fresh.mailbox("alice")
        box.append_many("INBOX", [api.NewMessage(raw(n)) for n in range(1, 4)])
        c = Client(fresh).login()  # type: ignore[arg-type]
        first = next_job(c, "s SELECT INBOX")
        assert not first.inline  # the folder's list is read for the first time
        job = c.session.next_job()  # three \Recent to claim: a write, in a worker
        assert job is not None and not job.inline and job.blocking
        out = job.run().decode()
        assert "* 3 RECENT" in out and "s OK [READ-WRITE]" in out
        box.append("INBOX", raw(4))
        c.session.receive(b"t SELECT INBOX\r\n")
        job = c.session.next_job()
        assert job is not None and job.inline
        assert job.run() == b""  # nothing said before the claim
        job = c.session.next_job()
        assert job is not None and not job.inline
        out = job.run().decode()
        assert "* 4 EXISTS" in out and "* 1 RECENT" in out and "t OK [READ-WRITE]" in out
        assert box.claim_recent("INBOX") == set()
        # Nothing to claim: all in place, one job, no write.
        c.session.receive(b"u SELECT INBOX\r\n")
        job = c.session.next_job()
        assert job is not None and job.inline
        out = job.run().decode()
        assert "* 0 RECENT" in out and "u OK [READ-WRITE]" in out
        assert c.session.next_job() is None
        # A failed SELECT leaves no folder selected (RFC 3501 6.3.1).
        assert "v NO" in c("v SELECT Nowhere") and c.session.selected is None
