"""The IMAP front end's login core (sans-IO) before login: huge literals, AUTHENTICATE
LOGIN."""

from __future__ import annotations

import base64

from server.frontend.core import LoginRequest, Policy, Send
from server.frontend.imap import ImapLoginCore
from server.settings.types import LoginType


def policy(tls: bool = False) -> Policy:
    return Policy(
        tls_active=tls,
        tls_available=True,
        login_type=LoginType.PlainTextLogin,
        max_command_size=10240,
    )


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
    assert [e.data for e in got] == [
        b"a BAD [TOOBIG] Command too long.\r\n",
        b"b OK NOOP completed.\r\n",
    ]


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def test_authenticate_login_with_challenges() -> None:
    core = ImapLoginCore("ready")
    assert "AUTH=LOGIN" in core.capabilities(policy()).split()
    assert events(core, b"a AUTHENTICATE LOGIN\r\n") == [Send(b"+ VXNlcm5hbWU6\r\n")]
    assert events(core, b64("bob") + b"\r\n") == [Send(b"+ UGFzc3dvcmQ6\r\n")]
    assert events(core, b64("s3cret pw") + b"\r\n") == [LoginRequest("bob", "s3cret pw", "a")]


def test_authenticate_login_with_initial_response_and_cancel() -> None:
    core = ImapLoginCore("ready")
    assert events(core, b"a AUTHENTICATE LOGIN " + b64("bob") + b"\r\n") == [
        Send(b"+ UGFzc3dvcmQ6\r\n")
    ]
    assert events(core, b64("pw") + b"\r\n") == [LoginRequest("bob", "pw", "a")]
    core = ImapLoginCore("ready")
    events(core, b"b AUTHENTICATE LOGIN\r\n")
    [cancelled] = events(core, b"*\r\n")
    assert cancelled.data.startswith(b"b BAD")
    # back to commands; a PLAIN afterwards is PLAIN again
    assert events(core, b"c NOOP\r\n") == [Send(b"c OK NOOP completed.\r\n")]
    assert events(core, b"d AUTHENTICATE PLAIN\r\n") == [Send(b"+ \r\n")]
    assert events(core, b64("\0bob\0pw") + b"\r\n") == [LoginRequest("bob", "pw", "d")]


def test_authenticate_login_follows_the_login_type() -> None:
    core = ImapLoginCore("ready")
    secure = Policy(
        tls_active=False,
        tls_available=True,
        login_type=LoginType.SecureLogin,
        max_command_size=10240,
    )
    assert "AUTH=LOGIN" not in core.capabilities(secure).split()
    core.receive(b"a AUTHENTICATE LOGIN\r\n")
    refused = core.next_event(secure)
    assert isinstance(refused, Send) and refused.data.startswith(b"a NO [PRIVACYREQUIRED]")
