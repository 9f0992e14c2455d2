"""When the IMAP back end stops running read-only commands on its event loop for a while.

An inline command slower than INLINE_SLOW (a cold disk, a huge folder) sends the store
commands back to the worker threads for a while, so a slow disk stalls the loop a few
times, not at every command. The while starts at one second and doubles each time the
loop is slow again within as long as the last one lasted, up to INLINE_BACKOFF: one
slow read (a file that was not in the page cache, a moment without the core) costs a
second of thread hand-offs, and a disk that stays slow is left alone for the full time
after a handful of stalls.
"""

from __future__ import annotations

INLINE_SLOW = 0.02
INLINE_BACKOFF = 30.0
FIRST_BACKOFF = 1.0


class InlineBackoff:
    """Whether inline commands may run (allowed), and the back-off after a slow one (slow),
    on the monotonic clock the caller passes."""

    __slots__ = ("off_until", "length")

    def __init__(self) -> None:
        self.off_until = 0.0  # before this, nothing runs inline
        self.length = 0.0  # of the last back-off

    def allowed(self, now: float) -> bool:
        return now >= self.off_until

    def slow(self, now: float) -> float:
        """A slow inline command ended at `now`: how long inline commands are off."""
        recent = self.length and now - self.off_until < self.length
        self.length = min(self.length * 2, INLINE_BACKOFF) if recent else FIRST_BACKOFF
        self.off_until = now + self.length
        return self.length
