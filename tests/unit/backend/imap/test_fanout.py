"""The IDLE fan-out (server/backend/imap/fanout.py), sans-IO: sessions over the in-memory
store, the event loop's part played by hand (waiters are plain objects, worker threads
are calls made in the order a race would make them)."""

from __future__ import annotations

import re

import pytest

from server.backend.imap.fanout import IdleFanout, Key, Push, SharedChanges
from server.backend.imap.session import ImapSession
from server.store import api
from tests.fakes.memstore import MemStore
from tests.unit.backend.imap.test_imap_session import MSG, Client


class Waiter:
    """What the back end's futures are to the fan-out: an opaque token."""


class Generations:
    """The store's change notifier: a counter raised before anyone is woken, and the
    store reads counted (the fan-out's point is to make one per delivery)."""

    def __init__(self, store: MemStore) -> None:
        self.value = 0
        self.reads = 0
        box = store.mailbox("alice")
        changes_since = box.changes_since

        def counted(folder: str, modseq: int) -> api.Changes:
            self.reads += 1
            return changes_since(folder, modseq)

        box.change_generation = lambda: self.value  # type: ignore[method-assign]
        box.changes_since = counted  # type: ignore[method-assign]


def idle_clients(n: int, readonly: bool = False) -> tuple[MemStore, Generations, list[Client]]:
    store = MemStore()
    clients = [Client(store).login() for _ in range(n)]
    clients[0].box.append("INBOX", MSG)
    for c in clients:
        if readonly:
            assert "OK [READ-ONLY]" in c("s EXAMINE INBOX")
        else:
            c.select()
        assert c("i IDLE") == "+ idling\r\n"
    return store, Generations(store), clients


def deliver(store: MemStore, gen: Generations, clients: list[Client]) -> None:
    store.mailbox("alice").append("INBOX", MSG)
    gen.value += 1
    for c in clients:
        c.session.mark_dirty()


def exists(out: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"\* (\d+) EXISTS", out)]


def run(fanout: IdleFanout[Waiter], push: Push[Waiter] | None) -> bytes:
    assert push is not None
    try:
        return push.job.run()
    finally:
        fanout.finish(push)


def test_nothing_to_push_without_a_wake_up_in_idle() -> None:
    fanout = IdleFanout[Waiter]()
    store, gen, (c,) = idle_clients(1)
    assert fanout.push(c.session, Waiter) is None  # not woken
    assert "i OK" in c("DONE")
    c.session.mark_dirty()
    assert fanout.push(c.session, Waiter) is None  # woken, not idling


def test_one_store_read_per_delivery_serves_every_session_in_place() -> None:
    fanout = IdleFanout[Waiter]()
    store, gen, clients = idle_clients(5)
    deliver(store, gen, clients)
    first = fanout.push(clients[0].session, Waiter)
    assert first is not None and first.job.blocking and isinstance(first.waiter, Waiter)
    # While the first one reads, the others are told to wait for it.
    assert all(fanout.reading(c.session) is first.waiter for c in clients[1:])
    out = first.job.run()
    assert fanout.finish(first) is first.waiter
    assert exists(out) == [2] and b"* 2 RECENT" in out  # the first one claims \Recent
    assert fanout.reading(clients[1].session) is None
    for c in clients[1:]:
        push = fanout.push(c.session, Waiter)
        assert push is not None and not push.job.blocking and push.waiter is None
        out = run(fanout, push)
        assert exists(out) == [2] and b"* 0 RECENT" in out
    assert gen.reads == 1 and fanout.reads == 1


def test_a_waiter_is_released_when_the_read_fails() -> None:
    fanout = IdleFanout[Waiter]()
    store, gen, clients = idle_clients(2)
    deliver(store, gen, clients)
    push = fanout.push(clients[0].session, Waiter)
    assert push is not None and push.waiter is not None

    def broken(folder: str, modseq: int) -> api.Changes:
        raise api.StoreError("disk gone")

    clients[0].box.changes_since = broken  # type: ignore[method-assign]
    assert run(fanout, push) == b""  # logged, nothing sent
    assert fanout.reading(clients[1].session) is None  # nobody waits for ever


def test_an_answer_older_than_the_wake_up_is_never_served() -> None:
    fanout = IdleFanout[Waiter]()
    key = ("alice", "INBOX", 7)
    fanout._remember(key, SharedChanges(3, api.Changes(highestmodseq=8, changed=[])))
    assert fanout.answer(key, woken_at=3) is not None
    assert fanout.answer(key, woken_at=4) is None  # woken by a later notification: read again
    assert fanout.answer(("alice", "INBOX", 6), woken_at=1) is None


def test_back_to_back_deliveries_reach_every_session_in_order() -> None:
    """A session woken again after the shared answer was read takes a fresh one: every
    session sees EXISTS climb to the final count, in order, with one read per wake-up
    round at most."""
    fanout = IdleFanout[Waiter]()
    store, gen, clients = idle_clients(4)
    seen: dict[int, list[int]] = {i: [] for i in range(4)}
    deliver(store, gen, clients)
    seen[0] += exists(run(fanout, fanout.push(clients[0].session, Waiter)))
    deliver(store, gen, clients)  # before the others took the first answer
    for _round in range(2):
        for i, c in enumerate(clients):
            push = fanout.push(c.session, Waiter)
            if push is not None:
                seen[i] += exists(run(fanout, push))
    for got in seen.values():
        assert got and got == sorted(got) and got[-1] == 3
    assert gen.reads <= 3


def test_a_wake_up_between_the_read_and_the_sync_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lost wake-up fixed in a2ce3f5: the worker thread reads the answer, the event
    loop then marks the session dirty for the next delivery, the worker finishes: the
    session must stay dirty and its next push must bring the third message."""
    fanout = IdleFanout[Waiter]()
    store, gen, (c,) = idle_clients(1)
    deliver(store, gen, [c])
    push = fanout.push(c.session, Waiter)
    assert push is not None and push.job.blocking
    read = fanout._read

    def read_then_deliver(session: ImapSession, key: Key | None) -> SharedChanges | None:
        found = read(session, key)
        deliver(store, gen, [c])
        return found

    monkeypatch.setattr(fanout, "_read", read_then_deliver)
    assert exists(run(fanout, push)) == [2]
    monkeypatch.setattr(fanout, "_read", read)
    assert c.session.idle_pending, "the third message's wake-up was lost"
    push = fanout.push(c.session, Waiter)
    assert push is not None and exists(run(fanout, push)) == [3]


def test_a_wake_up_after_the_cached_answer_is_taken_is_not_served_stale() -> None:
    """A session woken at generation g must not be served an answer read at g - 1, even
    though its key (folder, MODSEQ) is the one that answer was read for."""
    fanout = IdleFanout[Waiter]()
    store, gen, (a, b) = idle_clients(2)
    deliver(store, gen, [a, b])
    assert exists(run(fanout, fanout.push(a.session, Waiter))) == [2]
    deliver(store, gen, [a, b])  # b has not taken the first answer yet
    push = fanout.push(b.session, Waiter)
    assert push is not None and push.job.blocking  # the cached one is older than b's wake-up
    assert exists(run(fanout, push)) == [3]


def test_read_only_sessions_and_contexts() -> None:
    fanout = IdleFanout[Waiter]()
    store, gen, clients = idle_clients(2, readonly=True)
    deliver(store, gen, clients)
    assert exists(run(fanout, fanout.push(clients[0].session, Waiter))) == [2]
    push = fanout.push(clients[1].session, Waiter)
    assert push is not None and not push.job.blocking  # EXAMINE claims nothing
    assert b"* 1 RECENT" in run(fanout, push)  # \Recent stays for a read-write session
    assert store.mailbox("alice").claim_recent("INBOX")


@pytest.mark.parametrize("limit", [1, 2])
def test_answers_are_bounded(limit: int) -> None:
    fanout = IdleFanout[Waiter](limit=limit)
    for n in range(5):
        fanout._remember(("alice", "INBOX", n), SharedChanges(0, api.Changes(n, [])))
    assert len(fanout._answers) <= limit


def test_a_store_without_generations_reads_per_session() -> None:
    fanout = IdleFanout[Waiter]()
    store = MemStore()
    clients = [Client(store).login() for _ in range(2)]
    clients[0].box.append("INBOX", MSG)
    for c in clients:
        c.select()
        c("i IDLE")
    store.mailbox("alice").append("INBOX", MSG)
    for c in clients:
        c.session.mark_dirty()
    for c in clients:
        push = fanout.push(c.session, Waiter)
        assert push is not None and push.job.blocking
        assert exists(run(fanout, push)) == [2]
    assert fanout.reads == 0


# --- many sessions woken at once: one read, then each in place (server.py _push_woken) -----
def test_a_prefetch_reads_once_and_every_session_is_pushed_in_place() -> None:
    fanout = IdleFanout[Waiter]()
    store, gen, clients = idle_clients(5)
    deliver(store, gen, clients)
    assert all(fanout.in_place(c.session) is None for c in clients)  # nothing read yet
    read = fanout.prefetch(clients[0].session, Waiter)
    assert read is not None and read.job.blocking and isinstance(read.waiter, Waiter)
    assert read.job.inline  # a small read: the loop may run it in place
    assert fanout.prefetch(clients[1].session, Waiter) is None  # one read in flight per key
    assert fanout.reading(clients[1].session) is read.waiter
    assert run(fanout, read) == b""  # the read only; nobody is pushed by it
    assert fanout.reading(clients[1].session) is None
    assert fanout.prefetch(clients[1].session, Waiter) is None  # the answer is known
    # The first session asked claims \Recent (a store write: not in place) ...
    assert fanout.in_place(clients[0].session) is None
    outs = []
    for c in clients[1:]:
        job = fanout.in_place(c.session)
        assert job is not None and not job.blocking
        outs.append(job.run())
    # ... and the others are told nothing is recent for them, without waiting for it.
    assert all(exists(out) == [2] and b"* 0 RECENT" in out for out in outs)
    claim = fanout.push(clients[0].session, Waiter)
    assert claim is not None and claim.job.blocking and claim.waiter is None
    out = run(fanout, claim)
    assert exists(out) == [2] and b"* 2 RECENT" in out
    assert not any(c.session.idle_pending for c in clients)
    assert gen.reads == 1 and fanout.reads == 1


def test_an_answer_read_before_a_second_wake_up_is_not_pushed_in_place() -> None:
    fanout = IdleFanout[Waiter]()
    store, gen, (a, b) = idle_clients(2, readonly=True)
    deliver(store, gen, [a, b])
    assert run(fanout, fanout.prefetch(a.session, Waiter)) == b""
    deliver(store, gen, [a, b])  # after the read, before the pushes
    assert fanout.in_place(a.session) is None and fanout.in_place(b.session) is None
    assert run(fanout, fanout.prefetch(a.session, Waiter)) == b""
    for c in (a, b):
        job = fanout.in_place(c.session)
        assert job is not None and exists(job.run()) == [3]
    assert gen.reads == 2


def test_a_wake_up_while_pushed_in_place_keeps_the_session_dirty() -> None:
    fanout = IdleFanout[Waiter]()
    store, gen, (a, b) = idle_clients(2, readonly=True)
    deliver(store, gen, [a, b])
    assert run(fanout, fanout.prefetch(a.session, Waiter)) == b""
    job = fanout.in_place(a.session)
    assert job is not None
    assert exists(job.run()) == [2]
    deliver(store, gen, [a, b])
    assert a.session.idle_pending and fanout.in_place(a.session) is None
    push = fanout.push(a.session, Waiter)
    assert push is not None and exists(run(fanout, push)) == [3]


def test_sessions_with_search_contexts_are_not_pushed_in_place() -> None:
    fanout = IdleFanout[Waiter]()
    store, gen, (a, b) = idle_clients(2, readonly=True)
    b.session.contexts["t"] = object()
    deliver(store, gen, [a, b])
    assert run(fanout, fanout.prefetch(a.session, Waiter)) == b""
    assert fanout.in_place(a.session) is not None
    assert fanout.in_place(b.session) is None
