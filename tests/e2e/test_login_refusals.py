"""Before the password is proved, every refusal is the same (issue 13 item 8): an unknown
user, a wrong password, a Guest, Administrator or Anonymous mailbox and a mailbox with the
protocol turned off all get one answer, on POP3 as on IMAP (test_frontend_proxy.py) and
SMTP AUTH."""

from __future__ import annotations

import poplib
import smtplib
from collections.abc import Iterator
from typing import Any

import pytest

from server.directory.throttle import LoginThrottle
from server.settings import store
from server.settings.models import POP3, SUBMISSION
from server.settings.paths import Home
from server.settings.types import LoginType
from tests.e2e.frontend_support import (
    FakeBackend,
    client_context,
    configure,
    ports,
)

NAMES = ["bob", "nobody", "Administrator", "guest", "anon", "carol"]


@pytest.fixture
def pop(env: Home, in_process: Any) -> Iterator[Any]:
    server = store.load(env).settings.Servers["MBX01"]
    configure(env, "POP", ProxyTargetPort=server.PopBackEndPort, LoginType=LoginType.PlainTextLogin)
    with FakeBackend(env, "POP", server.BackEndAddress, server.PopBackEndPort):
        with in_process(POP3, env) as svc:
            svc.service.logins.throttle = LoginThrottle(base=0.001, cap=0.005)
            yield svc


def test_pop3_refusals_with_a_wrong_password_are_all_alike(env: Home, pop: Any) -> None:
    plain, _ = ports(env, "POP")
    answers = set()
    for name in NAMES:
        client = poplib.POP3("127.0.0.1", plain, timeout=10)
        client.user(name)
        with pytest.raises(poplib.error_proto) as refused:
            client.pass_("wrong")
        answers.add(refused.value.args[0])
        client.close()
    assert len(answers) == 1, answers


@pytest.fixture
def smtp(env: Home, in_process: Any) -> Iterator[Any]:
    with in_process(SUBMISSION, env) as svc:
        svc.service.logins.throttle = LoginThrottle(base=0.001, cap=0.005)
        yield svc


def test_smtp_auth_refusals_are_all_alike(env: Home, smtp: Any) -> None:
    port = store.load(env).settings.ReceiveConnectors["Client Frontend MBX01"].Bindings[0].port
    answers = set()
    for name, password in [(n, "wrong") for n in NAMES] + [("anon", "Pa55word!")]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.starttls(context=client_context(env))
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                client.login(name, password)
            answers.add((refused.value.smtp_code, refused.value.smtp_error))
    assert len(answers) == 1, answers
