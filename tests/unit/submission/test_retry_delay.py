"""How long the submission spool waits before trying a recipient again."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from server.submission.delivery import MOVING_ATTEMPTS, MOVING_RETRY, RETRY_CAP, Delivery
from server.submission.queue import Recipient


def delay(attempts: int, error: str, base: float = 60.0) -> float:
    return Delivery._retry_delay(SimpleNamespace(retry_base=base), attempts, error)  # type: ignore[arg-type]


@pytest.mark.parametrize("attempts, expected", [(1, 60.0), (2, 120.0), (3, 240.0), (20, RETRY_CAP)])
def test_ordinary_failures_back_off_doubling_up_to_the_cap(attempts: int, expected: float) -> None:
    assert delay(attempts, "451 4.3.0 <dora@contoso.test> temporary store failure") == expected


def test_a_mailbox_in_a_move_is_tried_again_within_seconds() -> None:
    moving = "451 4.2.1 <dora@contoso.test>: the mailbox is being moved to MBX01"
    assert [delay(n, moving) for n in (1, 2, MOVING_ATTEMPTS)] == [MOVING_RETRY] * 3
    # A fence that stays (a move that failed in its final step) falls back to the back-off.
    assert delay(MOVING_ATTEMPTS + 1, moving) == min(RETRY_CAP, 60.0 * 2**MOVING_ATTEMPTS)


def test_the_short_retry_never_exceeds_a_shorter_configured_base() -> None:
    assert delay(1, "451 4.2.1 <dora@contoso.test>: moving", base=0.05) == 0.05


class _NoFileMailboxes:
    """Settings whose mailboxes all live in the LDAP directory."""

    def mailbox(self, identity: str) -> None:
        return None


def _home_server(rcpt: Recipient, monkeypatch: pytest.MonkeyPatch, now_at: str) -> str:
    import server.submission.delivery as delivery

    asked: list[str] = []

    def find_entry(settings: object, identity: str, home: object) -> SimpleNamespace:
        asked.append(identity)
        return SimpleNamespace(mailbox=SimpleNamespace(Server=now_at))

    monkeypatch.setattr(delivery, "ldap_for", lambda settings, home: object())
    monkeypatch.setattr(delivery, "find_entry", find_entry)
    server = Delivery._home_server(SimpleNamespace(home=None), _NoFileMailboxes(), rcpt)  # type: ignore[arg-type]
    assert asked == ([rcpt.mailbox] if rcpt.attempts else [])
    return server


def test_a_retry_asks_the_directory_where_a_moved_mailbox_is_now(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rcpt = Recipient("dora@contoso.test", mailbox="dora", server="MBX02", attempts=1)
    assert _home_server(rcpt, monkeypatch, now_at="MBX01") == "MBX01"


def test_the_first_try_goes_where_acceptance_found_the_mailbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rcpt = Recipient("dora@contoso.test", mailbox="dora", server="MBX02")
    assert _home_server(rcpt, monkeypatch, now_at="MBX01") == "MBX02"
