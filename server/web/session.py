"""Signed session cookies for the settings page.

The cookie holds the mailbox name, the issue time, a random nonce and a fingerprint of the
mailbox's stored password hash, signed with HMAC-SHA256 under a key kept in
secrets/web-session-key (owner-only, made on first use), so a restart keeps users signed in.
A cookie is refused once `max_age` has passed, once the password has changed (the
fingerprint no longer matches: every session of that mailbox ends) and once it was signed
out: sign-out records the cookie's nonce until the cookie would have expired anyway
(secrets/web-revoked-sessions.json, so a restart does not bring it back). Changing the key
(deleting the file) signs everyone out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.settings.paths import Home
from server.settings.store import atomic_write, locked

KEY_FILE = "web-session-key"
REVOKED_FILE = "web-revoked-sessions.json"
COOKIE = "mailctl_session"


def session_key(home: Home) -> bytes:
    path = home.secrets / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        pass
    with locked(home):
        try:
            return bytes.fromhex(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            home.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
            key = secrets.token_bytes(32)
            atomic_write(path, key.hex().encode(), mode=0o600)
            return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class RevokedSessions:
    """Nonces of signed-out cookies with the time each cookie expires anyway. Kept in
    memory and in a file (re-read when another process changed it)."""

    def __init__(self, home: Home | None, clock: Callable[[], float] = time.time) -> None:
        self.home, self._clock = home, clock
        self._nonces: dict[str, float] = {}
        self._stamp: tuple[int, int] | None = None

    @property
    def _path(self) -> Path | None:
        return self.home.secrets / REVOKED_FILE if self.home is not None else None

    def _refresh(self) -> None:
        path = self._path
        if path is None:
            return
        try:
            stat = path.stat()
        except FileNotFoundError:
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            try:
                loaded = json.loads(path.read_text())
                self._nonces = {str(k): float(v) for k, v in loaded.items()}
            except (OSError, ValueError, AttributeError):
                pass  # a damaged file: what we know stays in force
            self._stamp = stamp

    def __contains__(self, nonce: str) -> bool:
        self._refresh()
        return nonce in self._nonces

    def add(self, nonce: str, expires: float) -> None:
        """Record a signed-out cookie (blocking: a file write)."""
        now = self._clock()
        path = self._path
        if path is None or self.home is None:
            self._nonces[nonce] = expires
            return
        with locked(self.home):
            self._stamp = None
            self._refresh()
            self._nonces = {n: t for n, t in self._nonces.items() if t > now}
            self._nonces[nonce] = expires
            self.home.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write(path, json.dumps(self._nonces).encode(), mode=0o600)


class SessionSigner:
    def __init__(
        self,
        key: bytes,
        max_age: float = 8 * 3600,
        clock: Callable[[], float] = time.time,
        password_hash: Callable[[str], str | None] | None = None,
        revoked: RevokedSessions | None = None,
    ) -> None:
        self._key = key
        self.max_age = max_age
        self._clock = clock
        # The mailbox's stored password hash (None: no password); without this callback
        # (tests, tools) cookies are not tied to the password.
        self._password_hash = password_hash
        self.revoked = revoked if revoked is not None else RevokedSessions(None, clock)

    def _mac(self, purpose: str, payload: str) -> bytes:
        return hmac.new(self._key, f"{purpose}\0{payload}".encode(), hashlib.sha256).digest()

    def _fingerprint(self, mailbox: str) -> str | None:
        if self._password_hash is None:
            return ""
        stored = self._password_hash(mailbox)
        if stored is None:
            return None
        return _b64(self._mac("password", f"{mailbox.lower()}\0{stored}"))[:22]

    def issue(self, mailbox: str) -> str:
        body = json.dumps(
            {
                "m": mailbox,
                "t": int(self._clock()),
                "n": secrets.token_hex(8),
                "p": self._fingerprint(mailbox) or "",
            },
            separators=(",", ":"),
        )
        payload = _b64(body.encode())
        return f"{payload}.{_b64(self._mac('session', payload))}"

    def _decode(self, token: str | None) -> dict[str, Any] | None:
        """The payload of a cookie signed by us and not expired, else None."""
        if not token or token.count(".") != 1 or len(token) > 4096:
            return None
        payload, signature = token.split(".")
        try:
            given = _unb64(signature)
        except ValueError:
            return None
        if not hmac.compare_digest(given, self._mac("session", payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            mailbox, issued, nonce = str(data["m"]), float(data["t"]), str(data["n"])
        except (ValueError, KeyError, TypeError):
            return None
        if not 0 <= self._clock() - issued <= self.max_age:
            return None
        return {"m": mailbox, "t": issued, "n": nonce, "p": str(data.get("p", ""))}

    def check(self, token: str | None) -> str | None:
        """The mailbox name of a valid, unexpired cookie that was not signed out and was
        issued under the mailbox's current password, else None."""
        data = self._decode(token)
        if data is None or data["n"] in self.revoked:
            return None
        mailbox = str(data["m"])
        current = self._fingerprint(mailbox)
        if current is None or not hmac.compare_digest(current, str(data["p"])):
            return None
        return mailbox

    def revoke(self, token: str | None) -> None:
        """Sign a cookie out for good, wherever it was copied to (blocking: a file write)."""
        data = self._decode(token)
        if data is not None:
            self.revoked.add(str(data["n"]), float(data["t"]) + self.max_age)  # type: ignore[arg-type]

    def csrf_token(self, token: str) -> str:
        """The form token tied to one session (for the sign-out form)."""
        return _b64(self._mac("csrf", token))[:32]

    def check_csrf(self, token: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf_token(token), given or "")
