"""The IMAP front end's login core (sans-IO) before login: huge literals."""

from __future__ import annotations

from server.frontend.core import Policy, Send
from server.frontend.imap import ImapLoginCore
from server.settings.types import LoginType


def policy(tls: bool = False) -> Policy:
    return Policy(tls_active=tls, tls_available=True, login_type=LoginType.PlainTextLogin,
                  max_command_size=10240)


def events(core: ImapLoginCore, data: bytes) -> list:
    core.receive(data)
    out = []
    while (event := core.next_event(policy())) is not None:
        out.append(event)
        if not isinstance(event, Send) or event.close:
            break
    return out


def test_huge_literal_plus_before_login_is_refused_and_closes() -> None:
    core = ImapLoginCore("ready")
    got = events(core, b"a LOGIN {4294967296+}\r\nbob")
    assert got[0] == Send(b"a BAD [TOOBIG] Command too long.\r\n")
    assert got[-1].close and b"* BYE [TOOBIG]" in got[-1].data


def test_small_refused_literal_plus_before_login_is_skipped() -> None:
    core = ImapLoginCore("ready")
    got = events(core, b"a LOGIN {20000+}\r\n" + b"x" * 20000 + b"\r\nb NOOP\r\n")
    assert [e.data for e in got] == [b"a BAD [TOOBIG] Command too long.\r\n",
                                     b"b OK NOOP completed.\r\n"]
