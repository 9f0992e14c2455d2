"""Failed-login slow-down, per client address and per account name.

Each failure raises a score for the address and for the name as typed (not for the mailbox
found, so the delay is the same whether the user exists). Before the next login attempt
from that address or for that name the front end waits `delay()`: `base` doubling with each
recent failure, capped at `cap`. Scores decay by one every `decay` seconds, so an honest
user who mistyped is back to no delay after a few minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class LoginThrottle:
    def __init__(
        self, base: float = 0.5, cap: float = 8.0, decay: float = 60.0,
        clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000,
    ) -> None:
        self.base, self.cap, self.decay = base, cap, decay
        self._clock = clock
        self._max_keys = max_keys
        self._scores: dict[str, tuple[float, float]] = {}  # key -> (score, when)

    def _score(self, key: str) -> float:
        found = self._scores.get(key)
        if found is None:
            return 0.0
        score, when = found
        score -= (self._clock() - when) / self.decay
        if score <= 0:
            del self._scores[key]
            return 0.0
        return score

    def _keys(self, ip: str, user: str | None) -> list[str]:
        keys = [f"ip:{ip}"]
        if user:
            keys.append(f"user:{user.strip().lower()}")
        return keys

    def delay(self, ip: str, user: str | None = None) -> float:
        """Seconds to wait before checking a login from `ip` for `user`."""
        score = max(self._score(k) for k in self._keys(ip, user))
        if score <= 0:
            return 0.0
        # A partly decayed failure still counts as one, so the wait never drops below base.
        failures = max(1, round(score))
        return min(self.cap, self.base * 2 ** (failures - 1))

    def failed(self, ip: str, user: str | None = None) -> None:
        if len(self._scores) >= self._max_keys:
            self._forget_stale()
        now = self._clock()
        for key in self._keys(ip, user):
            self._scores[key] = (self._score(key) + 1, now)

    def succeeded(self, ip: str, user: str) -> None:
        """A good login clears the account's score (the address keeps its own)."""
        self._scores.pop(f"user:{user.strip().lower()}", None)

    def _forget_stale(self) -> None:
        for key in list(self._scores):
            self._score(key)
        if len(self._scores) >= self._max_keys:  # under attack from everywhere: keep newest
            for key in sorted(self._scores, key=lambda k: self._scores[k][1])[: self._max_keys // 2]:
                del self._scores[key]
