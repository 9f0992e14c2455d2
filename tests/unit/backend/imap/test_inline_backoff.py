"""How long the IMAP back end stops running read-only commands on its loop after a slow
one (server/backend/imap/inline.py): a second for a blip, doubling while the loop keeps
being slow, never past INLINE_BACKOFF."""

from __future__ import annotations

from server.backend.imap.inline import FIRST_BACKOFF, INLINE_BACKOFF, InlineBackoff


def test_one_slow_command_costs_a_second() -> None:
    b = InlineBackoff()
    assert b.allowed(100.0)
    assert b.slow(100.0) == FIRST_BACKOFF
    assert not b.allowed(100.5)
    assert b.allowed(100.0 + FIRST_BACKOFF)


def test_slow_again_soon_after_doubles_up_to_the_limit() -> None:
    b = InlineBackoff()
    now, lengths = 0.0, []
    for _ in range(8):
        length = b.slow(now)
        lengths.append(length)
        now += length + 0.1  # slow again just after it ended
    assert lengths == [1.0, 2.0, 4.0, 8.0, 16.0, INLINE_BACKOFF, INLINE_BACKOFF, INLINE_BACKOFF]


def test_a_quiet_spell_starts_again_at_a_second() -> None:
    b = InlineBackoff()
    b.slow(0.0)
    assert b.slow(1.5) == 2.0  # within a second of the end of the first
    end = b.off_until
    assert b.slow(end + 2.5) == FIRST_BACKOFF  # longer quiet than the last back-off
