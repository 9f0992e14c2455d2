"""Signed session cookies for the settings page.

The cookie holds the mailbox name, the issue time and a random nonce, signed with
HMAC-SHA256 under a key kept in secrets/web-session-key (owner-only, made on first use), so
the server keeps no session table and a restart keeps users signed in. A cookie is refused
once `max_age` has passed; changing the key (deleting the file) signs everyone out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable

from ..settings.paths import Home
from ..settings.store import atomic_write, locked

KEY_FILE = "web-session-key"
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


class SessionSigner:
    def __init__(
        self, key: bytes, max_age: float = 8 * 3600, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = key
        self.max_age = max_age
        self._clock = clock

    def _mac(self, purpose: str, payload: str) -> bytes:
        return hmac.new(self._key, f"{purpose}\0{payload}".encode(), hashlib.sha256).digest()

    def issue(self, mailbox: str) -> str:
        body = json.dumps(
            {"m": mailbox, "t": int(self._clock()), "n": secrets.token_hex(8)},
            separators=(",", ":"),
        )
        payload = _b64(body.encode())
        return f"{payload}.{_b64(self._mac('session', payload))}"

    def check(self, token: str | None) -> str | None:
        """The mailbox name of a valid, unexpired cookie, else None."""
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
            mailbox, issued = str(data["m"]), float(data["t"])
        except (ValueError, KeyError, TypeError):
            return None
        if not 0 <= self._clock() - issued <= self.max_age:
            return None
        return mailbox

    def csrf_token(self, token: str) -> str:
        """The form token tied to one session (for the sign-out form)."""
        return _b64(self._mac("csrf", token))[:32]

    def check_csrf(self, token: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf_token(token), given or "")
