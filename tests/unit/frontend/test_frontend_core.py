"""Front-end login cores (sans-IO), throttle and limits: no sockets."""

from __future__ import annotations

import base64

import pytest

from server.directory.throttle import LoginThrottle, account_key
from server.frontend.core import (
    BackendDone,
    BackendError,
    BackendSend,
    LoginRequest,
    Policy,
    Refusal,
    Send,
    StartTls,
)
from server.frontend.imap import ImapBackendLogin, ImapLoginCore, decode_plain
from server.frontend.limits import ConnectionLimits
from server.frontend.pop3 import Pop3BackendLogin, Pop3LoginCore
from server.settings.models import Mailbox, Settings, default_settings
from server.settings.types import LoginType

SECURE, PTAUTH, PTLOGIN = (
    LoginType.SecureLogin,
    LoginType.PlainTextAuthentication,
    LoginType.PlainTextLogin,
)


def policy(login_type: LoginType = SECURE, tls: bool = False, size: int = 10240) -> Policy:
    return Policy(tls_active=tls, tls_available=True, login_type=login_type, max_command_size=size)


def run(core, data: bytes, pol: Policy) -> list:
    core.receive(data)
    events = []
    while (event := core.next_event(pol)) is not None:
        events.append(event)
        if not isinstance(event, Send):
            break
    return events


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --------------------------------------------------------------------------- policy


@pytest.mark.parametrize(
    ("login_type", "tls", "login", "sasl"),
    [
        (SECURE, False, False, False),
        (SECURE, True, True, True),
        (PTAUTH, False, False, True),
        (PTAUTH, True, True, True),
        (PTLOGIN, False, True, True),
        (PTLOGIN, True, True, True),
    ],
)
def test_policy_matrix(login_type: LoginType, tls: bool, login: bool, sasl: bool) -> None:
    pol = policy(login_type, tls)
    assert (pol.clear_login_allowed, pol.sasl_plain_allowed) == (login, sasl)


# --------------------------------------------------------------------------- IMAP


def imap_caps(pol: Policy) -> set[str]:
    core = ImapLoginCore("ready")
    [event] = run(core, b"a CAPABILITY\r\n", pol)
    line = event.data.split(b"\r\n")[0].decode()
    assert line.startswith("* CAPABILITY ")
    return set(line.split()[2:])


def test_imap_capabilities_follow_login_type() -> None:
    secure = imap_caps(policy(SECURE))
    assert {"STARTTLS", "LOGINDISABLED"} <= secure and "AUTH=PLAIN" not in secure
    ptauth = imap_caps(policy(PTAUTH))
    assert {"STARTTLS", "LOGINDISABLED", "AUTH=PLAIN"} <= ptauth
    ptlogin = imap_caps(policy(PTLOGIN))
    assert "LOGINDISABLED" not in ptlogin and "AUTH=PLAIN" in ptlogin
    after_tls = imap_caps(policy(SECURE, tls=True))
    assert "STARTTLS" not in after_tls and "LOGINDISABLED" not in after_tls
    assert "AUTH=PLAIN" in after_tls


def test_imap_greeting_is_banner() -> None:
    assert ImapLoginCore("Hello there").greeting() == b"* OK Hello there\r\n"


def test_imap_login_refused_before_tls_with_secure_login() -> None:
    [event] = run(ImapLoginCore("x"), b"a LOGIN bob secret\r\n", policy(SECURE))
    assert event.data.startswith(b"a NO [PRIVACYREQUIRED]")
    [event] = run(ImapLoginCore("x"), b"a LOGIN bob secret\r\n", policy(PTAUTH))
    assert event.data.startswith(b"a NO [PRIVACYREQUIRED]")
    [event] = run(
        ImapLoginCore("x"),
        f"a AUTHENTICATE PLAIN {b64(chr(0) + 'bob' + chr(0) + 'pw')}\r\n".encode(),
        policy(SECURE),
    )
    assert event.data.startswith(b"a NO [PRIVACYREQUIRED]")


def test_imap_login_with_literals() -> None:
    core = ImapLoginCore("x")
    events = run(core, b"a LOGIN {3}\r\n", policy(PTLOGIN))
    assert events[0].data.startswith(b"+ ")
    events = run(core, b'bob {6+}\r\nse cr"\r\n', policy(PTLOGIN))
    assert events == [LoginRequest("bob", 'se cr"', "a")]


def test_imap_authenticate_sasl_ir_and_continuation() -> None:
    ir = b64("\0bob\0pw")
    assert run(ImapLoginCore("x"), f"t1 AUTHENTICATE PLAIN {ir}\r\n".encode(), policy(PTAUTH)) == [
        LoginRequest("bob", "pw", "t1")
    ]
    core = ImapLoginCore("x")
    assert run(core, b"t2 AUTHENTICATE PLAIN\r\n", policy(PTAUTH)) == [Send(b"+ \r\n")]
    assert run(core, ir.encode() + b"\r\n", policy(PTAUTH)) == [LoginRequest("bob", "pw", "t2")]
    core = ImapLoginCore("x")
    run(core, b"t3 AUTHENTICATE PLAIN\r\n", policy(PTAUTH))
    [event] = run(core, b"*\r\n", policy(PTAUTH))
    assert event.data.startswith(b"t3 BAD")
    # back in command mode afterwards
    [event] = run(core, b"t4 NOOP\r\n", policy(PTAUTH))
    assert event.data == b"t4 OK NOOP completed.\r\n"


def test_sasl_plain_rejects_foreign_authzid() -> None:
    assert decode_plain(b"alice\0bob\0pw") is None
    assert decode_plain(b"bob\0bob\0pw") == ("bob", "pw")
    assert decode_plain(b"garbage") is None


def test_imap_starttls_discards_pipelined_commands() -> None:
    core = ImapLoginCore("x")
    events = run(core, b"a STARTTLS\r\nb LOGIN bob pw\r\n", policy(PTLOGIN))
    assert events == [StartTls(b"a OK Begin TLS negotiation now.\r\n")]
    core.discard_buffer()
    assert run(core, b"", policy(PTLOGIN, tls=True)) == []
    [event] = run(core, b"c STARTTLS\r\n", policy(PTLOGIN, tls=True))
    assert event.data.startswith(b"c BAD")


def test_imap_other_commands_invalid_before_login() -> None:
    [event] = run(ImapLoginCore("x"), b"a SELECT INBOX\r\n", policy())
    assert event.data == b"a BAD Command received in invalid state.\r\n"


def test_imap_command_too_long() -> None:
    core = ImapLoginCore("x")
    events = run(core, b"a LOGIN " + b"x" * 2000 + b" pw\r\nb NOOP\r\n", policy(PTLOGIN, size=1024))
    assert b"[TOOBIG]" in events[0].data
    assert events[1].data == b"b OK NOOP completed.\r\n"
    # a literal bigger than the command limit is refused before it is read
    [event] = run(ImapLoginCore("x"), b"a LOGIN bob {5000}\r\n", policy(PTLOGIN, size=1024))
    assert b"BAD" in event.data and b"+ " not in event.data


def test_imap_logout_closes_and_leftover_goes_to_backend() -> None:
    [event] = run(ImapLoginCore("x"), b"a LOGOUT\r\n", policy())
    assert event.close and event.data.startswith(b"* BYE")
    core = ImapLoginCore("x")
    events = run(core, b"a LOGIN bob pw\r\nb SELECT INBOX\r\n", policy(PTLOGIN))
    assert events == [LoginRequest("bob", "pw", "a")]
    assert core.leftover() == b"b SELECT INBOX\r\n"


def test_imap_replies() -> None:
    core, req = ImapLoginCore("x"), LoginRequest("bob", "pw", "a1")
    assert core.refuse(req, Refusal.BAD_CREDENTIALS).startswith(b"a1 NO [AUTHENTICATIONFAILED]")
    assert core.refuse(req, Refusal.UNAVAILABLE).startswith(b"a1 NO [UNAVAILABLE]")
    assert core.refuse(req, Refusal.USER_LIMIT).startswith(b"a1 NO [LIMIT]")
    assert b"Administrator" in core.refuse(req, Refusal.POLICY, "the Administrator mailbox ...")
    assert (
        core.accept(req, "IMAP4rev1 IDLE")
        == b"a1 OK [CAPABILITY IMAP4rev1 IDLE COMPRESS=DEFLATE] Logged in.\r\n"
    )  # the front end's
    assert core.refuse_connection("Too many connections").startswith(b"* BYE [UNAVAILABLE]")


def test_imap_backend_login_conversation() -> None:
    conv = ImapBackendLogin()
    assert conv.on_line(
        b"* PREAUTH [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in as bob\r\n"
    ) == BackendDone("IMAP4rev1 IDLE MOVE")
    conv = ImapBackendLogin()
    assert conv.on_line(b"* PREAUTH hi\r\n") == BackendSend(b"P1 CAPABILITY\r\n")
    assert conv.on_line(b"* CAPABILITY IMAP4rev1 X\r\n") is None
    assert conv.on_line(b"P1 OK\r\n") == BackendDone("IMAP4rev1 X")
    for greeting in (b"* OK not logged in\r\n", b"* BYE go away\r\n"):
        with pytest.raises(BackendError):
            ImapBackendLogin().on_line(greeting)


# --------------------------------------------------------------------------- POP3


def pop_caps(pol: Policy) -> list[str]:
    [event] = run(Pop3LoginCore("x"), b"CAPA\r\n", pol)
    lines = event.data.decode().split("\r\n")
    assert lines[0].startswith("+OK") and lines[-2] == "."
    return lines[1:-2]


def test_pop_capabilities_follow_login_type() -> None:
    secure = pop_caps(policy(SECURE))
    assert "STLS" in secure and "USER" not in secure and "SASL PLAIN" not in secure
    ptauth = pop_caps(policy(PTAUTH))
    assert "SASL PLAIN" in ptauth and "USER" not in ptauth
    ptlogin = pop_caps(policy(PTLOGIN))
    assert {"USER", "SASL PLAIN", "STLS"} <= set(ptlogin)
    tls = pop_caps(policy(SECURE, tls=True))
    assert {"USER", "SASL PLAIN"} <= set(tls) and "STLS" not in tls


def test_pop_user_pass_and_refusals() -> None:
    core = Pop3LoginCore("x")
    [event] = run(core, b"USER bob\r\n", policy(SECURE))
    assert event.data.startswith(b"-ERR [AUTH]")
    core = Pop3LoginCore("x")
    events = run(core, b"USER bob\r\nPASS pass word\r\n", policy(PTLOGIN))
    assert events == [Send(b"+OK\r\n"), LoginRequest("bob", "pass word", "PASS")]
    [event] = run(Pop3LoginCore("x"), b"PASS x\r\n", policy(PTLOGIN))
    assert event.data.startswith(b"-ERR")


def test_pop_auth_plain() -> None:
    ir = b64("\0bob\0pw")
    assert run(Pop3LoginCore("x"), f"AUTH PLAIN {ir}\r\n".encode(), policy(PTAUTH)) == [
        LoginRequest("bob", "pw", "AUTH")
    ]
    core = Pop3LoginCore("x")
    assert run(core, b"AUTH PLAIN\r\n", policy(PTAUTH)) == [Send(b"+ \r\n")]
    assert run(core, ir.encode() + b"\r\n", policy(PTAUTH)) == [LoginRequest("bob", "pw", "AUTH")]
    [event] = run(Pop3LoginCore("x"), f"AUTH PLAIN {ir}\r\n".encode(), policy(SECURE))
    assert event.data.startswith(b"-ERR [AUTH]")


def test_pop_stls_and_too_long() -> None:
    core = Pop3LoginCore("x")
    events = run(core, b"STLS\r\nUSER bob\r\n", policy(SECURE))
    assert events == [StartTls(b"+OK Begin TLS negotiation.\r\n")]
    core.discard_buffer()
    assert run(core, b"", policy(SECURE, tls=True)) == []
    core = Pop3LoginCore("x")
    events = run(core, b"USER " + b"x" * 600, policy(PTLOGIN, size=512))
    assert events == [Send(b"-ERR Command line too long.\r\n")]
    events = run(core, b"yyy\r\nQUIT\r\n", policy(PTLOGIN, size=512))
    assert events[0].close


def test_pop_backend_login() -> None:
    assert Pop3BackendLogin().on_line(b"+OK bob has 0 messages (0 octets)\r\n") == BackendDone(None)
    conv = Pop3BackendLogin()
    with pytest.raises(BackendError):
        conv.on_line(b"-ERR no\r\n")


# --------------------------------------------------------------------------- throttle, limits


def test_throttle_grows_caps_and_decays() -> None:
    now = [0.0]
    throttle = LoginThrottle(base=0.5, cap=8.0, decay=60.0, clock=lambda: now[0])
    assert throttle.delay("1.2.3.4", "bob") == 0
    delays = []
    for _ in range(7):
        throttle.failed("1.2.3.4", "bob")
        delays.append(throttle.delay("1.2.3.4", "bob"))
    assert delays == [0.5, 1, 2, 4, 8, 8, 8]
    # per account from another address (bounded small); per address, for another account
    assert throttle.delay("9.9.9.9", "BOB") == throttle.account_cap == 1
    assert throttle.delay("1.2.3.4", "alice") == 8
    assert throttle.delay("9.9.9.9", "alice") == 0
    now[0] += 60 * 7
    assert throttle.delay("1.2.3.4", "bob") == 0


def test_throttle_success_clears_account() -> None:
    throttle = LoginThrottle(clock=lambda: 0.0)
    throttle.failed("1.1.1.1", "bob")
    throttle.succeeded("1.1.1.1", "bob")
    assert throttle.delay("2.2.2.2", "bob") == 0
    assert throttle.delay("1.1.1.1", "other") == 0.5


def test_throttle_never_overflows_however_many_failures() -> None:
    throttle = LoginThrottle(clock=lambda: 0.0)
    for _ in range(5000):
        throttle.failed("1.2.3.4", "bob")
        assert throttle.delay("1.2.3.4", "bob") <= throttle.cap
    assert throttle.delay("1.2.3.4", "bob") == throttle.cap
    assert throttle.delay("1.2.3.4") == throttle.cap


def test_throttle_stranger_cannot_lock_out_the_owner() -> None:
    throttle = LoginThrottle(clock=lambda: 0.0)
    for _ in range(5000):
        throttle.failed("6.6.6.6", "bob")
    assert throttle.delay("6.6.6.6", "bob") == throttle.cap  # the guesser is slowed down
    assert throttle.delay("10.0.0.5", "bob") <= 1.0  # the owner at home waits a second at most
    throttle.succeeded("10.0.0.5", "bob")
    assert throttle.delay("10.0.0.5", "bob") == 0


def make_settings() -> Settings:
    settings = default_settings()
    settings.Mailboxes["Bob"] = Mailbox(PrimarySmtpAddress="bob@contoso.test", Server="MBX01")
    return settings


def test_throttle_account_key_follows_the_mailbox_whatever_the_spelling() -> None:
    settings = make_settings()
    assert account_key(settings, "CONTOSO\\Bob") == account_key(settings, "bob") == "bob"
    assert account_key(settings, "x\\bob") == "bob"
    assert account_key(settings, " bob@contoso.test ") == "bob"
    assert account_key(settings, "x\\Nobody") == account_key(settings, "nobody") == "nobody"
    assert account_key(settings, "") is None
    throttle = LoginThrottle(clock=lambda: 0.0)
    for typed in ("x\\bob", "bob@contoso.test", "BOB"):
        throttle.failed("1.1.1.1", account_key(settings, typed))
    assert throttle.delay("1.1.1.1", account_key(settings, "bob")) == 2  # three failures


def test_limits() -> None:
    limits = ConnectionLimits()
    assert limits.open("a", 3, 2) is None
    assert limits.open("a", 3, 2) is None
    assert limits.open("a", 3, 2) == "Too many connections from your address"
    assert limits.open("b", 3, 2) is None
    assert limits.open("c", 3, 2) == "Too many connections"
    limits.close("a")
    assert limits.open("c", 3, 2) is None
    assert limits.login("Bob", 1) and not limits.login("bob", 1)
    limits.logout("BOB")
    assert limits.login("bob", 1)
