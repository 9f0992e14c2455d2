"""The IDLE fan-out: one store read per delivery, shared by every IDLE session it wakes.

A delivery to a mailbox wakes every session that has the folder selected (hundreds, when
one mailbox is open in many clients). Each would read the same changes_since() answer;
IdleFanout reads it once per (mailbox, folder, MODSEQ) and serves the others from that
answer, in place on the event loop when nothing else needs the store.

Sans-IO: it never waits, never starts a thread. The connection asks it what to do and
runs what it is told::

    waiter = fanout.reading(session)      # another session reads this answer now:
    if waiter is not None: wait for it    # then its answer serves this one in place
    push = fanout.push(session, new_waiter)
    if push is not None:
        try: out = push.job.run()  (in a worker thread if push.job.blocking)
        finally: waiter = fanout.finish(push); if waiter: wake whoever waits on it

`new_waiter` is called only when this session becomes the one that reads for all; what it
returns (an asyncio future, in the back end) is what `reading` hands the others and what
`finish` hands back to be woken. The session gets the answer through
ImapSession.push_changes and knows nothing of the sharing.

A wake-up of many sessions at once is pushed without a task each (server.py): `prefetch`
reads the answer once for a key, then `in_place` gives each session's update as a job to
run on the spot; only what needs the store (a \\Recent claim, live search contexts) takes
the per-session path above. One session per answer claims \\Recent, chosen when it is
first asked (SharedChanges.claimer): the others are told nothing is recent for them, as
the store would tell them after the claim, without waiting for it.

Lost wake-ups (a delivery announced while a push runs) are avoided by order, not locks:
the session clears its dirty flag before the answer is read, and ImapSession.mark_dirty sets
woken_at before dirty; an answer serves a session only if it was read at or after the
session's last wake-up (SharedChanges.generation >= woken_at).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from server.store import api

if TYPE_CHECKING:
    from server.backend.imap.session import ImapSession, Job

#: (mailbox, folder, the MODSEQ the session knows): sessions with one key get one answer.
Key = tuple[str, str, int]
W = TypeVar("W")


class SharedChanges:
    """One changes_since() answer, shared by the sessions that wait at the same MODSEQ."""

    __slots__ = ("generation", "changes", "claimer")

    def __init__(self, generation: int, changes: api.Changes) -> None:
        # The store's change generation read before the query: the answer holds every
        # change announced up to it.
        self.generation = generation
        self.changes = changes
        # The session that claims \Recent for these changes: the others would only get
        # an empty set from the store, through a write transaction each.
        self.claimer: object | None = None


@dataclass(slots=True)
class Push(Generic[W]):
    """One session's IDLE update: run `job`, then hand it to IdleFanout.finish."""

    job: Job
    key: Key | None
    waiter: W | None  # set when this push reads the store for every session of key


class IdleFanout(Generic[W]):
    """The IDLE updates of one process (one per back-end service)."""

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._answers: dict[Key, SharedChanges] = {}
        self._reading: dict[Key, W] = {}
        # Store reads made (changes_since calls): what the sharing saves is visible.
        self.reads = 0

    # --- what the connection calls ---------------------------------------------------------
    def reading(self, session: ImapSession) -> W | None:
        """The waiter of a store read in flight that will answer this session, if any."""
        key = self.key(session)
        return self._reading.get(key) if key is not None else None

    def push(self, session: ImapSession, new_waiter: Callable[[], W]) -> Push[W] | None:
        """The update to send this session now, or None when there is nothing to send."""
        if not session.idle_pending:
            return None
        from server.backend.imap.session import Job

        key = self.key(session)
        found = self.answer(key, session.woken_at) if key is not None else None
        if found is not None and not session.contexts:
            # Everything is known already: no store call, so no thread hand-off unless this
            # session claims \Recent (live search contexts may read messages: those go to
            # a worker thread too).
            claim = self._claim(session, found)
            return Push(Job(claim, lambda: self._apply(session, key, found, claim)), key, None)
        waiter: W | None = None
        if found is None and key is not None and key not in self._reading:
            waiter = self._reading[key] = new_waiter()
        return Push(Job(True, lambda: self._apply(session, key, found, None)), key, waiter)

    def in_place(self, session: ImapSession) -> Job | None:
        """The session's update as a job that makes no store call (run it on the spot), or
        None when it needs the store: then `push` (the per-session path) gives it. Ask only
        for a session with session.idle_pending."""
        from server.backend.imap.session import Job

        key = self.key(session)
        found = self.answer(key, session.woken_at) if key is not None else None
        if found is None or session.contexts or self._claim(session, found):
            return None
        return Job(False, lambda: self._apply(session, key, found, False))

    def prefetch(self, session: ImapSession, new_waiter: Callable[[], W]) -> Push[W] | None:
        """A job that reads the answer of this session's key for every session of it (run
        it in a worker thread, then `finish`), or None when one is known or being read."""
        from server.backend.imap.session import Job

        key = self.key(session)
        if key is None or key in self._reading or self.answer(key, session.woken_at):
            return None
        waiter = self._reading[key] = new_waiter()

        def read() -> bytes:
            self._read(session, key)
            return b""

        # A read of what changed since a MODSEQ is small: the I/O layer may run it in
        # place (Job.inline) rather than pay a thread hand-off before the first push.
        return Push(Job(True, read, inline=True), key, waiter)

    def finish(self, push: Push[W]) -> W | None:
        """After push.job ran (or failed): the waiter to wake, if this push read for all."""
        if push.waiter is None or push.key is None:
            return None
        if self._reading.get(push.key) is push.waiter:
            del self._reading[push.key]
        return push.waiter

    # --- the shared answers ----------------------------------------------------------------
    @staticmethod
    def key(session: ImapSession) -> Key | None:
        sel = session.selected
        if sel is None or session.login is None:
            return None
        return (session.login.store.name, sel.name, sel.modseq)

    def answer(self, key: Key, woken_at: int) -> SharedChanges | None:
        """An answer for key read after a session's last wake-up (woken_at), else None: a
        session never takes an old answer for a newer change."""
        found = self._answers.get(key)
        return found if found is not None and found.generation >= woken_at else None

    def _remember(self, key: Key, entry: SharedChanges) -> None:
        if len(self._answers) >= self.limit:
            self._answers.clear()  # entries live one notification round: nothing worth keeping
        self._answers[key] = entry

    def _read(self, session: ImapSession, key: Key | None) -> SharedChanges | None:
        """This session's answer, read from the store if nobody did since its wake-up
        (None: a store without change generations; the session reads its own)."""
        if key is None:
            return None
        generation = session.store.change_generation()
        if generation is None:
            return None
        found = self.answer(key, session.woken_at)
        if found is None:
            # The generation is read before the query (see SharedChanges.generation).
            self.reads += 1
            found = SharedChanges(generation, session.store.changes_since(key[1], key[2]))
            self._remember(key, found)
        return found

    @staticmethod
    def _claims(session: ImapSession, shared: SharedChanges) -> bool:
        """Whether this session is to claim \\Recent for new messages (a store write)."""
        sel = session.selected
        if sel is None or sel.readonly or shared.claimer not in (None, session):
            return False
        known_max = sel.uids[-1] if sel.uids else 0
        return any(row.uid > known_max for row in shared.changes.changed)

    def _claim(self, session: ImapSession, shared: SharedChanges) -> bool:
        """_claims, and when it says so this session becomes the one claimer."""
        if not self._claims(session, shared):
            return False
        shared.claimer = session
        return True

    def _apply(
        self,
        session: ImapSession,
        key: Key | None,
        found: SharedChanges | None,
        claim: bool | None,
    ) -> bytes:
        """`claim`: decided when the job was made (the answer was known), else None."""

        def changes() -> tuple[api.Changes | None, bool]:
            # Called by the session after it cleared its dirty flag (see the module doc).
            shared = found if found is not None else self._read(session, key)
            if shared is None:
                return None, True
            # Decided here, before the write: the others skip it.
            return shared.changes, self._claim(session, shared) if claim is None else claim

        return session.push_changes(changes)


__all__ = ["IdleFanout", "Key", "Push", "SharedChanges"]
