"""POP3 front end (sans-IO): CAPA agrees with the back end, back-end refusals the client can
act on are passed through."""

from __future__ import annotations

import pytest

from server.backend.pop3.server import CAPABILITIES
from server.frontend.core import BackendRefused, LoginRequest, Policy, Refusal
from server.frontend.pop3 import Pop3BackendLogin, Pop3LoginCore
from server.settings.types import LoginType


def caps(core: Pop3LoginCore, pol: Policy) -> list[str]:
    core.receive(b"CAPA\r\n")
    event = core.next_event(pol)
    lines = event.data.decode().split("\r\n")  # type: ignore[union-attr]
    assert lines[0].startswith("+OK") and lines[-2:] == [".", ""]
    return lines[1:-2]


def test_capa_after_tls_is_the_back_ends_list() -> None:
    pol = Policy(
        tls_active=True, tls_available=True, login_type=LoginType.SecureLogin, max_command_size=512
    )
    assert caps(Pop3LoginCore("x"), pol) == CAPABILITIES.lines()
    for cap in (
        "EXPIRE NEVER",
        "LOGIN-DELAY 0",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "PIPELINING",
        "TOP",
        "UIDL",
        "USER",
        "SASL PLAIN",
    ):
        assert cap in CAPABILITIES.lines()
    assert any(c.startswith("IMPLEMENTATION ") for c in CAPABILITIES.lines())


def test_capa_before_tls_differs_only_in_login_methods() -> None:
    pol = Policy(
        tls_active=False, tls_available=True, login_type=LoginType.SecureLogin, max_command_size=512
    )
    listed = caps(Pop3LoginCore("x"), pol)
    assert (
        "STLS" in listed and "USER" not in listed and not any(c.startswith("SASL") for c in listed)
    )
    assert set(CAPABILITIES.lines()) - set(listed) == {"USER", "SASL PLAIN"}


@pytest.mark.parametrize(
    "line",
    [
        "-ERR [IN-USE] Maildrop is in use by another session",
        "-ERR [AUTH] Access denied: POP3 is disabled for this mailbox",
    ],
)
def test_back_end_refusals_with_a_client_meaning_pass_through(line: str) -> None:
    # The refusal comes as the hand-over's NO text (core.open_backend makes it a
    # BackendRefused); a back end that refuses in POP3 instead is treated the same.
    conv = Pop3BackendLogin()
    with pytest.raises(BackendRefused) as caught:
        conv.on_line(line.encode() + b"\r\n")
    request = LoginRequest("alice", "pw", "PASS")
    answer = Pop3LoginCore("x").refuse(request, Refusal.BACKEND_REFUSED, caught.value.response)
    assert answer == line.encode() + b"\r\n"


def test_other_back_end_refusals_are_a_temporary_failure() -> None:
    request = LoginRequest("alice", "pw", "PASS")
    core = Pop3LoginCore("x")
    answer = core.refuse(request, Refusal.BACKEND_REFUSED, "-ERR [SYS/PERM] Mailbox is elsewhere")
    assert answer.startswith(b"-ERR [SYS/TEMP]")
    assert core.refuse(request, Refusal.BACKEND_REFUSED, "-ERR whatever").startswith(
        b"-ERR [SYS/TEMP]"
    )
