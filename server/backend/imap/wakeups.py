"""One store subscription per mailbox for all the sessions of a back-end process.

A delivery to a mailbox open in 500 sessions would otherwise wake 500 store subscribers,
each through its own call_soon_threadsafe from the notifier's thread, and each session
would keep a subscriber, its lock and an unsubscribe closure for as long as it lives.
Here the store wakes the process once per mailbox and `on_change` gets every member at
once, on the event loop it subscribed from (the back end's only loop).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from server.store.api import MailboxStore

M = TypeVar("M", bound=Hashable)


class Wakeups(Generic[M]):
    def __init__(self, on_change: Callable[[list[M]], None]) -> None:
        self._on_change = on_change
        # Per store key: the members (a dict keeps their order: first subscribed, first
        # pushed) and the store subscription's cancel.
        self._members: dict[str, dict[M, None]] = {}
        self._cancel: dict[str, Callable[[], None]] = {}

    def add(self, store: MailboxStore, member: M) -> str:
        """Wake `member` on every change to `store`; the key to remove it with. Call on
        the event loop that is to run `on_change`."""
        key = store.name
        members = self._members.get(key)
        if members is None:
            members = self._members[key] = {}
            self._cancel[key] = store.subscribe(lambda: self._changed(key))
        members[member] = None
        return key

    def remove(self, key: str, member: M) -> None:
        members = self._members.get(key)
        if members is None:
            return
        members.pop(member, None)
        if not members:
            del self._members[key]
            self._cancel.pop(key)()

    def members(self, key: str) -> int:
        return len(self._members.get(key, ()))

    def _changed(self, key: str) -> None:
        members = self._members.get(key)
        if members:
            self._on_change(list(members))


__all__ = ["Wakeups"]
