"""How long the submission spool waits before trying a recipient again."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from server.submission.delivery import MOVING_ATTEMPTS, MOVING_RETRY, RETRY_CAP, Delivery


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
