"""Failed-login slow-down, per client address and per account.

Each failure raises three scores: the client address's, the account's from that address, and
the account's from anywhere. The account is the mailbox the typed name resolves to (any
spelling: name, address, `domain\\name`), or the normalised typed name when there is no such
mailbox, so the delay is the same whether the user exists and no spelling escapes the count
(`account_key`). Before the next login attempt the front end waits `delay()`: `base`
doubling with each recent failure, capped. Scores decay by one every `decay` seconds, so an
honest user who mistyped is back to no delay after a few minutes.

The address and (account, address) scores are capped at `cap`: they slow down whoever is
guessing. The account's score from anywhere is capped at `account_cap`, a small bound: it
still slows a guesser spread over many addresses, but a stranger's failures can never lock
the owner out - from the owner's own address the wait is at most `account_cap`. Nothing here
raises however many failures pile up (the exponent is bounded before it is used).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.settings.models import Settings

# 2 ** 64 times any base is far beyond any cap: failures past this count change nothing.
_MAX_DOUBLINGS = 64


def normalise_name(typed: str) -> str:
    """A typed login name as the directory compares it: trimmed, case-folded, without a
    `domain\\` prefix."""
    return typed.strip().lower().rsplit("\\", 1)[-1]


def account_key(settings: Settings, typed: str | None) -> str | None:
    """The throttle's account for a typed login name: the resolved mailbox when there is
    one, else the normalised name (None when nothing was typed)."""
    if not typed or not typed.strip():
        return None
    found = settings.mailbox(typed)
    return found[0].lower() if found is not None else normalise_name(typed)


class LoginThrottle:
    def __init__(
        self,
        base: float = 0.5,
        cap: float = 8.0,
        decay: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
        account_cap: float = 1.0,
    ) -> None:
        self.base, self.cap, self.decay = base, cap, decay
        self.account_cap = account_cap
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

    def _keys(self, ip: str, account: str | None) -> list[tuple[str, float]]:
        keys = [(f"ip:{ip}", self.cap)]
        if account:
            name = normalise_name(account)
            keys.append((f"acct-ip:{name}\0{ip}", self.cap))
            keys.append((f"acct:{name}", min(self.cap, self.account_cap)))
        return keys

    def _wait(self, score: float, cap: float) -> float:
        if score <= 0:
            return 0.0
        # A partly decayed failure still counts as one, so the wait never drops below base.
        doublings = min(_MAX_DOUBLINGS, max(1, round(score)) - 1)
        return min(cap, self.base * 2.0**doublings)

    def delay(self, ip: str, account: str | None = None) -> float:
        """Seconds to wait before checking a login from `ip` for `account` (account_key)."""
        return max(self._wait(self._score(key), cap) for key, cap in self._keys(ip, account))

    def failed(self, ip: str, account: str | None = None) -> None:
        if len(self._scores) >= self._max_keys:
            self._forget_stale()
        now = self._clock()
        for key, _ in self._keys(ip, account):
            # Bounded too, so a long attack does not take hours to decay after it stops.
            score = min(self._score(key) + 1, _MAX_DOUBLINGS + 1)
            self._scores[key] = (score, now)

    def succeeded(self, ip: str, account: str) -> None:
        """A good login clears the account's scores (the address keeps its own)."""
        name = normalise_name(account)
        self._scores.pop(f"acct-ip:{name}\0{ip}", None)
        self._scores.pop(f"acct:{name}", None)

    def _forget_stale(self) -> None:
        for key in list(self._scores):
            self._score(key)
        if len(self._scores) >= self._max_keys:  # under attack from everywhere: keep newest
            for key in sorted(self._scores, key=lambda k: self._scores[k][1])[
                : self._max_keys // 2
            ]:
                del self._scores[key]
