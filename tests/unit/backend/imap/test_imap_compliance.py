"""Regression tests for the IMAP back-end session found with Dovecot's imaptest suite
(tests/e2e/test_imaptest.py runs the suite itself). Each test names the imaptest group
that found the bug; the session runs over the in-memory store."""

from __future__ import annotations

import re

from tests.fakes.memstore import MemStore
from tests.unit.backend.imap.test_imap_session import MSG, Client


def test_flag_changes_after_expunges_are_reported_at_the_new_numbers() -> None:
    """imaptest "expunge": another session expunges 1 and 3 and flags 2 and 4; the FETCH
    responses after the EXPUNGEs must use the renumbered sequence numbers 1 and 2."""
    store = MemStore()
    a, b = Client(store).login(), Client(store).login()
    for _ in range(4):
        a.box.append("INBOX", MSG)
    a.select()
    b.select()
    b("s STORE 1,3 +FLAGS.SILENT (\\Deleted)")
    b("s STORE 2,4 FLAGS.SILENT (\\Flagged)")
    b("e EXPUNGE")
    a.session.mark_dirty()
    out = a("c CHECK")
    assert re.findall(r"\* (\d+) EXPUNGE", out) == ["1", "2"]
    assert sorted(re.findall(r"\* (\d+) FETCH \(FLAGS \(\\Flagged[^)]*\)\)", out)) == ["1", "2"], (
        out
    )


def test_examine_shows_recent_without_claiming_it() -> None:
    """imaptest "select": EXAMINE reports the RECENT count (and \\Recent flags) and leaves
    them for the next SELECT."""
    c = Client().login()
    for _ in range(2):
        c.box.append("INBOX", MSG)
    out = c("e EXAMINE INBOX")
    assert "* 2 RECENT" in out and "e OK [READ-ONLY]" in out
    assert "\\Recent" in c("f FETCH 1 FLAGS")
    assert "* 2 RECENT" in c.select()
    assert "* 0 RECENT" in c("e EXAMINE INBOX")


def test_esearch_min_max_modseq_is_that_of_the_returned_messages() -> None:
    """imaptest "esearch-condstore": with only MIN and/or MAX, MODSEQ is the highest
    mod-sequence of the messages returned, not of every match (RFC 4731 section 3.2)."""
    c = Client().login()
    for _ in range(3):
        c.box.append("INBOX", MSG)
    c("e ENABLE CONDSTORE")
    c.select()
    modseq = {}
    for n in (1, 3, 2):
        out = c(f"s STORE {n} +FLAGS (\\Seen)")
        modseq[n] = int(re.search(r"MODSEQ \((\d+)\)", out).group(1))  # type: ignore[union-attr]
    assert f"MIN 1 MODSEQ {modseq[1]}\r\n" in c("s SEARCH RETURN (MIN) 1:3 MODSEQ 1")
    assert f"MAX 3 MODSEQ {modseq[3]}\r\n" in c("s SEARCH RETURN (MAX) 1:3 MODSEQ 1")
    assert f"MIN 1 MAX 3 MODSEQ {modseq[3]}\r\n" in c("s SEARCH RETURN (MIN MAX) 1:3 MODSEQ 1")
    assert f"ALL 1:3 MODSEQ {modseq[2]}\r\n" in c("s SEARCH RETURN (ALL) 1:3 MODSEQ 1")


def test_lsub_percent_shows_unsubscribed_superior_as_noselect() -> None:
    """imaptest "subscribe": LSUB "" Top/% with only Top/A/B subscribed answers Top/A with
    \\Noselect (RFC 3501 6.3.9), and "*" still lists the subscribed name itself."""
    c = Client().login()
    for name in ("Top/Sub", "Top/A/B", "Top/Loose"):
        assert "c OK" in c(f"c CREATE {name}")
    for name in ("Top", "Top/A", "Top/Loose"):
        c(f"u UNSUBSCRIBE {name}")
    out = c('l LSUB "" Top/%')
    assert '* LSUB (\\Noselect) "/" "Top/A"\r\n' in out
    assert '"Top/Sub"' in out and "Top/A/B" not in out and "Loose" not in out
    out = c('l LSUB "" Top/*')
    assert '"Top/A/B"' in out and '"Top/A"' not in out
    assert '"Top/A"' not in c('l LSUB "" *A')  # only "%" stops at a level


def test_childinfo_only_for_descendants_the_patterns_do_not_return() -> None:
    """imaptest "listext": LIST (SUBSCRIBED RECURSIVEMATCH) gives a parent CHILDINFO only
    when its subscribed descendant is not itself returned (RFC 5258 section 4)."""
    c = Client().login()
    c("c CREATE P/Kid")
    c("u UNSUBSCRIBE P")
    out = c('l LIST (SUBSCRIBED RECURSIVEMATCH) "" (P)')
    assert '"/" "P" ("CHILDINFO" ("SUBSCRIBED"))\r\n' in out
    out = c('l LIST (SUBSCRIBED RECURSIVEMATCH) "" (P P/Kid)')
    assert '"P"' not in out and '"P/Kid"' in out


def test_address_search_matches_the_parsed_address() -> None:
    """imaptest "search-addresses": FROM user@host finds "<user (comment)@ (comment) host>"
    and a comment or encoded display name is searchable too."""
    c = Client().login()
    c.box.append(
        "INBOX",
        b"From: <user-from (comment)@ (comment) domain.org>\r\n"
        b"To: =?utf-8?q?J=C3=B6rg?= <j@x.org>\r\n\r\nbody\r\n",
    )
    c.box.append("INBOX", b"From: user-from@domain.org (RealFrom)\r\nTo: g: a@x.org;\r\n\r\nb\r\n")
    c.box.append("INBOX", b"From: other@domain.org\r\n\r\nbody\r\n")
    c.select()
    assert "* SEARCH 1 2\r\n" in c("s SEARCH FROM user-from@domain.org")
    assert "* SEARCH 2\r\n" in c("s SEARCH FROM realfrom")
    assert "* SEARCH 1\r\n" in c('s SEARCH CHARSET UTF-8 TO "Jörg <j@"')
    assert "* SEARCH 2\r\n" in c("s SEARCH TO a@x.org")


def test_names_that_are_not_modified_utf7_get_no_and_the_session_goes_on() -> None:
    """imaptest "atoms": every atom character in a mailbox name is syntax, not an error:
    SELECT answers NO, LIST answers OK with nothing (a BAD made imaptest drop the session)."""
    c = Client().login()
    name = "!#$&'+,-.0123456789:;<=>?@^_`|[}"
    assert "s NO [CANNOT]" in c(f"s SELECT {name}")
    assert c(f'l LIST "" {name}%*') == "l OK LIST completed\r\n"
    assert "c NO [CANNOT]" in c(f"c CREATE {name}")
    assert "r NO [CANNOT]" in c(f"r RENAME INBOX/x {name}")
    assert "~foo" not in c('l LIST "" *')
    assert "l OK" in c('l LIST "" ~foo') and "s NO" in c("s SELECT ~foo")


def test_huge_literal_plus_gets_toobig_and_the_session_closes() -> None:
    c = Client().login()
    out = c.send(b"a APPEND INBOX {4294967296+}\r\nFrom: x\r\n")
    assert out.startswith(b"a NO [TOOBIG]") and b"* BYE [TOOBIG]" in out
    assert c.session.closed
    c2 = Client().login()
    out = c2.send(b"a APPEND INBOX {4294967296}\r\n")  # synchronizing: refused, session goes on
    assert out.startswith(b"a NO [TOOBIG]") and not c2.session.closed
    assert "b OK" in c2("b NOOP")


def _rev2_client() -> Client:
    c = Client().login()
    assert "IMAP4rev1 IMAP4rev2 " in c("c CAPABILITY")
    assert "* ENABLED IMAP4rev2\r\n" in c("e ENABLE IMAP4rev2")
    return c


def test_enable_imap4rev2_drops_recent_and_unseen_code() -> None:
    """RFC 9051 appendix E: no RECENT response, no \\Recent flag, no [UNSEEN n] code;
    selecting another mailbox first reports OK [CLOSED]."""
    c = _rev2_client()
    c.box.append("INBOX", MSG)
    out = c("s SELECT inbox")
    assert "RECENT" not in out and "[UNSEEN" not in out and "* 1 EXISTS" in out
    assert '* LIST () "/" "INBOX"\r\n' in out  # RFC 9051 6.3.2
    assert "\\Recent" not in c("f FETCH 1 FLAGS")
    c.box.append("INBOX", MSG)
    c.session.mark_dirty()
    out = c("n NOOP")
    assert "* 2 EXISTS" in out and "RECENT" not in out
    assert "* OK [CLOSED]" in c("e EXAMINE INBOX")
    # ENABLE again: nothing new is enabled.
    assert "* ENABLED\r\n" in c("e ENABLE IMAP4rev2")


def test_imap4rev2_search_answers_esearch() -> None:
    c = _rev2_client()
    for _ in range(3):
        c.box.append("INBOX", MSG)
    c.select()
    assert c("s SEARCH 2:3") == '* ESEARCH (TAG "s") ALL 2:3\r\ns OK SEARCH completed\r\n'
    assert '* ESEARCH (TAG "u") UID ALL 1:3\r\n' in c("u UID SEARCH ALL")
    assert c("s SEARCH DELETED") == '* ESEARCH (TAG "s")\r\ns OK SEARCH completed\r\n'
    assert '* ESEARCH (TAG "s") COUNT 3\r\n' in c("s SEARCH RETURN (COUNT) ALL")


def test_imap4rev2_list_nonexistent_and_utf8_names() -> None:
    c = Client().login()
    c.box.create_folder("Été/Sub")  # "Été" is a mere level of the hierarchy
    assert '* LIST (\\Noselect \\HasChildren) "/" "&AMk-t&AOk-"' in c('l LIST "" %')
    c("e ENABLE IMAP4rev2")
    out = c('l LIST "" %')
    assert '* LIST (\\NonExistent \\HasChildren) "/" "Été"' in out
    # Names are UTF-8 now: "&" is an ordinary character, not modified UTF-7.
    assert "c OK" in c("c CREATE R&D")
    assert '"R&D"' in c('l LIST "" R*')
    assert "R&D" in [f.name for f in c.box.folders()]
    assert '* STATUS "Été/Sub" (MESSAGES 0)' in c('s STATUS "Été/Sub" (MESSAGES)')


def test_subscription_of_a_deleted_mailbox_is_listed_as_nonexistent() -> None:
    """imaptest "listext": DELETE does not unsubscribe (RFC 3501 6.3.6); LIST (SUBSCRIBED)
    shows the name with \\NonExistent \\Subscribed (RFC 5258 3.1), LSUB with \\Noselect;
    a plain LIST does not show it."""
    c = Client().login()
    c("c CREATE Old")
    c("u SUBSCRIBE Old")
    assert "d OK" in c("d DELETE Old")
    out = c('l LIST (SUBSCRIBED) "" *')
    assert '* LIST (\\NonExistent \\Subscribed) "/" "Old"\r\n' in out
    assert '"Old"' not in c('l LIST "" *')
    assert '* LSUB (\\Noselect) "/" "Old"\r\n' in c('l LSUB "" O*')
    assert "s OK" in c("s SUBSCRIBE Never/Made")
    assert '"Never/Made"' in c('l LIST (SUBSCRIBED) "" Never/*')
    c("c CREATE Old")
    assert '* LIST (\\HasNoChildren \\Subscribed) "/" "Old"' in c('l LIST (SUBSCRIBED) "" Old')


def test_delete_of_a_parent_says_haschildren() -> None:
    c = Client().login()
    c("c CREATE Top/Kid")
    assert "d NO [HASCHILDREN]" in c("d DELETE Top")


def test_a_new_keyword_is_announced_in_flags_before_it_is_used() -> None:
    """imaptest's "Keyword used without being in FLAGS": a STORE that brings a keyword the
    session has not listed sends FLAGS and PERMANENTFLAGS first (RFC 3501 7.2.6), in this
    session and in another one that learns of the change."""
    store = MemStore()
    a, b = Client(store).login(), Client(store).login()
    a.box.append("INBOX", MSG)
    a.select()
    b.select()
    out = a("s STORE 1 +FLAGS ($Hello NIL)")
    flags = out.index("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Hello NIL)")
    assert flags < out.index("* OK [PERMANENTFLAGS (") < out.index("* 1 FETCH (FLAGS (")
    assert "* FLAGS" not in a("s STORE 1 +FLAGS ($Hello)")  # known by now
    b.session.mark_dirty()
    out = b("n NOOP")
    assert out.index("* FLAGS (") < out.index("* 1 FETCH (FLAGS ($Hello NIL")
