"""The IMAP back-end session, sans-IO, over an in-memory store."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

import pytest

from server.backend.imap.commands import TABLE
from server.backend.imap.fanout import IdleFanout, Key, SharedChanges
from server.backend.imap.session import ImapSession, Login, SessionConfig
from server.settings.models import Mailbox, default_settings
from tests.conftest import corpus_paths
from tests.unit.backend.imap.test_imap_session_memstore import MemMailbox, MemStore

SECRET = "s3cret"
MSG = (
    b"From: Alice <alice@example.com>\r\nTo: bob@example.com\r\nSubject: Hello there\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <1@x>\r\n\r\nHi Bob,\r\nthe body.\r\n"
)
MULTI = (
    b"From: c@example.com\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\npre\r\n--b\r\n'
    b"Content-Type: text/plain\r\n\r\nfirst part\r\n--b\r\nContent-Type: text/html\r\n\r\n"
    b"<p>second</p>\r\n--b--\r\n"
)


class Client:
    def __init__(self, store: MemStore | None = None, **imap: object) -> None:
        self.mailstore = store or MemStore()
        self.settings = default_settings()
        for k, v in imap.items():
            setattr(self.settings.server("MBX01").ImapSettings, k, v)
        self.settings.Mailboxes["alice"] = Mailbox(
            PrimarySmtpAddress="alice@contoso.test", Server="MBX01"
        )
        self.session = ImapSession(SessionConfig(lambda: self.settings, "MBX01", self._auth), TABLE)
        self.greeting = self.session.greeting()

    def _auth(self, authzid: str, authcid: str, password: str) -> Login | str:
        if authcid != "mailctl-proxy" or password != SECRET:
            return "Authentication failed"
        return Login(authzid, self.mailstore.mailbox(authzid))

    @property
    def box(self) -> MemMailbox:
        return self.mailstore.mailbox("alice")

    def send(self, data: bytes) -> bytes:
        self.session.receive(data)
        out = []
        while (job := self.session.next_job()) is not None:
            out.append(job.run())
        return b"".join(out)

    def __call__(self, line: str | bytes) -> str:
        data = line.encode() if isinstance(line, str) else line
        return self.send(data + b"\r\n").decode("utf-8", "replace")

    def login(self) -> Client:
        token = base64.b64encode(b"alice\0mailctl-proxy\0" + SECRET.encode()).decode()
        assert "a OK" in self(f"a AUTHENTICATE PLAIN {token}")
        return self

    def select(self, box: str = "INBOX") -> str:
        out = self(f"s SELECT {box}")
        assert "s OK [READ-WRITE]" in out, out
        return out


def _client(n: int = 3, raw: bytes = MSG) -> Client:
    c = Client().login()
    for _ in range(n):
        c.box.append("INBOX", raw)
    return c


def test_greeting_and_capability() -> None:
    c = Client()
    assert c.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    assert c.greeting.endswith(b"The Microsoft Exchange IMAP4 service is ready.\r\n")
    assert "AUTH=PLAIN" in c("c CAPABILITY")


def test_login_refused_and_bad_password() -> None:
    c = Client()
    assert "l NO" in c("l LOGIN alice pw")
    bad = base64.b64encode(b"alice\0mailctl-proxy\0wrong").decode()
    assert "a NO [AUTHENTICATIONFAILED]" in c(f"a AUTHENTICATE PLAIN {bad}")
    assert "s BAD" in c("s SELECT INBOX")
    assert "a NO" in c("a AUTHENTICATE LOGIN")


def test_authenticate_with_continuation() -> None:
    c = Client()
    assert c("a AUTHENTICATE PLAIN") == "+ \r\n"
    token = base64.b64encode(b"alice\0mailctl-proxy\0" + SECRET.encode())
    assert "a OK [CAPABILITY" in c(token)
    assert c.session.authenticated
    c2 = Client()
    c2("a AUTHENTICATE PLAIN")
    assert "a BAD" in c2("*")


def test_select_responses() -> None:
    c = _client(3)
    c.box.set_flags("INBOX", [1], "+", ["\\Seen", "$Important"])
    out = c.select()
    assert "* 3 EXISTS" in out and "* 3 RECENT" in out
    assert "* OK [UNSEEN 2]" in out
    assert re.search(r"\* OK \[UIDVALIDITY \d+\]", out)
    assert "* OK [UIDNEXT 4]" in out
    assert "$Important" in out and "\\*)]" in out
    assert "HIGHESTMODSEQ" in out
    out = c("e EXAMINE INBOX")
    assert "e OK [READ-ONLY]" in out and "* 0 RECENT" in out


def test_fetch_items() -> None:
    c = _client(2)
    c.box.append("INBOX", MULTI, ["\\Flagged"], datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC))
    c.select()
    out = c("f FETCH 3 (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY)")
    assert (
        '* 3 FETCH (UID 3 FLAGS (\\Flagged \\Recent) INTERNALDATE " 2-Jan-2020 03:04:05 +0000"'
        in out
    )
    assert f"RFC822.SIZE {len(MULTI)}" in out
    assert 'ENVELOPE (NIL "parts"' in out and 'BODYSTRUCTURE (("text" "plain"' in out
    out = c("f FETCH 3 (BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[TEXT]<0.3>)")
    assert "BODY[1] {10}\r\nfirst part" in out
    assert "BODY[2.MIME] {" in out and "Content-Type: text/html" in out
    assert "BODY[TEXT]<0> {3}\r\npre" in out
    assert "\\Seen" not in c("f FETCH 3 FLAGS")
    out = c("f FETCH 1 (BODY[HEADER.FIELDS (SUBJECT)])")
    assert "BODY[HEADER.FIELDS (SUBJECT)] {24}\r\nSubject: Hello there\r\n\r\n" in out
    assert "FLAGS (\\Seen \\Recent)" in out  # \Seen set and reported
    out = c("f FETCH 2 (RFC822.HEADER RFC822.TEXT)")
    assert "RFC822.HEADER {" in out and "RFC822.TEXT {" in out
    out = c("f UID FETCH 1:* FLAGS")
    assert out.count("FETCH (UID") == 3
    out = c("f FETCH 1 RFC822")
    assert f"RFC822 {{{len(MSG)}}}\r\n" in out


def test_fetch_bad_sequence_keeps_session() -> None:
    c = _client(1)
    c.select()
    assert "f BAD" in c("f FETCH 5 FLAGS")
    assert "f BAD" in c("f FETCH 1 (FLAGS")
    assert "n OK" in c("n NOOP")


def test_store_flags_and_silent() -> None:
    c = _client(3)
    c.select()
    out = c("s STORE 1:2 +FLAGS (\\Deleted)")
    assert "* 1 FETCH (FLAGS (\\Deleted \\Recent))" in out and "* 2 FETCH" in out
    assert "FETCH" not in c("s STORE 3 +FLAGS.SILENT (\\Seen)")
    out = c("s UID STORE 3 -FLAGS (\\Seen)")
    assert "* 3 FETCH (UID 3 FLAGS (\\Recent))" in out
    assert c.box.snapshot("INBOX").rows[0].flags == {"\\Deleted"}


def test_expunge_and_uid_expunge() -> None:
    c = _client(4)
    c.select()
    c("s STORE 2:3 +FLAGS.SILENT (\\Deleted)")
    out = c("e EXPUNGE")
    assert "* 2 EXPUNGE\r\n* 2 EXPUNGE\r\ne OK" in out
    c("s STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    out = c("e UID EXPUNGE 4")
    assert "* 2 EXPUNGE" in out and "* 1 EXPUNGE" not in out


def test_copy_move_with_copyuid() -> None:
    c = _client(3)
    c.select()
    out = c("c COPY 1:2 Archive")
    assert re.search(r"c OK \[COPYUID \d+ 1:2 1:2\]", out)
    out = c("m UID MOVE 3 Archive")
    assert re.search(r"\* OK \[COPYUID \d+ 3 3\]", out) and "* 3 EXPUNGE" in out
    assert "NO [TRYCREATE]" in c("c COPY 1 Nowhere")
    assert c.box.status("Archive").messages == 3


def test_append_appenduid_and_exists() -> None:
    c = Client().login()
    c.select()
    out = c.send(b'a APPEND INBOX (\\Seen) "14-Jul-2021 02:44:25 +0200" {%d}\r\n' % len(MSG))
    assert out.startswith(b"+ ")
    out = c.send(MSG + b"\r\n").decode()
    assert "* 1 EXISTS" in out and re.search(r"a OK \[APPENDUID \d+ 1\]", out)
    row = c.box.snapshot("INBOX").rows[0]
    assert row.flags == {"\\Seen"} and row.internaldate.year == 2021
    out = c.send(b"a APPEND INBOX {5+}\r\nab\ncd\r\n").decode()
    assert "a OK" in out and c.box.read("INBOX", 2) == b"ab\r\ncd"
    assert "NO [TRYCREATE]" in c.send(b"a APPEND Nope {1+}\r\nx\r\n").decode()


def test_literal_too_large_refused() -> None:
    c = Client().login()
    out = c.send(b"a APPEND INBOX {999999999}\r\n").decode()
    assert "a NO [TOOBIG]" in out and "+ " not in out
    assert "n OK" in c("n NOOP")


def test_search_keys() -> None:
    c = _client(0)
    c.box.append("INBOX", MSG, ["\\Seen"], datetime(2020, 1, 1, tzinfo=UTC))
    c.box.append("INBOX", MULTI, [], datetime(2021, 6, 1, tzinfo=UTC))
    c.box.append("INBOX", MSG.replace(b"Hello", b"Goodbye"), ["$Work"])
    c.select()
    assert "* SEARCH 1 3\r\n" in c("s SEARCH FROM alice")
    assert "* SEARCH 2 3\r\n" in c("s SEARCH UNSEEN")
    assert "* SEARCH 2\r\n" in c("s SEARCH BODY second")
    assert "* SEARCH 1\r\n" in c("s SEARCH SUBJECT hello")
    assert "* SEARCH 3\r\n" in c("s SEARCH KEYWORD $work")
    assert "* SEARCH 1\r\n" in c("s SEARCH BEFORE 1-Feb-2020")
    assert "* SEARCH 2\r\n" in c('s SEARCH OR SENTON 8-Feb-1994 HEADER MIME-Version ""')
    assert "* SEARCH 1 3\r\n" in c("s SEARCH SENTON 7-Feb-1994")
    assert "* SEARCH 2 3\r\n" in c("s SEARCH NOT 1")
    assert "* SEARCH 3\r\n" in c("s UID SEARCH TEXT goodbye")
    assert "* SEARCH 1 2 3\r\n" in c("s SEARCH LARGER 10")
    assert "* SEARCH\r\n" in c("s SEARCH SMALLER 10")
    assert "NO [BADCHARSET" in c("s SEARCH CHARSET X-UNKNOWN-CS FROM a")
    assert "* SEARCH 1 3\r\n" in c("s SEARCH CHARSET UTF-8 FROM alice")


def test_esearch_and_searchres() -> None:
    c = _client(5)
    c.select()
    c("s STORE 2,4 +FLAGS.SILENT (\\Flagged)")
    out = c("s SEARCH RETURN (MIN MAX COUNT ALL) FLAGGED")
    assert '* ESEARCH (TAG "s") MIN 2 MAX 4 ALL 2,4 COUNT 2' in out
    assert '* ESEARCH (TAG "s") UID COUNT 0' in c("s UID SEARCH RETURN (COUNT) DRAFT")
    assert "ESEARCH" not in c("s SEARCH RETURN (SAVE) FLAGGED")
    out = c("f FETCH $ UID")
    assert "* 2 FETCH (UID 2)" in out and "* 4 FETCH (UID 4)" in out and "* 1 FETCH" not in out


def test_condstore_and_qresync() -> None:
    c = _client(3)
    assert "* ENABLED QRESYNC CONDSTORE" in c("e ENABLE QRESYNC CONDSTORE")
    out = c.select()
    modseq = int(re.search(r"HIGHESTMODSEQ (\d+)", out).group(1))
    uidvalidity = int(re.search(r"UIDVALIDITY (\d+)", out).group(1))
    c("s STORE 1 +FLAGS.SILENT (\\Seen)")
    c("s STORE 3 +FLAGS.SILENT (\\Deleted)")
    c("e EXPUNGE")
    out = c(f"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    assert "* VANISHED (EARLIER) 3" in out and "UID 1 FLAGS (\\Seen \\Recent) MODSEQ" in out
    assert "* 2 FETCH" not in out
    out = c("u STORE 2 (UNCHANGEDSINCE 1) +FLAGS (\\Flagged)")
    assert "u OK [MODIFIED 2]" in out
    c("u UNSELECT")
    out = c(f"s SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:3))")
    assert "* VANISHED (EARLIER) 3" in out and "* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ" in out


def test_untagged_updates_from_another_session() -> None:
    store = MemStore()
    a, b = Client(store).login(), Client(store).login()
    a.box.append("INBOX", MSG)
    a.box.append("INBOX", MSG)
    a.select()
    b.select()
    b("s STORE 1 +FLAGS.SILENT (\\Deleted)")
    b("e EXPUNGE")
    b.box.append("INBOX", MSG)
    a.session.mark_dirty()
    out = a("f FETCH 1:* UID")  # no EXPUNGE during FETCH (RFC 3501 7.4.1)
    assert " EXPUNGE" not in out and "* 3 EXISTS" in out
    out = a("n NOOP")
    assert "* 1 EXPUNGE" in out


def test_idle_pushes_changes_and_ends_with_done() -> None:
    c = _client(1)
    c.select()
    assert c("i IDLE") == "+ idling\r\n"
    c.box.append("INBOX", MSG)
    c.session.mark_dirty()
    push = IdleFanout[object]().push(c.session, object)
    assert push is not None and b"* 2 EXISTS" in push.job.run()
    assert "i OK IDLE terminated" in c("DONE")
    assert "n OK" in c("n NOOP")
    c("i IDLE")
    assert "i BAD" in c("NOTDONE")


def test_list_lsub_status_and_mailbox_ops() -> None:
    c = Client().login()
    assert "c OK" in c("c CREATE Projects/2024/")
    assert '* LIST (\\HasChildren) "/" "Projects"' in c('l LIST "" "*"')
    out = c('l LIST "" "%"')
    assert '"Projects"' in out and "2024" not in out
    assert '\\Sent) "/" "Sent Items"' in out
    out = c('l LIST "" "Projects/%"')
    assert '(\\HasNoChildren) "/" "Projects/2024"' in out
    assert '* LIST (\\Noselect) "/" ""' in c('l LIST "" ""')
    assert "c NO [ALREADYEXISTS]" in c("c CREATE Projects")
    assert "r OK" in c("r RENAME Projects Work")
    assert '"Work/2024"' in c('l LIST "" *')
    c("u UNSUBSCRIBE Work/2024")
    out = c('l LSUB "" "Work*"')
    assert '"Work"' in out and "2024" not in out
    out = c('l LIST (SUBSCRIBED RECURSIVEMATCH) "" "Work/%" RETURN (CHILDREN)')
    assert "2024" not in out
    out = c('l LIST "" "INBOX" RETURN (STATUS (MESSAGES UIDNEXT SIZE))')
    assert '* STATUS "INBOX" (MESSAGES 0 UIDNEXT 1 SIZE 0)' in out
    assert "d OK" in c("d DELETE Work/2024")
    assert "d NO" in c("d DELETE INBOX")
    c.box.append("INBOX", MSG)
    assert "(MESSAGES 1 UNSEEN 1 HIGHESTMODSEQ" in c(
        "s STATUS inbox (MESSAGES UNSEEN HIGHESTMODSEQ)"
    )
    out = c("c CREATE &AMk-t&AOk-")  # "été" in modified UTF-7
    assert "c OK" in out and '"&AMk-t&AOk-"' in c('l LIST "" "*t*"')


def test_hidden_folders_follow_setting() -> None:
    c = Client().login()
    c.box.create_folder("Secret")
    c.box._folders["Secret"].hidden = True
    assert "Secret" not in c('l LIST "" *')
    c.settings.server("MBX01").ImapSettings.ShowHiddenFoldersEnabled = True
    assert "Secret" in c('l LIST "" *')


def test_max_command_size_is_live_and_bad_is_survivable() -> None:
    c = Client()
    c.settings.server("MBX01").ImapSettings.MaxCommandSize = 1024
    assert "x BAD" in c("x NOOP " + "a" * 2000)
    assert "c OK" in c("c CAPABILITY")
    assert "BAD" in c("garbage")
    assert "y BAD" in c("y FROBNICATE")


def test_close_expunges_silently_and_logout() -> None:
    c = _client(2)
    c.select()
    c("s STORE 1 +FLAGS.SILENT (\\Deleted)")
    out = c("c CLOSE")
    assert "EXPUNGE" not in out and "c OK" in out
    assert c.box.status("INBOX").messages == 1
    out = c("l LOGOUT")
    assert out.startswith("* BYE") and "l OK" in out and c.session.closed


def test_namespace_id_unselect() -> None:
    c = _client(1)
    assert '* NAMESPACE (("" "/")) NIL NIL' in c("n NAMESPACE")
    assert '* ID ("name" "mailctl"' in c('i ID ("name" "test")')
    c.select()
    assert "u OK" in c("u UNSELECT")
    assert "f BAD" in c("f FETCH 1 FLAGS")


@pytest.mark.parametrize("path", corpus_paths()[:48])
def test_corpus_fetch_every_item(path) -> None:
    raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    c = _client(1, raw)
    c.select()
    out = c.send(
        b"f FETCH 1 (ENVELOPE BODYSTRUCTURE BODY RFC822.SIZE BODY.PEEK[1] "
        b"BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[1.MIME] BODY[]<10.20>)\r\n"
    )
    assert out.endswith(b"f OK FETCH completed\r\n"), out[-200:]
    assert b"BODY[] <10>" not in out and b"BODY[]<10> {" in out
    assert b"* SEARCH" in c.send(b"s SEARCH TEXT the\r\n")


def test_rename_of_selected_folder_keeps_selection() -> None:
    c = Client().login()
    c("c CREATE Old/Sub")
    c.box.append("Old/Sub", MSG)
    c.select("Old/Sub")
    assert "r OK" in c("r RENAME Old New")
    assert "* 1 FETCH (UID 1)" in c("f FETCH 1 UID")
    assert "n OK" in c("n NOOP")


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_WORDS = st.sampled_from(
    [
        "FETCH",
        "UID",
        "STORE",
        "SEARCH",
        "1:*",
        "$",
        "(",
        ")",
        "BODY[1.2]<0.5>",
        "FLAGS",
        "+FLAGS",
        "\\Seen",
        "{3}",
        "{2+}",
        "\r\n",
        "INBOX",
        '"x"',
        "NOT",
        "OR",
        "ALL",
        "IDLE",
        "DONE",
        "SELECT",
        "APPEND",
        "EXPUNGE",
        "MOVE",
        "COPY",
        "Archive",
        "*",
        "0",
        "4294967296",
        "CHANGEDSINCE",
        "(QRESYNC",
        "RETURN",
        "LIST",
        '""',
        "%",
        "ENABLE",
        "QRESYNC",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(_WORDS, max_size=8), max_size=6), st.binary(max_size=40))
def test_fuzzed_commands_never_crash(lines: list[list[str]], noise: bytes) -> None:
    c = _client(2)
    c.select()
    data = (
        b"".join(b"t%d " % i + " ".join(words).encode() + b"\r\n" for i, words in enumerate(lines))
        + noise
        + b"\r\n"
    )
    assert b"SERVERBUG" not in c.send(data)
    c.session.reader.line_mode = False
    c.session.idling = False
    c.session.auth_tag = None
    assert "z OK" in c("\r\nz NOOP") or c.session.closed


def test_big_fetch_comes_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    from server.backend.imap.commands import fetch

    monkeypatch.setattr(fetch, "OUTPUT_CHUNK", 100)
    c = _client(5)
    c.select()
    c.session.receive(b"f FETCH 1:* BODY.PEEK[]\r\n")
    chunks = []
    while (job := c.session.next_job()) is not None:
        chunks.append(job.run())
    assert len(chunks) == 5 and chunks[-1].endswith(b"f OK FETCH completed\r\n")
    assert b"".join(chunks).count(b" FETCH (BODY[] {") == 5


def test_idle_push_keeps_a_wake_up_that_comes_after_its_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A push runs in a worker thread while the event loop delivers wake-ups: one that
    comes between the push's read of the shared answer and the end of the push must
    leave the session dirty, or that delivery is never pushed (a lost wake-up)."""
    c = _client(1)
    fanout = IdleFanout[object]()
    generation = [0]
    c.box.change_generation = lambda: generation[0]  # type: ignore[method-assign]

    def deliver() -> None:
        c.box.append("INBOX", MSG)
        generation[0] += 1  # as the notifier counts it, before it wakes anyone
        c.session.mark_dirty()

    c.select()
    assert c("i IDLE") == "+ idling\r\n"
    deliver()
    push = fanout.push(c.session, object)
    assert push is not None and push.job.blocking  # nobody read it yet: a worker reads
    read = fanout._read

    def read_then_deliver(session: ImapSession, key: Key | None) -> SharedChanges | None:
        found = read(session, key)
        deliver()  # the loop thread, while the worker is between the read and the sync
        return found

    monkeypatch.setattr(fanout, "_read", read_then_deliver)
    assert b"* 2 EXISTS" in push.job.run()
    fanout.finish(push)
    monkeypatch.setattr(fanout, "_read", read)
    push = fanout.push(c.session, object)
    assert push is not None, "the third message's wake-up was lost"
    assert b"* 3 EXISTS" in push.job.run()
