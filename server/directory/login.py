"""One password check with the failed-login slow-down, for every service that takes a
password: the IMAP4/POP3 front ends, SMTP submission AUTH and the web sign-in.

Each of them used to combine `Directory.verify` with the throttle (throttle.py) itself, and
the copies had drifted (one skipped the verification cache, one counted a refused mailbox
kind differently). `LoginGate.login` is now the only place that waits out the slow-down,
checks the password and scores the attempt, so all of them keep the same rules:

- the wait comes before the password is checked, whatever the outcome will be;
- a right password for a mailbox the service refuses (`allowed` gives a reason) counts as a
  failure, as a wrong password does: the reason goes only to the caller, so it can tell a
  client that proved the password, and nobody else learns what kind an account is;
- a directory that cannot be asked raises `DirectoryUnavailable` and scores nothing: it is
  not the user's fault, and each service answers it with its own temporary failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from server.directory import Entry
from server.directory.throttle import LoginThrottle, account_key
from server.settings.models import Settings

__all__ = ["LoginGate", "LoginResult", "PasswordChecker"]


class PasswordChecker(Protocol):
    """What LoginGate needs of the directory (server.directory.Directory)."""

    def verify(self, settings: Settings, identity: str, password: str) -> Entry | None: ...

    def verify_cached(self, settings: Settings, identity: str, password: str) -> Entry | None: ...


@dataclass(frozen=True)
class LoginResult:
    """`entry`: the mailbox that proved its password and may log in here, else None.
    `reason`: why a mailbox that proved its password may not log in here (None: a wrong
    name or password)."""

    entry: Entry | None
    reason: str | None = None


def _anyone(_entry: Entry) -> str | None:
    return None


class LoginGate:
    """The directory's password check behind the per-address and per-account slow-down. One
    per service: the throttle's scores are the service's memory of recent failures."""

    def __init__(
        self,
        directory: PasswordChecker,
        throttle: LoginThrottle | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.directory = directory
        self.throttle = throttle if throttle is not None else LoginThrottle()
        self._sleep = sleep

    async def login(
        self,
        settings: Settings,
        ip: str,
        user: str,
        password: str,
        allowed: Callable[[Entry], str | None] = _anyone,
    ) -> LoginResult:
        """Wait out the slow-down for `ip` and the account `user` names, then check the
        password. `allowed(entry)` says why a proved mailbox may not use this service
        (None: it may). Raises DirectoryUnavailable (no score) when the directory cannot
        be asked."""
        account = account_key(settings, user)
        wait = self.throttle.delay(ip, account)
        if wait:
            await self._sleep(wait)
        # A password verified before against the hash stored now costs no argon2 and no
        # thread; anything else (argon2, an LDAP search or bind) runs in a worker thread.
        entry = self.directory.verify_cached(settings, user, password)
        if entry is None:
            entry = await asyncio.to_thread(self.directory.verify, settings, user, password)
        reason = allowed(entry) if entry is not None else None
        if entry is None or reason is not None:
            self.throttle.failed(ip, account)
            return LoginResult(None, reason)
        self.throttle.succeeded(ip, entry.name)
        return LoginResult(entry)
