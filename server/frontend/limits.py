"""Connection counting for a front end: all connections, per client address, per user.

Counts are kept across every listener of one front-end service (Exchange counts per
service). The maxima are passed in on each call, so a reload applies from the next
connection without touching established ones.
"""

from __future__ import annotations

from collections import Counter


class ConnectionLimits:
    def __init__(self) -> None:
        self.total = 0
        self._per_ip: Counter[str] = Counter()
        self._per_user: Counter[str] = Counter()

    def open(self, ip: str, max_connections: int, max_from_ip: int) -> str | None:
        """Count a new connection; the refusal reason instead when over a limit."""
        if self.total >= max_connections:
            return "Too many connections"
        if self._per_ip[ip] >= max_from_ip:
            return "Too many connections from your address"
        self.total += 1
        self._per_ip[ip] += 1
        return None

    def close(self, ip: str) -> None:
        self.total -= 1
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]

    def login(self, user: str, max_per_user: int) -> bool:
        """Count a logged-in session of `user`; False (not counted) when over the limit."""
        key = user.lower()
        if self._per_user[key] >= max_per_user:
            return False
        self._per_user[key] += 1
        return True

    def logout(self, user: str) -> None:
        key = user.lower()
        self._per_user[key] -= 1
        if self._per_user[key] <= 0:
            del self._per_user[key]

    def from_ip(self, ip: str) -> int:
        return self._per_ip.get(ip, 0)

    def of_user(self, user: str) -> int:
        return self._per_user.get(user.lower(), 0)
